"""A learned state value for MPC: the return beyond the planning horizon (TD-MPC style terminal value).

A planner that sums imagined rewards over ``H`` steps is blind to what happens after step ``H``; on envs with
sparse or delayed reward (a Pong point is decided many steps after the paddle moves) short horizons see nothing
and long ones drift. The value ``V(s)`` is fitted by TD(0) on the agent's real transitions, with a slowly moving
target network, so it estimates the discounted return of the agent's own recent behaviour; imagination adds
``discount**H * V(s_H)`` to each candidate's return (:class:`cwm_rl.planning.imagination.Imagination`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from cwm_rl.wm_evaluation import Normalizer

from .sequence_buffer import SequenceBuffer


class ValueFunction:
    """``V(s)`` on normalised observations: an MLP, its Adam optimiser and a Polyak-averaged target copy.

    Args:
        obs_dim: observation size.
        hidden: width of the two hidden layers.
        discount: the TD target's discount (the planner's, so both sum returns the same way).
        lr: Adam learning rate.
        tau: Polyak step of the target network per update.
        seed: seeds the initial weights (inside a forked torch random stream: the global one is left alone).
    """

    def __init__(
        self,
        obs_dim: int,
        hidden: int = 128,
        discount: float = 0.99,
        lr: float = 1e-3,
        tau: float = 0.01,
        seed: int = 0,
    ) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Linear(obs_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, 1)
            )
        self.target = copy.deepcopy(self.net).requires_grad_(False)
        self.optim = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.discount, self.tau = discount, tau
        self.updates = 0

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, norm: Normalizer) -> torch.Tensor:
        """``V(obs)`` for raw observations ``(n, obs_dim)`` -> ``(n,)``."""
        return self.net(norm.obs(obs)).squeeze(-1)

    def fit(
        self, buffer: SequenceBuffer, norm: Normalizer, updates: int, batch_size: int, rng: np.random.Generator
    ) -> float:
        """``updates`` TD(0) steps on real transitions from ``buffer``; returns the mean squared TD error.

        Target ``r + discount * (1 - terminated) * V_target(s')``; a truncated episode's last transition
        bootstraps (it did not end), as the buffer keeps ``terminated`` apart from truncation.
        """
        total = 0.0
        for _ in range(updates):
            batch = buffer.sample(batch_size, rng)
            obs, next_obs = batch["obs"].flatten(0, 1), batch["next_obs"].flatten(0, 1)
            reward, terminated = batch["reward"].flatten(), batch["terminated"].flatten().float()
            with torch.no_grad():
                target = reward + self.discount * (1.0 - terminated) * self.target(norm.obs(next_obs)).squeeze(-1)
            loss = ((self.net(norm.obs(obs)).squeeze(-1) - target) ** 2).mean()
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
            self.optim.step()
            with torch.no_grad():
                for p, tp in zip(self.net.parameters(), self.target.parameters(), strict=True):
                    tp.lerp_(p, self.tau)
            total += float(loss.detach())
        self.updates += updates
        return total / max(updates, 1)

    def state(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "target": self.target.state_dict(),
            "optim": self.optim.state_dict(),
            "updates": self.updates,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.target.load_state_dict(state["target"])
        self.optim.load_state_dict(state["optim"])
        self.updates = int(state["updates"])


__all__ = ["ValueFunction"]
