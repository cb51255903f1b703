"""Checks for env constructor arguments: one clear line per bad value, never silent clipping."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from cwm_rl.errors import InvalidArgumentError


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(env: str, name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high]`` or raise naming the argument and the allowed range."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise InvalidArgumentError(f"{env}: {name}={value!r} must be an integer")
    _check_range(env, name, value, low, high)
    return int(value)


def check_float(
    env: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Return ``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``) or raise."""
    if not _is_real(value) or value != value or value in (float("inf"), float("-inf")):
        raise InvalidArgumentError(f"{env}: {name}={value!r} must be a finite number")
    if low_open and low is not None and value <= low:
        raise InvalidArgumentError(f"{env}: {name}={value!r} must be greater than {low}")
    _check_range(env, name, value, low, high)
    return float(value)


def check_probability(env: str, name: str, value: Any, *, optional: bool = False) -> float | None:
    """Return ``value`` as a probability in ``[0, 1]`` (or ``None`` when ``optional`` allows it) or raise."""
    if optional and value is None:
        return None
    return check_float(env, name, value, low=0.0, high=1.0)


def check_bool(env: str, name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool (not a truthy number or string) or raise."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgumentError(f"{env}: {name}={value!r} must be True or False")
    return bool(value)


def check_choice(env: str, name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices`` or raise listing them."""
    choices = list(choices)
    if value not in choices:
        raise InvalidArgumentError(f"{env}: {name}={value!r} is not one of {choices}")
    return value


def check_subset(env: str, name: str, value: Any, allowed: Sequence[str], *, non_empty: bool = True) -> tuple[str, ...]:
    """Return ``value`` as a tuple of distinct names from ``allowed`` or raise."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidArgumentError(f"{env}: {name}={value!r} must be a list of names from {list(allowed)}")
    items = tuple(value)
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise InvalidArgumentError(f"{env}: {name} has unknown names {unknown}; choose from {list(allowed)}")
    if len(set(items)) != len(items):
        raise InvalidArgumentError(f"{env}: {name}={list(items)} has duplicates")
    if non_empty and not items:
        raise InvalidArgumentError(f"{env}: {name} must not be empty")
    return items


def _check_range(env: str, name: str, value: Any, low: float | None, high: float | None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise InvalidArgumentError(f"{env}: {name}={value!r} is out of range; it must be in [{lo}, {hi}]")
