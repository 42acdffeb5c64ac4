"""Duplicate work under concurrency: Optuna's GridSampler against PlanningSampler + run_worker.

Run from the repository root::

    .venv/bin/python -m benchmarks.grid_duplicates [--runs 3] [--workers 4 8]

N worker processes share one storage. GridSampler: a grid of 36 points (the size of the
paper's extended graph), a short sleeping objective, ``study.optimize`` in every worker until
the sampler stops it; we count trials beyond one per grid point. PlanningSampler: the extended
graph (36 transitions), :func:`optuna_opplan.run_worker` with the simulated objective, whose
every start is logged; we count starts beyond one per transition. Both on SQLite (GridSampler
on Optuna's plain URL, and as a control on :func:`optuna_opplan.create_storage`'s SQLite) and
on a PostgreSQL server started for the run (as in the tests: ``tests/conftest.py``).

Writes ``benchmarks/results/grid_duplicates.md``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
import datetime
import os
from pathlib import Path
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import optuna
from optuna.trial import TrialState
import sqlalchemy

from benchmarks._env import git_commit
from benchmarks._env import load_average
from benchmarks._env import machine
import optuna_opplan as op
from optuna_opplan._protocol import KEY_TRANSITION

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import _worker_main as wm  # noqa: E402
from conftest import PostgresServer  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "grid_duplicates.md"
WORKER = ROOT / "tests" / "_worker_main.py"
# 2 x 3 x 3 x 2 = 36 points, as many as the extended graph has transitions.
GRID: dict[str, list[Any]] = {
    "sampling": ["consecutive", "uniform"],
    "clip_length": [16, 32, 64],
    "lr": [0.01, 0.001, 0.0001],
    "source": ["a", "b"],
}
GRID_SIZE = 36
GRID_SLEEP = (0.03, 0.09)  # seconds per grid trial: short, and uneven like real training
PLAN_GRAPH = "extended"
PLAN_SETTINGS = ["--epoch-seconds", "0.005", "--delay", "3", "--max-epochs", "8"]
# Heartbeats as a user would set them for short jobs; a grace period well past any stall
# of a loaded machine, since no worker is killed here.
PLAN_HEARTBEAT = ["--heartbeat-interval", "1.0", "--grace-period", "60"]
RUN_TIMEOUT = 900.0


# --------------------------------------------------------------------------- grid worker
def _grid_objective(trial: optuna.Trial) -> float:
    params = {name: trial.suggest_categorical(name, values) for name, values in GRID.items()}
    time.sleep(random.uniform(*GRID_SLEEP))
    return float(params["clip_length"]) * float(params["lr"])


def grid_worker(url: str, study_name: str, seed: int, hardened: bool) -> None:
    """One GridSampler worker, as Optuna's documentation runs them in parallel."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    random.seed(seed)
    # No seed, as users run it: GridSampler numbers its points by a seeded shuffle, so workers
    # with different seeds would disagree on what a grid id means.
    sampler = optuna.samplers.GridSampler(GRID)
    storage = op.create_storage(url) if hardened else url
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    # GridSampler stops the study once every point has been evaluated.
    study.optimize(_grid_objective)


# ------------------------------------------------------------------------------ runs
@dataclass
class Outcome:
    trials: int
    extra: int  # evaluations beyond one per point / transition
    duplicated: int  # points / transitions evaluated more than once
    lost: int  # points / transitions never completed
    seconds: float


@dataclass
class Row:
    sampler: str
    storage: str
    workers: int
    outcomes: list[Outcome] = field(default_factory=list)


def _spawn(args: list[str], folder: Path, tag: str) -> subprocess.Popen[bytes]:
    with open(folder / f"{tag}.err", "wb") as err:
        return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)


def _wait(procs: list[subprocess.Popen[bytes]], folder: Path) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    for proc in procs:
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise RuntimeError(f"workers did not finish in {RUN_TIMEOUT}s; see {folder}") from None
        if code != 0:
            errors = "\n".join(p.read_text()[-2000:] for p in folder.glob("*.err"))
            raise RuntimeError(f"a worker exited with {code}:\n{errors}")


