from __future__ import annotations

from collections import Counter
from pathlib import Path
import threading

import optuna
from optuna.trial import TrialState
import pytest

import optuna_opplan as op
from optuna_opplan._protocol import KEY_CONFIG
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan.simulation import SimulatedObjective

SMALL = {"clip_lengths": (8, 16), "learning_rates": (0.1, 0.01), "samplings": ("uniform",)}


def _graph() -> op.TransitionGraph:
    return op.TransitionGraph.basic(**SMALL)


def test_processes_racing_to_set_up_a_study_enqueue_only_what_is_ready(tmp_path: Path) -> None:
    graph = _graph()
    storage = op.create_storage(str(tmp_path / "plan.log"))
    # Workers racing to create the same study: one creates it, the others load it.
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def setup() -> None:
        try:
            barrier.wait()
            op.create_planning_study(graph, storage=storage, study_name="plan")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=setup) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    study = op.load_planning_study(study_name="plan", storage=storage)
    waiting = {
        t.system_attrs[KEY_TRANSITION]
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    }
    # The transitions out of the initial model (duplicates of the race are retired later).
    assert waiting == {t.key for t in graph.transitions if t.source is None}
    op.run_worker(study, SimulatedObjective(seed=0), poll_interval=0.01)
    complete = Counter(
        t.system_attrs[KEY_TRANSITION]
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    )
    assert complete == Counter(t.key for t in graph.transitions)


def test_loading_needs_the_same_configuration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    op.create_planning_study(_graph(), storage=url, study_name="plan")
    with pytest.raises(op.ConfigMismatchError, match="max_retries: study has 3, this worker 1"):
        op.create_planning_study(_graph(), storage=url, study_name="plan", max_retries=1)
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):
        op.create_planning_study(_graph(), storage=url, study_name="plan", load_if_exists=False)
    ready = [t for t in _graph().transitions if t.source is None]
    assert len(optuna.load_study(study_name="plan", storage=url).trials) == len(ready), (
        "a refused setup adds nothing"
    )


def test_a_study_stored_before_the_death_budget_existed_still_loads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    study = op.create_planning_study(_graph(), storage=url, study_name="plan")
    # What an earlier version stored: no max_deaths, no death_backoff.
    config = study._storage.get_study_system_attrs(study._study_id)[KEY_CONFIG]
    old = {k: v for k, v in config.items() if k not in ("max_deaths", "death_backoff")}
    study._storage.set_study_system_attr(study._study_id, KEY_CONFIG, old)
    loaded = op.load_planning_study(study_name="plan", storage=url)
    sampler = loaded.sampler
    assert isinstance(sampler, op.PlanningSampler)
    assert (sampler.max_deaths, sampler.death_backoff) == (20, 30.0), "the defaults"
    # Workers with the defaults join it; one with another budget is refused.
    assert op.run_worker(loaded, SimulatedObjective(seed=0), max_transitions=1) == 1
    op.create_planning_study(_graph(), storage=url, study_name="plan")
    with pytest.raises(op.ConfigMismatchError, match="max_deaths: study has 20, this worker 5"):
        op.create_planning_study(_graph(), storage=url, study_name="plan", max_deaths=5)
    stored = study._storage.get_study_system_attrs(study._study_id)[KEY_CONFIG]
    assert stored == old, "the stored config is left as it was"


def test_a_study_of_the_other_direction_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    optuna.create_study(storage=url, study_name="loss", direction="minimize")
    with pytest.raises(ValueError, match="'loss' .* was created to minimize, not to maximize"):
        op.create_planning_study(_graph(), storage=url, study_name="loss")
    study = op.create_planning_study(
        _graph(), storage=url, study_name="loss", direction="minimize"
    )
    assert study.direction == optuna.study.StudyDirection.MINIMIZE


