"""The agent protocol every agent follows, model-based or model-free, so ``cwm-rl train/eval/compare`` treat them
alike (``shared/DESIGN.md``, "Agent"), and :func:`torch_threads`, which the agents use to run their small networks
on a set number of torch CPU threads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Agent(Protocol):
    """What the training script needs from an agent.

    * ``learn(total_env_steps, callback=None)`` — interact with the agent's own (vectorised) training envs for
      that many env steps in total (counted over all sub-envs), calling ``callback`` as SB3 does.
    * ``predict(obs, deterministic=True)`` — actions for a batch of observations ``(n_envs, *obs_shape)``.
    * ``save(path)`` / ``load(path)`` — one file, written atomically.
    * optional ``start_evaluation(n_envs)`` — called before each evaluation by
      :func:`~cwm_rl.agents.evaluation.evaluate_agent`, for agents whose acting carries state between calls.
    """

    env_id: str

    def learn(self, total_env_steps: int, callback: Any = None) -> Agent: ...

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray: ...

    def save(self, path: str | os.PathLike[str]) -> None: ...


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
