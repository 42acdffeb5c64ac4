"""Evidence: planned schedule vs the best hand-tuned grid schedule vs TPE + Hyperband.

For every bundled synthetic flavour and seed (a "cell") it runs, in one Optuna storage:

1. planning: the transition graph trained with the knee pruner and the DP (``run_worker``);
2. the grid baseline: every hand-tuned schedule of the paper's space (clip schedules x decays
   x samplings x epoch budgets), the best chosen by its final validation score;
3. what a user would pick instead: Optuna's ``TPESampler`` with ``HyperbandPruner`` (its first
   rung at the knee pruner's delay, so neither stops a run sooner) over the same schedule
   space, given exactly the planning's compute (clip-frames of training and
   validation, to the epoch), a schedule it proposes again after training it to the end told
   its first score instead of trained again (``run_tpe``);
4. the test split, scored video by video for the planned model, the best grid schedule and
   TPE's best schedule.

Test videos are the same in every seed, so comparisons are paired; the intervals are bootstrap
intervals over test videos and seeds (``paired_difference``, as ``opplan compare``).
Everything is an Optuna study in one journal file: kill the run and start the same command
again, it continues where it stopped (each cell is locked by the process running it, so two
instances share the cells).

Run from the repository root::

    nice -n 10 .venv/bin/python -m benchmarks.evidence          # the full run
    .venv/bin/python -m benchmarks.evidence --report-only      # rewrite the results file
    .venv/bin/python -m benchmarks.evidence --smoke --workdir /tmp/ev --results /tmp/ev
    .venv/bin/python -m benchmarks.evidence --train-list train.txt --test-list test.txt \
        --class-file classes.txt --name mine                     # your own videos instead
    .venv/bin/python -m benchmarks.evidence --seeds 0 1 2 3 4  # two more seeds: more cells
    .venv/bin/python -m benchmarks.evidence --flavours rhythm motion  # these first, in order
    .venv/bin/python -m benchmarks.evidence --forget-unfinished  # storage moved without models
    .venv/bin/python -m benchmarks.evidence --train-per-class 60 --val-fraction 0.5 \
        --workdir benchmarks/.work/evidence-val30      # 30 training videos a class, not 60

A video set of your own (mmaction2-style list files, read as ``opplan plan`` reads them)
replaces the bundled flavours; its run lives in ``benchmarks/.work/evidence-NAME`` and writes
its results there.

Results: ``benchmarks/results/evidence.md`` and ``evidence.json``, rewritten after every cell;
they say how many cells are finished and give numbers only for finished flavours.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import contextlib
from dataclasses import asdict
from dataclasses import replace
import fcntl
import os
import sys
import time
from typing import Any

import optuna

from benchmarks import _evidence_report as report
from benchmarks._evidence_cell import Cell
from benchmarks._evidence_cell import say
from benchmarks._evidence_data import ListSet
from benchmarks._evidence_setting import FULL
from benchmarks._evidence_setting import SMOKE
from benchmarks._evidence_setting import Setting
from benchmarks._evidence_setting import check_setting
from benchmarks._evidence_setting import study_attrs
from optuna_opplan import create_storage
from optuna_opplan.video.synthetic import FLAVOURS

HERE = os.path.dirname(os.path.abspath(__file__))


@contextlib.contextmanager
def _cell_lock(path: str) -> Iterator[bool]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _forget(cell: Cell, lock: str) -> None:
    """Delete an unfinished cell's studies, unless a process runs it."""
    if cell.done():
        return
    with _cell_lock(lock) as mine:
        if not mine:
            raise SystemExit(f"{cell.name} is running: stop its process first.")
        names = {s.study_name for s in optuna.get_all_study_summaries(cell.storage)}
        gone = [n for n in cell.study_names() if n in names]
        for name in gone:
            optuna.delete_study(study_name=name, storage=cell.storage)
        say(f"{cell.name}: forgot {', '.join(gone) or 'nothing (not started)'}")


def _log_invocation(storage: Any, context: report.Context) -> list[dict[str, Any]]:
    """Append this invocation (command, date, commit, machine, load) to the storage's list,
    so the results name every commit and machine state the run went through; return it."""
    meta = optuna.load_study(storage=storage, study_name="evidence-setting")
    runs = list(study_attrs(meta).get("invocations", [])) + [asdict(context)]
    meta._storage.set_study_system_attr(meta._study_id, "invocations", runs)
    return runs


def _write(
    setting: Setting,
    cells: list[Cell],
    context: report.Context,
    results: str,
    smoke: bool,
    storage: Any,
    listset: ListSet | None,
) -> str:
    meta = study_attrs(optuna.load_study(storage=storage, study_name="evidence-setting"))
    return report.write(
        setting,
        cells,
        context,
        results,
        smoke=smoke,
        runs=meta.get("invocations", []),
        projection=meta.get("projection"),
        data_text=None if listset is None else listset.describe(setting, cells[0].splits),
    )


