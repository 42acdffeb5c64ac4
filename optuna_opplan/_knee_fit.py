"""Knee-point estimation: fit the paper's unimodal curve to a performance-epoch series.

The paper (Qiu et al., ICML 2021, Sec. 3.3) fits a unimodal curve ``f(t) = g(t) + h(t)`` to the
validation scores of one transition, where ``g`` is a bounded increasing function (convergence)
and ``h`` a concave quadratic (overfitting). The knee ``t*`` is the argmax of the fit. What a
transition does with it (stop once the current epoch reaches ``t* + T``) is
:func:`~optuna_opplan._knee.knee_decision`.

This module is pure numpy/scipy so that the pruner, the planner and the benchmarks share it.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
import math
import warnings

import numpy as np
from numpy.typing import ArrayLike
from numpy.typing import NDArray
from scipy.optimize import least_squares

KNEE_CURVES: tuple[str, ...] = ("exponential", "power", "multi_power", "multi_exponential")
"""Curve families of the paper's Table 1, each with the concave quadratic overfitting term."""

KNEE_LOSSES: tuple[str, ...] = ("linear", "soft_l1")
"""Least-squares losses of :func:`fit_knee`: plain squares (the paper) or a robust one."""

_MIN_POINTS = 3
_Array = NDArray[np.float64]
_Model = Callable[[_Array, _Array], _Array]


@dataclass(frozen=True)
class _Family:
    # Time-dependent terms are fitted in rescaled time s = t / tau so that all parameters have a
    # comparable magnitude; ``time_powers[i]`` says how parameter i converts back to epochs.
    model: _Model
    jacobian: _Model
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    time_powers: tuple[int, ...]
    # Amplitudes scale with the scores; rates and exponents do not.
    amplitudes: tuple[bool, ...]
    # Candidate rates (exponents for the power families) in rescaled time: every rate, or every
    # pair of distinct rates for the multi families, seeds one linear fit of the amplitudes.
    rate_grid: tuple[float, ...]
    # Exponents of (t + 1) are scale-free; the model needs the raw epochs for them.
    raw_time: bool


def _exp_model(s: _Array, b: _Array) -> _Array:
    return b[0] + b[1] * np.exp(b[2] * s) + b[3] * s + b[4] * s**2


def _exp_jac(s: _Array, b: _Array) -> _Array:
    e = np.exp(b[2] * s)
    return np.column_stack([np.ones_like(s), e, b[1] * s * e, s, s**2])


def _multi_exp_model(s: _Array, b: _Array) -> _Array:
    return b[0] + b[1] * np.exp(b[2] * s) + b[3] * np.exp(b[4] * s) + b[5] * s + b[6] * s**2


def _multi_exp_jac(s: _Array, b: _Array) -> _Array:
    e1 = np.exp(b[2] * s)
    e2 = np.exp(b[4] * s)
    return np.column_stack([np.ones_like(s), e1, b[1] * s * e1, e2, b[3] * s * e2, s, s**2])


# Power families take a pair (s, log(t + 1)) packed as rows of a 2 x m array.
def _power_model(st: _Array, b: _Array) -> _Array:
    s, log1t = st
    return b[0] + b[1] * np.exp(b[2] * log1t) + b[3] * s + b[4] * s**2


def _power_jac(st: _Array, b: _Array) -> _Array:
    s, log1t = st
    p = np.exp(b[2] * log1t)
    return np.column_stack([np.ones_like(s), p, b[1] * log1t * p, s, s**2])


def _multi_power_model(st: _Array, b: _Array) -> _Array:
    s, log1t = st
    return (
        b[0] + b[1] * np.exp(b[2] * log1t) + b[3] * np.exp(b[4] * log1t) + b[5] * s + b[6] * s**2
    )


def _multi_power_jac(st: _Array, b: _Array) -> _Array:
    s, log1t = st
    p1 = np.exp(b[2] * log1t)
    p2 = np.exp(b[4] * log1t)
    return np.column_stack(
        [np.ones_like(s), p1, b[1] * log1t * p1, p2, b[3] * log1t * p2, s, s**2]
    )


