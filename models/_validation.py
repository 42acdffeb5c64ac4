"""Argument checks shared by the model builders; they fail at construction, not mid-forward."""

from __future__ import annotations

from collections.abc import Sequence
import math


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive int (bools rejected), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, but got {name}={value!r}.")
    return value


def check_positive_float(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number above zero, else raise ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"`{name}` must be a positive finite float, but got {name}={value!r}.")
    return float(value)


def check_probability(name: str, value: object) -> float:
    """Return ``value`` as a float if it lies in [0, 1), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a float in [0, 1), but got {name}={value!r}.")
    return float(value)


def check_int_tuple(name: str, value: object, length: int) -> tuple[int, ...]:
    """Return ``value`` as a tuple if it holds ``length`` positive ints, else raise ValueError."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != length
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise ValueError(
            f"`{name}` must be a sequence of {length} positive ints, but got {name}={value!r}."
        )
    return tuple(value)
