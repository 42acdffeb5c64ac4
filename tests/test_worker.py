from __future__ import annotations

from collections import Counter
from collections.abc import Callable
import math
import threading
import time
from types import SimpleNamespace

import optuna
from optuna.exceptions import StorageInternalError
from optuna.trial import TrialState
import pytest

import optuna_opplan as op
from optuna_opplan import _heartbeat as heartbeat_module
from optuna_opplan import _storage as storage_module
from optuna_opplan import _worker as worker_module
from optuna_opplan._protocol import KEY_OUTCOME
from optuna_opplan._protocol import KEY_RESULT
from optuna_opplan._protocol import KEY_RETRY_DELAY
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._queue import TransitionQueue
from optuna_opplan._run import Step
from optuna_opplan._study import check_config
from optuna_opplan.simulation import SimulatedObjective

SMALL = {"clip_lengths": (8, 16), "learning_rates": (0.1, 0.01), "samplings": ("uniform",)}


def _study(graph: op.TransitionGraph, storage=None, **sampler_kwargs) -> optuna.Study:
    return optuna.create_study(
        storage=storage,
        direction="maximize",
        sampler=op.PlanningSampler(graph, **sampler_kwargs),
        pruner=op.KneePointPruner(delay=5, max_epochs=60),
    )


def _complete_per_transition(study: optuna.Study) -> Counter:
    return Counter(
        t.system_attrs[KEY_TRANSITION] for t in study.get_trials(states=(TrialState.COMPLETE,))
    )


def _enqueue_all(study: optuna.Study, graph: op.TransitionGraph) -> None:
    for transition in graph.transitions:
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                system_attrs={KEY_TRANSITION: transition.key, "opplan:attempt": 1},
            )
        )


def _engine_worker(study: optuna.Study, *, grace: float) -> worker_module._Worker:
    """The engine's worker object, driven step by step by a test (heartbeat 0.1 s)."""
    sampler, pruner = study.sampler, study.pruner
    assert isinstance(sampler, op.PlanningSampler) and isinstance(pruner, op.KneePointPruner)
    return worker_module._Worker(
        study, SimulatedObjective(seed=0), sampler, pruner, 0.1, grace, (Exception,)
    )


def _fast(**kwargs) -> dict:
    return {"heartbeat_interval": 0.05, "grace_period": 0.5, "poll_interval": 0.01, **kwargs}


@pytest.mark.parametrize("preset", ["basic", "extended"])
def test_single_worker_runs_every_transition_once(preset: str) -> None:
    graph = getattr(op.TransitionGraph, preset)()
    study = _study(graph)
    assert op.run_worker(study, SimulatedObjective(seed=3), **_fast()) == len(graph.transitions)
    assert _complete_per_transition(study) == Counter(t.key for t in graph.transitions)
    trials = study.get_trials()
    assert len(trials) == len(graph.transitions)
    first = trials[0]
    assert first.params["source"] == "initial"
    assert first.params["target"] == graph.transitions[0].target.key
    assert first.params["lr"] == graph.transitions[0].target["lr"]
    # The trial's value is the DP's edge score, and the plan is the DP over the results.
    result = op.TransitionResult.from_dict(first.system_attrs[KEY_RESULT])
    assert first.value == result.score
    progress = op.get_progress(study)
    assert op.get_plan(study) == op.compute_plan(graph, progress.results)


def test_transitions_start_from_their_source_state_winner() -> None:
    graph = op.TransitionGraph.extended(**SMALL)
    starts: dict[str, tuple[int | None, float]] = {}

    def objective(trial: optuna.Trial) -> None:
        step = op.current_transition(trial)
        starts[step.transition.key] = (step.source_trial, step.source_score)
        SimulatedObjective(seed=1)(trial)

    study = _study(graph)
    op.run_worker(study, objective, **_fast())
    progress = op.get_progress(study)
    for t in graph.transitions:
        if t.source is None:
            assert starts[t.key] == (None, 0.0)
            continue
        winner = progress.winners[t.source]
        assert winner is not None
        assert starts[t.key] == (winner.result.trial, winner.result.observed)


