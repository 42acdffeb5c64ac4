"""One cell of the evidence benchmark: a flavour (or a user's video set) and a seed.

A cell owns three Optuna studies in the run's storage (the planning, the grid, TPE +
Hyperband), runs whatever of them is unfinished, scores each method's pick on the test split
video by video, and summarises itself for the report.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import optuna
from optuna.trial import TrialState
import torch

from benchmarks._evidence_best import point_name
from benchmarks._evidence_data import ListSet
from benchmarks._evidence_data import build_splits
from benchmarks._evidence_data import dataset_section
from benchmarks._evidence_setting import Setting
from benchmarks._evidence_setting import study_attrs
from benchmarks._evidence_train import KEY_REPEAT_OF
from benchmarks._evidence_train import ScheduleObjective
from benchmarks._evidence_train import fail_interrupted
from benchmarks._evidence_train import model_path
from benchmarks._evidence_train import run_tpe
from optuna_opplan import get_plan
from optuna_opplan import run_worker
from optuna_opplan.video._checkpoint import CheckpointStore
from optuna_opplan.video._compare import planning_compute
from optuna_opplan.video._compute import study_compute
from optuna_opplan.video._config import PlanConfig
from optuna_opplan.video._grid import grid_search_space
from optuna_opplan.video._setup import Splits
from optuna_opplan.video._setup import artifact_path
from optuna_opplan.video._setup import build_planning
from optuna_opplan.video._setup import create_video_study
from optuna_opplan.video._trainer import Runner
from optuna_opplan.video._trainer import TrainerConfig
from optuna_opplan.video._trainer import TransitionTrainer

KEY_TEST = "evidence:test"
METHODS = ("planned", "grid", "tpe")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Cell:
    """One flavour and seed: its studies, data and models."""

    def __init__(
        self,
        setting: Setting,
        flavour: str,
        seed: int,
        workdir: str,
        storage: Any,
        videos: str | None = None,
        listset: ListSet | None = None,
    ):
        self.setting, self.flavour, self.seed = setting, flavour, seed
        self.listset = listset
        self.name = f"evidence-{flavour}-s{seed}"
        self.dir = os.path.join(workdir, self.name)
        self.storage = storage
        self.config = PlanConfig.from_dict(
            _plan_config(setting, flavour, seed, listset), base_dir=self.dir
        )
        self.trainer = TrainerConfig(
            model=setting.model,
            model_kwargs={"width_multiplier": setting.width},
            batch_size=setting.batch_size,
            num_workers=0,  # tiny videos: decoding in-process beats spawning loader workers
            device="cpu",
            seed=seed,
            progress=False,
            cpu_threads=1,
        )
        self.space = grid_search_space(self.config)
        self._splits: Splits | None = None
        self.cache = videos or os.path.join(workdir, "videos")

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = build_splits(
                self.setting, self.flavour, self.seed, self.cache, self.config, self.listset
            )
        return self._splits

    def planning(self) -> optuna.Study:
        return create_video_study(self.config, storage=self.storage, study_name=self.name)

    def grid(self) -> optuna.Study:
        study = optuna.create_study(
            storage=self.storage,
            study_name=f"{self.name}-grid",
            direction="maximize",
            sampler=optuna.samplers.GridSampler(self.space, seed=0),
            pruner=optuna.pruners.NopPruner(),
            load_if_exists=True,
        )
        return study

    def tpe(self) -> optuna.Study:
        return optuna.create_study(
            storage=self.storage,
            study_name=self.study_names()[2],
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=self.seed),
            pruner=optuna.pruners.HyperbandPruner(
                min_resource=self.setting.hyperband_min_resource,
                max_resource=max(self.setting.grid_epochs),
                reduction_factor=self.setting.hyperband_reduction,
            ),
            load_if_exists=True,
        )

    def objective(self, *, validate_every_epoch: bool) -> ScheduleObjective:
        return ScheduleObjective(
            self.space,
            self.splits,
            self.trainer,
            base_lr=self.setting.base_lr,
            models_dir=os.path.join(self.dir, "models"),
            validate_every_epoch=validate_every_epoch,
        )

    def done(self) -> bool:
        studies = {s.study_name: s for s in optuna.get_all_study_summaries(self.storage)}
        for name in self.study_names():
            if name not in studies:
                return False
        return all(KEY_TEST in _stored_attrs(self.storage, n) for n in self.study_names())

    def progress(self) -> str:
        """How far an unfinished cell got, from its studies."""
        names = {s.study_name for s in optuna.get_all_study_summaries(self.storage)}
        parts = []
        for label, name in zip(("planning", "grid", "TPE"), self.study_names()):
            if name not in names:
                parts.append(f"{label} not started")
                continue
            study = optuna.load_study(study_name=name, storage=self.storage)
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state == TrialState.COMPLETE for t in trials)
            if label == "planning":
                total = len(build_planning(self.config)[0].graph.transitions)
                parts.append(f"planning {done} of {total} transitions")
            elif label == "grid":
                parts.append(f"grid {done} of {len(trials)} schedules")
            else:
                parts.append(
                    f"TPE {len(trials)} trials ({study_compute(study).clip_frames:,} clip-frames)"
                )
        return "; ".join(parts)

    def study_names(self) -> tuple[str, str, str]:
        # "-tpe-unique": TPE that trains a schedule once (see run_tpe). The "-tpe" studies of
        # runs before it re-trained repeats; a storage that holds them keeps them, unused.
        # Hyperband's first rung names the study, so a run with another one is a study of its
        # own beside the first (the default of 1 epoch keeps its first name).
        rung = self.setting.hyperband_min_resource
        tpe = f"{self.name}-tpe-unique" + ("" if rung == 1 else f"-r{rung}")
        return (self.name, f"{self.name}-grid", tpe)

    def run(self, *, heartbeat: float, grace: float) -> None:
        planning = self.planning()
        total = len(build_planning(self.config)[0].graph.transitions)
        say(f"{self.name}: planning, {total} transitions")
        run_worker(
            planning,
            TransitionTrainer(
                self.splits.train,
                self.splits.val,
                artifact_path(self.config),
                config=self.trainer,
            ),
            heartbeat_interval=heartbeat,
            grace_period=grace,
            poll_interval=0.1,
            max_poll_interval=max(0.5, heartbeat),
        )
        budget = planning_compute(planning).clip_frames
        say(f"{self.name}: planned ({budget:,} clip-frames); grid")
        grid = self.grid()
        _enqueue_missing(grid, self.space)
        fail_interrupted(grid)
        objective = self.objective(validate_every_epoch=False)
        while True:
            waiting = grid.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if not waiting:
                break
            # A diverged schedule is a failed grid point (tried once more below), not a
            # failed run.
            grid.optimize(objective, n_trials=1, catch=(Exception,))
        grid_left = _enqueue_failed_again(grid)
        if grid_left:
            grid.optimize(objective, n_trials=grid_left, catch=(Exception,))
        say(f"{self.name}: grid done; TPE + Hyperband to {budget:,} clip-frames")
        run_tpe(self.tpe(), self.objective(validate_every_epoch=True), budget, log=say)
        for method, study in zip(METHODS, (planning, grid, self.tpe())):
            if KEY_TEST not in study_attrs(study):
                say(f"{self.name}: testing {method}")
                scores = self.test(method, study)
                study._storage.set_study_system_attr(study._study_id, KEY_TEST, scores)

    def test(self, method: str, study: optuna.Study) -> dict[str, Any]:
        """Per-video test scores of a method's pick: the plan's goal model, or the schedule
        with the best final validation score."""
        runner = Runner(self.trainer, len(self.splits.test.classes))
        model = runner.build_model()
        if method == "planned":
            plan = get_plan(study)
            number = plan.trials[-1]
            assert number is not None
            state = CheckpointStore(artifact_path(self.config)).load(study, number)
            if state is not None:
                model.load_state_dict(state)
            clip = int(plan.goal.params["clip_length"])
            sampling = str(plan.goal.params["sampling"])
            picked: dict[str, Any] = {"trial": number, "val": plan.score, "plan": plan.to_dict()}
        else:
            done = [
                t
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if KEY_REPEAT_OF not in t.system_attrs  # a repeat has no model of its own
            ]
            best = max(done, key=lambda t: (t.value, -t.number))
            path = model_path(os.path.join(self.dir, "models"), study, best.number)
            model.load_state_dict(torch.load(path))
            last = str(best.params["clip_schedule"]).split("-")[-1]
            clip, sampling = int(last), str(best.params["sampling"])
            picked = {"trial": best.number, "val": best.value, "params": best.params}
        view = self.splits.test.with_clip(clip_length=clip, sampling=sampling)
        correct: list[int] = []
        accuracy = runner.evaluate(model, view, per_video=correct)
        return {**picked, "correct": correct, "accuracy": accuracy}

    def summary(self) -> dict[str, Any]:
        """What the report needs from a finished cell."""
        planning, grid, tpe = (
            optuna.load_study(study_name=n, storage=self.storage) for n in self.study_names()
        )
        rows: dict[str, Any] = {}
        for method, study in zip(METHODS, (planning, grid, tpe)):
            rows[method] = {
                **study_attrs(study)[KEY_TEST],
                "compute": study_compute(study).to_dict(),
                "states": {
                    s.name: sum(1 for t in study.trials if t.state == s)
                    for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
                },
            }
        rows["tpe"]["repeats"] = sum(KEY_REPEAT_OF in t.system_attrs for t in tpe.trials)
        rows["grid"]["val_by_point"] = {
            point_name(t.params): t.value
            for t in grid.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        }
        return {"flavour": self.flavour, "seed": self.seed, **rows}


def _stored_attrs(storage: Any, name: str) -> dict[str, Any]:
    return storage.get_study_system_attrs(storage.get_study_id_from_name(name))


def _enqueue_missing(grid: optuna.Study, space: dict[str, list[Any]]) -> None:
    """Enqueue every grid point not yet in the study (a killed setup may have stopped half-way)."""
    present = {
        tuple(t.system_attrs.get("fixed_params", t.params).get(k) for k in space)
        for t in grid.get_trials(deepcopy=False)
    }
    for values in itertools.product(*space.values()):
        if values not in present:
            grid.enqueue_trial(dict(zip(space, values)))


def _enqueue_failed_again(grid: optuna.Study) -> int:
    """Enqueue again the grid points whose every attempt failed (killed runs); their count.

    A point is read from the trial's enqueued parameters: a run killed while the trial was
    being set up leaves only some of them suggested.
    """
    done = {
        point_name(t.params)
        for t in grid.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }
    again = {}
    for trial in grid.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        if point_name(params) not in done:
            again[point_name(params)] = params
    for params in again.values():
        grid.enqueue_trial(params)
    return len(again)


def _plan_config(
    setting: Setting, flavour: str, seed: int, listset: ListSet | None
) -> dict[str, Any]:
    return {
        "graph": {
            "preset": "extended",
            "clip_lengths": list(setting.clip_lengths),
            "learning_rates": list(setting.learning_rates),
            "samplings": list(setting.samplings),
        },
        "knee": {
            "rule": setting.knee_rule,
            "delay": setting.knee_delay,
            "max_epochs": setting.knee_max_epochs,
        },
        "dataset": dataset_section(setting, flavour, seed, listset),
        "model": {"name": setting.model, "width_multiplier": setting.width},
        "trainer": {"batch_size": setting.batch_size, "num_workers": 0, "seed": seed},
        "artifacts": {"path": "artifacts"},
        "grid": {
            "total_epochs": list(setting.grid_epochs),
            "decays": list(setting.decays),
            "samplings": list(setting.samplings),
            "base_lr": setting.base_lr,
        },
    }
