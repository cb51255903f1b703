"""A learned world model as a Stable-Baselines3 ``VecEnv``: on-policy learners train inside imagination.

SimPLe (Kaiser et al., 2020, "Model-Based Reinforcement Learning for Atari") trains PPO in a learned model, with
short rollouts that start from real states so that the model's compounding error stays small. This module is that
environment: ``n_envs`` imagined episodes run side by side through the world model's recurrent ``step`` (batched,
one model call per vector step); each starts at a real observation drawn by ``start_sampler`` from the model's
initial recurrent state and ends after ``horizon`` steps (a *truncation*: SB3 bootstraps from the value of the
last observation, given as ``info["terminal_observation"]``), at a predicted termination (probability above 1/2),
or where the prediction is *invalid*, truncated there: a model that has run away from the data it was fitted on
says nothing about what follows, and a state grown without bound would overflow PPO's statistics. A non-finite
prediction ends the episode at the last finite observation, with reward 0. With ``bounds_margin``, so does a
prediction outside the observation space's bounds widened by that fraction of their range, at the prediction
clipped into them and with the step's reward kept (predicted from a valid state: zeroing it would hide, say, the
point that sent a score out of its range). Rewards come from the model's reward head (or ``reward_fn``).

Ended episodes restart at once (SB3's auto-reset convention): their rows of the recurrent state go back to the
initial state, so the model needs a fixed-size state whose initial value is zero (the slot SSM's; the MLP has
none). The slot Transformer's growing key/value cache cannot restart one row and is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from cwm_rl.config import ConfigError
from cwm_rl.models.world_model import consuming_step
from cwm_rl.wm_evaluation import Normalizer


def restartable_state(model: nn.Module, n: int) -> Any:
    """The model's initial recurrent state for ``n`` rows, checked to be restartable row by row.

    Raises:
        ConfigError: the state is not a fixed-size, zero-initialised tensor structure with the batch first.
    """
    state = model.initial_state(n)
    for leaf in tree_flatten(state)[0]:
        if not isinstance(leaf, torch.Tensor):
            continue
        if leaf.ndim == 0 or leaf.shape[0] % n or leaf.numel() == 0 or bool(leaf.any()):
            raise ConfigError(
                f"{type(model).__name__}'s recurrent state cannot restart one imagined episode at a time "
                "(use the slot SSM or the MLP world model)"
            )
    return state


def restart_rows(state: Any, rows: torch.Tensor) -> Any:
    """``state`` with the rows where ``rows (n,)`` is True set back to the (zero) initial state, in place.

    Each tensor leaf has ``n * k`` leading rows (``k`` per imagined episode: the slot models keep one per slot)."""
    n = rows.shape[0]

    def zero(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor):
            per = leaf.shape[0] // n
            leaf[rows.repeat_interleave(per)] = 0
        return leaf

    return tree_map(zero, state)


class ImaginedVecEnv(VecEnv):
    """``n_envs`` imagined episodes of ``horizon`` steps from real start states, as an SB3 ``VecEnv``.

    Args:
        model: a world model of :mod:`cwm_rl.models` with a restartable state (:func:`restartable_state`).
        norm: the normaliser it was trained with.
        observation_space, action_space: the real env's (single-env) spaces.
        start_sampler: ``(n, rng) -> (n, obs_dim)`` real observations to start episodes from.
        n_envs: imagined episodes run side by side.
        horizon: steps per imagined episode before it is truncated.
        rng: the random stream of the start-state draws (the caller's, so that draws continue across envs).
        reward_fn: optional ``next_obs (n, obs_dim) tensor -> (reward, terminated)``: the env's own reward of the
            imagined observation (PETS-style known reward) instead of the model's heads.
        bounds_margin: ``None`` (default): only non-finite predictions are invalid. A number ``m >= 0``: so is a
            prediction outside ``[low - m * (high - low), high + m * (high - low)]`` in a dimension whose bounds
            are finite; the episode ends at the prediction clipped into that box, the step's reward kept.

    Attributes:
        steps: imagined transitions produced so far.
        episodes: imagined episodes ended so far (terminated or truncated).
        invalid: of those, the episodes cut short by an invalid prediction.
    """

    def __init__(
        self,
        model: nn.Module,
        norm: Normalizer,
        observation_space: spaces.Box,
        action_space: spaces.Space,
        start_sampler: Callable[[int, np.random.Generator], np.ndarray],
        n_envs: int,
        horizon: int,
        rng: np.random.Generator,
        reward_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        bounds_margin: float | None = None,
    ) -> None:
        if n_envs < 1 or horizon < 1:
            raise ConfigError(f"n_envs={n_envs} and horizon={horizon} must be positive integers")
        if bounds_margin is not None and not bounds_margin >= 0:
            raise ConfigError(f"bounds_margin={bounds_margin} must be >= 0 (or None: no bounds check)")
        self.render_mode = None  # read by VecEnv's constructor (get_attr): nothing to render
        super().__init__(n_envs, observation_space, action_space)
        self.model, self.norm, self.horizon = model, norm, int(horizon)
        self.start_sampler, self.reward_fn = start_sampler, reward_fn
        self.discrete = isinstance(action_space, spaces.Discrete)
        self._rng = rng
        self._state: Any = None
        self._x: torch.Tensor | None = None
        self._t = np.zeros(n_envs, dtype=np.int64)
        self._actions: np.ndarray | None = None
        self._low, self._high = self._widened_bounds(observation_space, bounds_margin)
        self.steps = self.episodes = self.invalid = 0

    @staticmethod
    def _widened_bounds(space: spaces.Box, margin: float | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The flat observation bounds widened by ``margin`` of their range (infinite where a bound is)."""
        if margin is None:
            return None, None
        low, high = (np.asarray(b, dtype=np.float64).reshape(-1) for b in (space.low, space.high))
        with np.errstate(invalid="ignore", over="ignore"):
            span = high - low
            pad = np.where(np.isfinite(span), margin * span, np.inf)
        return torch.as_tensor(low - pad, dtype=torch.float32), torch.as_tensor(high + pad, dtype=torch.float32)

    # ------------------------------------------------------------------ episodes
    def _starts(self, n: int) -> torch.Tensor:
        obs = np.asarray(self.start_sampler(n, self._rng), dtype=np.float32)
        return torch.as_tensor(obs.reshape(n, -1))

    def reset(self) -> np.ndarray:
        """Every imagined episode restarts at a fresh real state."""
        self._state = restartable_state(self.model, self.num_envs)
        self._x = self._starts(self.num_envs)
        self._t[:] = 0
        return self._x.numpy().copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    @torch.no_grad()
    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._x is None or self._actions is None:
            raise RuntimeError("call reset() and step_async() before step_wait()")
        n, x = self.num_envs, self._x
        if self.discrete:
            a = torch.as_tensor(self._actions.reshape(n).astype(np.int64))
        else:
            low, high = self.action_space.low, self.action_space.high
            a = torch.as_tensor(np.clip(self._actions.reshape(n, -1), low, high).astype(np.float32))
        was_training = self.model.training
        self.model.eval()
        pred, self._state = consuming_step(self.model)(self._state, self.norm.obs(x), self.norm.action(a))
        self.model.train(was_training)
        nxt = x + self.norm.unnormalize_delta(pred.delta)
        finite = torch.isfinite(nxt).all(-1)
        valid = finite.clone()
        if self._low is not None:  # out of bounds: the episode ends at the state clipped into the widened bounds
            valid &= ((nxt >= self._low) & (nxt <= self._high)).all(-1)
            nxt = torch.clamp(nxt, self._low, self._high)
        nxt = torch.where(finite[:, None], nxt, x)  # non-finite: it ends at the last finite state
        if self.reward_fn is not None:
            reward, terminated = self.reward_fn(nxt)
        else:
            reward, terminated = pred.reward, pred.termination_logit > 0
        # the step's reward stands where the state is finite (the model predicted it from a valid state); a model
        # that has blown up says nothing
        finite &= torch.isfinite(reward)
        valid &= finite
        reward = torch.where(finite, reward, torch.zeros_like(reward))
        terminated = terminated.bool() & valid
        self._t += 1
        truncated = (self._t >= self.horizon) | ~valid.numpy()
        done = terminated.numpy() | truncated
        self.episodes += int(done.sum())
        self.invalid += int((~valid).sum())
        infos: list[dict[str, Any]] = [{} for _ in range(n)]
        obs = nxt.clone()
        if done.any():
            rows = np.flatnonzero(done)
            for i in rows:
                infos[i]["terminal_observation"] = nxt[i].numpy().copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            obs[torch.as_tensor(rows)] = self._starts(len(rows))
            self._state = restart_rows(self._state, torch.as_tensor(done))
            self._t[rows] = 0
        self._x = obs
        self.steps += n
        return obs.numpy().copy(), reward.numpy().astype(np.float32), done, infos

    # ------------------------------------------------------------------ VecEnv plumbing
    def close(self) -> None:
        self._state = self._x = None

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def _indices(self, indices: Any) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else list(indices)