def _flaky(fail: Callable[[op.TransitionStep], BaseException | None]):
    objective = SimulatedObjective(seed=5)

    def run(trial: optuna.Trial) -> None:
        error = fail(op.current_transition(trial))
        if error is not None:
            trial.report(0.1, 1)
            raise error
        objective(trial)

    return run


def test_a_failing_transition_is_retried_and_the_plan_is_unchanged() -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    reference = _study(graph)
    op.run_worker(reference, SimulatedObjective(seed=5), **_fast())
    victim = graph.transitions[1].key

    study = _study(graph)
    op.run_worker(
        study,
        _flaky(
            lambda s: (
                OSError("disk full") if s.transition.key == victim and s.attempt == 1 else None
            )
        ),
        **_fast(),
    )
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [t.system_attrs[KEY_TRANSITION] for t in failed] == [victim]
    assert failed[0].system_attrs[KEY_OUTCOME] == {
        "status": "error",
        "reason": "OSError: disk full",
    }
    assert _complete_per_transition(study)[victim] == 1
    plan, expected = op.get_plan(study), op.get_plan(reference)
    assert (plan.transitions, plan.epochs, plan.score) == (
        expected.transitions,
        expected.epochs,
        expected.score,
    )


def test_retries_are_bounded_and_the_plan_routes_around_a_failed_edge() -> None:
    graph = op.TransitionGraph.extended(**SMALL)
    goal = graph.goal_states[0]
    doomed = graph.predecessors(goal)[0].key
    study = _study(graph, max_retries=2)
    op.run_worker(
        study,
        _flaky(lambda s: RuntimeError("boom") if s.transition.key == doomed else None),
        **_fast(),
    )
    attempts = [t for t in study.trials if t.system_attrs[KEY_TRANSITION] == doomed]
    assert len(attempts) == 3 and all(t.state == TrialState.FAIL for t in attempts)
    status = op.get_progress(study).statuses[doomed]
    assert status.status == "failed" and "gave up after 3 failed attempts" in status.reason
    plan = op.get_plan(study)
    assert doomed not in [t.key for t in plan.transitions]
    assert plan.goal == goal


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (op.TransitionFailed("loss is NaN"), "TransitionFailed: loss is NaN"),
        (None, "non-finite validation score at epoch 2"),
    ],
)
def test_permanent_failures_are_not_retried(error, reason) -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    goal_edge = graph.predecessors(graph.goal_states[0])[0].key

    def objective(trial: optuna.Trial) -> None:
        step = op.current_transition(trial)
        if step.transition.key == goal_edge:
            if error is not None:
                raise error
            trial.report(0.3, 1)
            trial.report(math.nan, 2)
            assert trial.should_prune()
            return
        SimulatedObjective(seed=0)(trial)

    study = _study(graph)
    op.run_worker(study, objective, **_fast())
    attempts = [t for t in study.trials if t.system_attrs[KEY_TRANSITION] == goal_edge]
    assert len(attempts) == 1
    assert attempts[0].system_attrs[KEY_OUTCOME] == {"status": "failed", "reason": reason}
    assert op.get_progress(study).is_complete
    other = [t for t in graph.predecessors(graph.goal_states[0]) if t.key != goal_edge]
    if other:
        assert op.get_plan(study).transitions[-1] in other
    else:
        with pytest.raises(op.GoalUnreachableError):
            op.get_plan(study)


