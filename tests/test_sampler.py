from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
from optuna.trial import TrialState
import pytest

import optuna_opplan as op
from optuna_opplan._protocol import KEY_OUTCOME
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._queue import TransitionQueue
from optuna_opplan.simulation import SimulatedObjective

SMALL = {"clip_lengths": (8, 16), "learning_rates": (0.1, 0.01), "samplings": ("uniform",)}
FAST = {"heartbeat_interval": 0.05, "grace_period": 0.5, "poll_interval": 0.01}


def _study(graph: op.TransitionGraph, storage: Any = None) -> optuna.Study:
    return optuna.create_study(
        storage=storage,
        direction="maximize",
        sampler=op.PlanningSampler(graph),
        pruner=op.KneePointPruner(delay=5, max_epochs=60),
    )


def _sampler(study: optuna.Study) -> op.PlanningSampler:
    assert isinstance(study.sampler, op.PlanningSampler)
    return study.sampler


def _complete_per_transition(study: optuna.Study) -> Counter[str]:
    return Counter(
        t.system_attrs[KEY_TRANSITION] for t in study.get_trials(states=(TrialState.COMPLETE,))
    )


def _superseded(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if (t.system_attrs.get(KEY_OUTCOME) or {}).get("status") == "superseded"
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"graph": "basic"}, "`graph` must be a TransitionGraph, but got graph='basic'"),
        ({"score": "best"}, "`score` must be one of ('fitted', 'observed'), but got score='best'"),
        ({"max_retries": -1}, "`max_retries` must be a non-negative int, but got max_retries=-1"),
        ({"max_retries": True}, "but got max_retries=True"),
        ({"max_deaths": -1}, "`max_deaths` must be a non-negative int, but got max_deaths=-1"),
        ({"max_deaths": 2.5}, "but got max_deaths=2.5"),
        (
            {"death_backoff": -1},
            "`death_backoff` must be a non-negative number of seconds, but got death_backoff=-1",
        ),
        ({"death_backoff": float("inf")}, "but got death_backoff=inf"),
        ({"death_backoff": "30s"}, "but got death_backoff='30s'"),
        (
            {"initial_score": "0"},
            "`initial_score` must be a finite number or None, but got initial_score='0'",
        ),
    ],
)
def test_constructor_arguments_are_validated(kwargs: dict[str, Any], message: str) -> None:
    args = {"graph": op.TransitionGraph.basic(**SMALL), **kwargs}
    graph = args.pop("graph")
    with pytest.raises(ValueError) as info:
        op.PlanningSampler(graph, **args)
    assert message in str(info.value)


def test_trial_params_record_the_transition_and_other_params_are_sampled() -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    seen: dict[str, float] = {}

    def objective(trial: optuna.Trial) -> None:
        # A parameter outside the graph: drawn by the fallback sampler, recorded as usual.
        seen[op.current_transition(trial).transition.key] = trial.suggest_float("wd", 1e-5, 1e-3)
        SimulatedObjective(seed=0)(trial)

    study = _study(graph)
    op.run_worker(study, objective, **FAST)
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        transition = graph.transition(trial.system_attrs[KEY_TRANSITION])
        assert trial.params["source"] == transition.source_key
        assert trial.params["target"] == transition.target.key
        for axis in graph.axes:
            assert trial.params[axis.name] == transition.target[axis.name]
        assert trial.params["wd"] == seen[transition.key]
        assert 1e-5 <= trial.params["wd"] <= 1e-3


