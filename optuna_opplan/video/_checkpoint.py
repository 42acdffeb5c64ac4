from __future__ import annotations

import hashlib
import os
from pathlib import Path
import tempfile
from typing import Any
from typing import BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts import download_artifact
from optuna.artifacts import upload_artifact
from optuna.study import Study
import torch

from optuna_opplan._protocol import KEY_CHECKPOINT


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not match its recorded SHA-256."""


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _PrefixedStore:
    """An artifact store whose artifact ids live under a key prefix of another store."""

    def __init__(self, store: Any, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def open_reader(self, artifact_id: str) -> BinaryIO:
        reader: BinaryIO = self.store.open_reader(self.prefix + artifact_id)
        return reader

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.store.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(self.prefix + artifact_id)


def open_artifact_store(location: str, *, client: Any = None) -> Any:
    """The Optuna artifact store at ``location``: ``s3://bucket[/prefix]`` or a folder path.

    An ``s3://`` location is Optuna's :class:`~optuna.artifacts.Boto3ArtifactStore` on any
    S3-compatible server: credentials, region and endpoint come from boto3's usual sources
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, and
    ``AWS_ENDPOINT_URL`` for MinIO, Ceph and the like). Uploads stream from the checkpoint file
    in parts instead of being copied into memory first, and boto3 retries failed requests with
    backoff (``AWS_MAX_ATTEMPTS``, default 10 here); a read or connect that stalls for 5
    minutes fails the upload, which fails the transition (to be retried) instead of hanging.

    Args:
        location: ``s3://bucket``, ``s3://bucket/prefix`` or a folder path.
        client: A boto3 S3 client to use instead of a new one.

    Example:
        >>> import tempfile
        >>> store = open_artifact_store(tempfile.mkdtemp())
        >>> type(store).__name__
        'FileSystemArtifactStore'
    """
    if not location.startswith("s3://"):
        Path(location).mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(location)
    bucket, _, prefix = location[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(
            f"An S3 location must name a bucket (s3://bucket/prefix), got {location!r}."
        )
    from optuna.artifacts import Boto3ArtifactStore

    if client is None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ImportError(
                f"Checkpoints in {location} need boto3: pip install 'optuna-opplan[s3]'."
            ) from None
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", "10"))
        config = Config(
            connect_timeout=60,
            read_timeout=300,
            retries={"max_attempts": attempts, "mode": "standard"},
        )
        client = boto3.client("s3", config=config)
    store: Any = Boto3ArtifactStore(bucket, client=client, avoid_buf_copy=True)
    prefix = prefix.strip("/")
    return _PrefixedStore(store, prefix + "/") if prefix else store


class CheckpointStore:
    """Kept checkpoints of transitions, in an Optuna artifact store, verified by SHA-256.

    A transition's kept weights are uploaded once its knee is known and recorded on its trial
    (system attribute ``opplan:checkpoint``: artifact id, SHA-256, epoch, size). Loading checks
    the hash before anything is unpickled and unpickles with ``torch.load(weights_only=True)``,
    so a half-written or tampered file is rejected, never executed.

    Args:
        artifact_store: Any Optuna artifact store, or a location for
            :func:`open_artifact_store`: a folder path or ``s3://bucket[/prefix]``.

    Example:
        >>> import tempfile, optuna, torch
        >>> store = CheckpointStore(tempfile.mkdtemp())
        >>> study = optuna.create_study()
        >>> trial = study.ask()
        >>> record = store.save(trial, {"w": torch.ones(2)}, epoch=3)
        >>> store.load(study, trial.number)["w"].tolist()
        [1.0, 1.0]
    """

    def __init__(self, artifact_store: Any) -> None:
        if isinstance(artifact_store, (str, os.PathLike)):
            artifact_store = open_artifact_store(os.fspath(artifact_store))
        for method in ("open_reader", "write", "remove"):
            if not callable(getattr(artifact_store, method, None)):
                raise ValueError(
                    "`artifact_store` must be an Optuna artifact store or a folder path, but "
                    f"got {artifact_store!r} (no {method}())."
                )
        self.artifact_store = artifact_store

    def save(self, trial: optuna.Trial, state: dict[str, Any], *, epoch: int) -> dict[str, Any]:
        """Upload ``state`` as ``trial``'s kept checkpoint and record it on the trial."""
        with tempfile.TemporaryDirectory(prefix="opplan-ckpt-") as tmp:
            path = os.path.join(tmp, f"trial{trial.number}-epoch{epoch}.pt")
            torch.save(state, path)
            return self.save_file(trial, path, epoch=epoch)

    def save_file(
        self, trial: optuna.Trial, path: str | os.PathLike[str], *, epoch: int
    ) -> dict[str, Any]:
        """Upload a checkpoint file as ``trial``'s kept checkpoint and record it on the trial."""
        digest = sha256_of(path)
        artifact_id = upload_artifact(
            artifact_store=self.artifact_store, file_path=str(path), study_or_trial=trial
        )
        record: dict[str, Any] = {
            "artifact_id": artifact_id,
            "sha256": digest,
            "epoch": epoch,
            "bytes": os.path.getsize(path),
        }
        # Recorded last: a checkpoint is only ever referenced once it is fully uploaded.
        trial.storage.set_trial_system_attr(trial._trial_id, KEY_CHECKPOINT, record)
        return record

    def inherit(self, trial: optuna.Trial, record: dict[str, Any] | None) -> None:
        """Record that ``trial`` keeps its starting checkpoint (its knee was epoch 0)."""
        inherited = {"initial": True} if record is None else {**record, "epoch": 0}
        trial.storage.set_trial_system_attr(trial._trial_id, KEY_CHECKPOINT, inherited)

    def record(self, study: Study, trial_number: int) -> dict[str, Any]:
        """The checkpoint record of trial ``trial_number``."""
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, trial_number
        )
        record = study._storage.get_trial_system_attrs(trial_id).get(KEY_CHECKPOINT)
        if not isinstance(record, dict):
            raise CheckpointError(f"Trial {trial_number} has no kept checkpoint recorded.")
        return record

    def load(self, study: Study, trial_number: int) -> dict[str, Any] | None:
        """The kept weights of trial ``trial_number`` (:obj:`None`: the initial model's).

        Raises:
            CheckpointError: if the artifact is missing or its SHA-256 does not match.
        """
        record = self.record(study, trial_number)
        if record.get("initial"):
            return None
        with tempfile.TemporaryDirectory(prefix="opplan-ckpt-") as tmp:
            path = os.path.join(tmp, "checkpoint.pt")
            try:
                download_artifact(
                    artifact_store=self.artifact_store,
                    file_path=path,
                    artifact_id=record["artifact_id"],
                )
            except Exception as exc:
                raise CheckpointError(
                    f"Checkpoint {record['artifact_id']} of trial {trial_number} cannot be "
                    f"read from the artifact store: {exc!r}"
                ) from exc
            digest = sha256_of(path)
            if digest != record["sha256"]:
                raise CheckpointError(
                    f"Checkpoint {record['artifact_id']} of trial {trial_number} has SHA-256 "
                    f"{digest[:16]}..., expected {record['sha256'][:16]}...: it was truncated "
                    "or altered, and is not loaded."
                )
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
            return state
