"""Errors raised by onecycle, and the small checks that produce them.

Every check names the parameter, the value it got and what is allowed, so the
message alone says what to fix. Only the standard library is imported here.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "ConfigError", "ScheduleWarning", "check_finite", "check_int", "check_positive", "check_range",
]  # fmt: skip


class ConfigError(ValueError):
    """A parameter has a value onecycle cannot use.

    A subclass of ``ValueError``: code that catches ``ValueError`` keeps working.

    >>> raise ConfigError("lr_max", -1.0, "a finite number > 0")
    Traceback (most recent call last):
    ...
    onecycle.errors.ConfigError: lr_max=-1.0 is invalid: expected a finite number > 0
    """

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name}={value!r} is invalid: expected {allowed}")


class ScheduleWarning(UserWarning):
    """A schedule is being driven in a way that silently trains something else: stepped
    per epoch instead of per optimizer step, its values overwritten by another scheduler,
    or stopped far before its end. Filter it like any warning category."""


def _is_real(value: Any) -> bool:
    # bool is an int subclass, but `lr_max=True` is always a mistake.
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, str)


def check_finite(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite real number, else raise ConfigError."""
    if not _is_real(value) or not math.isfinite(float(value)):
        raise ConfigError(name, value, "a finite number")
    return float(value)


def check_positive(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise ConfigError."""
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) <= 0:
        raise ConfigError(name, value, "a finite number > 0")
    return float(value)


def check_range(
    name: str,
    value: Any,
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """Return ``value`` as a float if it lies in the given interval, else raise ConfigError."""
    ok = _is_real(value) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ConfigError(name, value, f"a number in {left}{lo:g}, {hi:g}{right}")
    return float(value)


def check_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer >= ``minimum`` (and <= ``maximum``,
    if given), else raise ConfigError.

    Integral floats and numpy integers are accepted (``10.0`` means 10); ``True`` is not.

    >>> check_int("keep", 11, maximum=10)
    Traceback (most recent call last):
    ...
    onecycle.errors.ConfigError: keep=11 is invalid: expected an integer in [1, 10]
    """
    if isinstance(value, int) and not isinstance(value, bool):
        ok, n = True, value  # exact: float() would round a large integer
    else:
        ok = _is_real(value) and math.isfinite(float(value)) and float(value) == int(float(value))
        n = int(float(value)) if ok else 0
    if maximum is not None and (not ok or not minimum <= n <= maximum):
        raise ConfigError(name, value, f"an integer in [{minimum}, {maximum}]")
    if not ok or n < minimum:
        raise ConfigError(name, value, f"an integer >= {minimum}")
    return n