def test_workers_on_a_bare_study_enqueue_only_ready_transitions() -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    study = _study(graph)
    sampler = _sampler(study)
    # Two workers started together scanned the same empty study: each enqueues what is ready
    # (the transitions out of the initial model), not the whole graph.
    empty = sampler.progress(study)
    ready = [t for t in graph.transitions if t.source is None]
    for _ in range(2):
        assert TransitionQueue(study, sampler).reconcile(empty)
    assert Counter(t.system_attrs[KEY_TRANSITION] for t in study.trials) == Counter(
        2 * [t.key for t in ready]
    )
    op.run_worker(study, SimulatedObjective(seed=4), **FAST)
    assert _complete_per_transition(study) == Counter(t.key for t in graph.transitions)
    # The race's duplicates were retired unrun; every other transition got a single trial.
    assert len(_superseded(study)) == len(ready)
    assert len(study.trials) == len(graph.transitions) + len(ready)


def test_duplicate_and_early_waiting_trials_run_once() -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    study = _study(graph)
    # Every transition enqueued twice, blocked ones included (by hand, or by an earlier
    # version that enqueued the whole graph up front, racing another process).
    for _ in range(2):
        for transition in graph.transitions:
            study.add_trial(
                optuna.trial.create_trial(
                    state=TrialState.WAITING,
                    system_attrs={KEY_TRANSITION: transition.key, "opplan:attempt": 1},
                )
            )
    assert len(study.trials) == 2 * len(graph.transitions)
    op.run_worker(study, SimulatedObjective(seed=4), **FAST)
    assert _complete_per_transition(study) == Counter(t.key for t in graph.transitions)
    superseded = _superseded(study)
    assert len(superseded) == len(graph.transitions)
    assert all(t.state == TrialState.FAIL for t in superseded)


@pytest.mark.parametrize("how", ["optimize", "ask"])
def test_optuna_own_loop_is_refused_without_losing_the_transition(how: str) -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    study = op.create_planning_study(graph, pruner=op.KneePointPruner(delay=5, max_epochs=60))
    op.run_worker(study, SimulatedObjective(seed=0), max_transitions=1, **FAST)
    with pytest.raises(RuntimeError, match="run_worker"):
        if how == "optimize":
            study.optimize(SimulatedObjective(seed=0), n_trials=1)
        else:
            study.ask()
    # The popped waiting trial was retired; its transition gets a fresh one and runs once.
    op.run_worker(study, SimulatedObjective(seed=0), **FAST)
    assert _complete_per_transition(study) == Counter(t.key for t in graph.transitions)
    popped = [
        t
        for t in study.get_trials(deepcopy=False)
        if "study.ask()" in (t.system_attrs.get(KEY_OUTCOME) or {}).get("reason", "")
    ]
    assert len(popped) == 1 and popped[0].state == TrialState.FAIL


def test_a_worker_with_another_graph_is_refused(tmp_path: Any) -> None:
    storage = op.create_storage(f"sqlite:///{tmp_path / 'plan.db'}")
    study = _study(op.TransitionGraph.basic(**SMALL), storage=storage)
    op.run_worker(study, SimulatedObjective(seed=0), max_transitions=1, **FAST)
    other = optuna.load_study(
        study_name=study.study_name,
        storage=storage,
        sampler=op.PlanningSampler(op.TransitionGraph.extended(**SMALL)),
        pruner=op.KneePointPruner(delay=5),
    )
    before = len(other.trials)
    with pytest.raises(op.ConfigMismatchError, match="graph transitions|graph rule"):
        op.run_worker(other, SimulatedObjective(seed=0), **FAST)
    assert len(other.trials) == before


def test_a_late_duplicate_is_retired_when_the_plan_completes() -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    study = _study(graph)
    op.run_worker(study, SimulatedObjective(seed=0), **FAST)
    # Two workers enqueued the same retry; the other copy ran and completed the transition.
    late = graph.transitions[3].key
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING, system_attrs={KEY_TRANSITION: late, "opplan:attempt": 2}
        )
    )
    assert op.run_worker(study, SimulatedObjective(seed=0), **FAST) == 0
    assert study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) == []
    (retired,) = _superseded(study)
    assert retired.system_attrs[KEY_TRANSITION] == late
    assert late in retired.system_attrs[KEY_OUTCOME]["reason"]