def test_an_abandoned_trial_is_failed_and_retried() -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    study = _study(graph)
    sampler: op.PlanningSampler = study.sampler  # type: ignore[assignment]
    check_config(study, sampler, study.pruner)  # type: ignore[arg-type]
    queue = TransitionQueue(study, sampler)
    queue.reconcile(queue.progress())
    progress = queue.progress()
    first = progress.with_status("ready")[0]
    # A worker claims the transition and dies before its first heartbeat.
    claimed = queue.claim(first)
    assert claimed is not None
    op.run_worker(study, SimulatedObjective(seed=2), **_fast())
    stale = study._storage.get_trial(claimed)
    assert stale.state == TrialState.FAIL
    assert "opplan:stale" in stale.system_attrs
    assert _complete_per_transition(study) == Counter(t.key for t in graph.transitions)


def test_a_worker_whose_trial_was_failed_stops_and_discards_it() -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    victim = graph.transitions[0].key
    reported: list[int] = []

    def objective(trial: optuna.Trial) -> None:
        step = op.current_transition(trial)
        if step.transition.key == victim and step.attempt == 1:
            # Another worker judged this one dead and failed its trial.
            trial.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            for epoch in range(1, 1000):
                time.sleep(0.02)
                reported.append(epoch)
                if trial.should_prune():
                    return
        SimulatedObjective(seed=2)(trial)

    study = _study(graph)
    op.run_worker(study, objective, **_fast())
    assert len(reported) < 100, "the zombie stopped soon after its heartbeat was refused"
    assert _complete_per_transition(study)[victim] == 1


def test_plan_before_completion() -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    study = _study(graph)
    op.run_worker(study, SimulatedObjective(seed=0), max_transitions=2, **_fast())
    with pytest.raises(op.PlanIncompleteError, match="unfinished transitions"):
        op.get_plan(study)
    with pytest.raises(op.GoalUnreachableError):
        op.get_plan(study, partial=True)
    counts = op.get_progress(study).counts()
    assert counts["done"] == 2 and sum(counts.values()) == len(graph.transitions)


@pytest.mark.parametrize(
    ("sampler", "pruner", "message"),
    [
        (optuna.samplers.RandomSampler(), op.KneePointPruner(), "PlanningSampler"),
        (None, optuna.pruners.MedianPruner(), "KneePointPruner"),
    ],
)
def test_run_worker_needs_the_planning_sampler_and_pruner(sampler, pruner, message) -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    study = optuna.create_study(
        sampler=sampler or op.PlanningSampler(graph), pruner=pruner, direction="maximize"
    )
    with pytest.raises(ValueError, match=message):
        op.run_worker(study, SimulatedObjective())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heartbeat_interval": 0}, "`heartbeat_interval` must be a positive number"),
        ({"heartbeat_interval": 1.0, "grace_period": 0.5}, "`grace_period` must be longer"),
        ({"poll_interval": -1}, "`poll_interval` must be a positive number"),
    ],
)
def test_run_worker_validates_arguments(kwargs, message) -> None:
    study = _study(op.TransitionGraph.basic(**SMALL))
    with pytest.raises(ValueError, match=message):
        op.run_worker(study, SimulatedObjective(), **kwargs)


def test_current_transition_outside_planning() -> None:
    study = optuna.create_study()
    with pytest.raises(RuntimeError, match="not a planning transition"):
        op.current_transition(study.ask())


def test_step_tells_which_epochs_to_keep() -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    seen: list[tuple[int, range]] = []

    def objective(trial: optuna.Trial) -> None:
        step = op.current_transition(trial)
        for epoch in range(1, 100):
            trial.report(0.8 - 0.8 * 0.6**epoch - 0.002 * epoch**2, epoch)
            if trial.should_prune():
                break
        seen.append((step.keep_epoch, step.retained_epochs(epoch)))
        assert step.keep_epoch == step.knee["keep_epoch"]

    op.run_worker(_study(graph), objective, **_fast())
    for keep, retained in seen:
        assert keep in retained
        assert len(retained) == 6  # delay + 1 checkpoints at most


