from __future__ import annotations

import time
from types import SimpleNamespace

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState
import pytest

from optuna_opplan import _heartbeat
from optuna_opplan._heartbeat import Heartbeat
from optuna_opplan._heartbeat import StalenessWatch
from optuna_opplan._heartbeat import fail_abandoned
from optuna_opplan._protocol import CANCELLED
from optuna_opplan._protocol import KEY_HEARTBEAT
from optuna_opplan._protocol import KEY_STALE


def _running(study: optuna.Study, beat: int | None = None) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    if beat is not None:
        study._storage.set_trial_system_attr(trial._trial_id, KEY_HEARTBEAT, beat)
    return study._storage.get_trial(trial._trial_id)


@pytest.mark.parametrize(
    ("looks", "stale_at"),
    [
        # (time, heartbeat value seen) per scan; grace is 10 s of the observer's clock.
        ([(0, 1), (5, 1), (9.9, 1)], []),
        ([(0, 1), (5, 1), (10, 1)], [10]),
        # A beat that changes restarts the clock, whatever its value.
        ([(0, 1), (8, 2), (17, 2), (18.5, 2)], [18.5]),
        ([(0, 3), (8, 1), (16, 3)], []),
        # A trial that never beat is judged from when it was first seen running.
        ([(100, None), (109, None), (111, None)], [111]),
    ],
)
def test_staleness_on_the_observer_clock(
    looks: list[tuple[float, int | None]], stale_at: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    monkeypatch.setattr(_heartbeat, "time", SimpleNamespace(monotonic=lambda: now[0]))
    study = optuna.create_study()
    trial = study.ask()
    watch = StalenessWatch(grace=10.0)
    seen_stale = []
    for at, beat in looks:
        now[0] = at
        attrs = {} if beat is None else {KEY_HEARTBEAT: beat}
        frozen = study._storage.get_trial(trial._trial_id)
        frozen.system_attrs = attrs  # type: ignore[misc]
        if watch.stale([frozen]):
            seen_stale.append(at)
    assert seen_stale == stale_at


def test_forget_restarts_every_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(_heartbeat, "time", SimpleNamespace(monotonic=lambda: now[0]))
    study = optuna.create_study()
    trial = _running(study, beat=0)
    watch = StalenessWatch(grace=10.0)
    assert watch.stale([trial]) == []
    now[0] = 30.0
    watch.forget()
    assert watch.stale([trial]) == [], "an observer back from an outage looks afresh"
    now[0] = 40.0
    assert [t.number for t, _ in watch.stale([trial])] == [trial.number]


def test_heartbeat_beats_then_stops() -> None:
    study = optuna.create_study()
    trial = study.ask()
    beat = Heartbeat(study._storage, trial._trial_id, interval=0.01)
    beat.start()
    deadline = time.monotonic() + 10
    while study._storage.get_trial_system_attrs(trial._trial_id).get(KEY_HEARTBEAT, 0) < 3:
        assert time.monotonic() < deadline, "the counter must keep growing"
        time.sleep(0.01)
    beat.stop()
    assert not beat.is_alive()
    last = study._storage.get_trial_system_attrs(trial._trial_id)[KEY_HEARTBEAT]
    time.sleep(0.05)
    assert study._storage.get_trial_system_attrs(trial._trial_id)[KEY_HEARTBEAT] == last


def test_a_trial_failed_by_another_worker_is_cancelled() -> None:
    study = optuna.create_study()
    trial = _running(study)
    beat = Heartbeat(study._storage, trial._trial_id, interval=0.01)
    beat.start()
    assert fail_abandoned(study._storage, trial, "observer")
    frozen = study._storage.get_trial(trial._trial_id)
    assert frozen.state == TrialState.FAIL and frozen.system_attrs[KEY_STALE] == "observer"
    # Its own worker's next beat is refused: the trial is marked cancelled and beats end.
    beat.join(timeout=10)
    assert not beat.is_alive()
    assert trial._trial_id in CANCELLED
    CANCELLED.discard(trial._trial_id)
    # A worker that claimed it and had not beaten yet learns at its first beat, in its own
    # thread, and starts no beats.
    late = Heartbeat(study._storage, trial._trial_id, interval=0.01)
    with pytest.raises(UpdateFinishedTrialError):
        late.start()
    assert not late.is_alive() and trial._trial_id not in CANCELLED
    # Failing it twice (two observers) is a no-op for the second.
    assert not fail_abandoned(study._storage, frozen, "another observer")


def test_a_storage_outage_does_not_stop_the_beats() -> None:
    study = optuna.create_study()
    trial = study.ask()
    storage = study._storage
    failures = [3]
    write = storage.set_trial_system_attr

    def flaky(trial_id: int, key: str, value: object) -> None:
        if failures[0] > 0:
            failures[0] -= 1
            raise optuna.exceptions.StorageInternalError("server closed the connection")
        write(trial_id, key, value)

    beat = Heartbeat(storage, trial._trial_id, interval=0.01)
    storage.set_trial_system_attr = flaky  # type: ignore[method-assign]
    with pytest.raises(optuna.exceptions.StorageInternalError):
        beat.start()  # the first beat is the claimer's: it must know
    failures[0] = 3
    beat = Heartbeat(storage, trial._trial_id, interval=0.01)
    storage.set_trial_system_attr = write  # type: ignore[method-assign]
    beat.start()
    storage.set_trial_system_attr = flaky  # type: ignore[method-assign]
    deadline = time.monotonic() + 10
    # Three refused beats later, beats resume; a refused beat's number is never reused, so
    # the first one after the outage is a change observers see.
    while failures[0] or storage.get_trial_system_attrs(trial._trial_id)[KEY_HEARTBEAT] < 4:
        assert time.monotonic() < deadline, "beats resume once the storage is back"
        time.sleep(0.01)
    beat.stop()
