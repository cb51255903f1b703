"""Registering causal environments with Gymnasium, and listing them.

Suite envs are registered when ``cwm_rl`` (or ``cwm_rl.envs``) is imported, so
``gymnasium.make("cwm_rl:cwm/InterventionalPong-v0")`` works without a prior import. Users register their own
:class:`~cwm_rl.envs.CausalEnv` subclasses with :func:`register_causal_env`, which also wires the natively batched
vector env, then check the graphs they declare with ``cwm-rl verify-env ID``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any

import gymnasium as gym

from cwm_rl.envs.base import CausalEnv, CausalVectorEnv
from cwm_rl.errors import InvalidArgumentError, UnknownEnvError

SUITE_NAMESPACE = "cwm"


def register_causal_env(
    env_id: str,
    env_class: type[CausalEnv] | str,
    *,
    vector_class: type[CausalVectorEnv] | str | None = None,
    max_episode_steps: int | None = None,
    kwargs: dict[str, Any] | None = None,
) -> None:
    """Register a causal env and its batched twin under ``env_id``.

    Args:
        env_id: Gymnasium id, ``"namespace/Name-vN"``.
        env_class: a :class:`CausalEnv` subclass, or its ``"module:Class"`` path (imported lazily).
        vector_class: the :class:`CausalVectorEnv` for it; by default ``CausalVectorEnv`` with ``env_class``.
        max_episode_steps: truncation horizon, applied by ``TimeLimit`` (single) and natively (vector).
        kwargs: default constructor arguments, overridable in ``gymnasium.make(env_id, **kwargs)``.
    """
    if env_id in gym.registry:
        if gym.registry[env_id].entry_point == env_class:
            return  # re-importing the module that registers it: nothing to do
        raise InvalidArgumentError(
            f"{env_id} is already registered with another entry point ({gym.registry[env_id].entry_point}); "
            "choose another id or version"
        )
    if vector_class is None:
        if isinstance(env_class, str):
            raise InvalidArgumentError(f"register_causal_env({env_id!r}): pass vector_class when env_class is a string")
        vector_class = functools.partial(CausalVectorEnv, env_class=env_class)  # type: ignore[assignment]
    gym.register(
        id=env_id,
        entry_point=env_class,
        vector_entry_point=vector_class,
        max_episode_steps=max_episode_steps,
        kwargs=dict(kwargs or {}),
    )


def causal_env_ids(namespace: str | None = SUITE_NAMESPACE) -> list[str]:
    """Sorted ids of registered envs in ``namespace`` (``None``: every registered id)."""
    return sorted(env_id for env_id, spec in gym.registry.items() if namespace is None or spec.namespace == namespace)


def spec_of(env_id: str) -> gym.envs.registration.EnvSpec:
    """Return the spec of ``env_id`` or raise :class:`UnknownEnvError` with the list of known ids.

    ``"module:Name-v0"`` imports ``module`` first (Gymnasium's convention), so its registrations run.
    """
    if ":" in env_id:
        module, env_id = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UnknownEnvError(f"cannot import {module!r} to find {env_id!r}: {e}") from None
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        raise UnknownEnvError(
            f"unknown env id {env_id!r}; registered causal envs: {', '.join(causal_env_ids())} "
            "(run `cwm-rl envs` to list them)"
        ) from None


# Keywords that gymnasium.make itself takes (not passed to the env constructor).
_MAKE_KEYWORDS = {"max_episode_steps", "autoreset", "apply_api_compatibility", "disable_env_checker"}


def check_env_kwargs(env_id: str, kwargs: dict[str, Any]) -> None:
    """Raise :class:`InvalidArgumentError` naming any keyword the env's constructor does not accept."""
    spec = spec_of(env_id)
    entry = spec.entry_point
    if isinstance(entry, str):
        entry = gym.envs.registration.load_env_creator(entry)
    try:
        params = inspect.signature(entry).parameters
    except (TypeError, ValueError):  # a builtin or C callable: let the constructor decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params) - _MAKE_KEYWORDS)
    if unknown:
        accepted = sorted(k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL)
        raise InvalidArgumentError(f"{spec.id} has no argument(s) {unknown}; it accepts {accepted}")


def make_causal_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` with one-line errors for unknown ids and keywords; ``.unwrapped`` is a CausalEnv."""
    spec = spec_of(env_id)
    check_env_kwargs(spec.id, kwargs)
    env = gym.make(spec.id, **kwargs)
    if not isinstance(env.unwrapped, CausalEnv):
        env.close()
        raise InvalidArgumentError(
            f"{spec.id} is registered but is not a cwm_rl CausalEnv (it has no slots or causal graphs)"
        )
    return env
