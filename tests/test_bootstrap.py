from __future__ import annotations

import re

import numpy as np
import pytest

from optuna_opplan import Difference
from optuna_opplan import paired_difference


@pytest.mark.parametrize(
    ("first", "second", "points", "verdict"),
    [
        ([1, 0, 1, 0], [1, 0, 1, 0], 0.0, "no resolvable difference"),
        ([1] * 30, [0] * 30, 100.0, "better"),
        ([0] * 30, [1] * 30, -100.0, "worse"),
        # One video of 40 apart: a difference smaller than its interval is none.
        ([1] * 21 + [0] * 19, [1] * 20 + [0] * 20, 2.5, "no resolvable difference"),
    ],
)
def test_verdicts(first, second, points, verdict) -> None:
    difference = paired_difference(first, second, resamples=1000)
    assert difference.points == pytest.approx(points)
    assert difference.verdict == verdict
    low, high = difference.ci95
    assert low <= difference.points <= high
    assert difference.test_videos == len(first)


def test_the_interval_matches_the_normal_approximation_of_a_paired_difference() -> None:
    rng = np.random.default_rng(3)
    first = (rng.random(2000) < 0.80).astype(int)
    second = np.where(rng.random(2000) < 0.7, first, (rng.random(2000) < 0.76).astype(int))
    difference = paired_difference(first, second)
    d = first - second
    half = 1.96 * 100 * d.std(ddof=1) / np.sqrt(d.size)
    low, high = difference.ci95
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert (low + high) / 2 == pytest.approx(100 * d.mean(), abs=0.3)


def test_pairing_matters() -> None:
    # Both models right on the same half of the videos: no difference at all, exactly.
    same = [1, 0] * 50
    assert paired_difference(same, same).ci95 == (0.0, 0.0)
    # The same accuracies unpaired (right on opposite halves) are far less certain.
    opposite = [0, 1] * 50
    low, high = paired_difference(same, opposite).ci95
    assert high - low > 10


def test_seeded_and_pooled_over_seeds() -> None:
    rng = np.random.default_rng(0)
    runs = [(rng.random(300) < 0.7).astype(int).tolist() for _ in range(3)]
    base = [(rng.random(300) < 0.6).astype(int).tolist() for _ in range(3)]
    one = paired_difference(runs, base, seed=1)
    assert one == paired_difference(runs, base, seed=1)
    assert one != paired_difference(runs, base, seed=2)
    assert (one.seeds, one.test_videos) == (3, 900)
    means = [100 * (np.mean(a) - np.mean(b)) for a, b in zip(runs, base)]
    assert one.points == pytest.approx(np.mean(means))
    # Seeds may have different test sets.
    mixed = paired_difference([runs[0], runs[1][:100]], [base[0], base[1][:100]])
    assert mixed.test_videos == 400


def test_describe_and_dict() -> None:
    difference = Difference(points=1.5, ci95=(-0.5, 3.5), test_videos=40)
    assert difference.describe().endswith("no resolvable difference")
    assert "+1.50 points (95% CI -0.50 to +3.50" in difference.describe()
    assert difference.to_dict()["ci95"] == [-0.5, 3.5]
    assert Difference(points=-2, ci95=(-3, -1), test_videos=40).verdict == "worse"


@pytest.mark.parametrize(
    ("first", "second", "kwargs", "message"),
    [
        ([], [], {}, "`first` is empty"),
        ([1, 0], [1], {}, "the same videos"),
        ([[1, 0], [1]], [[1, 0]], {}, "the same number of seeds"),
        ([1, 2], [1, 0], {}, "scores in [0, 1]"),
        (["a"], [1], {}, "must hold numbers"),
        ("10", [1, 0], {}, "sequence of per-video scores"),
        ([1], [1], {"resamples": 10}, "`resamples` must be an int >= 100"),
        ([1], [1], {"confidence": 1.0}, "`confidence` must be in (0, 1)"),
    ],
)
def test_bad_input_is_named(first, second, kwargs, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        paired_difference(first, second, **kwargs)
