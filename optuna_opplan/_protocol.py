"""The trial protocol: what the engine writes on trials and studies, and how it is read.

Workers share nothing but the storage, so these keys, kinds and rules are the whole contract
between them (and with the dashboard, the CLI and studies written by earlier versions): every
module reads and writes trial state through this one. The values of the enums are the strings
stored in the study, so the enums compare equal to them and existing studies load unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
import enum
from typing import Any
import warnings

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

# ------------------------------------------------------------------- trial system attributes
KEY_TRANSITION = "opplan:transition"  # the transition key a planning trial trains
KEY_ATTEMPT = "opplan:attempt"  # 1 for the first try of a transition (or grid point)
KEY_SOURCE_TRIAL = "opplan:source_trial"  # number of the trial holding the start checkpoint
KEY_EPOCH0 = "opplan:epoch0"  # that checkpoint's score: the curve's epoch-0 point by default
KEY_HEARTBEAT = "opplan:heartbeat"  # a counter bumped by the running trial's worker
KEY_WORKER = "opplan:worker"  # host:pid:tag of the worker running the trial
KEY_KNEE = "opplan:knee"  # the knee pruner's latest decision
KEY_RESULT = "opplan:result"  # a TransitionResult, on COMPLETE trials
KEY_OUTCOME = "opplan:outcome"  # {"status": OutcomeKind, "reason": str} of a finished trial
KEY_STALE = "opplan:stale"  # the worker that failed the trial for a silent heartbeat
# Seconds a waiting retry after a death waits, counted by each worker from its first sight.
KEY_RETRY_DELAY = "opplan:retry_delay"
KEY_CHECKPOINT = "opplan:checkpoint"  # the video trainer's kept-checkpoint record
KEY_COMPUTE = "opplan:compute"  # what a trial cost so far (video/_compute.py: Compute)
KEY_SCHEDULE = "opplan:schedule"  # a grid trial's hand-tuned schedule
KEY_TEST_ACCURACY = "opplan:test_accuracy"  # a grid trial's multi-view test accuracy
KEY_TEST_CORRECT = "opplan:test_correct"  # a grid trial's per-test-video top-1 hits

# ------------------------------------------------------------------- study system attributes
KEY_CONFIG = "opplan:config"  # the planning configuration every worker must share
KEY_PLAN_CONFIG = "opplan:plan_config"  # the video runtime's config file, as stored
KEY_GRID_STUDY = "opplan:grid_study"  # name of the grid study linked to a planning study
KEY_PLANNED_TEST = "opplan:planned_test"  # the planned model's cached test accuracy


class _StoredEnum(str, enum.Enum):
    # Printed and formatted as the stored string, as before these were enums.
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    # Equal to the stored string, so hashed like it: usable as dict keys beside strings.
    def __hash__(self) -> int:
        return hash(self.value)


class OutcomeKind(_StoredEnum):
    """Why a trial finished, as stored under ``opplan:outcome``."""

    OK = "ok"  # completed with a result
    ERROR = "error"  # a transient failure (an exception, no epoch reported): retried
    FAILED = "failed"  # a permanent failure (TransitionFailed, no usable fit): a failed edge
    SKIPPED = "skipped"  # never run: its source state is unreachable
    SUPERSEDED = "superseded"  # never run: a duplicate, or not needed any more
    # Its worker stopped sending heartbeats (killed, preempted, out of memory, machine lost):
    # retried against the death budget, not max_retries.
    DIED = "died"


# Outcomes that end a transition for good; IGNORED ones do not count as attempts at all. Any
# other failed trial (an error, a dead worker) counts as an attempt and is retried.
PERMANENT = (OutcomeKind.FAILED, OutcomeKind.SKIPPED)
IGNORED = (OutcomeKind.SUPERSEDED,)


class Status(_StoredEnum):
    """Where a transition stands (see :class:`~optuna_opplan.Progress`)."""

    DONE = "done"  # succeeded
    FAILED = "failed"  # finished without a result
    RUNNING = "running"
    READY = "ready"  # source resolved, a waiting trial can be claimed
    PENDING = "pending"  # source resolved, no waiting trial yet
    BLOCKED = "blocked"  # source not resolved yet


FINISHED = (Status.DONE, Status.FAILED)


def outcome_of(trial: FrozenTrial) -> tuple[str | None, str | None]:
    """The stored ``(kind, reason)`` of ``trial``'s outcome; ``(None, None)`` if none."""
    outcome = trial.system_attrs.get(KEY_OUTCOME)
    if not isinstance(outcome, dict):
        return None, None
    kind, reason = outcome.get("status"), outcome.get("reason")
    return (
        kind if isinstance(kind, str) else None,
        None if reason is None else str(reason),
    )


