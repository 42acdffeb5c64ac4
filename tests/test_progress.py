"""Progress: the status of every transition, derived from the study's trials alone.

Every worker computes it from the same trials, so these tables pin down the decisions the
fleet agrees on: what is ready, what is retried, what has failed for good and why.
"""

from __future__ import annotations

import datetime
from typing import Any

from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import pytest

import optuna_opplan as op
from optuna_opplan._protocol import KEY_OUTCOME
from optuna_opplan._protocol import KEY_RESULT
from optuna_opplan._protocol import KEY_STALE
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._protocol import KEY_WORKER

GRAPH = op.TransitionGraph.basic(
    clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("u",)
)
# initial -> (8, 0.1) and initial -> (16, 0.1); (8, 0.1) -> (16, 0.1), (8, 0.1) -> (8, 0.01),
# (8, 0.01) -> (16, 0.01), (16, 0.1) -> (16, 0.01); the goal is (16, 0.01).
START_8, START_16, UP_8, DOWN_8, UP_LOW, DOWN_16 = (t.key for t in GRAPH.transitions)
MAX_RETRIES = 2
MAX_DEATHS = 4


def _trial(number: int, key: str, state: str, **attrs: Any) -> FrozenTrial:
    """A trial of transition ``key``: state "waiting", "running", "done" (with a result,
    score 0.5 unless ``score`` is given) or "error" / "failed" / "superseded" / "skipped" /
    "died" (a FAIL with that outcome) or "stale" (a FAIL with only the stale marker, as an
    observer left it before deaths had an outcome kind) or "orphan" (stale, but no worker
    ever wrote its name on it)."""
    system_attrs: dict[str, Any] = {KEY_TRANSITION: key, **attrs.pop("system_attrs", {})}
    value = None
    if state == "done":
        score = attrs.pop("score", 0.5)
        result = op.TransitionResult(score=score, observed=score, epochs=3, trial=number)
        system_attrs.setdefault(KEY_RESULT, result.to_dict())
        value = score
    elif state == "stale":
        system_attrs[KEY_STALE] = "observer"
        system_attrs.setdefault(KEY_WORKER, "host:1:abc")
    elif state == "orphan":
        system_attrs[KEY_STALE] = "observer"
    elif state == "died":
        system_attrs[KEY_STALE] = "observer"
        system_attrs.setdefault(KEY_WORKER, "host:1:abc")
        system_attrs[KEY_OUTCOME] = {"status": "died", "reason": "no heartbeat"}
    elif state in ("error", "failed", "superseded", "skipped"):
        system_attrs[KEY_OUTCOME] = {"status": state, "reason": attrs.pop("reason", state)}
    states = {"waiting": TrialState.WAITING, "running": TrialState.RUNNING}
    trial_state = TrialState.COMPLETE if state == "done" else states.get(state, TrialState.FAIL)
    now = datetime.datetime.now()
    return FrozenTrial(
        number=number,
        state=trial_state,
        value=value,
        datetime_start=now,
        datetime_complete=None if trial_state in states.values() else now,
        params={},
        distributions={},
        user_attrs={},
        system_attrs=system_attrs,
        intermediate_values={},
        trial_id=number,
    )


def _progress(*trials: FrozenTrial) -> op.Progress:
    return op.Progress(GRAPH, list(trials), max_retries=MAX_RETRIES, max_deaths=MAX_DEATHS)