def _positive_int(text: str) -> int:
    # argparse would name a ValueError by this function's name ("invalid _positive_int value"):
    # every refusal says what was expected instead.
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, but got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, but got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny setting, for tests")
    parser.add_argument(
        "--workdir",
        help="the storage, models and generated videos (default: benchmarks/.work/evidence, "
        "with --train-list benchmarks/.work/evidence-NAME)",
    )
    parser.add_argument(
        "--results",
        help="default: benchmarks/results (--smoke or --train-list: the workdir)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="default: 0 1 2; more seeds add cells to a run (narrower intervals)",
    )
    parser.add_argument(
        "--flavours",
        nargs="+",
        choices=FLAVOURS,
        help="default: all; in the order their cells run (a flavour added later adds cells)",
    )
    own = parser.add_argument_group(
        "a video set of your own, in list files (replaces the bundled flavours)"
    )
    own.add_argument("--train-list", help="list file of training videos (path label per line)")
    own.add_argument("--test-list", help="list file of test videos")
    own.add_argument("--class-file", help="class names, one per line")
    own.add_argument("--root", help="folder list paths are relative to (default: the lists')")
    own.add_argument("--name", help="the set's name in the report (default: the root's)")
    own.add_argument("--flip", action="store_true", help="random horizontal flips in training")
    size = parser.add_argument_group(
        "the split (stored with the run: another value needs another --workdir)"
    )
    size.add_argument(
        "--train-per-class",
        type=_positive_int,
        help="bundled flavours' training videos a class, validation carved from them "
        f"(default {FULL.train_per_class})",
    )
    size.add_argument(
        "--val-fraction",
        type=_fraction,
        help=f"the share of training videos held out for validation (default {FULL.val_fraction})",
    )
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--forget-unfinished",
        action="store_true",
        help="delete the studies of unfinished cells, which then start again, and stop: for a "
        "storage moved without its workdir (an unfinished cell's models stay behind)",
    )
    parser.add_argument("--no-calibrate", action="store_true")
    parser.add_argument(
        "--calibrate-only", action="store_true", help="print the projected cost and stop"
    )
    parser.add_argument("--videos", help="where the generated videos go (default: workdir)")
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args(argv)
    setting = SMOKE if args.smoke else FULL
    if args.flavours:
        setting = replace(setting, flavours=tuple(dict.fromkeys(args.flavours)))
    if args.train_per_class is not None:
        setting = replace(setting, train_per_class=args.train_per_class)
    if args.val_fraction is not None:
        setting = replace(setting, val_fraction=args.val_fraction)
    listset = None
    if args.train_list and args.train_per_class is not None:
        parser.error("--train-per-class sizes the bundled flavours; a --train-list set is its own")
    if args.train_list:
        listset = ListSet.from_args(
            args.name, args.root, args.train_list, args.test_list, args.class_file, args.flip
        )
        setting = replace(setting, flavours=(listset.name,), num_classes=listset.num_classes())
    default = "evidence" if listset is None else f"evidence-{listset.name}"
    args.workdir = args.workdir or os.path.join(HERE, ".work", default)
    results = args.results or (
        args.workdir if args.smoke or listset else os.path.join(HERE, "results")
    )
    os.makedirs(args.workdir, exist_ok=True)
    storage = create_storage(os.path.join(args.workdir, "evidence.log"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setting = check_setting(storage, setting, listset, args.seeds, report_only=args.report_only)
    context = report.Context.now(argv if argv is not None else sys.argv[1:])
    meta = optuna.load_study(storage=storage, study_name="evidence-setting")
    cells = [
        Cell(setting, f, s, args.workdir, storage, args.videos, listset)
        for f, s in setting.cells()
    ]
    if args.forget_unfinished:
        for cell in cells:
            _forget(cell, os.path.join(args.workdir, "locks", cell.name))
        return 0
    if not args.report_only and not args.no_calibrate:
        projection: dict[str, Any] = {**report.project(cells[0], say)}
        projection.update(at=context.started, load=context.load_at_start)
        meta._storage.set_study_system_attr(meta._study_id, "projection", projection)
        if args.calibrate_only:
            return 0
    if not args.report_only:
        _log_invocation(storage, context)
    if not args.report_only:
        for cell in cells:
            if cell.done():
                continue
            with _cell_lock(os.path.join(args.workdir, "locks", cell.name)) as mine:
                if not mine:
                    say(f"{cell.name}: another process runs it; next cell")
                    continue
                started = time.monotonic()
                cell.run(heartbeat=args.heartbeat, grace=args.grace)
                say(f"{cell.name}: done in {time.monotonic() - started:.0f}s")
            _write(setting, cells, context, results, args.smoke, storage, listset)
    path = _write(setting, cells, context, results, args.smoke, storage, listset)
    say(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