def test_a_missing_study_is_named_with_the_studies_that_exist(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    op.create_planning_study(_graph(), storage=url, study_name="ucf")
    with pytest.raises(KeyError) as info:
        op.load_planning_study(study_name="ucff", storage=url)
    assert str(info.value) == (
        f"There is no study 'ucff' in sqlite:///{tmp_path / 'plan.db'}; it holds 'ucf'."
    )


def test_a_study_made_by_optuna_create_study_is_set_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    optuna.create_study(storage=url, study_name="plan", direction="maximize")
    study = op.create_planning_study(_graph(), storage=url, study_name="plan")
    assert len(study.trials) == len([t for t in _graph().transitions if t.source is None])
    loaded = op.load_planning_study(study_name="plan", storage=url)
    assert loaded.sampler.graph.fingerprint() == _graph().fingerprint()  # type: ignore[attr-defined]


def test_load_planning_study_needs_a_planning_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    optuna.create_study(storage=url, study_name="plain", direction="maximize")
    with pytest.raises(ValueError, match="'plain' in .* is not a planning study"):
        op.load_planning_study(study_name="plain", storage=url)
    with pytest.raises(KeyError):
        op.load_planning_study(study_name="missing", storage=url)


def _chain() -> op.TransitionGraph:
    return op.TransitionGraph.basic(
        clip_lengths=(8,), learning_rates=(0.1, 0.01, 0.001), samplings=("uniform",)
    )


def test_an_unreachable_goal_names_the_transition_that_failed_and_its_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    graph = _chain()
    first = graph.transitions[0].key
    study = op.create_planning_study(graph, max_retries=1)

    def objective(trial: optuna.Trial) -> None:
        if op.current_transition(trial).transition.key == first:
            raise RuntimeError("boom")
        SimulatedObjective(seed=0)(trial)

    assert op.run_worker(study, objective, poll_interval=0.01) == 0, "nothing trained"
    with pytest.raises(op.GoalUnreachableError) as info:
        op.get_plan(study)
    message = str(info.value)
    assert f"Failed transitions (1): {first}: gave up after 2 failed attempts; last: " in message
    assert "RuntimeError: boom" in message
    # The goal's own transition never ran: it is a consequence, not named as a failure.
    assert graph.transitions[-1].key not in message
    assert "2 transitions out of states left unreachable were not trained" in message
    # The retry messages say when they give up.
    retried = [r.getMessage() for r in caplog.records if "RuntimeError('boom')" in r.getMessage()]
    assert retried[0].endswith("it will be retried (attempt 1 of 2).")
    assert retried[1].endswith("attempt 2 of 2: no retry left, the transition is a failed edge.")


def test_the_plan_names_the_failed_edges_it_routed_around() -> None:
    graph = op.TransitionGraph.extended(
        clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("uniform",)
    )
    broken = graph.predecessors(graph.goal_states[0])[0].key
    study = op.create_planning_study(graph, max_retries=0)

    def objective(trial: optuna.Trial) -> None:
        if op.current_transition(trial).transition.key == broken:
            raise op.TransitionFailed("loss became NaN at epoch 3")
        SimulatedObjective(seed=0)(trial)

    assert op.run_worker(study, objective, poll_interval=0.01) == len(graph.transitions) - 1
    plan = op.get_plan(study)
    assert plan.failed == ((broken, "TransitionFailed: loss became NaN at epoch 3"),)
    assert broken not in [t.key for t in plan.transitions]
    assert f"routed around 1 failed transitions:\n  {broken}: TransitionFailed" in str(plan)
    assert plan.to_dict()["routed_around"] == [
        {"transition": broken, "error": "TransitionFailed: loss became NaN at epoch 3"}
    ]


def test_a_partial_plan_names_what_is_not_finished() -> None:
    graph = _chain()
    study = op.create_planning_study(graph)
    op.run_worker(study, SimulatedObjective(seed=0), max_transitions=1, poll_interval=0.01)
    with pytest.raises(op.PlanIncompleteError, match=r"get_plan\(study, partial=True\)"):
        op.get_plan(study)
    with pytest.raises(op.GoalUnreachableError) as info:
        op.get_plan(study, partial=True)
    message = str(info.value)
    assert "is reachable yet through the transitions finished so far" in message
    assert "not finished" in message and "Failed transitions" not in message
