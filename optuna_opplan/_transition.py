from __future__ import annotations

from dataclasses import dataclass

from optuna_opplan._state import INITIAL_KEY
from optuna_opplan._state import State


@dataclass(frozen=True)
class Transition:
    """One edge of a transition graph: fine-tune ``source``'s kept checkpoint with ``target``'s
    hyper-parameters.

    Args:
        source:
            The state whose kept checkpoint is the starting point, or :obj:`None` for the
            virtual initial node (the untrained or pre-trained model).
        target:
            The state whose hyper-parameters this stage trains with.

    Example:

        >>> from optuna_opplan import State, Transition
        >>> start = Transition(None, State((("lr", 0.1),)))
        >>> assert start.key == "initial->lr=0.1"
    """

    source: State | None
    target: State

    @property
    def source_key(self) -> str:
        """The source state's key, or ``"initial"`` for the virtual initial node."""
        return INITIAL_KEY if self.source is None else self.source.key

    @property
    def key(self) -> str:
        """A stable string naming this transition in Optuna storage."""
        return f"{self.source_key}->{self.target.key}"

    def __str__(self) -> str:
        return self.key
