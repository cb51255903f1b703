"""Base classes of every causal environment: :class:`CausalEnv` and its natively batched :class:`CausalVectorEnv`.

One implementation, two faces. An environment writes its dynamics **once**, as numpy functions over a leading
batch axis (:meth:`CausalEnv._reset_batch`, :meth:`CausalEnv._step_batch`, :meth:`CausalEnv._observe_batch`). The
single env runs them on a batch of one; :class:`CausalVectorEnv` runs them on ``num_envs`` sub-environments with no
Python loop. Randomness comes from a counter-based generator (:mod:`cwm_rl.envs.rng`) with one stream per
sub-environment, so a batched env gives exactly the transitions of single envs seeded ``seed + i``, local graphs
included.

The causal contract (see ``DESIGN.md``):

* ``slot_names`` / ``slot_slices``: named slots of the flat ``float32`` observation.
* ``causal_graph``: bool ``(n_slots, n_slots + 1)``; row = child at t+1, column = parent at t, last column = action.
* ``info["local_graph"]`` (same shape) and ``info["intervened"]`` (bool ``(n_slots,)``) on every step.
* :meth:`CausalEnv.get_state` / :meth:`CausalEnv.set_state` include the random stream, so a transition can be
  replayed counterfactually; :meth:`CausalEnv.perturb_state` moves one slot within its neighbourhood, which is what
  :func:`cwm_rl.envs.verify_local_graphs` uses to check the declared local graphs.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from cwm_rl.envs.rng import key_from_generator, uniforms
from cwm_rl.errors import InvalidActionError, InvalidArgumentError

UNIFORM_BLOCK = 64
"""The single env computes the uniforms of this many upcoming steps at once (see ``CausalEnv._step_uniforms``)."""

State = dict[str, np.ndarray]
"""Simulator state: named arrays whose leading axis is the batch (one entry per sub-environment)."""


class StepResult(NamedTuple):
    """What :meth:`CausalEnv._step_batch` returns, batched over the leading axis."""

    state: State
    reward: np.ndarray  # (B,) float64
    terminated: np.ndarray  # (B,) bool
    local_graph: np.ndarray  # (B, n_slots, n_slots + 1) bool
    intervened: np.ndarray  # (B, n_slots) bool


class CausalEnv(gym.Env[np.ndarray, Any]):
    """A Gymnasium env whose state is a set of named slots and whose every transition reports its causal graph.

    Subclasses call :meth:`_init_causal` in ``__init__`` and implement the batched hooks below. Everything else —
    seeding, action checks, ``get_state``/``set_state``, rendering, the vector env — is shared.

    Hooks (all batched over a leading axis ``B``; ``u`` are uniforms in ``[0, 1)`` from the env's own stream):

    * ``_reset_batch(u) -> State`` with ``u`` of shape ``(B, n_reset_uniforms)``.
    * ``_step_batch(state, action, u) -> StepResult`` with ``u`` of shape ``(B, n_step_uniforms)``. Consume a
      fixed number of uniforms whatever the state, so that counterfactual replays see the same noise.
    * ``_observe_batch(state) -> (B, obs_dim) float32``.
    * ``_perturb_slot(state, slot, rng) -> State``: move one slot of a batch-of-one state within its
      neighbourhood (small noise for continuous values, a different value for discrete ones).
    * ``_render_frame(state) -> (H, W, 3) uint8`` for a batch-of-one state.

    Optional: :meth:`reward_from_observation`, the reward and termination as a function of the next observation,
    where the env has one; planners can then score imagined states with it (``mpc.reward=env``), as mbrl-lib's
    PETS does with its known reward functions.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 15}

    n_reset_uniforms: ClassVar[int] = 1
    n_step_uniforms: ClassVar[int] = 1

    slot_names: tuple[str, ...]
    slot_slices: dict[str, slice]
    causal_graph: np.ndarray

    def __init__(self, render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise InvalidArgumentError(
                f"render_mode={render_mode!r} is not supported by {type(self).__name__}; "
                f"use one of {self.metadata['render_modes']} or None"
            )
        self.render_mode = render_mode
        self._state: State | None = None
        self._key: np.ndarray | None = None
        self._counter = 0  # events drawn from the stream so far (a Python int: one less numpy call per step)
        self._block: tuple[int, int, np.ndarray] | None = None  # (key, first counter, uniforms) of upcoming steps

    # ------------------------------------------------------------------ set-up helpers for subclasses
    def _init_causal(
        self,
        slot_dims: dict[str, int],
        causal_graph: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
        action_space: spaces.Space[Any],
    ) -> None:
        """Declare the slots (name -> width, in observation order), the global graph, bounds and action space."""
        self.slot_names = tuple(slot_dims)
        self.slot_slices = {}
        start = 0
        for name, width in slot_dims.items():
            self.slot_slices[name] = slice(start, start + width)
            start += width
        graph = np.asarray(causal_graph, dtype=bool)
        n = len(self.slot_names)
        if graph.shape != (n, n + 1):
            raise InvalidArgumentError(
                f"{type(self).__name__}.causal_graph has shape {graph.shape}, expected {(n, n + 1)} "
                "(rows = child slots, columns = parent slots then the action)"
            )
        graph.setflags(write=False)
        self.causal_graph = graph
        low = np.asarray(low, dtype=np.float32)
        high = np.asarray(high, dtype=np.float32)
        if low.shape != (start,) or high.shape != (start,):
            raise InvalidArgumentError(
                f"{type(self).__name__}: observation bounds have shapes {low.shape}/{high.shape}, "
                f"expected ({start},) = the sum of the slot widths"
            )
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self.action_space = action_space

    @property
    def n_slots(self) -> int:
        """Number of slots (rows of the causal graph)."""
        return len(self.slot_names)

    # ------------------------------------------------------------------ hooks
    def _reset_batch(self, u: np.ndarray) -> State:
        raise NotImplementedError

    def _step_batch(self, state: State, action: np.ndarray, u: np.ndarray) -> StepResult:
        raise NotImplementedError

    def _observe_batch(self, state: State) -> np.ndarray:
        raise NotImplementedError

    def _perturb_slot(self, state: State, slot: str, rng: np.random.Generator) -> State:
        raise NotImplementedError(
            f"{type(self).__name__} does not implement _perturb_slot, so its local graphs cannot be verified"
        )

    def _render_frame(self, state: State) -> np.ndarray:
        raise NotImplementedError

    has_observation_reward: ClassVar[bool] = False
    """True where :meth:`reward_from_observation` is implemented."""

    def reward_from_observation(self, next_obs: Any) -> tuple[Any, Any]:
        """``(reward, terminated)`` of transitions into ``next_obs (..., obs_dim)`` (numpy arrays or torch tensors,
        the same kind back), where the env's reward is a function of the observation reached; the env's own step
        gives the same values. Not every env has one (Pong's reward is the change of its score, a function of two
        observations rather than of the one reached): see :attr:`has_observation_reward`."""
        raise NotImplementedError(f"{type(self).__name__} has no reward function of the observation")

    # ------------------------------------------------------------------ Gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or self._key is None:
            self._key = np.array([key_from_generator(self.np_random)], dtype=np.uint64)
            self._counter = 0
        u = uniforms(self._key, np.array([self._counter], dtype=np.uint64), self.n_reset_uniforms)
        self._counter += 1
        self._state = self._reset_batch(u)
        return self._observe_batch(self._state)[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise gym.error.ResetNeeded("Cannot call step() before reset(); call env.reset(seed=...) first")
        batch_action = self._check_action(action)
        u = self._step_uniforms()
        self._counter += 1
        result = self._step_batch(self._state, batch_action, u)
        self._state = result.state
        info = {"local_graph": result.local_graph[0], "intervened": result.intervened[0]}
        obs = self._observe_batch(result.state)[0]
        return obs, float(result.reward[0]), bool(result.terminated[0]), False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render mode; make the env with render_mode='rgb_array'")
            return None
        if self._state is None:
            raise gym.error.ResetNeeded("Cannot call render() before reset()")
        return self._render_frame(self._state)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Snapshots pickled before the counter became an int (and before the uniform block) still load.
        counter = state.get("_counter", 0)
        if isinstance(counter, np.ndarray):
            state["_counter"] = int(counter.reshape(-1)[0])
        state.setdefault("_block", None)
        self.__dict__.update(state)

    def _step_uniforms(self) -> np.ndarray:
        """The ``(1, n_step_uniforms)`` uniforms of the step at the current counter.

        The stream is counter-based, so the uniforms of the next ``UNIFORM_BLOCK`` steps are computed in one batched
        call and served row by row: the same numbers as one call per step (the draws are a pure function of key,
        counter and index), at a fraction of the numpy calls. The block is recomputed when the key changes (a seeded
        reset, :meth:`set_state`) or the counter leaves it (a reset consumes an event too).
        """
        assert self._key is not None
        key, counter = int(self._key[0]), self._counter
        block = self._block
        if block is None or block[0] != key or not 0 <= counter - block[1] < UNIFORM_BLOCK:
            counters = np.arange(counter, counter + UNIFORM_BLOCK, dtype=np.uint64)
            keys = np.full(UNIFORM_BLOCK, key, dtype=np.uint64)
            block = self._block = (key, counter, uniforms(keys, counters, self.n_step_uniforms))
        row = counter - block[1]
        return block[2][row : row + 1]

    # ------------------------------------------------------------------ actions
    def _check_action(self, action: Any) -> np.ndarray:
        """Validate one action and return it as a batch of one; never clips or casts silently.

        Discrete actions become ``int64``; Box actions become ``float64`` (the dynamics run in double precision).
        """
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            if isinstance(action, (int, np.integer)) and not isinstance(action, (bool, np.bool_)):
                value = int(action)
            elif (
                isinstance(action, np.ndarray)
                and action.shape in ((), (1,))
                and np.issubdtype(action.dtype, np.integer)
            ):
                value = int(action.reshape(()))
            else:
                raise InvalidActionError(
                    f"action {action!r} is not an integer; {type(self).__name__} takes an int in "
                    f"[{space.start}, {space.start + space.n - 1}]"
                )
            if not space.start <= value < space.start + space.n:
                raise InvalidActionError(
                    f"action {value} is out of range; {type(self).__name__} takes an int in "
                    f"[{space.start}, {space.start + space.n - 1}]"
                )
            return _action_batch(value)
        if isinstance(space, spaces.Box):
            arr = np.asarray(action, dtype=np.float64)
            if arr.shape != space.shape:
                raise InvalidActionError(f"action has shape {arr.shape}, {type(self).__name__} expects {space.shape}")
            if not np.all(np.isfinite(arr)):
                raise InvalidActionError(f"action {arr.tolist()} contains NaN or inf")
            if np.any(arr < space.low) or np.any(arr > space.high):
                raise InvalidActionError(
                    f"action {arr.tolist()} is outside the action space [{space.low.tolist()}, "
                    f"{space.high.tolist()}]; clip or rescale it before calling step()"
                )
            return arr[None]
        raise TypeError(f"unsupported action space {space!r}")  # internal: suite envs use Discrete or Box

    # ------------------------------------------------------------------ counterfactual replay
    def get_state(self) -> dict[str, Any]:
        """Return a deep copy of the full simulator state, including the random stream and ``np_random``."""
        if self._state is None or self._key is None:
            raise gym.error.ResetNeeded("get_state() needs a reset env; call env.reset(seed=...) first")
        return {
            "sim": {k: v.copy() for k, v in self._state.items()},
            "rng_key": self._key.copy(),
            "rng_counter": np.array([self._counter], dtype=np.uint64),
            "np_random": copy.deepcopy(self.np_random.bit_generator.state),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`get_state` (the argument is copied, not kept)."""
        missing = {"sim", "rng_key", "rng_counter"} - set(state)
        if missing:
            raise InvalidArgumentError(
                f"set_state() got a state without {sorted(missing)}; pass what get_state() returned"
            )
        self._state = {k: np.array(v, copy=True) for k, v in state["sim"].items()}
        self._key = np.array(state["rng_key"], dtype=np.uint64, copy=True)
        self._counter = int(np.asarray(state["rng_counter"], dtype=np.uint64).reshape(-1)[0])
        if "np_random" in state:
            self.np_random.bit_generator.state = copy.deepcopy(state["np_random"])

    def perturb_state(self, state: dict[str, Any], slot: str, rng: np.random.Generator) -> dict[str, Any]:
        """Return a copy of ``state`` with ``slot`` moved within its neighbourhood; the random stream is unchanged."""
        if slot not in self.slot_slices:
            raise InvalidArgumentError(f"unknown slot {slot!r}; slots are {list(self.slot_names)}")
        out = dict(state)
        out["sim"] = self._perturb_slot({k: v.copy() for k, v in state["sim"].items()}, slot, rng)
        return out

    def perturb_action(self, action: Any, rng: np.random.Generator) -> Any:
        """Return a different valid action near ``action`` (another discrete value, or small noise in a Box)."""
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            shift = int(rng.integers(1, space.n)) if space.n > 1 else 0
            return np.int64(space.start + (int(action) - space.start + shift) % space.n)
        if isinstance(space, spaces.Box):
            scale = 0.25 * (space.high - space.low)
            noisy = np.asarray(action, dtype=np.float64) + rng.uniform(-1.0, 1.0, space.shape) * scale
            return np.clip(noisy, space.low, space.high).astype(space.dtype)
        raise TypeError(f"unsupported action space {space!r}")


class CausalVectorEnv(VectorEnv):
    """Natively batched version of a :class:`CausalEnv`: ``num_envs`` sub-environments, no Python loop.

    Sub-environment ``i`` of ``reset(seed=s)`` is exactly the single env after ``reset(seed=s + i)`` (Gymnasium's
    convention for vector envs), transition for transition, with next-step autoreset and truncation after
    ``max_episode_steps`` like ``TimeLimit``. Infos hold ``local_graph`` ``(num_envs, n, n + 1)`` and ``intervened``
    ``(num_envs, n)`` with Gymnasium's ``_local_graph``/``_intervened`` masks (False on autoreset steps).

    Registered as each env's ``vector_entry_point``:
    ``gymnasium.make_vec(id, num_envs, vectorization_mode="vector_entry_point")``.
    """

    env_class: ClassVar[type[CausalEnv] | None] = None
    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["rgb_array"],
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        *,
        env_class: type[CausalEnv] | None = None,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        env_class = env_class or self.env_class
        if env_class is None:
            raise TypeError("CausalVectorEnv needs env_class (a CausalEnv subclass)")
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise InvalidArgumentError(f"num_envs={num_envs!r} must be a positive integer")
        if max_episode_steps is not None and (
            not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1
        ):
            raise InvalidArgumentError(f"max_episode_steps={max_episode_steps!r} must be a positive integer")
        self.env = env_class(render_mode=render_mode, **kwargs)
        self.num_envs = int(num_envs)
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.env.metadata.get("render_fps", 15)}
        self.single_observation_space = self.env.observation_space
        self.single_action_space = self.env.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.slot_names = self.env.slot_names
        self.slot_slices = self.env.slot_slices
        self.causal_graph = self.env.causal_graph

        self._state: State | None = None
        self._keys: np.ndarray | None = None
        self._counters = np.zeros(self.num_envs, dtype=np.uint64)
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)

    # ------------------------------------------------------------------ Gymnasium vector API
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        mask = np.ones(self.num_envs, dtype=bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (self.num_envs,):
                raise InvalidArgumentError(f"reset_mask must have shape ({self.num_envs},), got {mask.shape}")
            if self._state is None and not mask.all():
                raise gym.error.ResetNeeded("the first reset() must reset every sub-environment")
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise InvalidArgumentError(f"got {len(seeds)} seeds for {self.num_envs} sub-environments")
            self._np_random, self._np_random_seed = seeding.np_random(seeds[0])
            keys = self._keys.copy() if self._keys is not None else np.zeros(self.num_envs, np.uint64)
            for i, s in enumerate(seeds):  # once per seeded reset, never per step
                if mask[i]:
                    keys[i] = key_from_generator(seeding.np_random(s)[0] if s is not None else self.np_random)
                    self._counters[i] = 0
            self._keys = keys
        elif self._keys is None:
            self._keys = np.array([key_from_generator(self.np_random) for _ in range(self.num_envs)])
        idx = np.flatnonzero(mask)
        fresh = self.env._reset_batch(uniforms(self._keys[idx], self._counters[idx], self.env.n_reset_uniforms))
        self._counters[idx] += np.uint64(1)
        if self._state is None or mask.all():
            self._state = fresh
        else:
            self._state = _merge(self._state, fresh, idx)
        self._elapsed[idx] = 0
        self._needs_reset[idx] = False
        return self.env._observe_batch(self._state), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._state is None or self._keys is None:
            raise gym.error.ResetNeeded("Cannot call step() before reset(); call envs.reset(seed=...) first")
        actions = self._check_actions(actions)
        autoreset = self._needs_reset
        result = self.env._step_batch(
            self._state, actions, uniforms(self._keys, self._counters, self.env.n_step_uniforms)
        )
        state = result.state
        local_graph, intervened = result.local_graph, result.intervened
        if autoreset.any():
            idx = np.flatnonzero(autoreset)
            fresh = self.env._reset_batch(uniforms(self._keys[idx], self._counters[idx], self.env.n_reset_uniforms))
            state = _merge(state, fresh, idx)
            local_graph = local_graph.copy()
            intervened = intervened.copy()
            local_graph[idx] = False
            intervened[idx] = False
        self._counters += np.uint64(1)
        self._state = state
        self._elapsed = np.where(autoreset, 0, self._elapsed + 1)
        terminated = result.terminated & ~autoreset
        truncated = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is not None:
            truncated = (self._elapsed >= self.max_episode_steps) & ~autoreset
        rewards = np.where(autoreset, 0.0, result.reward)
        self._needs_reset = terminated | truncated
        valid = ~autoreset
        infos = {
            "local_graph": local_graph,
            "_local_graph": valid,
            "intervened": intervened,
            "_intervened": valid,
        }
        return self.env._observe_batch(state), rewards, terminated, truncated, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render mode; make the env with render_mode='rgb_array'")
            return None
        if self._state is None:
            raise gym.error.ResetNeeded("Cannot call render() before reset()")
        return tuple(
            self.env._render_frame({k: v[i : i + 1] for k, v in self._state.items()}) for i in range(self.num_envs)
        )

    def _check_actions(self, actions: Any) -> np.ndarray:
        space = self.single_action_space
        if isinstance(space, spaces.Discrete):
            arr = np.asarray(actions)
            if arr.shape != (self.num_envs,) or not np.issubdtype(arr.dtype, np.integer):
                raise InvalidActionError(
                    f"actions must be an integer array of shape ({self.num_envs},), got {arr.dtype} {arr.shape}"
                )
            bad = (arr < space.start) | (arr >= space.start + space.n)
            if bad.any():
                raise InvalidActionError(
                    f"actions {arr[bad][:5].tolist()} are out of range [{space.start}, {space.start + space.n - 1}]"
                )
            return arr.astype(np.int64, copy=False)
        if isinstance(space, spaces.Box):
            arr = np.asarray(actions, dtype=np.float64)
            if arr.shape != (self.num_envs, *space.shape):
                raise InvalidActionError(f"actions must have shape {(self.num_envs, *space.shape)}, got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise InvalidActionError("actions contain NaN or inf")
            if np.any(arr < space.low) or np.any(arr > space.high):
                raise InvalidActionError(
                    f"actions are outside the action space [{space.low.tolist()}, {space.high.tolist()}]; "
                    "clip or rescale them before calling step()"
                )
            return arr
        raise TypeError(f"unsupported action space {space!r}")


@functools.lru_cache(maxsize=1024)
def _action_batch(value: int) -> np.ndarray:
    """A discrete action as a read-only batch of one (cached: the single env builds one per step otherwise)."""
    batch = np.array([value], dtype=np.int64)
    batch.setflags(write=False)
    return batch


def _merge(state: State, fresh: State, idx: np.ndarray) -> State:
    """Return ``state`` with the entries ``idx`` replaced by ``fresh`` (a state batched over ``idx``)."""
    out = {}
    for k, v in state.items():
        merged = v.copy()
        merged[idx] = fresh[k]
        out[k] = merged
    return out
