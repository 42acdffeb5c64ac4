from __future__ import annotations

import json

import optuna
from optuna.trial import TrialState
import pytest

import optuna_opplan as op
from optuna_opplan import dashboard
from optuna_opplan._protocol import CANCELLED
from optuna_opplan._protocol import KEY_EPOCH0
from optuna_opplan._protocol import KEY_KNEE
from optuna_opplan._protocol import KEY_OUTCOME
from optuna_opplan._protocol import KEY_STALE
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._protocol import OutcomeKind
from optuna_opplan._protocol import Status
from optuna_opplan._protocol import claim_trial
from optuna_opplan._protocol import curve_of
from optuna_opplan._protocol import epochs_of
from optuna_opplan._protocol import fail_trial
from optuna_opplan._protocol import finish_trial
from optuna_opplan._protocol import outcome_of


def _frozen(values: dict[int, float], **attrs: object) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        state=TrialState.RUNNING, intermediate_values=values, system_attrs=dict(attrs)
    )


@pytest.mark.parametrize(
    ("values", "attrs", "epoch0", "expected"),
    [
        ({1: 0.5, 2: 0.6}, {}, None, [0.0, 0.5, 0.6]),  # from the initial model
        ({1: 0.5}, {KEY_EPOCH0: 0.7}, None, [0.7, 0.5]),  # the source's score
        ({1: 0.5}, {KEY_EPOCH0: 0.7}, 0.3, [0.3, 0.5]),  # a caller's cached epoch-0 point
        ({0: 0.2, 1: 0.5}, {KEY_EPOCH0: 0.858}, 0.858, [0.2, 0.5]),  # a reported step 0 wins
        ({2: 0.6, 1: 0.5}, {}, None, [0.0, 0.5, 0.6]),  # in epoch order
        ({0: 0.4}, {}, None, [0.4]),  # only the evaluation so far
    ],
)
def test_curve_of(
    values: dict[int, float], attrs: dict, epoch0: float | None, expected: list[float]
) -> None:
    assert curve_of(_frozen(values, **attrs), epoch0=epoch0) == expected


def test_curve_of_warns_about_gaps_in_the_epochs() -> None:
    with pytest.warns(UserWarning, match="expects epochs"):
        assert curve_of(_frozen({1: 0.5, 3: 0.6})) == [0.0, 0.5, 0.6]


@pytest.mark.parametrize(
    ("values", "expected"), [({}, 0), ({0: 0.1}, 0), ({0: 0.1, 1: 0.2, 2: 0.3}, 2)]
)
def test_epochs_of_does_not_count_the_step_0_evaluation(values: dict, expected: int) -> None:
    assert epochs_of(_frozen(values)) == expected


def test_a_reported_step_0_is_both_fitted_and_drawn() -> None:
    # The pruner fits the step-0 evaluation of the inherited checkpoint; the dashboard once
    # drew the source's stored score instead (0.858 for a fitted 0.2). One reader, one curve.
    graph = op.TransitionGraph.basic(
        clip_lengths=(8,), learning_rates=(0.1, 0.01), samplings=("uniform",)
    )

    def objective(trial: optuna.Trial) -> None:
        step = op.current_transition(trial)
        if step.source is not None:
            trial.report(0.2, 0)
        for epoch in range(1, 40):
            trial.report(0.9 - 0.6 * 0.75**epoch, epoch)
            if trial.should_prune():
                break

    study = op.create_planning_study(graph, pruner=op.KneePointPruner(delay=3, max_epochs=40))
    assert op.run_worker(study, objective, poll_interval=0.01) == 2
    (trial,) = [
        t for t in study.trials if t.system_attrs[KEY_TRANSITION] == graph.transitions[1].key
    ]
    assert trial.system_attrs[KEY_EPOCH0] > 0.6, "the source's score, which step 0 overrides"

    pruner = study.pruner
    assert isinstance(pruner, op.KneePointPruner)
    fitted = pruner.curve_of(study, trial)
    assert fitted[0] == 0.2
    record = trial.system_attrs[KEY_KNEE]
    refit = op.fit_knee(fitted, curve=record["curve"])
    assert record["params"] == pytest.approx(list(refit.params), rel=1e-6)
    other = op.fit_knee([trial.system_attrs[KEY_EPOCH0], *fitted[1:]], curve=record["curve"])
    assert list(other.params) != pytest.approx(record["params"], rel=1e-3)

    fig = dashboard.curve_figure(trial)
    traces = {t.meta["opplan"]: t for t in fig.data if isinstance(t.meta, dict)}
    assert list(traces["epoch0"].y) == [0.2]
    assert traces["fit"].y[0] == pytest.approx(float(refit.predict([0.0])[0]))


def test_enums_are_the_stored_strings() -> None:
    # Studies written before the enums hold plain strings: they must compare, hash and print
    # as those strings, and serialise to them.
    assert OutcomeKind.SUPERSEDED == "superseded" and Status.DONE == "done"
    assert {"done": 1}[Status.DONE] == 1 and Status.READY in {"ready"}
    assert f"{Status.RUNNING:<8}|" == "running |" and str(OutcomeKind.OK) == "ok"
    assert json.loads(json.dumps({Status.DONE: OutcomeKind.FAILED})) == {"done": "failed"}


def _running(study: optuna.Study) -> int:
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))
    trial_id = study.trials[-1]._trial_id
    assert claim_trial(study._storage, trial_id)
    return trial_id


def test_claim_fail_and_finish_take_effect_once() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))
    waiting = study.trials[0]._trial_id
    assert claim_trial(study._storage, waiting)
    assert not claim_trial(study._storage, waiting), "a claimed trial cannot be claimed again"

    assert fail_trial(study._storage, waiting, OutcomeKind.FAILED, "diverged")
    frozen = study._storage.get_trial(waiting)
    assert frozen.state == TrialState.FAIL
    assert frozen.system_attrs[KEY_OUTCOME] == {"status": "failed", "reason": "diverged"}
    assert outcome_of(frozen) == ("failed", "diverged")
    assert not fail_trial(study._storage, waiting, OutcomeKind.ERROR, "again")
    assert not claim_trial(study._storage, waiting)

    # Without a kind, a stored outcome stands (a retirer's "superseded").
    stale = _running(study)
    study._storage.set_trial_system_attr(stale, KEY_OUTCOME, {"status": "superseded"})
    assert fail_trial(study._storage, stale, None, attrs={KEY_STALE: "observer"})
    frozen = study._storage.get_trial(stale)
    assert outcome_of(frozen) == ("superseded", None) and frozen.system_attrs[KEY_STALE]

    done = _running(study)
    trial = optuna.Trial(study, done)
    assert finish_trial(study, trial, 0.5, attrs={"opplan:extra": 1})
    frozen = study._storage.get_trial(done)
    assert frozen.state == TrialState.COMPLETE and frozen.value == 0.5
    assert outcome_of(frozen) == ("ok", None) and frozen.system_attrs["opplan:extra"] == 1
    assert not finish_trial(study, trial, 0.7), "finished once"
    assert not fail_trial(study._storage, done, OutcomeKind.ERROR)


def test_a_cancelled_trial_is_pruned() -> None:
    study = optuna.create_study(direction="maximize", pruner=op.KneePointPruner(delay=3))
    trial = study.ask()
    trial.report(0.5, 1)
    assert not trial.should_prune()
    CANCELLED.add(trial._trial_id)
    try:
        assert trial.should_prune()
    finally:
        CANCELLED.discard(trial._trial_id)
