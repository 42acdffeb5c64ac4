"""Compute accounting: what planning and the grid search cost, counted the same way.

The unit is the **clip-frame**: one frame of one clip passed through the network. A training
epoch over ``N`` clips of ``L`` frames costs ``N * L`` clip-frames (forward and backward), a
validation pass over ``V`` clips of ``L`` frames with ``c`` views each costs ``V * L * c``
(forward only). Both are counted at face value, so an evaluation counts as much as a training
step of the same clips; that overstates the side that evaluates more, which is planning (a
validation pass after every epoch and a step-0 pass at the start of every transition out of a
trained state), so the grid-to-planning ratio errs against planning. Seconds cover the same
work: from the start of a transition (or grid schedule) to its last validation pass, model
set-up and checkpoint loading and saving included, test evaluation excluded on both sides.

``clip_frame_epochs`` is the paper's count: the sum over training epochs of the clip length,
i.e. training clip-frames per training video.

Every attempt counts: a transition or grid schedule that failed, was killed or was retried
keeps the record of the passes it finished (the trainers write it after every pass), so a
retry's cost adds to the failed attempt's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import fields
from typing import Any

from optuna.study import Study
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from optuna_opplan._protocol import KEY_COMPUTE
from optuna_opplan._protocol import epochs_of


@dataclass
class Compute:
    """Work done by one attempt, or summed over many.

    Attributes:
        train_epochs: Training epochs finished.
        train_clip_frames: Clips x frames trained, over every finished epoch.
        clip_frame_epochs: The sum over finished epochs of the clip length.
        eval_passes: Validation passes (step-0 evaluations included; test passes excluded).
        eval_clip_frames: Clips x frames x views of those passes.
        seconds: Wall seconds of that work.
        cpu_seconds: CPU seconds of the training process (DataLoader workers excluded).
        attempts: Trials counted.
        failed_attempts: Of those, the ones that did not complete (failed, killed, retried).
        unrecorded_attempts: Trials with results but no compute record (trained by another
            objective): only their epochs are counted, from their reported steps.
    """

    train_epochs: int = 0
    train_clip_frames: int = 0
    clip_frame_epochs: int = 0
    eval_passes: int = 0
    eval_clip_frames: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    attempts: int = 0
    failed_attempts: int = 0
    unrecorded_attempts: int = 0

    @property
    def clip_frames(self) -> int:
        """Training and evaluation clip-frames together: the compute compared."""
        return self.train_clip_frames + self.eval_clip_frames

    def add_training(self, clips: int, clip_length: int) -> None:
        """Count one finished training epoch over ``clips`` clips of ``clip_length`` frames."""
        self.train_epochs += 1
        self.train_clip_frames += clips * clip_length
        self.clip_frame_epochs += clip_length

    def add_evaluation(self, clips: int, clip_length: int, views: int = 1) -> None:
        """Count one validation pass."""
        self.eval_passes += 1
        self.eval_clip_frames += clips * clip_length * views

    def __add__(self, other: Compute) -> Compute:
        names = [f.name for f in fields(self)]
        return Compute(**{name: getattr(self, name) + getattr(other, name) for name in names})

    def to_dict(self) -> dict[str, Any]:
        """The record stored on a trial, plus ``clip_frames``."""
        return {**asdict(self), "clip_frames": self.clip_frames}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Compute:
        """Read a stored record (unknown keys ignored, missing ones 0)."""
        names = {f.name for f in fields(cls)}
        if "train_epochs" not in record and "epochs" in record:
            # Written before evaluations were counted: epochs and their clip-frame-epochs only.
            record = {"train_epochs": record["epochs"], **record}
        return cls(**{k: v for k, v in record.items() if k in names})


def attempt_compute(trial: FrozenTrial, clip_length: int | None = None) -> Compute | None:
    """What one trial (an attempt at a transition or grid schedule) cost, or :obj:`None` if it
    did no work. A trial without a record counts its reported epochs (steps >= 1) only."""
    record = trial.system_attrs.get(KEY_COMPUTE)
    failed = trial.state != TrialState.COMPLETE
    if isinstance(record, dict):
        compute = Compute.from_dict(record)
        compute.attempts, compute.failed_attempts, compute.unrecorded_attempts = 1, int(failed), 0
        return compute
    epochs = epochs_of(trial)
    if not trial.intermediate_values:
        return None
    clip = int(clip_length if clip_length is not None else trial.params.get("clip_length", 1))
    return Compute(
        train_epochs=epochs,
        clip_frame_epochs=epochs * clip,
        attempts=1,
        failed_attempts=int(failed),
        unrecorded_attempts=1,
    )


def total_compute(trials: Iterable[FrozenTrial]) -> Compute:
    """The sum of :func:`attempt_compute` over ``trials``: every attempt, failed ones too."""
    total = Compute()
    for trial in trials:
        if trial.state in (TrialState.WAITING,):
            continue
        compute = attempt_compute(trial)
        if compute is not None:
            total = total + compute
    return total


def study_compute(study: Study) -> Compute:
    """Everything a planning or grid study's trials cost (see :func:`total_compute`)."""
    return total_compute(study.get_trials(deepcopy=False))
