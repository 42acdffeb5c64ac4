from __future__ import annotations

import math
from typing import Any

import numpy as np
from optuna.pruners import BasePruner
from optuna.study import Study
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from optuna_opplan._decision import KneeDecision
from optuna_opplan._improvement import DEFAULT_NOISE_FACTOR
from optuna_opplan._improvement import DEFAULT_THRESHOLD
from optuna_opplan._knee import KNEE_KEEP_RULES
from optuna_opplan._knee_fit import check_curve
from optuna_opplan._knee_fit import check_loss
from optuna_opplan._protocol import CANCELLED
from optuna_opplan._protocol import KEY_EPOCH0
from optuna_opplan._protocol import KEY_KNEE
from optuna_opplan._protocol import KEY_SOURCE_TRIAL
from optuna_opplan._protocol import curve_of
from optuna_opplan._stopping import DEFAULT_DELAYS
from optuna_opplan._stopping import STOPPING_RULES
from optuna_opplan._stopping import stopping_decision

DEFAULT_RULE = "improve"
"""The rule a ``KneePointPruner()`` runs: ``"improve"``, which meets the bar for replacing the
paper's rule on every shared set of real learning curves (``benchmarks/results/knee_rule.md``).
``rule="paper"`` stays selectable, and a stored study without a rule loads as ``"paper"``."""


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int, but got {name}={value!r}.")


