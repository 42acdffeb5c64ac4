"""The paper's Table 1 on real curves: how well each curve family fits, and how fast.

Run from the repository root: ``.venv/bin/python -m benchmarks.fit_families [--out PATH]``.

Each family of :data:`optuna_opplan._knee_fit.KNEE_CURVES` is fitted to every whole
constant-learning-rate segment of ``benchmarks.learning_curves`` (ResNet's two per run, whole
MetaQNN runs). Reported: mean RMSE and R^2 (as the paper's Table 1), the share of failed fits,
and the mean time per call; plus the time per call on a 200-point series (the speed target is
< 20 ms for the default family).
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import time

import numpy as np
import scipy

from benchmarks import learning_curves as lc
from benchmarks._env import git_commit
from benchmarks.learning_curves import Segment
from optuna_opplan._knee_fit import KNEE_CURVES
from optuna_opplan._knee_fit import fit_knee

Row = tuple[float, float, bool, float]  # rmse, r2, ok, seconds


def _fit_all(segment: Segment) -> dict[str, Row]:
    out = {}
    for curve in KNEE_CURVES:
        start = time.process_time()
        fit = fit_knee(segment.values, curve=curve)
        out[curve] = (fit.rmse, fit.r2, fit.ok, time.process_time() - start)
    return out


def _time_long_series(curve: str, n: int = 200, repeats: int = 20) -> float:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    values = 0.8 - 0.7 * np.exp(-6.0 * t / n) - 0.1 * (t / n) ** 2 + rng.normal(0, 0.01, n)
    start = time.process_time()
    for _ in range(repeats):
        fit_knee(values, curve=curve)
    return (time.process_time() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/fit_families.md")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()

    segments = lc.resnet() + lc.metaqnn_runs("metaqnn_cifar10")
    start = time.perf_counter()
    with multiprocessing.Pool(args.processes) as pool:
        rows = pool.map(_fit_all, segments, chunksize=16)
    elapsed = time.perf_counter() - start
    # Timed alone, not beside the pool, so that the two cores are not shared.
    long_times = {curve: _time_long_series(curve) for curve in KNEE_CURVES}

    groups = [
        ("ResNet, epochs 0-28 from scratch", "scratch"),
        ("ResNet, epochs 28-49 fine-tuning", "finetune"),
        ("MetaQNN, epochs 0-20", "whole"),
        ("all segments", None),
    ]
    sections = []
    for title, part in groups:
        idx = [i for i, s in enumerate(segments) if part is None or s.part == part]
        lines = [
            f"### {title} ({len(idx)} segments)\n",
            "| family | mean RMSE | mean R^2 | median R^2 | failed fits | ms per call |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for curve in KNEE_CURVES:
            r = [rows[i][curve] for i in idx]
            ok = np.array([x[2] for x in r])
            rmse = np.array([x[0] for x in r])[ok]
            r2 = np.array([x[1] for x in r])[ok]
            ms = 1000 * np.mean([x[3] for x in r])
            lines.append(
                f"| {curve} | {rmse.mean():.2e} | {r2.mean():.3f} | {np.median(r2):.3f} | "
                f"{int((~ok).sum())} | {ms:.1f} |"
            )
        sections.append("\n".join(lines) + "\n")

    speed = [
        "### CPU time per call on a 200-point noisy series (mean of 20 calls)\n",
        "| family | ms per call |",
        "| --- | ---: |",
    ]
    speed += [f"| {c} | {1000 * s:.1f} |" for c, s in long_times.items()]

    command = ".venv/bin/python -m benchmarks.fit_families"
    header = (
        "# Curve families on real learning curves (the paper's Table 1)\n\n"
        f"Command: `{command}` (from the repository root; fits took {elapsed:.0f} s with "
        f"{args.processes} processes)\n"
        f"Date: {datetime.date.today().isoformat()}. Commit: {git_commit()}. "
        f"Machine: {platform.machine()}, 2 cores, "
        f"CPU only, Python {platform.python_version()}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}.\n"
        "Times per call are CPU time of the calling process (time.process_time), since the\n"
        f"machine is shared (load average {os.getloadavg()[0]:.1f} when the run ended).\n"
    )
    text = header + "\n" + "\n".join(sections) + "\n" + "\n".join(speed) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
