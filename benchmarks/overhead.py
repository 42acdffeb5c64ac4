"""Planning overhead: knee pruner call, worker scan + claim, DP plan and graph construction.

Run from the repository root: ``.venv/bin/python -m benchmarks.overhead [--out PATH]``
(``--quick`` for a smoke run with fewer repeats and sizes).

- Pruner: ``KneePointPruner.prune(study, trial)`` on an in-memory study whose trial holds 10,
  50, 100 or 200 reported epochs of simulated curves (several curves, several calls each). It
  fits the whole series and writes the decision on the trial, as in training. Target: < 20 ms
  at 200 points.
- Ask: what a worker does to get its next transition, ``sampler.progress(study)`` (one read
  of all trials + the status of every transition) + the queue's ``reconcile`` + ``claim``,
  on a study in the local SQLite storage (``op.create_storage("sqlite:///...")``, i.e.
  ``BEGIN IMMEDIATE``) and in a journal file, for a generated graph with 10, 100 or 1,000
  transitions, half of them completed in the single-worker order, and a waiting trial for each
  transition then ready (workers enqueue a transition when it becomes ready). After each
  measured claim the trial is put back to WAITING so every call sees the same study.
  Target: < 50 ms per ask with 1,000 trials on the local storage.
- DP: ``op.compute_plan`` on graphs of 10 .. 10,000 transitions with random results, plus the
  scheduler's view of the same results (``Progress`` over in-memory trials: ``get_plan`` minus
  the storage read) and the graph's construction time. Target: < 1 s at 10,000.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import cProfile
import io
import os
import pstats
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
from optuna_opplan._plan import resolve_states
from optuna_opplan._progress import Progress
from optuna_opplan._protocol import KEY_EPOCH0
from optuna_opplan._protocol import KEY_OUTCOME
from optuna_opplan._protocol import KEY_RESULT
from optuna_opplan._protocol import KEY_SOURCE_TRIAL
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._queue import TransitionQueue
from optuna_opplan._study import check_config
from optuna_opplan.simulation import SimulatedObjective

PRUNER_POINTS = (10, 50, 100, 200)
ASK_TRIALS = (10, 100, 1000)
DP_TRANSITIONS = (10, 100, 1000, 10000)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def grid_graph(target: int) -> op.TransitionGraph:
    """A basic-rule graph (one sampling, ``c`` clip lengths x ``l`` learning rates) with about
    ``target`` transitions, as square as the count allows."""
    best: tuple[float, int, int, int] | None = None
    for c in range(1, 200):
        for lrs in range(1, 200):
            # lr steps + clip steps + start edges (highest lr, the two shortest clips).
            count = c * (lrs - 1) + (c - 1) * lrs + min(c, 2)
            miss = abs(count - target) / target
            key = (round(miss, 1), abs(c - lrs), c, lrs)
            if miss <= 0.1 and (best is None or key < best):
                best = key
    assert best is not None
    _, _, c, lrs = best
    return op.TransitionGraph.basic(
        clip_lengths=tuple(range(8, 8 * (c + 1), 8)),
        learning_rates=tuple(float(10.0 ** (-k / 4)) for k in range(lrs)),
        samplings=("uniform",),
    )


def time_calls(
    repeats: int, fn: Callable[..., Any], *args: Any, cpu: list[float] | None = None
) -> list[float]:
    """Wall-clock seconds of each call; CPU seconds of this thread go to ``cpu`` if given
    (the machine may be shared: CPU time shows the cost without the wait for a core)."""
    out = []
    for _ in range(repeats):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.thread_time() - c0)
    return out


# ------------------------------------------------------------------------------- pruner
def bench_pruner(points: tuple[int, ...], curves: int, calls: int) -> list[dict[str, Any]]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    graph = op.TransitionGraph.extended()
    objective = SimulatedObjective(seed=0)
    pruner = op.KneePointPruner(delay=10, max_epochs=10_000)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    rows = []
    for n in points:
        prune_times: list[float] = []
        prune_cpu: list[float] = []
        decide_times: list[float] = []
        stops = 0
        for k in range(curves):
            # Different transitions give different noise, plateaus and time constants.
            transition = graph.transitions[k % len(graph.transitions)]
            curve = objective.curve(
                graph, transition, v0=0.0 if transition.source is None else 0.5
            )
            trial = study.ask()
            study._storage.set_trial_system_attr(trial._trial_id, KEY_EPOCH0, curve.v0)
            for epoch, value in enumerate(curve.values(n), 1):
                trial.report(float(value), epoch)
            frozen = study._storage.get_trial(trial._trial_id)
            values = pruner.curve_of(study, frozen)
            stops += pruner.prune(study, frozen)  # warm-up, and the decision counted
            prune_times += time_calls(calls, pruner.prune, study, frozen, cpu=prune_cpu)
            decide_times += time_calls(calls, pruner.decide, values)
            study.tell(trial, state=TrialState.PRUNED)
        rows.append(
            {
                "points": n,
                "calls": len(prune_times),
                "prune_p50": pct(prune_times, 50),
                "prune_p95": pct(prune_times, 95),
                "prune_max": max(prune_times),
                "prune_cpu_p50": pct(prune_cpu, 50),
                "decide_p50": pct(decide_times, 50),
                "stop_share": stops / curves,
            }
        )
        print(f"pruner {n:4d} points: p50 {ms(rows[-1]['prune_p50'])} ms", flush=True)
    return rows


# --------------------------------------------------------------------------------- ask
# "sqlite" is what op.create_storage makes (WAL, synchronous=NORMAL, BEGIN IMMEDIATE).
STORAGES = ("sqlite", "journal")


def local_storage(kind: str, url: str) -> optuna.storages.BaseStorage:
    return op.create_storage(url)


def single_worker_order(graph: op.TransitionGraph) -> list[op.Transition]:
    """The order one worker trains the transitions in: the first ready one each time."""
    done: set[str] = set()
    order: list[op.Transition] = []
    while len(order) < len(graph.transitions):
        for t in graph.transitions:
            if t.key in done:
                continue
            if t.source is None or all(p.key in done for p in graph.predecessors(t.source)):
                order.append(t)
                done.add(t.key)
                break
    return order


def fill_study(
    study: optuna.Study, sampler: op.PlanningSampler, done_fraction: float, seed: int
) -> None:
    """The first ``done_fraction`` of the transitions (in the single-worker order) completed
    with a random result, as workers leave them, and a waiting trial for each transition that
    is then ready, as the workers enqueue them."""
    rng = np.random.default_rng(seed)
    pruner = study.pruner
    assert isinstance(pruner, op.KneePointPruner)
    check_config(study, sampler, pruner)
    order = single_worker_order(sampler.graph)
    for number, t in enumerate(order[: int(done_fraction * len(order))]):
        result = op.TransitionResult(
            score=float(rng.uniform(0.3, 0.9)),
            observed=float(rng.uniform(0.3, 0.9)),
            epochs=int(rng.integers(1, 40)),
            trial=number,
            epochs_trained=50,
            knee_epoch=20,
            reason="knee",
        )
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=result.score,
                system_attrs={
                    KEY_TRANSITION: t.key,
                    KEY_SOURCE_TRIAL: None,
                    KEY_EPOCH0: 0.0,
                    KEY_RESULT: result.to_dict(),
                    KEY_OUTCOME: {"status": "ok"},
                },
                intermediate_values={e: float(rng.uniform()) for e in range(1, 4)},
            )
        )
    queue = TransitionQueue(study, sampler)
    queue.reconcile(queue.progress())


def bench_ask(
    sizes: tuple[int, ...], repeats: int, done_fraction: float, workdir: str
) -> list[dict[str, Any]]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        graph = grid_graph(size)
        for kind in STORAGES:
            path = os.path.join(workdir, f"ask-{size}-{kind}")
            url = f"{path}.log" if kind == "journal" else f"sqlite:///{path}.db"
            sampler = op.PlanningSampler(graph)
            study = optuna.create_study(
                storage=local_storage(kind, url),
                study_name="ask",
                direction="maximize",
                sampler=sampler,
                pruner=op.KneePointPruner(),
            )
            t0 = time.perf_counter()
            fill_study(study, sampler, done_fraction, seed=size)
            fill_seconds = time.perf_counter() - t0
            n_trials = len(study._storage.get_all_trials(study._study_id, deepcopy=False))
            parts: dict[str, list[float]] = {"progress": [], "reconcile": [], "claim": []}
            totals: list[float] = []
            cpu: list[float] = []
            queue = TransitionQueue(study, sampler)
            for _ in range(repeats):
                c0, t0 = time.thread_time(), time.perf_counter()
                progress = sampler.progress(study)
                t1 = time.perf_counter()
                changed = queue.reconcile(progress)
                t2 = time.perf_counter()
                status = progress.with_status("ready")[0]
                trial_id = queue.claim(status)
                assert trial_id is not None
                # As a worker claims: the first heartbeat comes between, not timed here.
                queue.record_source(trial_id, status, progress)
                t3 = time.perf_counter()
                cpu.append(time.thread_time() - c0)
                assert not changed
                parts["progress"].append(t1 - t0)
                parts["reconcile"].append(t2 - t1)
                parts["claim"].append(t3 - t2)
                totals.append(t3 - t0)
                # Back to WAITING (allowed by both storages) so the next call sees this study.
                study._storage.set_trial_state_values(trial_id, TrialState.WAITING)
            # A worker that just started reads every trial once (nothing cached yet).
            cold: list[float] = []
            for _ in range(max(3, repeats // 10)):
                t0 = time.perf_counter()
                fresh = optuna.load_study(
                    study_name="ask", storage=local_storage(kind, url), sampler=sampler
                )
                sampler.progress(fresh)
                cold.append(time.perf_counter() - t0)
            size_bytes = sum(
                os.path.getsize(p)
                for p in (f"{path}.log", f"{path}.db", f"{path}.db-wal")
                if os.path.exists(p)
            )
            rows.append(
                {
                    "transitions": len(graph.transitions),
                    "trials": n_trials,
                    "storage": kind,
                    "ask_p50": pct(totals, 50),
                    "ask_p95": pct(totals, 95),
                    "ask_cpu_p50": pct(cpu, 50),
                    **{f"{k}_p50": pct(v, 50) for k, v in parts.items()},
                    "cold_p50": pct(cold, 50),
                    "fill_s": fill_seconds,
                    "bytes": size_bytes,
                }
            )
            print(
                f"ask {kind:10s} {n_trials:5d} trials: p50 {ms(rows[-1]['ask_p50'])} ms, "
                f"p95 {ms(rows[-1]['ask_p95'])} ms",
                flush=True,
            )
    return rows


# ---------------------------------------------------------------------------------- DP
def random_results(graph: op.TransitionGraph, seed: int) -> dict[str, op.TransitionResult]:
    rng = np.random.default_rng(seed)
    return {
        t.key: op.TransitionResult(
            score=float(rng.uniform(0.3, 0.9)),
            observed=float(rng.uniform(0.3, 0.9)),
            epochs=int(rng.integers(1, 60)),
            trial=i,
            epochs_trained=60,
        )
        for i, t in enumerate(graph.transitions)
    }


def completed_trials(
    graph: op.TransitionGraph, results: dict[str, op.TransitionResult]
) -> list[optuna.trial.FrozenTrial]:
    trials = []
    for i, t in enumerate(graph.transitions):
        trial = optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            value=results[t.key].score,
            system_attrs={KEY_TRANSITION: t.key, KEY_RESULT: results[t.key].to_dict()},
        )
        trial.number = i
        trials.append(trial)
    return trials


def bench_dp(sizes: tuple[int, ...], repeats: int) -> tuple[list[dict[str, Any]], str]:
    rows = []
    profile_text = ""
    for size in sizes:
        t0 = time.perf_counter()
        graph = grid_graph(size)
        build = time.perf_counter() - t0
        results = random_results(graph, seed=size)
        trials = completed_trials(graph, results)
        reps = repeats if size <= 1000 else max(3, repeats // 10)
        plan_cpu: list[float] = []
        plan_times = time_calls(reps, op.compute_plan, graph, results, cpu=plan_cpu)
        # The DP proper, without compute_plan's check that every key names a transition.
        dp_times = time_calls(reps, resolve_states, graph, results)
        progress_times = time_calls(reps, Progress, graph, trials)
        rows.append(
            {
                "transitions": len(graph.transitions),
                "states": len(graph.states),
                "build_s": build,
                "plan_p50": pct(plan_times, 50),
                "plan_p95": pct(plan_times, 95),
                "plan_cpu_p50": pct(plan_cpu, 50),
                "dp_p50": pct(dp_times, 50),
                "progress_p50": pct(progress_times, 50),
                "repeats": reps,
            }
        )
        print(
            f"dp {len(graph.transitions):6d} transitions: compute_plan p50 "
            f"{ms(rows[-1]['plan_p50'])} ms, graph built in {build:.2f} s",
            flush=True,
        )
        if size == 1000 or (size == max(sizes) and not profile_text):
            # Where compute_plan's time goes; at 1,000 the hot spot is already clear.
            profile_text = profile(op.compute_plan, graph, results)
    return rows, profile_text


def profile(fn: Callable[..., Any], *args: Any, limit: int = 12) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    fn(*args)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(limit)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return "\n".join(lines[start:])


# ------------------------------------------------------------------------------- report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "overhead.md"))
    parser.add_argument("--quick", action="store_true", help="few repeats, small sizes")
    parser.add_argument("--done-fraction", type=float, default=0.5)
    args = parser.parse_args()
    quick = args.quick
    command = command_line()
    load_at_start = load_average()

    pruner_rows = bench_pruner(PRUNER_POINTS, curves=4 if quick else 12, calls=3 if quick else 5)
    with tempfile.TemporaryDirectory() as workdir:
        ask_rows = bench_ask(
            ASK_TRIALS[:2] if quick else ASK_TRIALS,
            repeats=10 if quick else 50,
            done_fraction=args.done_fraction,
            workdir=workdir,
        )
    dp_rows, dp_profile = bench_dp(
        DP_TRANSITIONS[:3] if quick else DP_TRANSITIONS, repeats=5 if quick else 30
    )

    pruner_table = (
        [
            "points",
            "calls",
            "prune p50 ms",
            "prune p95 ms",
            "prune max ms",
            "prune CPU p50 ms",
            "fit only p50 ms",
        ],
        [
            [
                str(r["points"]),
                str(r["calls"]),
                ms(r["prune_p50"]),
                ms(r["prune_p95"]),
                ms(r["prune_max"]),
                ms(r["prune_cpu_p50"]),
                ms(r["decide_p50"]),
            ]
            for r in pruner_rows
        ],
    )
    ask_table = (
        [
            "transitions",
            "trials",
            "storage",
            "ask p50 ms",
            "ask p95 ms",
            "ask CPU p50 ms",
            "progress p50",
            "reconcile p50",
            "claim p50",
            "cold scan p50 ms",
            "file KiB",
        ],
        [
            [
                str(r["transitions"]),
                str(r["trials"]),
                r["storage"],
                ms(r["ask_p50"]),
                ms(r["ask_p95"]),
                ms(r["ask_cpu_p50"]),
                ms(r["progress_p50"]),
                ms(r["reconcile_p50"]),
                ms(r["claim_p50"]),
                ms(r["cold_p50"]),
                f"{r['bytes'] / 1024:.0f}",
            ]
            for r in ask_rows
        ],
    )
    dp_table = (
        [
            "transitions",
            "states",
            "compute_plan p50 ms",
            "compute_plan p95 ms",
            "compute_plan CPU p50 ms",
            "resolve_states p50 ms",
            "Progress p50 ms",
            "graph build s",
        ],
        [
            [
                str(r["transitions"]),
                str(r["states"]),
                ms(r["plan_p50"]),
                ms(r["plan_p95"]),
                ms(r["plan_cpu_p50"]),
                ms(r["dp_p50"]),
                ms(r["progress_p50"]),
                f"{r['build_s']:.3f}",
            ]
            for r in dp_rows
        ],
    )
    for title, (header, rows) in (
        ("KneePointPruner.prune", pruner_table),
        ("ask = progress + reconcile + claim", ask_table),
        ("DP", dp_table),
    ):
        print(f"\n{title}\n{text_table(header, rows)}")

    lines = header_lines("Overhead of the planning engine", command, load_at_start)
    lines += ["## KneePointPruner.prune (target < 20 ms at 200 points)", ""]
    lines += markdown_table(*pruner_table)
    lines += ["", "## Ask: scan + claim (target < 50 ms with 1,000 trials, local storage)", ""]
    lines += [
        f"Half-done studies ({args.done_fraction:.0%} of the transitions completed); "
        "columns progress/reconcile/claim are p50 ms.",
        "",
    ]
    lines += markdown_table(*ask_table)
    lines += ["", "## DP and graph construction (target: compute_plan < 1 s at 10,000)", ""]
    lines += markdown_table(*dp_table)
    if dp_profile:
        lines += ["", "cProfile of one compute_plan at about 1,000 transitions (by tottime):", ""]
        lines += ["```", dp_profile, "```"]
    lines.append("")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
