from __future__ import annotations

import math

import numpy as np
import pytest

from optuna_opplan._improvement import has_started
from optuna_opplan._improvement import improve_decision
from optuna_opplan._improvement import improvement_probability


def _saturating(epochs: int, tau: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    t = np.arange(epochs + 1, dtype=float)
    rng = np.random.default_rng(seed)
    return 0.8 - 0.7 * np.exp(-t / tau) + noise * rng.standard_normal(t.size)


def _chance(epochs: int, level: float = 0.001, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level + 0.0003 * rng.standard_normal(epochs + 1)


@pytest.mark.parametrize(
    "name, values, max_epochs, low, high",
    [
        ("far from its plateau", _saturating(20, 30.0, 0.003), 100, 0.9, 1.0),
        ("on its plateau", _saturating(40, 3.0, 0.003), 100, 0.0, 0.05),
        (
            "noise around a level",
            0.6 + 0.01 * np.random.default_rng(1).standard_normal(30),
            100,
            0.0,
            0.1,
        ),
        ("falling (overfitting)", 0.8 - 0.002 * np.arange(30.0), 100, 0.0, 0.01),
        ("nothing left to train", _saturating(20, 30.0), 20, 0.0, 0.0),
    ],
)
def test_improvement_probability_by_curve_shape(
    name: str, values: np.ndarray, max_epochs: int, low: float, high: float
) -> None:
    p = improvement_probability(values, max_epochs=max_epochs).probability
    assert low <= p <= high, f"{name}: {p}"


def test_improvement_probability_is_deterministic_and_scale_free() -> None:
    y = _saturating(25, 8.0, 0.01, seed=3)
    first = improvement_probability(y, max_epochs=80)
    assert improvement_probability(y.copy(), max_epochs=80) == first
    # Shifting or scaling the scores (other units, another metric) changes nothing.
    shifted = improvement_probability(y + 5.0, max_epochs=80)
    scaled = improvement_probability(100.0 * y, max_epochs=80)
    assert shifted.probability == pytest.approx(first.probability, abs=1e-9)
    assert scaled.probability == pytest.approx(first.probability, abs=1e-9)
    assert scaled.tolerance == pytest.approx(100.0 * first.tolerance)


def test_a_longer_horizon_or_a_smaller_tolerance_is_more_hopeful() -> None:
    y = _saturating(15, 10.0, 0.005)
    near = improvement_probability(y, max_epochs=18).probability
    far = improvement_probability(y, max_epochs=200).probability
    strict = improvement_probability(y, max_epochs=200, min_delta=0.05).probability
    assert near < far
    assert strict < far


def test_non_finite_scores_are_left_out() -> None:
    y = _saturating(30, 4.0, 0.003)
    holed = y.copy()
    holed[20] = math.nan
    p = improvement_probability(holed, max_epochs=100)
    assert math.isfinite(p.probability) and 0.0 <= p.probability <= 1.0


@pytest.mark.parametrize(
    "name, values, started",
    [
        ("flat at chance", _chance(200), False),
        (
            "jitter around an inherited score",
            0.7 + 0.003 * _chance(40, 0.0, seed=2) / 0.0003,
            False,
        ),
        ("rising from scratch", _saturating(10, 5.0, 0.005), True),
        (
            "chance, then learning",
            np.concatenate([_chance(150), 0.001 + 0.002 * np.arange(1, 30)]),
            True,
        ),
        ("too short to tell", np.array([0.1, 0.5]), False),
    ],
)
def test_has_started(name: str, values: np.ndarray, started: bool) -> None:
    assert has_started(values) is started, name


def test_a_run_flat_at_chance_is_never_stopped_before_the_cap() -> None:
    y = _chance(120)
    reasons = {improve_decision(y[: n + 1], max_epochs=120).reason for n in range(1, 120)}
    assert reasons == {"warming_up", "not_started"}
    last = improve_decision(y, max_epochs=120)
    assert (last.stop, last.reason) == (True, "max_epochs")
    assert last.fit is not None


@pytest.mark.parametrize(
    "n, stop, reason",
    [(2, False, "warming_up"), (6, False, "improving"), (30, True, "no_improvement")],
)
def test_improve_decision_over_a_saturating_curve(n: int, stop: bool, reason: str) -> None:
    y = _saturating(60, 4.0, 0.002, seed=5)[: n + 1]
    d = improve_decision(y, delay=3, max_epochs=100)
    assert (d.stop, d.reason) == (stop, reason)
    # The kept epoch is the best observed among the retained last delay + 1.
    first = max(0, n - 3)
    assert d.keep_epoch == first + int(np.argmax(y[first:]))
    if reason in ("improving", "no_improvement"):
        assert d.improvement is not None
        assert (d.improvement.probability < 0.05) is stop
    assert (d.fit is not None) is stop


def test_it_stops_a_noisy_plateau_well_before_the_cap() -> None:
    y = _saturating(200, 3.0, 0.004, seed=7)
    stops = [n for n in range(1, 201) if improve_decision(y[: n + 1], max_epochs=200).stop]
    assert stops and 10 < stops[0] < 100


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"delay": 0}, "`delay` must be a positive int, but got delay=0."),
        ({"max_epochs": -1}, "`max_epochs` must be a positive int or None"),
        ({"threshold": 1.0}, "`threshold` must be in (0, 1), but got threshold=1.0."),
        ({"min_delta": -0.1}, "`min_delta` must be non-negative, but got min_delta=-0.1."),
        ({"noise_factor": -1.0}, "`noise_factor` must be non-negative"),
    ],
)
def test_improve_decision_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        improve_decision([0.1, 0.2, 0.3], **kwargs)
    assert message in str(err.value)


