"""Kept checkpoints carried by the engine: bytes in, bytes out, any framework.

An objective hands the engine each epoch's checkpoint as bytes
(:meth:`TransitionStep.save_checkpoint`); the engine keeps the epochs that can still become the
kept one on local disk, and once the objective returns and the knee decision is final it
uploads the kept epoch to an Optuna artifact store and records it on the trial (artifact id,
SHA-256, size), before the trial is told: a transition that completed always has its
checkpoint, and an upload cut short (a killed worker, a full disk) is never referenced.
A transition that keeps epoch 0 uploads nothing: its checkpoint is its source's, found by
following the source trials back to the nearest one that trained (or to the initial model).
"""

from __future__ import annotations

from collections.abc import Callable
import hashlib
import os
from pathlib import Path
import shutil
import tempfile
from typing import Any
from typing import BinaryIO
from typing import Protocol

from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts import upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage
from optuna.study import Study
from optuna.trial import TrialState

from optuna_opplan._protocol import KEY_CHECKPOINT
from optuna_opplan._protocol import KEY_RESULT
from optuna_opplan._protocol import KEY_SOURCE_TRIAL
from optuna_opplan._protocol import KEY_TRANSITION


class ArtifactStore(Protocol):
    """What the engine needs of an Optuna artifact store (they all have these methods)."""

    def open_reader(self, artifact_id: str) -> BinaryIO: ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


class CheckpointError(RuntimeError):
    """A checkpoint that is needed is missing, altered, or has nowhere to go.

    Retrying would not help (the record or the artifact is gone, or the worker was started
    without an artifact store), so a worker that meets one stops with it instead of failing
    the transition's attempts one after another.
    """


class _CheckpointTypeError(CheckpointError, TypeError):
    """A TypeError that stops the worker (a retry would pass the same wrong type)."""


class _CheckpointValueError(CheckpointError, ValueError):
    """A ValueError that stops the worker (a retry would pass the same wrong value)."""


def as_artifact_store(artifact_store: Any) -> ArtifactStore:
    """An Optuna artifact store, or a location made into one (:func:`open_artifact_store`).

    Raises:
        ValueError: if ``artifact_store`` is neither.
    """
    if isinstance(artifact_store, (str, os.PathLike)):
        return open_artifact_store(os.fspath(artifact_store))
    for method in ("open_reader", "write", "remove"):
        if not callable(getattr(artifact_store, method, None)):
            raise ValueError(
                "`artifact_store` must be an Optuna artifact store (FileSystemArtifactStore, "
                "Boto3ArtifactStore, ...), a folder path or an s3://bucket[/prefix] location, "
                f"but got {artifact_store!r} (it has no {method}())."
            )
    store: ArtifactStore = artifact_store
    return store


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
    A folder is created if missing.

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


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise _CheckpointTypeError(
        "`data` must be bytes (a serialised checkpoint), but got "
        f"{type(data).__name__}: serialise it first, e.g. torch.save(model.state_dict(), buf) "
        "into an io.BytesIO and pass buf.getvalue(), or pickle.dumps(weights)."
    )


