"""Where a stopping rule lies against Optuna's ``PatientPruner`` frontier on real curves.

``benchmarks.knee_rule`` replays every rule on every segment; this module turns the outcomes
into per-rule arrays (``Frame``), places a rule against the frontier that patience settings
trace in (epochs trained, regret) (``position``), resamples runs for 95% intervals
(``bootstrap``) and says whether a rule meets the issue's bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks import learning_curves as lc
from benchmarks import stopping_eval as se

BOOTSTRAP = 300
# A set's segments and, per segment, each rule's (stop epoch, kept epoch) or None.
Table = tuple[list[lc.Segment], list[dict[str, Any]]]


def patient_name(p: int) -> str:
    return f"PatientPruner({p})"


class Frame:
    """Per-rule arrays over a set's segments, so metrics on any resample are vectorised."""

    def __init__(self, table: Table) -> None:
        segments, outs = table
        self.segments = segments
        self.runs = np.array([s.run for s in segments])
        self.total = np.array([s.epochs for s in segments], dtype=float)
        smooth = [se.smooth(s.values) for s in segments]
        self.rules = list(dict.fromkeys(k for o in outs for k in o))
        self.has: dict[str, np.ndarray] = {}
        self.stop: dict[str, np.ndarray] = {}
        self.regret: dict[str, np.ndarray] = {}
        self.regret_s: dict[str, np.ndarray] = {}
        trivial: dict[str, list[Any]] = {
            "train nothing": [(0, 0)] * len(segments),
            "train everything": [(s.epochs, int(np.argmax(s.values))) for s in segments],
        }
        for rule in [*self.rules, *trivial]:
            got = trivial.get(rule) or [o.get(rule) for o in outs]
            self.has[rule] = np.array([g is not None for g in got])
            stop, reg, reg_s = [], [], []
            for seg, sm, g in zip(segments, smooth, got):
                st, keep = g if g is not None else (0, 0)
                stop.append(st)
                reg.append(seg.unit * (float(np.max(seg.values)) - float(seg.values[keep])))
                reg_s.append(seg.unit * (float(np.max(sm)) - float(sm[keep])))
            self.stop[rule] = np.array(stop, dtype=float)
            self.regret[rule] = np.array(reg)
            self.regret_s[rule] = np.array(reg_s)

    def metrics(self, rule: str, idx: np.ndarray) -> se.Metrics:
        r = self.regret[rule][idx]
        rs = self.regret_s[rule][idx]
        return se.Metrics(
            float(self.stop[rule][idx].sum() / self.total[idx].sum()),
            float(r.mean()),
            float(np.quantile(r, 0.9)),
            float(rs.mean()),
            float(np.quantile(rs, 0.9)),
            int(idx.size),
        )

    def subset(self, rule: str) -> np.ndarray:
        return np.flatnonzero(self.has[rule])


ISSUE_PATIENCES = se.PATIENCES
STRICT_PATIENCES = se.EXTRA_PATIENCES + se.PATIENCES


@dataclass(frozen=True)
class Position:
    """Where a rule lies against the frontier (on the segments it ran on)."""

    metrics: se.Metrics
    regret_gain: float  # frontier regret at the rule's epochs minus the rule's regret
    epoch_saving: float  # 1 - rule's epochs / frontier epochs at the rule's regret
    regret_in_range: bool  # the rule trains no fewer epochs than the shortest patience
    epochs_in_range: bool  # the rule's regret is no more than the shortest patience's


def position(
    frame: Frame, rule: str, idx: np.ndarray | None = None, patiences: Any = ISSUE_PATIENCES
) -> Position:
    if idx is None:
        idx = frame.subset(rule)
    patience = [
        (m.epochs, m.regret) for m in (frame.metrics(patient_name(p), idx) for p in patiences)
    ]
    pts = patience + [
        (m.epochs, m.regret)
        for m in (frame.metrics(r, idx) for r in ("train nothing", "train everything"))
    ]
    m = frame.metrics(rule, idx)
    fe = se.frontier_epochs(pts, m.regret)
    # Patience growing without bound is "train everything", so the frontier's line to that
    # point is patience's own; only the line to "train nothing" is not.
    lowest = min(patience)
    return Position(
        m,
        se.frontier_regret(pts, m.epochs) - m.regret,
        1.0 - m.epochs / fe if fe > 0 else 0.0,
        m.epochs >= lowest[0],
        m.regret <= lowest[1],
    )


def bootstrap(
    frame: Frame, rule: str, patiences: Any = ISSUE_PATIENCES, seed: int = 0
) -> tuple[Any, Any]:
    """95% intervals of the regret gain and the epoch saving, resampling runs."""
    idx = frame.subset(rule)
    rng = np.random.default_rng(seed)
    by_run: dict[int, list[int]] = {}
    for i in idx:
        by_run.setdefault(int(frame.runs[i]), []).append(int(i))
    groups = list(by_run.values())
    gains = []
    for _ in range(BOOTSTRAP):
        pick = np.array([i for g in rng.choice(len(groups), len(groups)) for i in groups[g]])
        p = position(frame, rule, pick, patiences)
        gains.append((p.regret_gain, p.epoch_saving))
    a = np.asarray(gains)
    lo = np.quantile(a, 0.025, axis=0)
    hi = np.quantile(a, 0.975, axis=0)
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def room(segments: Sequence[lc.Segment]) -> float:
    """Epochs an oracle needs: stop at the first epoch within 0.5 units of the segment's best."""
    trained = total = 0
    for s in segments:
        v = s.values * s.unit
        trained += int(np.argmax(v >= v.max() - 0.5))
        total += s.epochs
    return trained / total


def verdict(p: Position, reg_ci: tuple[float, float], ep_ci: tuple[float, float]) -> str:
    inside = reg_ci[0] > 0 or ep_ci[0] > 0
    outside = reg_ci[1] < 0 or ep_ci[1] < 0
    if inside and not outside:
        return "inside"
    if outside and not inside:
        return "outside"
    return "on it (no resolvable difference)"


def meets_issue_bar(frame: Frame, rule: str) -> bool:
    """The issue's bar: against the patience 2-30 frontier interpolated at the rule's point."""
    p = position(frame, rule)
    return p.regret_gain >= 0.5 or p.epoch_saving >= 0.15


def meets_strict_bar(frame: Frame, rule: str) -> bool:
    """The same bar against patience 0-30, counting only lines between patience settings."""
    p = position(frame, rule, patiences=STRICT_PATIENCES)
    return (p.regret_in_range and p.regret_gain >= 0.5) or (
        p.epochs_in_range and p.epoch_saving >= 0.15
    )
