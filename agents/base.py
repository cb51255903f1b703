"""The agent protocol every agent follows, model-based or model-free, so ``cwm-rl train/eval/compare`` treat them
alike (``shared/DESIGN.md``, "Agent")."""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Agent(Protocol):
    """What the training script needs from an agent.

    * ``learn(total_env_steps, callback=None)`` — interact with the agent's own (vectorised) training envs for
      that many env steps in total (counted over all sub-envs), calling ``callback`` as SB3 does.
    * ``predict(obs, deterministic=True)`` — actions for a batch of observations ``(n_envs, *obs_shape)``.
    * ``save(path)`` / ``load(path)`` — one file, written atomically.
    """

    env_id: str

    def learn(self, total_env_steps: int, callback: Any = None) -> Agent: ...

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray: ...

    def save(self, path: str | os.PathLike[str]) -> None: ...
