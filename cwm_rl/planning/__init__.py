"""Trajectory optimisers for model-predictive control with a learned world model (CEM, iCEM, MPPI, categorical CEM).

``make_planner(action_space, PlannerConfig(name=...), batch=n_envs, seed=...)`` builds one; each env step call
``planner.plan(evaluate)`` with a function that scores candidate action sequences, and ``planner.reset(dones)``
when envs reset.
"""

from cwm_rl.planning.config import AUTO, PLANNERS, PlannerConfig, validate_config
from cwm_rl.planning.planners import (
    CEM,
    ICEM,
    MPPI,
    CategoricalCEM,
    Evaluate,
    Planner,
    colored_noise,
    make_planner,
)

__all__ = [
    "AUTO",
    "CEM",
    "ICEM",
    "MPPI",
    "PLANNERS",
    "CategoricalCEM",
    "Evaluate",
    "Planner",
    "PlannerConfig",
    "colored_noise",
    "make_planner",
    "validate_config",
]
