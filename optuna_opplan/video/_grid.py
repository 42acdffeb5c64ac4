from __future__ import annotations

from collections.abc import Sequence
import itertools
import logging
import time
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.study import Study
from optuna.trial import TrialState

from optuna_opplan.video._config import PlanConfig
from optuna_opplan.video._schedule import Schedule
from optuna_opplan.video._setup import KEY_GRID_STUDY
from optuna_opplan.video._setup import Splits
from optuna_opplan.video._setup import build_trainer_config
from optuna_opplan.video._trainer import train_schedule

_logger = optuna.logging.get_logger("optuna.opplan")

KEY_GRID_COMPUTE = "opplan:compute"
KEY_GRID_TEST = "opplan:test_accuracy"
KEY_GRID_SCHEDULE = "opplan:schedule"
KEY_GRID_ATTEMPT = "opplan:attempt"


def clip_schedules(clip_lengths: Sequence[int]) -> list[str]:
    """The paper's hand-tuned clip schedules l1->l3, l2->l3, l1->l2->l3 (for any number of
    lengths: shortest->longest, second->longest, all in order), as ``"8-16-32"`` strings.

    Example:
        >>> clip_schedules((16, 32, 64))
        ['16-64', '32-64', '16-32-64']
        >>> clip_schedules((8, 16))
        ['8-16', '16']
    """
    lengths = sorted(clip_lengths)
    candidates = [(lengths[0], lengths[-1]), (lengths[1], lengths[-1]), tuple(lengths)]
    unique: list[str] = []
    for clips in candidates:
        name = "-".join(str(c) for c in dict.fromkeys(clips))
        if name not in unique:
            unique.append(name)
    return unique


def grid_search_space(config: PlanConfig) -> dict[str, list[Any]]:
    """The grid of hand-tuned schedules for ``config``: clip schedule x decay x epochs x
    sampling."""
    grid = config.section("grid")
    return {
        "clip_schedule": clip_schedules(config.section("graph")["clip_lengths"]),
        "decay": list(grid["decays"]),
        "total_epochs": list(grid["total_epochs"]),
        "sampling": list(grid["samplings"]),
    }


def schedule_of(params: dict[str, Any], base_lr: float) -> Schedule:
    """The hand-tuned schedule of one grid point."""
    clips = [int(c) for c in str(params["clip_schedule"]).split("-")]
    return Schedule.hand_tuned(
        clips,
        total_epochs=int(params["total_epochs"]),
        base_lr=base_lr,
        decay=str(params["decay"]),
        sampling=str(params["sampling"]),
    )


def create_grid_study(
    planning: Study, config: PlanConfig, *, study_name: str | None = None
) -> Study:
    """Create the grid-search baseline study beside ``planning`` and link the two.

    The study uses Optuna's :class:`~optuna.samplers.GridSampler` over
    :func:`grid_search_space`; every grid point is enqueued once, here, so workers that claim
    waiting trials atomically run each exactly once (GridSampler alone can repeat points when
    workers race).
    """
    name = study_name or f"{planning.study_name}-grid"
    space = grid_search_space(config)
    study = optuna.create_study(
        storage=planning._storage,
        study_name=name,
        direction="maximize",
        sampler=optuna.samplers.GridSampler(space, seed=0),
        load_if_exists=True,
    )
    if not study.trials:
        for values in itertools.product(*space.values()):
            study.enqueue_trial(dict(zip(space, values)), user_attrs={})
    planning._storage.set_study_system_attr(planning._study_id, KEY_GRID_STUDY, name)
    return study


def load_grid_study(planning: Study, config: PlanConfig) -> Study | None:
    """The grid study linked to ``planning``, or :obj:`None`."""
    name = planning._storage.get_study_system_attrs(planning._study_id).get(KEY_GRID_STUDY)
    if name is None:
        return None
    return optuna.load_study(
        study_name=name,
        storage=planning._storage,
        sampler=optuna.samplers.GridSampler(grid_search_space(config), seed=0),
    )


class GridObjective:
    """Trains one hand-tuned schedule from scratch; the value is the final validation score,
    the test accuracy (multi-view) and the compute are recorded on the trial."""

    def __init__(self, config: PlanConfig, splits: Splits, *, progress: bool = True) -> None:
        self.config = config
        self.splits = splits
        self.trainer_config = build_trainer_config(config, progress=progress)
        self.base_lr = float(config.section("grid")["base_lr"])

    def __call__(self, trial: optuna.Trial) -> float:
        params = {
            name: trial.suggest_categorical(name, choices)
            for name, choices in grid_search_space(self.config).items()
        }
        schedule = schedule_of(params, self.base_lr)
        result = train_schedule(
            schedule,
            self.splits.train,
            config=self.trainer_config,
            val=self.splits.val,
            test=self.splits.test,
        )
        trial.storage.set_trial_system_attr(trial._trial_id, KEY_GRID_SCHEDULE, schedule.to_dict())
        trial.storage.set_trial_system_attr(
            trial._trial_id,
            KEY_GRID_COMPUTE,
            {
                "epochs": schedule.total_epochs,
                "clip_frame_epochs": schedule.clip_frame_epochs,
                "seconds": result.seconds,
                "cpu_seconds": result.cpu_seconds,
            },
        )
        trial.storage.set_trial_system_attr(trial._trial_id, KEY_GRID_TEST, result.test_accuracy)
        return float(result.history[-1]["val"])


def run_grid_worker(study: Study, objective: GridObjective, *, max_retries: int = 2) -> int:
    """Claim waiting grid trials one at a time (atomically) until none is left.

    A trial whose objective raises is failed and enqueued again, at most ``max_retries``
    times per grid point. Returns the number of grid trials this worker completed.
    """
    done = 0
    while True:
        waiting = study._storage.get_all_trials(
            study._study_id, deepcopy=False, states=(TrialState.WAITING,)
        )
        if not waiting:
            return done
        claimed = None
        for frozen in waiting:
            try:
                if study._storage.set_trial_state_values(frozen._trial_id, TrialState.RUNNING):
                    claimed = frozen
                    break
            except UpdateFinishedTrialError:
                continue
        if claimed is None:
            time.sleep(0.05)
            continue
        trial = optuna.Trial(study, claimed._trial_id)
        try:
            value = objective(trial)
        except Exception as exc:
            _logger.warning(f"Grid trial {trial.number} failed: {exc!r}", exc_info=True)
            study.tell(trial, state=TrialState.FAIL)
            attempt = int(claimed.system_attrs.get(KEY_GRID_ATTEMPT, 1))
            if attempt <= max_retries:
                study.add_trial(
                    optuna.trial.create_trial(
                        state=TrialState.WAITING,
                        system_attrs={
                            "fixed_params": claimed.system_attrs.get("fixed_params", {}),
                            KEY_GRID_ATTEMPT: attempt + 1,
                        },
                    )
                )
            continue
        study.tell(trial, value)
        done += 1
        logging.getLogger("optuna.opplan").info(f"Grid trial {trial.number}: val {value:.4f}")
