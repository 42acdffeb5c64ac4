"""The probability that more training improves a learning curve: the stopping rule "improve".

The curve's recent part is extrapolated by an ensemble of small models (flat, saturating
exponentials, power laws), each linear in its amplitudes for a fixed rate, so that its fit and
its parameter uncertainty are exact least-squares results. Models are weighted by their BIC and
sampled from their Gaussian posteriors with fixed draws, which makes the result a deterministic
function of the curve. The rule stops once the probability that the curve, trained on up to
``max_epochs``, gains more than a tolerance over its best fitted level so far falls below a
threshold. A curve that has not left its epoch-0 level is not started and never stopped.

Pure numpy, so that the pruner, the planner and the benchmarks share it.
"""

from __future__ import annotations

from collections.abc import Sequence
import math

import numpy as np
from numpy.typing import NDArray
from scipy import special

from optuna_opplan._decision import ImprovementEstimate
from optuna_opplan._decision import KneeDecision
from optuna_opplan._decision import best_retained
from optuna_opplan._decision import check_window
from optuna_opplan._knee_fit import fit_knee

_Array = NDArray[np.float64]

_EXP_RATES = (0.5, 1.0, 2.0, 4.0, 8.0)
_POWER_EXPONENTS = (0.25, 0.5, 1.0, 2.0)
_MIN_WINDOW = 6
_RESOLUTION = 1e-3
_STARTED_FACTOR = 4.0


def _jitter(y: _Array) -> float:
    # Robust epoch-to-epoch noise that a trend does not inflate: the median absolute second
    # difference, as the sigma of white noise (var of y[i-1] - 2 y[i] + y[i+1] is 6 sigma^2).
    if y.size < 3:
        return 0.0
    return float(np.median(np.abs(np.diff(y, 2)))) * 1.4826 / math.sqrt(6.0)


def has_started(values: Sequence[float] | np.ndarray, factor: float = _STARTED_FACTOR) -> bool:
    """Whether a curve has left its epoch-0 level, up or down.

    Started means: a 3-epoch running mean of the epochs after 0 has moved away from ``v0`` by
    more than ``factor`` times the curve's epoch-to-epoch jitter. A run still flat at chance,
    or only jittering around its inherited score, has not. A fine-tuning run that falls below
    the score it inherited has: whether it will recover is for the extrapolation to judge.

    Example:
        >>> from optuna_opplan._improvement import has_started
        >>> has_started([0.001, 0.0012, 0.0009, 0.0011, 0.001, 0.0012])
        False
        >>> has_started([0.001, 0.0012, 0.0009, 0.05, 0.12, 0.2])
        True
        >>> has_started([0.9, 0.85, 0.8, 0.75, 0.7, 0.65])
        True
    """
    y = np.asarray(values, dtype=np.float64)
    y = y[np.isfinite(y)]
    if y.size < 3:
        return False
    rest = y[1:]
    smooth = np.convolve(rest, np.ones(3) / 3.0, mode="valid") if rest.size >= 3 else rest
    scale = max(abs(float(y[0])), float(np.max(np.abs(rest))))
    moved = float(np.max(np.abs(smooth - y[0])))
    return bool(moved > max(factor * _jitter(rest), 1e-9 * scale))


def _stepped_down(y: _Array) -> bool:
    # Epoch 1 below the inherited score by more than the started margin of the later jitter.
    rest = y[1:][np.isfinite(y[1:])]
    if not (np.isfinite(y[0]) and np.isfinite(y[1])) or rest.size < 3:
        return False
    return bool(y[0] - y[1] > _STARTED_FACTOR * _jitter(rest))


def _bases(t: _Array, a: float, span: float) -> _Array:
    # One row per model: the time-dependent column of ``f(t) = c + b g(t)``. Every g falls
    # with t, so b < 0 is a rising curve that saturates and b > 0 a falling one.
    rows = [np.exp(-r * (t - a) / span) for r in _EXP_RATES]
    rows += [(t + 1.0) ** (-p) for p in _POWER_EXPONENTS]
    return np.vstack(rows)


_PRIORS = np.log(
    np.array([1.0 / len(_EXP_RATES)] * len(_EXP_RATES) + [1.0 / len(_POWER_EXPONENTS)] * 4)
)


