"""What ``opplan status`` reports about a planning study: computed here as data, printed by
the CLI (``--json`` prints it as it is)."""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._progress import Progress
from optuna_opplan._protocol import KEY_KNEE
from optuna_opplan._protocol import KEY_RETRY_DELAY
from optuna_opplan._protocol import KEY_WORKER
from optuna_opplan._protocol import Status
from optuna_opplan._protocol import epochs_of
from optuna_opplan._study import failed_transitions


def status_report(progress: Progress) -> dict[str, Any]:
    """The content of ``opplan status``: counts, running trials, states, what is left.

    Args:
        progress: A planning study's progress, from :func:`~optuna_opplan.get_progress`.

    Returns:
        A JSON-ready dict: ``counts`` per transition status, the ``running`` trials, the
        transitions ``retrying`` after failed or killed attempts, the ``failed`` ones with
        their errors, how many transitions the failures left ``unreachable``, every state
        with its best incoming score so far, the ``critical_path_left`` and ``complete``.

    Example:

        >>> import optuna_opplan as op
        >>> graph = op.TransitionGraph.basic(
        ...     clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("uniform",)
        ... )
        >>> study = op.create_planning_study(graph)
        >>> report = status_report(op.get_progress(study))
        >>> report["counts"]["ready"], report["counts"]["blocked"], report["complete"]
        (2, 4, False)
        >>> report["critical_path_left"]["transitions"]  # the longest chain still to train
        3
    """
    graph = progress.graph
    running = []
    for s in progress.with_status(Status.RUNNING):
        assert s.running is not None
        knee = s.running.system_attrs.get(KEY_KNEE) or {}
        running.append(
            {
                "trial": s.running.number,
                "transition": s.transition.key,
                "epoch": epochs_of(s.running) or knee.get("epoch", 0),
                "worker": s.running.system_attrs.get(KEY_WORKER, "?"),
            }
        )
    # Transitions still in play after failed or killed attempts: how much budget they used.
    retrying = []
    for s in progress.statuses.values():
        if s.finished or not s.attempts:
            continue
        delay = s.waiting.system_attrs.get(KEY_RETRY_DELAY) if s.waiting is not None else None
        retrying.append(
            {
                "transition": s.transition.key,
                "failed": s.failures,
                "max_retries": progress.max_retries,
                "died": s.deaths,
                "max_deaths": progress.max_deaths,
                "backoff_seconds": delay,
            }
        )
    states = []
    for state in graph.states:
        if state in progress.winners:
            winner = progress.winners[state]
            status = "resolved" if winner is not None else "unreachable"
        else:
            status = "open"
        done = [
            progress.statuses[t.key].result
            for t in graph.predecessors(state)
            if progress.statuses[t.key].result is not None
        ]
        scores = [r.edge_score(progress.score) for r in done if r is not None]
        pick = min if progress.direction == "minimize" else max
        best = pick(scores, default=None)
        states.append({"state": state.key, "status": status, "best": best})
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for s in progress.statuses.values()
        for t in s.trials
        if t.state == TrialState.COMPLETE and t.datetime_start and t.datetime_complete
    ]
    left = _longest_unfinished_chain(graph, progress)
    mean = sum(durations) / len(durations) if durations else None
    failed = failed_transitions(progress)
    return {
        "counts": progress.counts(),
        "running": running,
        "retrying": retrying,
        "failed": [{"transition": key, "error": error} for key, error in failed],
        "unreachable": len(progress.with_status(Status.FAILED)) - len(failed),
        "states": states,
        "critical_path_left": {
            "transitions": left,
            "mean_seconds": mean,
            "eta_seconds": None if mean is None else mean * left,
        },
        "complete": progress.is_complete,
    }


def _longest_unfinished_chain(graph: TransitionGraph, progress: Progress) -> int:
    # Longest chain of unfinished transitions: a lower bound on what is left, in transitions.
    best: dict[Any, int] = {}
    for transition in reversed(graph.transitions):
        if progress.statuses[transition.key].finished:
            continue
        after = [best.get(t.key, 0) for t in graph.successors(transition.target)]
        best[transition.key] = 1 + max(after, default=0)
    return max(best.values(), default=0)