class EpochCheckpoints:
    """The checkpoints of one running transition that may still become the kept one.

    They are spooled to a private folder, at most ``delay + 1`` at a time (older epochs are
    deleted as newer ones arrive), each with its SHA-256 computed as it is written.

    Args:
        retained: ``epoch -> range`` of the epochs that can still be kept after ``epoch``
            (:meth:`TransitionStep.retained_epochs`).
        prefix: Starts the files' names (which the uploaded artifacts keep).
        scratch_dir: Where the folder is made: the system's temporary folder by default
            (``TMPDIR``).
    """

    def __init__(
        self,
        retained: Callable[[int], range],
        prefix: str = "",
        scratch_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._retained = retained
        self._prefix = prefix
        self._scratch_dir = scratch_dir
        self._dir: str | None = None
        self._files: dict[int, tuple[str, str, int]] = {}  # epoch -> (path, sha256, size)

    def save(self, epoch: int, data: Any) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise _CheckpointValueError(
                f"`epoch` must be a positive int (the epoch reported with trial.report(value, "
                f"epoch)), but got epoch={epoch!r}: the source checkpoint (epoch 0) is kept by "
                "the engine."
            )
        body = _as_bytes(data)
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="opplan-epochs-", dir=self._scratch_dir)
        path = os.path.join(self._dir, f"{self._prefix}epoch{epoch}.ckpt")
        with open(path, "wb") as f:
            f.write(body)
        self._files[epoch] = (path, hashlib.sha256(body).hexdigest(), len(body))
        keep = self._retained(max(self._files))
        for old in [e for e in self._files if e not in keep]:
            os.remove(self._files.pop(old)[0])

    @property
    def epochs(self) -> list[int]:
        """The epochs held, in order."""
        return sorted(self._files)

    def get(self, epoch: int) -> tuple[str, str, int] | None:
        """``(path, sha256, size)`` of ``epoch``'s checkpoint, or :obj:`None`."""
        return self._files.get(epoch)

    def close(self) -> None:
        """Delete the folder and everything in it."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
        self._files.clear()


def upload_checkpoint(
    storage: BaseStorage,
    trial: Any,
    artifact_store: ArtifactStore,
    path: str,
    *,
    sha256: str,
    epoch: int,
) -> dict[str, Any]:
    """Upload a kept checkpoint file and record it on ``trial`` (last: only once whole)."""
    artifact_id = upload_artifact(
        artifact_store=artifact_store,
        file_path=str(path),
        study_or_trial=trial,
        storage=storage,
        mimetype="application/octet-stream",
    )
    record: dict[str, Any] = {
        "artifact_id": artifact_id,
        "sha256": sha256,
        "epoch": epoch,
        "bytes": os.path.getsize(path),
    }
    storage.set_trial_system_attr(trial._trial_id, KEY_CHECKPOINT, record)
    return record


def checkpoint_record(study: Study, trial_number: int) -> dict[str, Any] | None:
    """The checkpoint that trial ``trial_number`` keeps: the record of the trial that uploaded
    it (following transitions that kept epoch 0 back to their sources), or :obj:`None` for the
    initial model.

    Raises:
        CheckpointError: when the trial is not a finished transition, or a trial on the way
            kept a trained epoch but has no checkpoint recorded.
    """
    storage = study._storage
    number: int | None = trial_number
    path: list[int] = []
    while number is not None:
        if number in path:
            raise CheckpointError(f"Trials {path} refer to each other as sources: a loop.")
        path.append(number)
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        except KeyError:
            raise CheckpointError(
                f"Study {study.study_name!r} has no trial {number}"
                + (f" (the source of trial {path[-2]})" if len(path) > 1 else "")
                + "."
            ) from None
        trial = storage.get_trial(trial_id)
        attrs = trial.system_attrs
        label = f"Trial {number}" + (
            f" ({attrs[KEY_TRANSITION]})" if KEY_TRANSITION in attrs else ""
        )
        if KEY_TRANSITION not in attrs:
            raise CheckpointError(f"{label} is not a transition of a planning study.")
        if trial.state != TrialState.COMPLETE or KEY_RESULT not in attrs:
            raise CheckpointError(
                f"{label} is {trial.state.name}, not a finished transition: only finished "
                "transitions keep a checkpoint."
            )
        record = attrs.get(KEY_CHECKPOINT)
        if isinstance(record, dict) and "artifact_id" in record:
            return record
        kept = int(attrs[KEY_RESULT].get("epochs", -1))
        if kept != 0:
            via = f", kept by trial {path[0]}" if len(path) > 1 else ""
            raise CheckpointError(
                f"{label} kept epoch {kept}{via}, but no checkpoint of it was recorded: it was "
                "trained by a worker without run_worker(..., artifact_store=...), or by an "
                "objective that did not call step.save_checkpoint(epoch, data)."
            )
        number = attrs.get(KEY_SOURCE_TRIAL)  # kept its source checkpoint: look there
    return None


def read_checkpoint(
    artifact_store: ArtifactStore, record: dict[str, Any], trial_number: int
) -> bytes:
    """The bytes of a recorded checkpoint, checked against its SHA-256."""
    artifact_id = record["artifact_id"]
    try:
        with artifact_store.open_reader(artifact_id) as reader:
            data = reader.read()
    except (ArtifactNotFound, FileNotFoundError) as exc:
        raise CheckpointError(
            f"The checkpoint of trial {trial_number} (artifact {artifact_id}) is not in the "
            f"artifact store {_store_label(artifact_store)}: was another store given to this "
            f"process, or was it deleted? ({exc})"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != record["sha256"]:
        raise CheckpointError(
            f"The checkpoint of trial {trial_number} (artifact {artifact_id}) has SHA-256 "
            f"{digest[:16]}... and {len(data)} bytes, but {record['sha256'][:16]}... and "
            f"{record.get('bytes')} bytes were uploaded: it was truncated or altered, and is "
            "not used."
        )
    return data


def _store_label(store: Any) -> str:
    folder = getattr(store, "_base_path", None)
    return f"{type(store).__name__}({folder!r})" if folder else type(store).__name__


def load_checkpoint(study: Study, trial_number: int, *, artifact_store: Any) -> bytes:
    """The kept checkpoint of a finished transition, as the bytes its objective saved.

    A transition that kept epoch 0 keeps its source's checkpoint: it is found by following
    the source trials back to the nearest one that trained. The bytes are checked against the
    SHA-256 recorded at upload. ``plan.trials[-1]`` is the trial of the planned model.

    Args:
        study: The planning study.
        trial_number: The trial of the transition.
        artifact_store: The Optuna artifact store (or folder path) the workers uploaded to,
            as given to :func:`run_worker`.

    Raises:
        CheckpointError: if the trial is not a finished transition, its checkpoint is missing
            or altered, or it keeps the initial model (every transition back to the initial
            model kept epoch 0: there is no trained checkpoint).

    Example:

        >>> import pickle, tempfile
        >>> import optuna_opplan as op
        >>> graph = op.TransitionGraph.basic(
        ...     clip_lengths=(8,), learning_rates=(0.1, 0.01), samplings=("uniform",)
        ... )
        >>> study = op.create_planning_study(
        ...     graph, pruner=op.KneePointPruner(delay=2, max_epochs=10)
        ... )
        >>> def objective(trial):
        ...     step = op.current_transition(trial)
        ...     for epoch in range(1, 11):
        ...         weights = {"trial": trial.number, "epoch": epoch}
        ...         trial.report(1 - 0.5**epoch, epoch)
        ...         step.save_checkpoint(epoch, pickle.dumps(weights))
        ...         if trial.should_prune():
        ...             break
        >>> store = tempfile.mkdtemp()
        >>> op.run_worker(study, objective, artifact_store=store)
        2
        >>> plan = op.get_plan(study)
        >>> plan.trials, [r.epochs for r in plan.results]
        ((0, 1), [9, 9])
        >>> pickle.loads(op.load_checkpoint(study, plan.trials[-1], artifact_store=store))
        {'trial': 1, 'epoch': 9}
    """
    if isinstance(trial_number, bool) or not isinstance(trial_number, int):
        raise ValueError(
            "`trial_number` must be a trial's number (e.g. plan.trials[-1] of a plan from "
            f"get_plan), but got trial_number={trial_number!r}."
        )
    store = as_artifact_store(artifact_store)
    record = checkpoint_record(study, trial_number)
    if record is None:
        raise CheckpointError(
            f"Trial {trial_number} keeps the initial model (it and every transition before it "
            "kept epoch 0): there is no trained checkpoint to load; build the initial model."
        )
    return read_checkpoint(store, record, trial_number)


def source_checkpoint(study: Study, source_trial: int | None, artifact_store: Any) -> bytes | None:
    """The checkpoint a transition starts from: its source trial's kept one, or :obj:`None`
    for the initial model (no source, or every transition back to it kept epoch 0)."""
    if source_trial is None:
        return None
    record = checkpoint_record(study, source_trial)
    if record is None:
        return None
    if artifact_store is None:
        raise CheckpointError(
            "This transition starts from trial "
            f"{source_trial}'s checkpoint, but the worker has no artifact store to read it "
            "from: start it with run_worker(study, objective, artifact_store=...)."
        )
    return read_checkpoint(artifact_store, record, source_trial)


class Carrier:
    """What the engine holds for one running transition: its retained epoch checkpoints and
    the artifact store the kept one goes to (:obj:`None`: the objective keeps its own)."""

    def __init__(self, artifact_store: ArtifactStore | None, epochs: EpochCheckpoints) -> None:
        self.artifact_store = artifact_store
        self.epochs = epochs


# The running transitions of this process, by (storage, trial id): how a TransitionStep made
# from a bare trial inside the objective finds what its worker holds.
_CARRIERS: dict[tuple[int, int], Carrier] = {}


def carrier_key(storage: BaseStorage, trial_id: int) -> tuple[int, int]:
    return id(storage), trial_id


def attach(storage: BaseStorage, trial_id: int, carrier: Carrier) -> None:
    _CARRIERS[carrier_key(storage, trial_id)] = carrier


def detach(storage: BaseStorage, trial_id: int) -> None:
    carrier = _CARRIERS.pop(carrier_key(storage, trial_id), None)
    if carrier is not None:
        carrier.epochs.close()


def carrier_of(storage: BaseStorage, trial_id: int) -> Carrier | None:
    return _CARRIERS.get(carrier_key(storage, trial_id))
