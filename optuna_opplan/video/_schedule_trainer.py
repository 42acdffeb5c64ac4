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
from optuna_opplan.video._schedule import Stage
from optuna_opplan.video._trainer import EpochStats
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


class ScheduleLoop:
    """A schedule's epochs one at a time on one model, its compute counted as it goes.

    :func:`train_schedule` runs every epoch through it; a search that decides between epochs
    (a pruner, a compute budget) calls :meth:`run_epoch` itself. The optimizer is kept across
    epochs of a stage and re-created when a constant-lr stage changes its lr, as the planned
    transitions do; a global decay sets the lr every epoch.
    """

    def __init__(
        self,
        runner: Runner,
        schedule: Schedule,
        train: VideoDataset,
        val: VideoDataset | None = None,
        initial_state: Mapping[str, Any] | None = None,
    ) -> None:
        self.runner = runner
        self.schedule = schedule
        self.train = train
        self.val = val
        # The clocks start before the model is built: building it is part of the attempt.
        self._started, self._cpu_started = time.perf_counter(), time.process_time()
        self.meter = Compute()
        self.model = runner.build_model()
        if initial_state is not None:
            self.model.load_state_dict(dict(initial_state))
        self._optimizer: torch.optim.Optimizer | None = None
        self._stage: Stage | None = None

    def run_epoch(self, epoch: int, *, validate: bool) -> tuple[dict[str, float], EpochStats]:
        """Train ``epoch`` (1-based) and, if ``validate`` and there is a validation split,
        evaluate it (one view): the history row (``"val"`` when validated) and the epoch's
        stats. :attr:`meter` then holds every pass so far and the time up to here."""
        stage = self.schedule.stage_at(epoch)
        lr = self.schedule.lr_at(epoch)
        if self._optimizer is None or (
            self.schedule.decay == "constant" and stage is not self._stage
        ):
            self._optimizer = self.runner.optimizer(self.model, lr)
            self._stage = stage
        for group in self._optimizer.param_groups:
            group["lr"] = lr
        data = self.train.with_clip(clip_length=stage.clip_length, sampling=stage.sampling)
        seed = self.runner.config.seed + epoch
        stats = self.runner.train_epoch(self.model, self._optimizer, data, seed=seed, epoch=epoch)
        self.meter.add_training(stats.clips, stage.clip_length)
        row = {"epoch": epoch, "lr": lr, "clip_length": stage.clip_length, "loss": stats.loss}
        if validate and self.val is not None:
            view = self.val.with_clip(clip_length=stage.clip_length, sampling=stage.sampling)
            row["val"] = self.runner.evaluate(self.model, view.with_mode("val"))
            self.meter.add_evaluation(len(view), stage.clip_length)
        self.meter.seconds = time.perf_counter() - self._started
        self.meter.cpu_seconds = time.process_time() - self._cpu_started
        return row, stats


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
    replayed on another model or dataset with ``Schedule.from_plan(plan)``; the epochs are
    :class:`ScheduleLoop`'s.

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
    loop = ScheduleLoop(Runner(config, len(train.classes)), schedule, train, val, initial_state)
    emit = log or (lambda line: print(line, file=sys.stderr, flush=True))
    history: list[dict[str, float]] = []
    for epoch in range(1, schedule.total_epochs + 1):
        last_epoch = epoch == schedule.total_epochs
        row, stats = loop.run_epoch(epoch, validate=validate == "every" or last_epoch)
        history.append(row)
        if record is not None:
            record(loop.meter)
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
        test_accuracy = loop.runner.evaluate(loop.model, view, per_video=test_correct)
    return ScheduleResult(
        model=loop.model,
        history=history,
        test_accuracy=test_accuracy,
        seconds=loop.meter.seconds,
        cpu_seconds=loop.meter.cpu_seconds,
        clip_frame_epochs=schedule.clip_frame_epochs,
        compute=loop.meter,
        test_correct=test_correct,
    )
