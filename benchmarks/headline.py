"""The product's headline: planned schedule vs the best hand-tuned grid schedule, one run each.

For each flavour of the bundled synthetic benchmark ("motion": local motion decides, like
Kinetics; "temporal": the order of events decides, like Something-Something) it runs the whole
pipeline of ``opplan demo`` (plan with the knee pruner and the DP, train the grid baseline,
evaluate both on the test split with N clips x 3 crops) and records accuracy and compute.

Run from the repository root: ``.venv/bin/python -m benchmarks.headline [--flavours motion
temporal]``; results go to ``benchmarks/results/headline.md`` and ``headline.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time
from typing import Any

import tomllib

from benchmarks._env import cpu_model
from benchmarks._env import git_commit
from benchmarks._env import load_average
import optuna_opplan
from optuna_opplan.demo import DEMO_CONFIG
from optuna_opplan.demo import run_end_to_end
from optuna_opplan.video._config import PlanConfig

HERE = os.path.dirname(os.path.abspath(__file__))


def _machine() -> str:
    return (
        f"{os.cpu_count()} CPUs ({cpu_model()}), {platform.platform()}, Python "
        f"{platform.python_version()}, load average {load_average()}"
    )


def run(flavour: str, workdir: str) -> dict[str, Any]:
    raw = tomllib.loads(DEMO_CONFIG)
    raw["dataset"]["synthetic"] = flavour
    # A grid over two training lengths, as the paper's grid spans several (it has five).
    raw["grid"]["total_epochs"] = [6, 12]
    raw["dataset"]["cache_dir"] = os.path.join(workdir, "..", "cache")
    config = PlanConfig.from_dict(raw, base_dir=workdir)
    url = os.path.join(workdir, "opplan.log")
    result = run_end_to_end(
        config, url, f"headline-{flavour}", figures_dir=os.path.join(workdir, "compare")
    )
    return {"flavour": flavour, "config": config.to_dict(), **result}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flavours", nargs="+", default=["motion", "temporal"])
    parser.add_argument("--workdir", default=os.path.join(HERE, ".work", "headline"))
    args = parser.parse_args()
    machine_before = _machine()
    rows = []
    for flavour in args.flavours:
        workdir = os.path.join(args.workdir, flavour)
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        started = time.monotonic()
        rows.append({**run(flavour, workdir), "total_seconds": time.monotonic() - started})
    with open(os.path.join(HERE, "results", "headline.json"), "w") as f:
        json.dump(rows, f, indent=2, default=str)
    write_markdown(rows, machine_before, _machine(), " ".join(sys.argv[1:]))
    return 0


def write_markdown(rows: list[dict[str, Any]], before: str, after: str, argv: str) -> None:
    lines = [
        "# Headline: planned schedule vs best hand-tuned grid schedule",
        "",
        f"- Command: `.venv/bin/python -m benchmarks.headline {argv}`".rstrip() + "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"optuna-opplan {optuna_opplan.__version__}",
        f"- Commit: {git_commit()}",
        f"- Machine at start: {before}",
        f"- Machine at end: {after}",
        "- Setting: the embedded demo config (`optuna_opplan/demo.py`, DEMO_CONFIG) with the "
        "flavour swapped and a grid over total epochs {6, 12}; CPU only. Compute is in "
        "clip-frame-epochs (epochs x clip length); planning counts every epoch of every "
        "transition, the grid every epoch of every schedule. The best grid schedule is "
        "picked by its validation score (as planning picks by validation), and both are "
        "tested with N clips x 3 crops.",
        "",
        "| flavour | planned test acc | best grid test acc | gain (points) | planning compute "
        "| grid compute | grid / planning | planning wall | grid wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        planned, best, total = row["planned"], row["grid_best"], row["grid_total"]
        gain = row["accuracy_gain"]
        lines.append(
            f"| {row['flavour']} | {planned['accuracy']:.4f} | {best['accuracy']:.4f} | "
            f"{gain * 100:+.2f} | {planned['compute']:.0f} | {total['clip_frames']:.0f} | "
            f"{row['compute_ratio']:.2f}x | {row['wall_seconds']['planning']:.0f}s | "
            f"{row['wall_seconds']['grid']:.0f}s |"
        )
    lines.append("")
    for row in rows:
        stages = " -> ".join(
            f"{s['params']['sampling']}/{s['params']['clip_length']}f/lr {s['params']['lr']} "
            f"x{s['epochs']}"
            for s in row["planned"]["schedule"]["stages"]
        )
        lines.append(f"- {row['flavour']}: plan {stages}; best grid {row['grid_best']['params']}")
    lines += ["", "## Reading", "", "(written by hand after the run)", ""]
    with open(os.path.join(HERE, "results", "headline.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
