from __future__ import annotations

from collections.abc import Sequence
import os
from typing import Any

import optuna
from optuna.study import Study
from optuna.trial import TrialState

from optuna_opplan._bootstrap import Difference
from optuna_opplan._bootstrap import paired_difference
from optuna_opplan._checkpoint import load_checkpoint
from optuna_opplan._protocol import KEY_PLANNED_TEST
from optuna_opplan._protocol import KEY_SCHEDULE
from optuna_opplan._protocol import KEY_TEST_ACCURACY
from optuna_opplan._protocol import KEY_TEST_CORRECT
from optuna_opplan._study import get_plan
from optuna_opplan.video._checkpoint import state_from_bytes
from optuna_opplan.video._compute import Compute
from optuna_opplan.video._compute import study_compute
from optuna_opplan.video._compute import total_compute
from optuna_opplan.video._config import PlanConfig
from optuna_opplan.video._grid import videos_fingerprint
from optuna_opplan.video._setup import Splits
from optuna_opplan.video._setup import artifact_path
from optuna_opplan.video._setup import build_trainer_config
from optuna_opplan.video._trainer import Runner


def planning_compute(study: Study) -> Compute:
    """What planning cost: every epoch and validation pass of every transition attempt,
    step-0 evaluations and failed or retried attempts included (see :mod:`._compute`)."""
    return study_compute(study)


def grid_compute(grid: Study) -> Compute:
    """What the grid search cost, counted like :func:`planning_compute`: every schedule
    attempt, failed ones included."""
    return study_compute(grid)


def planned_test(study: Study, config: PlanConfig, splits: Splits) -> dict[str, Any]:
    """Multi-view test result of the planned model (the goal's kept checkpoint):
    ``{"accuracy", "correct": per-video top-1 hits, "videos": fingerprint of the test list}``.

    Evaluated once and cached in the study: the test split is only touched after planning.
    """
    cached = study._storage.get_study_system_attrs(study._study_id).get(KEY_PLANNED_TEST)
    plan = get_plan(study)
    last_trial = plan.trials[-1]
    videos = videos_fingerprint(splits.test)
    if (
        isinstance(cached, dict)
        and cached.get("trial") == last_trial
        and cached.get("videos") == videos
        and cached.get("correct") is not None
    ):
        return cached
    assert last_trial is not None
    runner = Runner(build_trainer_config(config, progress=False), len(splits.test.classes))
    model = runner.build_model()
    data = load_checkpoint(study, last_trial, artifact_store=artifact_path(config))
    model.load_state_dict(state_from_bytes(data))
    goal = plan.goal.params
    view = splits.test.with_clip(
        clip_length=int(goal["clip_length"]), sampling=str(goal.get("sampling", "uniform"))
    )
    correct: list[int] = []
    accuracy = runner.evaluate(model, view, per_video=correct)
    result: dict[str, Any] = {
        "trial": last_trial,
        "accuracy": accuracy,
        "correct": correct,
        "videos": videos,
    }
    study._storage.set_study_system_attr(study._study_id, KEY_PLANNED_TEST, result)
    return result


def planned_test_accuracy(study: Study, config: PlanConfig, splits: Splits) -> float:
    """Multi-view test accuracy of the planned model (see :func:`planned_test`)."""
    return float(planned_test(study, config, splits)["accuracy"])


