"""The causal environment suite (installed as ``cwm_rl.envs``).

Importing this package registers every suite env with Gymnasium. Public API:

* :class:`CausalEnv`, :class:`CausalVectorEnv`, :class:`StepResult` — base classes for your own envs.
* :func:`register_causal_env`, :func:`causal_env_ids`, :func:`make_causal_env` — registration helpers.
* :func:`verify_local_graphs` — counterfactual check of the local graphs an env reports.
"""

from __future__ import annotations

from cwm_rl.envs.base import CausalEnv, CausalVectorEnv, State, StepResult
from cwm_rl.envs.registration import (
    causal_env_ids,
    check_env_kwargs,
    make_causal_env,
    register_causal_env,
    spec_of,
)
from cwm_rl.envs.verify import VerificationReport, verify_local_graphs

__all__ = [
    "CausalEnv",
    "CausalVectorEnv",
    "State",
    "StepResult",
    "VerificationReport",
    "causal_env_ids",
    "check_env_kwargs",
    "make_causal_env",
    "register_causal_env",
    "spec_of",
    "verify_local_graphs",
]


# Suite modules, each exposing ``SUITE_SPEC`` (name, max_episode_steps, kwargs, ood_kwargs) and the classes
# ``<Name>Env`` / ``<Name>VectorEnv``.
SUITE_MODULES = ("pong", "chemistry", "weighted_blocks", "pusher2d")


def _register_suite() -> None:
    """Register ``cwm/<Name>-v0`` and ``cwm/<Name>-OOD-v0`` for every suite module; idempotent."""
    import importlib

    import gymnasium as gym

    for module_name in SUITE_MODULES:
        module = importlib.import_module(f"cwm_rl.envs.{module_name}")
        spec = module.SUITE_SPEC
        name = spec["name"]
        for env_id, kwargs in ((f"cwm/{name}-v0", spec["kwargs"]), (f"cwm/{name}-OOD-v0", spec["ood_kwargs"])):
            if env_id not in gym.registry:
                register_causal_env(
                    env_id,
                    f"{module.__name__}:{name}Env",
                    vector_class=f"{module.__name__}:{name}VectorEnv",
                    max_episode_steps=spec["max_episode_steps"],
                    kwargs=kwargs,
                )


_register_suite()
