from __future__ import annotations

from collections.abc import Callable
import contextlib
from dataclasses import dataclass
import functools
import math
import os
import random
import socket
import time
from typing import Any
import uuid

import optuna
from optuna.exceptions import StorageInternalError
from optuna.exceptions import UpdateFinishedTrialError
from optuna.study import Study
from optuna.trial import TrialState
import sqlalchemy.exc

from optuna_opplan._heartbeat import Heartbeat
from optuna_opplan._heartbeat import StalenessWatch
from optuna_opplan._heartbeat import fail_abandoned
from optuna_opplan._plan import Plan
from optuna_opplan._plan import compute_plan
from optuna_opplan._progress import KEY_OUTCOME
from optuna_opplan._progress import KEY_RESULT
from optuna_opplan._progress import KEY_RETRY_DELAY
from optuna_opplan._progress import KEY_TRANSITION
from optuna_opplan._progress import KEY_WORKER
from optuna_opplan._progress import Progress
from optuna_opplan._progress import TransitionStatus
from optuna_opplan._pruner import _CANCELLED
from optuna_opplan._pruner import KneePointPruner
from optuna_opplan._result import TransitionResult
from optuna_opplan._sampler import PlanningSampler
from optuna_opplan._storage import harden_storage
from optuna_opplan._storage import redact
from optuna_opplan._storage import storage_label

_logger = optuna.logging.get_logger("optuna.opplan")

Objective = Callable[[optuna.Trial], Any]


class TransitionFailed(Exception):
    """Raise from an objective to end a transition as a failed edge, without retries.

    Use it for failures that a retry would repeat: a loss that turned NaN, a diverged run.
    Any other exception counts as a transient failure and the transition is tried again.
    """


class StorageUnavailableError(RuntimeError):
    """The study's storage kept failing (a database down longer than the worker waits)."""


# A worker that meets a storage error (a restarted database server, a dropped connection)
# waits and scans again, up to STORAGE_RETRIES times in a row with doubling pauses from
# STORAGE_BACKOFF to MAX_STORAGE_BACKOFF seconds (about 45 s in all), then gives up with a
# StorageUnavailableError. A transition interrupted by the error fails and is retried.
STORAGE_RETRIES = 8
STORAGE_BACKOFF = 0.5
MAX_STORAGE_BACKOFF = 10.0
_STORAGE_ERRORS = (StorageInternalError, sqlalchemy.exc.OperationalError)


class PlanIncompleteError(RuntimeError):
    """The plan was asked for before every transition finished."""


def _planning(study: Study) -> tuple[PlanningSampler, KneePointPruner]:
    sampler, pruner = study.sampler, study.pruner
    if not isinstance(sampler, PlanningSampler):
        raise ValueError(
            "The study's sampler must be an optuna_opplan.PlanningSampler, but got "
            f"{type(sampler).__name__}: create the study with sampler=PlanningSampler(graph)."
        )
    if not isinstance(pruner, KneePointPruner):
        raise ValueError(
            "The study's pruner must be an optuna_opplan.KneePointPruner, but got "
            f"{type(pruner).__name__}: create the study with pruner=KneePointPruner(...)."
        )
    return sampler, pruner