def run_grid(url: str, workers: int, folder: Path, run: int, hardened: bool) -> Outcome:
    name = f"grid-{workers}-{run}"
    optuna.create_study(study_name=name, storage=op.create_storage(url) if hardened else url)
    start = time.monotonic()
    procs = [
        _spawn(
            [sys.executable, "-m", "benchmarks.grid_duplicates", "--grid-worker", url, name,
             str(1000 * run + i), str(int(hardened))],
            folder,
            f"{name}-{i}",
        )
        for i in range(workers)
    ]  # fmt: skip
    _wait(procs, folder)
    seconds = time.monotonic() - start
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    points = Counter(tuple(t.params[k] for k in GRID) for t in trials if t.params)
    complete = {tuple(t.params[k] for k in GRID) for t in trials if t.state == TrialState.COMPLETE}
    return Outcome(
        trials=len(trials),
        extra=len(trials) - len(points),
        duplicated=sum(1 for n in points.values() if n > 1),
        lost=GRID_SIZE - len(complete),
        seconds=seconds,
    )


def run_plan(url: str, workers: int, folder: Path, run: int, hardened: bool) -> Outcome:
    name = f"plan-{workers}-{run}"
    log = folder / f"{name}-{time.monotonic_ns()}.log"
    wm.make_study(url, name, graph=PLAN_GRAPH, delay=3, max_epochs=8)
    start = time.monotonic()
    procs = [
        _spawn(
            [sys.executable, str(WORKER), "--storage", url, "--study", name, "--log", str(log),
             "--graph", PLAN_GRAPH, "--seed", str(run), "--no-create", *PLAN_SETTINGS,
             *PLAN_HEARTBEAT],
            folder,
            f"{name}-{i}",
        )
        for i in range(workers)
    ]  # fmt: skip
    _wait(procs, folder)
    seconds = time.monotonic() - start
    study = wm.make_study(url, name, graph=PLAN_GRAPH, delay=3, max_epochs=8, create=False)
    trials = study.get_trials(deepcopy=False)
    keys = [t.key for t in wm.GRAPHS[PLAN_GRAPH]().transitions]
    starts = Counter(key for event, _, key, _, _ in wm.parse_log(str(log)) if event == "START")
    complete = Counter(
        t.system_attrs.get(KEY_TRANSITION) for t in trials if t.state == TrialState.COMPLETE
    )
    op.get_plan(study)  # the plan must be computable
    return Outcome(
        trials=sum(starts.values()),
        extra=sum(starts.values()) - len(starts),
        duplicated=sum(1 for n in starts.values() if n > 1)
        + sum(1 for n in complete.values() if n > 1),
        lost=sum(1 for k in keys if complete[k] == 0),
        seconds=seconds,
    )


