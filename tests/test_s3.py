"""Kept checkpoints in S3: Optuna's Boto3ArtifactStore against a real local S3-compatible server.

The server (moto's, from PyPI) runs in a child process on 127.0.0.1 for this module and is
stopped after it; every test gets its own bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
import hashlib
import threading
import time
import uuid

import optuna
from optuna.trial import TrialState
import pytest
import torch

import optuna_opplan as op
from optuna_opplan.testing import S3Server
from optuna_opplan.video import VideoDataset
from optuna_opplan.video._checkpoint import KEY_CHECKPOINT
from optuna_opplan.video._checkpoint import CheckpointError
from optuna_opplan.video._checkpoint import CheckpointStore
from optuna_opplan.video._checkpoint import open_artifact_store
from optuna_opplan.video._trainer import TrainerConfig
from optuna_opplan.video._trainer import TransitionTrainer


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"ckpt-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


def _objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


@pytest.mark.parametrize("prefix", ["", "runs/ucf101"])
def test_checkpoint_round_trip_and_hash_check_through_s3(s3, bucket, prefix) -> None:
    location = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    store = CheckpointStore(open_artifact_store(location, client=s3.client()))
    study = optuna.create_study()
    trial = study.ask()
    state = {"w": torch.arange(1000.0), "b": torch.ones(3)}
    record = store.save(trial, state, epoch=4)

    (key, body), *others = _objects(s3, bucket).items()
    assert not others
    assert key == (f"{prefix}/{record['artifact_id']}" if prefix else record["artifact_id"])
    assert record["sha256"] == hashlib.sha256(body).hexdigest()
    assert record["bytes"] == len(body) and record["epoch"] == 4
    loaded = store.load(study, trial.number)
    assert loaded is not None and torch.equal(loaded["w"], state["w"])

    # An object truncated or replaced in the bucket is refused before torch.load sees it.
    s3.client().put_object(Bucket=bucket, Key=key, Body=body[:-9])
    with pytest.raises(CheckpointError, match="SHA-256"):
        store.load(study, trial.number)
    s3.client().delete_object(Bucket=bucket, Key=key)
    with pytest.raises(CheckpointError, match="is not in the artifact store"):
        store.load(study, trial.number)


def test_a_transition_inherits_its_sources_checkpoint_through_s3(s3, bucket) -> None:
    # A chain A -> B -> C where B's curve never beats its starting point: B keeps epoch 0, so
    # its record points at A's object, and C must start from A's weights, read from S3.
    graph = op.TransitionGraph.basic(
        clip_lengths=(4,), learning_rates=(0.1, 0.01, 0.001), samplings=("uniform",)
    )
    store = CheckpointStore(open_artifact_store(f"s3://{bucket}", client=s3.client()))
    study = op.create_planning_study(graph, pruner=op.KneePointPruner(delay=3, max_epochs=3))
    started_from: dict[int, float | None] = {}

    def objective(trial: optuna.Trial) -> None:
        step = op.current_transition(trial)
        start = None
        if step.source_trial is not None:
            state = store.load(study, step.source_trial)
            start = None if state is None else float(state["w"][0])
        started_from[trial.number] = start
        inherit = step.params["lr"] == 0.01
        if step.source_trial is not None:
            trial.report(0.9 if inherit else 0.1, 0)
        for epoch, value in enumerate([0.3, 0.5, 0.6] if inherit else [0.5, 0.8, 0.95], 1):
            trial.report(value, epoch)
            if trial.should_prune():
                break
        if step.keep_epoch == 0:
            store.inherit(trial, store.record(study, step.source_trial))
        else:
            store.save(trial, {"w": torch.full((4,), float(trial.number))}, epoch=step.keep_epoch)

    op.run_worker(study, objective, poll_interval=0.01)
    trials = {t.number: t for t in study.trials}
    assert all(t.state == TrialState.COMPLETE for t in trials.values())
    by_lr = {
        graph.transition(t.system_attrs["opplan:transition"]).target.params["lr"]: t
        for t in trials.values()
    }
    a, b, c = by_lr[0.1], by_lr[0.01], by_lr[0.001]
    assert b.system_attrs["opplan:source_trial"] == a.number
    assert c.system_attrs["opplan:source_trial"] == b.number
    record_a, record_b = a.system_attrs[KEY_CHECKPOINT], b.system_attrs[KEY_CHECKPOINT]
    assert record_b["epoch"] == 0 and record_b["artifact_id"] == record_a["artifact_id"]
    assert started_from[b.number] == started_from[c.number] == float(a.number)
    # Only transitions that trained a better checkpoint uploaded one: B added no object.
    recorded = {t.system_attrs[KEY_CHECKPOINT]["artifact_id"] for t in trials.values()}
    assert set(_objects(s3, bucket)) == recorded
    assert len(recorded) == len(trials) - 1


def test_the_video_trainer_keeps_checkpoints_in_s3(s3, bucket, tmp_path) -> None:
    from video_fixtures import tiny_synthetic
    from video_fixtures import tiny_transform

    data = tiny_synthetic(tmp_path / "videos")
    full = VideoDataset.from_list_file(
        data.root, data.train_list, data.class_file, transform=tiny_transform()
    )
    graph = op.TransitionGraph.basic(
        clip_lengths=(4,), learning_rates=(0.05, 0.005), samplings=("uniform",)
    )
    study = op.create_planning_study(graph, pruner=op.KneePointPruner(delay=1, max_epochs=2))
    config = TrainerConfig(
        model="p3d_resnet18",
        model_kwargs={"width_multiplier": 0.125, "stem_temporal_stride": 1},
        batch_size=2,
        num_workers=0,
        progress=False,
    )
    store = open_artifact_store(f"s3://{bucket}/plan", client=s3.client())
    trainer = TransitionTrainer(full, full, store, config=config)
    assert op.run_worker(study, trainer, poll_interval=0.01) == 2
    first, second = study.get_trials(states=(TrialState.COMPLETE,))
    assert second.system_attrs["opplan:source_trial"] == first.number
    objects = _objects(s3, bucket)
    for trial in (first, second):
        record = trial.system_attrs.get(KEY_CHECKPOINT)
        if record is None:  # kept its source's checkpoint: nothing uploaded
            continue
        body = objects[f"plan/{record['artifact_id']}"]
        assert hashlib.sha256(body).hexdigest() == record["sha256"]
    # The kept weights load back from S3 into the same network.
    state = CheckpointStore(store).load(study, second.number)
    assert state is None or set(state) == set(trainer._runner.build_model().state_dict())


def test_an_s3_location_without_a_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="must name a bucket"):
        open_artifact_store("s3:///prefix")


class _SlowStore:
    """An artifact store whose uploads take ``seconds`` (a large checkpoint, a slow link)."""

    def __init__(self, store, seconds: float) -> None:
        self.store, self.seconds, self.uploads = store, seconds, 0

    def open_reader(self, artifact_id):
        return self.store.open_reader(artifact_id)

    def write(self, artifact_id, content_body) -> None:
        time.sleep(self.seconds)
        self.store.write(artifact_id, content_body)
        self.uploads += 1

    def remove(self, artifact_id) -> None:
        self.store.remove(artifact_id)


def test_an_upload_longer_than_the_grace_period_is_not_taken_for_a_dead_worker(s3, bucket):
    # Heartbeats go on in their own thread during the upload: a second worker watching with a
    # 1 s grace period must not fail the transition whose upload takes 4 s.
    graph = op.TransitionGraph.basic(
        clip_lengths=(4,), learning_rates=(0.1, 0.01), samplings=("uniform",)
    )
    slow = _SlowStore(open_artifact_store(f"s3://{bucket}", client=s3.client()), 4.0)
    store = CheckpointStore(slow)
    study = op.create_planning_study(graph, pruner=op.KneePointPruner(delay=2, max_epochs=3))

    def objective(trial: optuna.Trial) -> None:
        for epoch, value in enumerate([0.5, 0.8, 0.9], 1):
            trial.report(value, epoch)
            if trial.should_prune():
                break
        store.save(trial, {"w": torch.ones(8)}, epoch=op.current_transition(trial).keep_epoch)

    kwargs = {"heartbeat_interval": 0.2, "grace_period": 1.0, "poll_interval": 0.05}
    done: list[int] = []
    workers = [
        threading.Thread(target=lambda: done.append(op.run_worker(study, objective, **kwargs)))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert sorted(done) == [0, 2] or sorted(done) == [1, 1]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert not any("opplan:stale" in t.system_attrs for t in study.trials)
    assert slow.uploads == 2


def test_a_config_location_reaches_the_server_through_boto3s_environment(
    s3, bucket, monkeypatch, tmp_path
) -> None:
    from optuna_opplan.video import PlanConfig
    from optuna_opplan.video._setup import artifact_path

    for name, value in {
        "AWS_ENDPOINT_URL": s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    config = PlanConfig.from_dict(
        {"artifacts": {"path": f"s3://{bucket}/ucf"}}, base_dir=str(tmp_path)
    )
    assert artifact_path(config) == f"s3://{bucket}/ucf"  # not taken for a local folder
    store = CheckpointStore(artifact_path(config))
    study = optuna.create_study()
    record = store.save(study.ask(), {"w": torch.zeros(2)}, epoch=1)
    assert set(_objects(s3, bucket)) == {f"ucf/{record['artifact_id']}"}
    assert not any(tmp_path.iterdir())
