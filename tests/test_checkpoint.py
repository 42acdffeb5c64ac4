"""Checkpoints carried by the engine: step.save_checkpoint, run_worker(artifact_store=...),
step.load_source_checkpoint, op.load_checkpoint."""

from __future__ import annotations

import io
import os
from pathlib import Path
import pickle
from typing import Any
from typing import BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
import pytest

import optuna_opplan as op
from optuna_opplan._checkpoint import EpochCheckpoints
from optuna_opplan._protocol import KEY_CHECKPOINT
from optuna_opplan._protocol import KEY_OUTCOME
from optuna_opplan._protocol import KEY_TRANSITION

GRAPH = op.TransitionGraph.basic(
    clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("uniform",)
)
DELAY = 3


def _study(direction: str = "maximize") -> optuna.Study:
    return op.create_planning_study(
        GRAPH,
        pruner=op.KneePointPruner(delay=DELAY, max_epochs=25),
        direction=direction,
        initial_score=0.0 if direction == "maximize" else 2.0,
    )


def _curve(key: str, epoch: int) -> float:
    # A different knee per transition; the second lr stage only gets worse (keeps epoch 0).
    if "lr=0.01" in key.split("->")[1] and "lr=0.1" in key.split("->")[0]:
        return 0.5 - 0.01 * epoch
    rate = 0.3 + 0.05 * (len(key) % 5)
    return 0.9 - 0.8 * (1 - rate) ** epoch - 0.002 * epoch**2


class Loop:
    """An objective written as a user would: bytes of (trial, epoch, source bytes' owner)."""

    def __init__(self, size: int = 64, save: bool = True) -> None:
        self.size = size
        self.save = save
        self.sources: dict[str, Any] = {}

    def __call__(self, trial: optuna.Trial) -> None:
        step = op.current_transition(trial)
        data = step.load_source_checkpoint()
        self.sources[step.transition.key] = None if data is None else pickle.loads(data)[:2]
        for epoch in range(1, 100):
            trial.report(_curve(step.transition.key, epoch), epoch)
            if self.save:
                body = pickle.dumps((trial.number, epoch, os.urandom(self.size)))
                step.save_checkpoint(epoch, body)
            if trial.should_prune():
                break


def test_the_kept_epoch_is_uploaded_and_every_transition_starts_from_its_source(
    tmp_path: Path,
) -> None:
    study = _study()
    loop = Loop(size=(1 << 20) + 7)  # over a MiB: the whole file is hashed, not a prefix
    done = op.run_worker(study, loop, artifact_store=str(tmp_path))
    assert done == len(GRAPH.transitions)
    progress = op.get_progress(study)
    kept_zero = 0
    for key, status in progress.statuses.items():
        result = status.result
        assert result is not None and result.trial is not None
        trial = study.trials[result.trial]
        if result.epochs == 0:
            kept_zero += 1
            assert KEY_CHECKPOINT not in trial.system_attrs, "nothing new to upload"
        else:
            record = trial.system_attrs[KEY_CHECKPOINT]
            assert record["epoch"] == result.epochs
            data = op.load_checkpoint(study, result.trial, artifact_store=str(tmp_path))
            assert pickle.loads(data)[:2] == (result.trial, result.epochs)
        # Each transition started from its source's kept checkpoint, following epoch-0
        # keepers back to the nearest trained one (None: the initial model).
        source = status.transition.source
        expected = None
        while source is not None:
            winner = progress.winners[source]
            assert winner is not None
            if winner.result.epochs:
                expected = (winner.result.trial, winner.result.epochs)
                break
            source = winner.transition.source
        assert loop.sources[key] == expected
    assert kept_zero, "the graph must have a transition that keeps its source checkpoint"
    # Only the kept epochs were uploaded: one artifact per transition that trained.
    assert len(os.listdir(tmp_path)) == len(GRAPH.transitions) - kept_zero
    plan = op.get_plan(study)
    last = op.load_checkpoint(study, plan.trials[-1], artifact_store=str(tmp_path))
    assert pickle.loads(last)[:2] in {(r.trial, r.epochs) for r in plan.results if r.epochs}


