"""Size and cost of every registered network: parameters, GFLOPs per clip, CPU train-step time.

Run from the repository root: ``.venv/bin/python -m benchmarks.models [--out PATH]``.

- Parameters: all parameter elements, for 400 classes (Kinetics-400).
- GFLOPs per clip: ``optuna_opplan.models.flops_per_clip`` (PyTorch's FlopCounterMode, one
  eval-mode forward pass, a multiply-add = 2 FLOPs) at 16 x 112 x 112, and at 16 x 224 x 224 for
  depth 50 as in the paper. GMACs (= GFLOPs / 2) is the unit most video papers call "FLOPs".
- Train step: one SGD step (forward, :func:`classification_loss`, backward, update) on a batch of
  2 random 16 x 112 x 112 clips in train mode, on the CPU; median of ``--repeats`` timed steps
  after one warm-up step.
- The P3D family is built at full width with the reference stem (4 x 7 x 7, temporal stride 4);
  the "tiny" row is the CPU-trainable variant (width 0.25, stem 3 x 7 x 7 with temporal stride
  1, dropout 0.5) on 8 x 56 x 56 clips.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import datetime
import os
from pathlib import Path
import platform
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

from benchmarks._env import cpu_model
from benchmarks._env import git_commit
from benchmarks._env import load_average
from optuna_opplan import models

NUM_CLASSES = 400
BATCH = 2
CLIP = (3, 16, 112, 112)
PAPER_CLIP = (3, 16, 224, 224)
TINY_KWARGS: dict[str, Any] = {
    "width_multiplier": 0.25,
    "stem_temporal_kernel": 3,
    "stem_temporal_stride": 1,
}
TINY_CLIP = (3, 8, 56, 56)
PAPER_DG_P3D_50 = 123


@dataclass(frozen=True)
class Row:
    name: str
    clip: tuple[int, ...]
    params_m: float
    gflops: float
    gflops_224: float | None
    step_s: float
    step_cpu_s: float


def _train_step_seconds(
    model: nn.Module, clip: tuple[int, ...], repeats: int
) -> tuple[float, float]:
    """Median wall and process CPU seconds of a train step. CPU seconds (all threads of this
    process) hardly move when other jobs share the machine; wall seconds do."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    clips = torch.randn(BATCH, *clip)
    target = torch.randint(0, NUM_CLASSES, (BATCH,))
    model.train()
    times, cpu = [], []
    for _ in range(repeats + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        models.classification_loss(model(clips), target).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times[1:]), statistics.median(cpu[1:])


def measure(name: str, kwargs: dict[str, Any], clip: tuple[int, ...], repeats: int) -> Row:
    torch.manual_seed(0)
    model = models.get_model(name, num_classes=NUM_CLASSES, **kwargs)
    depth_50 = name.endswith("resnet50")
    step_s, step_cpu_s = _train_step_seconds(model, clip, repeats)
    return Row(
        name=name if not kwargs else f"{name} (tiny)",
        clip=clip,
        params_m=models.count_parameters(model) / 1e6,
        gflops=models.flops_per_clip(model, clip),
        gflops_224=models.flops_per_clip(model, PAPER_CLIP) if depth_50 and not kwargs else None,
        step_s=step_s,
        step_cpu_s=step_cpu_s,
    )


def _machine() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def _contention_note(load_before: str) -> list[str]:
    cores = os.cpu_count() or 1
    if max(float(value) for value in load_before.replace(",", " ").split()) <= cores:
        return []
    return [
        f"Note: the machine was shared (load average above its {cores} CPUs): wall-clock "
        "train-step times are inflated by other jobs, CPU seconds much less; parameter and "
        "FLOP counts are exact.",
        "",
    ]


def render(rows: list[Row], *, command: str, started: str, load_before: str) -> str:
    lines = [
        "# Models: size and cost per clip",
        "",
        f"Command: `{command}` (from the repository root)",
        f"Date: {started}",
        f"Commit: {git_commit()}",
        f"Machine: {_machine()}",
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_average()}",
        "",
        f"{NUM_CLASSES} classes. GFLOPs: FlopCounterMode, one eval-mode clip, multiply-add = 2 "
        "FLOPs (GMACs = half). Train step: SGD step on a batch of "
        f"{BATCH} clips, CPU, median after a warm-up.",
        "",
        f"Paper anchor (Table 8): DG-P3D ResNet-50 {PAPER_DG_P3D_50} GFLOPs x 30 views, unit and "
        "clip length not stated; compare with the 16x224x224 column (GFLOPs or GMACs).",
        "",
        *_contention_note(load_before),
        "| network | clip (C, T, H, W) | params (M) | GFLOPs / clip | GMACs / clip "
        "| GFLOPs / clip at 16x224x224 | train step, batch 2 (s) "
        "| train step CPU (process s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        paper = f"{row.gflops_224:.1f}" if row.gflops_224 is not None else ""
        lines.append(
            f"| {row.name} | {'x'.join(map(str, row.clip))} | {row.params_m:.2f} "
            f"| {row.gflops:.2f} | {row.gflops / 2:.2f} | {paper} | {row.step_s:.2f} "
            f"| {row.step_cpu_s:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/models.md"))
    parser.add_argument("--repeats", type=int, default=3, help="timed train steps per network")
    parser.add_argument("--names", nargs="*", default=None, help="subset of list_models()")
    args = parser.parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = load_average()
    rows = []
    for name in args.names or models.list_models():
        rows.append(measure(name, {}, CLIP, args.repeats))
        print(rows[-1], flush=True)
    rows.append(measure("dg_p3d_resnet18", TINY_KWARGS, TINY_CLIP, args.repeats))
    print(rows[-1], flush=True)
    command = " ".join([".venv/bin/python -m benchmarks.models", *sys.argv[1:]])
    text = render(rows, command=command, started=started, load_before=load_before)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
