"""PyTorch helpers over the engine's checkpoints: state dicts to bytes and back, safely."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from typing import Any

import optuna
from optuna.study import Study
import torch

from optuna_opplan._checkpoint import KEY_CHECKPOINT
from optuna_opplan._checkpoint import CheckpointError
from optuna_opplan._checkpoint import as_artifact_store
from optuna_opplan._checkpoint import checkpoint_record
from optuna_opplan._checkpoint import open_artifact_store
from optuna_opplan._checkpoint import read_checkpoint
from optuna_opplan._checkpoint import upload_checkpoint

# The core's names the video runtime (and its users) import from here.
__all__ = [
    "KEY_CHECKPOINT",
    "CheckpointError",
    "CheckpointStore",
    "open_artifact_store",
    "sha256_of",
    "state_from_bytes",
    "state_to_bytes",
]


def state_to_bytes(state: dict[str, Any]) -> bytes:
    """A state dict as bytes for :meth:`~optuna_opplan.TransitionStep.save_checkpoint`.

    Example:
        >>> import torch
        >>> state_from_bytes(state_to_bytes({"w": torch.ones(2)}))["w"].tolist()
        [1.0, 1.0]
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def state_from_bytes(data: bytes) -> dict[str, Any]:
    """The state dict in ``data``, unpickled with ``torch.load(weights_only=True)``: a
    checkpoint holding anything but tensors and plain containers is refused, never run."""
    state: dict[str, Any] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return state


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CheckpointStore:
    """Kept checkpoints of transitions as state dicts, in an Optuna artifact store.

    The same records as the engine's (``run_worker(..., artifact_store=...)``): the kept
    weights are uploaded and recorded on the trial (system attribute ``opplan:checkpoint``:
    artifact id, SHA-256, epoch, size). Loading follows transitions that kept epoch 0 back to
    the checkpoint they kept, checks the hash before anything is unpickled and unpickles with
    ``torch.load(weights_only=True)``, so a half-written or tampered file is rejected, never
    executed. Objectives run by :func:`~optuna_opplan.run_worker` need none of this: they use
    ``step.load_source_checkpoint()`` and ``step.save_checkpoint()`` with
    :func:`state_from_bytes` and :func:`state_to_bytes`.

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
        self.artifact_store = as_artifact_store(artifact_store)

    def save(self, trial: optuna.Trial, state: dict[str, Any], *, epoch: int) -> dict[str, Any]:
        """Upload ``state`` as ``trial``'s kept checkpoint and record it on the trial."""
        with tempfile.TemporaryDirectory(prefix="opplan-ckpt-") as tmp:
            path = os.path.join(tmp, f"trial{trial.number}-epoch{epoch}.pt")
            torch.save(state, path)
            return self.save_file(trial, path, epoch=epoch)

    def save_file(
        self, trial: optuna.Trial, path: str | os.PathLike[str], *, epoch: int
    ) -> dict[str, Any]:
        """Upload a checkpoint file as ``trial``'s kept checkpoint and record it on the trial
        (last: a checkpoint is only ever referenced once it is fully uploaded)."""
        return upload_checkpoint(
            trial.storage,
            trial,
            self.artifact_store,
            str(path),
            sha256=sha256_of(path),
            epoch=epoch,
        )

    def inherit(self, trial: optuna.Trial, record: dict[str, Any] | None) -> None:
        """Record that ``trial`` keeps its starting checkpoint ``record`` (its knee was
        epoch 0); nothing for the initial model (:obj:`None`)."""
        if record is not None:
            trial.storage.set_trial_system_attr(
                trial._trial_id, KEY_CHECKPOINT, {**record, "epoch": 0}
            )

    def record(self, study: Study, trial_number: int) -> dict[str, Any]:
        """The checkpoint record trial ``trial_number`` keeps (its own, or the one of the
        nearest source it kept unchanged).

        Raises:
            CheckpointError: if there is none (the trial keeps the initial model, or it has
                no checkpoint recorded).
        """
        record = self._record(study, trial_number)
        if record is None:
            raise CheckpointError(f"Trial {trial_number} has no kept checkpoint recorded.")
        return record

    def load(self, study: Study, trial_number: int) -> dict[str, Any] | None:
        """The kept weights of trial ``trial_number`` (:obj:`None`: the initial model's).

        Raises:
            CheckpointError: if the artifact is missing or its SHA-256 does not match.
        """
        record = self._record(study, trial_number)
        if record is None:
            return None
        return state_from_bytes(read_checkpoint(self.artifact_store, record, trial_number))

    def _record(self, study: Study, trial_number: int) -> dict[str, Any] | None:
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, trial_number
        )
        own = study._storage.get_trial_system_attrs(trial_id).get(KEY_CHECKPOINT)
        if isinstance(own, dict) and "artifact_id" in own:
            return own  # uploaded, whether or not the trial is finished yet
        return checkpoint_record(study, trial_number)