_INF = math.inf
_EXP_RATES = (-0.5, -1.0, -2.0, -4.0, -8.0, -16.0, -32.0, -64.0)
_POWER_EXPONENTS = (-0.05, -0.1, -0.2, -0.4, -0.7, -1.0, -1.5, -2.0, -3.0)
_FAMILIES: dict[str, _Family] = {
    "exponential": _Family(
        model=_exp_model,
        jacobian=_exp_jac,
        lower=(0.0, -_INF, -_INF, -_INF, -_INF),
        upper=(_INF, 0.0, 0.0, _INF, 0.0),
        time_powers=(0, 0, 1, 1, 2),
        amplitudes=(True, True, False, True, True),
        rate_grid=_EXP_RATES,
        raw_time=False,
    ),
    "power": _Family(
        model=_power_model,
        jacobian=_power_jac,
        lower=(0.0, -_INF, -_INF, -_INF, -_INF),
        upper=(_INF, 0.0, 0.0, _INF, 0.0),
        time_powers=(0, 0, 0, 1, 2),
        amplitudes=(True, True, False, True, True),
        rate_grid=_POWER_EXPONENTS,
        raw_time=True,
    ),
    "multi_exponential": _Family(
        model=_multi_exp_model,
        jacobian=_multi_exp_jac,
        lower=(0.0, -_INF, -_INF, -_INF, -_INF, -_INF, -_INF),
        upper=(_INF, 0.0, 0.0, 0.0, 0.0, _INF, 0.0),
        time_powers=(0, 0, 1, 0, 1, 1, 2),
        amplitudes=(True, True, False, True, False, True, True),
        rate_grid=_EXP_RATES,
        raw_time=False,
    ),
    "multi_power": _Family(
        model=_multi_power_model,
        jacobian=_multi_power_jac,
        lower=(0.0, -_INF, -_INF, -_INF, -_INF, -_INF, -_INF),
        upper=(_INF, 0.0, 0.0, 0.0, 0.0, _INF, 0.0),
        time_powers=(0, 0, 0, 0, 0, 1, 2),
        amplitudes=(True, True, False, True, False, True, True),
        rate_grid=_POWER_EXPONENTS,
        raw_time=True,
    ),
}


@dataclass(frozen=True)
class KneeFit:
    """The result of :func:`fit_knee`.

    Attributes:
        epoch:
            The knee ``t*``: the first integer epoch in ``0 .. len(values) - 1`` at which the
            fitted curve reaches its maximum. If the fit failed, the epoch of the best finite
            observed value (0 if there is none).
        value:
            The fitted value at ``t*`` (the "fitted peak", the planner's default edge score), or
            the observed value at ``t*`` if the fit failed.
        observed:
            The observed value at ``t*`` (NaN if that observation is not finite).
        params:
            The fitted parameters ``(a1, a2, ...)`` in the paper's notation and in epochs; empty
            if the fit failed.
        rmse:
            Root mean squared residual over the finite observations (NaN if the fit failed).
        r2:
            Coefficient of determination over the finite observations (NaN if the fit failed).
        curve:
            The curve family.
        ok:
            :obj:`False` if the fit failed; then ``epoch`` and ``value`` are the fallbacks above.
        message:
            Why the fit failed, or ``""``.
    """

    epoch: int
    value: float
    observed: float
    params: tuple[float, ...]
    rmse: float
    r2: float
    curve: str
    ok: bool
    message: str

    def predict(self, t: ArrayLike) -> np.ndarray:
        """Evaluate the fitted curve at epochs ``t``.

        Args:
            t: Epochs (any shape, non-negative).

        Returns:
            The fitted values, with the shape of ``t``; NaN everywhere if the fit failed.

        Example:
            >>> from optuna_opplan._knee_fit import fit_knee
            >>> fit = fit_knee([0.0, 0.5, 0.7, 0.8, 0.85, 0.86, 0.85, 0.84])
            >>> fit.predict([0, 3]).shape
            (2,)
        """
        t_arr = np.asarray(t, dtype=np.float64)
        if not self.ok:
            return np.full(t_arr.shape, np.nan)
        a = np.asarray(self.params, dtype=np.float64)
        flat = t_arr.ravel()
        x = np.vstack([flat, np.log1p(flat)]) if _FAMILIES[self.curve].raw_time else flat
        return _FAMILIES[self.curve].model(x, a).reshape(t_arr.shape)

    def negated(self) -> KneeFit:
        """The same fit for the negated scores: a minimised curve's fit in its own units.

        Amplitudes, value and observed value change sign; rates and exponents do not, so
        :meth:`predict` of the result is minus this fit's prediction.

        Example:
            >>> from optuna_opplan._knee_fit import fit_knee
            >>> fit = fit_knee([0.0, 0.5, 0.7, 0.8, 0.85, 0.86, 0.85, 0.84])
            >>> float(fit.negated().predict([3])[0]) == -float(fit.predict([3])[0])
            True
        """
        amplitudes = _FAMILIES[self.curve].amplitudes
        params = tuple(-p if amp else p for p, amp in zip(self.params, amplitudes))
        return KneeFit(
            epoch=self.epoch,
            value=-self.value,
            observed=-self.observed,
            params=params,
            rmse=self.rmse,
            r2=self.r2,
            curve=self.curve,
            ok=self.ok,
            message=self.message,
        )


