"""Soak: many planning workers on a PostgreSQL server, undisturbed and under random SIGKILLs.

Run from the repository root::

    nice -n 10 .venv/bin/python -m benchmarks.soak [--workers 16] [--out ...soak.md]

It starts a private PostgreSQL server on 127.0.0.1 (:class:`optuna_opplan.testing.PostgresServer`),
builds a custom graph of 1,050 transitions and runs three phases on fresh databases:

1. *undisturbed*: ``--workers`` worker processes run the plan of a set-up study to the end;
2. *SIGKILLs*: the same, while a random worker is SIGKILLed every few seconds, and every
   ``--burst-every``-th time a burst of several workers at once (up to the whole fleet), each
   replaced at once (as a supervisor would), until the plan is complete;
3. *racing start*: the workers start on an empty database and race to create the study.

Every phase's plan is compared with the *reference*: the plan one undisturbed in-process
worker finds on an in-memory storage with the same seed (the simulated curves do not depend on
timing, so this is the plan any undisturbed run finds).

Each worker (this module with ``worker``) runs :func:`optuna_opplan.run_worker` with a
:class:`~optuna_opplan.simulation.SimulatedObjective` and logs every objective START/FINISH, and
the latency of its asks: the scan that led to a claim, from the start of
``sampler.progress`` through stale detection and the queue's ``reconcile`` to the end of a
successful ``claim``. Afterwards the study and the logs are checked: every transition
COMPLETE exactly once (none lost), no trial left RUNNING or WAITING, and every objective start
that is not the completing one belongs to an attempt whose worker was killed (else it is a
duplicate). Results go to ``benchmarks/results/soak.md``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
import datetime
import json
import os
from pathlib import Path
import platform
import random
import signal
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
from optuna_opplan._protocol import KEY_OUTCOME
from optuna_opplan._protocol import KEY_STALE
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._protocol import KEY_WORKER
from optuna_opplan._queue import TransitionQueue
from optuna_opplan.simulation import SimulatedObjective
from optuna_opplan.testing import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "soak.md"
STUDY = "soak"
SEED = 11
CLIP_LENGTHS = (4, 8, 16, 32)
LEARNING_RATES = (0.1, 0.03, 0.01, 0.003, 0.001)
SAMPLINGS = ("a", "b", "c")
# Two more axes make it a custom graph: a resolution that only grows, a width that stays.
EXTRA_AXES = (
    op.Axis("resolution", (112, 160, 224), "increasing"),
    op.Axis("width", (1, 2), "fixed"),
)
PHASES = ("undisturbed", "SIGKILLs", "racing start")


def make_graph() -> op.TransitionGraph:
    return op.TransitionGraph.extended(
        clip_lengths=CLIP_LENGTHS,
        learning_rates=LEARNING_RATES,
        samplings=SAMPLINGS,
        extra_axes=EXTRA_AXES,
    )


@dataclass(frozen=True)
class Settings:
    epoch_seconds: float = 0.05
    delay: int = 2
    max_epochs: int = 8
    heartbeat_interval: float = 1.0
    # Far above any stall of a busy machine: a live transition judged abandoned would rerun.
    grace_period: float = 10.0
    poll_interval: float = 0.1
    max_poll_interval: float = 1.0
    # The first retry after a death waits this long (doubling after each further death).
    death_backoff: float = 2.0

    def args(self) -> list[str]:
        return [f"--{k.replace('_', '-')}={v}" for k, v in self.__dict__.items()]


def reference_plan(settings: Settings) -> dict[str, Any]:
    """The plan of one undisturbed in-process worker (no sleeps) with the same settings."""
    study = make_study(optuna.storages.InMemoryStorage(), settings)
    objective = SimulatedObjective(seed=SEED, max_epochs=settings.max_epochs)
    op.run_worker(study, objective, poll_interval=0.01)
    return _summary(op.get_plan(study))


def _summary(plan: op.Plan) -> dict[str, Any]:
    # Trial numbers differ between runs (retired duplicates, retries); all else must not.
    summary = plan.to_dict()
    for stage in summary["stages"]:
        stage.pop("trial")
    return summary


def make_study(url: str | optuna.storages.BaseStorage, settings: Settings) -> optuna.Study:
    pruner = op.KneePointPruner(delay=settings.delay, max_epochs=settings.max_epochs)
    return op.create_planning_study(
        make_graph(),
        storage=url,
        study_name=STUDY,
        pruner=pruner,
        load_if_exists=True,
        death_backoff=settings.death_backoff,
    )


# ---------------------------------------------------------------------------------- worker
def _append(fd: int, *fields: Any) -> None:
    # One write() per line on an O_APPEND descriptor: lines never mix, and a line written
    # before a SIGKILL is in the kernel's hands, not lost in a buffer.
    os.write(fd, (" ".join(str(f) for f in fields) + "\n").encode())


def worker(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak worker")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--latency", required=True)
    for name, value in Settings().__dict__.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    settings = Settings(**{k: getattr(args, k) for k in Settings().__dict__})

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = make_study(args.storage, settings)
    sampler = study.sampler
    assert isinstance(sampler, op.PlanningSampler)
    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    latency = os.open(args.latency, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()
    scan_started = [0.0]
    progress, claim = sampler.progress, TransitionQueue.claim

    def timed_progress(study: optuna.Study) -> op.Progress:
        scan_started[0] = time.perf_counter()
        snapshot = progress(study)
        _append(latency, "SCAN", f"{time.perf_counter() - scan_started[0]:.6f}", pid)
        return snapshot

    def timed_claim(queue: TransitionQueue, status: Any) -> int | None:
        trial_id = claim(queue, status)
        if trial_id is not None:
            _append(latency, "ASK", f"{time.perf_counter() - scan_started[0]:.6f}", pid)
        else:
            _append(latency, "LOST", 0, pid)
        return trial_id

    sampler.progress = timed_progress  # type: ignore[method-assign]
    TransitionQueue.claim = timed_claim  # type: ignore[method-assign,assignment]
    inner = SimulatedObjective(
        seed=SEED, epoch_seconds=settings.epoch_seconds, max_epochs=settings.max_epochs
    )

    def objective(trial: optuna.Trial) -> Any:
        step = op.current_transition(trial)
        _append(log, "START", trial.number, step.transition.key, pid, step.attempt)
        result = inner(trial)
        _append(log, "FINISH", trial.number, step.transition.key, pid, step.attempt)
        return result

    op.run_worker(
        study,
        objective,
        heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.grace_period,
        poll_interval=settings.poll_interval,
        max_poll_interval=settings.max_poll_interval,
    )
    return 0


# ---------------------------------------------------------------------------------- phases
@dataclass
class Phase:
    name: str
    transitions: int = 0
    wall: float = 0.0
    complete: bool = False
    workers_started: int = 0
    kills: int = 0
    kills_mid_transition: int = 0
    bursts: list[int] = field(default_factory=list)
    deaths: Counter[str] = field(default_factory=Counter)
    starts: int = 0
    killed_attempts: int = 0
    duplicates: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    left_over: int = 0
    left_trials: list[str] = field(default_factory=list)
    failed_exits: list[int] = field(default_factory=list)
    asks: list[float] = field(default_factory=list)
    scans: list[float] = field(default_factory=list)
    lost_claims: int = 0
    trials: int = 0
    plan: dict[str, Any] | None = None
    load_after: str = ""

    @property
    def per_minute(self) -> float:
        return 60.0 * self.transitions / self.wall if self.wall else 0.0


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _parse(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def run_phase(
    name: str,
    url: str,
    folder: Path,
    workers: int,
    settings: Settings,
    *,
    kill_every: tuple[float, float] | None,
    timeout: float,
    seed: int,
    burst_every: int = 0,
    set_up: bool = True,
) -> Phase:
    phase = Phase(name)
    if set_up:
        # The study and its config exist before any worker starts, as after `opplan init`;
        # else the workers race to create it, each calling create_planning_study.
        make_study(url, settings)
    log, latency = folder / f"{name}-starts.log", folder / f"{name}-latency.log"
    command = [
        sys.executable,
        "-m",
        "benchmarks.soak",
        "worker",
        f"--storage={url}",
        f"--log={log}",
        f"--latency={latency}",
        *settings.args(),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    killed: set[int] = set()

    def start() -> None:
        n = len(procs)
        with open(folder / f"{name}-w{n}.err", "wb") as err:
            procs.append(
                subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
            )

    rng = random.Random(seed)
    began = time.monotonic()
    for _ in range(workers):
        start()
    next_kill = None if kill_every is None else began + rng.uniform(*kill_every)
    events = 0
    while any(p.poll() is None for p in procs):
        now = time.monotonic()
        if now - began > timeout:
            print(f"{name}: not finished after {timeout:.0f}s; stopping the workers")
            break
        if next_kill is not None and kill_every is not None and now >= next_kill:
            # A process still starting up (importing, connecting) holds no work: killing it
            # tests nothing, and on a loaded machine would keep the fleet from ever starting.
            up = {int(row[2]) for row in _parse(latency) if row[0] == "SCAN"}
            alive = [p for p in procs if p.poll() is None and p.pid in up]
            if alive:
                # Every burst_every-th event is a burst: a quarter of the fleet up to all of it
                # at once (a lost rack, a spot-market reclaim), the rest single kills.
                events += 1
                size = 1
                if burst_every and events % burst_every == 0:
                    size = rng.randint(max(2, workers // 4), workers)
                    phase.bursts.append(min(size, len(alive)))
                victims = rng.sample(alive, min(size, len(alive)))
                busy = _busy_pids(_parse(log))
                for victim in victims:
                    victim.send_signal(signal.SIGKILL)
                for victim in victims:
                    victim.wait()
                    killed.add(victim.pid)
                    phase.kills += 1
                    phase.kills_mid_transition += victim.pid in busy
                    start()
            next_kill = now + rng.uniform(*kill_every)
        time.sleep(0.05)
    phase.wall = time.monotonic() - began
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        elif proc.returncode != 0 and proc.pid not in killed:
            phase.failed_exits.append(proc.returncode)
    phase.workers_started = len(procs)
    _close(phase, url, settings, log, latency, killed)
    return phase


def _close(
    phase: Phase, url: str, settings: Settings, log: Path, latency: Path, killed: set[int]
) -> None:
    """Check the phase's study against its START log and read its latencies."""
    phase.load_after = load_average()
    _check(phase, url, settings, log, killed)
    for row in _parse(latency):
        if row[0] == "ASK":
            phase.asks.append(float(row[1]))
        elif row[0] == "SCAN":
            phase.scans.append(float(row[1]))
        elif row[0] == "LOST":
            phase.lost_claims += 1


