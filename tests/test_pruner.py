from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

import optuna_opplan as op
from optuna_opplan._protocol import KEY_EPOCH0
from optuna_opplan._protocol import KEY_KNEE
from optuna_opplan._protocol import KEY_SOURCE_TRIAL


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
    pruner = op.KneePointPruner(delay=delay, max_epochs=max_epochs, rule="paper")
    epoch, decisions, record = _run(pruner, curve)
    assert stop_range[0] <= epoch <= stop_range[1]
    assert record["reason"].startswith(reason)
    assert record["stop"] is True
    assert not any(decisions[: delay - 1]), "never stops while warming up"
    # the kept epoch is one of the retained checkpoints
    assert epoch - delay <= record["keep_epoch"] <= epoch


def test_record_carries_the_fit() -> None:
    _, _, record = _run(op.KneePointPruner(delay=5, rule="paper"), _rise_and_fall)
    for key in ("knee_epoch", "fitted_peak", "observed_at_knee", "rmse", "r2", "params"):
        assert key in record
    assert record["fit_ok"] is True
    assert 5 <= record["knee_epoch"] <= 12


def test_epoch0_point_is_part_of_the_fit() -> None:
    # Fine-tuning that only loses from the start: the knee is epoch 0 (keep the parent).
    pruner = op.KneePointPruner(delay=4, keep="knee", rule="paper")
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
    pruner = op.KneePointPruner(delay=3, keep="knee", rule="paper")
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, KEY_EPOCH0, 0.9)
    trial.report(0.2, 0)  # the inherited checkpoint scores low under the new settings
    for epoch in range(1, 4):
        trial.report(0.2 + 0.1 * epoch, epoch)
    frozen = study._storage.get_trial(trial._trial_id)
    assert pruner.curve_of(study, frozen)[0] == 0.2
    assert not trial.should_prune()


def _noisy(base, seed: int = 0, scale: float = 0.005):
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(500)
    return lambda t: base(t) + scale * noise[t]


_CURVES = {
    "rise and fall": _rise_and_fall,
    "noisy saturating": _noisy(lambda t: 0.8 - 0.7 * math.exp(-t / 6)),
    "noisy plateau": _noisy(lambda t: 0.6, seed=1),
    "flat at chance": _noisy(lambda t: 0.001, seed=2, scale=0.0003),
}


@pytest.mark.parametrize("rule", ["paper", "improve"])
@pytest.mark.parametrize("name", list(_CURVES))
def test_a_minimised_study_stops_where_the_negated_curve_maximised_does(rule, name) -> None:
    curve = _CURVES[name]
    outcomes = []
    peaks = []
    for direction, sign in (("maximize", 1.0), ("minimize", -1.0)):
        pruner = op.KneePointPruner(rule=rule, delay=5, max_epochs=60)
        study = optuna.create_study(direction=direction, pruner=pruner)
        trial = study.ask()
        # A fine-tuning transition: the engine supplies its source and starting score.
        study._storage.set_trial_system_attr(trial._trial_id, KEY_SOURCE_TRIAL, 0)
        study._storage.set_trial_system_attr(trial._trial_id, KEY_EPOCH0, sign * curve(0))
        for epoch in range(1, 61):
            trial.report(sign * curve(epoch), epoch)
            if trial.should_prune():
                break
        record = study._storage.get_trial_system_attrs(trial._trial_id)[KEY_KNEE]
        outcomes.append((epoch, record["keep_epoch"], record["reason"], record.get("probability")))
        peaks.append(sign * record["fitted_peak"] if record.get("fitted_peak") else None)
    assert outcomes[0] == outcomes[1]
    # The recorded fit is in the study's own units.
    assert peaks[0] == pytest.approx(peaks[1])


@pytest.mark.parametrize("rule", ["paper", "improve"])
def test_an_unmeasured_epoch_zero_is_the_first_epoch_for_a_loss(rule) -> None:
    # No source checkpoint and no step 0: the configured 0 would be a perfect loss.
    loss = _CURVES["noisy saturating"]
    outcomes = []
    for direction, sign in (("maximize", 1.0), ("minimize", -1.0)):
        study = optuna.create_study(
            direction=direction, pruner=op.KneePointPruner(rule=rule, delay=5, max_epochs=60)
        )
        trial = study.ask()
        if direction == "maximize":
            trial.report(loss(1), 0)  # the maximised twin measures epoch 0 = epoch 1
        for epoch in range(1, 61):
            trial.report(sign * loss(epoch), epoch)
            if trial.should_prune():
                break
        record = study._storage.get_trial_system_attrs(trial._trial_id)[KEY_KNEE]
        outcomes.append((epoch, record["keep_epoch"], record["reason"]))
    assert outcomes[0] == outcomes[1]


def test_config_names_the_rule_and_its_settings() -> None:
    paper = op.KneePointPruner(rule="paper")
    assert paper.config() == {
        "rule": "paper",
        "delay": 10,
        "max_epochs": 200,
        "curve": "exponential",
        "keep": "best",
        "loss": "linear",
    }
    improve = op.KneePointPruner(rule="improve", threshold=0.05)
    assert improve.config() == {
        "rule": "improve",
        "delay": 4,
        "max_epochs": 200,
        "threshold": 0.05,
        "min_delta": 0.0,
        "noise_factor": 1.5,
    }
    for pruner in (paper, improve):
        assert op.KneePointPruner.from_config(pruner.config()).config() == pruner.config()
    # A config stored before rules existed ran the paper's rule.
    old = {"delay": 7, "max_epochs": 50, "curve": "power", "keep": "knee", "loss": "linear"}
    assert op.KneePointPruner.from_config(old).rule == "paper"


def test_the_improve_rule_records_what_it_decided_on() -> None:
    pruner = op.KneePointPruner(rule="improve", max_epochs=100)
    epoch, _, record = _run(pruner, _CURVES["noisy saturating"])
    assert record["rule"] == "improve"
    assert record["reason"] == "no_improvement"
    assert record["threshold"] == pruner.threshold
    assert 0.0 <= record["probability"] < pruner.threshold
    assert record["tolerance"] > 0.0 and record["noise"] >= 0.0
    assert record["fit_ok"] is True  # the planner's fitted score
    assert epoch < 60


def test_the_improve_rule_never_stops_a_run_flat_at_chance() -> None:
    pruner = op.KneePointPruner(rule="improve", delay=3, max_epochs=80)
    epoch, decisions, record = _run(pruner, _CURVES["flat at chance"])
    assert epoch == 80 and not any(decisions[:-1])
    assert record["reason"] == "max_epochs"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "knee"}, "`rule` must be one of"),
        ({"threshold": 0.0}, "`threshold` must be a number in (0, 1), but got threshold=0.0."),
        ({"threshold": "0.1"}, "`threshold` must be a number in (0, 1)"),
        ({"min_delta": -1.0}, "`min_delta` must be a non-negative number"),
        ({"noise_factor": math.nan}, "`noise_factor` must be a non-negative number"),
    ],
)
def test_invalid_rule_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        op.KneePointPruner(**kwargs)
    assert message in str(err.value)