def check_curve(curve: str) -> None:
    """A :class:`ValueError` naming ``curve`` unless it is one of :data:`KNEE_CURVES`."""
    if curve not in _FAMILIES:
        raise ValueError(f"`curve` must be one of {KNEE_CURVES}, but got curve={curve!r}.")


def check_loss(loss: str) -> None:
    """A :class:`ValueError` naming ``loss`` unless it is one of :data:`KNEE_LOSSES`."""
    if loss not in KNEE_LOSSES:
        raise ValueError(f"`loss` must be one of {KNEE_LOSSES}, but got loss={loss!r}.")


def as_scores(values: Sequence[float] | np.ndarray) -> _Array:
    """``values`` as a 1-D float array; a clear :class:`ValueError` for anything else."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"`values` must be a sequence of numbers, but got values={values!r}.")
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"`values` must be one-dimensional, but got shape {y.shape}.")
    if y.size == 0:
        raise ValueError("`values` must not be empty, but got values=[].")
    return y


def _fallback(y: _Array, curve: str, message: str) -> KneeFit:
    finite = np.isfinite(y)
    epoch = int(np.argmax(np.where(finite, y, -np.inf))) if finite.any() else 0
    observed = float(y[epoch]) if finite[epoch] else math.nan
    return KneeFit(
        epoch=epoch,
        value=observed,
        observed=observed,
        params=(),
        rmse=math.nan,
        r2=math.nan,
        curve=curve,
        ok=False,
        message=message,
    )


def _bounded_linear_fit(
    basis: _Array, target: _Array, lower: _Array, upper: _Array
) -> tuple[_Array, float]:
    # An active-set shortcut, good enough for a start value: every amplitude bound is 0 or
    # infinite, so a coefficient on the wrong side is pinned at 0 and the rest refitted.
    free = np.ones(basis.shape[1], dtype=bool)
    coef = np.zeros(basis.shape[1])
    for _ in range(basis.shape[1]):
        coef = np.zeros(basis.shape[1])
        if free.any():
            coef[free] = np.linalg.lstsq(basis[:, free], target, rcond=None)[0]
        wrong = free & ((coef < lower) | (coef > upper))
        if not wrong.any():
            break
        free &= ~wrong
    coef = np.clip(coef, lower, upper)
    return coef, float(np.sum((basis @ coef - target) ** 2))


def _initial_guess(
    family: _Family, x: _Array, target: _Array, lower: _Array, upper: _Array
) -> _Array:
    amplitudes = np.asarray(family.amplitudes)
    n_rates = int(np.sum(~amplitudes))
    grid = family.rate_grid
    if n_rates == 1:
        candidates: list[tuple[float, ...]] = [(r,) for r in grid]
    else:
        candidates = [(r1, r2) for i, r1 in enumerate(grid) for r2 in grid[i + 1 :]]
    best_cost = _INF
    best = np.clip(np.zeros(len(amplitudes)), lower, upper)
    for rates in candidates:
        b = np.zeros(len(amplitudes))
        b[~amplitudes] = rates
        # The model is linear in the amplitudes, so their Jacobian columns are the basis.
        basis = family.jacobian(x, b)[:, amplitudes]
        coef, cost = _bounded_linear_fit(basis, target, lower[amplitudes], upper[amplitudes])
        if cost < best_cost:
            best_cost = cost
            b[amplitudes] = coef
            best = b
    return best


def fit_knee(
    values: Sequence[float] | np.ndarray, *, curve: str = "exponential", loss: str = "linear"
) -> KneeFit:
    """Fit a curve of the paper's Table 1 to a performance-epoch series and find its knee.

    The fit is bounded trust-region-reflective least squares (``scipy.optimize.least_squares``)
    under the paper's sign constraints. It starts from the best of a fixed grid of rates, each
    with its amplitudes fitted linearly, so the result is deterministic and local minima far from
    the data are avoided. Non-finite observations are left out of the fit. Bad data (fewer than
    3 finite values, a diverging fit) never raises: the result then has ``ok=False``, a
    ``message``, and the best finite observed epoch as the fallback knee.

    The families, with ``t`` the epoch:

    - ``"power"``: ``a1 + a2 (t+1)^a3 + a4 t + a5 t^2``, ``a2, a3, a5 <= 0``.
    - ``"multi_power"``: ``a1 + a2 (t+1)^a3 + a4 (t+1)^a5 + a6 t + a7 t^2``,
      ``a2 .. a5, a7 <= 0``.
    - ``"exponential"`` (the paper's choice): ``a1 + a2 e^(a3 t) + a4 t + a5 t^2``,
      ``a2, a3, a5 <= 0``.
    - ``"multi_exponential"``: ``a1 + a2 e^(a3 t) + a4 e^(a5 t) + a6 t + a7 t^2``,
      ``a2 .. a5, a7 <= 0``.

    As in the reference implementation, ``a1 >= 0`` as well, but only when no observation is
    negative, so that a negated loss can be fitted too.

    Args:
        values:
            ``values[0]`` is the score at epoch 0 (the inherited checkpoint's, 0 for an untrained
            model) and ``values[k]`` the validation score after epoch ``k``. Higher is better.
        curve:
            One of :data:`KNEE_CURVES`.
        loss:
            One of :data:`KNEE_LOSSES`. ``"soft_l1"`` down-weights residuals larger than 2% of
            the observed range, so that a single outlying epoch moves the knee less.

    Returns:
        A :class:`KneeFit`.

    Raises:
        ValueError: If ``values`` is empty or not one-dimensional, or ``curve`` or ``loss`` is
            unknown.

    Example:
        >>> import numpy as np
        >>> from optuna_opplan._knee_fit import fit_knee
        >>> t = np.arange(31)
        >>> fit = fit_knee(0.8 - 0.8 * np.exp(-0.3 * t) - 0.0005 * t**2)
        >>> fit.ok, fit.epoch, round(fit.value, 3)
        (True, 10, 0.71)
    """
    check_curve(curve)
    check_loss(loss)
    y_all = as_scores(values)

    finite = np.isfinite(y_all)
    n_finite = int(finite.sum())
    if n_finite < _MIN_POINTS:
        return _fallback(
            y_all, curve, f"need at least {_MIN_POINTS} finite values, but got {n_finite}."
        )
    family = _FAMILIES[curve]
    t = np.flatnonzero(finite).astype(np.float64)
    y = y_all[finite]

    # Fit dimensionless: time in units of the series length and scores in units of their
    # magnitude, so that one set of start values and tolerances serves every series.
    tau = max(float(len(y_all) - 1), 1.0)
    y_scale = float(np.max(np.abs(y)))
    if y_scale == 0.0:
        y_scale = 1.0
    s = t / tau
    x: _Array = np.vstack([s, np.log1p(t)]) if family.raw_time else s
    target = y / y_scale

    lower = np.asarray(family.lower)
    upper = np.asarray(family.upper)
    if np.min(y) < 0.0:
        lower[0] = -_INF
    spread = float(np.ptp(target))
    f_scale = 0.02 * spread if spread > 0.0 else 1.0

    def residuals(b: _Array) -> _Array:
        return family.model(x, b) - target

    def jacobian(b: _Array) -> _Array:
        return family.jacobian(x, b)

    b0 = _initial_guess(family, x, target, lower, upper)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            result = least_squares(
                residuals,
                b0,
                jac=jacobian,
                bounds=(lower, upper),
                method="trf",
                loss=loss,
                f_scale=f_scale,
                max_nfev=100,
            )
    except (ValueError, np.linalg.LinAlgError) as e:
        return _fallback(y_all, curve, f"least squares failed: {e}")
    best_b = result.x
    if not np.all(np.isfinite(best_b)):
        return _fallback(y_all, curve, "least squares diverged.")

    # Back to epochs and the caller's units.
    a = best_b / tau ** np.asarray(family.time_powers, dtype=np.float64)
    a = np.where(family.amplitudes, a * y_scale, a)

    kf_params = tuple(float(v) for v in a)
    probe = KneeFit(0, 0.0, 0.0, kf_params, 0.0, 0.0, curve, True, "")
    fitted_all = probe.predict(np.arange(len(y_all), dtype=np.float64))
    if not np.all(np.isfinite(fitted_all)):
        return _fallback(y_all, curve, "the fitted curve is not finite.")
    # A tolerance keeps a numerically flat fit from placing its knee on rounding noise.
    peak = float(np.max(fitted_all))
    epoch = int(np.argmax(fitted_all >= peak - 1e-9 * max(1.0, abs(peak))))

    resid = fitted_all[finite] - y
    rmse = float(np.sqrt(np.mean(resid**2)))
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    ss_res = float(np.sum(resid**2))
    # For a constant series R^2 is undefined: call an exact fit perfect and anything else void.
    exact = 1.0 if rmse <= 1e-6 * y_scale else 0.0
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0.0 else exact
    observed = float(y_all[epoch]) if finite[epoch] else math.nan
    return KneeFit(
        epoch=epoch,
        value=float(fitted_all[epoch]),
        observed=observed,
        params=kf_params,
        rmse=rmse,
        r2=r2,
        curve=curve,
        ok=True,
        message="",
    )
