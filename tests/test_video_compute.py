"""Compute accounting: every epoch of every attempt, step-0 and validation passes, both sides.

The expected counts are written from the set-up (dataset sizes, epochs forced by the pruner,
the failure injected), never read back from what the trainers recorded.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
import pytest
from video_fixtures import trainer_splits

import optuna_opplan as op
from optuna_opplan._protocol import KEY_COMPUTE
from optuna_opplan.video import VideoDataset
from optuna_opplan.video._compute import Compute
from optuna_opplan.video._compute import study_compute
from optuna_opplan.video._compute import total_compute
from optuna_opplan.video._schedule import Schedule
from optuna_opplan.video._schedule_trainer import train_schedule
from optuna_opplan.video._trainer import TrainerConfig
from optuna_opplan.video._trainer import TransitionTrainer

TRAIN, VAL, TEST = 6, 2, 4  # videos in the fixture's splits


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> tuple[VideoDataset, VideoDataset, VideoDataset]:
    splits = trainer_splits(tmp_path_factory.mktemp("videos"))
    assert tuple(len(s) for s in splits) == (TRAIN, VAL, TEST)
    return splits


def _config(**kwargs: Any) -> TrainerConfig:
    base = {
        "model": "c3d_small",
        "model_kwargs": {"width_multiplier": 0.25},
        "batch_size": 4,
        "num_workers": 0,
        "progress": False,
    }
    return TrainerConfig(**{**base, **kwargs})


def test_planning_counts_every_epoch_step0_pass_and_failed_attempt(splits, tmp_path) -> None:
    train, val, _ = splits
    # init -> (clip 2) -> (clip 4): the second transition starts from a trained state, so it
    # has a step-0 pass; delay = max_epochs = 2 makes every attempt train exactly 2 epochs.
    graph = op.TransitionGraph.basic(
        clip_lengths=(2, 4), learning_rates=(0.05,), samplings=("consecutive",)
    )
    assert [t.source is None for t in graph.transitions] == [True, True, False]
    study = op.create_planning_study(
        graph,
        storage=f"sqlite:///{tmp_path / 'plan.db'}",
        study_name="compute",
        pruner=op.KneePointPruner(delay=2, max_epochs=2),
    )
    crashed: list[int] = []

    def log(line: str) -> None:
        # The first attempt at the 2 -> 4 transition dies after its first epoch.
        if "clip_length=2,lr=0.05->" in line and " epoch 1:" in line and not crashed:
            crashed.append(1)
            raise RuntimeError("loader died")

    trainer = TransitionTrainer(
        train, val, tmp_path / "artifacts", config=_config(progress=True), log=log
    )
    op.run_worker(study, trainer, poll_interval=0.01)
    assert crashed, "the failure was injected"
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1

    total = study_compute(study)
    # Transitions: init->2 and init->4 (2 epochs, no step 0), 2->4 failed (step 0 + 1 epoch),
    # 2->4 retried (step 0 + 2 epochs).
    assert total.attempts == 4
    assert total.failed_attempts == 1
    assert total.train_epochs == 2 + 2 + 1 + 2
    assert total.clip_frame_epochs == 2 * 2 + 2 * 4 + 1 * 4 + 2 * 4
    assert total.train_clip_frames == TRAIN * total.clip_frame_epochs
    # One validation pass per epoch, plus the step-0 pass of each attempt from a trained state.
    assert total.eval_passes == 7 + 2
    assert total.eval_clip_frames == VAL * (2 * 2 + 2 * 4 + (1 + 1) * 4 + (1 + 2) * 4)
    assert total.clip_frames == total.train_clip_frames + total.eval_clip_frames
    assert total.unrecorded_attempts == 0
    seconds = [t.system_attrs[KEY_COMPUTE]["seconds"] for t in study.trials]
    assert all(s > 0 for s in seconds), "failed attempts have their seconds too"
    assert total.seconds == pytest.approx(sum(seconds))


def test_schedule_counts_its_epochs_and_only_the_validation_passes_asked(splits) -> None:
    train, val, test = splits
    schedule = Schedule.hand_tuned((2, 4), total_epochs=3, base_lr=0.05, decay="cosine")
    snapshots: list[dict[str, Any]] = []
    result = train_schedule(
        schedule,
        train,
        config=_config(),
        val=val,
        test=test,
        validate="last",
        record=lambda compute: snapshots.append(compute.to_dict()),
    )
    compute = result.compute
    # Epochs at clips 2, 2, 4; one validation pass at the last epoch; the test pass is not
    # part of the search.
    assert (compute.train_epochs, compute.clip_frame_epochs) == (3, 8)
    assert compute.train_clip_frames == TRAIN * 8
    assert (compute.eval_passes, compute.eval_clip_frames) == (1, VAL * 4)
    assert [s["train_epochs"] for s in snapshots] == [1, 2, 3], "recorded after every epoch"
    assert len(result.test_correct or []) == TEST
    every = train_schedule(schedule, train, config=_config(), val=val, validate="every")
    assert every.compute.eval_passes == 3
    assert every.compute.eval_clip_frames == VAL * 8


def _trial(state: TrialState, steps: dict[int, float], record: dict[str, Any] | None) -> Any:
    return optuna.trial.create_trial(
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        params={"clip_length": 8},
        distributions={"clip_length": CategoricalDistribution([4, 8])},
        intermediate_values=steps,
        system_attrs={} if record is None else {KEY_COMPUTE: record},
    )


RECORD = {"train_epochs": 3, "train_clip_frames": 240, "clip_frame_epochs": 24}


@pytest.mark.parametrize(
    ("state", "steps", "record", "expected"),
    [
        # A recorded attempt counts what its record says, failed or not.
        (TrialState.COMPLETE, {0: 0.1, 1: 0.2}, RECORD, (3, 24, 240, 1, 0, 0)),
        (TrialState.FAIL, {0: 0.1}, RECORD, (3, 24, 240, 1, 1, 0)),
        # Without a record: its epochs are its steps >= 1 (step 0 is an evaluation).
        (TrialState.COMPLETE, {0: 0.1, 1: 0.2, 2: 0.3}, None, (2, 16, 0, 1, 0, 1)),
        (TrialState.FAIL, {1: 0.2}, None, (1, 8, 0, 1, 1, 1)),
        # Records written before evaluations were counted said "epochs".
        (TrialState.COMPLETE, {}, {"epochs": 5, "clip_frame_epochs": 40}, (5, 40, 0, 1, 0, 0)),
        # Nothing done: nothing counted.
        (TrialState.FAIL, {}, None, (0, 0, 0, 0, 0, 0)),
    ],
)
def test_attempts_are_counted_from_their_records(state, steps, record, expected) -> None:
    total = total_compute([_trial(state, steps, record)])
    got = (
        total.train_epochs,
        total.clip_frame_epochs,
        total.train_clip_frames,
        total.attempts,
        total.failed_attempts,
        total.unrecorded_attempts,
    )
    assert got == expected


def test_a_study_sums_its_attempts_failed_ones_included() -> None:
    study = optuna.create_study()
    study.add_trial(_trial(TrialState.FAIL, {1: 0.1}, {**RECORD, "seconds": 2.0}))
    study.add_trial(_trial(TrialState.COMPLETE, {1: 0.1}, {**RECORD, "seconds": 3.0}))
    study.enqueue_trial({"clip_length": 4})  # waiting: nothing done yet
    total = study_compute(study)
    assert (total.attempts, total.failed_attempts, total.train_epochs) == (2, 1, 6)
    assert total.seconds == 5.0


def test_compute_adds_and_round_trips() -> None:
    a = Compute()
    a.add_training(clips=10, clip_length=4)
    a.add_evaluation(clips=5, clip_length=4, views=3)
    assert (a.train_clip_frames, a.eval_clip_frames, a.clip_frames) == (40, 60, 100)
    b = Compute.from_dict(a.to_dict())
    assert b == a
    assert (a + b).clip_frames == 200
