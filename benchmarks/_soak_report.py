"""The soak's results file: the phases' table, the notes on deaths and on the racing start,
and the page around them."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
import datetime
import os
import platform

import optuna
import sqlalchemy

from benchmarks._env import git_commit
from benchmarks._env import load_average
from benchmarks._env import machine
from benchmarks._soak_phase import CLIP_LENGTHS
from benchmarks._soak_phase import EXTRA_AXES
from benchmarks._soak_phase import LEARNING_RATES
from benchmarks._soak_phase import SAMPLINGS
from benchmarks._soak_phase import SEED
from benchmarks._soak_phase import Phase
from benchmarks._soak_phase import Settings
from benchmarks._soak_phase import make_graph
from benchmarks._soak_phase import pct
from optuna_opplan.testing import PostgresServer


def server_version(server: PostgresServer) -> str:
    engine = sqlalchemy.create_engine(server.url())
    try:
        with engine.connect() as conn:
            return f"PostgreSQL {conn.exec_driver_sql('SHOW server_version').scalar()}"
    finally:
        engine.dispose()


def ms(x: float) -> str:
    return f"{1000 * x:.0f}"


def table(phases: Sequence[Phase]) -> list[str]:
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
            f"| {ms(pct(p.asks, 0.5))} / {ms(pct(p.asks, 0.99))} / "
            f"{ms(max(p.asks, default=float('nan')))} ({len(p.asks)}) "
            f"| {ms(pct(p.scans, 0.5))} / {ms(pct(p.scans, 0.99))} ({len(p.scans)}) "
            f"| {p.lost_claims} | {p.load_after} |"
        )
    return lines


def deaths_note(phases: Sequence[Phase]) -> list[str]:
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


def racing_note(phases: Sequence[Phase], n: int) -> list[str]:
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


def results_lines(
    args: argparse.Namespace,
    phases: Sequence[Phase],
    *,
    command: str,
    span: tuple[datetime.datetime, datetime.datetime],
    load_before: str,
    server: str,
    verdict: tuple[bool, bool],
) -> list[str]:
    """The results file, line by line. ``verdict``: (every phase passed its check, every
    phase's plan equals the reference plan)."""
    started, finished = span
    ok, same_plan = verdict
    settings = Settings()
    graph = make_graph()
    n = len(graph.transitions)
    asks = phases[0].asks
    return [
        "# Soak: planning workers on PostgreSQL, undisturbed and under random SIGKILLs",
        "",
        f"Command: `{command.strip()}` (from the repository root, with `.venv/bin/python`"
        + (f", at niceness {os.nice(0)})" if os.nice(0) else ")"),
        "",
        f"Date: {started:%Y-%m-%d %H:%M %Z} to {finished:%H:%M}; commit {git_commit()}; "
        f"machine: {machine()}; "
        f"load average (1, 5, 15 min) before {load_before}, after {load_average()} "
        "(2 cores shared with other jobs; the soak's own 16 workers and server saturate "
        "them).",
        f"Versions: Python {platform.python_version()}, optuna {optuna.__version__}, "
        f"SQLAlchemy {sqlalchemy.__version__}, {server} (private server on 127.0.0.1, "
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
        *table(phases),
        "",
        *deaths_note(phases),
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
        f"Reading: the ask (p50 {ms(pct(asks, 0.5))} ms, p99 {ms(pct(asks, 0.99))} ms "
        f"in the {phases[0].name} phase, at the load above) is mostly the scan: each reads "
        "the study's trials (Optuna's cached storage re-reads only the unfinished ones; "
        f"{phases[0].trials} trials in all here), with {args.workers} worker processes and "
        "the server sharing 2 cores. A lost claim race (another worker claimed the same "
        "waiting trial first) costs no rescan: the loser tries the next ready transition of "
        "the same snapshot.",
        "",
        *racing_note(phases, n),
    ]
