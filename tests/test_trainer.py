from __future__ import annotations

import os
from pathlib import Path
import tempfile

import optuna
from optuna.trial import TrialState
import pytest
import torch
from torch import nn
from video_fixtures import trainer_splits

import optuna_opplan as op
from optuna_opplan._protocol import KEY_COMPUTE
from optuna_opplan.models._registry import _BUILDERS
from optuna_opplan.video import VideoDataset
from optuna_opplan.video._checkpoint import KEY_CHECKPOINT
from optuna_opplan.video._checkpoint import CheckpointError
from optuna_opplan.video._checkpoint import CheckpointStore
from optuna_opplan.video._checkpoint import state_from_bytes
from optuna_opplan.video._schedule import Schedule
from optuna_opplan.video._schedule import Stage
from optuna_opplan.video._schedule_trainer import train_schedule
from optuna_opplan.video._trainer import Runner
from optuna_opplan.video._trainer import TrainerConfig
from optuna_opplan.video._trainer import TransitionTrainer

TINY = {"width_multiplier": 0.125, "stem_temporal_stride": 1}


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> tuple[VideoDataset, VideoDataset, VideoDataset]:
    return trainer_splits(tmp_path_factory.mktemp("videos"))


def _config(**kwargs) -> TrainerConfig:
    base = {
        "model": "p3d_resnet18",
        "model_kwargs": TINY,
        "batch_size": 4,
        "num_workers": 0,
        "progress": False,
    }
    return TrainerConfig(**{**base, **kwargs})


def test_transitions_train_end_to_end_with_kept_checkpoints(splits, tmp_path, monkeypatch) -> None:
    train, val, _ = splits
    graph = op.TransitionGraph.basic(
        clip_lengths=(4,), learning_rates=(0.05, 0.005), samplings=("uniform",)
    )
    delay = 2
    study = op.create_planning_study(
        graph,
        storage=f"sqlite:///{tmp_path / 'plan.db'}",
        study_name="video",
        pruner=op.KneePointPruner(delay=delay, max_epochs=4),
    )
    lines: list[str] = []
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the engine spools epochs
    retained: list[int] = []

    def log(line: str) -> None:
        lines.append(line)
        retained.append(len(list(scratch.glob("opplan-epochs-*/*"))))

    trainer = TransitionTrainer(
        train,
        val,
        tmp_path / "artifacts",
        config=_config(progress=True),
        log=log,
    )
    store = trainer.artifact_store
    assert op.run_worker(study, trainer, poll_interval=0.01, artifact_store=store) == 2
    plan = op.get_plan(study)
    assert plan.goal == graph.goal_states[0]
    first, second = study.get_trials(states=(TrialState.COMPLETE,))
    # The second transition fine-tuned the first one's kept checkpoint, and scored it under its
    # own settings as its epoch-0 point.
    assert second.system_attrs["opplan:source_trial"] == first.number
    assert 0 in second.intermediate_values and 0 not in first.intermediate_values
    for trial in (first, second):
        kept = op.get_progress(study).statuses[trial.system_attrs["opplan:transition"]].result
        assert kept is not None
        if kept.epochs:
            assert len(trial.system_attrs[KEY_CHECKPOINT]["sha256"]) == 64
        # The kept weights load into the model (the source's, for a transition keeping epoch 0).
        state = state_from_bytes(op.load_checkpoint(study, trial.number, artifact_store=store))
        Runner(_config(), num_classes=len(train.classes)).build_model().load_state_dict(state)
        compute = trial.system_attrs[KEY_COMPUTE]
        epochs = max(trial.intermediate_values)
        passes = len(trial.intermediate_values)  # step 0 is a validation pass, not an epoch
        assert compute["train_epochs"] == epochs
        assert compute["clip_frame_epochs"] == 4 * epochs
        assert compute["train_clip_frames"] == len(train) * 4 * epochs
        assert compute["eval_passes"] == passes
        assert compute["eval_clip_frames"] == len(val) * 4 * passes
        assert all(0.0 <= v <= 1.0 for v in trial.intermediate_values.values())
    assert max(retained) <= delay + 1, "only delay + 1 epoch checkpoints stay on disk"
    assert not list(scratch.glob("opplan-epochs-*")), "epoch checkpoints are removed at the end"
    assert any("clips/s" in line and "val" in line for line in lines)


def test_checkpoint_round_trip_and_tampering(tmp_path) -> None:
    store = CheckpointStore(tmp_path / "artifacts")
    study = optuna.create_study()
    trial = study.ask()
    state = {"w": torch.arange(4.0)}
    record = store.save(trial, state, epoch=2)
    assert torch.equal(store.load(study, trial.number)["w"], state["w"])
    # A truncated or altered file is rejected by its hash before torch.load sees it.
    path = Path(tmp_path / "artifacts" / record["artifact_id"])
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="SHA-256"):
        store.load(study, trial.number)
    path.unlink()
    with pytest.raises(CheckpointError, match="is not in the artifact store"):
        store.load(study, trial.number)
    other = study.ask()
    with pytest.raises(CheckpointError, match="not a transition of a planning study"):
        store.load(study, other.number)


