"""The two baselines of the evidence benchmark: the hand-tuned grid and TPE + Hyperband.

Both train hand-tuned schedules (clip schedule x decay x sampling x epoch budget, the paper's
grid space) with ``train_schedule``'s epoch loop (``ScheduleLoop``), and record their compute
after every pass as the planning trainer does (``video/_compute.py``). The grid runs every
point once and validates once, after its last epoch (all a grid search needs); TPE +
Hyperband validates after every epoch (its pruner needs the curve) and asks for schedules until
it has spent the planning's compute, to the epoch: an epoch (with its validation pass) that
would cross the budget is not trained, and the trial it belongs to ends pruned.
"""

from __future__ import annotations

from collections.abc import Callable
import os
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import torch

from optuna_opplan._protocol import KEY_COMPUTE
from optuna_opplan.video._compute import study_compute
from optuna_opplan.video._grid import schedule_of
from optuna_opplan.video._schedule_trainer import ScheduleLoop
from optuna_opplan.video._setup import Splits
from optuna_opplan.video._trainer import Runner
from optuna_opplan.video._trainer import TrainerConfig

KEY_STOPPED = "evidence:stopped"
KEY_REPEAT_OF = "evidence:repeat_of"
# TPE over a small categorical space proposes schedules it has tried; training is seeded, so a
# repeat would reproduce the first run to the digit. After this many repeats in a row the
# search has settled: what is left of the budget stays unspent.
MAX_REPEATS_IN_A_ROW = 100


def model_path(models_dir: str, study: optuna.Study, number: int) -> str:
    return os.path.join(models_dir, study.study_name, f"{number}.pt")


class ScheduleObjective:
    """Trains the schedule a trial suggests, reports validation per epoch, keeps the model.

    Args:
        space: The schedule space (as ``grid_search_space``).
        splits: The dataset splits.
        config: Training settings.
        base_lr: Starting learning rate of every schedule's decay.
        models_dir: Where the final model of a completed trial is saved.
        validate_every_epoch: Validate after every epoch and report it (for a pruner), or only
            after the last.
        budget_left: Called before each epoch with what the epoch and its validation pass
            will cost (clip-frames): :obj:`False` ends the trial there (pruned, marked as
            stopped by the budget). :obj:`None`: no budget.
    """

    def __init__(
        self,
        space: dict[str, list[Any]],
        splits: Splits,
        config: TrainerConfig,
        *,
        base_lr: float,
        models_dir: str,
        validate_every_epoch: bool,
        budget_left: Callable[[int], bool] | None = None,
    ) -> None:
        self.space = space
        self.splits = splits
        self.config = config
        self.base_lr = base_lr
        self.models_dir = models_dir
        self.validate_every_epoch = validate_every_epoch
        self.budget_left = budget_left

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The schedule ``trial`` asks for (the same answer on a second call)."""
        return {name: trial.suggest_categorical(name, list(c)) for name, c in self.space.items()}

    def __call__(self, trial: optuna.Trial) -> float:
        schedule = schedule_of(self.suggest(trial), self.base_lr)
        runner = Runner(self.config, len(self.splits.train.classes))
        loop = ScheduleLoop(runner, schedule, self.splits.train, self.splits.val)
        score = 0.0
        last = schedule.total_epochs
        for epoch in range(1, last + 1):
            validate = self.validate_every_epoch or epoch == last
            clip_length = schedule.stage_at(epoch).clip_length
            cost = (len(self.splits.train) + validate * len(self.splits.val)) * clip_length
            if self.budget_left is not None and not self.budget_left(cost):
                trial.storage.set_trial_system_attr(trial._trial_id, KEY_STOPPED, "budget")
                raise optuna.TrialPruned(f"compute budget reached before epoch {epoch}")
            row, _ = loop.run_epoch(epoch, validate=validate)
            if validate:
                score = row["val"]
                trial.report(score, epoch)
            # After every pass, so a failed or killed attempt keeps what it cost.
            trial.storage.set_trial_system_attr(trial._trial_id, KEY_COMPUTE, loop.meter.to_dict())
            if validate and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")
        path = model_path(self.models_dir, trial.study, trial.number)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(loop.model.state_dict(), path + ".tmp")
        os.replace(path + ".tmp", path)
        return score


def fail_interrupted(study: optuna.Study) -> list[FrozenTrial]:
    """Fail the trials a killed run left RUNNING (the caller holds the cell's lock, so no live
    process owns them) and return them."""
    left = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in left:
        study._storage.set_trial_system_attr(trial._trial_id, KEY_STOPPED, "interrupted")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return left


def _finished_run(study: optuna.Study, params: dict[str, Any]) -> FrozenTrial | None:
    """The first trial that trained ``params`` to the end, if any."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.params == params and KEY_REPEAT_OF not in trial.system_attrs:
            return trial
    return None