@pytest.mark.parametrize(
    ("trials", "status", "failures", "deaths", "reason"),
    [
        ([], "pending", 0, 0, ""),
        ([("waiting",)], "ready", 0, 0, ""),
        ([("running",)], "running", 0, 0, ""),
        ([("done",)], "done", 0, 0, ""),
        # A transient failure is retried: a new waiting trial makes it ready again.
        ([("error",), ("waiting",)], "ready", 1, 0, ""),
        # A dead worker counts as a death, not as a failure of the objective.
        ([("died",), ("running",)], "running", 0, 1, ""),
        ([("stale",), ("running",)], "running", 0, 1, ""),
        # A duplicate retired unrun is no failure.
        ([("superseded",), ("waiting",)], "ready", 0, 0, ""),
        # ... nor is one whose retiring worker died midway (failed as stale, never run: no
        # worker ever wrote its name on it).
        ([("orphan",), ("waiting",)], "ready", 0, 0, ""),
        # Retries used up (max_retries=2: three failed attempts) and nothing waiting; a death
        # in between does not count.
        (
            [("error",), ("died",), ("error",), ("error", "OSError: disk full")],
            "failed",
            3,
            1,
            "gave up after 3 failed attempts; last: trial 3: OSError: disk full",
        ),
        # More deaths than max_retries allows failures: still retried.
        ([("died",), ("stale",), ("died",), ("waiting",)], "ready", 0, 3, ""),
        ([("error",), ("error",), ("died",), ("died",)], "pending", 2, 2, ""),
        # Death budget (max_deaths=4) used up: a failed edge that says why.
        (
            [("died",)] * 5,
            "failed",
            0,
            5,
            "died 5 times: its worker stopped sending heartbeats each time",
        ),
        # A worker that recorded an exception and then died: the exception counts.
        ([("error", None, {KEY_STALE: "observer"})], "pending", 1, 0, ""),
        # A permanent failure (NaN loss, no usable fit) is never retried.
        ([("failed", "TransitionFailed: loss is NaN")], "failed", 0, 0, "loss is NaN"),
        # A result recorded before the worker died, the trial never told: not done; a death.
        ([("stale", None, {KEY_RESULT: {"score": 0.9}})], "pending", 0, 1, ""),
        # A COMPLETE trial with an unreadable result counts as a failed attempt.
        ([("done", None, {KEY_RESULT: {"score": "high"}}), ("waiting",)], "ready", 1, 0, ""),
    ],
)
def test_status_of_a_transition_out_of_the_initial_model(
    trials: list[tuple[Any, ...]], status: str, failures: int, deaths: int, reason: str
) -> None:
    made = []
    for number, spec in enumerate(trials):
        state, *rest = spec
        kwargs: dict[str, Any] = {}
        if rest and rest[0] is not None:
            kwargs["reason"] = rest[0]
        if len(rest) > 1:
            kwargs["system_attrs"] = rest[1]
        made.append(_trial(number, START_8, state, **kwargs))
    got = _progress(*made).statuses[START_8]
    assert (got.status, got.failures, got.deaths) == (status, failures, deaths)
    assert reason in got.reason
    assert got.finished == (status in ("done", "failed"))


def test_a_death_budget_used_up_names_the_last_worker() -> None:
    worker = {"opplan:worker": "gpu7:4242:a1b2c3"}
    trials = [_trial(n, START_8, "died", system_attrs=worker) for n in range(MAX_DEATHS + 1)]
    status = _progress(*trials).statuses[START_8]
    assert status.reason == (
        f"died {MAX_DEATHS + 1} times: its worker stopped sending heartbeats each time "
        f"(killed, out of memory, or its machine lost), more than max_deaths={MAX_DEATHS} "
        f"allows; last worker gpu7:4242:a1b2c3, trial {MAX_DEATHS}"
    )


@pytest.mark.parametrize(
    ("trials", "died_last"),
    [
        ([], False),
        ([("died",)], True),
        ([("died",), ("error",)], False),
        ([("error",), ("stale",)], True),
        ([("died",), ("superseded",)], True),
    ],
)
def test_whether_the_last_attempt_died(trials: list[tuple[str]], died_last: bool) -> None:
    made = [_trial(n, START_8, state) for n, (state,) in enumerate(trials)]
    assert _progress(*made).statuses[START_8].died_last is died_last


def test_a_transition_is_blocked_until_every_transition_into_its_source_is_finished() -> None:
    # (16, 0.1) is reached from the initial model and from (8, 0.1).
    progress = _progress(
        _trial(0, START_8, "done"), _trial(1, START_16, "done"), _trial(2, DOWN_16, "waiting")
    )
    assert progress.statuses[DOWN_16].status == "blocked"
    assert progress.statuses[UP_8].status == "pending"
    progress = _progress(
        _trial(0, START_8, "done"),
        _trial(1, START_16, "done"),
        _trial(2, DOWN_16, "waiting"),
        _trial(3, UP_8, "failed"),  # a failed edge resolves the state all the same
    )
    assert progress.statuses[DOWN_16].status == "ready"


