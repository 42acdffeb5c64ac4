"""The paired bootstrap: how sure a difference in accuracy between two models is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_CHUNK = 500


@dataclass(frozen=True)
class Difference:
    """An accuracy difference with its bootstrap interval.

    Attributes:
        points: Mean accuracy of the first model minus that of the second, in accuracy points
            (percent): +2.5 means 2.5 points better.
        ci95: The percentile interval of ``points`` (95 % by default), low and high.
        test_videos: Paired test videos in all (summed over seeds).
        seeds: Independent runs the videos come from.
        confidence: The interval's coverage.
    """

    points: float
    ci95: tuple[float, float]
    test_videos: int
    seeds: int = 1
    confidence: float = 0.95

    @property
    def resolved(self) -> bool:
        """Whether the interval excludes 0: a difference smaller than its interval is none."""
        low, high = self.ci95
        return low > 0 or high < 0

    @property
    def verdict(self) -> str:
        """``"better"``, ``"worse"`` or ``"no resolvable difference"``."""
        if not self.resolved:
            return "no resolvable difference"
        return "better" if self.points > 0 else "worse"

    def describe(self, first: str = "planned", second: str = "best grid") -> str:
        """One line for a person, e.g. ``planned - best grid: +2.50 points (95% CI ...)``."""
        low, high = self.ci95
        runs = f" x {self.seeds} seeds" if self.seeds > 1 else ""
        line = (
            f"{first} - {second}: {self.points:+.2f} points "
            f"({self.confidence:.0%} CI {low:+.2f} to {high:+.2f}, paired bootstrap over "
            f"{self.test_videos} test videos{runs})"
        )
        if not self.resolved:
            return line + ": no resolvable difference"
        return line + f": {first} is {self.verdict}"

    def to_dict(self) -> dict[str, Any]:
        """``{"points", "ci95": [lo, hi], "test_videos", "seeds", "resolved", "verdict"}``."""
        return {
            "points": self.points,
            "ci95": [self.ci95[0], self.ci95[1]],
            "test_videos": self.test_videos,
            "seeds": self.seeds,
            "resolved": self.resolved,
            "verdict": self.verdict,
        }


def paired_difference(
    first: Sequence[Any],
    second: Sequence[Any],
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Difference:
    """Paired bootstrap interval of the accuracy difference ``first - second``.

    Each argument holds, per test video, whether the model got it right (1/0, or a score in
    [0, 1]); both models must be scored on the same videos in the same order. With several
    seeds (independent runs, each with its own pair of models), pass one such sequence per
    seed: the bootstrap then resamples seeds, and videos within each drawn seed, so the
    interval covers the run-to-run spread too. Seeds may have different test videos.

    The resampling is seeded: the same inputs give the same interval.

    Args:
        first: Per-video correctness of the first model (e.g. planned), or a list of those,
            one per seed.
        second: The same for the second model (e.g. the best grid schedule).
        resamples: Bootstrap resamples.
        confidence: Coverage of the percentile interval.
        seed: Seed of the resampling.

    Example:
        >>> planned = [1, 1, 0, 1, 1, 0, 1, 1]
        >>> grid = [1, 0, 0, 1, 1, 0, 1, 0]
        >>> d = paired_difference(planned, grid, resamples=2000)
        >>> d.points, d.test_videos
        (25.0, 8)
        >>> d.verdict
        'no resolvable difference'
    """
    runs_first, runs_second = _runs(first, "first"), _runs(second, "second")
    if len(runs_first) != len(runs_second):
        raise ValueError(
            f"`first` and `second` must hold the same number of seeds, but got "
            f"{len(runs_first)} and {len(runs_second)}."
        )
    for index, (a, b) in enumerate(zip(runs_first, runs_second)):
        if a.shape != b.shape:
            raise ValueError(
                f"Seed {index}: `first` scores {a.size} test videos and `second` {b.size}; a "
                "paired comparison needs both models scored on the same videos."
            )
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"`resamples` must be an int >= 100, but got resamples={resamples!r}.")
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), but got confidence={confidence!r}.")
    diffs = [a - b for a, b in zip(runs_first, runs_second)]
    # Every seed weighs the same, whatever its number of test videos.
    points = _clean(100.0 * float(np.mean([d.mean() for d in diffs])))
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        total = np.zeros(count)
        picks = rng.integers(0, len(diffs), (count, len(diffs))) if len(diffs) > 1 else None
        for slot in range(len(diffs)):
            for index, d in enumerate(diffs):
                # The resamples whose ``slot``-th drawn seed is ``index``.
                rows = (
                    np.arange(count) if picks is None else np.flatnonzero(picks[:, slot] == index)
                )
                if rows.size == 0:
                    continue
                videos = rng.integers(0, d.size, (rows.size, d.size))
                total[rows] += d[videos].mean(axis=1)
        means[start : start + count] = total / len(diffs)
    tail = (1 - confidence) / 2
    low, high = np.quantile(100.0 * means, [tail, 1 - tail])
    return Difference(
        points=points,
        ci95=(_clean(low), _clean(high)),
        test_videos=int(sum(d.size for d in diffs)),
        seeds=len(diffs),
        confidence=confidence,
    )


def _clean(value: float) -> float:
    # Percentiles of exact fractions: round away float noise such as 2.4999999999.
    return round(float(value), 9) + 0.0


def _runs(values: Sequence[Any], name: str) -> list[np.ndarray]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise ValueError(f"`{name}` must be a sequence of per-video scores, but got {values!r}.")
    if len(values) == 0:
        raise ValueError(f"`{name}` is empty: a comparison needs at least one test video.")
    nested = isinstance(values[0], (Sequence, np.ndarray)) and not isinstance(values[0], str)
    runs = list(values) if nested else [values]
    arrays = []
    for index, run in enumerate(runs):
        try:
            array = np.asarray(run, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(
                f"`{name}` seed {index} must hold numbers (1 right, 0 wrong), but got {run!r}."
            ) from None
        if array.ndim != 1 or array.size == 0:
            raise ValueError(
                f"`{name}` seed {index} must be a non-empty list of per-video scores."
            )
        if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
            raise ValueError(
                f"`{name}` seed {index} must hold scores in [0, 1] (1 right, 0 wrong)."
            )
        arrays.append(array)
    return arrays
