from __future__ import annotations

import math

import numpy as np
import pytest

from optuna_opplan._knee import KNEE_KEEP_RULES
from optuna_opplan._knee import knee_decision
from optuna_opplan._knee_fit import KneeFit


def _exponential(params: tuple[float, ...], n: int) -> np.ndarray:
    # The paper's exponential family with its overfitting term: a0 + a1 e^(a2 t) + a3 t + a4 t^2.
    t = np.arange(n, dtype=np.float64)
    a = params
    return a[0] + a[1] * np.exp(a[2] * t) + a[3] * t + a[4] * t**2


def _peaked(n: int) -> list[float]:
    # Knee at epoch 10 (the first curve of test_knee_fit.py's table).
    return list(_exponential((0.8, -0.8, -0.3, 0.0, -0.0005), n + 1))


def _rising(n: int) -> list[float]:
    return list(0.8 - 0.8 * np.exp(-0.05 * np.arange(n + 1)))


@pytest.mark.parametrize(
    ("values", "kwargs", "stop", "keep_epoch", "reason", "fitted"),
    [
        (_peaked(5), {}, False, 5, "warming_up", False),
        (_peaked(9), {}, False, 9, "warming_up", False),
        (_peaked(12), {}, False, 10, "before_knee", True),
        (_peaked(19), {}, False, 10, "before_knee", True),
        (_peaked(20), {}, True, 10, "knee", True),
        (_peaked(20), {"keep": "knee"}, True, 10, "knee", True),
        (_peaked(20), {"delay": 5}, True, 15, "knee", True),
        (_peaked(15), {"delay": 5}, True, 10, "knee", True),
        (_peaked(14), {"delay": 5}, False, 10, "before_knee", True),
        (_rising(30), {}, False, 30, "before_knee", True),
        (_rising(30), {"max_epochs": 30}, True, 30, "max_epochs", True),
        (_rising(30), {"max_epochs": 30, "keep": "knee"}, True, 30, "max_epochs", True),
        (_peaked(4), {"max_epochs": 4}, True, 4, "max_epochs", False),
        (_peaked(12), {"max_epochs": 12}, True, 10, "max_epochs", True),
        # Nothing retained is finite: keep the newest.
        ([0.0, 0.4] + [math.nan] * 11, {}, False, 12, "fit_failed", True),
        ([0.0, 0.4] + [math.nan] * 9, {}, False, 1, "fit_failed", True),
        ([0.0, 0.4] + [math.nan] * 11, {"max_epochs": 12}, True, 12, "max_epochs", True),
    ],
)
def test_knee_decision_table(
    values: list[float],
    kwargs: dict,
    stop: bool,
    keep_epoch: int,
    reason: str,
    fitted: bool,
) -> None:
    decision = knee_decision(values, **kwargs)
    assert decision.stop is stop
    assert decision.keep_epoch == keep_epoch
    assert decision.reason == reason
    assert (decision.fit is not None) is fitted


def test_knee_before_retained_window_is_clamped() -> None:
    # Peak at epoch 2, then a long slow decline: by epoch 25 the knee is far older than the
    # retained epochs 15..25; the decision must stop now and name the oldest retained one.
    values = [0.0, 0.7, 0.8] + [0.8 - 0.002 * k for k in range(1, 24)]
    decision = knee_decision(values, keep="knee")
    assert decision.fit is not None and decision.fit.epoch < 15
    assert decision.stop
    assert decision.keep_epoch == 15
    assert decision.reason == "knee (keep clamped to the oldest retained epoch)"
    assert knee_decision(values, keep="best").keep_epoch == 15


@pytest.mark.parametrize("keep", KNEE_KEEP_RULES)
@pytest.mark.parametrize("delay", [1, 3, 10])
@pytest.mark.parametrize("seed", [0, 1])
def test_keep_epoch_always_retained(keep: str, delay: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    clean = _exponential((0.8, -0.8, -0.3, 0.0, -0.001), 40)
    values = clean + rng.normal(0, 0.03, 40)
    for n in range(40):
        decision = knee_decision(values[: n + 1], delay=delay, max_epochs=35, keep=keep)
        assert max(0, n - delay) <= decision.keep_epoch <= n
        if decision.stop:
            assert n >= 35 or decision.reason.startswith("knee")
            break
    else:
        pytest.fail("never stopped")


def test_failed_fit_never_stops_before_the_cap() -> None:
    values = [0.0] + [math.nan] * 30
    for n in range(1, 31):
        decision = knee_decision(values[: n + 1], delay=3, max_epochs=30)
        assert decision.stop is (n == 30)


def test_keep_best_picks_the_best_retained_observation() -> None:
    values = _peaked(22)
    values[14] = 0.73  # a lucky epoch after the knee, still retained at epoch 22
    decision = knee_decision(values)
    assert isinstance(decision.fit, KneeFit)
    assert decision.stop and decision.keep_epoch == 14
    assert knee_decision(values, keep="knee").keep_epoch == max(decision.fit.epoch, 12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"delay": 0}, "`delay` must be a positive int, but got delay=0."),
        ({"delay": -1}, "`delay` must be a positive int, but got delay=-1."),
        ({"delay": 2.5}, "`delay` must be a positive int"),
        ({"delay": True}, "`delay` must be a positive int"),
        ({"max_epochs": 0}, "`max_epochs` must be a positive int or None"),
        ({"curve": "linear"}, "`curve` must be one of"),
        ({"keep": "last"}, "`keep` must be one of"),
        ({"loss": "huber"}, "`loss` must be one of"),
    ],
)
def test_knee_decision_validates_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        knee_decision([0.0, 0.1], **kwargs)


def test_knee_decision_rejects_empty_values() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        knee_decision([])
