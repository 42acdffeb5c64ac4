"""A fixed schedule trained from start to end: the grid baseline's objective and a plan's
replay, with the same loops as the transitions (:class:`~optuna_opplan.video._trainer.Runner`)."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
import sys
import time
from typing import Any

import torch
from torch import nn

from optuna_opplan.video._compute import Compute
from optuna_opplan.video._dataset import VideoDataset
from optuna_opplan.video._schedule import Schedule
from optuna_opplan.video._trainer import Runner
from optuna_opplan.video._trainer import TrainerConfig


@dataclass
class ScheduleResult:
    """What :func:`train_schedule` returns."""

    model: nn.Module
    history: list[dict[str, float]]
    test_accuracy: float | None
    seconds: float
    cpu_seconds: float
    clip_frame_epochs: int
    compute: Compute = field(default_factory=Compute)
    test_correct: list[int] | None = None


def train_schedule(
    schedule: Schedule,
    train: VideoDataset,
    *,
    config: TrainerConfig | None = None,
    val: VideoDataset | None = None,
    test: VideoDataset | None = None,
    initial_state: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    validate: str = "every",
    record: Callable[[Compute], None] | None = None,
) -> ScheduleResult:
    """Train a fixed schedule from scratch (or from ``initial_state``) with the same loops.

    The grid-search baseline trains hand-tuned schedules this way, and a found plan is
    replayed on another model or dataset with ``Schedule.from_plan(plan)``. The optimizer is
    kept across epochs of a stage and re-created when a constant-lr stage changes its lr, as
    the planned transitions do; a global decay sets the lr every epoch.

    Args:
        schedule: The schedule.
        train: Training split.
        config: Training settings.
        val: Optional split evaluated (one view) after every epoch.
        test: Optional split evaluated at the end; in ``"test"`` mode it averages N clips x 3
            crops per video.
        initial_state: Weights to start from.
        log: Where progress lines go (default: stderr if ``config.progress``).
        validate: ``"every"`` epoch or only the ``"last"`` one (what a grid search needs to
            pick its best schedule).
        record: Called with the compute so far (a :class:`Compute`) after every epoch, so
            an attempt that fails later still has its cost on record.
    """
    if validate not in ("every", "last"):
        raise ValueError(f"`validate` must be 'every' or 'last', but got {validate!r}.")
    config = config or TrainerConfig()
    runner = Runner(config, len(train.classes))
    started, cpu_started = time.perf_counter(), time.process_time()
    meter = Compute()
    emit = log or (lambda line: print(line, file=sys.stderr, flush=True))
    model = runner.build_model()
    if initial_state is not None:
        model.load_state_dict(dict(initial_state))
    history: list[dict[str, float]] = []
    optimizer: torch.optim.Optimizer | None = None
    current = None
    for epoch in range(1, schedule.total_epochs + 1):
        stage = schedule.stage_at(epoch)
        lr = schedule.lr_at(epoch)
        if optimizer is None or (schedule.decay == "constant" and stage is not current):
            optimizer = runner.optimizer(model, lr)
            current = stage
        for group in optimizer.param_groups:
            group["lr"] = lr
        data = train.with_clip(clip_length=stage.clip_length, sampling=stage.sampling)
        stats = runner.train_epoch(model, optimizer, data, seed=config.seed + epoch, epoch=epoch)
        meter.add_training(stats.clips, stage.clip_length)
        row = {"epoch": epoch, "lr": lr, "clip_length": stage.clip_length, "loss": stats.loss}
        if val is not None and (validate == "every" or epoch == schedule.total_epochs):
            view = val.with_clip(clip_length=stage.clip_length, sampling=stage.sampling)
            row["val"] = runner.evaluate(model, view.with_mode("val"))
            meter.add_evaluation(len(view), stage.clip_length)
        history.append(row)
        meter.seconds = time.perf_counter() - started
        meter.cpu_seconds = time.process_time() - cpu_started
        if record is not None:
            record(meter)
        if config.progress:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
            emit(
                f"schedule epoch {epoch}/{schedule.total_epochs}: {shown}, "
                f"{stats.clips_per_second:.1f} clips/s"
            )
    test_accuracy: float | None = None
    test_correct: list[int] | None = None
    if test is not None:
        last = schedule.stages[-1]
        view = test.with_clip(clip_length=last.clip_length, sampling=last.sampling)
        test_correct = []
        test_accuracy = runner.evaluate(model, view, per_video=test_correct)
    return ScheduleResult(
        model=model,
        history=history,
        test_accuracy=test_accuracy,
        seconds=meter.seconds,
        cpu_seconds=meter.cpu_seconds,
        clip_frame_epochs=schedule.clip_frame_epochs,
        compute=meter,
        test_correct=test_correct,
    )