def _fine_tune(epochs: int, drop: float, recovery: float, seed: int = 3) -> np.ndarray:
    """A transition from a checkpoint scoring 0.7: a step down at the change of state, then a
    saturating recovery to ``0.7 - drop + recovery``."""
    t = np.arange(1, epochs + 1, dtype=float)
    rng = np.random.default_rng(seed)
    after = 0.7 - drop + recovery * (1 - np.exp(-(t - 1) / 4.0))
    return np.concatenate([[0.7], after + 0.002 * rng.standard_normal(t.size)])


@pytest.mark.parametrize(
    "name, values, keep_source, stop_by, kept",
    [
        # Training only makes it worse: stop soon, and keep the checkpoint it started from.
        ("falls and stays down", 0.7 - 0.05 * np.minimum(np.arange(13.0), 3), True, 8, 0),
        # The same with a stand-in epoch 0 (the pruner's copy of epoch 1 when the start is
        # unmeasured): a trained epoch is kept, never the stand-in.
        (
            "falls, start unmeasured",
            np.concatenate([[0.65], 0.7 - 0.05 * np.minimum(np.arange(1.0, 13.0), 3)]),
            False,
            8,
            1,
        ),
        # A step down, then a recovery well above the start: it is not stopped during the
        # recovery, and keeps a trained epoch.
        ("steps down, recovers above", _fine_tune(40, 0.2, 0.35), True, None, None),
    ],
)
def test_a_run_below_its_inherited_score(
    name: str, values: np.ndarray, keep_source: bool, stop_by: int | None, kept: int | None
) -> None:
    decisions = [
        improve_decision(values[: n + 1], delay=4, max_epochs=60, keep_source=keep_source)
        for n in range(1, len(values))
    ]
    stops = [n for n, d in enumerate(decisions, start=1) if d.stop]
    if stop_by is not None:
        assert stops and stops[0] <= stop_by, name
    else:
        # Still below 0.7 + the recovery's midpoint at epoch 8: no stop before it has recovered.
        assert not stops or stops[0] > 12, name
    first = decisions[(stops[0] if stops else len(values) - 1) - 1]
    if kept is not None:
        assert first.keep_epoch == kept, name
    else:
        assert first.keep_epoch > 0, name


@pytest.mark.parametrize(
    "from_scratch, stops",
    [
        # From the initial model, a flat curve is a run still at chance: never stopped.
        (True, False),
        # From a trained checkpoint, the same curve is a plateau at the inherited score.
        (False, True),
    ],
)
def test_a_flat_curve_is_a_plateau_only_after_a_trained_start(
    from_scratch: bool, stops: bool
) -> None:
    y = 0.7 + 0.02 * np.random.default_rng(4).standard_normal(9)
    decisions = [
        improve_decision(y[: n + 1], delay=3, max_epochs=40, from_scratch=from_scratch)
        for n in range(1, 9)
    ]
    assert any(d.stop for d in decisions) is stops
    if not stops:
        assert {d.reason for d in decisions} == {"warming_up", "not_started"}
