"""``opplan demo``: the whole product on the bundled synthetic videos, on this machine.

It generates the synthetic "motion" benchmark once (real mp4 files, cached), plans a training
schedule for a small plain 3D CNN on it with the knee pruner and the DP, trains the hand-tuned
grid baseline (24 schedules, as the paper's grid crosses clip schedules, decays, samplings and
epoch budgets), and compares the two on the test split: accuracies, the difference with its
bootstrap interval, and the compute of each side. Storage is a local SQLite file; everything
lands in ``--workdir``. ``--simulate`` plans on simulated curves instead (seconds, no video).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._protocol import epochs_of
from optuna_opplan._pruner import KneePointPruner
from optuna_opplan._storage import create_storage
from optuna_opplan._study import create_planning_study
from optuna_opplan._study import get_plan
from optuna_opplan._worker import run_worker

DEMO_CONFIG = """\
# The embedded demo: small enough to plan and grid-search on 2 CPU cores in minutes, and
# still a model that learns (a plain 3D CNN on 20 x 20 crops of 32 x 32 videos).
[graph]
preset = "extended"
clip_lengths = [4, 8]
learning_rates = [0.1, 0.01]
samplings = ["consecutive", "uniform"]

[knee]
delay = 3
max_epochs = 8

[dataset]
synthetic = "motion"
cache_dir = "cache"
num_classes = 4
videos_per_class = 60
val_fraction = 0.25
frame_size = 32
min_frames = 32
max_frames = 48
crop_size = 20
scale_min = 22
scale_max = 26
eval_short_side = 22
# Off: a flip would swap left and right in a set whose classes are directions.
flip = false
num_test_clips = 3

[model]
name = "c3d_small"
width_multiplier = 0.5

[trainer]
batch_size = 8
num_workers = 2

[artifacts]
path = "artifacts"

[grid]
# The paper's grid crosses clip schedules, decays, samplings and epoch budgets: 24 here.
total_epochs = [6, 12, 18]
decays = ["step", "cosine"]
samplings = ["consecutive", "uniform"]
base_lr = 0.1
"""


def _say(message: str) -> None:
    print(message, flush=True)


def main(*, workdir: str | None = None, simulate: bool = False, seed: int = 0) -> int:
    """Run the demo; returns the exit code."""
    workdir = os.path.abspath(workdir or "opplan-demo")
    os.makedirs(workdir, exist_ok=True)
    # The journal file: measured faster than SQLite for workers' scans and claims
    # (benchmarks/results/storage_choice.md), safe with several processes, and
    # optuna-dashboard opens it by path.
    url = os.path.join(workdir, "opplan.log")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if simulate:
        return _simulated(url, seed)
    return _video(workdir, url)


def _simulated(url: str, seed: int) -> int:
    from optuna_opplan.simulation import SimulatedObjective

    name = f"demo-simulated-{int(time.time())}"
    graph = TransitionGraph.extended()
    study = create_planning_study(
        graph, storage=url, study_name=name, pruner=KneePointPruner(delay=10)
    )
    _say(f"storage: {url}")
    _say(f"study: {name}")
    started = time.monotonic()
    run_worker(study, SimulatedObjective(seed=seed), poll_interval=0.05)
    epochs = sum(epochs_of(t) for t in study.get_trials(states=(TrialState.COMPLETE,)))
    _say(
        f"planned {len(graph.transitions)} transitions ({epochs} simulated epochs) in "
        f"{time.monotonic() - started:.1f}s:"
    )
    _say(str(get_plan(study)))
    _say(f"dashboard: optuna-dashboard {url}")
    return 0


def _video(workdir: str, url: str) -> int:
    from optuna_opplan.video._config import PlanConfig

    config_path = os.path.join(workdir, "plan.toml")
    if not os.path.exists(config_path):
        with open(config_path, "w") as f:
            f.write(DEMO_CONFIG)
    config = PlanConfig.from_file(config_path)
    name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    run_end_to_end(config, url, name, figures_dir=os.path.join(workdir, "compare"))
    _say(f"storage: {url}")
    _say(f"study: {name}")
    _say(f"dashboard: optuna-dashboard {url}")
    _say(f"compare again: opplan compare --storage {url} --study-name {name}")
    return 0


def run_end_to_end(
    config: Any, url: str, name: str, *, figures_dir: str, say: Any = _say
) -> dict[str, Any]:
    """Generate data, plan, train the grid baseline and compare; returns the comparison
    (``opplan compare --json``'s content) plus wall times."""
    import optuna_opplan.video._compare as _compare
    import optuna_opplan.video._grid as _grid
    import optuna_opplan.video._setup as _setup

    started = time.monotonic()
    cache = config.path(config.section("dataset")["cache_dir"])
    say(f"[1/5] synthetic videos: generating (once) or reusing {cache} ...")
    splits = _setup.build_splits(config)
    say(
        f"      {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test "
        f"videos, {len(splits.train.classes)} classes ({time.monotonic() - started:.0f}s)"
    )
    study = _setup.create_video_study(config, storage=create_storage(url), study_name=name)
    grid = _grid.create_grid_study(study, config)
    say(f"storage: {url}")
    say(f"study: {name}")
    say(f"grid study: {grid.study_name}")
    graph = _setup.build_graph(config)
    say(
        f"[2/5] planning: {len(graph.transitions)} transitions on the {graph.rule_name} graph "
        f"(critical path {len(graph.critical_path())}); a line per epoch:"
    )
    trainer = _setup.build_trainer(config, splits)
    total = len(graph.transitions)

    def counted(trial: optuna.Trial) -> None:
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        say(f"  transition {done + 1}/{total} (trial {trial.number}), {_elapsed(started)}")
        trainer(trial)

    run_worker(study, counted, poll_interval=0.05, artifact_store=trainer.artifact_store)
    planning_seconds = time.monotonic() - started
    say(f"      planned in {_elapsed(started)}:\n{get_plan(study)}")
    say(f"[3/5] grid baseline: {len(grid.trials)} hand-tuned schedules, {_elapsed(started)}")
    _grid.run_grid_worker(grid, _grid.GridObjective(config, splits))
    grid_seconds = time.monotonic() - started - planning_seconds
    say(f"[4/5] compare on the test split (multi-view), {_elapsed(started)}")
    result = _compare.compare(study, grid, config, splits)
    figures = _compare.comparison_figures(result, figures_dir)
    _compare.publish_comparison(grid, result)
    say(_compare.comparison_table(result))
    say(f"figures: {figures['png']} {figures['html']}")
    say("[5/5] dashboard views")
    try:
        from optuna_opplan import dashboard

        dashboard.publish(study)
    except ImportError as exc:  # optuna-dashboard is an optional extra
        say(f"      skipped ({exc})")
    say(f"done in {_elapsed(started)}")
    return {
        **result,
        "wall_seconds": {"planning": planning_seconds, "grid": grid_seconds},
        "figures": figures,
    }


def _elapsed(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60}m{seconds % 60:02d}s"


if __name__ == "__main__":
    sys.exit(main())