def run_tpe(
    study: optuna.Study,
    objective: ScheduleObjective,
    budget: float,
    *,
    log: Callable[[str], None],
) -> None:
    """Ask TPE for schedules until ``budget`` clip-frames (training and validation) are spent.

    A schedule TPE has already trained to the end is not trained again (Optuna's FAQ recipe
    for duplicated samples): the trial is told the first run's score, costs nothing and is
    marked with :data:`KEY_REPEAT_OF`. Training is seeded, so a second run would only repeat
    the first; in the first evidence run such repeats took 16-42 % of TPE's budget. A
    schedule that was pruned is tried again: Hyperband may give it more epochs this time.

    Resumable: an attempt a killed run left RUNNING is failed (its recorded passes stay
    counted, as a failed planning attempt's are) and its schedule asked for again.
    """
    for left in fail_interrupted(study):
        # Killed before TPE had suggested the whole schedule: nothing to repeat.
        if set(left.params) == set(objective.space):
            study.enqueue_trial(dict(left.params))
        log(f"  tpe trial {left.number} was interrupted: failed, its schedule asked for again")
    smallest = min(int(c) for s in objective.space["clip_schedule"] for c in str(s).split("-"))
    cheapest = (len(objective.splits.train) + len(objective.splits.val)) * smallest
    spent = [study_compute(study).clip_frames]
    stopped_on = study._storage.get_study_system_attrs(study._study_id).get(KEY_STOPPED)
    if stopped_on or any(t.system_attrs.get(KEY_STOPPED) == "budget" for t in study.trials):
        return

    def budget_left(cost: int) -> bool:
        if spent[0] + cost > budget:
            return False
        spent[0] += cost
        return True

    objective.budget_left = budget_left
    repeats = 0
    while spent[0] + cheapest <= budget:
        trial = study.ask()
        first = _finished_run(study, objective.suggest(trial))
        if first is not None:
            assert first.value is not None
            repeats += 1
            study._storage.set_trial_system_attr(trial._trial_id, KEY_REPEAT_OF, first.number)
            study.tell(trial, first.value)
            if repeats >= MAX_REPEATS_IN_A_ROW:
                study._storage.set_study_system_attr(study._study_id, KEY_STOPPED, "settled")
                log(f"  tpe proposed only schedules it had trained, {repeats} times in a row")
                return
            continue
        repeats = 0
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            if study._storage.get_trial(trial._trial_id).system_attrs.get(KEY_STOPPED):
                break
            continue
        except Exception as exc:  # a diverged schedule is a failed trial, not a failed run
            study.tell(trial, state=TrialState.FAIL)
            log(f"  tpe trial {trial.number} failed: {exc!r}")
            continue
        study.tell(trial, value)
        log(f"  tpe trial {trial.number}: val {value:.4f}, spent {spent[0]:.0f}/{budget:.0f}")
    else:
        # Less than the cheapest epoch is left: on record, so a rerun does not ask more.
        study._storage.set_study_system_attr(study._study_id, KEY_STOPPED, "budget")
