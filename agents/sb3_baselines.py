"""Stable-Baselines3 model-free baselines (PPO, A2C, DQN, SAC) behind the cwm_rl agent protocol.

:class:`SB3Agent` wraps one SB3 model and its vectorised training envs so ``cwm-rl train/eval/compare`` treat it
like the model-based agent: ``learn(total_env_steps)``, ``predict(obs)`` on a batch, atomic ``save``/``load``.

Hyperparameters live in rl-baselines3-zoo style YAML files, one per algorithm (``agents/configs/<algo>.yaml``):
a ``default`` entry plus one entry per env id. :func:`load_hyperparams` merges ``default`` < the env's entry
(its exact id, else the id without ``-OOD``, so an OOD twin trains like its base env) < caller overrides, and
rejects keys that are not constructor arguments of the SB3 class (with a "did you mean" hint).

Checkpoint format: SB3's own zip (``model.save``), so ``stable_baselines3.PPO.load`` still opens it, with one
extra archive member, ``cwm_rl.json`` (algo, env id, env kwargs, n_envs, seed, hyperparameters, versions).
SB3's loader ignores members that are not ``data`` or ``*.pth``, and the manifest lets :meth:`SB3Agent.load`
pick the SB3 class and check the env id before reading any weights. As with ``model.save``, a path without a
suffix gets ``.zip`` appended (:meth:`SB3Agent.checkpoint_path` says where a file lands). Replay buffers are
not saved: an off-policy agent that continues training after ``load`` starts from an empty buffer.
"""

from __future__ import annotations

import difflib
import inspect
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from cwm_rl.checkpoint import CheckpointError, atomic_write, library_versions
from cwm_rl.config import ConfigError, env_table_key, load_env_table
from cwm_rl.envs.registration import check_env_kwargs, spec_of
from cwm_rl.errors import InvalidArgumentError

from .base import torch_threads

SB3_ALGOS: tuple[str, ...] = ("ppo", "a2c", "dqn", "sac")

_ALGO_CLASSES: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC}

# Action spaces each algorithm handles (SB3's own support table: DQN is discrete-only, SAC continuous-only).
_FITTING_SPACES: dict[str, tuple[type[spaces.Space], ...]] = {
    "ppo": (spaces.Discrete, spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary),
    "a2c": (spaces.Discrete, spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary),
    "dqn": (spaces.Discrete,),
    "sac": (spaces.Box,),
}

# Keys of ours in the YAML files that are not SB3 constructor arguments: the number of training envs, and the
# torch CPU threads SB3Agent runs learn/predict with (default 1, see SB3Agent.threads).
_OWN_KEYS = ("n_envs", "threads")

# SB3 constructor arguments that SB3Agent sets from its own arguments, so a hyperparameter file must not.
_RESERVED_KEYS = {
    "seed": "seed",
    "device": "device",
    "verbose": "verbose",
    "tensorboard_log": "tensorboard_log",
    "env": "env_id",
    "_init_setup_model": None,
}

# ``policy_kwargs.activation_fn`` is a class in SB3; the YAML names it (``tanh``, ``relu``, ``nn.ReLU``, ...),
# matched without case or underscores.
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    cls.__name__.lower(): cls for cls in (nn.Tanh, nn.ReLU, nn.ELU, nn.LeakyReLU, nn.SiLU, nn.GELU)
}

CONFIG_DIR = Path(__file__).parent / "configs"
MANIFEST_NAME = "cwm_rl.json"
_FORMAT = "cwm_rl.sb3_agent"


# --------------------------------------------------------------------------------------------------- algorithms


def quiet_unlogged(model: BaseAlgorithm) -> None:
    """Give an SB3 model that logs nowhere (no TensorBoard folder, ``verbose=0``) a logger without outputs.

    SB3 would configure one that writes nothing yet creates an empty ``$TMPDIR/SB3-<time>`` folder on every
    ``learn()`` call; a logger with no outputs and no folder is the same minus the litter."""
    if model.tensorboard_log is None and model.verbose == 0:
        model.set_logger(Logger(folder=None, output_formats=[]))