def compare(
    planning: Study,
    grid: Study,
    config: PlanConfig,
    splits: Splits,
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Planned vs grid search from one run: test accuracy and compute of each, the ratio, and
    the difference with its paired bootstrap interval over the test videos.

    The best grid schedule is chosen by its validation score (as planning chooses by the
    validation split), and reported with its multi-view test accuracy. Compute is in
    clip-frames (see :mod:`._compute`); ``compute_ratio`` is the whole grid's over planning's.
    ``difference`` is :obj:`None` when the best grid schedule has no per-video test record
    (trained before they were kept), with the reason in ``difference_note``.
    """
    plan = get_plan(planning)
    planned = planned_test(planning, config, splits)
    completed = grid.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise RuntimeError(
            f"Grid study {grid.study_name!r} has no completed trial: run workers first."
        )
    best = max(completed, key=lambda t: (t.value, -t.number))
    cost, grid_cost = planning_compute(planning), grid_compute(grid)
    best_cost = total_compute([best])
    grid_accuracy = best.system_attrs.get(KEY_TEST_ACCURACY)
    difference, note, per_video = None, "", None
    hits = best.system_attrs.get(KEY_TEST_CORRECT)
    if not isinstance(hits, dict) or hits.get("correct") is None:
        note = f"grid trial {best.number} has no per-video test record (an older version)"
    elif hits.get("videos") != planned["videos"]:
        note = f"grid trial {best.number} was tested on other videos than the planned model"
    else:
        per_video = {"planned": list(planned["correct"]), "grid_best": list(hits["correct"])}
        difference = paired_difference(
            per_video["planned"], per_video["grid_best"], resamples=resamples, seed=seed
        )
    return {
        "planned": {
            "accuracy": planned["accuracy"],
            "compute": cost.clip_frames,
            "epochs_trained": cost.train_epochs,
            "clip_frame_epochs": cost.clip_frame_epochs,
            "cpu_seconds": cost.cpu_seconds,
            "seconds": cost.seconds,
            "val_score": plan.score,
            "schedule": plan.to_dict(),
        },
        "grid_best": {
            "accuracy": grid_accuracy,
            "compute": best_cost.clip_frames,
            "clip_frame_epochs": best_cost.clip_frame_epochs,
            "val_score": best.value,
            "trial": best.number,
            "params": best.params,
            "schedule": best.system_attrs.get(KEY_SCHEDULE),
        },
        "grid_total": {
            **grid_cost.to_dict(),
            "epochs": grid_cost.train_epochs,
            "trials": len(completed),
            "of": len(grid.trials),
        },
        "compute": {"planning": cost.to_dict(), "grid": grid_cost.to_dict()},
        "compute_ratio": _ratio(grid_cost.clip_frames, cost.clip_frames),
        "seconds_ratio": _ratio(grid_cost.seconds, cost.seconds),
        "accuracy_gain": None
        if grid_accuracy is None
        else planned["accuracy"] - float(grid_accuracy),
        "difference": None if difference is None else _difference_dict(difference),
        "difference_note": note,
        "per_video": per_video,
    }


def combine(
    results: Sequence[dict[str, Any]], *, resamples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """The difference over several runs (seeds), each a :func:`compare` result: a bootstrap
    over seeds and, within each, over its test videos.

    Raises:
        ValueError: a result has no per-video test record (see ``difference_note``).
    """
    if not results:
        raise ValueError("`results` is empty: give at least one comparison.")
    missing = [r["difference_note"] for r in results if r.get("per_video") is None]
    if missing:
        raise ValueError("Cannot pool the comparisons: " + "; ".join(missing) + ".")
    difference = paired_difference(
        [r["per_video"]["planned"] for r in results],
        [r["per_video"]["grid_best"] for r in results],
        resamples=resamples,
        seed=seed,
    )
    return _difference_dict(difference)


def _difference_dict(difference: Difference) -> dict[str, Any]:
    # The contract's three keys first, then what a reader needs to judge them.
    return {**difference.to_dict(), "text": difference.describe()}


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def comparison_table(result: dict[str, Any]) -> str:
    """The comparison as a terminal table, with the difference and its interval."""
    planned, best, total = result["planned"], result["grid_best"], result["grid_total"]
    planning = result["compute"]["planning"]
    rows = [
        ("", "planned", "best grid schedule", "whole grid"),
        ("test accuracy", f"{planned['accuracy']:.4f}", _fmt(best["accuracy"]), ""),
        ("val score", f"{planned['val_score']:.4f}", f"{best['val_score']:.4f}", ""),
        (
            "compute (clip-frames, train + eval)",
            f"{planned['compute']:,}",
            f"{best['compute']:,}",
            f"{total['clip_frames']:,}",
        ),
        (
            "clip-frame-epochs (training)",
            f"{planned['clip_frame_epochs']:,}",
            f"{best['clip_frame_epochs']:,}",
            f"{total['clip_frame_epochs']:,}",
        ),
        ("epochs / validation passes", _passes(planning), "", _passes(total)),
        (
            "attempts (failed)",
            f"{planning['attempts']} ({planning['failed_attempts']})",
            "",
            f"{total['attempts']} ({total['failed_attempts']})",
        ),
        ("seconds", f"{planned['seconds']:.0f}", "", f"{total['seconds']:.0f}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    ratio, seconds = result["compute_ratio"], result.get("seconds_ratio")
    lines.append(
        (f"grid compute / planning compute: {ratio:.2f}x" if ratio else "compute ratio: n/a")
        + (f" (seconds: {seconds:.2f}x)" if seconds else "")
    )
    for name, data in (("planning", planning), ("grid", total)):
        if data.get("unrecorded_attempts"):
            lines.append(
                f"note: {data['unrecorded_attempts']} {name} attempts have no compute record: "
                "only their epochs are counted"
            )
    if result.get("difference") is not None:
        lines.append(result["difference"]["text"])
    elif result["accuracy_gain"] is not None:
        lines.append(
            f"planned - best grid test accuracy: {result['accuracy_gain'] * 100:+.2f} points "
            f"(no interval: {result.get('difference_note') or 'no per-video record'})"
        )
    lines.append(f"best grid schedule: {best['params']}")
    return "\n".join(lines)


def _short(difference: dict[str, Any]) -> str:
    low, high = difference["ci95"]
    verdict = (
        "no resolvable difference"
        if difference["verdict"] == "no resolvable difference"
        else f"planned {difference['verdict']}"
    )
    return (
        f"planned - best grid {difference['points']:+.1f} points, 95% CI {low:+.1f} to "
        f"{high:+.1f} over {difference['test_videos']} test videos: {verdict}"
    )


def _passes(compute: dict[str, Any]) -> str:
    return f"{compute['train_epochs']} / {compute['eval_passes']}"


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
        result["grid_total"]["clip_frames"],
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
    axes[1].set_title("Compute (clip-frames)")
    for i, v in enumerate(compute):
        axes[1].text(i, v, f"{v:.0f}", ha="center", va="bottom")
    ratio = result["compute_ratio"]
    difference = result.get("difference")
    fig.suptitle(
        "Optimization planning vs grid search"
        + (f": grid costs {ratio:.1f}x" if ratio else "")
        + ("" if difference is None else "\n" + _short(difference))
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
                result["grid_total"]["clip_frames"],
            ],
            name="clip-frames",
        ),
        row=1,
        col=2,
    )
    ratio = result["compute_ratio"]
    difference = result.get("difference")
    fig.update_layout(
        title="Planned vs grid search"
        + (f" (grid costs {ratio:.1f}x)" if ratio else "")
        + ("" if difference is None else f"<br>{_short(difference)}"),
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
