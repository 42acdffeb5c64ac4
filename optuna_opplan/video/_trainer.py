from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
import math
import os
import sys
import time
from typing import Any

import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader

from optuna_opplan._checkpoint import as_artifact_store
from optuna_opplan._protocol import KEY_COMPUTE
from optuna_opplan._step import TransitionStep
from optuna_opplan._step import current_transition
from optuna_opplan._worker import TransitionFailed
from optuna_opplan.models import classification_loss
from optuna_opplan.models import freeze_batchnorm
from optuna_opplan.models import get_model
from optuna_opplan.models import predict_logits
from optuna_opplan.video._checkpoint import state_from_bytes
from optuna_opplan.video._checkpoint import state_to_bytes
from optuna_opplan.video._compute import Compute
from optuna_opplan.video._dataset import VideoDataset

METRICS = ("top1", "mean_top135")


@dataclass(frozen=True)
class TrainerConfig:
    """How transitions (and fixed schedules) are trained.

    Attributes:
        model: A builder name of :func:`optuna_opplan.models.get_model`.
        model_kwargs: Passed to the builder (e.g. ``width_multiplier``).
        batch_size: Clips per optimizer step (the effective batch).
        max_frames_per_step: Frames one forward pass may hold (``batch x clip length``);
            longer clips are split into micro-batches with gradient accumulation, so every
            clip length trains at the same effective batch. :obj:`None`: no split.
        momentum: SGD momentum (Nesterov).
        weight_decay: SGD weight decay.
        nesterov: Nesterov momentum.
        freeze_bn_from_clip: Freeze all BatchNorm layers but the first for clips this long
            or longer (the paper does it for 64 and 128 frames).
        num_workers: DataLoader worker processes decoding videos.
        device: ``"auto"`` (CUDA if present), ``"cpu"`` or ``"cuda"``.
        amp: Mixed precision on CUDA.
        metric: ``"top1"`` (clip accuracy) or ``"mean_top135"`` (the reference code's mean of
            top-1, top-3 and top-5).
        seed: Seeds the initial model and the data order.
        progress: Print a line per epoch.
        cpu_threads: torch's intra-op threads when training on the CPU. By default the cores
            left over by the DataLoader workers (at least 1): more threads than cores make
            OpenMP threads spin against the decoding workers, measured here as a 5-10x
            slowdown on 2 cores.
    """

    model: str = "dg_p3d_resnet18"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    max_frames_per_step: int | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = True
    freeze_bn_from_clip: int = 64
    num_workers: int = 2
    device: str = "auto"
    amp: bool = True
    metric: str = "top1"
    seed: int = 0
    progress: bool = True
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "freeze_bn_from_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive int, but got {name}={value!r}.")
        if self.max_frames_per_step is not None and self.max_frames_per_step <= 0:
            raise ValueError(
                "`max_frames_per_step` must be a positive int or None, but got "
                f"{self.max_frames_per_step!r}."
            )
        if self.metric not in METRICS:
            raise ValueError(f"`metric` must be one of {METRICS}, but got {self.metric!r}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"`device` must be auto, cpu or cuda, but got {self.device!r}.")
        if self.num_workers < 0:
            raise ValueError(f"`num_workers` must be >= 0, but got {self.num_workers!r}.")

    def resolved_device(self) -> torch.device:
        """The torch device to train on."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class EpochStats:
    """What one training epoch did."""

    loss: float
    clips: int
    seconds: float
    data_seconds: float

    @property
    def clips_per_second(self) -> float:
        """Training throughput."""
        return self.clips / self.seconds if self.seconds > 0 else 0.0


class Runner:
    """The training and evaluation loops shared by transitions and fixed schedules."""

    def __init__(self, config: TrainerConfig, num_classes: int) -> None:
        self.config = config
        self.num_classes = num_classes
        self.device = config.resolved_device()
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(
                    "The trainer's device is 'cuda' but torch sees no CUDA GPU (a CPU-only "
                    f"torch {torch.__version__}, or no driver): use device='auto' or 'cpu'."
                )
            # A transition trains one clip shape: cuDNN benchmarks its kernels once and keeps
            # the fastest (3D convolutions vary a lot between algorithms).
            torch.backends.cudnn.benchmark = True
        if self.device.type == "cpu":
            cores = os.cpu_count() or 1
            threads = config.cpu_threads or max(1, cores - config.num_workers)
            torch.set_num_threads(threads)

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite (on every rank, when the training is distributed)."""
        return bool(torch.isfinite(loss))

    def build_model(self) -> nn.Module:
        torch.manual_seed(self.config.seed)
        model = get_model(
            self.config.model, num_classes=self.num_classes, **dict(self.config.model_kwargs)
        )
        return model.to(self.device)

    def optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad],
            lr=lr,
            momentum=self.config.momentum,
            weight_decay=self.config.weight_decay,
            nesterov=self.config.nesterov,
        )

    def micro_batch(self, clip_length: int) -> tuple[int, int]:
        """(clips per forward pass, forward passes per optimizer step)."""
        batch = self.config.batch_size
        budget = self.config.max_frames_per_step
        if budget is None or batch * clip_length <= budget:
            return batch, 1
        micro = max(1, budget // clip_length)
        return micro, math.ceil(batch / micro)

    def loader(self, dataset: VideoDataset, batch: int, *, shuffle: bool, seed: int) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=batch,
            shuffle=shuffle,
            num_workers=workers,
            generator=generator,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
        )

    def train_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: VideoDataset,
        *,
        seed: int,
        epoch: int,
    ) -> EpochStats:
        micro, accumulate = self.micro_batch(dataset.clip_length)
        model.train()
        if dataset.clip_length >= self.config.freeze_bn_from_clip:
            freeze_batchnorm(model, except_first=True)
        use_amp = self.config.amp and self.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        total_loss, clips, waited = 0.0, 0, 0.0
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        pending = 0
        mark = time.perf_counter()
        for clip, label in self.loader(dataset, micro, shuffle=True, seed=seed):
            waited += time.perf_counter() - mark
            clip = clip.to(self.device, non_blocking=True)
            label = label.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, enabled=use_amp):
                loss = classification_loss(model(clip), label)
            if not self.all_finite(loss):
                raise TransitionFailed(
                    f"the training loss became {loss.item()} at epoch {epoch} "
                    f"(lr {optimizer.param_groups[0]['lr']:g}, clip {dataset.clip_length})"
                )
            scaler.scale(loss * clip.shape[0] / self.config.batch_size).backward()
            pending += 1
            if pending == accumulate:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                pending = 0
            total_loss += loss.item() * clip.shape[0]
            clips += clip.shape[0]
            mark = time.perf_counter()
        if pending:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        return EpochStats(total_loss / max(1, clips), clips, seconds, waited)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, dataset: VideoDataset, *, per_video: list[int] | None = None
    ) -> float:
        """Accuracy on ``dataset``: one view per clip in "val" mode, the mean of the views'
        logits in "test" mode. ``per_video`` receives each video's top-1 hit (1 or 0), in
        the dataset's order."""
        model.eval()
        correct = torch.zeros(3)
        count = 0
        micro, _ = self.micro_batch(dataset.clip_length)
        batch = micro if dataset.mode != "test" else max(1, micro // 4)
        for clip, label in self.loader(dataset, batch, shuffle=False, seed=0):
            clip = clip.to(self.device)
            label = label.to(self.device)
            if clip.dim() == 6:  # (B, views, 3, T, H, W)
                b, v = clip.shape[:2]
                logits = predict_logits(model(clip.flatten(0, 1))).view(b, v, -1).mean(1)
            else:
                logits = predict_logits(model(clip))
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == label[:, None]
            for i, k in enumerate((1, 3, 5)):
                correct[i] += hits[:, :k].any(1).sum().item()
            if per_video is not None:
                per_video.extend(int(hit) for hit in hits[:, 0].tolist())
            count += label.shape[0]
        if count == 0:
            raise ValueError(f"Cannot evaluate on an empty dataset: {dataset!r}.")
        accuracy = correct / count
        if self.config.metric == "top1":
            return float(accuracy[0])
        return float(accuracy.mean())


class TransitionTrainer:
    """The objective that trains one transition of a planning study on videos.

    For the trial's transition it loads the source state's kept checkpoint (or builds the
    initial model), sets the target state's learning rate, clip length and sampling, creates
    a fresh SGD optimizer (Nesterov, momentum 0.9, weight decay 1e-4 by default) with a
    constant learning rate, and trains epoch by epoch: after each epoch it evaluates on the
    validation split (one centre clip, one centre crop), reports the score, hands the epoch's
    weights to the engine (``step.save_checkpoint``), and stops when the knee pruner says so.
    The engine keeps the epochs that can still be kept on disk (``delay + 1`` of them) and
    uploads the kept one to the artifact store with its SHA-256: run it with
    ``run_worker(study, trainer, artifact_store=trainer.artifact_store)``.

    A loss that turns NaN ends the transition as a failed edge (no retry). Progress: one line
    per epoch with loss, validation score and clips/s.

    Args:
        train: The training split (its clip length and sampling are set per transition).
        val: The internal validation split, carved from the training set.
        checkpoints: Where kept checkpoints go (an Optuna artifact store or a folder path,
            the same for every worker): :attr:`artifact_store`, to pass to ``run_worker``.
        config: The training settings.
        log: Where progress lines go.

    Example:
        >>> import optuna, optuna_opplan as op, tempfile
        >>> from optuna_opplan.video._trainer import TransitionTrainer, TrainerConfig
        >>> from optuna_opplan.video.synthetic import generate
        >>> from optuna_opplan.video import VideoDataset, ClipTransform, split_train_val
        >>> data = generate(tempfile.mkdtemp(), flavour="motion", num_classes=2,
        ...                 videos_per_class=3, num_frames=(16, 16), size=32, test_fraction=0.3)
        >>> full = VideoDataset.from_list_file(data.root, data.train_list, data.class_file,
        ...     transform=ClipTransform(crop_size=32, scale_range=(32, 36), eval_short_side=32))
        >>> train, val = split_train_val(full.entries, 0.5, seed=0)
        >>> trainer = TransitionTrainer(full.with_entries(train), full.with_entries(val),
        ...     tempfile.mkdtemp(), config=TrainerConfig(model="p3d_resnet18", num_workers=0,
        ...     model_kwargs={"width_multiplier": 0.125, "stem_temporal_stride": 1},
        ...     progress=False))
        >>> graph = op.TransitionGraph.basic(clip_lengths=(4,), learning_rates=(0.01,),
        ...                                  samplings=("uniform",))
        >>> study = optuna.create_study(direction="maximize", sampler=op.PlanningSampler(graph),
        ...                             pruner=op.KneePointPruner(delay=1, max_epochs=2))
        >>> op.run_worker(study, trainer, artifact_store=trainer.artifact_store)
        1
    """

    def __init__(
        self,
        train: VideoDataset,
        val: VideoDataset,
        checkpoints: Any,
        *,
        config: TrainerConfig | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if not isinstance(train, VideoDataset) or not isinstance(val, VideoDataset):
            raise ValueError("`train` and `val` must be VideoDataset objects.")
        if train.classes != val.classes:
            raise ValueError("`train` and `val` must share their classes.")
        self.train = train
        self.val = val
        self.artifact_store = as_artifact_store(checkpoints)
        self.config = config or TrainerConfig()
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._runner = Runner(self.config, len(train.classes))

    def __call__(self, trial: optuna.Trial) -> None:
        step = current_transition(trial)
        train_transition(
            self,
            self._runner,
            trial.number,
            step.transition.key,
            step.params,
            has_source=step.source_trial is not None,
            trial=trial,
            step=step,
        )


def train_transition(
    trainer: TransitionTrainer,
    runner: Runner,
    number: int,
    key: str,
    params: Mapping[str, Any],
    *,
    has_source: bool,
    trial: optuna.Trial | None = None,
    step: TransitionStep | None = None,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    processes: int | None = None,
    decide: Callable[[bool], bool] = bool,
) -> int:
    """Train trial ``number``'s transition epoch by epoch until it is stopped; its epochs.

    The one loop of a transition, in one process or on every rank of a group. With ``trial``
    and ``step`` (the process that talks to the study: the only one, or rank 0) it starts from
    the source's kept checkpoint, reports every epoch, hands its weights to the engine, and
    records the compute after every pass, so a failed or killed attempt keeps what it cost.
    ``wrap`` makes the model that trains (DistributedDataParallel, which broadcasts rank 0's
    weights to the others); ``processes`` ranks each train as many clips, counted together;
    ``decide`` turns this process's stop into the group's.
    """
    clip_length = int(params["clip_length"])
    sampling = str(params.get("sampling", trainer.train.sampling))
    started, cpu_started = time.perf_counter(), time.process_time()
    meter = Compute()
    train = trainer.train.with_clip(clip_length=clip_length, sampling=sampling)
    val = trainer.val.with_clip(clip_length=clip_length, sampling=sampling).with_mode("val")

    def record() -> None:
        if trial is None:
            return
        meter.seconds = time.perf_counter() - started
        meter.cpu_seconds = time.process_time() - cpu_started
        attrs = {**meter.to_dict(), "videos_per_epoch": len(train), "device": runner.device.type}
        if processes is not None:
            attrs["processes"] = processes
        trial.storage.set_trial_system_attr(trial._trial_id, KEY_COMPUTE, attrs)

    model = runner.build_model()
    source = None if step is None else step.load_source_checkpoint()  # None: initial model
    if source is not None:
        model.load_state_dict(state_from_bytes(source))
    trained = model if wrap is None else wrap(model)
    optimizer = runner.optimizer(trained, float(params["lr"]))
    if has_source:
        # The epoch-0 point under this state's clip length and sampling: the source's own
        # score was measured with its settings and can be far from what this state sees.
        score = runner.evaluate(model, val)
        meter.add_evaluation(len(val), clip_length)
        if trial is not None:
            trial.report(score, 0)
            record()
    epochs = 0
    while True:
        epochs += 1
        seed = trainer.config.seed * 100_003 + number * 1_009 + epochs
        stats = runner.train_epoch(trained, optimizer, train, seed=seed, epoch=epochs)
        score = runner.evaluate(model, val)
        # A group's ranks train as many clips each (the sampler pads); its shards cover val
        # once.
        meter.add_training(stats.clips * (processes or 1), clip_length)
        meter.add_evaluation(len(val), clip_length)
        stop = False
        if trial is not None and step is not None:
            trial.report(score, epochs)
            step.save_checkpoint(epochs, state_to_bytes(model.state_dict()))
            record()
            if trainer.config.progress:
                wait = f"data wait {stats.data_seconds / max(stats.seconds, 1e-9):.0%}"
                if processes:
                    wait = f"on {processes} processes, rank 0 {wait}"
                trainer.log(
                    f"trial {number} {key} epoch {epochs}: loss {stats.loss:.4f} val "
                    f"{score:.4f} {stats.clips_per_second * (processes or 1):.1f} clips/s "
                    f"({wait})"
                )
            stop = trial.should_prune()
        if decide(stop):
            break
    record()
    return epochs


def evaluate(
    model: nn.Module, dataset: VideoDataset, *, config: TrainerConfig | None = None
) -> float:
    """Accuracy of ``model`` on ``dataset`` (multi-view in ``"test"`` mode)."""
    config = config or TrainerConfig()
    return Runner(config, len(dataset.classes)).evaluate(model, dataset)
