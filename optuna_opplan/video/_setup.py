from __future__ import annotations

from dataclasses import dataclass
import os
from typing import Any
import warnings

import optuna
from optuna.storages import BaseStorage

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._protocol import KEY_PLAN_CONFIG
from optuna_opplan._pruner import KneePointPruner
from optuna_opplan._sampler import PlanningSampler
from optuna_opplan._study import ConfigMismatchError
from optuna_opplan._study import create_planning_study
from optuna_opplan.video._config import PlanConfig
from optuna_opplan.video._dataset import VideoDataset
from optuna_opplan.video._split import split_train_val
from optuna_opplan.video._trainer import TrainerConfig
from optuna_opplan.video._trainer import TransitionTrainer
from optuna_opplan.video._transforms import ClipTransform
from optuna_opplan.video.synthetic import ensure_dataset


@dataclass(frozen=True)
class Splits:
    """The three splits of a dataset: planning trains on ``train``, scores on ``val`` (carved
    from the training list) and never touches ``test`` (multi-view mode)."""

    train: VideoDataset
    val: VideoDataset
    test: VideoDataset


def build_graph(config: PlanConfig) -> TransitionGraph:
    """The transition graph a config describes."""
    graph = config.section("graph")
    builder = TransitionGraph.extended if graph["preset"] == "extended" else TransitionGraph.basic
    return builder(
        clip_lengths=tuple(graph["clip_lengths"]),
        learning_rates=tuple(float(v) for v in graph["learning_rates"]),
        samplings=tuple(graph["samplings"]),
    )


def build_planning(config: PlanConfig) -> tuple[PlanningSampler, KneePointPruner]:
    """The planning sampler and knee pruner a config describes."""
    planner = config.section("planner")
    sampler = PlanningSampler(
        build_graph(config),
        score=planner["score"],
        max_retries=planner["max_retries"],
        max_deaths=planner["max_deaths"],
        death_backoff=planner["death_backoff"],
    )
    return sampler, KneePointPruner(**config.section("knee"))


def create_video_study(
    config: PlanConfig, *, storage: str | BaseStorage, study_name: str
) -> optuna.Study:
    """Create (or load) the planning study ``config`` describes, with ``config`` stored in it:
    :func:`~optuna_opplan.create_planning_study`, the one way a planning study is set up.

    Raises:
        ConfigMismatchError: if the existing study was set up with another config.
    """
    planner = config.section("planner")
    study = create_planning_study(
        build_graph(config),
        storage=storage,
        study_name=study_name,
        pruner=KneePointPruner(**config.section("knee")),
        score=planner["score"],
        max_retries=planner["max_retries"],
        max_deaths=planner["max_deaths"],
        death_backoff=planner["death_backoff"],
    )
    attach_config(study, config)
    return study


def build_trainer_config(config: PlanConfig, *, progress: bool = True) -> TrainerConfig:
    """The trainer settings a config describes."""
    trainer = config.section("trainer")
    model = config.section("model")
    name = model.pop("name")
    if name == "c3d_small":
        model = {"width_multiplier": model["width_multiplier"]}  # no stem to configure
    elif not name.startswith(("p3d", "g_p3d", "dg_p3d")):
        model = {}  # torchvision's baselines take no width or stem settings
    return TrainerConfig(
        model=name,
        model_kwargs=model,
        batch_size=trainer["batch_size"],
        max_frames_per_step=trainer["max_frames_per_step"] or None,
        momentum=trainer["momentum"],
        weight_decay=trainer["weight_decay"],
        nesterov=trainer["nesterov"],
        freeze_bn_from_clip=trainer["freeze_bn_from_clip"],
        num_workers=trainer["num_workers"],
        device=trainer["device"],
        metric=trainer["metric"],
        seed=trainer["seed"],
        progress=progress,
    )