def run_worker(
    study: Study,
    objective: Objective,
    *,
    heartbeat_interval: float = 10.0,
    grace_period: float | None = None,
    poll_interval: float = 0.5,
    max_poll_interval: float = 10.0,
    max_transitions: int | None = None,
    timeout: float | None = None,
    catch: tuple[type[Exception], ...] = (Exception,),
) -> int:
    """Train ready transitions of a planning study until the plan is complete.

    Start any number of these, in any number of processes and machines sharing the study's
    storage: each transition is trained exactly once. A worker waits (with backoff) while
    transitions it could take are still blocked by running ones, and returns once every
    transition is finished. A transition whose worker stops sending heartbeats for
    ``grace_period`` seconds (a killed process, a lost machine) is failed and tried again by
    another worker; so is one whose objective raises (up to the sampler's ``max_retries``).
    A storage error (a database server restarting) makes the worker wait and scan again, with
    backoff, up to ``STORAGE_RETRIES`` times in a row; a transition it interrupted is retried.

    The objective gets a trial per transition; see :func:`current_transition` for what to
    train and :class:`KneePointPruner` for when to stop. Its return value is ignored: the
    transition's score comes from the knee fit of its reported curve.

    Args:
        study: A study whose sampler is a :class:`PlanningSampler` and pruner a
            :class:`KneePointPruner`.
        objective: Trains one transition.
        heartbeat_interval: Seconds between heartbeats of a running transition.
        grace_period: Seconds without a heartbeat after which a running transition counts as
            abandoned; defaults to ``6 * heartbeat_interval``.
        poll_interval: First wait when nothing is ready; it grows to ``max_poll_interval``.
        max_poll_interval: Longest wait between two looks at the storage.
        max_transitions: Return after this many transitions (:obj:`None`: no limit).
        timeout: Return after this many seconds, between transitions (:obj:`None`: no limit).
        catch: Exceptions of the objective that fail the transition (to be retried) without
            stopping the worker; others are recorded, then re-raised.

    Returns:
        The number of transitions this worker finished.

    Raises:
        StorageUnavailableError: if the storage kept failing through every retry.
    """
    sampler, pruner = _planning(study)
    for name, value in (
        ("heartbeat_interval", heartbeat_interval),
        ("poll_interval", poll_interval),
        ("max_poll_interval", max_poll_interval),
    ):
        if not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"`{name}` must be a positive number, but got {name}={value!r}.")
    grace = 6.0 * heartbeat_interval if grace_period is None else grace_period
    if not isinstance(grace, (int, float)) or grace <= heartbeat_interval:
        raise ValueError(
            "`grace_period` must be longer than `heartbeat_interval`, but got "
            f"grace_period={grace_period!r}, heartbeat_interval={heartbeat_interval!r}."
        )
    harden_storage(study._storage)
    sampler.check_study(study, {"pruner": pruner.config()})
    worker = _Worker(study, objective, sampler, pruner, heartbeat_interval, grace, catch)
    deadline = None if timeout is None else time.monotonic() + timeout
    if not study._storage.get_all_trials(study._study_id, deepcopy=False):
        # Workers started together would each enqueue every transition; a random pause lets
        # the first one's trials appear before the others look (duplicates are retired anyway).
        time.sleep(random.uniform(0.0, min(1.0, 4 * poll_interval)))
    wait = poll_interval
    done = 0
    storage_failures = 0
    try:
        while max_transitions is None or done < max_transitions:
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                if worker.settle():
                    done += 1
                progress = sampler.progress(study)
                if progress.is_complete:
                    # A retry two workers enqueued at once may still wait: retire it, so a
                    # finished study holds no WAITING trial. An orphan (a duplicate whose
                    # retiring worker died midway) is watched until it can be failed.
                    sampler.reconcile(study, progress)
                    if not progress.orphans:
                        _logger.info(f"Plan complete: {progress.counts()}.")
                        break
                if worker.fail_stale(progress) or sampler.reconcile(
                    study, progress, only=worker.to_enqueue(progress)
                ):
                    storage_failures = 0
                    continue
                outcome = worker.try_one(progress)
            except _STORAGE_ERRORS as exc:
                storage_failures += 1
                worker.storage_failed()
                _storage_pause(study, exc, storage_failures, worker.unrecorded())
                continue
            storage_failures = 0
            if outcome == "ran":
                done += 1
                wait = poll_interval
            elif outcome == "idle":
                # Jitter keeps a fleet of idle workers from polling the storage in lockstep.
                time.sleep(wait * random.uniform(0.75, 1.25))
                wait = min(wait * 1.5, max_poll_interval)
    finally:
        if worker.pending is not None:  # leaving on a timeout or an error: one last try
            with contextlib.suppress(*_STORAGE_ERRORS):
                worker.settle()
        worker.abandon()
    return done