@pytest.mark.parametrize("enqueued", [False, True], ids=["as ready", "all up front"])
def test_failures_that_cut_off_states_still_let_planning_finish(enqueued: bool) -> None:
    graph = op.TransitionGraph.basic(samplings=("uniform",))
    # A transition that is the only way into its target: failing it cuts the target off.
    doomed = next(
        t
        for t in graph.transitions
        if t.source is not None and len(graph.predecessors(t.target)) == 1
    ).key

    def objective(trial: optuna.Trial) -> None:
        if op.current_transition(trial).transition.key == doomed:
            raise op.TransitionFailed("diverged")
        SimulatedObjective(seed=0)(trial)

    study = _study(graph)
    if enqueued:
        # A study whose every transition waits from the start (as by an earlier version, or
        # enqueued by hand): waiting trials that can never run must not hold planning up.
        _enqueue_all(study, graph)
    op.run_worker(study, objective, **_fast(), timeout=120)
    progress = op.get_progress(study)
    assert progress.is_complete
    skipped = [s for s in progress.statuses.values() if "unreachable" in s.reason]
    assert skipped, "transitions out of a state nothing reaches are skipped, not waited for"
    for status in skipped:
        if enqueued:
            # Their waiting trials are retired with the reason.
            (trial,) = status.trials
            assert trial.state == TrialState.FAIL
            assert trial.system_attrs[KEY_OUTCOME]["status"] == "skipped"
        else:
            assert status.trials == [], "workers never enqueue a transition that cannot run"
    assert op.get_plan(study).goal == graph.goal_states[0]


def test_a_fit_that_never_succeeds_is_capped_and_fails_the_edge(monkeypatch) -> None:
    from optuna_opplan import _knee

    def never(values, *, curve="exponential", loss="linear"):  # type: ignore[no-untyped-def]
        nan = math.nan
        return op.KneeFit(0, nan, nan, (), nan, nan, curve, ok=False, message="simulated failure")

    monkeypatch.setattr(_knee, "fit_knee", never)
    graph = op.TransitionGraph.basic(
        clip_lengths=(8,), learning_rates=(0.1,), samplings=("uniform",)
    )
    study = _study(graph)
    # The paper rule fits after every epoch, so a failing fit meets it at every decision.
    study.pruner = op.KneePointPruner(delay=5, max_epochs=60, rule="paper")
    op.run_worker(study, SimulatedObjective(seed=0), **_fast())
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert len(trial.intermediate_values) == 60, "stopped by the cap, not by a failed fit"
    outcome = trial.system_attrs[KEY_OUTCOME]
    assert (
        outcome["status"] == "failed"
        and "no usable curve fit after 60 epochs" in outcome["reason"]
    )
    with pytest.raises(op.GoalUnreachableError):
        op.get_plan(study)


class FlakyStorage(optuna.storages.InMemoryStorage):
    """An in-memory storage that fails every call, as a restarting database server does,
    while an outage lasts."""

    def __init__(self) -> None:
        super().__init__()
        self.down_until = 0.0
        self.failed_calls = 0

    def go_down(self, seconds: float) -> None:
        self.down_until = time.monotonic() + seconds

    def _check(self) -> None:
        if time.monotonic() < self.down_until:
            self.failed_calls += 1
            raise StorageInternalError("An exception is raised during the commit.")


def _failing_while_down(name: str) -> Callable[..., object]:
    method = getattr(optuna.storages.InMemoryStorage, name)

    def call(self: FlakyStorage, *args: object, **kwargs: object) -> object:
        self._check()
        return method(self, *args, **kwargs)

    return call


for _name in (
    "get_all_trials",
    "get_trial",
    "get_trial_system_attrs",
    "set_trial_system_attr",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_param",
):
    setattr(FlakyStorage, _name, _failing_while_down(_name))