# ---------------------------------------------------------------------------- report
def _table(rows: list[Row]) -> list[str]:
    lines = [
        "| sampler | storage | workers | runs | trials/starts per run | extra runs (total) "
        "| duplicated points per run (max) | extra / total | lost | wall s (mean) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        o = row.outcomes
        total = sum(x.trials for x in o)
        extra = sum(x.extra for x in o)
        trials = "/".join(str(x.trials) for x in o)
        lines.append(
            f"| {row.sampler} | {row.storage} | {row.workers} | {len(o)} | {trials} | {extra} "
            f"| {max(x.duplicated for x in o)} | {extra / total:.1%} | {sum(x.lost for x in o)} "
            f"| {statistics.mean(x.seconds for x in o):.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="repetitions per configuration")
    parser.add_argument("--plan-runs", type=int, default=1, help="repetitions for planning")
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--grid-worker", nargs=4, metavar=("URL", "STUDY", "SEED", "HARD"))
    args = parser.parse_args(argv)
    if args.grid_worker:
        url, name, seed, hardened = args.grid_worker
        grid_worker(url, name, int(seed), hardened == "1")
        return 0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    command = "python -m benchmarks.grid_duplicates " + " ".join(sys.argv[1:])
    started = datetime.datetime.now().astimezone()
    load_before = load_average()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="grid-dup-") as tmp, PostgresServer() as server:
        folder = Path(tmp)
        pg_version = server_version(server)
        for workers in args.workers:
            # (sampler, storage label, runs, run function, storage kind)
            configs = [
                ("GridSampler", "SQLite (plain Optuna URL)", args.runs, run_grid, "sqlite"),
                ("GridSampler", "SQLite (op.create_storage)", args.runs, run_grid, "hardened"),
                ("GridSampler", "PostgreSQL", args.runs, run_grid, "postgresql"),
                ("PlanningSampler", "SQLite (op.create_storage)", args.plan_runs, run_plan, "sq"),
                ("PlanningSampler", "PostgreSQL", args.plan_runs, run_plan, "postgresql"),
            ]
            for sampler, storage, runs, fn, kind in configs:
                row = Row(sampler, storage, workers)
                for run in range(runs):
                    if kind == "postgresql":
                        url = server.create_database()
                    else:
                        url = f"sqlite:///{folder / f'{sampler}-{kind}-{workers}-{run}.db'}"
                    outcome = fn(url, workers, folder, run, kind == "hardened")
                    row.outcomes.append(outcome)
                    print(f"{sampler:15s} {storage:27s} N={workers} run {run}: {outcome}")
                rows.append(row)
    finished = datetime.datetime.now().astimezone()
    busy = ""
    if max(max(os.getloadavg()), float(load_before.split(",")[0])) > (os.cpu_count() or 1):
        busy = " Other jobs shared the machine (load above the CPU count): wall times inflated."

    lines = [
        "# Duplicate work under concurrency: GridSampler vs PlanningSampler",
        "",
        f"Command: `{command.strip()}` (from the repository root, with `.venv/bin/python`)",
        "",
        f"Date: {started:%Y-%m-%d %H:%M %Z} to {finished:%H:%M}; commit {git_commit()}; "
        f"machine: {machine()}; load average (1, 5, 15 min) before {load_before}, after "
        f"{load_average()}.{busy}",
        f"Versions: Python {platform.python_version()}, optuna {optuna.__version__}, "
        f"SQLAlchemy {sqlalchemy.__version__}, {pg_version}.",
        "",
        f"GridSampler: a {'x'.join(str(len(v)) for v in GRID.values())} grid "
        f"({GRID_SIZE} points), objective sleeping {GRID_SLEEP[0]}-{GRID_SLEEP[1]} s, every "
        "worker runs `study.optimize(objective)` until the sampler stops it, with "
        "the default sampler seed (workers must agree on the grid's order). "
        "PlanningSampler: `TransitionGraph.extended()` (36 transitions), "
        "`run_worker` with `SimulatedObjective` (`" + " ".join(PLAN_SETTINGS) + "`, "
        "`" + " ".join(PLAN_HEARTBEAT) + "`), the study created before the workers start; "
        "every objective start is logged by the worker (`tests/_worker_main.py`).",
        "",
        "*extra runs*: trials (GridSampler) or objective starts (PlanningSampler) beyond one "
        "per point / transition, summed over runs; *duplicated points*: points or transitions "
        "run more than once in a run; *lost*: never completed. Wall times compare nothing: the "
        "two workloads differ (36 independent points vs a DAG of 36 transitions).",
        "",
        *_table(rows),
        "",
        f"Where GridSampler's duplicates come from (optuna {optuna.__version__}): trial number "
        "i < 36 gets grid point i, so the first 36 trials never collide; a worker that finds "
        "no unstarted point then re-runs a point still running elsewhere (GridSampler wants "
        "every point finished before it stops), so the tail of each run is duplicated work, "
        "growing with the number of workers. A storage that serialises transactions "
        "(`op.create_storage`'s SQLite) does not help: the duplicates are the sampler's "
        "choice. PlanningSampler claims a pre-enqueued trial per transition with an atomic "
        "WAITING -> RUNNING change, and an idle worker waits instead of re-running.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def server_version(server: PostgresServer) -> str:
    engine = sqlalchemy.create_engine(server.url())
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar()).join(
                ("PostgreSQL ", "")
            )
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