def _storage_pause(study: Study, exc: Exception, failures: int, unrecorded: str | None) -> None:
    """Wait before the next scan after a storage error, or give up after too many."""
    label = storage_label(study._storage)
    # The root cause's first line (Optuna's StorageInternalError hides it behind a generic
    # message; SQLAlchemy appends the statement and its parameters), password masked.
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    lines = str(cause).strip().splitlines()
    error = redact(f"{type(exc).__name__}: {lines[0] if lines else type(cause).__name__}")
    if failures > STORAGE_RETRIES:
        # Not chained: the driver's exception may quote connection details.
        lost = (
            f" The outcome of {unrecorded} could not be recorded: its trial stays RUNNING "
            "until another worker's grace period ends, then the transition is retried."
            if unrecorded
            else ""
        )
        raise StorageUnavailableError(
            f"The storage {label} failed {failures} times in a row; last error: {error}.{lost} "
            "The study is consistent: start the worker again once the storage is back."
        ) from None
    pause = min(STORAGE_BACKOFF * 2 ** (failures - 1), MAX_STORAGE_BACKOFF)
    _logger.warning(
        f"Storage {label} failed ({error}); attempt {failures} of {STORAGE_RETRIES} to carry "
        f"on in {pause:.1f}s."
    )
    time.sleep(pause * random.uniform(0.75, 1.25))


def get_plan(study: Study, *, partial: bool = False) -> Plan:
    """The plan of a planning study: the DP over its finished transitions.

    Args:
        study: A planning study.
        partial: Compute the best plan from the transitions finished so far instead of
            raising while some are unfinished.

    Raises:
        PlanIncompleteError: if transitions are unfinished and ``partial`` is false.
        GoalUnreachableError: if every path to the goal states went through failed edges.
    """
    sampler, _ = _planning(study)
    progress = sampler.progress(study)
    if not progress.is_complete and not partial:
        counts = {k: v for k, v in progress.counts().items() if v}
        raise PlanIncompleteError(
            f"Study {study.study_name!r} has unfinished transitions ({counts}); run workers "
            "until they finish, or pass partial=True for the best plan so far."
        )
    return compute_plan(sampler.graph, progress.results, score=sampler.score)


def get_progress(study: Study) -> Progress:
    """A snapshot of a planning study: status of each transition, resolved states."""
    sampler, _ = _planning(study)
    return sampler.progress(study)


@dataclass
class _Pending:
    """A transition whose objective returned, and the call that records its outcome."""

    trial_id: int
    key: str
    heartbeat: Heartbeat
    record: Callable[[], None] = lambda: None
    held: bool = False  # an outage already held it back once

    def describe(self) -> str:
        return f"trial id {self.trial_id} ({self.key})"


