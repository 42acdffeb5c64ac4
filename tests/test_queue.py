from __future__ import annotations

from typing import Any

from optuna.trial import TrialState
import pytest

import optuna_opplan as op
from optuna_opplan import _worker as worker_module
from optuna_opplan._protocol import KEY_EPOCH0
from optuna_opplan._protocol import KEY_HEARTBEAT
from optuna_opplan._protocol import KEY_OUTCOME
from optuna_opplan._protocol import KEY_SOURCE_TRIAL
from optuna_opplan._protocol import KEY_WORKER
from optuna_opplan._protocol import OutcomeKind
from optuna_opplan._protocol import Status
from optuna_opplan._queue import TransitionQueue
from optuna_opplan._run import Step

SMALL = {"clip_lengths": (8, 16), "learning_rates": (0.1, 0.01), "samplings": ("uniform",)}


def _queue(storage: Any = None) -> TransitionQueue:
    graph = op.TransitionGraph.basic(**SMALL)
    study = op.create_planning_study(graph, storage=storage, pruner=op.KneePointPruner(delay=3))
    assert isinstance(study.sampler, op.PlanningSampler)
    return TransitionQueue(study, study.sampler)


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_a_claim_another_worker_won_is_not_taken(storage: str, tmp_path: Any) -> None:
    # Two workers scanned the same snapshot and race for the same waiting trial: the storage's
    # WAITING -> RUNNING change succeeds once, and the loser must not take the trial.
    url = None if storage == "memory" else f"sqlite:///{tmp_path / 'plan.db'}"
    mine = _queue(url)
    theirs = TransitionQueue(mine.study, mine.sampler)
    snapshot = mine.progress()
    (status, *_) = snapshot.with_status(Status.READY)
    assert status.waiting is not None
    won = theirs.claim(status)
    assert won == status.waiting._trial_id
    assert mine.claim(status) is None
    assert mine.study._storage.get_trial(won).state == TrialState.RUNNING


def test_a_claim_only_claims_and_record_source_says_where_the_transition_starts() -> None:
    queue = _queue()
    snapshot = queue.progress()
    status = snapshot.with_status(Status.READY)[0]
    trial_id = queue.claim(status)
    assert trial_id is not None
    # Nothing is written between the claim and the worker's first heartbeat.
    assert KEY_SOURCE_TRIAL not in queue.study._storage.get_trial(trial_id).system_attrs
    queue.record_source(trial_id, status, snapshot)
    attrs = queue.study._storage.get_trial(trial_id).system_attrs
    assert attrs[KEY_SOURCE_TRIAL] is None and attrs[KEY_EPOCH0] == 0.0


def test_a_worker_beats_before_it_writes_anything_else_on_a_claimed_trial() -> None:
    # Every write between the claim and the first beat is time an overloaded worker can be
    # judged dead in (a live attempt then dies without ever starting).
    queue = _queue()
    worker = worker_module._Worker(
        queue.study,
        lambda trial: 0.5,
        queue.sampler,
        queue.study.pruner,  # type: ignore[arg-type]
        0.1,
        1.0,
        (Exception,),
    )
    storage = queue.study._storage
    writes: list[tuple[int, str]] = []
    set_attr = storage.set_trial_system_attr

    def spy(trial_id: int, key: str, value: Any) -> None:
        writes.append((trial_id, key))
        set_attr(trial_id, key, value)

    storage.set_trial_system_attr = spy  # type: ignore[method-assign]
    snapshot = queue.progress()
    claimed = snapshot.with_status(Status.READY)[0].waiting
    assert claimed is not None
    assert worker.try_one(snapshot) == Step.RAN
    keys = [key for trial_id, key in writes if trial_id == claimed._trial_id]
    assert keys[0] == KEY_HEARTBEAT, keys
    assert KEY_SOURCE_TRIAL in keys and KEY_WORKER in keys


def test_a_worker_with_a_stale_snapshot_does_not_train_a_claimed_transition() -> None:
    queue = _queue()
    calls: list[int] = []
    worker = worker_module._Worker(
        queue.study,
        lambda trial: calls.append(trial.number),
        queue.sampler,
        queue.study.pruner,  # type: ignore[arg-type]
        0.1,
        1.0,
        (Exception,),
    )
    snapshot = queue.progress()
    for status in snapshot.with_status(Status.READY):
        assert queue.claim(status) is not None  # another worker took them all
    assert worker.try_one(snapshot) == Step.AGAIN
    assert calls == []
    assert worker.runner.pending is None


def test_retire_fails_a_waiting_trial_but_never_a_claimed_one() -> None:
    queue = _queue()
    snapshot = queue.progress()
    first, second = snapshot.with_status(Status.READY)[:2]
    assert first.waiting is not None and second.waiting is not None
    assert queue.retire(first.waiting, OutcomeKind.SUPERSEDED, "a duplicate")
    retired = queue.study._storage.get_trial(first.waiting._trial_id)
    assert retired.state == TrialState.FAIL
    assert retired.system_attrs[KEY_OUTCOME] == {"status": "superseded", "reason": "a duplicate"}
    assert queue.claim(second) is not None
    assert not queue.retire(second.waiting, OutcomeKind.SUPERSEDED, "too late")
    claimed = queue.study._storage.get_trial(second.waiting._trial_id)
    assert claimed.state == TrialState.RUNNING and KEY_OUTCOME not in claimed.system_attrs


def test_reconcile_enqueues_only_ready_transitions_once_asked() -> None:
    queue = _queue()
    graph = queue.sampler.graph
    starts = queue.start_keys()
    assert starts == {t.key for t in graph.transitions if t.source is None}
    snapshot = queue.progress()
    assert {s.transition.key for s in snapshot.with_status(Status.READY)} == starts
    assert not queue.reconcile(snapshot), "nothing pending: nothing enqueued"
    assert len(queue.study.trials) == len(starts)
    with pytest.raises(ValueError, match="no waiting trial"):
        blocked = snapshot.with_status(Status.BLOCKED)[0]
        queue.claim(blocked)


def test_study_ask_cannot_start_a_transition() -> None:
    queue = _queue()
    with pytest.raises(RuntimeError, match="run_worker"):
        queue.study.ask()
    popped = [t for t in queue.study.trials if t.state == TrialState.FAIL]
    assert [t.system_attrs[KEY_OUTCOME]["status"] for t in popped] == ["superseded"]
