"""Makespan of planning with 1, 2, 4 and 8 workers on the paper graphs, by simulation.

Run from the repository root: ``.venv/bin/python -m benchmarks.scheduling [--seeds N]``.

Durations are real engine decisions: for each seed and graph (``basic()`` and ``extended()``,
2 samplings x 3 clips x 3 lrs), the real engine runs once, single-process, on an in-memory study
with ``SimulatedObjective(seed)`` and ``KneePointPruner(delay=10)``; a transition's duration is
the epochs its trials trained (``len(intermediate_values)``, retries included) times a cost per
epoch proportional to the clip length (1 unit = one epoch at clip 16). A transition's curve and
stop epoch do not depend on the schedule (its source state is resolved before it starts), so one
run gives every duration.

The scheduler is then replayed as a discrete-event simulation of ``run_worker``'s policy: an
idle worker takes the first ready transition in a priority list, a transition being ready when
every transition into its source state has finished. Polling delays are left out: an idle
worker sleeps at most ``max_poll_interval`` (10 s), nothing against epochs of minutes.

Priority lists compared:

- ``engine``: ``graph.transitions``, the engine's order (longest remaining chain first, counted
  in transitions).
- ``depth``: a plain topological order, by the source's depth (BFS), then the state order.
- ``random``: uniformly random priority lists (mean over 20 per seed).
- ``clip``: longest remaining chain weighted by the cost of an epoch (the clip length), epochs
  taken as equal: a variant of the engine's rule that needs nothing unknown before training.
- ``oracle``: longest remaining *duration-weighted* chain first, which needs the durations in
  advance: a reference for what a better order could buy, not something the engine can do.

Bounds: the critical path (the longest duration-weighted chain from the initial node to a goal,
= the makespan with unlimited workers) and ``max(critical path, total work / workers)``. The
graph width is the largest antichain of the precedence order (transitions that could all be
running at once), by Dilworth's theorem; with at least that many workers every ready transition
starts at once, so every order reaches the critical path.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import heapq
import os

import numpy as np
import optuna

from benchmarks._env import load_average
from benchmarks._results import RESULTS_DIR
from benchmarks._results import command_line
from benchmarks._results import header_lines
from benchmarks._results import markdown_table
from benchmarks._results import text_table
import optuna_opplan as op
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan.simulation import SimulatedObjective

WORKERS = (1, 2, 4, 8)
ORDERS = ("engine", "depth", "random", "clip", "oracle")
RANDOM_ORDERS = 20


def engine_durations(graph: op.TransitionGraph, seed: int) -> dict[str, float]:
    """Run the real engine once and cost each transition by its epochs trained x clip."""
    study = optuna.create_study(
        direction="maximize",
        sampler=op.PlanningSampler(graph),
        pruner=op.KneePointPruner(delay=10),
    )
    op.run_worker(study, SimulatedObjective(seed=seed))
    epochs = dict.fromkeys((t.key for t in graph.transitions), 0)
    for trial in study.get_trials(deepcopy=False):
        epochs[trial.system_attrs[KEY_TRANSITION]] += len(trial.intermediate_values)
    base = min(graph.axis("clip_length").values)
    return {t.key: epochs[t.key] * t.target["clip_length"] / base for t in graph.transitions}


def simulate(
    graph: op.TransitionGraph,
    order: Sequence[op.Transition],
    durations: dict[str, float],
    workers: int,
) -> tuple[float, int]:
    """List scheduling: the makespan and the peak number of busy workers."""
    unfinished_in = {s: len(graph.predecessors(s)) for s in graph.states}
    waiting = list(order)
    running: list[tuple[float, int, op.Transition]] = []
    now, idle, peak, tick = 0.0, workers, 0, 0
    while waiting or running:
        while idle:
            pick = next(
                (
                    i
                    for i, t in enumerate(waiting)
                    if t.source is None or unfinished_in[t.source] == 0
                ),
                None,
            )
            if pick is None:
                break
            t = waiting.pop(pick)
            heapq.heappush(running, (now + durations[t.key], tick, t))
            tick += 1
            idle -= 1
        peak = max(peak, workers - idle)
        assert running, "nothing running and nothing ready: the graph order is broken"
        now = running[0][0]
        # Everything finishing at this instant frees its worker before anyone picks again.
        while running and running[0][0] == now:
            _, _, t = heapq.heappop(running)
            unfinished_in[t.target] -= 1
            idle += 1
    return now, peak


def critical_path(graph: op.TransitionGraph, durations: dict[str, float]) -> float:
    """The longest duration-weighted chain from the initial node to a goal state."""
    finish: dict[str, float] = {}
    reached: dict[op.State | None, float] = {None: 0.0}
    for state in graph.states:  # by depth: every source is done before its targets
        for t in graph.predecessors(state):
            finish[t.key] = reached[t.source] + durations[t.key]
        reached[state] = max(finish[t.key] for t in graph.predecessors(state))
    return max(reached[g] for g in graph.goal_states)


def width(graph: op.TransitionGraph) -> int:
    """The largest antichain of the precedence order = transitions minus a maximum matching
    of its transitive closure (Dilworth, via Fulkerson's bipartite construction)."""
    transitions = list(graph.transitions)
    index = {t.key: i for i, t in enumerate(transitions)}
    after: list[set[int]] = [set() for _ in transitions]
    # Successors of a transition: every transition out of its target, and theirs.
    for t in sorted(transitions, key=lambda t: -graph.depth(t.target)):
        i = index[t.key]
        for nxt in graph.successors(t.target):
            j = index[nxt.key]
            after[i] |= {j} | after[j]
    match: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in after[i]:
            if j not in seen:
                seen.add(j)
                if j not in match or augment(match[j], seen):
                    match[j] = i
                    return True
        return False

    matched = sum(augment(i, set()) for i in range(len(transitions)))
    return len(transitions) - matched


def orders(
    graph: op.TransitionGraph, durations: dict[str, float], rng: np.random.Generator
) -> dict[str, list[list[op.Transition]]]:
    position = {s: i for i, s in enumerate(graph.states)}
    depth_order = sorted(
        graph.transitions,
        key=lambda t: (
            -1 if t.source is None else graph.depth(t.source),
            -1 if t.source is None else position[t.source],
            position[t.target],
        ),
    )
    # Longest weighted chain from each transition's start to the end of the graph.
    tail: dict[str, float] = {}
    for t in sorted(graph.transitions, key=lambda t: -graph.depth(t.target)):
        rest = [tail[n.key] for n in graph.successors(t.target)]
        tail[t.key] = durations[t.key] + max(rest, default=0.0)
    oracle = sorted(graph.transitions, key=lambda t: -tail[t.key])
    # The same rule with what is known before training: the cost of an epoch (clip length),
    # the epochs taken as equal for every transition.
    clip_tail: dict[str, float] = {}
    for t in sorted(graph.transitions, key=lambda t: -graph.depth(t.target)):
        rest = [clip_tail[n.key] for n in graph.successors(t.target)]
        clip_tail[t.key] = t.target["clip_length"] + max(rest, default=0.0)
    clip = sorted(graph.transitions, key=lambda t: -clip_tail[t.key])
    randoms = [
        [graph.transitions[i] for i in rng.permutation(len(graph.transitions))]
        for _ in range(RANDOM_ORDERS)
    ]
    return {
        "engine": [list(graph.transitions)],
        "depth": [depth_order],
        "random": randoms,
        "clip": [clip],
        "oracle": [oracle],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "scheduling.md"))
    args = parser.parse_args()
    command = command_line()
    load_at_start = load_average()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    graphs = {"basic": op.TransitionGraph.basic(), "extended": op.TransitionGraph.extended()}
    summary_rows: list[list[str]] = []
    seed_rows: list[list[str]] = []
    graph_rows: list[list[str]] = []
    worst_engine_at_width: list[float] = []
    for name, graph in graphs.items():
        w = width(graph)
        # The width itself too: the target is stated for workers >= width.
        counts = sorted({*WORKERS, w})
        # ratio[order][workers] over seeds; random orders are averaged within a seed.
        ratio: dict[str, dict[int, list[float]]] = {o: {k: [] for k in counts} for o in ORDERS}
        bound: dict[int, list[float]] = {k: [] for k in counts}
        peaks: list[int] = []
        cps, works = [], []
        for seed in range(args.seeds):
            durations = engine_durations(graph, seed)
            cp = critical_path(graph, durations)
            work = sum(durations.values())
            inf_makespan, inf_peak = simulate(graph, graph.transitions, durations, 10_000)
            assert abs(inf_makespan - cp) < 1e-9 * cp, (inf_makespan, cp)
            peaks.append(inf_peak)
            cps.append(cp)
            works.append(work)
            lists = orders(graph, durations, np.random.default_rng(seed))
            for k in counts:
                bound[k].append(max(cp, work / k) / cp)
                for o in ORDERS:
                    spans = [simulate(graph, order, durations, k)[0] for order in lists[o]]
                    ratio[o][k].append(float(np.mean(spans)) / cp)
                    if o == "engine" and k >= w:
                        worst_engine_at_width.append(spans[0] / cp)
                seed_rows.append(
                    [
                        name,
                        str(seed),
                        str(k),
                        f"{cp:.0f}",
                        f"{work:.0f}",
                        *(f"{ratio[o][k][-1]:.3f}" for o in ORDERS),
                    ]
                )
        graph_rows.append(
            [
                name,
                str(len(graph.transitions)),
                str(len(graph.critical_path())),
                str(w),
                f"{min(peaks)}-{max(peaks)}",
                f"{np.mean(cps):.0f}",
                f"{np.mean(works):.0f}",
                f"{np.mean(works) / np.mean(cps):.2f}",
            ]
        )
        for k in counts:
            summary_rows.append(
                [
                    name,
                    str(k),
                    "yes" if k >= w else "no",
                    f"{np.mean(bound[k]):.3f}",
                    *(f"{np.mean(ratio[o][k]):.3f} / {max(ratio[o][k]):.3f}" for o in ORDERS),
                ]
            )

    graph_header = [
        "graph",
        "transitions",
        "critical path (transitions)",
        "width",
        "peak busy, unlimited workers",
        "critical path (units)",
        "total work (units)",
        "work / critical path",
    ]
    summary_header = [
        "graph",
        "workers",
        ">= width",
        "lower bound / CP",
        *(f"{o} mean / max" for o in ORDERS),
    ]
    seed_header = ["graph", "seed", "workers", "CP", "work", *ORDERS]
    print(text_table(graph_header, graph_rows))
    print()
    print(text_table(summary_header, summary_rows))
    verdict = (
        f"engine order, workers >= width: worst makespan / critical path "
        f"{max(worst_engine_at_width):.3f} (target <= 1.1)"
        if worst_engine_at_width
        else "no worker count reaches the graph width"
    )
    print(f"\n{verdict}")

    lines = header_lines(
        "Scheduling: simulated makespan vs the critical-path bound", command, load_at_start
    )
    lines += [
        f"{args.seeds} seeds (SimulatedObjective(seed), KneePointPruner(delay=10), real engine "
        "decisions); cost per epoch proportional to the clip length, 1 unit = one epoch at "
        "clip 16. Ratios are makespan / critical path; `random` is the mean over "
        f"{RANDOM_ORDERS} random priority lists per seed.",
        "",
        "## Graphs",
        "",
    ]
    lines += markdown_table(graph_header, graph_rows)
    lines += ["", "## Makespan / critical path (mean / max over seeds)", ""]
    lines += markdown_table(summary_header, summary_rows)
    lines += ["", f"**{verdict}.**", "", "## Per seed", ""]
    lines += markdown_table(seed_header, seed_rows)
    lines.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
