from __future__ import annotations

import math

import optuna
import pytest

import optuna_opplan as op
from optuna_opplan._protocol import KEY_EPOCH0
from optuna_opplan._protocol import KEY_KNEE


def _rise_and_fall(t: int) -> float:
    return 0.8 - 0.8 * 0.7**t - 0.001 * t**2


def _run(pruner: op.KneePointPruner, curve, epoch0: float | None = None, limit: int = 500):
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    if epoch0 is not None:
        study._storage.set_trial_system_attr(trial._trial_id, KEY_EPOCH0, epoch0)
    decisions = []
    for epoch in range(1, limit):
        trial.report(curve(epoch), epoch)
        stop = trial.should_prune()
        decisions.append(stop)
        if stop:
            break
    record = study._storage.get_trial_system_attrs(trial._trial_id)[KEY_KNEE]
    return epoch, decisions, record


@pytest.mark.parametrize(
    ("delay", "max_epochs", "curve", "stop_range", "reason"),
    [
        # knee of the noise-free curve is near epoch 9; stop at t* + delay
        (5, 200, _rise_and_fall, (12, 16), "knee"),
        (10, 200, _rise_and_fall, (17, 21), "knee"),
        # still rising when the cap comes
        (5, 30, lambda t: 0.01 * t, (30, 30), "max_epochs"),
        # a jump then flat: the knee is at the start, stop soon after the delay
        (5, 200, lambda t: 0.5, (5, 8), "knee"),
    ],
)
def test_stop_decisions(delay, max_epochs, curve, stop_range, reason) -> None:
    pruner = op.KneePointPruner(delay=delay, max_epochs=max_epochs)
    epoch, decisions, record = _run(pruner, curve)
    assert stop_range[0] <= epoch <= stop_range[1]
    assert record["reason"].startswith(reason)
    assert record["stop"] is True
    assert not any(decisions[: delay - 1]), "never stops while warming up"
    # the kept epoch is one of the retained checkpoints
    assert epoch - delay <= record["keep_epoch"] <= epoch


def test_record_carries_the_fit() -> None:
    _, _, record = _run(op.KneePointPruner(delay=5), _rise_and_fall)
    for key in ("knee_epoch", "fitted_peak", "observed_at_knee", "rmse", "r2", "params"):
        assert key in record
    assert record["fit_ok"] is True
    assert 5 <= record["knee_epoch"] <= 12


def test_epoch0_point_is_part_of_the_fit() -> None:
    # Fine-tuning that only loses from the start: the knee is epoch 0 (keep the parent).
    pruner = op.KneePointPruner(delay=4, keep="knee")
    epoch, _, record = _run(pruner, lambda t: 0.8 - 0.01 * t, epoch0=0.8)
    assert epoch == 4
    assert record["knee_epoch"] == 0
    assert record["keep_epoch"] == 0


def test_non_finite_score_stops_at_once() -> None:
    pruner = op.KneePointPruner(delay=5)
    epoch, _, record = _run(pruner, lambda t: math.nan if t == 3 else 0.1 * t)
    assert epoch == 3
    assert record["reason"] == "non_finite"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delay": -1}, "`delay` must be a positive int, but got delay=-1."),
        ({"delay": 0}, "`delay` must be a positive int"),
        ({"delay": 2.5}, "`delay` must be a positive int"),
        ({"max_epochs": 0}, "`max_epochs` must be a positive int"),
        ({"curve": "cubic"}, "`curve` must be one of"),
        ({"keep": "last"}, "`keep` must be one of"),
        ({"loss": "huber"}, "`loss` must be one of"),
    ],
)
def test_invalid_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        op.KneePointPruner(**kwargs)


def test_decide_is_pure() -> None:
    pruner = op.KneePointPruner(delay=5)
    values = [0.0, *(_rise_and_fall(t) for t in range(1, 20))]
    assert pruner.decide(values) == pruner.decide(list(values))


def test_a_reported_step_zero_replaces_the_inherited_point() -> None:
    pruner = op.KneePointPruner(delay=3, keep="knee")
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, KEY_EPOCH0, 0.9)
    trial.report(0.2, 0)  # the inherited checkpoint scores low under the new settings
    for epoch in range(1, 4):
        trial.report(0.2 + 0.1 * epoch, epoch)
    frozen = study._storage.get_trial(trial._trial_id)
    assert pruner.curve_of(study, frozen)[0] == 0.2
    assert not trial.should_prune()