def _outage_run(
    storage: optuna.storages.BaseStorage, victim: str, fail: bool, outage: float
) -> tuple[optuna.Study, Counter, int]:
    """Run a worker whose storage goes down as ``victim``'s objective returns."""
    calls: Counter = Counter()

    def objective(trial: optuna.Trial) -> None:
        step = op.current_transition(trial)
        calls[step.transition.key] += 1
        SimulatedObjective(seed=2)(trial)
        if step.transition.key == victim and isinstance(storage, FlakyStorage):
            storage.go_down(outage)
        if step.transition.key == victim and fail:
            raise op.TransitionFailed("loss became NaN at epoch 7")

    study = _study(op.TransitionGraph.basic(**SMALL), storage=storage)
    done = op.run_worker(study, objective, **_fast(grace_period=0.3))
    return study, calls, done


@pytest.mark.parametrize("fail", [False, True], ids=["trained", "failed"])
def test_an_outcome_held_back_by_a_storage_outage_is_recorded_afterwards(
    fail: bool, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(storage_module, "STORAGE_BACKOFF", 0.05)
    graph = op.TransitionGraph.basic(**SMALL)
    victim = graph.transitions[1].key
    storage = FlakyStorage()
    # The outage outlasts the grace period: without the kept heartbeat and the restarted
    # staleness clocks the trial would be failed as abandoned and trained again.
    study, calls, done = _outage_run(storage, victim, fail, outage=0.6)
    assert storage.failed_calls > 0, "the outage must have hit the worker"
    # The held-back transition counts as trained; a failed one does not.
    assert done == sum(calls.values()) - fail
    trials = study.get_trials(deepcopy=False)
    assert calls[victim] == 1, "the transition is not trained again"
    (trial,) = [t for t in trials if t.system_attrs[KEY_TRANSITION] == victim]
    assert "opplan:stale" not in trial.system_attrs
    if fail:
        # The real reason, not "stopped sending heartbeats".
        assert trial.state == TrialState.FAIL
        assert trial.system_attrs[KEY_OUTCOME] == {
            "status": "failed",
            "reason": "TransitionFailed: loss became NaN at epoch 7",
        }
    else:
        assert [t.state for t in trials] == [TrialState.COMPLETE] * len(graph.transitions)
        reference, _, _ = _outage_run(optuna.storages.InMemoryStorage(), victim, fail, 0.0)
        assert op.get_plan(study) == op.get_plan(reference)
    err = capfd.readouterr().err
    assert f"The outcome of trial id {trial._trial_id} ({victim}) could not be recorded" in err
    assert "is recorded after all" in err


def test_a_worker_giving_up_on_the_storage_names_the_outcome_it_could_not_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage_module, "STORAGE_RETRIES", 2)
    monkeypatch.setattr(storage_module, "STORAGE_BACKOFF", 0.01)
    graph = op.TransitionGraph.basic(**SMALL)
    victim = graph.transitions[0].key
    with pytest.raises(op.StorageUnavailableError) as info:
        _outage_run(FlakyStorage(), victim, False, outage=3600.0)
    assert f"The outcome of trial id 0 ({victim}) could not be recorded" in str(info.value)
    assert not [t for t in threading.enumerate() if t.name.startswith("opplan-heartbeat")], (
        "the exiting worker stops the heartbeat of the outcome it gives up on"
    )