def test_a_checkpoint_altered_past_its_first_mebibyte_is_rejected(tmp_path) -> None:
    # The hash covers the whole file, not a prefix: change one weight 1.5 MiB in, keeping
    # the size, and the file must be refused (torch.load alone would load it silently).
    store = CheckpointStore(tmp_path / "artifacts")
    study = optuna.create_study()
    trial = study.ask()
    state = {"w": torch.zeros(3 * 2**18)}  # 3 MiB of float32 zeros
    record = store.save(trial, state, epoch=1)
    path = Path(tmp_path / "artifacts" / record["artifact_id"])
    blob = bytearray(path.read_bytes())
    assert len(blob) > 2 * 2**20
    offset = 3 * 2**19  # 1.5 MiB: inside the tensor's data
    assert blob[offset] == 0
    blob[offset] = 0x3F
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256"):
        store.load(study, trial.number)


def test_weights_only_loading_refuses_pickled_code(tmp_path) -> None:
    store = CheckpointStore(tmp_path / "artifacts")
    study = optuna.create_study()
    trial = study.ask()

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, bad)
    store.save_file(trial, bad, epoch=1)  # recorded with its own (matching) hash
    with pytest.raises(Exception, match="weights_only|Unsupported|WeightsUnpickler"):
        store.load(study, trial.number)


class _NaNNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3, 4))) * float("nan")


def test_a_nan_loss_fails_the_edge_without_retry(splits, tmp_path, monkeypatch) -> None:
    # Registered for this test only: the registry is shared with the model tests.
    monkeypatch.setitem(
        _BUILDERS, "test_nan_net", lambda *, num_classes, **_: _NaNNet(num_classes)
    )
    train, val, _ = splits
    graph = op.TransitionGraph.basic(
        clip_lengths=(4,), learning_rates=(0.05,), samplings=("uniform",)
    )
    study = op.create_planning_study(graph, pruner=op.KneePointPruner(delay=2, max_epochs=3))
    trainer = TransitionTrainer(train, val, tmp_path, config=_config(model="test_nan_net"))
    op.run_worker(study, trainer, poll_interval=0.01, artifact_store=tmp_path)
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.system_attrs["opplan:outcome"]["status"] == "failed"
    assert "loss became nan" in trial.system_attrs["opplan:outcome"]["reason"]


@pytest.mark.parametrize(
    ("batch", "budget", "clip", "expected"),
    [(8, None, 64, (8, 1)), (8, 256, 16, (8, 1)), (8, 256, 64, (4, 2)), (8, 100, 64, (1, 8))],
)
def test_gradient_accumulation_keeps_the_effective_batch(batch, budget, clip, expected) -> None:
    runner = Runner(_config(batch_size=batch, max_frames_per_step=budget), num_classes=2)
    assert runner.micro_batch(clip) == expected


def test_long_clips_freeze_batchnorm(splits) -> None:
    train, _, _ = splits
    runner = Runner(_config(freeze_bn_from_clip=8), num_classes=2)
    model = runner.build_model()
    optimizer = runner.optimizer(model, 0.01)
    runner.train_epoch(model, optimizer, train.with_clip(clip_length=8), seed=0, epoch=1)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms[0].training
    assert not any(m.training for m in norms[1:])


@pytest.mark.parametrize(
    ("decay", "epoch", "lr"),
    [
        ("step", 1, 0.1),
        ("step", 7, 0.01),
        ("step", 19, 0.0001),
        ("cosine", 1, 0.1),
        ("cosine", 13, 0.05),
    ],
)
def test_hand_tuned_schedules(decay, epoch, lr) -> None:
    schedule = Schedule.hand_tuned((8, 16, 32), total_epochs=24, base_lr=0.1, decay=decay)
    assert schedule.lr_at(epoch) == pytest.approx(lr)
    assert [schedule.clip_at(e) for e in (1, 8, 9, 16, 17, 24)] == [8, 8, 16, 16, 32, 32]


def test_schedule_from_plan_and_training(splits) -> None:
    train, val, test = splits
    plan = {
        "stages": [
            {"params": {"clip_length": 4, "lr": 0.05, "sampling": "uniform"}, "epochs": 2},
            {"params": {"clip_length": 8, "lr": 0.005, "sampling": "uniform"}, "epochs": 1},
        ]
    }
    schedule = Schedule.from_plan(plan)
    assert schedule.stages == (Stage(4, "uniform", 2, 0.05), Stage(8, "uniform", 1, 0.005))
    assert schedule.clip_frame_epochs == 16
    result = train_schedule(schedule, train, config=_config(), val=val, test=test)
    assert [row["lr"] for row in result.history] == [0.05, 0.05, 0.005]
    assert result.test_accuracy is not None and 0.0 <= result.test_accuracy <= 1.0
    assert all("val" in row for row in result.history)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "`batch_size` must be a positive int"),
        ({"metric": "top2"}, "`metric` must be one of"),
        ({"device": "tpu"}, "`device` must be"),
        ({"max_frames_per_step": 0}, "`max_frames_per_step`"),
    ],
)
def test_invalid_trainer_config(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        TrainerConfig(**kwargs)
