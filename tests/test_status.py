"""``opplan status``'s report, from hand-made trials: what is left and each state's best."""

from __future__ import annotations

import datetime

from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import pytest

import optuna_opplan as op
from optuna_opplan._protocol import KEY_RESULT
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._status import status_report

GRAPH = op.TransitionGraph.basic(
    clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("u",)
)
# initial -> (8, 0.1) and initial -> (16, 0.1); (8, 0.1) -> (16, 0.1), (8, 0.1) -> (8, 0.01),
# (8, 0.01) -> (16, 0.01), (16, 0.1) -> (16, 0.01); the goal is (16, 0.01).
START_8, START_16, UP_8, DOWN_8, UP_LOW, DOWN_16 = (t.key for t in GRAPH.transitions)
HIGH_16 = "sampling=u,clip_length=16,lr=0.1"


def _done(number: int, key: str, score: float = 0.5, seconds: float = 10.0) -> FrozenTrial:
    result = op.TransitionResult(score=score, observed=score, epochs=3, trial=number)
    start = datetime.datetime(2026, 1, 1)
    return FrozenTrial(
        number=number,
        state=TrialState.COMPLETE,
        value=score,
        datetime_start=start,
        datetime_complete=start + datetime.timedelta(seconds=seconds),
        params={},
        distributions={},
        user_attrs={},
        system_attrs={KEY_TRANSITION: key, KEY_RESULT: result.to_dict()},
        intermediate_values={},
        trial_id=number,
    )


def _report(*trials: FrozenTrial) -> dict:
    return status_report(op.Progress(GRAPH, list(trials)))


@pytest.mark.parametrize(
    ("done", "left", "eta", "complete"),
    [
        # Nothing trained: the longest chain is three transitions (either way to the goal).
        ((), 3, None, False),
        # One first transition done: two on every chain still open.
        ((START_8,), 2, 20.0, False),
        ((START_8, START_16, UP_8, DOWN_8), 1, 10.0, False),
        ((START_8, START_16, UP_8, DOWN_8, UP_LOW, DOWN_16), 0, 0.0, True),
    ],
)
def test_what_is_left(done: tuple[str, ...], left: int, eta: float | None, complete: bool) -> None:
    report = _report(*(_done(n, key) for n, key in enumerate(done)))
    assert report["critical_path_left"]["transitions"] == left
    assert report["critical_path_left"]["eta_seconds"] == eta
    assert report["complete"] is complete
    assert report["counts"]["done"] == len(done)


@pytest.mark.parametrize(
    ("done", "status", "best"),
    [
        ((), "open", None),
        # One of its two incoming transitions done: its score so far, not yet resolved.
        (((START_16, 0.4),), "open", 0.4),
        (((START_16, 0.4), (START_8, 0.6), (UP_8, 0.7)), "resolved", 0.7),
        (((START_16, 0.9), (START_8, 0.6), (UP_8, 0.7)), "resolved", 0.9),
    ],
)
def test_a_state_shows_its_best_incoming_score(
    done: tuple[tuple[str, float], ...], status: str, best: float | None
) -> None:
    report = _report(*(_done(n, key, score) for n, (key, score) in enumerate(done)))
    (state,) = [s for s in report["states"] if s["state"] == HIGH_16]
    assert (state["status"], state["best"]) == (status, best)
