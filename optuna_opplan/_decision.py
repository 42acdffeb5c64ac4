"""What a stopping rule decides after an epoch: stop or train on, which retained checkpoint a
transition keeps, and what the decision rested on. Both rules (the paper's knee rule and the
"improve" rule) return a :class:`KneeDecision`, and both check their common arguments here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from optuna_opplan._knee_fit import KneeFit

_Array = NDArray[np.float64]


@dataclass(frozen=True)
class ImprovementEstimate:
    """What :func:`~optuna_opplan._improvement.improvement_probability` found.

    Attributes:
        probability: The probability that training on gains more than ``tolerance``.
        tolerance: ``min_delta`` plus ``noise_factor`` times ``noise`` (at least 0.1% of the
            curve's range).
        noise: The residual standard deviation of the best model over the fitted window.
        expected_gain: The ensemble's mean predicted gain (0 for a falling model).
        window: The first epoch of the fitted window.
        horizon: The last epoch the extrapolation reaches.
    """

    probability: float
    tolerance: float
    noise: float
    expected_gain: float
    window: int
    horizon: int


@dataclass(frozen=True)
class KneeDecision:
    """Whether a transition stops now, and what it keeps: the result of either stopping rule
    (:func:`~optuna_opplan._knee.knee_decision`,
    :func:`~optuna_opplan._improvement.improve_decision`).

    Attributes:
        stop:
            :obj:`True` if training should stop after the current epoch.
        keep_epoch:
            The epoch whose checkpoint to keep if training stops now (0 = the parent's). Always
            one of the retained epochs ``max(0, n - delay) .. n`` for current epoch ``n``.
        fit:
            The knee fit, or :obj:`None` before ``delay`` epochs have run (the "improve" rule
            fits only when it stops).
        reason:
            ``"warming_up"`` (fewer than ``delay`` epochs), ``"before_knee"`` (fitted, epoch
            ``< t* + delay``), ``"knee"`` (stop: epoch ``>= t* + delay``), ``"max_epochs"``
            (stop: the cap), or ``"fit_failed"`` (the fit failed: go on until the cap). A
            ``"knee"`` or ``"max_epochs"`` decision whose knee predates the retained epochs has
            ``" (keep clamped to the oldest retained epoch)"`` appended. The "improve" rule
            (:func:`~optuna_opplan._improvement.improve_decision`) adds ``"not_started"``
            (still at its epoch-0 level: go on), ``"improving"`` (go on) and
            ``"no_improvement"`` (stop).
        improvement:
            What the "improve" rule decided on (probability of improvement, tolerance, noise),
            or :obj:`None` (the paper's rule, or before the first estimate).
    """

    stop: bool
    keep_epoch: int
    fit: KneeFit | None
    reason: str
    improvement: ImprovementEstimate | None = None


def best_retained(y: _Array, first: int) -> int:
    """The index of the best finite score from ``first`` on (the last one if none is finite)."""
    window = y[first:]
    finite = np.isfinite(window)
    if not finite.any():
        return len(y) - 1
    return first + int(np.argmax(np.where(finite, window, -np.inf)))


def check_window(delay: object, max_epochs: object) -> None:
    """Raise unless ``delay`` is a positive int and ``max_epochs`` one or None: the arguments
    both rules take."""
    if not _is_positive_int(delay):
        raise ValueError(f"`delay` must be a positive int, but got delay={delay!r}.")
    if max_epochs is not None and not _is_positive_int(max_epochs):
        raise ValueError(
            f"`max_epochs` must be a positive int or None, but got max_epochs={max_epochs!r}."
        )


def _is_positive_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value > 0)
