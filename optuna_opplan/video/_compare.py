from __future__ import annotations

import os
from typing import Any

import optuna
from optuna.study import Study
from optuna.trial import TrialState

from optuna_opplan._checkpoint import load_checkpoint
from optuna_opplan._protocol import KEY_COMPUTE
from optuna_opplan._protocol import KEY_PLANNED_TEST
from optuna_opplan._protocol import KEY_SCHEDULE
from optuna_opplan._protocol import KEY_TEST_ACCURACY
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._protocol import epochs_of
from optuna_opplan._study import get_plan
from optuna_opplan.video._checkpoint import state_from_bytes
from optuna_opplan.video._config import PlanConfig
from optuna_opplan.video._setup import Splits
from optuna_opplan.video._setup import artifact_path
from optuna_opplan.video._setup import build_trainer_config
from optuna_opplan.video._trainer import Runner


def planning_compute(study: Study) -> dict[str, float]:
    """What planning cost: every epoch of every transition attempt, failed ones included.

    Compute is counted in clip-frame-epochs (epochs x clip length), the unit in which the
    grid search is counted too; seconds are those the trainer recorded.
    """
    clip_frame_epochs = 0.0
    epochs = 0
    seconds = cpu = 0.0
    for trial in study.get_trials(deepcopy=False):
        if KEY_TRANSITION not in trial.system_attrs or not trial.intermediate_values:
            continue
        n = epochs_of(trial)
        clip = float(trial.params.get("clip_length", 1))
        epochs += n
        clip_frame_epochs += n * clip
        record = trial.system_attrs.get(KEY_COMPUTE) or {}
        seconds += float(record.get("seconds", 0.0))
        cpu += float(record.get("cpu_seconds", 0.0))
    return {
        "clip_frame_epochs": clip_frame_epochs,
        "epochs": epochs,
        "seconds": seconds,
        "cpu_seconds": cpu,
    }


def planned_test_accuracy(study: Study, config: PlanConfig, splits: Splits) -> float:
    """Multi-view test accuracy of the planned model (the goal's kept checkpoint).

    Evaluated once and cached in the study: the test split is only touched after planning.
    """
    cached = study._storage.get_study_system_attrs(study._study_id).get(KEY_PLANNED_TEST)
    plan = get_plan(study)
    last_trial = plan.trials[-1]
    if isinstance(cached, dict) and cached.get("trial") == last_trial:
        return float(cached["accuracy"])
    assert last_trial is not None
    runner = Runner(build_trainer_config(config, progress=False), len(splits.test.classes))
    model = runner.build_model()
    data = load_checkpoint(study, last_trial, artifact_store=artifact_path(config))
    model.load_state_dict(state_from_bytes(data))
    goal = plan.goal.params
    view = splits.test.with_clip(
        clip_length=int(goal["clip_length"]), sampling=str(goal.get("sampling", "uniform"))
    )
    accuracy = runner.evaluate(model, view)
    study._storage.set_study_system_attr(
        study._study_id, KEY_PLANNED_TEST, {"trial": last_trial, "accuracy": accuracy}
    )
    return accuracy


def compare(planning: Study, grid: Study, config: PlanConfig, splits: Splits) -> dict[str, Any]:
    """Planned vs grid search from one run: test accuracy and compute of each, and the ratio.

    The best grid schedule is chosen by its validation score (as planning chooses by the
    validation split), and reported with its multi-view test accuracy.
    """
    plan = get_plan(planning)
    cost = planning_compute(planning)
    accuracy = planned_test_accuracy(planning, config, splits)
    completed = grid.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise RuntimeError(
            f"Grid study {grid.study_name!r} has no completed trial: run workers first."
        )
    best = max(completed, key=lambda t: (t.value, -t.number))
    grid_cost = {"clip_frame_epochs": 0.0, "epochs": 0, "seconds": 0.0, "cpu_seconds": 0.0}
    for trial in completed:
        record = trial.system_attrs.get(KEY_COMPUTE) or {}
        for key in grid_cost:
            grid_cost[key] += record.get(key, 0)
    best_compute = (best.system_attrs.get(KEY_COMPUTE) or {}).get("clip_frame_epochs", 0)
    ratio = (
        grid_cost["clip_frame_epochs"] / cost["clip_frame_epochs"]
        if cost["clip_frame_epochs"]
        else None
    )
    return {
        "planned": {
            "accuracy": accuracy,
            "compute": cost["clip_frame_epochs"],
            "epochs_trained": cost["epochs"],
            "cpu_seconds": cost["cpu_seconds"],
            "seconds": cost["seconds"],
            "val_score": plan.score,
            "schedule": plan.to_dict(),
        },
        "grid_best": {
            "accuracy": best.system_attrs.get(KEY_TEST_ACCURACY),
            "compute": best_compute,
            "val_score": best.value,
            "trial": best.number,
            "params": best.params,
            "schedule": best.system_attrs.get(KEY_SCHEDULE),
        },
        "grid_total": {**grid_cost, "trials": len(completed), "of": len(grid.trials)},
        "compute_ratio": ratio,
        "accuracy_gain": None
        if best.system_attrs.get(KEY_TEST_ACCURACY) is None
        else accuracy - float(best.system_attrs[KEY_TEST_ACCURACY]),
    }


