"""Replaying stopping rules on constant-lr segments: epochs trained and regret.

A rule is replayed on a segment epoch by epoch and yields an :data:`Outcome`: the epoch it stops
after and the epoch whose checkpoint it keeps. Metrics per rule over a set of segments: the
fraction of the segments' epochs trained, and the regret against the observed best (best score
in the segment, epoch 0 included, minus the kept epoch's score) and against a smoothed curve
(the same on a centred 5-epoch running mean, so that a lucky noisy epoch is not the only
yardstick).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.learning_curves import Segment

Outcome = tuple[int, int]  # (epoch stopped after, epoch kept)
Rule = Callable[[np.ndarray], Outcome]

PATIENCES: tuple[int, ...] = (2, 3, 5, 7, 10, 15, 20, 30)
EXTRA_PATIENCES: tuple[int, ...] = (0, 1)
"""Also on the frontier: stricter for short segments, where patience 2 already trains all."""


def patient_outcome(values: np.ndarray, patience: int) -> Outcome:
    """``PatientPruner(None, patience)`` fed epochs 1..n, keeping the best epoch seen.

    Optuna's rule (``optuna/pruners/_patient.py``, maximize, ``min_delta=0``): with the steps
    reported so far sorted, prune once there are more than ``patience + 1`` of them and the
    best score before the last ``patience + 1`` steps is greater than the best among them.
    ``tests`` and the benchmark check this against the real pruner.
    """
    last = len(values) - 1
    stop = last
    for n in range(patience + 2, last + 1):
        before = values[1 : n - patience]
        after = values[n - patience : n + 1]
        if np.nanmax(before) > np.nanmax(after):
            stop = n
            break
    return stop, int(np.nanargmax(values[: stop + 1]))


def replay(
    values: np.ndarray,
    decide: Callable[[np.ndarray], tuple[bool, int]],
    *,
    first: int = 1,
    stride: int = 1,
) -> Outcome:
    """Ask ``decide(values[: n + 1])`` after epochs ``first .. last`` until it stops.

    ``stride > 1`` asks only at every ``stride``-th epoch, then, once one stops, asks the
    skipped epochs before it in order and takes the first that stops: the exact answer when the
    rule, once it would stop, would still stop a few epochs later (true of every rule here in
    all but rare cases), at a fraction of the decisions.
    """
    last = len(values) - 1
    cache: dict[int, tuple[bool, int]] = {}

    def ask(n: int) -> tuple[bool, int]:
        if n not in cache:
            cache[n] = decide(values[: n + 1])
        return cache[n]

    checked = list(range(first, last + 1, stride))
    if not checked or checked[-1] != last:
        checked.append(last)
    prev = first - 1
    for n in checked:
        stop, keep = ask(n)
        if stop:
            for m in range(max(prev + 1, first), n):
                stop_m, keep_m = ask(m)
                if stop_m:
                    return m, keep_m
            return n, keep
        prev = n
    return last, ask(last)[1]


def smooth(values: np.ndarray, width: int = 5) -> np.ndarray:
    """Centred running mean, the window shrinking at the ends."""
    half = width // 2
    c = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(len(values))
    lo = np.maximum(idx - half, 0)
    hi = np.minimum(idx + half + 1, len(values))
    return (c[hi] - c[lo]) / (hi - lo)


@dataclass(frozen=True)
class Metrics:
    epochs: float  # fraction of the epochs trained, in [0, 1]
    regret: float
    regret_p90: float
    regret_smooth: float
    regret_smooth_p90: float
    n: int


def metrics(segments: Sequence[Segment], outcomes: Sequence[Outcome]) -> Metrics:
    trained = 0
    total = 0
    regret = []
    regret_s = []
    for seg, (stop, keep) in zip(segments, outcomes):
        v = seg.values
        trained += stop
        total += seg.epochs
        regret.append(seg.unit * (float(np.max(v)) - float(v[keep])))
        s = smooth(v)
        regret_s.append(seg.unit * (float(np.max(s)) - float(s[keep])))
    r = np.asarray(regret)
    rs = np.asarray(regret_s)
    return Metrics(
        trained / max(total, 1),
        float(np.mean(r)),
        float(np.quantile(r, 0.9)),
        float(np.mean(rs)),
        float(np.quantile(rs, 0.9)),
        len(r),
    )


def anchors(segments: Sequence[Segment]) -> list[tuple[float, float]]:
    """The two trivial rules' (epoch fraction, mean regret): train nothing, train everything.

    Both are achievable, and so is any mix of two achievable rules (a rule picked at random per
    segment), so joining them to the patience points defines the frontier at every epoch
    fraction without extrapolating a patience setting that does not exist.
    """
    nothing = metrics(segments, [(0, 0)] * len(segments))
    everything = metrics(segments, [(s.epochs, int(np.argmax(s.values))) for s in segments])
    return [(0.0, nothing.regret), (1.0, everything.regret)]


def _front(points: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    front: list[tuple[float, float]] = []
    for f, r in sorted(points):
        if not front or r < front[-1][1]:
            front.append((f, r))
    return np.array([p[0] for p in front]), np.array([p[1] for p in front])


def frontier_regret(points: Sequence[tuple[float, float]], epochs: float) -> float:
    """The frontier's regret at an epoch fraction: Pareto-optimal points joined linearly.

    ``points`` are (epoch fraction, mean regret) of the patience settings and the
    :func:`anchors`. Beyond the points' range the nearest end is used.
    """
    fs, rs = _front(points)
    return float(np.interp(epochs, fs, rs))


def frontier_epochs(points: Sequence[tuple[float, float]], regret: float) -> float:
    """The frontier's epoch fraction at a mean regret (the inverse of frontier_regret)."""
    fs, rs = _front(points)
    # Regret falls as epochs grow along the frontier: interpolate on the reversed arrays.
    return float(np.interp(regret, rs[::-1], fs[::-1]))
