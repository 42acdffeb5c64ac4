"""The grid-search baseline's worker: every schedule trained once, none left behind."""

from __future__ import annotations

from collections import Counter
import itertools
import threading
import time
from typing import Any

import optuna
from optuna.exceptions import StorageInternalError
from optuna.trial import TrialState
import pytest

from optuna_opplan import _storage as storage_module
from optuna_opplan._protocol import KEY_ATTEMPT
from optuna_opplan._protocol import KEY_STALE
from optuna_opplan.video._grid import clip_schedules
from optuna_opplan.video._grid import run_grid_worker

SPACE = {"clip_schedule": ["8-16", "16"], "decay": ["step", "cosine"]}
POINTS = [dict(zip(SPACE, values)) for values in itertools.product(*SPACE.values())]
FAST = {"heartbeat_interval": 0.05, "grace_period": 0.5, "poll_interval": 0.01}


def _grid_study(storage: Any = None) -> optuna.Study:
    study = optuna.create_study(
        storage=storage, direction="maximize", sampler=optuna.samplers.GridSampler(SPACE)
    )
    for point in POINTS:
        study.enqueue_trial(point)
    return study


class Schedules:
    """A stand-in for GridObjective: records what it trained, fails on request."""

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.trained: Counter[str] = Counter()
        self.fail = dict(fail or {})
        self.lock = threading.Lock()

    def __call__(self, trial: optuna.Trial) -> float:
        params = {name: trial.suggest_categorical(name, c) for name, c in SPACE.items()}
        point = f"{params['clip_schedule']}/{params['decay']}"
        with self.lock:
            self.trained[point] += 1
            if self.fail.get(point, 0) > 0:
                self.fail[point] -= 1
                raise RuntimeError(f"loader died on {point}")
        return 0.5 + 0.1 * POINTS.index(params)


def _complete(study: optuna.Study) -> Counter[str]:
    return Counter(
        f"{t.params['clip_schedule']}/{t.params['decay']}"
        for t in study.get_trials(states=(TrialState.COMPLETE,))
    )


ALL = Counter(f"{p['clip_schedule']}/{p['decay']}" for p in POINTS)


def test_clip_schedules_are_the_paper_hand_tuned_ones() -> None:
    assert clip_schedules((16, 32, 64)) == ["16-64", "32-64", "16-32-64"]


def test_two_workers_train_every_schedule_once(tmp_path: Any) -> None:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "grid.log"))
    )
    study = _grid_study(storage)
    objective = Schedules()
    counts: list[int] = []
    threads = [
        threading.Thread(target=lambda: counts.append(run_grid_worker(study, objective, **FAST)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert objective.trained == ALL
    assert _complete(study) == ALL
    assert sum(counts) == len(POINTS)


@pytest.mark.parametrize(("failures", "completes"), [(1, True), (3, False)])
def test_a_failing_schedule_is_retried_a_bounded_number_of_times(
    failures: int, completes: bool
) -> None:
    study = _grid_study()
    objective = Schedules(fail={"16/step": failures})
    run_grid_worker(study, objective, max_retries=2, **FAST)
    attempts = [t for t in study.trials if t.params.get("clip_schedule") == "16"]
    attempts = [t for t in attempts if t.params.get("decay") == "step"]
    if completes:
        assert [t.state for t in attempts] == [TrialState.FAIL, TrialState.COMPLETE]
        assert _complete(study) == ALL
    else:
        # The first attempt and two retries fail: the point is given up, the others done.
        assert [t.state for t in attempts] == [TrialState.FAIL] * 3
        assert [t.system_attrs[KEY_ATTEMPT] for t in attempts[1:]] == [2, 3]
        assert _complete(study) == ALL - Counter({"16/step": 1})
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))


def test_a_dead_workers_schedule_is_taken_over() -> None:
    study = _grid_study()
    # A worker claimed the first schedule and died before its first heartbeat.
    dead = study.get_trials(states=(TrialState.WAITING,))[0]
    assert study._storage.set_trial_state_values(dead._trial_id, TrialState.RUNNING)
    objective = Schedules()
    assert run_grid_worker(study, objective, **FAST) == len(POINTS)
    abandoned = study._storage.get_trial(dead._trial_id)
    assert abandoned.state == TrialState.FAIL
    assert KEY_STALE in abandoned.system_attrs
    assert objective.trained == ALL, "the dead worker's schedule ran again, the others once"
    assert _complete(study) == ALL


@pytest.mark.parametrize(("max_deaths", "completes"), [(20, True), (3, False)])
def test_deaths_have_their_own_budget(max_deaths: int, completes: bool) -> None:
    study = _grid_study()
    # The first schedule's workers were killed 3 times already (more than max_retries=2),
    # and the worker of its 4th attempt died before its first heartbeat.
    first = study.get_trials(states=(TrialState.WAITING,))[0]
    point = first.system_attrs["fixed_params"]
    for _ in range(3):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.FAIL,
                system_attrs={"fixed_params": point, KEY_STALE: "observer"},
            )
        )
    assert study._storage.set_trial_state_values(first._trial_id, TrialState.RUNNING)
    objective = Schedules()
    run_grid_worker(study, objective, max_retries=2, max_deaths=max_deaths, **FAST)
    key = f"{point['clip_schedule']}/{point['decay']}"
    if completes:
        assert objective.trained == ALL
        assert _complete(study) == ALL
    else:
        assert objective.trained == ALL - Counter({key: 1}), "given up after 4 deaths"
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))


