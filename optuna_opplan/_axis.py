from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from typing import Literal

Direction = Literal["increasing", "decreasing", "fixed"]
DIRECTIONS: tuple[Direction, ...] = ("increasing", "decreasing", "fixed")


class Axis:
    """One stage-wise hyper-parameter of a transition graph and the way it may change.

    Training moves along an axis in one direction only: a ``"decreasing"`` axis (the learning
    rate) may only go down, an ``"increasing"`` axis (the clip length) only up, and a
    ``"fixed"`` axis (the sampling strategy) never changes along a path, which splits the graph
    into one component per value.

    Args:
        name:
            The hyper-parameter's name, as the objective reads it from ``State.params``.
        values:
            The allowed values. Numeric values of a monotone axis are put in the order of
            progress (ascending for ``"increasing"``, descending for ``"decreasing"``); the
            values of a ``"fixed"`` axis keep their given order.
        direction:
            ``"increasing"``, ``"decreasing"`` or ``"fixed"``.

    Example:

        >>> from optuna_opplan import Axis
        >>> lr = Axis("lr", (0.001, 0.1, 0.01), "decreasing")
        >>> assert lr.values == (0.1, 0.01, 0.001)
        >>> assert lr.level(0.01) == 1
    """

    def __init__(self, name: str, values: Sequence[Any], direction: Direction) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"`name` must be an identifier string, but got name={name!r}.")
        if direction not in DIRECTIONS:
            raise ValueError(
                f"`direction` of axis {name!r} must be one of {DIRECTIONS}, "
                f"but got direction={direction!r}."
            )
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ValueError(
                f"`values` of axis {name!r} must be a sequence of values, but got {values!r}."
            )
        if len(values) == 0:
            raise ValueError(f"Axis {name!r} has no values: give it at least one.")
        if len(set(values)) != len(values):
            raise ValueError(f"Axis {name!r} has duplicate values: {tuple(values)!r}.")
        for value in values:
            if not isinstance(value, (bool, int, float, str)):
                raise ValueError(
                    f"Axis {name!r} values must be bool, int, float or str (to live in Optuna "
                    f"storage), but got {value!r} of type {type(value).__name__}."
                )
        if direction != "fixed":
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ValueError(
                    f"Axis {name!r} is {direction!r}, so its values must be numbers, "
                    f"but got {tuple(values)!r}."
                )
            values = sorted(values, reverse=direction == "decreasing")
        self.name = name
        self.values: tuple[Any, ...] = tuple(values)
        self.direction: Direction = direction
        self._levels = {value: i for i, value in enumerate(self.values)}

    def level(self, value: Any) -> int:
        """The position of ``value`` in the order of progress (0 = where training starts)."""
        try:
            return self._levels[value]
        except KeyError:
            raise ValueError(
                f"{value!r} is not a value of axis {self.name!r}; allowed: {self.values!r}."
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, the inverse of :meth:`from_dict`."""
        return {"name": self.name, "values": list(self.values), "direction": self.direction}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Axis:
        """Build an axis from :meth:`to_dict`'s output."""
        return cls(data["name"], data["values"], data["direction"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Axis) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.name, self.values, self.direction))

    def __repr__(self) -> str:
        return f"Axis({self.name!r}, {self.values!r}, {self.direction!r})"
