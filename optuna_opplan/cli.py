"""The ``opplan`` command: set up, run, inspect and compare planning studies.

Follows ``optuna``'s conventions: ``--storage`` (or the ``OPTUNA_STORAGE`` environment
variable), ``--study-name``, ``--help`` per subcommand, exit code 0 on success, 1 on errors
(printed as one line on stderr, with any storage password masked), 2 on bad usage.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import datetime
import importlib.util
import json
import os
import sys
from typing import Any

import optuna

from optuna_opplan._plan import GoalUnreachableError
from optuna_opplan._status import status_report
from optuna_opplan._storage import create_storage
from optuna_opplan._storage import redact
from optuna_opplan._storage import storage_label
from optuna_opplan._study import PlanIncompleteError
from optuna_opplan._study import get_plan
from optuna_opplan._study import get_progress
from optuna_opplan._study import load_planning_study
from optuna_opplan._worker import publish_views
from optuna_opplan._worker import run_worker


class CLIError(Exception):
    """An error to print as one line and exit with status 1."""


def _add_study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=os.environ.get("OPTUNA_STORAGE"),
        help="Storage URL (sqlite:///x.db, postgresql://...) or journal file path "
        "(x.log); defaults to $OPTUNA_STORAGE.",
    )
    parser.add_argument("--study-name", required=True, help="The planning study's name.")


def _load(args: argparse.Namespace) -> optuna.Study:
    """The existing planning study: a missing storage file is an error, never created."""
    if not args.storage:
        raise CLIError("--storage is required (or set OPTUNA_STORAGE).")
    try:
        storage = create_storage(args.storage, must_exist=True)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    try:
        return load_planning_study(study_name=args.study_name, storage=storage)
    except KeyError as exc:  # names the study, the storage and the studies it holds
        raise CLIError(str(exc)) from None


def _status(args: argparse.Namespace) -> int:
    study = _load(args)
    progress = get_progress(study)
    report = status_report(progress)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    counts = report["counts"]
    print(f"study: {study.study_name}   storage: {storage_label(args.storage)}")
    print("transitions: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for entry in report["running"]:
        print(
            f"  running  trial {entry['trial']}: {entry['transition']} "
            f"(epoch {entry['epoch']}, worker {entry['worker']})"
        )
    for entry in report["retrying"]:
        backoff = entry["backoff_seconds"]
        print(
            f"  retrying {entry['transition']}: {entry['failed']} of {entry['max_retries']} "
            f"retries after errors, {entry['died']} of {entry['max_deaths']} after deaths"
            + (f"; next attempt after a {backoff:g}s backoff" if backoff else "")
        )
    for entry in report["failed"]:
        print(f"  failed   {entry['transition']}: {entry['error']}")
    if report["unreachable"]:
        print(
            f"  ({report['unreachable']} transitions out of states the failures left "
            "unreachable were not trained)"
        )
    print("states (best incoming transition so far):")
    for entry in report["states"]:
        score = "-" if entry["best"] is None else f"{entry['best']:.4f}"
        print(f"  {entry['status']:<10} {score:>7}  {entry['state']}")
    left = report["critical_path_left"]
    print(f"critical path left: {left['transitions']} transitions", end="")
    if left["eta_seconds"] is not None:
        print(
            f", about {datetime.timedelta(seconds=round(left['eta_seconds']))} at the mean "
            f"transition time of {left['mean_seconds']:.0f}s",
            end="",
        )
    print()
    return 0


def _plan(args: argparse.Namespace) -> int:
    study = _load(args)
    try:
        plan = get_plan(study, partial=args.partial)
    except PlanIncompleteError:
        counts = {k: v for k, v in get_progress(study).counts().items() if v}
        raise CLIError(
            f"Study {study.study_name!r} has unfinished transitions ({counts}): run workers "
            "until they finish, or add --partial for the best plan so far."
        ) from None
    except GoalUnreachableError as exc:
        raise CLIError(str(exc)) from None
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(plan)
    if plan.failed:
        print(
            f"opplan: warning: the plan routes around {len(plan.failed)} failed transitions "
            f"({', '.join(k for k, _ in plan.failed)}); `opplan status` shows their errors.",
            file=sys.stderr,
        )
    publish_views(study)
    return 0


def _video() -> Any:
    # The video runtime needs torch and decord: imported only by the commands that train.
    # Public names of the video runtime's modules; the modules themselves are private.
    import optuna_opplan.video as video
    import optuna_opplan.video._compare as compare_mod
    import optuna_opplan.video._config as config_mod
    import optuna_opplan.video._grid as grid_mod
    import optuna_opplan.video._setup as setup_mod

    return video, config_mod, setup_mod, grid_mod, compare_mod


def _config_of(args: argparse.Namespace, study: optuna.Study | None = None) -> Any:
    _, config_mod, setup, _, _ = _video()
    config = None
    if getattr(args, "config", None):
        config = config_mod.PlanConfig.from_file(args.config)
    stored = setup.stored_config(study) if study is not None else None
    if config is None and stored is None:
        raise CLIError(
            f"Study {args.study_name!r} has no plan config: run `opplan init --config FILE`."
        )
    if config is not None and stored is not None:
        setup.attach_config(study, config)  # raises naming the differing keys
    return config or stored


def _init(args: argparse.Namespace) -> int:
    if not args.storage:
        raise CLIError("--storage is required (or set OPTUNA_STORAGE).")
    _, config_mod, setup, _, _ = _video()
    config = config_mod.PlanConfig.from_file(args.config)
    study = setup.create_video_study(
        config, storage=create_storage(args.storage), study_name=args.study_name
    )
    graph = study.sampler.graph
    print(f"storage: {storage_label(args.storage)}")
    print(f"study: {study.study_name}")
    print(f"graph: {graph} (critical path {len(graph.critical_path())} transitions)")
    print(f"config: {config.fingerprint()} stored; start workers with `opplan worker`.")
    return 0


def _worker(args: argparse.Namespace) -> int:
    rank = _rank_of_environment()
    if args.nproc_per_node is not None and args.nproc_per_node < 1:
        raise CLIError(f"--nproc-per-node must be >= 1, but got {args.nproc_per_node}.")
    if args.nproc_per_node is not None and args.grid_only:
        raise CLIError(
            "--grid-only trains the grid baseline's schedules, one process each: drop "
            "--nproc-per-node (or start several workers)."
        )
    if rank not in (None, 0) and args.grid_only:
        return 0  # under torchrun: the grid's schedules are single-process, rank 0's
    study = _load(args)
    if args.nproc_per_node is not None and rank is None:
        from optuna_opplan.video import launch

        code = launch(main, (args.argv,), nproc_per_node=args.nproc_per_node)
        if code:
            raise CLIError(
                f"a rank of the {args.nproc_per_node}-process worker failed (exit code {code}); "
                "its transition is retried: start the worker again."
            )
        return 0
    config = _config_of(args, study)
    _, _, setup, grid_mod, _ = _video()
    splits = setup.build_splits(config)
    if not args.grid_only:
        trainer = setup.build_trainer(config, splits)
        if rank is not None:
            from optuna_opplan.video import run_distributed_worker

            done = run_distributed_worker(
                study,
                trainer,
                timeout=args.collective_timeout,
                heartbeat_interval=args.heartbeat_interval,
            )
            if rank != 0:
                return 0  # the grid baseline's schedules are single-process: rank 0 takes them
        else:
            done = run_worker(
                study,
                trainer,
                heartbeat_interval=args.heartbeat_interval,
                artifact_store=trainer.artifact_store,
            )
        print(f"worker: trained {done} transitions; planning complete.")
    grid = grid_mod.load_grid_study(study, config)
    if grid is not None and not args.no_grid:
        objective = grid_mod.GridObjective(config, splits)
        planner = config.section("planner")
        done = grid_mod.run_grid_worker(
            grid,
            objective,
            max_retries=planner["max_retries"],
            max_deaths=planner["max_deaths"],
            heartbeat_interval=args.heartbeat_interval,
        )
        print(f"worker: trained {done} grid schedules.")
    return 0


def _rank_of_environment() -> int | None:
    # Set by `--nproc-per-node`'s launcher and by torchrun: this process is one rank.
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"])
    return None


def _grid_cmd(args: argparse.Namespace) -> int:
    study = _load(args)
    config = _config_of(args, study)
    _, _, _, grid_mod, _ = _video()
    grid = grid_mod.create_grid_study(study, config, study_name=args.grid_study_name)
    space = grid_mod.grid_search_space(config)
    print(f"grid study: {grid.study_name} ({len(grid.trials)} schedules: {space})")
    print("workers (`opplan worker`) train them after the planning transitions.")
    return 0


def _compare_cmd(args: argparse.Namespace) -> int:
    _, _, setup, grid_mod, compare_mod = _video()
    names = list(dict.fromkeys(args.study_name))
    results = []
    for name in names:
        study = _load(argparse.Namespace(**{**vars(args), "study_name": name}))
        config = _config_of(argparse.Namespace(**{**vars(args), "study_name": name}), study)
        grid = grid_mod.load_grid_study(study, config)
        if grid is None:
            raise CLIError(f"Study {name!r} has no grid study: run `opplan grid` first.")
        splits = setup.build_splits(config)
        result = compare_mod.compare(study, grid, config, splits, seed=args.bootstrap_seed)
        results.append(result)
    artifacts = setup.artifact_path(config)
    local = config.base_dir if artifacts.startswith("s3://") else artifacts
    out_dir = args.out or os.path.join(local, "compare")
    paths = compare_mod.comparison_figures(results[0], out_dir)
    compare_mod.publish_comparison(grid, results[0])
    pooled = None
    if len(results) > 1:
        try:
            pooled = compare_mod.combine(results, seed=args.bootstrap_seed)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    if args.json:
        print(json.dumps(_compare_json(results, pooled, paths), indent=2, default=str))
        return 0
    for name, result in zip(names, results):
        if len(results) > 1:
            print(f"== study {name}")
        print(compare_mod.comparison_table(result))
    if pooled is not None:
        print(f"== over {len(results)} studies (seeds): {pooled['text']}")
    print(f"figures: {paths['png']} {paths['html']}")
    return 0


def _compare_json(
    results: list[dict[str, Any]], pooled: dict[str, Any] | None, paths: dict[str, str]
) -> dict[str, Any]:
    def slim(result: dict[str, Any]) -> dict[str, Any]:
        difference = result["difference"]
        return {
            "planned": {k: result["planned"][k] for k in ("accuracy", "compute")},
            "grid_best": {
                "accuracy": result["grid_best"]["accuracy"],
                "compute": result["grid_best"]["compute"],
                "schedule": result["grid_best"]["params"],
            },
            "compute_ratio": result["compute_ratio"],
            "difference": None
            if difference is None
            else {k: difference[k] for k in ("points", "ci95", "test_videos")},
            "details": {k: v for k, v in result.items() if k != "per_video"},
        }

    if len(results) == 1:
        return {**slim(results[0]), "figures": paths}
    assert pooled is not None
    return {
        "difference": {k: pooled[k] for k in ("points", "ci95", "test_videos")},
        "seeds": pooled["seeds"],
        "studies": [slim(result) for result in results],
        "figures": paths,
    }


def _replay(args: argparse.Namespace) -> int:
    video, config_mod, setup, _, _ = _video()
    from optuna_opplan.video._schedule import Schedule
    from optuna_opplan.video._schedule_trainer import train_schedule

    with open(args.plan) as f:
        plan = json.load(f)
    config = config_mod.PlanConfig.from_file(args.config)
    if args.model:
        raw = config.to_dict()
        raw["model"]["name"] = args.model
        config = config_mod.PlanConfig.from_dict(raw, base_dir=config.base_dir)
    schedule = Schedule.from_plan(plan)
    splits = setup.build_splits(config)
    print(f"replaying {schedule} on {config.section('model')['name']}")
    result = train_schedule(
        schedule, splits.train, config=setup.build_trainer_config(config), test=splits.test
    )
    print(
        json.dumps(
            {
                "test_accuracy": result.test_accuracy,
                "compute": result.clip_frame_epochs,
                "cpu_seconds": result.cpu_seconds,
                "schedule": schedule.to_dict(),
            },
            indent=2,
        )
    )
    return 0


# The optional extras (pyproject.toml) and the modules that need them.
_EXTRAS = {
    **dict.fromkeys(("torch", "torchvision", "decord", "av"), "video"),
    **dict.fromkeys(("matplotlib", "plotly", "optuna_dashboard"), "dashboard"),
    **dict.fromkeys(("psycopg", "psycopg2"), "postgres"),
}


def _require(command: str, *modules: str) -> None:
    """Fail at once, naming the ``pip install`` that fixes it, if an optional extra that
    ``command`` needs is missing (rather than after minutes of work)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extras = ",".join(sorted({_EXTRAS[m] for m in missing}))
        raise CLIError(
            f"`opplan {command}` needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: "
            f"pip install 'optuna-opplan[{extras}]'"
        )


