from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
import functools
import hashlib
import itertools
import os
import socket
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.study import Study
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from optuna_opplan._attempts import DEFAULT_MAX_DEATHS
from optuna_opplan._attempts import Attempts
from optuna_opplan._attempts import check_budget
from optuna_opplan._protocol import KEY_ATTEMPT
from optuna_opplan._protocol import KEY_COMPUTE
from optuna_opplan._protocol import KEY_GRID_STUDY
from optuna_opplan._protocol import KEY_SCHEDULE
from optuna_opplan._protocol import KEY_TEST_ACCURACY
from optuna_opplan._protocol import KEY_TEST_CORRECT
from optuna_opplan._protocol import OutcomeKind
from optuna_opplan._protocol import claim_trial
from optuna_opplan._protocol import fail_trial
from optuna_opplan._protocol import finish_trial
from optuna_opplan._run import Record
from optuna_opplan._run import Step
from optuna_opplan._run import TrialRunner
from optuna_opplan._run import work_loop
from optuna_opplan.video._compute import Compute
from optuna_opplan.video._config import PlanConfig
from optuna_opplan.video._dataset import VideoDataset
from optuna_opplan.video._schedule import Schedule
from optuna_opplan.video._schedule_trainer import train_schedule
from optuna_opplan.video._setup import Splits
from optuna_opplan.video._setup import build_trainer_config

_logger = optuna.logging.get_logger("optuna.opplan")


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
    """Trains one hand-tuned schedule from scratch; the value is the final validation score
    (the only validation pass: a grid search needs no other), the test accuracy (multi-view),
    each test video's top-1 hit and the compute (see :mod:`._compute`, written after every
    epoch so a failed attempt keeps its cost) are recorded on the trial."""

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
        trial.storage.set_trial_system_attr(trial._trial_id, KEY_SCHEDULE, schedule.to_dict())

        def record(compute: Compute) -> None:
            trial.storage.set_trial_system_attr(trial._trial_id, KEY_COMPUTE, compute.to_dict())

        result = train_schedule(
            schedule,
            self.splits.train,
            config=self.trainer_config,
            val=self.splits.val,
            test=self.splits.test,
            validate="last",
            record=record,
        )
        trial.storage.set_trial_system_attr(
            trial._trial_id, KEY_TEST_ACCURACY, result.test_accuracy
        )
        trial.storage.set_trial_system_attr(
            trial._trial_id,
            KEY_TEST_CORRECT,
            {"videos": videos_fingerprint(self.splits.test), "correct": result.test_correct},
        )
        return float(result.history[-1]["val"])


def videos_fingerprint(test: VideoDataset) -> str:
    """A short hash of the test videos and their order: paired per-video hits must match."""
    blob = "\n".join(f"{entry.path} {entry.label}" for entry in test.entries)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_grid_worker(
    study: Study,
    objective: Callable[[optuna.Trial], float],
    *,
    max_retries: int = 2,
    max_deaths: int = DEFAULT_MAX_DEATHS,
    heartbeat_interval: float = 10.0,
    grace_period: float | None = None,
    poll_interval: float = 0.5,
    max_poll_interval: float = 10.0,
) -> int:
    """Claim waiting grid trials one at a time (atomically) until every one is finished.

    Runs them as :func:`~optuna_opplan.run_worker` runs transitions (the same
    :class:`~optuna_opplan._run.TrialRunner`): a running schedule sends heartbeats, and one
    whose worker went silent for ``grace_period`` seconds (default: 6 heartbeats) is failed
    and enqueued again, so a killed worker's schedule is not left RUNNING forever. A worker
    therefore waits while other workers' schedules run. A schedule whose objective raises
    is failed and enqueued again too, at most ``max_retries`` times per grid point; a schedule
    whose worker died (killed, preempted) at most ``max_deaths`` times, counted apart, as
    transitions' attempts are. A storage error is retried with backoff, then
    :class:`~optuna_opplan.StorageUnavailableError`; an outcome it held back is recorded
    once the storage is back.

    Returns:
        The number of grid trials this worker completed.
    """
    grace = 6.0 * heartbeat_interval if grace_period is None else grace_period
    if not grace > heartbeat_interval > 0:
        raise ValueError(
            "`grace_period` must be longer than a positive `heartbeat_interval`, but got "
            f"grace_period={grace_period!r}, heartbeat_interval={heartbeat_interval!r}."
        )
    check_budget("max_deaths", max_deaths)
    worker = _GridWorker(study, objective, max_retries, max_deaths)
    worker.runner = TrialRunner(
        study._storage,
        name=f"{socket.gethostname()}:{os.getpid()}:grid",
        heartbeat_interval=heartbeat_interval,
        grace=grace,
    )
    return work_loop(
        worker.runner,
        worker.scan,
        poll_interval=poll_interval,
        max_poll_interval=max_poll_interval,
    )