class _Worker:
    def __init__(
        self,
        study: Study,
        objective: Objective,
        sampler: PlanningSampler,
        pruner: KneePointPruner,
        heartbeat_interval: float,
        grace: float,
        catch: tuple[type[Exception], ...],
    ) -> None:
        self.study = study
        self.objective = objective
        self.sampler = sampler
        self.pruner = pruner
        self.heartbeat_interval = heartbeat_interval
        self.catch = catch
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._watch = StalenessWatch(grace)
        self.pending: _Pending | None = None
        # Who enqueues a transition that became ready: the worker whose own act made it
        # ready (it finished a transition into its source, or an attempt of it failed) sees
        # it first, in the scan right after. Others wait `defer` seconds of their own clock
        # before doing it themselves (that worker may have died right after): a fleet that
        # all enqueued at once would mostly make duplicates to retire. A starting worker
        # takes the transitions out of the initial model, for a study nobody enqueued yet.
        self._duty = sampler.start_keys()
        self.defer = grace / 2
        self._pending_since: dict[str, float] = {}
        # Retries after a death wait their delay from when this worker first saw them, on its
        # own clock: machines whose clocks differ still never take one early.
        self._waiting_since: dict[int, float] = {}

    def finished(self, key: str) -> None:
        """Take the duty to enqueue what the end of transition ``key`` makes ready: its own
        retry, or the transitions out of its target state."""
        transition = self.sampler.graph.transition(key)
        self._duty.add(key)
        self._duty.update(t.key for t in self.sampler.graph.successors(transition.target))

    def to_enqueue(self, progress: Progress) -> list[str]:
        """The ready transitions without a trial that this worker should enqueue now."""
        pending = [s.transition.key for s in progress.with_status("pending")]
        now = time.monotonic()
        self._pending_since = {k: self._pending_since.get(k, now) for k in pending}
        mine = [k for k in pending if k in self._duty]
        self._duty.clear()
        return mine + [
            k for k in pending if k not in mine and now - self._pending_since[k] >= self.defer
        ]

    def fail_stale(self, progress: Progress) -> bool:
        runs = [s.running for s in progress.with_status("running") if s.running is not None]
        failed = False
        for trial, silent_for in self._watch.stale(runs + progress.orphans):
            if not fail_abandoned(self.study._storage, trial, self.name, silent_for):
                continue
            failed = True
            key = str(trial.system_attrs.get(KEY_TRANSITION))
            self.finished(key)
            owner = trial.system_attrs.get(KEY_WORKER, "?")
            after = (
                "it was a duplicate left RUNNING, not the transition's run"
                if trial in progress.orphans
                else "the transition will be retried"
            )
            _logger.warning(
                f"Trial {trial.number} ({key}) had no heartbeat from worker {owner} for "
                f"{silent_for:.0f}s: failed it; {after}."
            )
        return failed

    def backing_off(self, progress: Progress) -> set[str]:
        """The ready transitions whose retry after a death still waits (on this clock)."""
        now = time.monotonic()
        ready = [s for s in progress.with_status("ready") if s.waiting is not None]
        ids = {s.waiting._trial_id for s in ready if s.waiting is not None}
        self._waiting_since = {k: v for k, v in self._waiting_since.items() if k in ids}
        waiting = set()
        for status in ready:
            assert status.waiting is not None
            delay = status.waiting.system_attrs.get(KEY_RETRY_DELAY)
            if not isinstance(delay, (int, float)) or delay <= 0:
                continue
            since = self._waiting_since.setdefault(status.waiting._trial_id, now)
            if now - since < delay:
                waiting.add(status.transition.key)
        return waiting

    def try_one(self, progress: Progress) -> str:
        """Claim and train one ready transition: "ran", "lost" (a race: rescan) or "idle"."""
        lost = False
        backing_off = self.backing_off(progress)
        for status in progress.with_status("ready"):
            if status.transition.key in backing_off:
                continue
            try:
                # Losing a claim says nothing about other transitions: try the next one. The
                # same transition is never retried from this snapshot (that needs a rescan).
                trial_id = self.sampler.claim(self.study, status, progress)
                if trial_id is None:
                    lost = True
                    continue
                self._train(status, trial_id)
            except UpdateFinishedTrialError as exc:
                # Another worker saw no heartbeat within its grace period (a stalled or
                # overloaded machine) and failed the trial before its objective started; the
                # transition gets a new trial, and this worker must live on to take work.
                _logger.warning(f"Trial of {status.transition.key} was failed meanwhile: {exc}")
                return "lost"
            return "ran"
        return "lost" if lost else "idle"

    def _train(self, status: TransitionStatus, trial_id: int) -> None:
        self.study._storage.set_trial_system_attr(trial_id, KEY_WORKER, self.name)
        heartbeat = Heartbeat(self.study._storage, trial_id, self.heartbeat_interval)
        heartbeat.start()
        pending = _Pending(trial_id, status.transition.key, heartbeat)
        try:
            pending.record = self._run(status, trial_id)
        except BaseException as exc:
            pending.record = functools.partial(
                self._finish_failed, trial_id, "error", f"{type(exc).__name__}: {exc}"
            )
            try:
                self.settle(pending)
            except _STORAGE_ERRORS:
                if isinstance(exc, _STORAGE_ERRORS):
                    raise  # an outage: run_worker waits and records the failure afterwards
            raise
        self.settle(pending)

    def _run(self, status: TransitionStatus, trial_id: int) -> Callable[[], None]:
        """Run the objective on a claimed trial; return what records its outcome."""
        trial = self.sampler.open_trial(self.study, trial_id)
        _logger.info(
            f"Worker {self.name} trains trial {trial.number}: {status.transition.key} "
            f"(attempt {status.failures + status.deaths + 1})."
        )
        try:
            self.objective(trial)
        except optuna.TrialPruned:
            pass
        except TransitionFailed as exc:
            return functools.partial(
                self._finish_failed, trial_id, "failed", f"{type(exc).__name__}: {exc}"
            )
        except self.catch as exc:
            _logger.warning(
                f"Trial {trial.number} ({status.transition.key}) raised {exc!r}; "
                "it will be retried.",
                exc_info=True,
            )
            return functools.partial(
                self._finish_failed, trial_id, "error", f"{type(exc).__name__}: {exc}"
            )
        return functools.partial(self._finish, trial, status)

    def settle(self, pending: _Pending | None = None) -> bool:
        """Record a finished transition's outcome (by default the one an outage held back),
        then stop its heartbeat; return whether there was one.

        If the storage fails, the outcome and the heartbeat are kept and ``run_worker`` tries
        again before its next scan: a transition trained through a database restart is
        recorded once the database is back, not thrown away and trained again.
        """
        pending = pending or self.pending
        if pending is None:
            return False
        self.pending = None
        try:
            pending.record()
        except _STORAGE_ERRORS:
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
                pending.heartbeat.stop()
                _CANCELLED.discard(pending.trial_id)
        if pending.held:
            _logger.info(f"The outcome of {pending.describe()} is recorded after all.")
        self.finished(pending.key)
        return True

    def unrecorded(self) -> str | None:
        """The transition whose outcome waits for the storage, if any."""
        return None if self.pending is None else self.pending.describe()

    def abandon(self) -> None:
        """Stop the heartbeat of an outcome that will never be recorded (the worker exits)."""
        if self.pending is not None:
            self.pending.heartbeat.stop()
            _CANCELLED.discard(self.pending.trial_id)
            self.pending = None

    def storage_failed(self) -> None:
        """Restart the staleness clocks: while this worker could not read the storage, the
        others' heartbeats may have been written unseen (or failed like its own reads)."""
        self._watch.forget()

    def _finish(self, trial: optuna.Trial, status: TransitionStatus) -> None:
        if trial._trial_id in _CANCELLED:
            _logger.warning(
                f"Trial {trial.number} was failed by another worker while it trained; its "
                "result is discarded (the transition is being retried)."
            )
            return
        frozen = self.study._storage.get_trial(trial._trial_id)
        values = self.pruner.curve_of(self.study, frozen)
        n = len(values) - 1
        if n == 0:
            self._finish_failed(trial._trial_id, "error", "the objective reported no epoch")
            return
        bad = [e for e, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            self._finish_failed(
                trial._trial_id, "failed", f"non-finite validation score at epoch {bad[0]}"
            )
            return
        decision = self.pruner.decide(values)
        if not (decision.fit is not None and decision.fit.ok):
            reason = decision.fit.message if decision.fit is not None else "too few epochs"
            self._finish_failed(
                trial._trial_id, "failed", f"no usable curve fit after {n} epochs: {reason}"
            )
            return
        # The pruner's last decision on this same curve: decide() is a pure function of it.
        keep = decision.keep_epoch
        result = TransitionResult(
            score=float(decision.fit.value),
            observed=values[keep],
            epochs=keep,
            trial=trial.number,
            epochs_trained=n,
            knee_epoch=decision.fit.epoch,
            reason=decision.reason,
        )
        storage = self.study._storage
        try:
            storage.set_trial_system_attr(trial._trial_id, KEY_RESULT, result.to_dict())
            storage.set_trial_system_attr(trial._trial_id, KEY_OUTCOME, {"status": "ok"})
            self.study.tell(trial, result.edge_score(self.sampler.score))
        except (UpdateFinishedTrialError, ValueError) as exc:
            _logger.warning(f"Trial {trial.number} could not be completed ({exc}); discarded.")
            return
        _logger.info(
            f"Trial {trial.number} done: {status.transition.key}, score {result.score:.4f} "
            f"(observed {result.observed:.4f}), keep epoch {keep} of {n} ({decision.reason})."
        )

    def _finish_failed(self, trial_id: int, kind: str, reason: str) -> None:
        storage = self.study._storage
        try:
            storage.set_trial_system_attr(
                trial_id, KEY_OUTCOME, {"status": kind, "reason": reason}
            )
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            return
        _logger.warning(f"Trial id {trial_id} failed ({kind}): {reason}")