def _busy_pids(rows: list[list[str]]) -> set[int]:
    """Pids with an objective STARTed and not FINISHed (mid-transition)."""
    open_: Counter[int] = Counter()
    for event, _, _, pid, _ in rows:
        open_[int(pid)] += 1 if event == "START" else -1
    return {pid for pid, n in open_.items() if n > 0}


def _check(phase: Phase, url: str, settings: Settings, log: Path, killed: set[int]) -> None:
    study = make_study(url, settings)
    graph = make_graph()
    keys = [t.key for t in graph.transitions]
    trials = study.get_trials(deepcopy=False)
    phase.trials = len(trials)
    complete = Counter(
        t.system_attrs.get(KEY_TRANSITION) for t in trials if t.state == TrialState.COMPLETE
    )
    phase.transitions = sum(complete.values())
    phase.lost = [k for k in keys if complete[k] == 0]
    phase.duplicates = [f"{k} completed {n} times" for k, n in complete.items() if n > 1]
    left = [t for t in trials if not t.state.is_finished()]
    phase.left_over = len(left)
    phase.left_trials = [
        f"trial {t.number} ({t.system_attrs.get(KEY_TRANSITION)}) left {t.state.name}, "
        f"attempt {t.system_attrs.get('opplan:attempt')}, worker {t.system_attrs.get(KEY_WORKER)}"
        for t in left
    ]
    phase.complete = not phase.lost and not phase.left_over
    phase.deaths = Counter(
        str(t.system_attrs.get(KEY_TRANSITION))
        for t in trials
        if t.state == TrialState.FAIL and KEY_STALE in t.system_attrs
    )

    # Every START is either the run of the trial that completed its transition, or of an
    # attempt whose worker we killed (its trial failed as stale). Anything else ran twice.
    by_number = {t.number: t for t in trials}
    rows = [r for r in _parse(log) if r[0] == "START"]
    phase.starts = len(rows)
    seen: Counter[int] = Counter()
    for _, number, key, pid, _ in rows:
        trial = by_number[int(number)]
        seen[trial.number] += 1
        if seen[trial.number] > 1:
            phase.duplicates.append(f"trial {number} ({key}) started twice")
        elif trial.state == TrialState.COMPLETE:
            continue
        elif int(pid) in killed and (
            KEY_STALE in trial.system_attrs or trial.state == TrialState.RUNNING
        ):
            # Failed as stale after the kill (or, if the phase timed out, not yet).
            phase.killed_attempts += 1
        else:
            outcome = trial.system_attrs.get(KEY_OUTCOME)
            phase.duplicates.append(
                f"trial {number} ({key}) by live worker {pid}: {trial.state.name}, "
                f"outcome {outcome}, stale marker {KEY_STALE in trial.system_attrs}, "
                f"worker attr {trial.system_attrs.get(KEY_WORKER)}"
            )
    if not phase.lost:
        phase.plan = _summary(op.get_plan(study))