@pytest.mark.parametrize("max_deaths", [-1, 1.5, True])
def test_max_deaths_is_validated(max_deaths: Any) -> None:
    with pytest.raises(ValueError, match="`max_deaths` must be a non-negative int"):
        run_grid_worker(_grid_study(), Schedules(), max_deaths=max_deaths, **FAST)


def test_a_schedule_failed_as_abandoned_while_training_is_discarded() -> None:
    study = _grid_study()
    victim = study.get_trials(states=(TrialState.WAITING,))[0]
    inner = Schedules()

    def objective(trial: optuna.Trial) -> float:
        if trial._trial_id == victim._trial_id:
            # Another worker judged this one dead (a stalled machine) and failed it.
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            study.enqueue_trial(POINTS[0])
        return inner(trial)

    assert run_grid_worker(study, objective, **FAST) == len(POINTS)
    assert study._storage.get_trial(victim._trial_id).state == TrialState.FAIL
    assert _complete(study) == ALL


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heartbeat_interval": 0}, "positive `heartbeat_interval`"),
        ({"heartbeat_interval": 1.0, "grace_period": 1.0}, "grace_period=1.0"),
    ],
)
def test_arguments_are_validated(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_grid_worker(_grid_study(), Schedules(), **kwargs)


class _FlakyStorage(optuna.storages.InMemoryStorage):
    """Fails every trial call while an outage lasts, as a restarting database server does."""

    down_until = 0.0
    failed_calls = 0


def _failing_while_down(name: str) -> Any:
    method = getattr(optuna.storages.InMemoryStorage, name)

    def call(self: _FlakyStorage, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() < self.down_until:
            self.failed_calls += 1
            raise StorageInternalError("An exception is raised during the commit.")
        return method(self, *args, **kwargs)

    return call


for _name in (
    "get_all_trials",
    "get_trial",
    "set_trial_system_attr",
    "set_trial_state_values",
    "set_trial_param",
):
    setattr(_FlakyStorage, _name, _failing_while_down(_name))


def test_a_schedule_trained_through_a_storage_outage_is_recorded_not_retrained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The grid worker runs on the same runner as the planning worker: an outcome the outage
    # holds back keeps its heartbeat and is recorded once the storage is back, even though
    # the outage outlasts the grace period.
    monkeypatch.setattr(storage_module, "STORAGE_BACKOFF", 0.05)
    storage = _FlakyStorage()
    study = _grid_study(storage)
    inner = Schedules()
    victim = study.get_trials(states=(TrialState.WAITING,))[0]

    def objective(trial: optuna.Trial) -> float:
        value = inner(trial)
        if trial._trial_id == victim._trial_id:
            storage.down_until = time.monotonic() + 1.0
        return value

    assert run_grid_worker(study, objective, **FAST) == len(POINTS)
    assert storage.failed_calls > 0, "the outage must have hit the worker"
    assert inner.trained == ALL, "no schedule trained twice"
    assert _complete(study) == ALL
    recorded = study._storage.get_trial(victim._trial_id)
    assert recorded.state == TrialState.COMPLETE and KEY_STALE not in recorded.system_attrs
