"""What the stopping rule changes for planning: compute and plan regret, by simulation.

Run from the repository root::

    nice -n 10 .venv/bin/python -m benchmarks.knee_planning [--seeds 10] [--out PATH]

For each seed and graph (``basic()`` and ``extended()``: 2 samplings x 3 clips x 3 lrs), the
real engine plans once per rule, single-process, on an in-memory study with
``SimulatedObjective(seed)`` (the same curves for both rules: a curve depends on the seed, the
transition and its starting score) and ``KneePointPruner(rule=..., max_epochs=200)``; the plan
is ``compute_plan`` over the transitions' results (``get_plan``). Per run:

- planning compute: the epochs trained over all transitions (``len(intermediate_values)``),
  and the same weighted by the clip length (an epoch at clip 32 costs twice one at 16);
- plan regret: the oracle plan's true score minus the planned schedule's true score. True
  scores come from the simulator's noise-free curves: the planned schedule's stages are rerun
  without noise, each from the previous stage's true score and kept at the epoch the rule kept;
  the oracle trains every transition to its noise-free best epoch and keeps, per state, the
  best incoming one (the same DP on true values; an upper bound, since a better start never
  ends lower in the simulator).

Rules: ``paper`` (the paper's knee rule, T=10, keep="best": the previous default) and
``improve`` (the extrapolation rule's defaults). Differences are paired by seed, with 95%
bootstrap intervals over seeds.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
import shlex
import subprocess
import sys
import time
from typing import Any

import numpy as np
import optuna

from benchmarks._env import load_average
from benchmarks._env import machine
import optuna_opplan as op
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan.simulation import SimulatedObjective

MAX_EPOCHS = 200
RULES: dict[str, dict[str, Any]] = {
    "paper": {"rule": "paper", "delay": 10},
    "improve": {"rule": "improve"},
}
GRAPHS = ("basic", "extended")


def _graph(name: str) -> op.TransitionGraph:
    return op.TransitionGraph.basic() if name == "basic" else op.TransitionGraph.extended()


def oracle_score(graph: op.TransitionGraph, objective: SimulatedObjective) -> float:
    """The best true goal score: every transition trained to its noise-free best epoch."""
    best: dict[Any, float] = {None: 0.0}
    pending = list(graph.transitions)
    while pending:
        ready = [
            t for t in pending if t.source in best and all(u.target != t.source for u in pending)
        ]
        if not ready:
            raise RuntimeError("the graph has transitions whose source is never reached")
        for t in ready:
            curve = objective.curve(graph, t, best[t.source])
            score = curve.mean(curve.best_epoch)
            best[t.target] = max(best.get(t.target, -np.inf), score)
            pending.remove(t)
    return max(best[g] for g in graph.goal_states)


def plan_once(graph: op.TransitionGraph, seed: int, rule: str) -> dict[str, float]:
    objective = SimulatedObjective(seed=seed)
    study = optuna.create_study(
        direction="maximize",
        sampler=op.PlanningSampler(graph),
        pruner=op.KneePointPruner(max_epochs=MAX_EPOCHS, **RULES[rule]),
    )
    start = time.process_time()
    op.run_worker(study, objective)
    cpu = time.process_time() - start
    epochs = weighted = 0.0
    base = min(graph.axis("clip_length").values)
    for trial in study.get_trials(deepcopy=False):
        n = len(trial.intermediate_values)
        transition = graph.transition(trial.system_attrs[KEY_TRANSITION])
        epochs += n
        weighted += n * transition.target["clip_length"] / base
    plan = op.get_plan(study)
    # The schedule's true score: its stages rerun on noise-free curves, each starting from the
    # previous stage's true score, each kept at the epoch the rule kept.
    true = 0.0
    for transition, result in zip(plan.transitions, plan.results):
        true = objective.curve(graph, transition, true).mean(result.epochs)
    return {
        "epochs": epochs,
        "weighted": weighted,
        "true": true,
        "regret": 100 * (oracle_score(graph, objective) - true),
        "planned": 100 * plan.score,
        "cpu": cpu,
    }


def _ci(x: np.ndarray, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [np.mean(rng.choice(x, x.size)) for _ in range(2000)]
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/knee_planning.md")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_before = load_average()
    start = time.perf_counter()
    rows = []
    for graph_name in GRAPHS:
        graph = _graph(graph_name)
        runs = {r: [plan_once(graph, s, r) for s in range(args.seeds)] for r in RULES}
        rows.append((graph_name, graph, runs))
        print(f"{graph_name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        "# Stopping rule and planning: compute and plan regret (simulation)",
        "",
        "Command: `"
        + " ".join(
            ["nice -n 10 .venv/bin/python -m benchmarks.knee_planning", shlex.join(sys.argv[1:])]
        ).strip()
        + f"` (from the repository root; {time.perf_counter() - start:.0f} s)",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
        f"Commit: {commit}. Machine: {machine()}. Load average before / after: "
        f"{load_before} / {load_average()}.",
        "",
        "Regret in accuracy points against the oracle plan (see the module docstring). "
        "Means over seeds; [95% bootstrap interval over seeds].",
        "",
        "| graph | rule | epochs trained | clip-weighted epochs | plan regret | "
        "planner's own score |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    diffs = []
    for graph_name, graph, runs in rows:
        for rule, res in runs.items():
            e = np.array([r["epochs"] for r in res])
            w = np.array([r["weighted"] for r in res])
            g = np.array([r["regret"] for r in res])
            p = np.array([r["planned"] for r in res])
            lo, hi = _ci(g)
            lines.append(
                f"| {graph_name} ({len(graph.transitions)} transitions) | {rule} | "
                f"{e.mean():.0f} | {w.mean():.0f} | {g.mean():.2f} [{lo:.2f}, {hi:.2f}] | "
                f"{p.mean():.2f} |"
            )
        paper = runs["paper"]
        improve = runs["improve"]
        ratio = np.array([i["weighted"] / p["weighted"] for i, p in zip(improve, paper)])
        dreg = np.array([i["regret"] - p["regret"] for i, p in zip(improve, paper)])
        rlo, rhi = _ci(ratio)
        dlo, dhi = _ci(dreg)
        diffs.append(
            f"- {graph_name}: improve / paper clip-weighted compute {ratio.mean():.3f} "
            f"[{rlo:.3f}, {rhi:.3f}]; plan regret improve - paper {dreg.mean():+.2f} points "
            f"[{dlo:+.2f}, {dhi:+.2f}]"
            + (" (no resolvable difference)" if dlo <= 0 <= dhi else "")
            + "."
        )
    lines += ["", "Paired by seed:", "", *diffs, ""]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
