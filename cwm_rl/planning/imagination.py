"""Batched imagination: score candidate action sequences with a world model's recurrent ``step``.

One path for every planner and every model kind (slot SSM, slot Transformer, MLP): the real observations of
``batch`` envs are repeated for ``population`` candidates each, and the model's ``step`` is rolled ``horizon`` times
on its own predictions. For the SSM each step costs the same whatever the horizon (a fixed-size recurrent state).

Rollouts start from the model's initial state at the current real observation. Every env of the suite is Markov
in its observation (Pong's ball slot carries its velocity), so no history is needed; a model trained on windows
sees position-0 predictions in training, so this start is in distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cwm_rl.models.world_model import consuming_step
from cwm_rl.wm_evaluation import Normalizer


@dataclass
class Rollout:
    """What :meth:`Imagination.rollout` returns, all ``(batch * population, horizon, ...)``."""

    obs: torch.Tensor  # predicted observations after each step (raw units)
    reward: torch.Tensor  # predicted rewards
    continuation: torch.Tensor  # probability that the episode is still running after each step
    scores: torch.Tensor | None  # per-step edge scores (n, n + 1) of slot models, else None


class Imagination:
    """Roll a trained world model forward from real observations.

    Args:
        model: a world model of :mod:`cwm_rl.models` (``initial_state`` / ``step``), in eval mode while planning.
        norm: the normaliser it was trained with.
        discount: discount of imagined rewards in :meth:`returns`.
        terminal_value: optional ``V(obs) -> (n,)`` on raw observations: the return expected after the last
            imagined step, added to :meth:`returns` discounted (a learned value, TD-MPC style).
        reward_fn: optional ``next_obs (n, obs_dim) -> (reward (n,), terminated (n,) bool)`` on raw observations,
            used instead of the model's reward and termination heads (a known reward function of the state, e.g.
            :meth:`cwm_rl.envs.CausalEnv.reward_from_observation`); the model then supplies only the dynamics.
    """

    def __init__(
        self,
        model: nn.Module,
        norm: Normalizer,
        discount: float = 0.99,
        terminal_value: Callable[[torch.Tensor], torch.Tensor] | None = None,
        reward_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        self.model = model
        self.norm = norm
        self.discount = discount
        self.terminal_value = terminal_value
        self.reward_fn = reward_fn

    @torch.no_grad()
    def rollout(self, obs: np.ndarray | torch.Tensor, actions: torch.Tensor) -> Rollout:
        """Imagine ``actions (batch, population, horizon[, action_dim])`` from ``obs (batch, obs_dim)``."""
        was_training = self.model.training
        self.model.eval()
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        batch, population, horizon = actions.shape[:3]
        if obs_t.shape[0] != batch:
            raise ValueError(f"obs has {obs_t.shape[0]} rows but actions are for {batch} envs")
        flat = actions.reshape(batch * population, horizon, *actions.shape[3:])
        x = obs_t.repeat_interleave(population, dim=0)
        state = self.model.initial_state(x.shape[0])
        step = consuming_step(self.model)  # each state is dropped after the next step
        alive = torch.ones(x.shape[0])
        out_obs, rewards, conts, scores = [], [], [], []
        for h in range(horizon):
            pred, state = step(state, self.norm.obs(x), self.norm.action(flat[:, h]))
            x = x + self.norm.unnormalize_delta(pred.delta)
            if self.reward_fn is None:
                reward, ended = pred.reward, torch.sigmoid(pred.termination_logit)
            else:
                reward, terminated = self.reward_fn(x)
                ended = terminated.to(x.dtype)
            alive = alive * (1.0 - ended)
            out_obs.append(x)
            rewards.append(reward.to(x.dtype))
            conts.append(alive)
            if pred.scores is not None:
                scores.append(pred.scores)
        self.model.train(was_training)
        return Rollout(
            torch.stack(out_obs, 1),
            torch.stack(rewards, 1),
            torch.stack(conts, 1),
            torch.stack(scores, 1) if scores else None,
        )

    def returns(self, obs: np.ndarray | torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Discounted imagined return of each candidate, ``(batch, population)``: a planner's ``evaluate``.

        A reward counts only while the episode is predicted to be running: step ``h``'s reward is weighted by the
        probability that no termination was predicted before it. With a ``terminal_value`` the value of the last
        imagined observation is added, weighted by ``discount**horizon`` and the probability the episode is
        still running then.
        """
        batch, population, horizon = actions.shape[:3]
        roll = self.rollout(obs, actions)
        running_before = torch.cat([torch.ones_like(roll.continuation[:, :1]), roll.continuation[:, :-1]], dim=1)
        discounts = self.discount ** torch.arange(horizon, dtype=torch.float32)
        total = (roll.reward * running_before * discounts).sum(1)
        if self.terminal_value is not None:
            tail = self.terminal_value(roll.obs[:, -1])
            total = total + self.discount**horizon * roll.continuation[:, -1] * tail
        return total.reshape(batch, population)


__all__ = ["Imagination", "Rollout"]
