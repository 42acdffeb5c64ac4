from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
import math
from typing import Any

DECAYS = ("constant", "step", "cosine")


@dataclass(frozen=True)
class Stage:
    """A stretch of training with one clip length and sampling strategy.

    Attributes:
        clip_length: Frames per clip.
        sampling: ``"consecutive"``, ``"strided"`` or ``"uniform"``.
        epochs: Epochs of this stage.
        lr: The stage's learning rate (constant-lr schedules) or, with a global decay, unused.
    """

    clip_length: int
    sampling: str
    epochs: int
    lr: float


class Schedule:
    """A fixed training schedule: stages of clip length and sampling, and the learning rate.

    Two kinds: a planned schedule (each stage has its own constant learning rate, as a
    :class:`~optuna_opplan.Plan` prescribes) and a hand-tuned one (stages of equal length
    under one global decay: 3-step or cosine), the grid-search baseline of the paper.

    Args:
        stages: The stages, in order.
        decay: ``"constant"`` (per-stage lr), ``"step"`` or ``"cosine"`` (global decay from
            ``base_lr``).
        base_lr: Starting learning rate of a global decay.
        steps: Number of lr drops of a ``"step"`` decay (x0.1 each, evenly spaced).

    Example:
        >>> schedule = Schedule.hand_tuned((16, 64), total_epochs=40, base_lr=0.1, decay="step")
        >>> [schedule.clip_at(e) for e in (1, 20, 21, 40)]
        [16, 16, 64, 64]
        >>> [round(schedule.lr_at(e), 6) for e in (1, 11, 21, 31)]
        [0.1, 0.01, 0.001, 0.0001]
        >>> schedule.clip_frame_epochs
        1600
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        decay: str = "constant",
        base_lr: float | None = None,
        steps: int = 3,
    ) -> None:
        if not stages:
            raise ValueError("`stages` is empty: a schedule needs at least one stage.")
        if decay not in DECAYS:
            raise ValueError(f"`decay` must be one of {DECAYS}, but got decay={decay!r}.")
        for stage in stages:
            if stage.epochs < 0 or stage.clip_length <= 0:
                raise ValueError(f"Invalid stage {stage}: epochs >= 0 and clip_length > 0.")
        if decay != "constant" and (base_lr is None or base_lr <= 0):
            raise ValueError(f"decay={decay!r} needs a positive `base_lr`, got {base_lr!r}.")
        self.stages = tuple(s for s in stages if s.epochs > 0)
        self.decay = decay
        self.base_lr = base_lr
        self.steps = steps

    @classmethod
    def from_plan(cls, plan: Any) -> Schedule:
        """The schedule a :class:`~optuna_opplan.Plan` (or its ``to_dict()``) prescribes."""
        data: Mapping[str, Any] = plan if isinstance(plan, Mapping) else plan.to_dict()
        stages = []
        for stage in data["stages"]:
            params = stage["params"]
            try:
                stages.append(
                    Stage(
                        clip_length=int(params["clip_length"]),
                        sampling=str(params.get("sampling", "consecutive")),
                        epochs=int(stage["epochs"]),
                        lr=float(params["lr"]),
                    )
                )
            except KeyError as exc:
                raise ValueError(
                    f"A plan stage lacks {exc}: a video schedule needs clip_length and lr."
                ) from None
        return cls(stages)

    @classmethod
    def hand_tuned(
        cls,
        clip_lengths: Sequence[int],
        *,
        total_epochs: int,
        base_lr: float,
        decay: str = "step",
        sampling: str = "consecutive",
        steps: int = 3,
    ) -> Schedule:
        """Equal epochs per clip length under one global lr decay (the paper's baseline)."""
        if total_epochs < len(clip_lengths):
            raise ValueError(
                f"`total_epochs` ({total_epochs}) must give each of {len(clip_lengths)} clip "
                "lengths at least one epoch."
            )
        share, extra = divmod(total_epochs, len(clip_lengths))
        stages = [
            Stage(clip, sampling, share + (1 if i < extra else 0), base_lr)
            for i, clip in enumerate(clip_lengths)
        ]
        return cls(stages, decay=decay, base_lr=base_lr, steps=steps)

    @property
    def total_epochs(self) -> int:
        """Epochs of the whole schedule."""
        return sum(s.epochs for s in self.stages)

    @property
    def clip_frame_epochs(self) -> int:
        """Compute in clip-frame-epochs: the sum over epochs of the clip length."""
        return sum(s.epochs * s.clip_length for s in self.stages)

    def stage_at(self, epoch: int) -> Stage:
        """The stage of 1-based ``epoch``."""
        if not 1 <= epoch <= self.total_epochs:
            raise ValueError(f"`epoch` must be in 1..{self.total_epochs}, but got {epoch}.")
        for stage in self.stages:
            if epoch <= stage.epochs:
                return stage
            epoch -= stage.epochs
        raise AssertionError("unreachable")

    def clip_at(self, epoch: int) -> int:
        """The clip length of 1-based ``epoch``."""
        return self.stage_at(epoch).clip_length

    def lr_at(self, epoch: int) -> float:
        """The learning rate of 1-based ``epoch``."""
        stage = self.stage_at(epoch)
        if self.decay == "constant":
            return stage.lr
        assert self.base_lr is not None
        progress = (epoch - 1) / self.total_epochs
        if self.decay == "cosine":
            return 0.5 * self.base_lr * (1 + math.cos(math.pi * progress))
        drops = min(self.steps, int(progress * (self.steps + 1)))
        return self.base_lr * 0.1**drops

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description."""
        return {
            "decay": self.decay,
            "base_lr": self.base_lr,
            "stages": [vars(s) for s in self.stages],
            "total_epochs": self.total_epochs,
            "clip_frame_epochs": self.clip_frame_epochs,
        }

    def __repr__(self) -> str:
        clips = "->".join(str(s.clip_length) for s in self.stages)
        return f"Schedule(clips={clips}, epochs={self.total_epochs}, decay={self.decay!r})"