# --------------------------------------------------------------------------------- report
def _server_version(server: PostgresServer) -> str:
    engine = sqlalchemy.create_engine(server.url())
    try:
        with engine.connect() as conn:
            return f"PostgreSQL {conn.exec_driver_sql('SHOW server_version').scalar()}"
    finally:
        engine.dispose()


def _ms(x: float) -> str:
    return f"{1000 * x:.0f}"


def _table(phases: Sequence[Phase]) -> list[str]:
    lines = [
        "| phase | transitions complete | lost | duplicates | left RUNNING/WAITING "
        "| worker processes (kills, mid-transition) | objective starts (killed attempts) "
        "| wall s | transitions/min | ask p50 / p99 / max ms (n) | scan p50 / p99 ms (n) "
        "| lost claim races | load after |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in phases:
        lines.append(
            f"| {p.name} | {p.transitions} | {len(p.lost)} | {len(p.duplicates)} "
            f"| {p.left_over} | {p.workers_started} ({p.kills}, {p.kills_mid_transition}) "
            f"| {p.starts} ({p.killed_attempts}) | {p.wall:.0f} | {p.per_minute:.0f} "
            f"| {_ms(_pct(p.asks, 0.5))} / {_ms(_pct(p.asks, 0.99))} / "
            f"{_ms(max(p.asks, default=float('nan')))} ({len(p.asks)}) "
            f"| {_ms(_pct(p.scans, 0.5))} / {_ms(_pct(p.scans, 0.99))} ({len(p.scans)}) "
            f"| {p.lost_claims} | {p.load_after} |"
        )
    return lines


def inspect(argv: Sequence[str]) -> int:
    """Check a SIGKILLs phase that is still running (or was cut short) from outside.

    The workers still alive are found by their command lines; every other pid in the START
    log is taken for a killed one (the soak's workers end only when killed or when the plan
    is complete). Kill events are counted from the replacement workers' start times: a burst
    starts several at once.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak inspect")
    parser.add_argument("folder", type=Path, help="the phase's temporary folder")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args(argv)
    name = "SIGKILLs"
    log, latency = args.folder / f"{name}-starts.log", args.folder / f"{name}-latency.log"
    alive: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if "benchmarks.soak worker" in cmdline and f"--log={log}" in cmdline:
            alive[int(proc.name)] = cmdline
    if not alive:
        raise SystemExit(f"no worker of {args.folder} is alive")
    url = next(iter(alive.values())).split("--storage=")[1].split()[0]
    settings = Settings()
    phase = Phase(f"{name} (cut short)")
    started = sorted(p.stat().st_mtime for p in args.folder.glob(f"{name}-w*.err"))
    first = started[: args.workers]
    replacements = started[len(first) :]
    phase.workers_started = len(started)
    phase.kills = len(replacements)
    events: list[list[float]] = []
    for t in replacements:
        if events and t - events[-1][-1] < 1.0:
            events[-1].append(t)
        else:
            events.append([t])
    phase.bursts = [len(e) for e in events if len(e) > 1]
    phase.wall = time.time() - (first[0] if first else time.time())
    killed = {int(row[3]) for row in _parse(log) if row[0] == "START"} - set(alive)
    # Not known from outside: kills_mid_transition stays 0.
    _close(phase, url, settings, log, latency, killed)
    # A live worker's RUNNING trial is in progress, not a duplicate.
    phase.duplicates = [
        d for d in phase.duplicates if not ("by live worker" in d and ": RUNNING," in d)
    ]
    running = sum(1 for t in phase.left_trials if "RUNNING" in t)
    print("\n".join(_table([phase])))
    print()
    print("\n".join(_deaths_note([phase])))
    print(
        f"at {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: {phase.transitions} of "
        f"{len(make_graph().transitions)} transitions complete, {running} RUNNING, "
        f"{phase.left_over - running} WAITING; duplicates: {len(phase.duplicates)}; "
        f"{phase.trials} trials; git commit of this inspection {_commit()}"
    )
    for problem in phase.duplicates[:20]:
        print("  problem:", problem)
    return 0


def _deaths_note(phases: Sequence[Phase]) -> list[str]:
    lines = []
    for p in phases:
        if not p.kills:
            continue
        hist = Counter(p.deaths.values())
        worst = p.deaths.most_common(1)
        lines += [
            f"Deaths in *{p.name}*: {p.kills} workers killed in "
            f"{p.kills - sum(p.bursts) + len(p.bursts)} events, {len(p.bursts)} of them "
            f"bursts (sizes {', '.join(map(str, p.bursts)) or 'none'}); "
            f"{sum(p.deaths.values())} attempts died (failed as stale), "
            + ", ".join(
                f"{count} transition{'s' * (count != 1)} {n} time{'s' * (n != 1)}"
                for n, count in sorted(hist.items())
            )
            + (f"; the most: {worst[0][1]} deaths of `{worst[0][0]}`" if worst else "")
            + (". Each such transition still completed exactly once." if p.complete else "."),
            "",
        ]
    return lines


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' (with uncommitted changes)' if dirty else ''}"


def _racing_note(phases: Sequence[Phase], n: int) -> list[str]:
    racing = next((p for p in phases if p.name == "racing start"), None)
    if racing is None:
        return []
    return [
        f"Racing start: {racing.trials} trials for {n} transitions "
        f"({racing.trials - n} retired or retried). The first version of this script let 8 "
        "workers start on an empty study while every `create_planning_study` call enqueued "
        "the whole graph: 2249 trials, scans of 3.4 s at p50 and no transition complete "
        "after 90 s. Now a transition is enqueued when it becomes ready, by the worker whose "
        "own act made it ready (the others take over after half a grace period), so few "
        "duplicates are made, and those are retired unrun.",
        "",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        return worker(argv[1:])
    if argv[:1] == ["inspect"]:
        return inspect(argv[1:])
    if argv[:1] == ["reference"]:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        Path(argv[1]).write_text(json.dumps(reference_plan(Settings())))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--kill-every", type=float, nargs=2, default=(30.0, 60.0))
    parser.add_argument(
        "--burst-every", type=int, default=6, help="every Nth kill is a burst (0: never)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per phase")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--phases", nargs="+", choices=PHASES, default=list(PHASES), help="(for trying out)"
    )
    args = parser.parse_args(argv)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = Settings()
    graph = make_graph()
    n = len(graph.transitions)
    print(
        f"graph: {n} transitions, {len(graph.states)} states, critical path "
        f"{len(graph.critical_path())}"
    )
    command = "python -m benchmarks.soak " + " ".join(argv)
    started = datetime.datetime.now().astimezone()
    load_before = load_average()
    phases = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, PostgresServer() as server:
        # Computed beside the phases, in its own process: it takes minutes on a busy machine.
        reference_file = Path(tmp) / "reference.json"
        computing = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.soak", "reference", str(reference_file)], cwd=ROOT
        )
        version = _server_version(server)
        for name in args.phases:
            phase = run_phase(
                name,
                server.create_database(),
                Path(tmp),
                args.workers,
                settings,
                kill_every=tuple(args.kill_every) if name == "SIGKILLs" else None,
                timeout=args.timeout,
                seed=args.seed,
                burst_every=args.burst_every,
                set_up=name != "racing start",
            )
            phases.append(phase)
            print("\n".join(_table([phase])[2:]))
            for problem in phase.duplicates[:20] + phase.lost[:5] + phase.left_trials[:5]:
                print("  problem:", problem)
        if computing.wait() != 0:
            raise RuntimeError("the reference plan could not be computed")
        reference = json.loads(reference_file.read_text())
    print(f"reference plan: {' -> '.join(s['state'] for s in reference['stages'])}")
    finished = datetime.datetime.now().astimezone()

    same_plan = all(json.loads(json.dumps(p.plan)) == reference for p in phases)
    ok = all(
        p.complete and not p.duplicates and not p.failed_exits and p.transitions == n
        for p in phases
    )
    asks = phases[0].asks
    lines = [
        "# Soak: planning workers on PostgreSQL, undisturbed and under random SIGKILLs",
        "",
        f"Command: `{command.strip()}` (from the repository root, with `.venv/bin/python`"
        + (f", at niceness {os.nice(0)})" if os.nice(0) else ")"),
        "",
        f"Date: {started:%Y-%m-%d %H:%M %Z} to {finished:%H:%M}; commit {git_commit()}; "
        f"machine: {machine()}; "
        f"load average (1, 5, 15 min) before {load_before}, after {load_average()} "
        "(2 cores shared with other jobs; the soak's own 16 workers and server saturate "
        f"them); git commit {_commit()}.",
        f"Versions: Python {platform.python_version()}, optuna {optuna.__version__}, "
        f"SQLAlchemy {sqlalchemy.__version__}, {version} (private server on 127.0.0.1, "
        "fsync off).",
        "",
        f"Graph: `TransitionGraph.extended(clip_lengths={CLIP_LENGTHS}, "
        f"learning_rates={LEARNING_RATES}, samplings={SAMPLINGS}, extra_axes=("
        + ", ".join(f"Axis({a.name!r}, {a.values}, {a.direction!r})" for a in EXTRA_AXES)
        + f"))`: **{n} transitions**, "
        f"{len(graph.states)} states, critical path of {len(graph.critical_path())} "
        f"transitions. {args.workers} worker processes (`run_worker`), "
        f"`SimulatedObjective(seed={SEED}, epoch_seconds={settings.epoch_seconds})`, "
        f"`KneePointPruner(delay={settings.delay}, max_epochs={settings.max_epochs})`, "
        f"heartbeat {settings.heartbeat_interval} s, grace {settings.grace_period} s, poll "
        f"{settings.poll_interval}-{settings.max_poll_interval} s, `max_retries` and "
        "`max_deaths` at their defaults, `death_backoff` "
        f"{settings.death_backoff} s; a fresh database per "
        "phase. *undisturbed* and *SIGKILLs*: the study is set up (`create_planning_study`) "
        "before the workers start; in *SIGKILLs* a random "
        f"live worker is killed every {args.kill_every[0]:g}-{args.kill_every[1]:g} s (seed "
        f"{args.seed}), every {args.burst_every}th time a burst of {args.workers // 4} to "
        f"{args.workers} workers at once, each replaced at once, until the plan is "
        "complete (victims are drawn from the workers that have scanned the study at least "
        "once: killing a process still importing would test nothing). *racing "
        "start*: nothing exists before the workers, which all start at once and each call "
        "`create_planning_study` (as `tests/_worker_main.py` and a fleet's start script do).",
        "",
        *_table(phases),
        "",
        *_deaths_note(phases),
        "*lost*: transitions without a COMPLETE trial; *duplicates*: a transition COMPLETE "
        "more than once, a trial started twice, or an objective start that is neither the "
        "completing run nor an attempt of a killed worker (its trial failed as stale); "
        "*ask*: in the worker process, from the start of `sampler.progress` (one read of all "
        "trials) through stale detection and the queue's `reconcile` to the end of a successful "
        "`claim` (the atomic WAITING -> RUNNING update), for each transition a worker "
        "took; *scan*: every `sampler.progress` call; *lost claim races*: claims another "
        "worker won (the loser tries the next ready transition of its snapshot). "
        "Transitions/min is over the phase's wall time, including process start-up and the "
        "grace periods the killed attempts wait out.",
        "",
        f"Verdict: {'PASS' if ok else 'FAIL'}: "
        + (
            "every transition completed exactly once in every phase, no duplicate start, "
            "nothing left RUNNING or WAITING, no worker exited with an error"
            if ok
            else "see the table and the problems printed by the run"
        )
        + "; the plan of every phase "
        + (
            "equals the reference plan (one undisturbed in-process worker)."
            if same_plan
            else "does NOT equal the reference plan (or was not computed)."
        ),
        "",
        f"Reading: the ask (p50 {_ms(_pct(asks, 0.5))} ms, p99 {_ms(_pct(asks, 0.99))} ms "
        f"in the {phases[0].name} phase, at the load above) is mostly the scan: each reads "
        "the study's trials (Optuna's cached storage re-reads only the unfinished ones; "
        f"{phases[0].trials} trials in all here), with {args.workers} worker processes and "
        "the server sharing 2 cores. A lost claim race (another worker claimed the same "
        "waiting trial first) costs no rescan: the loser tries the next ready transition of "
        "the same snapshot.",
        "",
        *_racing_note(phases, n),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if ok and same_plan else 1


if __name__ == "__main__":
    sys.exit(main())
