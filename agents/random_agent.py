"""The ``random`` agent: uniform actions. The floor every learning curve is compared with."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cwm_rl.checkpoint import atomic_write_json
from cwm_rl.envs import spec_of


class RandomAgent:
    """Uniform random actions from the env's action space (seeded); ``learn`` only counts env steps."""

    def __init__(self, env_id: str, seed: int = 0, env_kwargs: dict[str, Any] | None = None) -> None:
        import gymnasium as gym

        self.env_id = spec_of(env_id).id
        self.seed = int(seed)
        env = gym.make(self.env_id, **(env_kwargs or {}))
        self.action_space = env.action_space
        env.close()
        self.action_space.seed(self.seed)
        self.num_timesteps = 0

    def learn(self, total_env_steps: int, callback: Any = None) -> RandomAgent:
        self.num_timesteps += int(total_env_steps)
        if callback is not None:
            callback(self)
        return self

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.stack([self.action_space.sample() for _ in range(len(obs))])

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_json(path, {"kind": "random_agent", "env_id": self.env_id, "seed": self.seed})
