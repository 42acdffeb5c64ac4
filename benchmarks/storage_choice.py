"""Which local storage should be the embedded default: SQLite with BEGIN IMMEDIATE or a journal?

Run from the repository root: ``.venv/bin/python -m benchmarks.storage_choice [--graph G]``.

For each storage made by ``op.create_storage`` (``sqlite:///plan.db``: SQLite, every transaction
``BEGIN IMMEDIATE``; ``plan.log``: Optuna's journal file with an ``open``-based lock) and for
1, 2 and 4 worker processes, a fresh study plans the whole graph: each process runs
``op.run_worker`` with a fast ``SimulatedObjective`` (no sleep: the run is bound by the storage
and the knee fits). Reported: wall time (first worker starts planning -> last one returns),
transitions per minute, the p50/p99 latency of a worker's scan + claim (from the start of the
``sampler.progress`` call that found the transition to the end of the queue's ``claim`` that
took it, timed inside the worker processes by wrapping the sampler's methods), the
latency of every scan, the storage's size on disk, and an exactly-once check (one COMPLETE
trial per transition, no transition run twice).

Idle workers poll with ``poll_interval=0.05``, ``max_poll_interval=1``: with transitions
lasting a second, ``run_worker``'s defaults (0.5 s growing to 10 s) would measure the sleeps.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import json
import multiprocessing
import os
import sqlite3
import tempfile
import time
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from benchmarks._env import load_average
from benchmarks._results import RESULTS_DIR
from benchmarks._results import command_line
from benchmarks._results import header_lines
from benchmarks._results import markdown_table
from benchmarks._results import text_table
import optuna_opplan as op
from optuna_opplan._protocol import KEY_OUTCOME
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._queue import TransitionQueue
from optuna_opplan.simulation import SimulatedObjective

WORKER_COUNTS = (1, 2, 4)
# No sleep: bound by storage and fits. A short sleep per epoch stands in for training, so that
# extra workers have something to overlap and the storage's share shows.
EPOCH_SECONDS = (0.0, 0.05)
KINDS = ("sqlite", "journal")
STUDY = "plan"
# Written after reading the numbers of benchmarks/results/storage_choice.md; see "Reading".
RECOMMENDATION = [
    "## Recommendation",
    "",
    'Make the journal file (`op.create_storage("plan.log")`) the embedded default. Both '
    "storages ran every transition exactly once in every run; the journal was faster in every "
    "run, with a scan+claim p50 5-9x lower.",
    "",
    "- Its scan is incremental: a worker replays only the log lines appended since its last "
    "read, so `sampler.progress` costs about a millisecond. SQLite, through Optuna's "
    "`_CachedStorage`, re-reads every unfinished (waiting or running) trial with SQLAlchemy on "
    "every scan, inside a `BEGIN IMMEDIATE` transaction that also serialises the readers with "
    "the writers (workers enqueue a transition only once it is ready, which keeps the "
    "unfinished trials few; see `overhead.md`: the scan still grows with the study).",
    "- The durable write does not explain the gap: SQLite as `create_storage` sets it up (WAL, "
    "synchronous=NORMAL) syncs no file per commit, and its commit costs no more than the "
    "journal's append + fsync (see the probe above); the scan does.",
    "- Smaller on disk, and its `open()`-based lock works on NFS, where SQLite's locking is "
    "not reliable.",
    "- Costs: the lock waits with exponential backoff up to 1 s, so a contended write can "
    "stall for a second or more (the p99 column; negligible against minute-long epochs); "
    "the file only grows (every report and heartbeat appends) and a starting worker reads it "
    "whole; a worker killed while it holds the lock blocks the writers for the lock's 30 s "
    "grace period.",
    "",
    "Keep `sqlite:///` for users who want one queryable database file.",
    "",
]


def make_graph(name: str) -> op.TransitionGraph:
    if name == "extended":
        return op.TransitionGraph.extended()
    if name == "big":
        # 5 clips x 5 lrs x 2 samplings: 116 transitions, a longer plan with more trials.
        return op.TransitionGraph.extended(
            clip_lengths=(8, 16, 32, 64, 128),
            learning_rates=(0.1, 0.01, 0.001, 0.0001, 0.00001),
        )
    raise ValueError(f"unknown graph {name!r}")


def storage_url(kind: str, folder: str) -> str:
    return f"sqlite:///{folder}/plan.db" if kind == "sqlite" else f"{folder}/plan.log"


def make_study(url: str, graph: op.TransitionGraph) -> optuna.Study:
    return optuna.create_study(
        storage=op.create_storage(url),
        study_name=STUDY,
        direction="maximize",
        sampler=op.PlanningSampler(graph),
        pruner=op.KneePointPruner(delay=10),
        load_if_exists=True,
    )


def worker_main(
    url: str, graph_name: str, seed: int, epoch_seconds: float, out_path: str, barrier: Any
) -> None:  # pragma: no cover - runs in a subprocess
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = make_study(url, make_graph(graph_name))
    sampler = study.sampler
    assert isinstance(sampler, op.PlanningSampler)
    events: list[tuple[str, float, float, bool]] = []

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            events.append((name, t0, time.perf_counter(), out is not None))
            return out

        return wrapper

    # An instance attribute shadows the method run_worker's queue calls through the sampler;
    # the queue's own methods are wrapped on the class (this process runs one worker).
    sampler.progress = timed("progress", sampler.progress)  # type: ignore[method-assign]
    TransitionQueue.reconcile = timed("reconcile", TransitionQueue.reconcile)  # type: ignore[method-assign]
    TransitionQueue.claim = timed("claim", TransitionQueue.claim)  # type: ignore[method-assign]
    barrier.wait()
    start = time.perf_counter()
    done = op.run_worker(
        study,
        SimulatedObjective(seed=seed, epoch_seconds=epoch_seconds),
        poll_interval=0.05,
        max_poll_interval=1.0,
    )
    end = time.perf_counter()
    with open(out_path, "w") as f:
        json.dump({"start": start, "end": end, "done": done, "events": events}, f)


def run_once(
    kind: str, workers: int, graph_name: str, seed: int, epoch_seconds: float
) -> dict[str, Any]:
    graph = make_graph(graph_name)
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=os.getcwd(), prefix=".storage-bench-") as folder:
        url = storage_url(kind, folder)
        make_study(url, graph)  # before the workers race to load it
        barrier = ctx.Barrier(workers)
        outs = [os.path.join(folder, f"worker{i}.json") for i in range(workers)]
        procs = [
            ctx.Process(
                target=worker_main, args=(url, graph_name, seed, epoch_seconds, out, barrier)
            )
            for out in outs
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
            assert p.exitcode == 0, f"a worker exited with {p.exitcode}"
        logs = []
        for out in outs:
            with open(out) as f:
                logs.append(json.load(f))
        files = [f for f in os.listdir(folder) if f.startswith("plan.")]
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in files)

        trials = optuna.load_study(study_name=STUDY, storage=op.create_storage(url)).trials
        complete: dict[str, int] = {}
        ran: dict[str, int] = {}
        for t in trials:
            key = t.system_attrs[KEY_TRANSITION]
            outcome = (t.system_attrs.get(KEY_OUTCOME) or {}).get("status")
            complete[key] = complete.get(key, 0) + (t.state == TrialState.COMPLETE)
            # A retired duplicate never ran; anything else that left WAITING did.
            ran[key] = ran.get(key, 0) + (outcome != "superseded")
        exactly_once = all(complete.get(t.key) == 1 for t in graph.transitions) and all(
            n == 1 for n in ran.values()
        )
        plan = op.get_plan(make_study(url, graph))

    wall = max(log["end"] for log in logs) - min(log["start"] for log in logs)
    asks: list[float] = []
    scans: list[float] = []
    for log in logs:
        last_scan_start: float | None = None
        for name, t0, t1, _ in log["events"]:
            if name == "progress":
                last_scan_start = t0
                scans.append(t1 - t0)
            elif name == "claim" and last_scan_start is not None:
                asks.append(t1 - last_scan_start)
    return {
        "storage": kind,
        "epoch_s": epoch_seconds,
        "workers": workers,
        "transitions": len(graph.transitions),
        "trials": len(trials),
        "wall": wall,
        "per_minute": len(graph.transitions) / wall * 60,
        "ask_p50": float(np.percentile(asks, 50)),
        "ask_p99": float(np.percentile(asks, 99)),
        "scan_p50": float(np.percentile(scans, 50)),
        "scans": len(scans),
        "bytes": size,
        "exactly_once": exactly_once,
        "per_worker": "/".join(str(log["done"]) for log in logs),
        "plan_score": plan.score,
    }


def _sqlite_commits(folder: str, n: int, pragmas: tuple[str, ...]) -> float:
    db = os.path.join(folder, ".probe.db")
    con = sqlite3.connect(db, isolation_level=None)
    for pragma in pragmas:
        con.execute(pragma)
    con.execute("CREATE TABLE t (x)")
    commit = []
    for _ in range(n):
        t0 = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO t VALUES (1)")
        con.execute("COMMIT")
        commit.append(time.perf_counter() - t0)
    con.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    return float(np.median(commit))


def write_probe(folder: str, n: int = 30) -> dict[str, float]:
    """The raw cost of one write on this disk: an SQLite commit as ``op.create_storage`` sets
    SQLite up (WAL, synchronous=NORMAL: no fsync per commit), one in SQLite's default
    rollback-journal mode (for contrast: the product does not use it), and the journal
    storage's append + fsync."""
    wal = _sqlite_commits(folder, n, ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"))
    rollback = _sqlite_commits(folder, n, ())
    log = os.path.join(folder, ".probe.log")
    append = []
    with open(log, "ab") as f:
        for _ in range(n):
            t0 = time.perf_counter()
            f.write(b'{"op_code": 0}\n')
            f.flush()
            os.fsync(f.fileno())
            append.append(time.perf_counter() - t0)
    os.remove(log)
    return {
        "sqlite_commit": wal,
        "sqlite_rollback_commit": rollback,
        "append_fsync": float(np.median(append)),
    }


def recommendation(rows: list[dict[str, Any]], probe: dict[str, float]) -> list[str]:
    def pick(kind: str, epoch_s: float, workers: int) -> dict[str, Any] | None:
        for r in rows:
            if (r["storage"], r["epoch_s"], r["workers"]) == (kind, epoch_s, workers):
                return r
        return None

    lines = ["## Reading", ""]
    for epoch_s in sorted({r["epoch_s"] for r in rows}):
        for workers in sorted({r["workers"] for r in rows}):
            sq, jo = pick("sqlite", epoch_s, workers), pick("journal", epoch_s, workers)
            if sq is None or jo is None:
                continue
            lines.append(
                f"- {epoch_s:g} s/epoch, {workers} workers: journal {jo['wall']:.1f} s vs "
                f"SQLite {sq['wall']:.1f} s wall; scan+claim p50 {jo['ask_p50'] * 1e3:.1f} vs "
                f"{sq['ask_p50'] * 1e3:.1f} ms, p99 {jo['ask_p99'] * 1e3:.0f} vs "
                f"{sq['ask_p99'] * 1e3:.0f} ms; {jo['bytes'] / 1024:.0f} vs "
                f"{sq['bytes'] / 1024:.0f} KiB on disk."
            )
    lines += [
        "",
        f"One write on this disk: SQLite commit as `create_storage` runs it (WAL, "
        f"synchronous=NORMAL, BEGIN IMMEDIATE) {probe['sqlite_commit'] * 1e3:.2f} ms p50 "
        f"(in the rollback-journal mode the product does not use: "
        f"{probe['sqlite_rollback_commit'] * 1e3:.2f} ms); append + fsync (what the journal "
        f"does per write) {probe['append_fsync'] * 1e3:.2f} ms p50.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graph", choices=("extended", "big"), default="extended")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--workers", nargs="+", type=int, default=list(WORKER_COUNTS))
    parser.add_argument(
        "--epoch-seconds", nargs="+", type=float, default=list(EPOCH_SECONDS), dest="epochs"
    )
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "storage_choice.md"))
    args = parser.parse_args()
    command = command_line()
    load_at_start = load_average()

    rows = []
    for epoch_seconds in args.epochs:
        for kind in args.kinds:
            for workers in args.workers:
                row = run_once(kind, workers, args.graph, args.seed, epoch_seconds)
                rows.append(row)
                print(
                    f"{kind:8s} {epoch_seconds}s/epoch {workers} workers: {row['wall']:.1f} s, "
                    f"{row['per_minute']:.0f} transitions/min, "
                    f"ask p50 {row['ask_p50'] * 1e3:.1f} ms",
                    flush=True,
                )
    header = [
        "epoch s",
        "storage",
        "workers",
        "transitions",
        "trials",
        "wall s",
        "transitions/min",
        "scan+claim p50 ms",
        "scan+claim p99 ms",
        "scan p50 ms",
        "scans",
        "on disk KiB",
        "exactly once",
        "done per worker",
        "plan score",
    ]
    table = [
        [
            f"{r['epoch_s']:g}",
            r["storage"],
            str(r["workers"]),
            str(r["transitions"]),
            str(r["trials"]),
            f"{r['wall']:.1f}",
            f"{r['per_minute']:.0f}",
            f"{r['ask_p50'] * 1e3:.1f}",
            f"{r['ask_p99'] * 1e3:.1f}",
            f"{r['scan_p50'] * 1e3:.1f}",
            str(r["scans"]),
            f"{r['bytes'] / 1024:.0f}",
            "yes" if r["exactly_once"] else "NO",
            r["per_worker"],
            f"{r['plan_score']:.4f}",
        ]
        for r in rows
    ]
    print()
    print(text_table(header, table))
    lines = header_lines(
        "Local storage: SQLite (BEGIN IMMEDIATE) vs journal file", command, load_at_start
    )
    lines += [
        f"Graph `{args.graph}` ({rows[0]['transitions']} transitions), "
        f"SimulatedObjective(seed={args.seed}, epoch_seconds=`epoch s`), "
        "KneePointPruner(delay=10), "
        "run_worker(poll_interval=0.05, max_poll_interval=1.0), one process per worker "
        "(spawn), storage files in the repository's file system.",
        "",
    ]
    lines += markdown_table(header, table)
    lines.append("")
    with tempfile.TemporaryDirectory(dir=os.getcwd(), prefix=".storage-bench-") as folder:
        probe = write_probe(folder)
    lines += recommendation(rows, probe)
    lines += RECOMMENDATION
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
