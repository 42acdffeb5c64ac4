from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
import contextlib
from dataclasses import dataclass
import enum
import random
import time

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from optuna_opplan._heartbeat import Heartbeat
from optuna_opplan._heartbeat import StalenessWatch
from optuna_opplan._heartbeat import fail_abandoned
from optuna_opplan._protocol import CANCELLED
from optuna_opplan._protocol import KEY_WORKER
from optuna_opplan._storage import STORAGE_ERRORS
from optuna_opplan._storage import storage_pause

_logger = optuna.logging.get_logger("optuna.opplan")

# Records a trial's outcome; returns whether it counts as work this worker did (a result
# discarded because another worker failed the trial meanwhile does not).
Record = Callable[[], bool]


class Step(enum.Enum):
    """What one scan of a work loop did."""

    RAN = "ran"  # ran a claimed trial to a recorded outcome that counts
    AGAIN = "again"  # changed the study or lost a race: scan again at once
    IDLE = "idle"  # nothing to take now: wait, with backoff
    FINISHED = "finished"  # nothing left to do: leave


@dataclass
class _Pending:
    """A claimed trial whose run ended, and the call that records its outcome."""

    trial_id: int
    label: str
    heartbeat: Heartbeat
    record: Record = lambda: True
    held: bool = False  # an outage already held it back once

    def describe(self) -> str:
        return f"trial id {self.trial_id} ({self.label})"


class TrialRunner:
    """Runs claimed trials under a heartbeat and records their outcomes through storage
    outages; judges other workers' trials by their heartbeats.

    The life of a claimed trial is the same for every kind of worker (planning transitions,
    grid schedules): mark it with this worker's name, beat while it runs, record its outcome,
    stop beating. If the storage fails while the outcome is recorded, the outcome and the
    heartbeat are kept and :meth:`settle` tries again before the next scan: work trained
    through a database restart is recorded once the database is back, not thrown away.

    Args:
        storage: The study's storage.
        name: This worker's name, recorded on the trials it runs and the ones it fails.
        heartbeat_interval: Seconds between beats of a running trial.
        grace: Seconds of silence after which another worker's trial counts as abandoned.
        on_settled: Called with the label of each trial whose outcome got recorded.
        on_released: Called with the id of each trial this worker stops beating for (its
            outcome recorded, or given up as the worker exits).
    """

    def __init__(
        self,
        storage: BaseStorage,
        *,
        name: str,
        heartbeat_interval: float,
        grace: float,
        on_settled: Callable[[str], None] = lambda label: None,
        on_released: Callable[[int], None] = lambda trial_id: None,
    ) -> None:
        self.storage = storage
        self.name = name
        self.heartbeat_interval = heartbeat_interval
        self.on_settled = on_settled
        self.on_released = on_released
        self.watch = StalenessWatch(grace)
        self.pending: _Pending | None = None

    def run(
        self,
        trial_id: int,
        label: str,
        body: Callable[[], Record],
        on_error: Callable[[BaseException], Record],
    ) -> bool:
        """Run ``body`` for a trial this worker claimed, under a heartbeat, and record the
        outcome it returns; return whether it counts.

        If ``body`` raises, ``on_error``'s record is written instead and the exception is
        re-raised. A storage error while recording is re-raised with the outcome kept (see
        :meth:`settle`).
        """
        # The beat first: until it lands, other workers may take the claim for a dead one.
        heartbeat = Heartbeat(self.storage, trial_id, self.heartbeat_interval)
        heartbeat.start()
        try:
            self.storage.set_trial_system_attr(trial_id, KEY_WORKER, self.name)
        except BaseException:
            heartbeat.stop()  # the trial stays RUNNING and silent: it is judged dead, retried
            raise
        pending = _Pending(trial_id, label, heartbeat)
        try:
            pending.record = body()
        except BaseException as exc:
            pending.record = on_error(exc)
            try:
                self.settle(pending)
            except STORAGE_ERRORS:
                if isinstance(exc, STORAGE_ERRORS):
                    raise  # an outage: the loop waits and records the failure afterwards
            raise
        return self.settle(pending)

    def settle(self, pending: _Pending | None = None) -> bool:
        """Record an outcome (by default the one an outage held back), then stop its
        heartbeat; return whether one was recorded that counts."""
        pending = pending or self.pending
        if pending is None:
            return False
        self.pending = None
        try:
            counts = pending.record()
        except STORAGE_ERRORS:
            if not pending.held:
                _logger.warning(
                    f"The outcome of {pending.describe()} could not be recorded (storage "
                    "error): its heartbeat goes on and it is recorded when the storage is back."
                )
            pending.held = True
            self.pending = pending
            raise
        finally:
            if self.pending is not pending:
                self._release(pending)
        if pending.held:
            _logger.info(f"The outcome of {pending.describe()} is recorded after all.")
        self.on_settled(pending.label)
        return counts

    def unrecorded(self) -> str | None:
        """The trial whose outcome waits for the storage, if any."""
        return None if self.pending is None else self.pending.describe()

    def abandon(self) -> None:
        """Stop the heartbeat of an outcome that will never be recorded (the worker exits)."""
        if self.pending is not None:
            self._release(self.pending)
            self.pending = None

    def _release(self, pending: _Pending) -> None:
        pending.heartbeat.stop()
        CANCELLED.discard(pending.trial_id)
        self.on_released(pending.trial_id)

    def fail_stale(self, running: Sequence[FrozenTrial]) -> Iterator[tuple[FrozenTrial, float]]:
        """Fail the trials of ``running`` silent for a whole grace period; yield each one this
        worker failed (not one that finished meanwhile), with how long it was silent."""
        for trial, silent_for in self.watch.stale(running):
            if fail_abandoned(self.storage, trial, self.name, silent_for):
                yield trial, silent_for

    def storage_failed(self) -> None:
        """Restart the staleness clocks: while this worker could not read the storage, the
        others' heartbeats may have been written unseen (or failed like its own reads)."""
        self.watch.forget()


def work_loop(
    runner: TrialRunner,
    scan: Callable[[], Step],
    *,
    poll_interval: float,
    max_poll_interval: float,
    max_runs: int | None = None,
    timeout: float | None = None,
) -> int:
    """Call ``scan`` until it says :attr:`Step.FINISHED` (or ``max_runs`` counted runs, or
    ``timeout`` seconds); return the number of counted runs.

    Between scans an outcome an outage held back is recorded. A storage error makes the
    loop wait and scan again with backoff (see :func:`~optuna_opplan._storage.storage_pause`),
    then raise :class:`~optuna_opplan.StorageUnavailableError`. When nothing is ready the
    wait grows from ``poll_interval`` to ``max_poll_interval``, with jitter so that a fleet
    of idle workers does not poll the storage in lockstep.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    wait = poll_interval
    done = 0
    failures = 0
    try:
        while max_runs is None or done < max_runs:
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                if runner.settle():
                    done += 1
                step = scan()
            except STORAGE_ERRORS as exc:
                failures += 1
                runner.storage_failed()
                storage_pause(runner.storage, exc, failures, runner.unrecorded())
                continue
            failures = 0
            if step is Step.FINISHED:
                break
            if step is Step.RAN:
                done += 1
                wait = poll_interval
            elif step is Step.IDLE:
                time.sleep(wait * random.uniform(0.75, 1.25))
                wait = min(wait * 1.5, max_poll_interval)
    finally:
        if runner.pending is not None:  # leaving on a timeout or an error: one last try
            with contextlib.suppress(*STORAGE_ERRORS):
                runner.settle()
        runner.abandon()
    return done
