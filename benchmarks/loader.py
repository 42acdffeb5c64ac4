"""Video loader throughput and the share of a train step spent waiting for data.

Run from the repository root: ``.venv/bin/python -m benchmarks.loader [--out PATH]``.

Data: the bundled synthetic "motion" benchmark at its defaults (6 classes x 40 videos, 64 to
128 frames of 64 x 64, H.264 with a keyframe every 8 frames), generated once into a cache.

1. Loader alone: training clips per second through ``DataLoader(num_workers=2, batch_size=8)``
   (decode + augmentation to 56 x 56 crops) for both samplings and clip lengths 8, 16, 32,
   after one warm-up batch.
2. Training: a tiny 3D ConvNet (three strided 3x3x3 convolutions, 16-32-64 channels, global
   pooling, a linear head) trained with SGD on the same loader; the wait share is the time
   spent blocked in ``next(loader)`` over the whole step time. The target is under 10%.

Both phases share the machine's cores with the workers, as a real run does.
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path
import platform
import shutil
import sys
import tempfile
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import RandomSampler

from benchmarks._env import cpu_model
from benchmarks._env import git_commit
from optuna_opplan.video import VideoDataset
from optuna_opplan.video.synthetic import ensure_dataset

CLIP_LENGTHS = (8, 16, 32)
SAMPLINGS = ("consecutive", "uniform")
BATCH_SIZE = 8
WORKERS = 2


def tiny_model(num_classes: int) -> nn.Module:
    def block(inputs: int, outputs: int) -> list[nn.Module]:
        return [
            nn.Conv3d(inputs, outputs, 3, stride=(1, 2, 2), padding=1, bias=False),
            nn.BatchNorm3d(outputs),
            nn.ReLU(inplace=True),
        ]

    return nn.Sequential(
        *block(3, 16),
        *block(16, 32),
        *block(32, 64),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


def loader_for(dataset: VideoDataset, batches: int) -> DataLoader[Any]:
    # Drawn with replacement so a measurement may run longer than one epoch of the set.
    sampler = RandomSampler(dataset, replacement=True, num_samples=batches * BATCH_SIZE)
    return DataLoader(dataset, batch_size=BATCH_SIZE, sampler=sampler, num_workers=WORKERS)


def clips_per_second(dataset: VideoDataset, batches: int) -> float:
    iterator = iter(loader_for(dataset, batches + 1))
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH_SIZE / (time.perf_counter() - start)


def wait_share(dataset: VideoDataset, steps: int) -> tuple[float, float]:
    model = tiny_model(len(dataset.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss()
    iterator = iter(loader_for(dataset, steps + 1))
    clips, labels = next(iterator)
    waited = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(clips), labels).backward()
        optimizer.step()
        before = time.perf_counter()
        clips, labels = next(iterator)
        waited += time.perf_counter() - before
    total = time.perf_counter() - start
    return waited / total, total / steps


def machine() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache-dir", default=None, help="reuse a cache (default: a fresh one, timed)"
    )
    parser.add_argument("--batches", type=int, default=25)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="opplan-loader-")
    data = ensure_dataset(cache_dir, flavour="motion")
    prepare = time.perf_counter() - start
    base = VideoDataset.from_list_file(data.root, data.train_list, data.class_file)

    throughput = []
    for sampling in SAMPLINGS:
        for length in CLIP_LENGTHS:
            dataset = base.with_clip(clip_length=length, sampling=sampling)
            rate = clips_per_second(dataset, args.batches)
            throughput.append((sampling, length, rate))
            print(f"loader {sampling:11s} {length:3d} frames: {rate:7.1f} clips/s", flush=True)

    training = []
    for sampling in SAMPLINGS:
        for length in CLIP_LENGTHS:
            dataset = base.with_clip(clip_length=length, sampling=sampling)
            share, step = wait_share(dataset, args.steps)
            training.append((sampling, length, share, step))
            print(f"train {sampling:11s} {length:3d} frames: wait {share:6.1%}", flush=True)

    num_videos = len(base) + len(data.test_list.read_text().splitlines())
    label = f"cache {cache_dir}" if args.cache_dir else f"{num_videos} videos generated"
    if not args.cache_dir:
        shutil.rmtree(cache_dir)
    command = " ".join([".venv/bin/python -m benchmarks.loader", *sys.argv[1:]])
    lines = [
        "# Loader benchmark",
        "",
        f"Command: `{command}`",
        f"Date: {datetime.datetime.now().astimezone().isoformat(timespec='minutes')}",
        f"Commit: {git_commit()}",
        f"Machine: {machine()}",
        f"Load average (1 min) at start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f} "
        "(other processes share the cores; higher load means lower numbers)",
        "",
        f"Data: synthetic `motion` defaults, {len(base)} training videos of 64..128 frames at "
        f"64 x 64; {label} in {prepare:.1f} s. DataLoader: {WORKERS} workers, batch "
        f"{BATCH_SIZE}, train mode (random scale 64..80, 56 x 56 crop, flip).",
        "",
        "## Loader throughput (decode + augment, no model)",
        "",
        "| sampling | clip length | clips/s |",
        "|---|---:|---:|",
        *(f"| {s} | {n} | {r:.1f} |" for s, n, r in throughput),
        "",
        "## Share of a train step waiting for data (tiny 3D ConvNet, target < 10%)",
        "",
        "| sampling | clip length | wait share | step time (s) |",
        "|---|---:|---:|---:|",
        *(f"| {s} | {n} | {share:.1%} | {step:.3f} |" for s, n, share, step in training),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
