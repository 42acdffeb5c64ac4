from __future__ import annotations

import math
from typing import Any

import numpy as np
from optuna.pruners import BasePruner
from optuna.study import Study
from optuna.trial import FrozenTrial

from optuna_opplan._knee import KNEE_CURVES
from optuna_opplan._knee import KNEE_KEEP_RULES
from optuna_opplan._knee import KNEE_LOSSES
from optuna_opplan._knee import KneeDecision
from optuna_opplan._knee import knee_decision
from optuna_opplan._protocol import CANCELLED
from optuna_opplan._protocol import KEY_EPOCH0
from optuna_opplan._protocol import KEY_KNEE
from optuna_opplan._protocol import curve_of


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int, but got {name}={value!r}.")


class KneePointPruner(BasePruner):
    """Stop a transition at the knee of its validation curve, plus a delay.

    After each reported epoch ``n`` (once ``delay`` epochs have run), the curve
    ``[v0, v1, ..., vn]`` is fitted with a unimodal function (the paper's exponential family
    by default) and its knee ``t*`` (the fitted argmax) estimated; the transition stops when
    ``n >= t* + delay``. It always stops at ``max_epochs`` (the reference code has no cap), a
    failed fit never stops it earlier, and a non-finite score stops it at once (the transition
    then counts as a failed edge).

    ``v0`` is the score of the checkpoint the transition starts from, which the planning
    engine supplies (0 for the initial model): objectives report epochs 1, 2, ... An objective
    may report step 0 itself: the inherited checkpoint evaluated with the new state's settings
    (another clip length or sampling can score quite differently from what the source
    transition measured), which then replaces the supplied point.

    Every decision is recorded on the trial (system attribute ``opplan:knee``: the fitted knee,
    its fitted and observed values, the epoch to keep) for the planner and the dashboard.
    ``keep`` says which retained epoch's checkpoint to keep: ``"best"`` (the best observed
    score among the last ``delay + 1`` epochs, the default: robust to noisy curves) or
    ``"knee"`` (``t*`` itself, the paper's rule).

    Args:
        delay: ``T``: epochs before the first fit, and epochs trained past the knee.
        max_epochs: Hard cap on the epochs of one transition.
        curve: The fitted family: ``"exponential"``, ``"power"``, ``"multi_power"`` or
            ``"multi_exponential"``.
        keep: ``"best"`` or ``"knee"``.
        loss: The fit's loss: ``"linear"`` (least squares, as the paper) or ``"soft_l1"``.

    Example:

        >>> import optuna
        >>> import optuna_opplan as op
        >>> study = optuna.create_study(
        ...     direction="maximize", pruner=op.KneePointPruner(delay=5, max_epochs=100)
        ... )
        >>> trial = study.ask()
        >>> for epoch in range(1, 100):
        ...     trial.report(0.8 - 0.8 * 0.7**epoch - 0.001 * epoch**2, epoch)
        ...     if trial.should_prune():
        ...         break
        ...
        >>> assert epoch < 30
    """

    def __init__(
        self,
        delay: int = 10,
        *,
        max_epochs: int = 200,
        curve: str = "exponential",
        keep: str = "best",
        loss: str = "linear",
    ) -> None:
        _positive_int("delay", delay)
        _positive_int("max_epochs", max_epochs)
        if curve not in KNEE_CURVES:
            raise ValueError(f"`curve` must be one of {KNEE_CURVES}, but got curve={curve!r}.")
        if keep not in KNEE_KEEP_RULES:
            raise ValueError(f"`keep` must be one of {KNEE_KEEP_RULES}, but got keep={keep!r}.")
        if loss not in KNEE_LOSSES:
            raise ValueError(f"`loss` must be one of {KNEE_LOSSES}, but got loss={loss!r}.")
        self.delay = delay
        self.max_epochs = max_epochs
        self.curve = curve
        self.keep = keep
        self.loss = loss
        self._epoch0: dict[tuple[int, int], float] = {}

    def config(self) -> dict[str, Any]:
        """The settings every worker of a study must share (stored in the study)."""
        return {
            "delay": self.delay,
            "max_epochs": self.max_epochs,
            "curve": self.curve,
            "keep": self.keep,
            "loss": self.loss,
        }

    def decide(self, values: list[float]) -> KneeDecision:
        """The decision for a curve ``[v0, v1, ..., vn]`` (pure: no storage involved)."""
        return knee_decision(
            values,
            delay=self.delay,
            max_epochs=self.max_epochs,
            curve=self.curve,
            keep=self.keep,
            loss=self.loss,
        )

    def curve_of(self, study: Study, trial: FrozenTrial) -> list[float]:
        """The fitted series of ``trial``: its epoch-0 point, then the reported epochs.

        As :func:`~optuna_opplan._protocol.curve_of` (the dashboard draws the same series),
        with the supplied epoch-0 point cached: it is fixed when the trial is claimed, and
        reading it again on every report would cost a full trial fetch per epoch.
        """
        key = (id(study._storage), trial._trial_id)
        epoch0 = self._epoch0.get(key)
        if epoch0 is None and 0 not in trial.intermediate_values:
            epoch0 = float(trial.system_attrs.get(KEY_EPOCH0) or 0.0)
            if len(self._epoch0) > 10_000:
                self._epoch0.clear()
            self._epoch0[key] = epoch0
        return curve_of(trial, epoch0=epoch0)

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        if trial._trial_id in CANCELLED:
            return True
        values = self.curve_of(study, trial)
        if len(values) == 1:
            return False
        if not math.isfinite(values[-1]):
            record: dict[str, Any] = {
                "epoch": len(values) - 1,
                "stop": True,
                "reason": "non_finite",
                "keep_epoch": None,
            }
            study._storage.set_trial_system_attr(trial._trial_id, KEY_KNEE, record)
            return True
        decision = self.decide(values)
        study._storage.set_trial_system_attr(
            trial._trial_id, KEY_KNEE, decision_record(decision, len(values) - 1)
        )
        return decision.stop


def decision_record(decision: KneeDecision, epoch: int) -> dict[str, Any]:
    """A JSON form of a knee decision, as stored on the trial."""
    record: dict[str, Any] = {
        "epoch": epoch,
        "stop": decision.stop,
        "reason": decision.reason,
        "keep_epoch": decision.keep_epoch,
    }
    fit = decision.fit
    if fit is not None:
        record.update(
            fit_ok=fit.ok,
            knee_epoch=fit.epoch,
            fitted_peak=_finite(fit.value),
            observed_at_knee=_finite(fit.observed),
            curve=fit.curve,
            params=[_finite(p) for p in fit.params],
            rmse=_finite(fit.rmse),
            r2=_finite(fit.r2),
            message=fit.message,
        )
    return record


def _finite(value: float) -> float | None:
    value = float(np.asarray(value))
    return value if math.isfinite(value) else None