def _fraction(name: str, value: Any, *, open_interval: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = 0.0 < value < 1.0 if open_interval else value >= 0.0
    if not ok:
        expected = "a number in (0, 1)" if open_interval else "a non-negative number"
        raise ValueError(f"`{name}` must be {expected}, but got {name}={value!r}.")


class KneePointPruner(BasePruner):
    """Stop a transition when more training is unlikely to help ("improve") or at the knee.

    Two rules (``rule``), both deciding after each reported epoch ``n`` on the curve
    ``[v0, v1, ..., vn]``, both always stopping at ``max_epochs`` and at once on a non-finite
    score (the transition then counts as a failed edge):

    - ``"paper"``: the paper's rule. Once ``delay`` epochs have run, fit a unimodal curve (the
      exponential family by default) and its knee ``t*`` (the fitted argmax); stop when
      ``n >= t* + delay``; a failed fit never stops it. Its measured cost on real learning
      curves (``benchmarks/results/knee_rule.md``), at T=10: it saves nothing on the CIFAR-10
      ResNets (99.7% of the epochs) or MetaQNN (100%), stops ImageNet AlexNet runs still at
      chance (4.4% of the evaluations, mean regret 6.07 accuracy points, against 2.42 at 52.7%
      for ``"improve"``), and lies inside PatientPruner's frontier only on the LSTM
      perplexities (90.1% of the epochs, 0.84 perplexity points, 1.28 below the frontier);
      keeping ``t*`` itself (``keep="knee"``, as the paper) costs 0.96 points on the ResNets.
    - ``"improve"`` (the default): stop when training on is unlikely to help. Once ``delay``
      epochs have run, an ensemble of extrapolations (flat, saturating exponentials, power
      laws, weighted by BIC) gives the probability that training on, up to ``max_epochs``,
      gains more than ``min_delta`` plus ``noise_factor`` times the curve's noise; it stops
      when that falls below ``threshold``. A run from the initial model that has not left its
      epoch-0 level (still at chance) is never stopped before ``max_epochs``; a transition
      from a trained checkpoint whose curve stays flat at its inherited score is on a plateau
      and stops like any other; one that fell from the score it inherited has left it, and
      keeps the starting checkpoint (epoch 0) if no retained epoch beats it. Measured in the
      same file (on every curve judged as a run from scratch): 56.1% of the epochs at 2.46
      points on the ResNets, 37.9% at 3.48 points on AlexNet (21.3% fewer epochs than
      PatientPruner at equal regret), 82.8% at 1.25 perplexity points on the LSTMs (11.4%
      fewer); on 5-epoch MetaQNN segments 89.2-92.6% at 0.22-0.23 points, where
      PatientPruner(0)/(1) do better. 0.21 ms (median) per decision at 200 points.

    With a study ``direction="minimize"`` (a loss, a perplexity) both decide on the negated
    curve, so they stop exactly where the negated curve maximised would.

    ``v0`` is the score of the checkpoint the transition starts from, which the planning
    engine supplies (0 for the initial model): objectives report epochs 1, 2, ... An objective
    may report step 0 itself: the inherited checkpoint evaluated with the new state's settings
    (another clip length or sampling can score quite differently from what the source
    transition measured), which then replaces the supplied point.

    Every decision is recorded on the trial (system attribute ``opplan:knee``: the rule, the
    reason, the epoch to keep; the paper rule's fitted knee and values; the improve rule's
    probability of improvement, threshold, tolerance and noise) for the planner and the
    dashboard. The kept epoch is the best observed one among the last ``delay + 1`` (the
    trainer retains those checkpoints), or, with the paper rule and ``keep="knee"``, ``t*``.

    Args:
        delay: Epochs before the first decision; the paper rule also trains ``delay`` epochs
            past the knee. :obj:`None`: 10 for ``"paper"``, 4 for ``"improve"``.
        max_epochs: Hard cap on the epochs of one transition (and the improve rule's horizon).
        rule: ``"improve"`` (the default) or ``"paper"``.
        curve: The paper rule's family: ``"exponential"``, ``"power"``, ``"multi_power"`` or
            ``"multi_exponential"``.
        keep: The paper rule's kept epoch: ``"best"`` or ``"knee"``.
        loss: The paper rule's fit loss: ``"linear"`` (least squares) or ``"soft_l1"``.
        threshold: The improve rule stops below this probability of improvement.
        min_delta: The improve rule ignores gains up to this much (the scores' units).
        noise_factor: The improve rule ignores gains up to this many times the curve's noise.

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
        >>> loss = optuna.create_study(
        ...     direction="minimize", pruner=op.KneePointPruner(rule="improve", max_epochs=100)
        ... )
        >>> trial = loss.ask()
        >>> for epoch in range(1, 100):
        ...     trial.report(0.2 + 2.0 * 0.7**epoch, epoch)
        ...     if trial.should_prune():
        ...         break
        ...
        >>> assert epoch < 40
    """

    def __init__(
        self,
        delay: int | None = None,
        *,
        max_epochs: int = 200,
        rule: str = DEFAULT_RULE,
        curve: str = "exponential",
        keep: str = "best",
        loss: str = "linear",
        threshold: float = DEFAULT_THRESHOLD,
        min_delta: float = 0.0,
        noise_factor: float = DEFAULT_NOISE_FACTOR,
    ) -> None:
        if rule not in STOPPING_RULES:
            raise ValueError(f"`rule` must be one of {STOPPING_RULES}, but got rule={rule!r}.")
        if delay is None:
            delay = DEFAULT_DELAYS[rule]
        _positive_int("delay", delay)
        _positive_int("max_epochs", max_epochs)
        check_curve(curve)
        if keep not in KNEE_KEEP_RULES:
            raise ValueError(f"`keep` must be one of {KNEE_KEEP_RULES}, but got keep={keep!r}.")
        check_loss(loss)
        _fraction("threshold", threshold, open_interval=True)
        _fraction("min_delta", min_delta, open_interval=False)
        _fraction("noise_factor", noise_factor, open_interval=False)
        self.rule = rule
        self.delay = delay
        self.max_epochs = max_epochs
        self.curve = curve
        self.keep = keep
        self.loss = loss
        self.threshold = float(threshold)
        self.min_delta = float(min_delta)
        self.noise_factor = float(noise_factor)
        # A transition's epoch-0 point is fixed when it is claimed; reading it from storage on
        # every report would cost a full trial fetch per epoch.
        self._epoch0: dict[tuple[int, int], float] = {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> KneePointPruner:
        """The pruner :meth:`config` describes; a config without ``rule`` ran the paper's."""
        return cls(**{"rule": "paper", **config})

    def _settings(self) -> dict[str, Any]:
        if self.rule == "paper":
            return {"curve": self.curve, "keep": self.keep, "loss": self.loss}
        return {
            "threshold": self.threshold,
            "min_delta": self.min_delta,
            "noise_factor": self.noise_factor,
        }

    def config(self) -> dict[str, Any]:
        """The settings every worker of a study must share (stored in the study).

        It names the rule and holds that rule's settings only.
        """
        return {
            "rule": self.rule,
            "delay": self.delay,
            "max_epochs": self.max_epochs,
            **self._settings(),
        }

    def decide(
        self,
        values: list[float],
        *,
        minimize: bool = False,
        final: bool = False,
        keep_source: bool = True,
        from_scratch: bool = True,
    ) -> KneeDecision:
        """The decision for a curve ``[v0, v1, ..., vn]`` (pure: no storage involved).

        With ``minimize`` (a loss, a perplexity) it decides on the negated curve, and the
        decision's fit is in the curve's own units. ``final``: the objective has ended, and
        the improve rule fits the curve even if it would not stop (the planner's score).
        ``keep_source``: ``v0`` is a measured score of the starting checkpoint, which the
        improve rule keeps (epoch 0) when no retained epoch beats it (see
        :meth:`starts_measured`). ``from_scratch``: the transition starts from the initial
        model, so a curve still at its epoch-0 level is not started (see :meth:`from_scratch`).
        """
        return stopping_decision(
            values,
            rule=self.rule,
            delay=self.delay,
            max_epochs=self.max_epochs,
            minimize=minimize,
            final=final,
            keep_source=keep_source,
            from_scratch=from_scratch,
            **self._settings(),
        )

    def decide_trial(
        self, study: Study, trial: FrozenTrial, values: list[float], *, final: bool = False
    ) -> KneeDecision:
        """:meth:`decide` on ``values``, ``trial``'s :meth:`decision_curve`, with what the
        trial itself says: the study's direction, whether its epoch 0 is measured and whether
        it starts from the initial model. The pruner and the worker's result both decide here,
        so the result is the pruner's last decision on the same curve."""
        return self.decide(
            values,
            minimize=study.direction == StudyDirection.MINIMIZE,
            final=final,
            keep_source=self.starts_measured(trial),
            from_scratch=self.from_scratch(trial),
        )

    @staticmethod
    def from_scratch(trial: FrozenTrial) -> bool:
        """Whether ``trial`` starts from the initial model rather than a trained checkpoint."""
        return trial.system_attrs.get(KEY_SOURCE_TRIAL) is None

    @staticmethod
    def starts_measured(trial: FrozenTrial) -> bool:
        """Whether ``trial``'s epoch-0 point is a measured score: a reported step 0, or the
        kept score of the transition it starts from (not the initial model's stand-in)."""
        return (
            0 in trial.intermediate_values or trial.system_attrs.get(KEY_SOURCE_TRIAL) is not None
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

    def decision_curve(
        self, study: Study, trial: FrozenTrial, values: list[float] | None = None
    ) -> list[float]:
        """The series :meth:`decide` gets: :meth:`curve_of`, unless its epoch 0 is unmeasured.

        A transition from the initial model that reports no step 0 has only the configured
        initial score as its epoch-0 point (0 by default): an untrained network scores chance,
        not 0, and 0 is a perfect loss. Then the improve rule, and either rule on a minimised
        score, take the first epoch's score as the level the curve must leave; a run still at
        chance is then "not started" instead of risen and flat. The paper rule on a maximised
        score keeps the configured point, as it always has.
        """
        if values is None:
            values = self.curve_of(study, trial)
        minimize = study.direction == StudyDirection.MINIMIZE
        if (
            not self.starts_measured(trial)
            and len(values) > 1
            and (self.rule == "improve" or minimize)
        ):
            return [values[1], *values[1:]]
        return values

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
        values = self.decision_curve(study, trial, values)
        decision = self.decide_trial(study, trial, values)
        record = decision_record(decision, len(values) - 1)
        record["rule"] = self.rule
        if self.rule == "improve":
            record["threshold"] = self.threshold
        if study.direction == StudyDirection.MINIMIZE:
            record["minimize"] = True
        study._storage.set_trial_system_attr(trial._trial_id, KEY_KNEE, record)
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
    estimate = decision.improvement
    if estimate is not None:
        record.update(
            probability=_finite(estimate.probability),
            tolerance=_finite(estimate.tolerance),
            noise=_finite(estimate.noise),
            expected_gain=_finite(estimate.expected_gain),
            window_start=estimate.window,
            horizon=estimate.horizon,
        )
    return record


def _finite(value: float) -> float | None:
    value = float(np.asarray(value))
    return value if math.isfinite(value) else None
