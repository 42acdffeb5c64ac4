"""Evidence: planned schedule vs the best hand-tuned grid schedule vs TPE + Hyperband.

For every bundled synthetic flavour and seed (a "cell") it runs, in one Optuna storage:

1. planning: the transition graph trained with the knee pruner and the DP (``run_worker``);
2. the grid baseline: every hand-tuned schedule of the paper's space (clip schedules x decays
   x samplings x epoch budgets), the best chosen by its final validation score;
3. what a user would pick instead: Optuna's ``TPESampler`` with ``HyperbandPruner`` (its first
   rung at the knee pruner's delay, so neither stops a run sooner) over the same schedule
   space, given exactly the planning's compute (clip-frames of training and
   validation, to the epoch), a schedule it proposes again after training it to the end told
   its first score instead of trained again (``run_tpe``);
4. the test split, scored video by video for the planned model, the best grid schedule and
   TPE's best schedule.

Test videos are the same in every seed, so comparisons are paired; the intervals are bootstrap
intervals over test videos and seeds (``paired_difference``, as ``opplan compare``).
Everything is an Optuna study in one journal file: kill the run and start the same command
again, it continues where it stopped (each cell is locked by the process running it, so two
instances share the cells).

Run from the repository root::

    nice -n 10 .venv/bin/python -m benchmarks.evidence          # the full run
    .venv/bin/python -m benchmarks.evidence --report-only      # rewrite the results file
    .venv/bin/python -m benchmarks.evidence --smoke --workdir /tmp/ev --results /tmp/ev
    .venv/bin/python -m benchmarks.evidence --train-list train.txt --test-list test.txt \
        --class-file classes.txt --name mine                     # your own videos instead
    .venv/bin/python -m benchmarks.evidence --seeds 0 1 2 3 4  # two more seeds: more cells

A video set of your own (mmaction2-style list files, read as ``opplan plan`` reads them)
replaces the bundled flavours; its run lives in ``benchmarks/.work/evidence-NAME`` and writes
its results there.

Results: ``benchmarks/results/evidence.md`` and ``evidence.json``, rewritten after every cell;
they say how many cells are finished and give numbers only for finished flavours.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from collections.abc import Sequence
import contextlib
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import replace
import fcntl
import os
import sys
import time
from typing import Any

import optuna
from optuna.trial import TrialState
import torch

from benchmarks import _evidence_report as report
from benchmarks._evidence_data import ListSet
from benchmarks._evidence_data import build_splits
from benchmarks._evidence_data import dataset_section
from benchmarks._evidence_train import KEY_REPEAT_OF
from benchmarks._evidence_train import ScheduleObjective
from benchmarks._evidence_train import fail_interrupted
from benchmarks._evidence_train import model_path
from benchmarks._evidence_train import run_tpe
from optuna_opplan import create_storage
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
from optuna_opplan.video.synthetic import FLAVOURS

HERE = os.path.dirname(os.path.abspath(__file__))
KEY_TEST = "evidence:test"
METHODS = ("planned", "grid", "tpe")


@dataclass(frozen=True)
class Setting:
    """Everything a run depends on; stored in the storage and checked on resume."""

    flavours: tuple[str, ...]
    seeds: tuple[int, ...]
    num_classes: int
    train_per_class: int  # the training list's videos; validation is carved from it
    test_per_class: int
    num_frames: tuple[int, int]
    size: int
    crop: int
    val_fraction: float
    clip_lengths: tuple[int, ...]
    learning_rates: tuple[float, ...]
    knee_rule: str
    knee_delay: int
    knee_max_epochs: int
    grid_epochs: tuple[int, ...]
    decays: tuple[str, ...]
    samplings: tuple[str, ...]
    base_lr: float
    model: str
    width: float
    batch_size: int
    num_test_clips: int
    hyperband_reduction: int
    # Hyperband's first rung, in epochs. The knee pruner never stops a transition before its
    # delay; Hyperband gets the same grace (with 1 it stopped motion's slow starters at 30-50%
    # validation before they rose).
    hyperband_min_resource: int

    def cells(self) -> list[tuple[str, int]]:
        """Flavour-major: a flavour's interval needs all its seeds, so a partial run reports
        whole flavours."""
        return [(f, s) for f in self.flavours for s in self.seeds]


FULL = Setting(
    flavours=FLAVOURS,
    seeds=(0, 1, 2),
    num_classes=6,  # valid for every flavour: "motion" wants an even count, "rhythm" 3k
    train_per_class=40,
    test_per_class=340,
    num_frames=(32, 48),
    size=32,
    crop=24,
    val_fraction=0.25,
    clip_lengths=(4, 8, 16),
    learning_rates=(0.1, 0.01, 0.001),
    knee_rule="improve",
    knee_delay=3,
    knee_max_epochs=8,
    grid_epochs=(4, 8, 12, 16),
    decays=("step", "cosine"),
    samplings=("consecutive", "uniform"),
    base_lr=0.1,
    model="c3d_small",
    width=0.5,
    batch_size=8,
    num_test_clips=2,
    hyperband_reduction=3,
    hyperband_min_resource=3,
)
SMOKE = replace(
    FULL,
    seeds=(0,),
    train_per_class=2,
    test_per_class=1,
    num_frames=(16, 16),
    val_fraction=0.5,
    clip_lengths=(2, 4),
    learning_rates=(0.05,),
    knee_delay=1,
    knee_max_epochs=2,
    hyperband_min_resource=1,
    grid_epochs=(2, 3),
    decays=("cosine",),
    width=0.25,
    batch_size=4,
    num_test_clips=1,
)


def _say(message: str) -> None:
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
        return all(KEY_TEST in _study_attrs(self.storage, n) for n in self.study_names())

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
        _say(f"{self.name}: planning, {total} transitions")
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
        _say(f"{self.name}: planned ({budget:,} clip-frames); grid")
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
        _say(f"{self.name}: grid done; TPE + Hyperband to {budget:,} clip-frames")
        run_tpe(self.tpe(), self.objective(validate_every_epoch=True), budget, log=_say)
        for method, study in zip(METHODS, (planning, grid, self.tpe())):
            if KEY_TEST not in _attrs(study):
                _say(f"{self.name}: testing {method}")
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
                **_attrs(study)[KEY_TEST],
                "compute": study_compute(study).to_dict(),
                "states": {
                    s.name: sum(1 for t in study.trials if t.state == s)
                    for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
                },
            }
        rows["tpe"]["repeats"] = sum(KEY_REPEAT_OF in t.system_attrs for t in tpe.trials)
        rows["grid"]["val_by_point"] = {
            _point(t.params): t.value
            for t in grid.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        }
        return {"flavour": self.flavour, "seed": self.seed, **rows}


def _point(params: dict[str, Any]) -> str:
    return (
        f"{params['sampling']} {params['clip_schedule']} {params['decay']} "
        f"{params['total_epochs']}ep"
    )


def _attrs(study: optuna.Study) -> dict[str, Any]:
    return study._storage.get_study_system_attrs(study._study_id)


def _study_attrs(storage: Any, name: str) -> dict[str, Any]:
    return storage.get_study_system_attrs(storage.get_study_id_from_name(name))


def _enqueue_missing(grid: optuna.Study, space: dict[str, list[Any]]) -> None:
    """Enqueue every grid point not yet in the study (a killed setup may have stopped half-way)."""
    import itertools

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
        _point(t.params) for t in grid.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }
    again = {}
    for trial in grid.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        if _point(params) not in done:
            again[_point(params)] = params
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


@contextlib.contextmanager
def _cell_lock(path: str) -> Iterator[bool]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_setting(
    storage: Any, setting: Setting, listset: ListSet | None, seeds: Sequence[int] | None
) -> Setting:
    """Store the setting once; refuse to resume a storage made with another one; the setting
    to run. Flavours and seeds may grow (cells are independent): a new flavour or seed adds
    cells, and seeds added once stay in the run (without ``seeds``, the stored ones). A user's
    video set must be the same files."""
    meta = optuna.create_study(storage=storage, study_name="evidence-setting", load_if_exists=True)
    attrs = _attrs(meta)
    videos = None if listset is None else report.jsonable(asdict(listset))
    if "setting" in attrs and attrs.get("list_set") != videos:
        bundled = "the bundled flavours"
        raise SystemExit(
            f"The storage holds a run on other videos ({attrs.get('list_set') or bundled}), "
            f"not {videos or bundled}: use another --workdir."
        )
    meta._storage.set_study_system_attr(meta._study_id, "list_set", videos)
    stored = attrs.get("setting")
    setting = replace(setting, seeds=tuple(seeds or (stored or {}).get("seeds") or setting.seeds))
    mine = report.jsonable(asdict(setting))
    if stored is not None:
        grows = ("flavours", "seeds")
        # Hyperband's first rung names the TPE studies (Cell.study_names): another one, or
        # none stored (a run from before it was a setting, which used 1), adds studies beside
        # the stored ones; it mixes nothing.
        renamed = ("hyperband_min_resource",)
        diffs = sorted(k for k in mine if k not in grows + renamed and stored.get(k) != mine[k])
        if diffs:
            raise SystemExit(
                f"The storage holds a run with another setting (differs in {', '.join(diffs)}): "
                "use another --workdir, or the setting it was started with."
            )
    meta._storage.set_study_system_attr(meta._study_id, "setting", mine)
    return setting


def _log_invocation(storage: Any, context: report.Context) -> list[dict[str, Any]]:
    """Append this invocation (command, date, commit, machine, load) to the storage's list,
    so the results name every commit and machine state the run went through; return it."""
    meta = optuna.load_study(storage=storage, study_name="evidence-setting")
    runs = list(_attrs(meta).get("invocations", [])) + [asdict(context)]
    meta._storage.set_study_system_attr(meta._study_id, "invocations", runs)
    return runs


def _write(
    setting: Setting,
    cells: list[Cell],
    context: report.Context,
    results: str,
    smoke: bool,
    storage: Any,
    listset: ListSet | None,
) -> str:
    meta = _attrs(optuna.load_study(storage=storage, study_name="evidence-setting"))
    return report.write(
        setting,
        cells,
        context,
        results,
        smoke=smoke,
        runs=meta.get("invocations", []),
        projection=meta.get("projection"),
        data_text=None if listset is None else listset.describe(setting, cells[0].splits),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny setting, for tests")
    parser.add_argument(
        "--workdir",
        help="the storage, models and generated videos (default: benchmarks/.work/evidence, "
        "with --train-list benchmarks/.work/evidence-NAME)",
    )
    parser.add_argument(
        "--results",
        help="default: benchmarks/results (--smoke or --train-list: the workdir)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="default: 0 1 2; more seeds add cells to a run (narrower intervals)",
    )
    own = parser.add_argument_group(
        "a video set of your own, in list files (replaces the bundled flavours)"
    )
    own.add_argument("--train-list", help="list file of training videos (path label per line)")
    own.add_argument("--test-list", help="list file of test videos")
    own.add_argument("--class-file", help="class names, one per line")
    own.add_argument("--root", help="folder list paths are relative to (default: the lists')")
    own.add_argument("--name", help="the set's name in the report (default: the root's)")
    own.add_argument("--flip", action="store_true", help="random horizontal flips in training")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--no-calibrate", action="store_true")
    parser.add_argument(
        "--calibrate-only", action="store_true", help="print the projected cost and stop"
    )
    parser.add_argument("--videos", help="where the generated videos go (default: workdir)")
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args(argv)
    setting = SMOKE if args.smoke else FULL
    listset = None
    if args.train_list:
        listset = ListSet.from_args(
            args.name, args.root, args.train_list, args.test_list, args.class_file, args.flip
        )
        setting = replace(setting, flavours=(listset.name,), num_classes=listset.num_classes())
    default = "evidence" if listset is None else f"evidence-{listset.name}"
    args.workdir = args.workdir or os.path.join(HERE, ".work", default)
    results = args.results or (
        args.workdir if args.smoke or listset else os.path.join(HERE, "results")
    )
    os.makedirs(args.workdir, exist_ok=True)
    storage = create_storage(os.path.join(args.workdir, "evidence.log"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setting = _check_setting(storage, setting, listset, args.seeds)
    context = report.Context.now(argv if argv is not None else sys.argv[1:])
    meta = optuna.load_study(storage=storage, study_name="evidence-setting")
    cells = [
        Cell(setting, f, s, args.workdir, storage, args.videos, listset)
        for f, s in setting.cells()
    ]
    if not args.report_only and not args.no_calibrate:
        projection: dict[str, Any] = {**report.project(cells[0], _say)}
        projection.update(at=context.started, load=context.load_at_start)
        meta._storage.set_study_system_attr(meta._study_id, "projection", projection)
        if args.calibrate_only:
            return 0
    if not args.report_only:
        _log_invocation(storage, context)
    if not args.report_only:
        for cell in cells:
            if cell.done():
                continue
            with _cell_lock(os.path.join(args.workdir, "locks", cell.name)) as mine:
                if not mine:
                    _say(f"{cell.name}: another process runs it; next cell")
                    continue
                started = time.monotonic()
                cell.run(heartbeat=args.heartbeat, grace=args.grace)
                _say(f"{cell.name}: done in {time.monotonic() - started:.0f}s")
            _write(setting, cells, context, results, args.smoke, storage, listset)
    path = _write(setting, cells, context, results, args.smoke, storage, listset)
    _say(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
