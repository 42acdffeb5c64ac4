from __future__ import annotations

from collections.abc import Callable
import functools
import math
import os
import random
import socket
import time
from typing import Any
import uuid

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import InMemoryStorage
from optuna.study import Study
from optuna.trial import TrialState

from optuna_opplan._checkpoint import ArtifactStore
from optuna_opplan._checkpoint import Carrier
from optuna_opplan._checkpoint import CheckpointError
from optuna_opplan._checkpoint import EpochCheckpoints
from optuna_opplan._checkpoint import as_artifact_store
from optuna_opplan._checkpoint import attach
from optuna_opplan._checkpoint import carrier_of
from optuna_opplan._checkpoint import detach
from optuna_opplan._checkpoint import upload_checkpoint
from optuna_opplan._progress import Progress
from optuna_opplan._progress import TransitionStatus
from optuna_opplan._protocol import CANCELLED
from optuna_opplan._protocol import KEY_RESULT
from optuna_opplan._protocol import KEY_RETRY_DELAY
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._protocol import KEY_WORKER
from optuna_opplan._protocol import OutcomeKind
from optuna_opplan._protocol import Status
from optuna_opplan._protocol import fail_trial
from optuna_opplan._protocol import finish_trial
from optuna_opplan._pruner import KneePointPruner
from optuna_opplan._queue import TransitionQueue
from optuna_opplan._result import TransitionResult
from optuna_opplan._run import Record
from optuna_opplan._run import Step
from optuna_opplan._run import TrialRunner
from optuna_opplan._run import work_loop
from optuna_opplan._sampler import PlanningSampler
from optuna_opplan._storage import STORAGE_ERRORS
from optuna_opplan._storage import harden_storage
from optuna_opplan._study import check_config
from optuna_opplan._study import planning_parts

_logger = optuna.logging.get_logger("optuna.opplan")

Objective = Callable[[optuna.Trial], Any]


class TransitionFailed(Exception):
    """Raise from an objective to end a transition as a failed edge, without retries.

    Use it for failures that a retry would repeat: a loss that turned NaN, a diverged run.
    Any other exception counts as a transient failure and the transition is tried again.
    """


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
    artifact_store: Any = None,
) -> int:
    """Train ready transitions of a planning study until the plan is complete.

    Start any number of these, in any number of processes and machines sharing the study's
    storage: each transition is trained exactly once. A worker waits (with backoff) while
    transitions it could take are still blocked by running ones, and returns once every
    transition is finished. A transition whose worker stops sending heartbeats for
    ``grace_period`` seconds (a killed process, a lost machine) is failed and tried again by
    another worker, after a backoff (up to the sampler's ``max_deaths`` times); so is one whose
    objective raises (up to its ``max_retries`` times), at once. A worker stays while any
    transition can still be retried.
    A storage error (a database server restarting) makes the worker wait and scan again, with
    backoff, up to ``STORAGE_RETRIES`` times in a row; a transition it interrupted is retried.

    The objective gets a trial per transition; see :func:`current_transition` for what to
    train and :class:`KneePointPruner` for when to stop. Its return value is ignored: the
    transition's score comes from the knee fit of its reported curve.

    With ``artifact_store``, the engine carries the checkpoints: the objective starts from
    ``step.load_source_checkpoint()`` and hands each epoch's to ``step.save_checkpoint``; once
    it returns, the kept epoch's checkpoint is uploaded (SHA-256 recorded) before the trial is
    told, and :func:`load_checkpoint` gives any finished transition's. Give every worker the
    same store (a shared folder, S3, ...).

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
        artifact_store: An Optuna artifact store (``FileSystemArtifactStore``,
            ``Boto3ArtifactStore``, ...), a folder path or ``s3://bucket[/prefix]``, for the
            checkpoints the engine carries. By default the objective's ``artifact_store``
            attribute if it has one (as ``TransitionTrainer``), else :obj:`None`: the
            objective keeps its own checkpoints.

    Returns:
        The number of transitions this worker trained to completion (failed attempts, its own
        or others', are not counted; ``max_transitions`` counts attempts).

    Raises:
        StorageUnavailableError: if the storage kept failing through every retry.
        CheckpointError: if a checkpoint a transition needs is missing or altered, or the
            objective saved checkpoints without an ``artifact_store`` (the attempt is recorded
            as failed first).
    """
    sampler, pruner = planning_parts(study)
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
    if artifact_store is None:  # an objective that brings its own, as TransitionTrainer
        artifact_store = getattr(objective, "artifact_store", None)
    store = None if artifact_store is None else as_artifact_store(artifact_store)
    harden_storage(study._storage)
    check_config(study, sampler, pruner)
    worker = _Worker(study, objective, sampler, pruner, heartbeat_interval, grace, catch, store)
    if not study._storage.get_all_trials(study._study_id, deepcopy=False):
        # Workers started together would each enqueue every transition; a random pause lets
        # the first one's trials appear before the others look (duplicates are retired anyway).
        time.sleep(random.uniform(0.0, min(1.0, 4 * poll_interval)))
    work_loop(
        worker.runner,
        worker.scan,
        poll_interval=poll_interval,
        max_poll_interval=max_poll_interval,
        max_runs=max_transitions,
        timeout=timeout,
    )
    # By the worker that finished the last transition, for storages optuna-dashboard can
    # open: drawing every curve is a minute's work on a large study, and a fleet that all
    # did it at once would hold up its own exit (`opplan plan` publishes too).
    if worker.finished_last and not isinstance(study._storage, InMemoryStorage):
        publish_views(study)
    return worker.completed


