"""The fixed evaluation protocol every agent is measured with: n episodes on separate eval envs, deterministic.

Each of ``episodes`` sub-envs of the env's natively batched vector env runs exactly one episode, reset with
``seed + i``, so every agent (model-based or SB3) is scored on the same episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cwm_rl.data import make_vector_env

EVAL_SEED_OFFSET = 1_000_000
"""Eval envs are seeded far from the training seeds, so an agent is never scored on an episode it trained on."""


def evaluate_agent(
    agent: Any,
    env_id: str,
    episodes: int = 5,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    deterministic: bool = True,
) -> dict[str, Any]:
    """Mean, std and list of episode returns (and lengths) of ``agent.predict`` on ``episodes`` fresh episodes.

    An agent whose acting carries state from one call to the next (the MPC agents' planners: warm starts, random
    streams) may define ``start_evaluation(n_envs)``; it is called first, so that each evaluation starts alike."""
    start = getattr(agent, "start_evaluation", None)
    if callable(start):
        start(episodes)
    venv, _ = make_vector_env(env_id, episodes, dict(env_kwargs or {}))
    try:
        obs, _ = venv.reset(seed=EVAL_SEED_OFFSET + seed)
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        running = np.ones(episodes, dtype=bool)
        while running.any():
            action = agent.predict(obs, deterministic=deterministic)
            obs, reward, terminated, truncated, _ = venv.step(action)
            returns += np.where(running, reward, 0.0)
            lengths += running
            running &= ~(terminated | truncated)
    finally:
        venv.close()
    return {
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "returns": returns.tolist(),
        "mean_length": float(lengths.mean()),
    }