def comparison_table(result: dict[str, Any]) -> str:
    """The comparison as a terminal table."""
    planned, best, total = result["planned"], result["grid_best"], result["grid_total"]
    rows = [
        ("", "planned", "best grid schedule", "whole grid"),
        ("test accuracy", f"{planned['accuracy']:.4f}", _fmt(best["accuracy"]), ""),
        ("val score", f"{planned['val_score']:.4f}", f"{best['val_score']:.4f}", ""),
        (
            "compute (clip-frame-epochs)",
            f"{planned['compute']:.0f}",
            f"{best['compute']:.0f}",
            f"{total['clip_frame_epochs']:.0f}",
        ),
        ("epochs", str(planned["epochs_trained"]), "", str(total["epochs"])),
        ("CPU/GPU seconds", f"{planned['cpu_seconds']:.0f}", "", f"{total['cpu_seconds']:.0f}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    ratio = result["compute_ratio"]
    lines.append(
        f"grid compute / planning compute: {ratio:.2f}x" if ratio else "compute ratio: n/a"
    )
    gain = result["accuracy_gain"]
    if gain is not None:
        lines.append(f"planned - best grid test accuracy: {gain * 100:+.2f} points")
    lines.append(f"best grid schedule: {best['params']}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


def comparison_figures(result: dict[str, Any], out_dir: str) -> dict[str, str]:
    """Write the comparison as PNG (matplotlib) and HTML (plotly); return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    labels = ["planned", "best grid", "whole grid"]
    accuracy = [result["planned"]["accuracy"], result["grid_best"]["accuracy"] or 0.0, None]
    compute = [
        result["planned"]["compute"],
        result["grid_best"]["compute"],
        result["grid_total"]["clip_frame_epochs"],
    ]
    paths = {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].bar(labels[:2], accuracy[:2], color=["#1f77b4", "#ff7f0e"])
    axes[0].set_title("Test accuracy (multi-view)")
    axes[0].set_ylim(0, 1)
    for i, v in enumerate(accuracy[:2]):
        axes[0].text(i, v + 0.02, f"{v:.3f}", ha="center")
    axes[1].bar(labels, compute, color=["#1f77b4", "#ff7f0e", "#bbbbbb"])
    axes[1].set_title("Compute (clip-frame-epochs)")
    for i, v in enumerate(compute):
        axes[1].text(i, v, f"{v:.0f}", ha="center", va="bottom")
    ratio = result["compute_ratio"]
    fig.suptitle(
        "Optimization planning vs grid search" + (f": grid costs {ratio:.1f}x" if ratio else "")
    )
    fig.tight_layout()
    paths["png"] = os.path.join(out_dir, "compare.png")
    fig.savefig(paths["png"], dpi=110)
    plt.close(fig)
    figure = comparison_plotly(result)
    paths["html"] = os.path.join(out_dir, "compare.html")
    figure.write_html(paths["html"], include_plotlyjs=True)
    return paths


def comparison_plotly(result: dict[str, Any]) -> Any:
    """The comparison as a plotly figure (for the HTML file and the dashboard)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Test accuracy", "Compute"))
    fig.add_trace(
        go.Bar(
            x=["planned", "best grid"],
            y=[result["planned"]["accuracy"], result["grid_best"]["accuracy"] or 0.0],
            name="accuracy",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=["planned", "best grid", "whole grid"],
            y=[
                result["planned"]["compute"],
                result["grid_best"]["compute"],
                result["grid_total"]["clip_frame_epochs"],
            ],
            name="clip-frame-epochs",
        ),
        row=1,
        col=2,
    )
    ratio = result["compute_ratio"]
    fig.update_layout(
        title="Planned vs grid search" + (f" (grid costs {ratio:.1f}x)" if ratio else ""),
        showlegend=False,
    )
    return fig


def publish_comparison(grid: Study, result: dict[str, Any]) -> None:
    """Put the comparison figure on the grid study's dashboard page."""
    try:
        from optuna_dashboard import save_plotly_graph_object
    except ImportError:  # the dashboard extra is optional
        return
    save_plotly_graph_object(grid, comparison_plotly(result))
    optuna.logging.get_logger("optuna.opplan").info("Comparison figure saved to the grid study.")
