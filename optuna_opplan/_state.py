from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

INITIAL_KEY = "initial"
"""The key that stands for the virtual initial node (the untrained or pre-trained model)."""


def _format_value(value: Any) -> str:
    # repr() of a float is its shortest round-trip form, so keys stay stable across processes.
    return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True, order=True)
class State:
    """One training state: a value on each declared axis of a :class:`TransitionGraph`.

    A state fixes every stage-wise hyper-parameter of a training stage (in the paper's graphs:
    sampling strategy, clip length and learning rate). States are hashable and ordered, and
    their :attr:`key` is a stable string that names them in Optuna storage.

    Args:
        items:
            ``(axis name, value)`` pairs in the graph's axis order.

    Example:

        >>> from optuna_opplan import State
        >>> state = State((("sampling", "uniform"), ("clip_length", 32), ("lr", 0.01)))
        >>> assert state.params == {"sampling": "uniform", "clip_length": 32, "lr": 0.01}
        >>> assert state.key == "sampling=uniform,clip_length=32,lr=0.01"
        >>> assert state["clip_length"] == 32
    """

    items: tuple[tuple[str, Any], ...]
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "key", ",".join(f"{name}={_format_value(v)}" for name, v in self.items)
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any], axis_names: tuple[str, ...]) -> State:
        """Build a state from an ``{axis name: value}`` mapping, in the given axis order."""
        return cls(tuple((name, params[name]) for name in axis_names))

    @property
    def params(self) -> dict[str, Any]:
        """The hyper-parameters of this state, ``{axis name: value}``."""
        return dict(self.items)

    def __getitem__(self, name: str) -> Any:
        for axis, value in self.items:
            if axis == name:
                return value
        raise KeyError(f"State {self.key!r} has no axis {name!r}.")

    def __str__(self) -> str:
        return self.key