def test_staleness_is_judged_only_while_the_observer_can_read_the_storage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    study = _study(graph)
    sampler: op.PlanningSampler = study.sampler  # type: ignore[assignment]
    queue = TransitionQueue(study, sampler)
    queue.reconcile(queue.progress())
    progress = queue.progress()
    claimed = queue.claim(progress.with_status("ready")[0])
    assert claimed is not None
    now = [0.0]
    monkeypatch.setattr(heartbeat_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    observer = _engine_worker(study, grace=1.0)

    def look_at(t: float) -> bool:
        now[0] = t
        return observer.fail_stale(sampler.progress(study))

    assert not look_at(0.0)
    observer.storage_failed()  # an outage: the claimed trial's beats could not be seen
    assert not look_at(2.0), "silent for 2 s, but the observer was blind for most of them"
    assert not look_at(2.9)
    assert look_at(3.1), "silent for a whole grace period the observer could watch"
    assert study._storage.get_trial(claimed).state == TrialState.FAIL


def test_the_worker_that_made_a_transition_ready_enqueues_it_others_after_a_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    study = _study(graph)
    sampler: op.PlanningSampler = study.sampler  # type: ignore[assignment]
    now = [0.0]
    monkeypatch.setattr(worker_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    worker = _engine_worker(study, grace=4.0)
    starts = [t.key for t in graph.transitions if t.source is None]
    # A starting worker takes the transitions out of the initial model.
    assert worker.to_enqueue(sampler.progress(study)) == starts
    # Another worker finished the first start transition: what it made ready is its to
    # enqueue; this one waits `defer` (half the grace period) before taking over.
    first = graph.transitions[0]
    queue = TransitionQueue(study, sampler)
    queue.reconcile(queue.progress())
    progress = queue.progress()
    claimed = queue.claim(progress.statuses[first.key])
    assert claimed is not None
    study._storage.set_trial_system_attr(
        claimed,
        "opplan:result",
        op.TransitionResult(score=0.5, observed=0.5, epochs=1, trial=0).to_dict(),
    )
    study._storage.set_trial_state_values(claimed, TrialState.COMPLETE, [0.5])
    made_ready = sorted(t.key for t in graph.successors(first.target))
    assert worker.to_enqueue(sampler.progress(study)) == []
    now[0] = 1.9
    assert worker.to_enqueue(sampler.progress(study)) == []
    now[0] = 2.0
    assert sorted(worker.to_enqueue(sampler.progress(study))) == made_ready
    # The worker that finished it enqueues at once.
    finisher = _engine_worker(study, grace=4.0)
    finisher.to_enqueue(sampler.progress(study))  # its start-up duty, spent
    finisher.finished(first.key)
    assert sorted(finisher.to_enqueue(sampler.progress(study))) == made_ready


def test_a_duplicate_left_running_by_a_dead_retirer_is_failed_before_workers_leave(
    capfd: pytest.CaptureFixture[str],
) -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    study = _study(graph)
    op.run_worker(study, SimulatedObjective(seed=0), **_fast())
    # A worker retiring a duplicate died between its claim (WAITING -> RUNNING) and FAIL.
    key = graph.transitions[2].key
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING, system_attrs={KEY_TRANSITION: key, "opplan:attempt": 2}
        )
    )
    orphan = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[0]
    assert study._storage.set_trial_state_values(orphan._trial_id, TrialState.RUNNING)
    started = time.monotonic()
    assert op.run_worker(study, SimulatedObjective(seed=0), **_fast()) == 0
    assert time.monotonic() - started >= 0.5, "judged only after a whole grace period"
    left = study._storage.get_trial(orphan._trial_id)
    assert left.state == TrialState.FAIL and "opplan:stale" in left.system_attrs
    assert "it was a duplicate left RUNNING, not the transition's run" in capfd.readouterr().err
    assert study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING)) == []
    assert _complete_per_transition(study) == Counter(t.key for t in graph.transitions)


