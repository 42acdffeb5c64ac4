"""TPE + Hyperband's search loop in the evidence benchmark (benchmarks/_evidence_train.py):
its compute budget, its repeats and its resumption, with an objective that trains nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState
import pytest

from benchmarks import _evidence_train as train
from optuna_opplan._protocol import KEY_COMPUTE
from optuna_opplan.video._compute import Compute
from optuna_opplan.video._compute import study_compute

SPACE = {
    "clip_schedule": ["4-16"],
    "decay": ["step", "cosine"],
    "total_epochs": [2],
    "sampling": ["consecutive"],
}
EPOCH = 10  # clip-frames an epoch (with its validation pass) costs


class FakeObjective:
    """Spends ``EPOCH`` clip-frames an epoch through the budget, records them as the real
    objective does, and scores a schedule by its decay; ``prune`` names decays pruned after
    their first epoch the first time they are tried."""

    def __init__(self, prune: tuple[str, ...] = ()) -> None:
        self.space = SPACE
        # run_tpe's cheapest epoch, (1 + 0) videos x 4 frames, is under an epoch here.
        self.splits = SimpleNamespace(train=[0], val=[])
        self.budget_left: Callable[[int], bool] | None = None
        self.prune = set(prune)
        self.trained: Counter[str] = Counter()

    suggest = train.ScheduleObjective.suggest  # the real one: it only reads ``space``

    def __call__(self, trial: optuna.Trial) -> float:
        decay = self.suggest(trial)["decay"]  # type: ignore[arg-type]
        self.trained[decay] += 1
        compute = Compute()
        for epoch in (1, 2):
            assert self.budget_left is not None
            if not self.budget_left(EPOCH):
                trial.storage.set_trial_system_attr(trial._trial_id, train.KEY_STOPPED, "budget")
                raise optuna.TrialPruned("budget")
            compute.add_training(EPOCH, 1)
            trial.storage.set_trial_system_attr(trial._trial_id, KEY_COMPUTE, compute.to_dict())
            trial.report(0.5, epoch)
            if decay in self.prune:
                self.prune.discard(decay)
                raise optuna.TrialPruned("pruned")
        return {"step": 0.6, "cosine": 0.9}[decay]


def _study() -> optuna.Study:
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))


def _stopped(study: optuna.Study) -> str | None:
    return study._storage.get_study_system_attrs(study._study_id).get(train.KEY_STOPPED)


def _run(study: optuna.Study, objective: FakeObjective, budget: float) -> None:
    train.run_tpe(study, objective, budget, log=lambda _: None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prune", "trained"),
    [
        ((), {"step": 1, "cosine": 1}),
        # A pruned schedule is tried again (Hyperband may let it go further); once trained to
        # the end, it is not.
        (("cosine",), {"step": 1, "cosine": 2}),
    ],
)
def test_a_schedule_trained_to_the_end_is_not_trained_again(
    monkeypatch: pytest.MonkeyPatch, prune: tuple[str, ...], trained: dict[str, int]
) -> None:
    monkeypatch.setattr(train, "MAX_REPEATS_IN_A_ROW", 5)
    study, objective = _study(), FakeObjective(prune)
    _run(study, objective, budget=1_000)
    assert dict(objective.trained) == trained
    # Only trained epochs are spent: two a finished schedule, one a pruned attempt.
    assert study_compute(study).clip_frames == EPOCH * (2 * len(SPACE["decay"]) + len(prune))
    repeats = [t for t in study.trials if train.KEY_REPEAT_OF in t.system_attrs]
    assert len(repeats) == 5  # the search settled: every proposal a repeat
    assert _stopped(study) == "settled"
    for repeat in repeats:
        first = study.trials[repeat.system_attrs[train.KEY_REPEAT_OF]]
        assert first.state == TrialState.COMPLETE and train.KEY_REPEAT_OF not in first.system_attrs
        assert (repeat.params, repeat.value) == (first.params, first.value)
    # A settled search is not resumed.
    before = len(study.trials)
    _run(study, objective, budget=1_000)
    assert len(study.trials) == before


def test_the_budget_still_ends_the_search_to_the_epoch() -> None:
    study, objective = _study(), FakeObjective()
    _run(study, objective, budget=3 * EPOCH)
    # Two epochs of one schedule, one of the other: the fourth would cross the budget.
    assert study_compute(study).clip_frames == 3 * EPOCH
    assert study.trials[-1].system_attrs[train.KEY_STOPPED] == "budget"
    assert sum(objective.trained.values()) == 2


def test_a_budget_spent_between_two_schedules_ends_the_search_and_is_not_resumed() -> None:
    study, objective = _study(), FakeObjective()
    _run(study, objective, budget=2 * EPOCH)
    assert _stopped(study) == "budget"
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    _run(study, objective, budget=2 * EPOCH)
    assert len(study.trials) == 1