class _GridWorker:
    def __init__(
        self,
        study: Study,
        objective: Callable[[optuna.Trial], float],
        max_retries: int,
        max_deaths: int,
    ) -> None:
        self.study = study
        self.objective = objective
        self.max_retries = max_retries
        self.max_deaths = max_deaths
        self.runner: TrialRunner

    def scan(self) -> Step:
        storage = self.study._storage
        trials = storage.get_all_trials(self.study._study_id, deepcopy=False)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        failed = False
        for frozen, silent_for in self.runner.fail_stale(running):
            _logger.warning(
                f"Grid trial {frozen.number} had no heartbeat for {silent_for:.0f}s: "
                "failed it; it will be run again."
            )
            self._enqueue_again(frozen)
            failed = True
        if failed:
            return Step.AGAIN
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if not waiting and not running:
            return Step.FINISHED
        claimed = next((t for t in waiting if claim_trial(storage, t._trial_id)), None)
        if claimed is None:
            # Others' schedules still run: wait, to take over any whose worker dies.
            return Step.IDLE
        try:
            counted = self.runner.run(
                claimed._trial_id,
                f"grid trial {claimed.number}",
                functools.partial(self._run, claimed),
                functools.partial(self._errored, claimed),
            )
        except UpdateFinishedTrialError as exc:
            # Judged abandoned before its first heartbeat (a stalled machine): it is enqueued
            # again by whoever failed it, and this worker lives on to take work.
            _logger.warning(f"Grid trial {claimed.number} was failed meanwhile: {exc}")
            return Step.AGAIN
        return Step.RAN if counted else Step.AGAIN

    def _run(self, claimed: FrozenTrial) -> Record:
        trial = optuna.Trial(self.study, claimed._trial_id)
        try:
            value = self.objective(trial)
        except Exception as exc:
            _logger.warning(f"Grid trial {trial.number} failed: {exc!r}", exc_info=True)
            return self._errored(claimed, exc)
        return functools.partial(self._finish, trial, value)

    def _finish(self, trial: optuna.Trial, value: float) -> bool:
        if not finish_trial(self.study, trial, value):
            # Judged abandoned while it trained (a stalled machine): another worker reruns it.
            _logger.warning(f"Grid trial {trial.number} was failed meanwhile; discarded.")
            return False
        _logger.info(f"Grid trial {trial.number}: val {value:.4f}")
        return True

    def _errored(self, claimed: FrozenTrial, exc: BaseException) -> Record:
        def record() -> bool:
            reason = f"{type(exc).__name__}: {exc}"
            if fail_trial(self.study._storage, claimed._trial_id, OutcomeKind.ERROR, reason):
                self._enqueue_again(claimed)
            return False

        return record

    def _enqueue_again(self, failed: FrozenTrial) -> None:
        point = failed.system_attrs.get("fixed_params", {})
        attempts = Attempts.of(
            t
            for t in self.study._storage.get_all_trials(
                self.study._study_id, deepcopy=False, states=(TrialState.FAIL,)
            )
            if t.system_attrs.get("fixed_params", {}) == point
        )
        if attempts.exhausted(self.max_retries, self.max_deaths):
            reason = attempts.give_up_reason(self.max_retries, self.max_deaths)
            _logger.warning(f"Grid point {point} given up: {reason}.")
            return
        self.study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                system_attrs={
                    "fixed_params": point,
                    KEY_ATTEMPT: attempts.failures + attempts.deaths + 1,
                },
            )
        )