def check_algo(algo: str) -> str:
    """Return the canonical (lower-case) name of ``algo`` or raise :class:`InvalidArgumentError` listing them."""
    name = algo.lower() if isinstance(algo, str) else algo
    if name not in _ALGO_CLASSES:
        hint = difflib.get_close_matches(str(name), SB3_ALGOS, n=1)
        did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
        choices = ", ".join(SB3_ALGOS)
        raise InvalidArgumentError(f"unknown SB3 algorithm {algo!r}; {did_you_mean}choose one of {choices}")
    return name


def algos_for(env_id: str, env_kwargs: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The algorithms of :data:`SB3_ALGOS` that fit ``env_id``'s action space, in :data:`SB3_ALGOS` order.

    Builds one env to read its action space (our envs are cheap to construct). Unknown ids raise
    :class:`~cwm_rl.errors.UnknownEnvError`.
    """
    action_space = _action_space_of(env_id, env_kwargs)
    return tuple(a for a in SB3_ALGOS if isinstance(action_space, _FITTING_SPACES[a]))


def _action_space_of(env_id: str, env_kwargs: dict[str, Any] | None) -> spaces.Space:
    spec = spec_of(env_id)
    check_env_kwargs(spec.id, dict(env_kwargs or {}))
    env = gym.make(spec.id, **(env_kwargs or {}))
    try:
        return env.action_space
    finally:
        env.close()


def _check_fit(algo: str, env_id: str, action_space: spaces.Space) -> None:
    """Raise a one-line :class:`InvalidArgumentError` when ``algo`` cannot act in ``action_space``."""
    if isinstance(action_space, _FITTING_SPACES[algo]):
        return
    needs = " or ".join(s.__name__ for s in _FITTING_SPACES[algo])
    # The off-policy counterpart first (dqn <-> sac): the natural swap for someone who asked for off-policy.
    fitting = sorted(
        (a for a in SB3_ALGOS if isinstance(action_space, _FITTING_SPACES[a])), key=lambda a: a not in ("dqn", "sac")
    )
    if not fitting:
        advice = "no SB3 baseline here supports it"
    elif len(fitting) == 1:
        advice = f"use {fitting[0]}"
    else:
        advice = f"use {', '.join(fitting[:-1])} or {fitting[-1]}"
    raise InvalidArgumentError(f"{algo} needs a {needs} action space; {env_id} has {action_space}; {advice}")


# ----------------------------------------------------------------------------------------------- hyperparameters


def config_path(algo: str) -> Path:
    """The shipped hyperparameter file of ``algo`` (``agents/configs/<algo>.yaml``)."""
    return CONFIG_DIR / f"{check_algo(algo)}.yaml"


def load_hyperparams(
    algo: str,
    env_id: str,
    overrides: dict[str, Any] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Resolve the hyperparameters of ``algo`` on ``env_id``: ``default`` < env entry < ``overrides``.

    Args:
        algo: one of :data:`SB3_ALGOS`.
        env_id: the env id; its entry is looked up by exact id, then by the id without ``-OOD``.
        overrides: flat keys (SB3 constructor arguments plus ``policy``, ``n_envs`` and ``threads``) merged last;
            a ``policy_kwargs`` override replaces the whole mapping.
        path: a YAML file to read instead of the shipped ``agents/configs/<algo>.yaml``.

    Returns:
        A new dict with ``policy`` and ``n_envs`` always present, ready for :class:`SB3Agent`.

    Raises:
        ConfigError: unknown key (with the closest valid one), a value of the wrong type, or a malformed file.
        InvalidArgumentError: unknown ``algo``.
    """
    algo = check_algo(algo)
    file = Path(path) if path is not None else config_path(algo)
    table = load_env_table(file)
    resolved: dict[str, Any] = {"policy": "MlpPolicy", "n_envs": 1}
    resolved.update(_validated(algo, table["default"], f"{file} [default]"))
    entry_id = env_table_key(table, env_id)
    if entry_id is not None:
        resolved.update(_validated(algo, table[entry_id], f"{file} [{entry_id}]"))
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(f"{algo} hyperparameter overrides must be a mapping of names to values, got {overrides!r}")
    if overrides:
        resolved.update(_validated(algo, overrides, f"{algo} hyperparameter override"))
    return resolved


def _constructor_params(algo: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(_ALGO_CLASSES[algo].__init__).parameters)


def _validated(algo: str, entry: dict[str, Any], where: str) -> dict[str, Any]:
    """Check every key and simple type of ``entry``; return a copy with activation names turned into classes."""
    params = _constructor_params(algo)
    allowed = sorted(set(params) - set(_RESERVED_KEYS) - {"self"} | set(_OWN_KEYS))
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key in _RESERVED_KEYS:
            arg = _RESERVED_KEYS[key]
            raise ConfigError(f"{where}: {key!r} is not a hyperparameter; pass SB3Agent({arg}=...) instead")
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suggestion = f"did you mean {hint[0]!r}?" if hint else f"known keys: {', '.join(allowed)}"
            raise ConfigError(f"{where}: unknown key {key!r} for {algo}; {suggestion}")
        if key in ("n_envs", "threads"):
            _check_positive_int(value, f"{where}: {key}")
        elif key == "policy":
            _check_policy(algo, value, where)
        elif key == "policy_kwargs":
            value = _policy_kwargs(value, where)
        else:
            _check_simple_type(value, params[key].annotation, f"{where}: {key}")
        out[key] = value
    return out


def _check_positive_int(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what}={value!r} must be a positive integer")


def _check_policy(algo: str, value: Any, where: str) -> None:
    aliases = list(_ALGO_CLASSES[algo].policy_aliases)
    if isinstance(value, type):  # a policy class passed from Python: SB3 checks it
        return
    if value not in aliases:
        hint = difflib.get_close_matches(str(value), aliases, n=1)
        suggestion = f"did you mean {hint[0]!r}?" if hint else f"choose one of {', '.join(aliases)}"
        raise ConfigError(f"{where}: unknown policy {value!r} for {algo}; {suggestion}")


def _policy_kwargs(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: policy_kwargs={value!r} must be a mapping")
    value = dict(value)
    act = value.get("activation_fn")
    if isinstance(act, str):
        name = act.lower().removeprefix("nn.").replace("_", "")
        if name not in _ACTIVATIONS:
            hint = difflib.get_close_matches(name, list(_ACTIVATIONS), n=1)
            suggestion = f"did you mean {hint[0]!r}?" if hint else f"choose one of {', '.join(_ACTIVATIONS)}"
            raise ConfigError(f"{where}: unknown policy_kwargs.activation_fn {act!r}; {suggestion}")
        value["activation_fn"] = _ACTIVATIONS[name]
    return value


def _check_simple_type(value: Any, annotation: Any, what: str) -> None:
    """Type-check arguments annotated ``int``, ``float`` or ``bool`` (optionally ``| None``); others go to SB3."""
    args = set(getattr(annotation, "__args__", ())) if not isinstance(annotation, type) else {annotation}
    if value is None and type(None) in args:
        return
    simple = args - {type(None)}
    if simple == {bool}:
        if not isinstance(value, bool):
            raise ConfigError(f"{what}={value!r} must be true or false")
    elif simple == {int}:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{what}={value!r} must be an integer")
    elif simple == {float}:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{what}={value!r} must be a number")


def _jsonable(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters as JSON/YAML-safe values (classes and callables by name), for manifests and config.yaml."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, (bool, int, float, str)) or v is None:
            return v
        if isinstance(v, type):
            return v.__name__
        return repr(v)

    return plain(hyperparams)


# --------------------------------------------------------------------------------------------------------- agent


class SB3Agent:
    """One SB3 model (PPO, A2C, DQN or SAC) with its own vectorised training envs, as a cwm_rl agent.

    Attributes:
        algo: the algorithm name (``"ppo"``, ...).
        env_id: the env id the agent trains on (the registered spec id).
        model: the SB3 model; use it for anything the protocol does not cover.
        hyperparams: the resolved hyperparameters (``policy``, ``n_envs``, ``threads`` and SB3 constructor
            arguments).
        seed: the seed the training envs and the model were seeded from.
    """

    def __init__(
        self,
        algo: str,
        env_id: str,
        seed: int = 0,
        hyperparams: dict[str, Any] | None = None,
        tensorboard_log: str | os.PathLike[str] | None = None,
        env_kwargs: dict[str, Any] | None = None,
        device: str = "cpu",
        verbose: int = 0,
        *,
        _model: BaseAlgorithm | None = None,
        _resolved: dict[str, Any] | None = None,
    ) -> None:
        """Build the training envs and the SB3 model.

        Args:
            algo: one of :data:`SB3_ALGOS` (case-insensitive).
            env_id: a registered Gymnasium id, e.g. ``"cwm/Pusher2D-v0"``.
            seed: seeds the model (torch, numpy, action sampling) and the training envs (``seed + rank``), so
                the same seed gives the same learned policy on CPU.
            hyperparams: overrides merged over the YAML file (see :func:`load_hyperparams`).
            tensorboard_log: folder for SB3's TensorBoard events (``None``: no logging).
            env_kwargs: constructor arguments of the env, checked against its signature.
            device: torch device of the model; ``"cpu"`` keeps MLP policies fast and reproducible.
            verbose: SB3 verbosity (0 silent, 1 training info).

        Raises:
            InvalidArgumentError: unknown algo, bad env kwargs, or an algo that does not fit the action space.
            UnknownEnvError: ``env_id`` is not registered.
            ConfigError: unknown or ill-typed hyperparameters.
        """
        self.algo = check_algo(algo)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InvalidArgumentError(f"seed={seed!r} must be an integer")
        seed = int(seed)
        spec = spec_of(env_id)
        self.env_id: str = spec.id
        self.seed = seed
        self.env_kwargs: dict[str, Any] = dict(env_kwargs or {})
        check_env_kwargs(self.env_id, self.env_kwargs)
        _check_fit(self.algo, self.env_id, _action_space_of(self.env_id, self.env_kwargs))
        if _resolved is None:
            _resolved = load_hyperparams(self.algo, self.env_id, hyperparams)
        self.hyperparams: dict[str, Any] = _resolved
        if _model is None:
            tb = None if tensorboard_log is None else os.fspath(tensorboard_log)
            _model = _build_model(self.algo, self.hyperparams, self.env_id, seed, self.env_kwargs, device, tb, verbose)
        self.model: BaseAlgorithm = _model

    # ------------------------------------------------------------------------------------------------ protocol

    @property
    def num_timesteps(self) -> int:
        """Env steps taken so far, summed over all training envs (continues across ``learn`` calls)."""
        return int(self.model.num_timesteps)

    @property
    def n_envs(self) -> int:
        """Number of parallel training envs."""
        return int(self.model.n_envs)

    @property
    def threads(self) -> int:
        """Torch CPU threads ``learn`` and ``predict`` run with (hyperparameter ``threads``, default 1; the caller's
        setting is restored afterwards). One thread: SB3's small MLP policies gain nothing from a second one, and
        on a busy machine (the env stepping, other jobs) extra threads wait on each other; see
        ``docs/design_notes.md``, "Agents", for the measurement."""
        return int(self.hyperparams.get("threads", 1))

    @property
    def env(self) -> VecEnv:
        """The vectorised training envs."""
        env = self.model.get_env()
        assert env is not None  # always set: the constructor and load() pass one
        return env

    def learn(self, total_env_steps: int, callback: Any = None, tb_log_name: str | None = None) -> SB3Agent:
        """Train for ``total_env_steps`` more env steps (over all sub-envs), continuing from earlier calls.

        SB3 collects whole rollouts, so an on-policy agent may overshoot by up to ``n_envs * n_steps`` steps;
        schedules such as DQN's epsilon span each call, so prefer one call with the full budget.

        Args:
            total_env_steps: additional env steps, ``>= 1``.
            callback: an SB3 callback (``BaseCallback``, a list of them, or a callable), passed through.
            tb_log_name: TensorBoard run name (default: the algo name); later calls append to the same run.
        """
        if isinstance(total_env_steps, bool) or not isinstance(total_env_steps, (int, np.integer)):
            raise InvalidArgumentError(f"total_env_steps={total_env_steps!r} must be a positive integer")
        if total_env_steps < 1:
            raise InvalidArgumentError(f"total_env_steps={total_env_steps} must be a positive integer")
        quiet_unlogged(self.model)
        with torch_threads(self.threads):
            self.model.learn(
                total_timesteps=int(total_env_steps),
                callback=callback,
                tb_log_name=tb_log_name or self.algo.upper(),
                reset_num_timesteps=False,
                progress_bar=False,
            )
        return self

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions for a batch of observations ``(n, *obs_shape)``.

        Returns:
            ``(n,)`` int64 for a Discrete action space, ``(n, *action_shape)`` float32 for Box (within bounds),
            ``(n, k)`` int64 for MultiDiscrete/MultiBinary.
        """
        obs = self._checked_obs(obs)
        with torch_threads(self.threads):
            actions, _ = self.model.predict(obs, deterministic=deterministic)
        actions = np.asarray(actions)
        if isinstance(self.model.action_space, spaces.Box):
            return actions.astype(np.float32, copy=False).reshape(len(obs), *self.model.action_space.shape)
        return actions.astype(np.int64, copy=False).reshape(len(obs), *self.model.action_space.shape)

    def _checked_obs(self, obs: Any) -> np.ndarray:
        space = self.model.observation_space
        expected = space.shape or ()
        obs = np.asarray(obs, dtype=space.dtype if space.dtype is not None else None)
        if obs.ndim != len(expected) + 1 or obs.shape[1:] != expected:
            hint = "; add a batch axis (obs[None])" if obs.shape == expected else ""
            raise InvalidArgumentError(
                f"{self.env_id} observations must be a batch of shape (n, {', '.join(map(str, expected))}), "
                f"got {obs.shape}{hint}"
            )
        if obs.dtype.kind == "f" and not np.all(np.isfinite(obs)):
            raise InvalidArgumentError(f"observations for {self.env_id} contain NaN or inf")
        return obs

    # ------------------------------------------------------------------------------------------ save and load

    @staticmethod
    def checkpoint_path(path: str | os.PathLike[str]) -> Path:
        """Where :meth:`save` writes ``path``: as given, with ``.zip`` appended when it has no suffix (as SB3)."""
        path = Path(path)
        return path if path.suffix else path.with_name(path.name + ".zip")

    def manifest(self) -> dict[str, Any]:
        """What :meth:`save` stores next to the weights, and :meth:`load` checks."""
        return {
            "format": _FORMAT,
            "algo": self.algo,
            "env_id": self.env_id,
            "env_kwargs": _jsonable(self.env_kwargs),
            "n_envs": self.n_envs,
            "seed": self.seed,
            "num_timesteps": self.num_timesteps,
            "hyperparams": _jsonable(self.hyperparams),
            "versions": library_versions(),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the agent as one SB3 zip (plus ``cwm_rl.json``) atomically; see :meth:`checkpoint_path`.

        The zip is written to a hidden temporary file in the same folder, flushed to disk and renamed over
        ``path``, so a crash or a full disk leaves any earlier file at ``path`` intact.
        """
        target = self.checkpoint_path(path)
        manifest = json.dumps(self.manifest(), indent=2)

        def write(f: BinaryIO) -> None:
            self.model.save(f)  # a file object: SB3 writes there and appends no suffix
            f.seek(0, os.SEEK_END)
            with zipfile.ZipFile(f, mode="a") as archive:
                archive.writestr(MANIFEST_NAME, manifest)

        atomic_write(target, write, "agent")

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        env_id: str | None = None,
        seed: int | None = None,
        n_envs: int | None = None,
        tensorboard_log: str | os.PathLike[str] | None = None,
        env_kwargs: dict[str, Any] | None = None,
        device: str = "cpu",
        verbose: int = 0,
    ) -> SB3Agent:
        """Restore an agent written by :meth:`save`, with fresh training envs so it can keep learning.

        Args:
            path: the file (``.zip`` is tried when ``path`` has no suffix and does not exist, as SB3 does).
            env_id: if given, the agent must have been trained on exactly this id.
            seed: seeds the new training envs; default: the seed it was trained with.
            n_envs: number of training envs; default: as trained.
            tensorboard_log, device, verbose: as in the constructor.
            env_kwargs: env constructor arguments; default: those it was trained with.

        Raises:
            CheckpointError: missing, corrupt or non-cwm_rl file, or an agent of another env.
        """
        file = _existing_checkpoint(path)
        manifest = read_manifest(file)
        if env_id is not None:
            wanted = spec_of(env_id).id
            if manifest["env_id"] != wanted:
                raise CheckpointError(
                    f"{str(file)!r} is a {manifest['algo']} agent for {manifest['env_id']}, not {wanted}; "
                    f"load an agent trained on {wanted}"
                )
        algo = check_algo(manifest["algo"])
        # The hyperparameters it was trained with (not today's YAML): they describe the saved model.
        resolved = {"policy": "MlpPolicy", "n_envs": 1}
        resolved.update(_validated(algo, dict(manifest.get("hyperparams") or {}), f"{file} [{MANIFEST_NAME}]"))
        if n_envs is not None:
            _check_positive_int(n_envs, "n_envs")
            resolved["n_envs"] = n_envs
        trained_on = spec_of(manifest["env_id"]).id
        seed = int(manifest.get("seed", 0)) if seed is None else seed
        env_kwargs = dict(manifest.get("env_kwargs") or {}) if env_kwargs is None else dict(env_kwargs)
        check_env_kwargs(trained_on, env_kwargs)
        venv = _make_training_envs(trained_on, int(resolved["n_envs"]), seed, env_kwargs)
        tb = None if tensorboard_log is None else os.fspath(tensorboard_log)
        try:
            model = _ALGO_CLASSES[algo].load(file, env=venv, device=device, tensorboard_log=tb, verbose=verbose)
        except (ValueError, KeyError, RuntimeError) as e:  # wrong spaces, foreign or damaged weights
            venv.close()
            raise CheckpointError(
                f"cannot restore {str(file)!r} on {trained_on} ({type(e).__name__}: {_first_line(e)})"
            ) from None
        kwargs = {"env_kwargs": env_kwargs, "device": device, "verbose": verbose}
        return cls(algo, trained_on, seed, **kwargs, _model=model, _resolved=resolved)

    # ------------------------------------------------------------------------------------ pickling (exact resume)

    def __getstate__(self) -> dict[str, Any]:
        """Everything an exact continuation needs (:mod:`cwm_rl.agents.snapshot`): the model the SB3 way (its zip:
        weights, optimisers, counters, schedules, ``_last_obs``), the training envs mid-episode (pickled with their
        random generators and Monitor counters), the replay buffer of an off-policy algorithm (SB3 leaves it out of
        the zip), and the action space's random generator (SB3 reseeds it on load)."""
        model = self.model
        zipped = io.BytesIO()
        model.save(zipped)
        state = {k: v for k, v in self.__dict__.items() if k != "model"}
        state["_sb3"] = {
            "zip": zipped.getvalue(),
            "env": model.get_env(),
            "replay_buffer": getattr(model, "replay_buffer", None),
            "action_rng": model.action_space.np_random.bit_generator.state,
            "tensorboard_log": model.tensorboard_log,
        }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        sb3 = state.pop("_sb3")
        self.__dict__.update(state)
        # Loaded without an env, so SB3's reseeding on load (global streams, action space) leaves the env alone;
        # the caller restores the global streams afterwards (snapshot.set_global_rng_state).
        model = _ALGO_CLASSES[self.algo].load(
            io.BytesIO(sb3["zip"]), env=None, device="cpu", tensorboard_log=sb3["tensorboard_log"]
        )
        model.set_env(sb3["env"], force_reset=False)  # keeps _last_obs: the envs continue mid-episode
        if sb3["replay_buffer"] is not None:
            model.replay_buffer = sb3["replay_buffer"]
        model.action_space.np_random.bit_generator.state = sb3["action_rng"]
        self.model = model

    def close(self) -> None:
        """Close the training envs."""
        self.env.close()

    def __repr__(self) -> str:
        return f"SB3Agent({self.algo!r}, {self.env_id!r}, seed={self.seed}, num_timesteps={self.num_timesteps})"


def _make_training_envs(env_id: str, n_envs: int, seed: int, env_kwargs: dict[str, Any]) -> VecEnv:
    """``n_envs`` Monitor-wrapped copies of the env in a DummyVecEnv, seeded ``seed, seed + 1, ...``.

    Monitor records episode returns and lengths, which SB3 logs as ``rollout/ep_rew_mean``; DummyVecEnv (not
    subprocesses) because the suite's numpy envs step in microseconds, far less than a process round trip.
    """
    return make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)


def _build_model(
    algo: str,
    hyperparams: dict[str, Any],
    env_id: str,
    seed: int,
    env_kwargs: dict[str, Any],
    device: str,
    tensorboard_log: str | None,
    verbose: int,
) -> BaseAlgorithm:
    """The SB3 model on fresh training envs; SB3's own checks of values (e.g. ``batch_size``) become ConfigError."""
    venv = _make_training_envs(env_id, int(hyperparams["n_envs"]), seed, env_kwargs)
    sb3_kwargs = {k: v for k, v in hyperparams.items() if k not in _OWN_KEYS}
    policy = sb3_kwargs.pop("policy")
    try:
        return _ALGO_CLASSES[algo](
            policy, venv, seed=seed, device=device, tensorboard_log=tensorboard_log, verbose=verbose, **sb3_kwargs
        )
    except (AssertionError, ValueError, TypeError) as e:
        venv.close()
        raise ConfigError(f"{algo} rejected its hyperparameters on {env_id}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``cwm_rl.json`` manifest of a saved agent, without loading any weights.

    Raises:
        CheckpointError: the file is missing, not a zip, or not written by :meth:`SB3Agent.save`.
    """
    file = _existing_checkpoint(path)
    try:
        with zipfile.ZipFile(file) as archive:
            if MANIFEST_NAME not in archive.namelist():
                raise CheckpointError(
                    f"{str(file)!r} is not a cwm_rl SB3 agent (no {MANIFEST_NAME}); save it with SB3Agent.save"
                )
            manifest = json.loads(archive.read(MANIFEST_NAME).decode())
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, EOFError) as e:
        raise CheckpointError(
            f"{str(file)!r} is truncated or corrupt ({type(e).__name__}); use an earlier checkpoint"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise CheckpointError(f"{str(file)!r} has an unknown {MANIFEST_NAME} format; save it with SB3Agent.save")
    return manifest


def _existing_checkpoint(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    for candidate in (path, SB3Agent.checkpoint_path(path)):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"agent file {str(path)!r} does not exist")