def improvement_probability(
    values: Sequence[float] | np.ndarray,
    *,
    max_epochs: int,
    min_delta: float = 0.0,
    noise_factor: float = 0.5,
    window_fraction: float = 0.5,
) -> ImprovementEstimate:
    """The probability that training on, up to ``max_epochs``, improves the curve.

    The latest epochs (``window_fraction`` of them, at least 6; not epoch 0 if the curve fell
    from it at once) are fitted by an ensemble:
    a flat line, saturating exponentials ``c + b exp(-r (t - a) / L)`` with rates ``r`` of
    0.5 to 8 per window length ``L``, and power laws ``c + b (t + 1)^-p``, ``p`` 0.25 to 2.
    For a fixed rate each model is linear in ``(c, b)``, so its least-squares fit and the
    Student-t posterior of ``b`` are exact. The gain of training on, the best fitted value
    ahead (up to ``max_epochs``) minus the best fitted value in the window, is linear in ``b``
    for each model, so the probability that it exceeds the tolerance is a t-distribution
    tail: no sampling, a deterministic function of the curve. Models are weighted by BIC
    (the flat line against each family as a whole).

    Args:
        values: ``[v0, v1, ..., vn]``, higher is better; non-finite values are left out.
        max_epochs: The last epoch training may reach.
        min_delta: Gains up to this much (in the scores' units) do not count.
        noise_factor: Gains up to this many times the fitted noise do not count either.
        window_fraction: The fraction of the latest epochs fitted.

    Returns:
        An :class:`ImprovementEstimate`.

    Example:
        >>> import numpy as np
        >>> from optuna_opplan._improvement import improvement_probability
        >>> t = np.arange(21)
        >>> rising = 0.8 - 0.7 * np.exp(-t / 30)
        >>> improvement_probability(rising, max_epochs=100).probability > 0.99
        True
        >>> plateau = 0.8 - 0.7 * np.exp(-t / 2)
        >>> improvement_probability(plateau, max_epochs=100).probability < 0.01
        True
    """
    y_all = np.asarray(values, dtype=np.float64)
    n = len(y_all) - 1
    finite = np.isfinite(y_all)
    t_all = np.arange(n + 1, dtype=np.float64)
    first = max(0, n + 1 - max(_MIN_WINDOW, int(math.ceil(window_fraction * (n + 1)))))
    if first == 0 and _stepped_down(y_all):
        # A fall at the change of state (another clip length or lr) is a step that no smooth
        # model follows; the recovery after it is what to extrapolate.
        first = 1
    mask = finite & (t_all >= first)
    t = t_all[mask]
    y = y_all[mask]
    m = y.size
    if max_epochs <= n:
        return ImprovementEstimate(0.0, min_delta, 0.0, 0.0, first, n)
    if m < 3:  # too few epochs to fit a trend: nothing says training on is futile
        return ImprovementEstimate(1.0, min_delta, 0.0, 0.0, first, max_epochs)
    a = float(t[0])
    span = max(float(t[-1] - t[0]), 1.0)
    g = _bases(t, a, span)  # models x m
    gc = g - g.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    sgg = np.maximum(np.sum(gc * gc, axis=1), 1e-300)
    b = gc @ yc / sgg
    rss = np.maximum(np.sum((yc[None, :] - b[:, None] * gc) ** 2, axis=1), 0.0)
    rss_flat = float(np.sum(yc * yc))
    floor = 1e-24 * max(1.0, float(np.max(np.abs(y)))) ** 2
    # BIC, with the rate counted as a parameter; the families' priors split their mass.
    bic = m * np.log(np.maximum(rss / m, floor)) + 3.0 * math.log(m) - 2.0 * _PRIORS
    bic_flat = m * math.log(max(rss_flat / m, floor)) + math.log(m) - 2.0 * math.log(2.0)
    all_bic = np.append(bic, bic_flat)
    w = np.exp(-0.5 * (all_bic - all_bic.min()))
    w /= w.sum()
    dof = max(m - 2, 1)
    s = np.sqrt(np.maximum(rss / dof, floor))
    best = int(np.argmin(all_bic))
    noise = float(s[best]) if best < len(b) else math.sqrt(max(rss_flat / max(m - 1, 1), 0.0))
    tol = min_delta + max(noise_factor * noise, _RESOLUTION * float(np.ptp(y_all[finite])))
    # A rising model (b < 0) gains b * (g(max_epochs) - g(n)) over its latest fitted value,
    # which is its best in the window; a falling one never gains.
    ends = _bases(np.array([t_all[-1], float(max_epochs)]), a, span)
    drop = ends[:, 0] - ends[:, 1]  # > 0
    se_b = s / np.sqrt(sgg)
    # P(-b * drop > tol) = P(b < -tol / drop)
    z = (-tol / drop - b) / np.maximum(se_b, 1e-300)
    prob_models = special.stdtr(dof, z)
    probability = float(np.sum(w[:-1] * prob_models))
    expected = float(np.sum(w[:-1] * np.maximum(-b * drop, 0.0)))
    return ImprovementEstimate(
        min(max(probability, 0.0), 1.0), tol, noise, expected, first, int(max_epochs)
    )


