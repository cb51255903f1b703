"""The planners' config: one dataclass for every planner, checked before any planning starts.

Every planner reads the fields it needs and ignores the rest, so one config (and one ``--set planner.name=...``)
switches between CEM, iCEM, MPPI and categorical CEM. :func:`validate_config` turns bad values into one-line
:class:`~cwm_rl.errors.InvalidArgumentError` messages at construction time instead of odd numbers mid-run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cwm_rl.errors import InvalidArgumentError

PLANNERS: tuple[str, ...] = ("cem", "icem", "mppi", "categorical-cem")
"""Names of the concrete planners; ``make_planner`` also accepts ``"auto"`` (see :data:`AUTO`)."""

AUTO = "auto"
"""Pick by action space: ``categorical-cem`` for ``Discrete``, ``cem`` for ``Box``."""


@dataclass
class PlannerConfig:
    """Settings of the trajectory optimisers (model-predictive control with a learned model).

    Attributes:
        name: ``"cem"``, ``"icem"``, ``"mppi"``, ``"categorical-cem"`` or ``"auto"`` (categorical CEM for
            ``Discrete`` actions, CEM for ``Box``).
        horizon: Number of steps of each candidate action sequence.
        population: Candidate sequences evaluated per iteration and per batch row (``evaluate`` always receives
            exactly this many).
        iterations: Refinement rounds per ``plan()`` call.
        elite_fraction: CEM / iCEM / categorical CEM: fraction of the population refit to, in (0, 1].
        momentum: CEM / iCEM / categorical CEM: ``new = momentum * old + (1 - momentum) * elite_statistic`` for the
            mean, the std and the probabilities.
        init_std: Continuous planners: initial std as a fraction of the half range ``(high - low) / 2``.
        min_std: Continuous planners: lower bound of the std, also a fraction of the half range.
        noise_beta: iCEM: exponent of the colored noise (power spectrum ``1 / f**beta`` along the horizon;
            0 is white noise, 2 is smooth "red" noise).
        keep_elites: iCEM: fraction of the elites carried into the next iteration (and, shifted by one step,
            into the first iteration of the next ``plan()`` call).
        temperature: MPPI: softmax temperature over returns standardised by their std across the population
            (so it does not depend on the reward scale); larger is flatter.
        warm_start: Start each ``plan()`` from the previous solution shifted by one step.
    """

    name: str = "cem"
    horizon: int = 12
    population: int = 256
    iterations: int = 5
    elite_fraction: float = 0.1
    momentum: float = 0.1
    init_std: float = 0.5
    min_std: float = 0.05
    noise_beta: float = 2.0
    keep_elites: float = 0.3
    temperature: float = 1.0
    warm_start: bool = True


def validate_config(config: PlannerConfig) -> None:
    """Raise :class:`InvalidArgumentError` (one line) if any field of ``config`` has a bad type or value.

    Args:
        config: The config to check.

    Raises:
        InvalidArgumentError: On the first bad field, naming it and the accepted range.
    """
    if not isinstance(config, PlannerConfig):
        raise InvalidArgumentError(f"planner config must be a PlannerConfig, got {type(config).__name__}")
    if config.name not in (*PLANNERS, AUTO):
        raise InvalidArgumentError(f"unknown planner {config.name!r}; choose one of {', '.join((*PLANNERS, AUTO))}")
    for field in ("horizon", "population", "iterations"):
        _check_int(field, getattr(config, field), minimum=1)
    _check_float("elite_fraction", config.elite_fraction, low=0.0, high=1.0, low_open=True)
    _check_float("momentum", config.momentum, low=0.0, high=1.0, high_open=True)
    _check_float("init_std", config.init_std, low=0.0, low_open=True)
    _check_float("min_std", config.min_std, low=0.0)
    _check_float("noise_beta", config.noise_beta, low=0.0)
    _check_float("keep_elites", config.keep_elites, low=0.0, high=1.0)
    _check_float("temperature", config.temperature, low=0.0, low_open=True)
    if not isinstance(config.warm_start, bool):
        raise InvalidArgumentError(f"planner warm_start must be true or false, got {config.warm_start!r}")


def _check_int(field: str, value: object, minimum: int) -> None:
    """Integers only (``True`` is not a horizon), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f"planner {field} must be an integer >= {minimum}, got {value!r}")


def _check_float(
    field: str,
    value: object,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """A finite real number in the interval ``low..high`` (each end open or closed as flagged)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or math.isinf(high) else ']'}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        raise InvalidArgumentError(f"planner {field} must be a finite number in {interval}, got {value!r}")