# ------------------------------------------------------------------------------ cancellation
# Ids of trials this process runs that another worker failed meanwhile (judged abandoned):
# their objective stops at the next should_prune(), and their result is discarded. A set of
# this process's trials, shared by its heartbeats, pruner and workers.
CANCELLED: set[int] = set()


# ---------------------------------------------------------------------------- learning curve
def curve_of(trial: FrozenTrial, *, epoch0: float | None = None) -> list[float]:
    """A trial's learning curve ``[v0, v1, ..., vn]``: the series the knee is fitted to, and
    the one the dashboard draws.

    ``v0`` is the score the objective reported at step 0, if any (the inherited checkpoint
    evaluated with this transition's settings), else ``epoch0`` if given, else the source
    checkpoint's score as stored when the trial was claimed (0 for the initial model). Then
    the reported epochs 1, 2, ... in order.

    Example:
        >>> import optuna
        >>> trial = optuna.trial.create_trial(
        ...     state=optuna.trial.TrialState.COMPLETE,
        ...     value=0.6,
        ...     intermediate_values={0: 0.2, 1: 0.5, 2: 0.6},
        ...     system_attrs={KEY_EPOCH0: 0.858},
        ... )
        >>> curve_of(trial)
        [0.2, 0.5, 0.6]
    """
    values = trial.intermediate_values
    if 0 in values:
        start = float(values[0])
    elif epoch0 is not None:
        start = float(epoch0)
    else:
        start = float(trial.system_attrs.get(KEY_EPOCH0) or 0.0)
    steps = sorted(s for s in values if s >= 1)
    if steps and steps[-1] != len(steps):
        warnings.warn(
            f"Trial {trial.number} reported epochs {steps[:5]}...; the planner expects epochs "
            "1, 2, 3, ... and fits them in that order.",
            stacklevel=3,
        )
    return [start, *(float(values[s]) for s in steps)]


def epochs_of(trial: FrozenTrial) -> int:
    """How many epochs ``trial`` reported (step 0, an evaluation, is not an epoch)."""
    return sum(1 for step in trial.intermediate_values if step >= 1)


# ----------------------------------------------------------------------- finishing a trial
def fail_trial(
    storage: BaseStorage,
    trial_id: int,
    kind: OutcomeKind | None,
    reason: str = "",
    *,
    attrs: Mapping[str, Any] | None = None,
) -> bool:
    """Fail a running trial, recording why; False if it was finished meanwhile.

    ``attrs`` are written first, then the outcome (``kind`` and ``reason``; :obj:`None`
    leaves any stored outcome as it is), then the state: a trial seen FAIL always carries
    its reason.
    """
    try:
        for key, value in (attrs or {}).items():
            storage.set_trial_system_attr(trial_id, key, value)
        if kind is not None:
            storage.set_trial_system_attr(
                trial_id, KEY_OUTCOME, {"status": OutcomeKind(kind).value, "reason": reason}
            )
        return bool(storage.set_trial_state_values(trial_id, TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


def finish_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    value: float,
    *,
    attrs: Mapping[str, Any] | None = None,
) -> bool:
    """Complete a running trial with ``value``, writing ``attrs`` and an ``"ok"`` outcome
    first; False if it was finished meanwhile (another worker judged it abandoned)."""
    storage = study._storage
    try:
        for key, item in (attrs or {}).items():
            storage.set_trial_system_attr(trial._trial_id, key, item)
        storage.set_trial_system_attr(
            trial._trial_id, KEY_OUTCOME, {"status": OutcomeKind.OK.value}
        )
        study.tell(trial, value)
    except (UpdateFinishedTrialError, ValueError):
        return False
    return True


def claim_trial(storage: BaseStorage, trial_id: int) -> bool:
    """Take a waiting trial for this process: the storage's atomic ``WAITING -> RUNNING``.

    False if another process took it first (or it was finished meanwhile).
    """
    try:
        return bool(storage.set_trial_state_values(trial_id, TrialState.RUNNING))
    except UpdateFinishedTrialError:
        return False