_VIDEO_MODULES = ("torch", "torchvision", "decord", "av")


def _demo(args: argparse.Namespace) -> int:
    if not args.simulate:
        _require("demo", *_VIDEO_MODULES, "matplotlib")
    from optuna_opplan import demo

    return demo.main(workdir=args.workdir, simulate=args.simulate, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opplan", description="Optimization planning for Optuna studies."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    status = sub.add_parser("status", help="Transitions done/running/ready/blocked, per state.")
    _add_study_args(status)
    status.add_argument("--json", action="store_true", help="Print JSON.")
    status.set_defaults(func=_status)

    plan = sub.add_parser("plan", help="The plan: states, hyper-parameters, epochs, score.")
    _add_study_args(plan)
    plan.add_argument("--json", action="store_true", help="Print JSON.")
    plan.add_argument(
        "--partial", action="store_true", help="The best plan so far, before all finished."
    )
    plan.set_defaults(func=_plan)

    init = sub.add_parser("init", help="Attach a plan config (TOML) to a new or existing study.")
    _add_study_args(init)
    init.add_argument("--config", required=True, help="The plan config (TOML).")
    init.set_defaults(func=_init)

    worker = sub.add_parser("worker", help="Train transitions until the plan is complete.")
    _add_study_args(worker)
    worker.add_argument("--config", help="Must equal the study's config if given.")
    worker.add_argument("--heartbeat-interval", type=float, default=10.0)
    worker.add_argument("--no-grid", action="store_true", help="Skip the grid baseline.")
    worker.add_argument("--grid-only", action="store_true", help="Only train grid schedules.")
    worker.add_argument(
        "--nproc-per-node",
        type=int,
        help="Train each transition with DistributedDataParallel over this many processes "
        "(one per GPU; gloo on CPU). Under torchrun, leave it out: each process is a rank.",
    )
    worker.add_argument(
        "--collective-timeout",
        type=float,
        default=1800.0,
        help="Seconds a rank waits for a silent one before the group is declared broken.",
    )
    worker.set_defaults(func=_worker)

    grid = sub.add_parser("grid", help="Create the hand-tuned grid-search baseline study.")
    _add_study_args(grid)
    grid.add_argument("--config", help="Must equal the study's config if given.")
    grid.add_argument("--grid-study-name", help="Default: <study-name>-grid.")
    grid.set_defaults(func=_grid_cmd)

    compare = sub.add_parser(
        "compare", help="Planned vs best grid schedule: accuracy with its interval, compute."
    )
    compare.add_argument(
        "--storage",
        default=os.environ.get("OPTUNA_STORAGE"),
        help="Storage URL or journal file path; defaults to $OPTUNA_STORAGE.",
    )
    compare.add_argument(
        "--study-name",
        required=True,
        nargs="+",
        help="The planning study's name; several (one per seed) pool their comparison: the "
        "interval then covers seeds and test videos.",
    )
    compare.add_argument(
        "--bootstrap-seed", type=int, default=0, help="Seed of the bootstrap resampling."
    )
    compare.add_argument("--json", action="store_true", help="Print JSON.")
    compare.add_argument("--out", help="Folder for compare.png and compare.html.")
    compare.set_defaults(func=_compare_cmd)

    replay = sub.add_parser("replay", help="Train a found plan on another model or dataset.")
    replay.add_argument("--plan", required=True, help="A plan JSON (`opplan plan --json`).")
    replay.add_argument("--config", required=True, help="Dataset, model and trainer settings.")
    replay.add_argument("--model", help="Override the config's model builder name.")
    replay.set_defaults(func=_replay)

    demo = sub.add_parser("demo", help="Everything on the bundled synthetic videos, locally.")
    demo.add_argument("--workdir", help="Where storage, artifacts and figures go.")
    demo.add_argument("--seed", type=int, default=0, help="Seed of the simulated curves.")
    demo.add_argument(
        "--simulate", action="store_true", help="Plan on simulated curves (seconds, no video)."
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``opplan`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except CLIError as exc:
        print(f"opplan: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line, password masked, instead of a traceback
        extra = _EXTRAS.get((getattr(exc, "name", None) or "").split(".")[0])
        if isinstance(exc, ModuleNotFoundError) and extra is not None:
            message = (
                f"`opplan {args.command}` needs {exc.name}, which is not installed: "
                f"pip install 'optuna-opplan[{extra}]'"
            )
        else:
            message = f"{type(exc).__name__}: {redact(str(exc))}"
        print(f"opplan: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
