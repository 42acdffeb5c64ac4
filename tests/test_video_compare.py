"""The comparison's report: the table's interval line and pooling several seeds."""

from __future__ import annotations

from typing import Any

import pytest

from optuna_opplan.video._compare import combine
from optuna_opplan.video._compare import comparison_table
from optuna_opplan.video._compute import Compute


def _result(planned: list[int], grid: list[int], *, recorded: bool = True) -> dict[str, Any]:
    cost = Compute(train_epochs=4, train_clip_frames=400, eval_passes=5, eval_clip_frames=100)
    grid_cost = Compute(train_epochs=16, train_clip_frames=1600, eval_passes=2)
    accuracy = sum(planned) / len(planned)
    grid_accuracy = sum(grid) / len(grid)
    from optuna_opplan._bootstrap import paired_difference

    difference = paired_difference(planned, grid) if recorded else None
    return {
        "planned": {
            "accuracy": accuracy,
            "compute": cost.clip_frames,
            "clip_frame_epochs": 16,
            "seconds": 10.0,
            "val_score": 0.7,
        },
        "grid_best": {
            "accuracy": grid_accuracy,
            "compute": 800,
            "clip_frame_epochs": 32,
            "val_score": 0.6,
            "params": {"clip_schedule": "4-8"},
        },
        "grid_total": {**grid_cost.to_dict(), "epochs": 16},
        "compute": {"planning": cost.to_dict(), "grid": grid_cost.to_dict()},
        "compute_ratio": grid_cost.clip_frames / cost.clip_frames,
        "seconds_ratio": 3.0,
        "accuracy_gain": accuracy - grid_accuracy,
        "difference": None
        if difference is None
        else {**difference.to_dict(), "text": difference.describe()},
        "difference_note": "" if recorded else "grid trial 3 has no per-video record",
        "per_video": {"planned": planned, "grid_best": grid} if recorded else None,
    }


def test_the_table_prints_the_interval_and_the_verdict() -> None:
    table = comparison_table(_result([1, 1, 0, 1] * 10, [1, 0, 0, 1] * 10))
    assert "+25.00 points (95% CI" in table
    assert "paired bootstrap over 40 test videos" in table
    assert "grid compute / planning compute: 3.20x (seconds: 3.00x)" in table
    tie = comparison_table(_result([1, 0] * 20, [0, 1] * 20))
    assert tie.splitlines()[-2].endswith("no resolvable difference")


def test_without_per_video_records_the_table_says_why() -> None:
    table = comparison_table(_result([1, 0] * 20, [0, 0] * 20, recorded=False))
    assert "planned - best grid test accuracy: +50.00 points" in table
    assert "no interval: grid trial 3 has no per-video record" in table


def test_several_seeds_pool_over_seeds_and_videos() -> None:
    results = [_result([1, 1, 0, 1] * 10, [1, 0, 0, 1] * 10), _result([1] * 30, [0] * 30)]
    pooled = combine(results)
    assert (pooled["seeds"], pooled["test_videos"]) == (2, 70)
    assert pooled["points"] == pytest.approx((25 + 100) / 2)
    assert "x 2 seeds" in pooled["text"]
    with pytest.raises(ValueError, match="no per-video record"):
        combine([results[0], _result([1, 0], [1, 0], recorded=False)])