def build_splits(config: PlanConfig) -> Splits:
    """Train / internal validation / test splits, generating the synthetic set if needed."""
    data = config.section("dataset")
    workers = config.section("trainer")["num_workers"]
    if data["decoded_cache_mb"] and workers:
        # Each DataLoader worker fills its own copy and exits after its epoch's pass.
        warnings.warn(
            f"`dataset.decoded_cache_mb` ({data['decoded_cache_mb']}) fills in the process "
            f"that decodes, and with `trainer.num_workers` = {workers} those are DataLoader "
            "workers that live one pass: every epoch decodes again. Set "
            "`trainer.num_workers = 0` for the cache to pay off.",
            stacklevel=2,
        )
    transform = ClipTransform(
        crop_size=data["crop_size"],
        scale_range=(data["scale_min"], data["scale_max"]),
        eval_short_side=data["eval_short_side"],
        test_size=data["eval_short_side"],
        flip=data["flip"],
    )
    kwargs: dict[str, Any] = {
        "transform": transform,
        "on_error": data["on_error"],
        "max_skipped": data["max_skipped"],
        "num_test_clips": data["num_test_clips"],
        "decoded_cache_mb": data["decoded_cache_mb"],
    }
    if data["synthetic"]:
        cache = data["cache_dir"] or os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "optuna-opplan"
        )
        generated = ensure_dataset(
            config.path(cache),
            flavour=data["synthetic"],
            num_classes=data["num_classes"],
            videos_per_class=data["videos_per_class"],
            num_frames=(data["min_frames"], data["max_frames"]),
            size=data["frame_size"],
        )
        full = VideoDataset.from_list_file(
            generated.root, generated.train_list, generated.class_file, **kwargs
        )
        test = VideoDataset.from_list_file(
            generated.root, generated.test_list, generated.class_file, **kwargs
        )
    else:
        root = config.path(data["root"])
        if data["layout"] == "folders":
            full = VideoDataset.from_folders(os.path.join(root, "train"), **kwargs)
            test = VideoDataset.from_folders(os.path.join(root, "test"), **kwargs)
        else:
            class_file = config.path(data["class_file"])
            full = VideoDataset.from_list_file(
                root, config.path(data["train_list"]), class_file, **kwargs
            )
            if not data["test_list"]:
                raise ValueError("`dataset.test_list` is required to report a test accuracy.")
            test = VideoDataset.from_list_file(
                root, config.path(data["test_list"]), class_file, **kwargs
            )
    train_entries, val_entries = split_train_val(
        full.entries, data["val_fraction"], seed=data["split_seed"]
    )
    return Splits(
        full.with_entries(train_entries), full.with_entries(val_entries), test.with_mode("test")
    )


def build_trainer(
    config: PlanConfig, splits: Splits, *, progress: bool = True
) -> TransitionTrainer:
    """The transition objective a config describes."""
    return TransitionTrainer(
        splits.train,
        splits.val,
        artifact_path(config),
        config=build_trainer_config(config, progress=progress),
    )


def artifact_path(config: PlanConfig) -> str:
    """Where kept checkpoints go, shared by all workers: a folder (relative to the config
    file's) or an S3 location ``s3://bucket[/prefix]``."""
    location = config.section("artifacts")["path"]
    return location if location.startswith("s3://") else config.path(location)


def attach_config(study: optuna.Study, config: PlanConfig) -> None:
    """Store ``config`` in the study, or check it against the stored one.

    Raises:
        ConfigMismatchError: naming the keys that differ from the study's config.
    """
    stored = stored_config(study)
    if stored is None:
        study._storage.set_study_system_attr(
            study._study_id,
            KEY_PLAN_CONFIG,
            {"config": config.to_dict(), "base_dir": config.base_dir},
        )
        return
    diffs = config.differences(stored)
    if diffs:
        raise ConfigMismatchError(
            f"This config differs from the one study {study.study_name!r} was set up with: "
            + "; ".join(diffs)
            + ". Every worker must use the study's config."
        )


def stored_config(study: optuna.Study) -> PlanConfig | None:
    """The plan config stored in ``study``, if any."""
    raw = study._storage.get_study_system_attrs(study._study_id).get(KEY_PLAN_CONFIG)
    if not isinstance(raw, dict):
        return None
    return PlanConfig.from_dict(raw["config"], base_dir=raw.get("base_dir", "."))
