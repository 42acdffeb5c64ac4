"""The ``opplan`` command: status and plan of planning studies, and the demo.

Follows ``optuna``'s conventions: ``--storage`` (or the ``OPTUNA_STORAGE`` environment
variable), ``--study-name``, ``--help`` per subcommand, exit code 0 on success, 1 on errors
(printed as one line on stderr, with any storage password masked), 2 on bad usage.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import datetime
import json
import os
import sys
import tempfile
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._plan import GoalUnreachableError
from optuna_opplan._progress import KEY_KNEE
from optuna_opplan._progress import Progress
from optuna_opplan._pruner import KneePointPruner
from optuna_opplan._storage import redact
from optuna_opplan._storage import storage_label
from optuna_opplan._study import create_planning_study
from optuna_opplan._study import load_planning_study
from optuna_opplan._worker import PlanIncompleteError
from optuna_opplan._worker import get_plan
from optuna_opplan._worker import get_progress
from optuna_opplan._worker import run_worker


class CLIError(Exception):
    """An error to print as one line and exit with status 1."""


def _add_study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=os.environ.get("OPTUNA_STORAGE"),
        help="Storage URL (sqlite:///x.db, postgresql://...) or journal file path "
        "(x.log); defaults to $OPTUNA_STORAGE.",
    )
    parser.add_argument("--study-name", required=True, help="The planning study's name.")


def _load(args: argparse.Namespace) -> optuna.Study:
    if not args.storage:
        raise CLIError("--storage is required (or set OPTUNA_STORAGE).")
    try:
        return load_planning_study(study_name=args.study_name, storage=args.storage)
    except KeyError:
        raise CLIError(
            f"Study {args.study_name!r} does not exist in {storage_label(args.storage)}."
        ) from None


def _status(args: argparse.Namespace) -> int:
    study = _load(args)
    progress = get_progress(study)
    report = status_report(study, progress)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    counts = report["counts"]
    print(f"study: {study.study_name}   storage: {storage_label(args.storage)}")
    print("transitions: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for entry in report["running"]:
        print(
            f"  running  trial {entry['trial']}: {entry['transition']} "
            f"(epoch {entry['epoch']}, worker {entry['worker']})"
        )
    print("states (best incoming transition so far):")
    for entry in report["states"]:
        score = "-" if entry["best"] is None else f"{entry['best']:.4f}"
        print(f"  {entry['status']:<10} {score:>7}  {entry['state']}")
    left = report["critical_path_left"]
    print(f"critical path left: {left['transitions']} transitions", end="")
    if left["eta_seconds"] is not None:
        print(
            f", about {datetime.timedelta(seconds=round(left['eta_seconds']))} at the mean "
            f"transition time of {left['mean_seconds']:.0f}s",
            end="",
        )
    print()
    return 0


def status_report(study: optuna.Study, progress: Progress) -> dict[str, Any]:
    """The content of ``opplan status``: counts, running trials, states, what is left."""
    graph = progress.graph
    running = []
    for s in progress.with_status("running"):
        assert s.running is not None
        knee = s.running.system_attrs.get(KEY_KNEE) or {}
        running.append(
            {
                "trial": s.running.number,
                "transition": s.transition.key,
                "epoch": len(s.running.intermediate_values) or knee.get("epoch", 0),
                "worker": s.running.system_attrs.get("opplan:worker", "?"),
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
        best = max((r.edge_score(progress.score) for r in done if r is not None), default=None)
        states.append({"state": state.key, "status": status, "best": best})
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for s in progress.statuses.values()
        for t in s.trials
        if t.state == TrialState.COMPLETE and t.datetime_start and t.datetime_complete
    ]
    left = _longest_unfinished_chain(graph, progress)
    mean = sum(durations) / len(durations) if durations else None
    return {
        "counts": progress.counts(),
        "running": running,
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


def _plan(args: argparse.Namespace) -> int:
    study = _load(args)
    try:
        plan = get_plan(study, partial=args.partial)
    except (PlanIncompleteError, GoalUnreachableError) as exc:
        raise CLIError(str(exc)) from None
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(plan)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from optuna_opplan.simulation import SimulatedObjective

    workdir = args.workdir or tempfile.mkdtemp(prefix="opplan-demo-")
    os.makedirs(workdir, exist_ok=True)
    url = f"sqlite:///{os.path.abspath(os.path.join(workdir, 'opplan.db'))}"
    name = f"demo-simulated-{int(time.time())}"
    graph = TransitionGraph.extended()
    study = create_planning_study(
        graph, storage=url, study_name=name, pruner=KneePointPruner(delay=10)
    )
    print(f"storage: {url}")
    print(f"study: {name}")
    print(f"graph: {graph}")
    started = time.monotonic()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_worker(study, SimulatedObjective(seed=args.seed), poll_interval=0.05)
    plan = get_plan(study)
    trained = sum(
        len(t.intermediate_values) for t in study.get_trials(states=(TrialState.COMPLETE,))
    )
    print(
        f"planned {len(graph.transitions)} transitions ({trained} simulated epochs) in "
        f"{time.monotonic() - started:.1f}s:"
    )
    print(plan)
    print(f"dashboard: optuna-dashboard {url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opplan", description="Optimization planning for Optuna studies."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    status = sub.add_parser("status", help="Transitions done/running/ready/blocked, per state.")
    _add_study_args(status)
    status.add_argument("--json", action="store_true", help="Print JSON.")
    status.set_defaults(func=_status)

    plan = sub.add_parser("plan", help="The plan: states, hyper-parameters, epochs, score.")
    _add_study_args(plan)
    plan.add_argument("--json", action="store_true", help="Print JSON.")
    plan.add_argument(
        "--partial", action="store_true", help="The best plan so far, before all finished."
    )
    plan.set_defaults(func=_plan)

    demo = sub.add_parser("demo", help="Plan on the simulated objective, locally.")
    demo.add_argument("--workdir", help="Where to put the storage (default: a temp dir).")
    demo.add_argument("--seed", type=int, default=0, help="Seed of the simulated curves.")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``opplan`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as exc:
        print(f"opplan: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line, password masked, instead of a traceback
        print(f"opplan: error: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