DEFAULT_DELAY = 4
DEFAULT_THRESHOLD = 0.02
DEFAULT_NOISE_FACTOR = 1.5


def improve_decision(
    values: Sequence[float] | np.ndarray,
    *,
    delay: int = DEFAULT_DELAY,
    max_epochs: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_delta: float = 0.0,
    noise_factor: float = DEFAULT_NOISE_FACTOR,
    keep_source: bool = True,
    from_scratch: bool = True,
) -> KneeDecision:
    """Decide after an epoch whether a transition stops: the "improve" rule.

    Once ``delay`` epochs have run, stop when the probability that training on, up to
    ``max_epochs``, gains more than the tolerance (``min_delta`` plus ``noise_factor`` times the
    curve's noise) falls below ``threshold`` (see :func:`improvement_probability`). A run from
    scratch that has not left its epoch-0 level (:func:`has_started`: still at chance) never
    stops before ``max_epochs``; a run from a trained checkpoint is past its start, and a curve
    flat at its inherited score is a plateau like any other. The
    kept epoch is the best observed one among the last ``delay + 1`` (the trainer's retained
    checkpoints), or epoch 0, the checkpoint the transition started from, if that scored
    better than all of them (with ``keep_source``). When it stops, the curve is also fitted as
    the paper's rule does (:func:`~optuna_opplan._knee_fit.fit_knee`), for the planner's fitted
    score.

    Args:
        values: ``[v0, v1, ..., vn]``, higher is better.
        delay: Epochs before the first decision; the kept epoch is one of the last
            ``delay + 1``.
        max_epochs: The cap, and the horizon of the extrapolation; :obj:`None`: no cap, and
            the horizon is twice the epochs so far.
        threshold: Stop when the probability of improvement falls below this.
        min_delta: Gains up to this much (in the scores' units) do not count.
        noise_factor: Gains up to this many times the curve's noise do not count either.
        keep_source: ``v0`` is a measured score of the starting checkpoint, which stays
            available: keep it (epoch 0) when it beats every retained epoch. :obj:`False` when
            ``v0`` is a stand-in (a run from the initial model that measured no step 0).
        from_scratch: The run starts from an untrained model (it may still be at chance).

    Returns:
        A :class:`~optuna_opplan._decision.KneeDecision` whose ``improvement`` holds the estimate
        it decided on (:obj:`None` while warming up or not started).

    Example:
        >>> import numpy as np
        >>> from optuna_opplan._improvement import improve_decision
        >>> t = np.arange(41)
        >>> curve = 0.8 - 0.7 * np.exp(-t / 4)
        >>> improve_decision(curve[:5], max_epochs=40).stop
        False
        >>> d = improve_decision(curve, max_epochs=60)
        >>> d.stop, d.reason
        (True, 'no_improvement')
    """
    check_window(delay, max_epochs)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"`threshold` must be in (0, 1), but got threshold={threshold!r}.")
    if not min_delta >= 0.0:
        raise ValueError(f"`min_delta` must be non-negative, but got min_delta={min_delta!r}.")
    if not noise_factor >= 0.0:
        raise ValueError(
            f"`noise_factor` must be non-negative, but got noise_factor={noise_factor!r}."
        )
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"`values` must be a non-empty 1-d sequence, but got shape {y.shape}.")
    n = len(y) - 1
    # Epoch 0 is a candidate only when it is a measured score of a checkpoint that exists.
    best = best_retained(y, max(0 if keep_source else min(1, n), n - delay))
    if keep_source and best > 0 and np.isfinite(y[0]) and not y[0] <= y[best]:
        # Training made it worse and never recovered: the transition keeps where it started.
        best = 0
    capped = max_epochs is not None and n >= max_epochs
    if capped:
        return KneeDecision(True, best, fit_knee(y), "max_epochs")
    if n < delay:
        return KneeDecision(False, best, None, "warming_up")
    if from_scratch and not has_started(y):
        return KneeDecision(False, best, None, "not_started")
    horizon = max_epochs if max_epochs is not None else 2 * n
    estimate = improvement_probability(
        y, max_epochs=horizon, min_delta=min_delta, noise_factor=noise_factor
    )
    if estimate.probability >= threshold:
        return KneeDecision(False, best, None, "improving", estimate)
    return KneeDecision(True, best, fit_knee(y), "no_improvement", estimate)