def test_only_the_retained_epochs_are_kept_on_disk(tmp_path: Path) -> None:
    epochs = EpochCheckpoints(lambda n: range(max(0, n - 2), n + 1), scratch_dir=tmp_path)
    for epoch in range(1, 8):
        epochs.save(epoch, bytes([epoch]) * 10)
        (folder,) = os.listdir(tmp_path)
        assert len(os.listdir(tmp_path / folder)) == min(epoch, 3)
    assert epochs.epochs == [5, 6, 7]
    path, _, size = epochs.get(6)  # type: ignore[misc]
    assert Path(path).read_bytes() == bytes([6]) * 10 and size == 10
    epochs.close()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "epoch, data, error, match",
    [
        (0, b"x", ValueError, "`epoch` must be a positive int .* epoch=0"),
        (1.0, b"x", ValueError, "epoch=1.0"),
        (1, {"w": 1}, TypeError, "`data` must be bytes .* got dict: serialise it first"),
        (1, "text", TypeError, "got str"),
    ],
)
def test_save_checkpoint_says_what_it_expects(
    tmp_path: Path, epoch: Any, data: Any, error: type[Exception], match: str
) -> None:
    seen: list[Exception] = []

    def objective(trial: optuna.Trial) -> None:
        trial.report(0.5, 1)
        try:
            op.current_transition(trial).save_checkpoint(epoch, data)
        except Exception as exc:
            seen.append(exc)
            raise op.TransitionFailed("stop") from exc

    op.run_worker(_study(), objective, artifact_store=str(tmp_path), max_transitions=1)
    assert isinstance(seen[0], error)
    assert isinstance(seen[0], op.CheckpointError), "a misuse stops the worker: no retries"
    with pytest.raises(error, match=match):
        raise seen[0]


def test_saving_without_an_artifact_store_stops_the_worker_at_once() -> None:
    study = _study()
    with pytest.raises(op.CheckpointError, match=r"run_worker\(study, objective, artifact_store"):
        op.run_worker(study, Loop())
    (trial,) = study.get_trials(states=(TrialState.FAIL,))
    assert trial.system_attrs[KEY_OUTCOME]["reason"].startswith("CheckpointError: ")


def test_an_objective_that_does_not_save_the_kept_epoch_is_named(tmp_path: Path) -> None:
    study = _study()
    with pytest.raises(op.CheckpointError) as info:
        op.run_worker(study, Loop(save=False), artifact_store=str(tmp_path))
    message = str(info.value)
    assert message.startswith("Trial 0 (initial->")
    assert "but the objective saved no checkpoint of it (it saved none)" in message
    assert "step.save_checkpoint(epoch, data)" in message
    (trial,) = study.get_trials(states=(TrialState.FAIL,))
    assert KEY_CHECKPOINT not in trial.system_attrs


def test_a_missing_source_checkpoint_fails_once_naming_the_trial(tmp_path: Path) -> None:
    study = _study()
    op.run_worker(study, Loop(), artifact_store=str(tmp_path), max_transitions=1)
    first = study.trials[0]
    assert first.state == TrialState.COMPLETE
    for name in os.listdir(tmp_path):
        os.remove(tmp_path / name)  # the artifact is gone: a wrong or wiped store
    attempts = []

    def objective(trial: optuna.Trial) -> None:
        if op.current_transition(trial).source_trial is not None:
            attempts.append(trial.number)
        Loop()(trial)

    with pytest.raises(op.CheckpointError, match=f"checkpoint of trial {first.number} .* is not"):
        # A short grace period: a newly started worker waits half of it before enqueuing
        # what the last one left ready.
        op.run_worker(study, objective, artifact_store=str(tmp_path), heartbeat_interval=0.05)
    assert len(attempts) == 1, "not retried: a retry would meet the same missing file"


def test_an_altered_checkpoint_is_refused(tmp_path: Path) -> None:
    study = _study()
    op.run_worker(study, Loop(size=(1 << 20) + 100), artifact_store=str(tmp_path))
    plan = op.get_plan(study)
    trial = next(t for t, r in zip(plan.trials, plan.results) if r.epochs)
    assert trial is not None
    record = study.trials[trial].system_attrs[KEY_CHECKPOINT]
    path = tmp_path / record["artifact_id"]
    body = bytearray(path.read_bytes())
    body[-1] ^= 1  # past the first MiB
    path.write_bytes(bytes(body))
    with pytest.raises(op.CheckpointError, match=f"checkpoint of trial {trial} .*altered"):
        op.load_checkpoint(study, trial, artifact_store=str(tmp_path))


@pytest.mark.parametrize(
    "which, match",
    [
        ("running", "is RUNNING, not a finished transition"),
        ("missing", "has no trial 99"),
        ("no-store", "kept epoch .* but no checkpoint of it was recorded"),
    ],
)
def test_load_checkpoint_names_what_is_wrong(tmp_path: Path, which: str, match: str) -> None:
    study = _study()
    store = FileSystemArtifactStore(str(tmp_path))
    if which == "no-store":
        op.run_worker(study, Loop(save=False), max_transitions=1)
        number = 0
    elif which == "missing":
        number = 99
    else:
        study._storage.set_trial_state_values(study.trials[0]._trial_id, TrialState.RUNNING)
        number = 0
    with pytest.raises(op.CheckpointError, match=match):
        op.load_checkpoint(study, number, artifact_store=store)


