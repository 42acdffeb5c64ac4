"""Video runtime: clip sampling, datasets, the transition trainer (needs torch and decord)."""

from __future__ import annotations

from optuna_opplan.models._compat import ensure_torchvision_importable

ensure_torchvision_importable()

from optuna_opplan.video._checkpoint import CheckpointError  # noqa: E402
from optuna_opplan.video._checkpoint import CheckpointStore  # noqa: E402
from optuna_opplan.video._checkpoint import state_from_bytes  # noqa: E402
from optuna_opplan.video._checkpoint import state_to_bytes  # noqa: E402
from optuna_opplan.video._config import ConfigError  # noqa: E402
from optuna_opplan.video._config import PlanConfig  # noqa: E402
from optuna_opplan.video._dataset import VideoDataset  # noqa: E402
from optuna_opplan.video._distributed import DistributedWorkerError  # noqa: E402
from optuna_opplan.video._distributed import run_distributed_worker  # noqa: E402
from optuna_opplan.video._errors import VideoReadError  # noqa: E402
from optuna_opplan.video._launch import launch  # noqa: E402
from optuna_opplan.video._listfile import VIDEO_EXTENSIONS  # noqa: E402
from optuna_opplan.video._listfile import VideoEntry  # noqa: E402
from optuna_opplan.video._listfile import read_class_file  # noqa: E402
from optuna_opplan.video._listfile import read_list_file  # noqa: E402
from optuna_opplan.video._listfile import scan_class_folders  # noqa: E402
from optuna_opplan.video._sampling import SAMPLINGS  # noqa: E402
from optuna_opplan.video._sampling import sample_clip_indices  # noqa: E402
from optuna_opplan.video._sampling import sample_test_clips  # noqa: E402
from optuna_opplan.video._schedule import Schedule  # noqa: E402
from optuna_opplan.video._schedule import Stage  # noqa: E402
from optuna_opplan.video._schedule_trainer import ScheduleResult  # noqa: E402
from optuna_opplan.video._schedule_trainer import train_schedule  # noqa: E402
from optuna_opplan.video._split import split_train_val  # noqa: E402
from optuna_opplan.video._trainer import TrainerConfig  # noqa: E402
from optuna_opplan.video._trainer import TransitionTrainer  # noqa: E402
from optuna_opplan.video._trainer import evaluate  # noqa: E402
from optuna_opplan.video._transforms import ClipTransform  # noqa: E402

__all__ = [
    "CheckpointError",
    "CheckpointStore",
    "ConfigError",
    "DistributedWorkerError",
    "PlanConfig",
    "Schedule",
    "ScheduleResult",
    "Stage",
    "TrainerConfig",
    "TransitionTrainer",
    "evaluate",
    "launch",
    "run_distributed_worker",
    "train_schedule",
    "ClipTransform",
    "SAMPLINGS",
    "VIDEO_EXTENSIONS",
    "VideoDataset",
    "VideoEntry",
    "VideoReadError",
    "read_class_file",
    "read_list_file",
    "sample_clip_indices",
    "sample_test_clips",
    "scan_class_folders",
    "split_train_val",
    "state_from_bytes",
    "state_to_bytes",
]
