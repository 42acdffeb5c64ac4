from __future__ import annotations

from dataclasses import asdict
from dataclasses import dataclass
import math
from typing import Any


@dataclass(frozen=True)
class TransitionResult:
    """What one finished transition contributes to the plan.

    Args:
        score:
            The fitted peak f(t*) of the transition's validation curve (the reference code's
            edge score).
        observed:
            The observed validation score of the kept checkpoint: what the next transition
            inherits as its epoch-0 point, and the edge score with ``score="observed"``.
        epochs:
            The kept epoch: the epochs this stage contributes to a plan through it.
        trial:
            The number of the Optuna trial that trained it (:obj:`None` outside a study).
        epochs_trained:
            All epochs trained, including those after the kept one (planning's compute).
        knee_epoch:
            t*, the argmax of the fitted curve (equal to ``epochs`` unless the keep rule
            picked another retained epoch).
        reason:
            Why the transition stopped (``"knee"``, ``"max_epochs"``, ...).

    Example:

        >>> from optuna_opplan import TransitionResult
        >>> result = TransitionResult(score=0.81, observed=0.80, epochs=12, trial=3)
        >>> assert result.edge_score("fitted") == 0.81
        >>> assert result.edge_score("observed") == 0.80
    """

    score: float
    observed: float
    epochs: int
    trial: int | None = None
    epochs_trained: int | None = None
    knee_epoch: int | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(
                f"`epochs` must be a non-negative int, but got epochs={self.epochs!r}."
            )
        for name in ("score", "observed"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, but got {name}={value!r}.")

    def edge_score(self, score: str) -> float:
        """The score the DP compares: ``"fitted"`` (f(t*)) or ``"observed"`` (kept epoch)."""
        if score == "fitted":
            return self.score
        if score == "observed":
            return self.observed
        raise ValueError(f"`score` must be 'fitted' or 'observed', but got score={score!r}.")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, the inverse of :meth:`from_dict`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransitionResult:
        """Rebuild a result from :meth:`to_dict`'s output."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