@pytest.mark.parametrize(("score_8", "score_16", "winner"), [(0.9, 0.4, 3), (0.2, 0.4, 1)])
def test_a_transition_starts_from_its_source_state_winner(
    score_8: float, score_16: float, winner: int
) -> None:
    progress = _progress(
        _trial(0, START_8, "done"),
        _trial(1, START_16, "done", score=score_16),
        _trial(3, UP_8, "done", score=score_8),
    )
    # (16, 0.1)'s best incoming transition is the trial to fine-tune from.
    assert progress.source_of(GRAPH.transition(DOWN_16)) == (winner, max(score_8, score_16))
    assert progress.source_of(GRAPH.transition(START_8)) == (None, 0.0)
    with pytest.raises(RuntimeError, match="is not resolved"):
        _progress().source_of(GRAPH.transition(DOWN_16))


def test_states_nothing_reaches_fail_their_transitions_transitively() -> None:
    progress = _progress(_trial(0, START_8, "failed"), _trial(1, START_16, "failed"))
    assert progress.is_complete, "nothing is left to run: planning ends"
    for key in (UP_8, DOWN_8, UP_LOW, DOWN_16):
        status = progress.statuses[key]
        assert status.status == "failed"
        assert status.reason.startswith("source state sampling=u,clip_length=")
        assert status.reason.endswith("is unreachable")
    with pytest.raises(op.GoalUnreachableError):
        op.compute_plan(GRAPH, progress.results)


def test_trials_that_must_not_run_are_listed_with_why() -> None:
    progress = _progress(
        _trial(0, START_8, "waiting"),
        _trial(1, START_8, "waiting"),  # a race's duplicate
        _trial(2, START_16, "done"),
        _trial(3, START_16, "waiting"),  # a retry enqueued after the transition finished
        _trial(4, UP_8, "waiting"),
    )
    superseded = {(t.number, kind, reason) for t, kind, reason in progress.superseded()}
    assert superseded == {
        (1, "superseded", f"duplicate of a trial of {START_8}"),
        (3, "superseded", f"duplicate of a trial of {START_16}"),
    }
    # The waiting trial of a transition out of an unreachable state is skipped.
    progress = _progress(
        _trial(0, START_8, "failed"), _trial(1, START_16, "done"), _trial(2, DOWN_8, "waiting")
    )
    ((trial, kind, reason),) = progress.superseded()
    assert (trial.number, kind) == (2, "skipped")
    assert reason == "source state sampling=u,clip_length=8,lr=0.1 is unreachable"


def test_counts_and_stray_trials() -> None:
    progress = _progress(
        _trial(0, START_8, "done"),
        _trial(1, START_16, "running"),
        _trial(2, "initial->sampling=v,clip_length=8,lr=0.1", "waiting"),  # another graph's
    )
    assert progress.counts() == {
        "done": 1,
        "failed": 0,
        "running": 1,
        "ready": 0,
        "pending": 2,
        "blocked": 2,
    }
    assert [t.number for t in progress.stray] == [2]
    assert progress.summary()["trials"] == 2
    assert not progress.is_complete


def test_a_duplicate_being_retired_is_not_taken_for_the_run() -> None:
    # retire_trial passes a duplicate through RUNNING on its way to FAIL. Seen in between, it
    # must not make the transition "running", or an observer would retire the real waiting
    # trial too and leave the transition without one.
    progress = _progress(_trial(0, START_8, "waiting"), _trial(1, START_8, "running"))
    status = progress.statuses[START_8]
    assert status.status == "ready"
    assert status.waiting is not None and status.waiting.number == 0
    assert status.running is None
    assert progress.superseded() == []
    # It is still watched for heartbeats, in case its retiring worker died midway.
    assert [t.number for t in progress.orphans] == [1]


def test_running_trials_of_a_finished_transition_are_orphans() -> None:
    progress = _progress(_trial(0, START_8, "done"), _trial(1, START_8, "running"))
    assert progress.statuses[START_8].status == "done"
    assert [t.number for t in progress.orphans] == [1]
    progress = _progress(_trial(0, START_8, "running"), _trial(1, START_8, "waiting"))
    assert progress.statuses[START_8].status == "running"
    assert progress.orphans == []
    assert [t.number for t, _, _ in progress.superseded()] == [1]
