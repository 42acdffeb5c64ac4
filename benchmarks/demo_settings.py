"""Do the demo's settings learn on video sets other than the bundled flavours?

The demo's model, width, batch, learning rates, epochs and knee delay must not be tuned to the
bundled synthetic videos. This benchmark makes small separable sets the generator knows
nothing about, points the demo's config at them through list files (as a user would), runs the
whole demo pipeline (plan, grid, compare) and records the test accuracies with the interval.

Sets (written as real mp4 files by this script, seeded):

- ``direction``: 3 classes told apart by motion direction only (a textured square drifting
  up, down or right over a noisy background; speed, start, texture and background random).
- ``appearance``: 3 classes told apart by the texture of a still square (stripes, checks,
  dots), position and colours random: no motion at all.

Run from the repository root: ``.venv/bin/python -m benchmarks.demo_settings [--sets direction]
[--train-per-class 50]``; results go to ``benchmarks/results/demo_settings.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
import shutil
import sys
import time
from typing import Any

import numpy as np
import tomllib

from benchmarks._env import cpu_model
from benchmarks._env import git_commit
from benchmarks._env import load_average
from optuna_opplan.demo import DEMO_CONFIG
from optuna_opplan.demo import run_end_to_end
from optuna_opplan.video._config import PlanConfig
from optuna_opplan.video.synthetic import write_video

HERE = os.path.dirname(os.path.abspath(__file__))
SETS = ("direction", "appearance")


def _frames(kind: str, label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    length = int(rng.integers(40, 61))
    side = 20
    background = rng.uniform(40, 120) + rng.normal(0, 20, (size, size, 3))
    out = np.empty((length, size, size, 3), np.float32)
    if kind == "direction":
        texture = rng.uniform(0, 255, (side // 2, side // 2, 3)).repeat(2, 0).repeat(2, 1)
        velocity = ((-1.0, 0.0), (1.0, 0.0), (0.0, 1.0))[label]
        speed = rng.uniform(0.8, 1.5)
        y0, x0 = rng.uniform(0, size - side, 2)
        for t in range(length):
            frame = background.copy()
            y = int(round((y0 + velocity[0] * speed * t) % (size - side)))
            x = int(round((x0 + velocity[1] * speed * t) % (size - side)))
            frame[y : y + side, x : x + side] = texture
            out[t] = frame
        return out
    ys, xs = np.mgrid[0:side, 0:side]
    period = int(rng.integers(4, 7))
    pattern = (
        (ys // (period // 2 or 1)) % 2,
        ((ys // period) + (xs // period)) % 2,
        ((ys % period < 2) & (xs % period < 2)),
    )[label].astype(np.float32)
    light, dark = rng.uniform(150, 255, 3), rng.uniform(0, 90, 3)
    texture = pattern[..., None] * light + (1 - pattern[..., None]) * dark
    y, x = (int(v) for v in rng.uniform(0, size - side, 2))
    for t in range(length):
        frame = background + rng.normal(0, 6, background.shape)
        frame[y : y + side, x : x + side] = texture
        out[t] = frame
    return out


def make_set(root: Path, kind: str, *, train_per_class: int, test_per_class: int) -> None:
    """Write ``kind`` as mp4 files with train/test list files and a class file."""
    classes = {"direction": ("up", "down", "right"), "appearance": ("stripes", "checks", "dots")}
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes[kind]))
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for label, name in enumerate(classes[kind]):
        for index in range(train_per_class + test_per_class):
            rng = np.random.default_rng([17, SETS.index(kind), label, index])
            split = "test" if index < test_per_class else "train"
            relative = f"{split}/{name}/{name}_{index:04d}.mp4"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            frames = _frames(kind, label, rng, 64)
            write_video(root / relative, np.clip(frames, 0, 255).astype(np.uint8))
            lines[split].append(f"{relative} {label}")
    for split, split_lines in lines.items():
        (root / f"{split}.txt").write_text("".join(f"{line}\n" for line in split_lines))


def run(kind: str, workdir: Path, train_per_class: int, grid_epochs: list[int]) -> dict[str, Any]:
    data = workdir / "data"
    make_set(data, kind, train_per_class=train_per_class, test_per_class=20)
    raw = tomllib.loads(DEMO_CONFIG)
    raw["dataset"].update(
        synthetic="",
        root=str(data),
        train_list=str(data / "train.txt"),
        test_list=str(data / "test.txt"),
        class_file=str(data / "classes.txt"),
    )
    raw["grid"]["total_epochs"] = grid_epochs
    config = PlanConfig.from_dict(raw, base_dir=str(workdir))
    started = time.monotonic()
    result = run_end_to_end(
        config, str(workdir / "opplan.log"), f"settings-{kind}", figures_dir=str(workdir / "cmp")
    )
    result.pop("per_video", None)
    return {"set": kind, "seconds": time.monotonic() - started, **result}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--train-per-class", type=int, default=50)
    parser.add_argument(
        "--grid-epochs",
        type=int,
        nargs="+",
        help="The grid's epoch budgets (default: the demo's); fewer make a smaller grid.",
    )
    parser.add_argument("--workdir", default=os.path.join(HERE, ".work", "demo_settings"))
    args = parser.parse_args()
    before = f"{os.cpu_count()} CPUs ({cpu_model()}), load average {load_average()}"
    rows = []
    for kind in args.sets:
        workdir = Path(args.workdir) / kind
        shutil.rmtree(workdir, ignore_errors=True)
        budgets = args.grid_epochs or tomllib.loads(DEMO_CONFIG)["grid"]["total_epochs"]
        rows.append(run(kind, workdir, args.train_per_class, budgets))
    after = f"load average {load_average()}"
    with open(os.path.join(HERE, "results", "demo_settings.json"), "w") as f:
        json.dump(rows, f, indent=2, default=str)
    lines = [
        "# The demo's settings on list-file video sets it was not tuned on",
        "",
        f"- Command: `.venv/bin/python -m benchmarks.demo_settings {' '.join(sys.argv[1:])}`",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"git commit {git_commit()}",
        f"- Machine at start: {before}; at end: {after}",
        f"- Sets: 3 classes, {args.train_per_class} training and 20 test videos per class, "
        "64 x 64, 40-60 frames (see the module docstring); the demo config "
        "(`optuna_opplan/demo.py`) with only the dataset paths changed"
        + (f" and grid epoch budgets {args.grid_epochs}." if args.grid_epochs else "."),
        "",
        "| set | planned test acc | best grid test acc | planned - grid (95% CI) | "
        "grid / planning compute | wall |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        diff = row["difference"]
        interval = (
            "n/a"
            if diff is None
            else f"{diff['points']:+.1f} ({diff['ci95'][0]:+.1f} to {diff['ci95'][1]:+.1f})"
        )
        lines.append(
            f"| {row['set']} | {row['planned']['accuracy']:.3f} | "
            f"{row['grid_best']['accuracy']:.3f} | {interval} | {row['compute_ratio']:.2f}x | "
            f"{row['seconds'] / 60:.1f} min |"
        )
    lines += ["", "Chance is 0.333 on every set.", ""]
    with open(os.path.join(HERE, "results", "demo_settings.md"), "w") as f:
        f.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