def test_a_transition_keeping_the_initial_model_has_no_checkpoint_to_load(
    tmp_path: Path,
) -> None:
    graph = op.TransitionGraph.basic(clip_lengths=(8,), learning_rates=(0.1,))
    study = op.create_planning_study(graph, pruner=op.KneePointPruner(delay=2), initial_score=0.9)

    def worse(trial: optuna.Trial) -> None:
        step = op.current_transition(trial)
        assert step.load_source_checkpoint() is None
        trial.report(0.9, 0)  # the initial model, measured
        for epoch in range(1, 10):
            trial.report(0.9 - 0.05 * epoch, epoch)
            step.save_checkpoint(epoch, b"w")
            if trial.should_prune():
                break

    op.run_worker(study, worse, artifact_store=str(tmp_path))
    plan = op.get_plan(study)
    assert plan.results[-1].epochs == 0
    with pytest.raises(op.CheckpointError, match="keeps the initial model"):
        op.load_checkpoint(study, plan.trials[-1], artifact_store=str(tmp_path))


class _FullDisk(FileSystemArtifactStore):
    """Its first write stops half-way with ENOSPC, leaving half an artifact behind."""

    def __init__(self, base_path: str) -> None:
        super().__init__(base_path)
        self.failures = 1

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if self.failures:
            self.failures -= 1
            data = content_body.read()
            super().write(artifact_id, io.BytesIO(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")
        super().write(artifact_id, content_body)


def test_a_failed_upload_is_never_referenced_and_the_transition_is_retried(
    tmp_path: Path,
) -> None:
    study = _study()
    store = _FullDisk(str(tmp_path))
    op.run_worker(study, Loop(), artifact_store=store)
    (failed,) = study.get_trials(states=(TrialState.FAIL,))
    assert failed.system_attrs[KEY_OUTCOME] == {
        "status": "error",
        "reason": "OSError: [Errno 28] No space left on device",
    }
    assert KEY_CHECKPOINT not in failed.system_attrs
    retry = [
        t
        for t in study.trials
        if t.system_attrs[KEY_TRANSITION] == failed.system_attrs[KEY_TRANSITION]
        and t.state == TrialState.COMPLETE
    ]
    assert len(retry) == 1
    data = op.load_checkpoint(study, retry[0].number, artifact_store=store)
    assert pickle.loads(data)[0] == retry[0].number


def test_a_minimised_loss_keeps_its_lowest_epoch(tmp_path: Path) -> None:
    study = _study("minimize")
    kept: dict[int, int] = {}

    def loss(trial: optuna.Trial) -> None:
        step = op.current_transition(trial)
        for epoch in range(1, 100):
            # Falls to its lowest value near epoch 8, then rises (overfitting).
            trial.report(0.5 + 1.5 * 0.6**epoch + 0.004 * epoch**2, epoch)
            step.save_checkpoint(epoch, pickle.dumps(epoch))
            if trial.should_prune():
                break
        kept[trial.number] = step.keep_epoch

    op.run_worker(study, loss, artifact_store=str(tmp_path))
    first = study.trials[0]
    result = op.get_progress(study).statuses[first.system_attrs[KEY_TRANSITION]].result
    assert result is not None
    assert 5 <= result.epochs <= 10, "the lowest loss, not the highest"
    assert max(first.intermediate_values) <= result.epochs + DELAY + 1
    assert kept[0] == result.epochs
    assert (
        pickle.loads(op.load_checkpoint(study, 0, artifact_store=str(tmp_path))) == result.epochs
    )


def test_an_objective_passing_a_wrong_type_is_not_retried(tmp_path: Path) -> None:
    study = _study()
    calls = []

    def objective(trial: optuna.Trial) -> None:
        calls.append(trial.number)
        trial.report(0.5, 1)
        op.current_transition(trial).save_checkpoint(1, {"w": [1.0]})  # type: ignore[arg-type]

    with pytest.raises(TypeError, match="`data` must be bytes"):
        op.run_worker(study, objective, artifact_store=str(tmp_path))
    assert len(calls) == 1


def test_load_checkpoint_wants_a_trial_number(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`trial_number` must be a trial's number .*=None"):
        op.load_checkpoint(_study(), None, artifact_store=str(tmp_path))  # type: ignore[arg-type]