def test_a_retry_after_a_death_waits_its_backoff_on_each_workers_own_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    study = _study(graph, death_backoff=2.0)
    sampler: op.PlanningSampler = study.sampler  # type: ignore[assignment]
    check_config(study, sampler, study.pruner)  # type: ignore[arg-type]
    now = [0.0]
    clock = SimpleNamespace(monotonic=lambda: now[0])
    monkeypatch.setattr(heartbeat_module, "time", clock)
    monkeypatch.setattr(worker_module, "time", clock)
    queue = TransitionQueue(study, sampler)
    queue.reconcile(queue.progress())
    # Both transitions out of the initial model are claimed by workers that die at once.
    progress = queue.progress()
    starts = progress.with_status("ready")
    assert len(starts) == 2
    for status in starts:
        trial_id = queue.claim(status)
        assert trial_id is not None
        study._storage.set_trial_system_attr(trial_id, "opplan:worker", "gpu7:4242:a1b2c3")
    observer = _engine_worker(study, grace=1.0)
    observer.to_enqueue(queue.progress())  # its start-up duty, spent

    def scan(t: float) -> op.Progress:
        now[0] = t
        return queue.progress()

    assert not observer.fail_stale(scan(0.0))
    assert observer.fail_stale(scan(1.0)), "silent for a grace period: dead"
    dead = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert [t.system_attrs[KEY_OUTCOME]["status"] for t in dead] == ["died", "died"]
    assert (
        dead[0]
        .system_attrs[KEY_OUTCOME]["reason"]
        .startswith("its worker gpu7:4242:a1b2c3 stopped sending heartbeats")
    )
    # The worker that judged them enqueues their retries, each carrying its backoff.
    progress = scan(1.1)
    assert observer.queue.reconcile(progress, only=observer.to_enqueue(progress))
    retries = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [
        (t.system_attrs["opplan:attempt"], t.system_attrs[KEY_RETRY_DELAY]) for t in retries
    ] == [
        (2, 2.0),
        (2, 2.0),
    ]
    # Nothing else is ready, and the retries wait 2 s from when this worker first saw them.
    assert observer.try_one(scan(1.2)) == Step.IDLE
    assert observer.try_one(scan(3.1)) == Step.IDLE
    # A worker started meanwhile counts from its own first look.
    late = _engine_worker(study, grace=1.0)
    keys = {s.transition.key for s in starts}
    assert late.backing_off(scan(2.5)) == keys
    assert observer.try_one(scan(3.3)) == Step.RAN
    assert len(late.backing_off(scan(4.4))) == 1, "the other retry still waits for it"
    assert late.backing_off(scan(4.6)) == set()
    status = queue.progress().statuses[starts[0].transition.key]
    assert (status.status, status.deaths, status.failures) == ("done", 1, 0)


@pytest.mark.parametrize(
    ("outcomes", "delay"),
    [
        ([], 0.0),
        (["died"], 0.5),
        (["died", "died"], 1.0),
        (["died"] * 3, 2.0),
        (["died"] * 4, 4.0),
        (["died"] * 9, 4.0),  # capped at 8x
        (["died", "error"], 0.0),  # the last attempt raised: retried at once
        (["error", "died"], 0.5),
    ],
)
def test_the_backoff_doubles_with_each_death_up_to_eight_times(
    outcomes: list[str], delay: float
) -> None:
    graph = op.TransitionGraph.basic(**SMALL)
    sampler = op.PlanningSampler(graph, death_backoff=0.5)
    key = graph.transitions[0].key
    trials = [
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            system_attrs={
                KEY_TRANSITION: key,
                "opplan:worker": "w",
                KEY_OUTCOME: {"status": kind, "reason": kind},
            },
        )
        for kind in outcomes
    ]
    for number, trial in enumerate(trials):
        trial.number = number
    status = op.Progress(graph, trials).statuses[key]
    assert sampler.retry_delay(status) == delay


def test_only_the_worker_that_finished_the_study_publishes_its_views(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[str] = []
    monkeypatch.setattr(
        worker_module,
        "publish_views",
        lambda study: published.append(threading.current_thread().name),
    )
    url = f"sqlite:///{tmp_path / 'p.db'}"
    graph = op.TransitionGraph.extended(
        clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("uniform",)
    )
    pruner = op.KneePointPruner(delay=3, max_epochs=8)
    op.create_planning_study(graph, storage=url, study_name="p", pruner=pruner)
    trained: dict[str, int] = {}

    def work() -> None:
        study = op.load_planning_study(study_name="p", storage=url)
        name = threading.current_thread().name
        trained[name] = op.run_worker(
            study, SimulatedObjective(seed=1, epoch_seconds=0.01, max_epochs=8), poll_interval=0.01
        )

    threads = [threading.Thread(target=work, name=f"w{i}") for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(trained.values()) == len(graph.transitions)
    assert len(published) == 1, published
    assert trained[published[0]] > 0