def publish_views(study: Study) -> bool:
    """Put the graph, the curves and the plan into optuna-dashboard's storage, if the
    dashboard extra is installed; a failure to publish is logged, never raised."""
    try:
        from optuna_opplan import dashboard
    except ImportError as exc:  # an optional extra: the plan itself does not need it
        _logger.info(
            f"Dashboard views not published ({exc}): pip install 'optuna-opplan[dashboard]'."
        )
        return False
    try:
        dashboard.publish(study)
    except Exception as exc:
        _logger.warning(f"Publishing the dashboard views of {study.study_name!r} failed: {exc!r}")
        return False
    return True


class _Worker:
    """One planning worker: scans the study, enqueues what became ready, fails abandoned
    trials and trains one ready transition per scan (through a :class:`TrialRunner`)."""

    def __init__(
        self,
        study: Study,
        objective: Objective,
        sampler: PlanningSampler,
        pruner: KneePointPruner,
        heartbeat_interval: float,
        grace: float,
        catch: tuple[type[Exception], ...],
        artifact_store: ArtifactStore | None = None,
    ) -> None:
        self.study = study
        self.objective = objective
        self.sampler = sampler
        self.pruner = pruner
        self.queue = TransitionQueue(study, sampler)
        self.catch = catch
        self.artifact_store = artifact_store
        self.finished_last = False
        self.completed = 0
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.runner = TrialRunner(
            study._storage,
            name=self.name,
            heartbeat_interval=heartbeat_interval,
            grace=grace,
            on_settled=self.finished,
            on_released=lambda trial_id: detach(study._storage, trial_id),
        )
        # Who enqueues a transition that became ready: the worker whose own act made it
        # ready (it finished a transition into its source, or an attempt of it failed) sees
        # it first, in the scan right after. Others wait `defer` seconds of their own clock
        # before doing it themselves (that worker may have died right after): a fleet that
        # all enqueued at once would mostly make duplicates to retire. A starting worker
        # takes the transitions out of the initial model, for a study nobody enqueued yet.
        self._duty = self.queue.start_keys()
        self.defer = grace / 2
        self._pending_since: dict[str, float] = {}
        # Retries after a death wait their delay from when this worker first saw them, on its
        # own clock: machines whose clocks differ still never take one early.
        self._waiting_since: dict[int, float] = {}

    def scan(self) -> Step:
        """One look at the study, and what it led to (see :func:`work_loop`)."""
        progress = self.queue.progress()
        if progress.is_complete:
            # A retry two workers enqueued at once may still wait: retire it, so a finished
            # study holds no WAITING trial. An orphan (a duplicate whose retiring worker died
            # midway) is watched until it can be failed.
            self.queue.reconcile(progress)
            if not progress.orphans:
                _logger.info(f"Plan complete: {progress.counts()}.")
                self.finished_last = self._finished_last(progress)
                return Step.FINISHED
        if self.fail_stale(progress) or self.queue.reconcile(
            progress, only=self.to_enqueue(progress)
        ):
            return Step.AGAIN
        return self.try_one(progress)

    def _finished_last(self, progress: Progress) -> bool:
        # Whether this worker completed the transition that completed the study.
        done = [
            (t.datetime_complete, t.system_attrs.get(KEY_WORKER))
            for status in progress.statuses.values()
            for t in status.trials
            if t.state == TrialState.COMPLETE and t.datetime_complete is not None
        ]
        return bool(done) and max(done, key=lambda pair: pair[0])[1] == self.name

    def finished(self, key: str) -> None:
        """Take the duty to enqueue what the end of transition ``key`` makes ready: its own
        retry, or the transitions out of its target state."""
        transition = self.sampler.graph.transition(key)
        self._duty.add(key)
        self._duty.update(t.key for t in self.sampler.graph.successors(transition.target))

    def to_enqueue(self, progress: Progress) -> list[str]:
        """The ready transitions without a trial that this worker should enqueue now."""
        pending = [s.transition.key for s in progress.with_status(Status.PENDING)]
        now = time.monotonic()
        self._pending_since = {k: self._pending_since.get(k, now) for k in pending}
        mine = [k for k in pending if k in self._duty]
        self._duty.clear()
        return mine + [
            k for k in pending if k not in mine and now - self._pending_since[k] >= self.defer
        ]

    def fail_stale(self, progress: Progress) -> bool:
        runs = [s.running for s in progress.with_status(Status.RUNNING) if s.running is not None]
        failed = False
        for trial, silent_for in self.runner.fail_stale(runs + progress.orphans):
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
        """The ready transitions whose retry after a death still waits, on this clock."""
        now = time.monotonic()
        ready = {s.waiting._trial_id: s for s in progress.with_status(Status.READY) if s.waiting}
        self._waiting_since = {k: v for k, v in self._waiting_since.items() if k in ready}
        waiting = set()
        for trial_id, status in ready.items():
            assert status.waiting is not None
            delay = status.waiting.system_attrs.get(KEY_RETRY_DELAY)
            if not isinstance(delay, (int, float)) or not delay > 0:
                continue
            since = self._waiting_since.setdefault(trial_id, now)
            if now - since < delay:
                waiting.add(status.transition.key)
        return waiting

    def try_one(self, progress: Progress) -> Step:
        """Claim and train one ready transition: RAN, AGAIN (a race was lost) or IDLE."""
        lost = False
        backing_off = self.backing_off(progress)
        for status in progress.with_status(Status.READY):
            if status.transition.key in backing_off:
                continue
            try:
                # Losing a claim says nothing about other transitions: try the next one. The
                # same transition is never retried from this snapshot (that needs a rescan).
                trial_id = self.queue.claim(status)
                if trial_id is None:
                    lost = True
                    continue
                self.runner.run(
                    trial_id,
                    status.transition.key,
                    functools.partial(self._run, status, progress, trial_id),
                    functools.partial(self._errored, trial_id),
                )
            except UpdateFinishedTrialError as exc:
                # Another worker saw no heartbeat within its grace period (a stalled or
                # overloaded machine) and failed the trial before its objective started; the
                # transition gets a new trial, and this worker must live on to take work.
                _logger.warning(f"Trial of {status.transition.key} was failed meanwhile: {exc}")
                return Step.AGAIN
            return Step.RAN
        return Step.AGAIN if lost else Step.IDLE

    def _errored(self, trial_id: int, exc: BaseException) -> Record:
        return functools.partial(
            self._finish_failed, trial_id, OutcomeKind.ERROR, f"{type(exc).__name__}: {exc}"
        )

    def _run(self, status: TransitionStatus, progress: Progress, trial_id: int) -> Record:
        """Run the objective on a claimed trial; return what records its outcome."""
        self.queue.record_source(trial_id, status, progress)
        trial = self.queue.open_trial(trial_id)
        # The epochs the pruner may still keep: older checkpoints are dropped as training goes.
        epochs = EpochCheckpoints(
            lambda n: range(max(0, n - self.pruner.delay), n + 1), prefix=f"trial{trial.number}-"
        )
        attach(self.study._storage, trial_id, Carrier(self.artifact_store, epochs))
        attempt = status.attempts + 1
        _logger.info(
            f"Worker {self.name} trains trial {trial.number}: {status.transition.key} "
            f"(attempt {attempt})."
        )
        try:
            self.objective(trial)
        except optuna.TrialPruned:
            pass
        except TransitionFailed as exc:
            return functools.partial(
                self._finish_failed, trial_id, OutcomeKind.FAILED, f"{type(exc).__name__}: {exc}"
            )
        except CheckpointError:
            raise  # retrying cannot help: the worker stops, naming what is missing
        except self.catch as exc:
            retries = self.sampler.max_retries
            after = (
                f"it will be retried (attempt {attempt} of {retries + 1})"
                if attempt <= retries
                else f"that was attempt {attempt} of {retries + 1}: no retry left, the "
                "transition is a failed edge"
            )
            _logger.warning(
                f"Trial {trial.number} ({status.transition.key}) raised {exc!r}; {after}.",
                exc_info=True,
            )
            return functools.partial(
                self._finish_failed, trial_id, OutcomeKind.ERROR, f"{type(exc).__name__}: {exc}"
            )
        return functools.partial(self._complete, trial, status)

    def storage_failed(self) -> None:
        """Restart the staleness clocks: while this worker could not read the storage, the
        others' heartbeats may have been written unseen (or failed like its own reads)."""
        self.runner.storage_failed()

    def _result(self, trial: optuna.Trial) -> TransitionResult | tuple[OutcomeKind, str]:
        """The transition's result from its reported curve, or why it failed (kind, reason)."""
        frozen = self.study._storage.get_trial(trial._trial_id)
        values = self.pruner.decision_curve(self.study, frozen)
        n = len(values) - 1
        if n == 0:
            return (
                OutcomeKind.ERROR,
                "the objective reported no epoch (call trial.report(value, epoch))",
            )
        bad = [e for e, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            return OutcomeKind.FAILED, f"non-finite validation score at epoch {bad[0]}"
        # A minimised score (a loss) is decided on as its negation; the fit comes back in
        # the study's own units, and so does the result.
        decision = self.pruner.decide_trial(self.study, frozen, values, final=True)
        if not (decision.fit is not None and decision.fit.ok):
            reason = decision.fit.message if decision.fit is not None else "too few epochs"
            return OutcomeKind.FAILED, f"no usable curve fit after {n} epochs: {reason}"
        keep = decision.keep_epoch
        return TransitionResult(
            score=float(decision.fit.value),
            observed=values[keep],
            epochs=keep,
            trial=trial.number,
            epochs_trained=n,
            knee_epoch=decision.fit.epoch,
            reason=decision.reason,
        )

    def _complete(self, trial: optuna.Trial, status: TransitionStatus) -> bool:
        """Record a transition whose objective returned: its result from the reported curve,
        its kept checkpoint uploaded first. Runs again if the storage fails midway."""
        if trial._trial_id in CANCELLED:
            _logger.warning(
                f"Trial {trial.number} was failed by another worker while it trained; its "
                "result is discarded (the transition is being retried)."
            )
            return True
        outcome = self._result(trial)
        if isinstance(outcome, tuple):
            return self._finish_failed(trial._trial_id, *outcome)
        carrier = carrier_of(self.study._storage, trial._trial_id)
        if carrier is not None and carrier.artifact_store is not None:
            try:
                self._upload(trial, status, outcome, carrier.epochs)
            except CheckpointError as exc:
                self._finish_failed(trial._trial_id, OutcomeKind.ERROR, f"CheckpointError: {exc}")
                raise
            except STORAGE_ERRORS:
                raise  # held back: uploaded again once the storage is back
            except Exception as exc:  # a full disk, a store that refuses: retried
                reason = f"{type(exc).__name__}: {exc}"
                return self._finish_failed(trial._trial_id, OutcomeKind.ERROR, reason)
        return self._finish(trial, status, outcome)

    def _upload(
        self,
        trial: optuna.Trial,
        status: TransitionStatus,
        result: TransitionResult,
        epochs: EpochCheckpoints,
    ) -> None:
        """Upload the kept epoch's checkpoint and record it, before the trial is told."""
        assert self.artifact_store is not None
        if result.epochs == 0:
            return  # keeps its source's checkpoint: nothing new to upload
        saved = epochs.get(result.epochs)
        if saved is None:
            held = epochs.epochs
            raise CheckpointError(
                f"Trial {trial.number} ({status.transition.key}) keeps epoch {result.epochs}, "
                "but the objective saved no checkpoint of it "
                + (f"(it saved epochs {held})" if held else "(it saved none)")
                + ": call step.save_checkpoint(epoch, data) after every trial.report(value, "
                "epoch), or start the worker without artifact_store if the objective keeps "
                "its own checkpoints."
            )
        path, digest, _ = saved
        store, epoch = self.artifact_store, result.epochs
        upload_checkpoint(self.study._storage, trial, store, path, sha256=digest, epoch=epoch)

    def _finish(
        self, trial: optuna.Trial, status: TransitionStatus, result: TransitionResult
    ) -> bool:
        value = result.edge_score(self.sampler.score)
        if not finish_trial(self.study, trial, value, attrs={KEY_RESULT: result.to_dict()}):
            _logger.warning(
                f"Trial {trial.number} was failed by another worker before its result was "
                "recorded; discarded (the transition is being retried)."
            )
            return True
        self.completed += 1
        _logger.info(
            f"Trial {trial.number} done: {status.transition.key}, score {result.score:.4f} "
            f"(observed {result.observed:.4f}), keep epoch {result.epochs} of "
            f"{result.epochs_trained} ({result.reason})."
        )
        return True

    def _finish_failed(self, trial_id: int, kind: OutcomeKind, reason: str) -> bool:
        # A trial failed meanwhile by another worker still counts as this worker's run.
        if fail_trial(self.study._storage, trial_id, kind, reason):
            _logger.warning(f"Trial id {trial_id} failed ({kind}): {reason}")
        return True
