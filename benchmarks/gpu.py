"""Training throughput of DG-P3D-50 on one GPU at the paper's clip sizes, and data wait.

Run from the repository root on a machine with a CUDA GPU:
``.venv/bin/python -m benchmarks.gpu [--out benchmarks/results/gpu.md] [--steps 30]``.
Without a GPU it refuses (exit code 2) instead of measuring the CPU.

What it measures, for clips of 16, 32, 64 and 128 frames of 224 x 224 (the paper's input;
its Kinetics plan uses 16 -> 32 -> 64): the trainer's own training loop
(``TransitionTrainer``'s ``train_epoch``: decord decoding in DataLoader workers, pinned
memory, mixed precision, cudnn.benchmark, gradient accumulation to an effective batch of 8
clips with at most 256 frames per forward pass, BatchNorm frozen from 64 frames) over
``--steps`` optimizer steps after one warm-up epoch of cuDNN autotuning, on real mp4 files
(the synthetic "motion" set generated at 256 x 256). Reported: clips per second and the
share of the step time spent waiting for the next batch (the data wait), plus peak GPU memory.
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path
import subprocess
import sys
import tempfile

import torch

from benchmarks._env import load_average
from benchmarks._env import machine

CLIP_LENGTHS = (16, 32, 64, 128)
CROP = 224
BATCH = 8
MAX_FRAMES = 256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/gpu.md")
    parser.add_argument("--steps", type=int, default=30, help="Optimizer steps per clip size.")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--data", help="Folder for the generated videos (default: a cache).")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "benchmarks/gpu.py needs a CUDA GPU: torch sees none (torch "
            f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Run it on a GPU "
            "machine with a CUDA build of torch; nothing was measured.",
            file=sys.stderr,
        )
        return 2

    from optuna_opplan.video import ClipTransform
    from optuna_opplan.video import VideoDataset
    from optuna_opplan.video._trainer import Runner
    from optuna_opplan.video._trainer import TrainerConfig
    from optuna_opplan.video.synthetic import ensure_dataset

    cache = Path(args.data or Path.home() / ".cache" / "optuna-opplan" / "gpu-bench")
    generated = ensure_dataset(
        cache, flavour="motion", num_classes=8, videos_per_class=12, num_frames=(160, 200),
        size=256,
    )  # fmt: skip
    transform = ClipTransform(crop_size=CROP, scale_range=(CROP, 256), eval_short_side=CROP)
    data = VideoDataset.from_list_file(
        generated.root, generated.train_list, generated.class_file, transform=transform
    )
    config = TrainerConfig(
        model="dg_p3d_resnet50",
        batch_size=BATCH,
        max_frames_per_step=MAX_FRAMES,
        num_workers=args.workers,
        device="cuda",
        amp=True,
        progress=False,
    )
    runner = Runner(config, len(data.classes))
    rows = []
    for clip in CLIP_LENGTHS:
        model = runner.build_model()
        optimizer = runner.optimizer(model, 0.01)
        clips = data.with_clip(clip_length=clip, sampling="consecutive")
        micro, accumulate = runner.micro_batch(clip)
        steps_per_epoch = max(1, len(clips) // BATCH)
        # Repeat the list so one "epoch" holds --steps optimizer steps.
        repeat = -(-args.steps // steps_per_epoch)
        long = clips.with_entries(list(clips.entries) * repeat)
        warm = clips.with_entries(list(clips.entries)[: BATCH * 2])
        runner.train_epoch(model, optimizer, warm, seed=0, epoch=1)  # cuDNN autotuning
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        stats = runner.train_epoch(model, optimizer, long, seed=1, epoch=2)
        torch.cuda.synchronize()
        rows.append(
            {
                "clip": clip,
                "micro": micro,
                "accumulate": accumulate,
                "clips": stats.clips,
                "clips_per_s": stats.clips_per_second,
                "wait": stats.data_seconds / max(stats.seconds, 1e-9),
                "memory": torch.cuda.max_memory_allocated() / 2**30,
            }
        )
        print(
            f"clip {clip}: {stats.clips_per_second:.1f} clips/s, data wait "
            f"{rows[-1]['wait']:.0%}, peak {rows[-1]['memory']:.1f} GiB",
            flush=True,
        )
        del model, optimizer
        torch.cuda.empty_cache()
    _write(args, rows)
    return 0


def _write(args: argparse.Namespace, rows: list[dict]) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# DG-P3D-50 training throughput on one GPU",
        "",
        f"Command: `.venv/bin/python -m benchmarks.gpu --steps {args.steps} "
        f"--workers {args.workers}`",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"commit {commit or 'unknown'}",
        f"Machine: {machine()}; GPU: {torch.cuda.get_device_name(0)}, "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}; load average {load_average()}",
        "",
        f"Input {CROP} x {CROP}, effective batch {BATCH} clips, at most {MAX_FRAMES} frames per "
        "forward pass, mixed precision, decord decoding in "
        f"{args.workers} DataLoader workers, {args.steps} optimizer steps after a warm-up.",
        "",
        "| clip (frames) | clips x passes per step | clips/s | data wait | peak memory (GiB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['clip']} | {row['micro']} x {row['accumulate']} | "
            f"{row['clips_per_s']:.1f} | {row['wait']:.1%} | {row['memory']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    if args.out == "/dev/null":
        return
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=Path(args.out).parent, delete=False) as f:
        f.write(text)
    os.replace(f.name, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
