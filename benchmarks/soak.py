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
successful ``claim``. Afterwards the study and the logs are checked (``_soak_phase.py``): every
transition COMPLETE exactly once (none lost), no trial left RUNNING or WAITING, and every
objective start that is not the completing one belongs to an attempt whose worker was killed
(else it is a duplicate). Results go to ``benchmarks/results/soak.md`` (``_soak_report.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import datetime
import json
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import optuna

from benchmarks._env import git_commit
from benchmarks._env import load_average
from benchmarks._soak_phase import OUT
from benchmarks._soak_phase import PHASES
from benchmarks._soak_phase import ROOT
from benchmarks._soak_phase import SEED
from benchmarks._soak_phase import Phase
from benchmarks._soak_phase import Settings
from benchmarks._soak_phase import busy_pids
from benchmarks._soak_phase import close_phase
from benchmarks._soak_phase import make_graph
from benchmarks._soak_phase import make_study
from benchmarks._soak_phase import parse_log
from benchmarks._soak_phase import reference_plan
from benchmarks._soak_report import deaths_note
from benchmarks._soak_report import results_lines
from benchmarks._soak_report import server_version
from benchmarks._soak_report import table
import optuna_opplan as op
from optuna_opplan._queue import TransitionQueue
from optuna_opplan.simulation import SimulatedObjective
from optuna_opplan.testing import PostgresServer


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
            up = {int(row[2]) for row in parse_log(latency) if row[0] == "SCAN"}
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
                busy = busy_pids(parse_log(log))
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
    close_phase(phase, url, settings, log, latency, killed)
    return phase


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
    killed = {int(row[3]) for row in parse_log(log) if row[0] == "START"} - set(alive)
    # Not known from outside: kills_mid_transition stays 0.
    close_phase(phase, url, settings, log, latency, killed)
    # A live worker's RUNNING trial is in progress, not a duplicate.
    phase.duplicates = [
        d for d in phase.duplicates if not ("by live worker" in d and ": RUNNING," in d)
    ]
    running = sum(1 for t in phase.left_trials if "RUNNING" in t)
    print("\n".join(table([phase])))
    print()
    print("\n".join(deaths_note([phase])))
    print(
        f"at {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: {phase.transitions} of "
        f"{len(make_graph().transitions)} transitions complete, {running} RUNNING, "
        f"{phase.left_over - running} WAITING; duplicates: {len(phase.duplicates)}; "
        f"{phase.trials} trials; git commit of this inspection {git_commit()}"
    )
    for problem in phase.duplicates[:20]:
        print("  problem:", problem)
    return 0


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
        version = server_version(server)
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
            print("\n".join(table([phase])[2:]))
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
    lines = results_lines(
        args,
        phases,
        command=command,
        span=(started, finished),
        load_before=load_before,
        server=version,
        verdict=(ok, same_plan),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if ok and same_plan else 1


if __name__ == "__main__":
    sys.exit(main())
