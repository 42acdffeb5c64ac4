from __future__ import annotations

import math

import numpy as np
import pytest

from optuna_opplan._knee_fit import KNEE_CURVES
from optuna_opplan._knee_fit import KNEE_LOSSES
from optuna_opplan._knee_fit import fit_knee


def _curve(name: str, params: tuple[float, ...], n: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    a = params
    if name == "exponential":
        return a[0] + a[1] * np.exp(a[2] * t) + a[3] * t + a[4] * t**2
    if name == "power":
        return a[0] + a[1] * (t + 1) ** a[2] + a[3] * t + a[4] * t**2
    if name == "multi_exponential":
        return a[0] + a[1] * np.exp(a[2] * t) + a[3] * np.exp(a[4] * t) + a[5] * t + a[6] * t**2
    return a[0] + a[1] * (t + 1) ** a[2] + a[3] * (t + 1) ** a[4] + a[5] * t + a[6] * t**2


# Each row: family, parameters, series length, true knee (integer argmax over 0..n-1).
SYNTHETIC = [
    ("exponential", (0.8, -0.8, -0.3, 0.0, -0.0005), 31, 10),
    ("exponential", (0.6, -0.5, -0.1, 0.002, -0.0002), 60, 21),
    ("power", (0.9, -0.9, -1.0, 0.0, -0.0005), 40, 9),
    ("multi_exponential", (0.8, -0.5, -0.5, -0.3, -0.05, 0.0, -0.0004), 50, 12),
    ("multi_power", (0.9, -0.5, -1.5, -0.4, -0.5, 0.0, -0.0003), 50, 11),
]


def _true_knee(name: str, params: tuple[float, ...], n: int) -> int:
    return int(np.argmax(_curve(name, params, n)))


@pytest.mark.parametrize(("curve", "params", "n", "knee"), SYNTHETIC)
def test_noise_free_recovers_knee_and_curve(
    curve: str, params: tuple[float, ...], n: int, knee: int
) -> None:
    assert _true_knee(curve, params, n) == knee
    values = _curve(curve, params, n)
    fit = fit_knee(values, curve=curve)
    assert fit.ok and fit.message == ""
    assert fit.curve == curve
    assert fit.epoch == knee
    assert fit.rmse < 2e-3
    assert fit.r2 > 0.999
    t = np.arange(n)
    np.testing.assert_allclose(fit.predict(t), values, atol=5e-3)
    assert fit.value == pytest.approx(float(fit.predict(knee)))
    assert fit.observed == pytest.approx(values[knee])


@pytest.mark.parametrize(("curve", "params"), [(c, p) for c, p, _, _ in SYNTHETIC[:3]])
def test_noise_free_recovers_parameters(curve: str, params: tuple[float, ...]) -> None:
    fit = fit_knee(_curve(curve, params, 40), curve=curve)
    np.testing.assert_allclose(fit.params, params, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("curve", KNEE_CURVES)
def test_fitted_parameters_respect_sign_constraints(curve: str) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(40)
    values = 0.7 - 0.6 * np.exp(-0.2 * t) + 0.003 * t - 0.0002 * t**2
    fit = fit_knee(values + rng.normal(0, 0.02, 40), curve=curve)
    a = np.asarray(fit.params)
    nonpositive = [1, 2, 4] if len(a) == 5 else [1, 2, 3, 4, 6]
    assert fit.ok
    assert a[0] >= 0
    assert np.all(a[nonpositive] <= 0)


@pytest.mark.parametrize("curve", KNEE_CURVES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("std", [0.01, 0.03])
def test_noisy_curve_knee_near_truth(curve: str, seed: int, std: float) -> None:
    params = (0.8, -0.8, -0.15, 0.0, -0.0003)
    clean = _curve("exponential", params, 60)
    knee = int(np.argmax(clean))
    values = clean + np.random.default_rng(seed).normal(0.0, std, clean.shape)
    fit = fit_knee(values, curve=curve)
    assert fit.ok
    # The true curve is within 1 point of its peak over epochs 12..33: a knee anywhere there
    # is as good as the truth given 3-point noise.
    assert abs(fit.epoch - knee) <= 12, (knee, fit.epoch)


@pytest.mark.parametrize("loss", KNEE_LOSSES)
def test_robust_loss_resists_one_outlier(loss: str) -> None:
    values = _curve("exponential", (0.8, -0.8, -0.3, 0.0, -0.0005), 31)
    values[5] = 0.95  # one wild epoch early on
    fit = fit_knee(values, loss=loss)
    assert fit.ok
    if loss == "soft_l1":
        assert abs(fit.epoch - 10) <= 1


@pytest.mark.parametrize(
    ("values", "ok", "epochs"),
    [
        ([0.3], False, {0}),
        ([0.1, 0.4], False, {1}),
        ([0.5] * 12, True, {0}),
        ([0.0] * 12, True, {0}),
        ([math.nan] * 12, False, {0}),
        ([math.nan, 0.2, math.nan], False, {1}),
        ([math.inf, -math.inf, 0.3, 0.2], False, {2}),
        ([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], True, {0}),
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], True, {6}),
        ([0.0, 0.5, math.nan, 0.7, math.inf, 0.75, 0.76, 0.74, 0.7], True, {5, 6}),
        ([-3.0, -2.0, -1.5, -1.2, -1.1, -1.1, -1.2, -1.4], True, {4, 5}),
        ([12.0, 50.0, 70.0, 78.0, 80.0, 79.0, 77.0, 74.0], True, {4, 5}),
    ],
)
def test_degenerate_series_never_raise(values: list[float], ok: bool, epochs: set[int]) -> None:
    for curve in KNEE_CURVES:
        fit = fit_knee(values, curve=curve)
        assert fit.ok is ok
        assert fit.epoch in epochs
        assert 0 <= fit.epoch < len(values)
        if ok:
            assert math.isfinite(fit.value) and fit.message == ""
        else:
            assert fit.message != "" and fit.params == ()
            assert np.all(np.isnan(fit.predict([0, 1])))


def test_fit_is_deterministic() -> None:
    values = (
        0.7 - 0.6 * np.exp(-0.2 * np.arange(30)) + np.random.default_rng(3).normal(0, 0.02, 30)
    )
    assert fit_knee(values) == fit_knee(values)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"values": []}, "`values` must not be empty"),
        ({"values": [[0.1, 0.2]]}, "one-dimensional"),
        ({"values": "0.1"}, "sequence of numbers"),
        ({"values": [0.1, 0.2, 0.3], "curve": "cubic"}, "`curve` must be one of"),
        ({"values": [0.1, 0.2, 0.3], "loss": "cauchy"}, "`loss` must be one of"),
    ],
)
def test_fit_knee_validates_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_knee(**kwargs)
