"""Knee stopping rule vs Optuna's PatientPruner on real learning curves.

Run from the repository root: ``.venv/bin/python -m benchmarks.knee_rule [--out PATH]``.

Every constant-learning-rate segment (see ``load_segments``) is replayed epoch by epoch.
Per rule: the fraction of the segment's epochs trained, and the regret: the best accuracy in the
segment (epoch 0 included) minus the accuracy of the epoch the rule keeps. Regrets are in
accuracy points (percent).

- Knee rule: :func:`optuna_opplan._knee.knee_decision` after every epoch with
  ``max_epochs`` = the segment's length, for each delay, loss and keep rule.
- ``PatientPruner(None, patience)``: a real in-memory study, one trial per segment, reporting
  epochs 1..n and asking ``should_prune()``; it keeps the best observed epoch. (Wrapping
  ``NopPruner()`` instead of ``None`` would never prune: PatientPruner defers to the wrapped
  pruner once patience runs out.)
- "end": train the whole segment, keep the best epoch (regret 0 by definition).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import csv
from dataclasses import dataclass
import datetime
import multiprocessing
from pathlib import Path
import platform
import time
from typing import Any
import warnings

import numpy as np
import optuna

import optuna_opplan._knee as knee

DATA_DIR = Path("/work/shared/datasets/learning-curves")

# The ResNet runs' learning-rate drop shows in acc_29: 94% of the runs gain more than 2 points
# from acc_28 to acc_29, none from acc_30 to acc_31. So epochs 0..28 are the constant-lr
# segment, and the fine-tuning segment starts from acc_28's checkpoint.
RESNET_DROP = 28


@dataclass(frozen=True)
class Segment:
    dataset: str
    part: str
    lr: float
    values: np.ndarray  # values[0] is the epoch-0 point


def _read(name: str) -> tuple[list[dict[str, str]], list[str]]:
    with open(DATA_DIR / name, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, [k for k in rows[0] if k.startswith("acc_")]


def load_segments() -> list[Segment]:
    segments = []
    rows, keys = _read("deep_resnets_cifar10.csv")
    for row in rows:
        acc = np.array([float(row[k]) for k in keys])
        lr = float(row["lr"])
        segments.append(Segment("resnet", "scratch", lr, acc[: RESNET_DROP + 1]))
        segments.append(Segment("resnet", "finetune", lr, acc[RESNET_DROP:]))
    rows, keys = _read("metaqnn_cifar10.csv")
    for row in rows:
        acc = np.array([0.0] + [float(row[k]) for k in keys])
        segments.append(Segment("metaqnn", "whole", float(row["lr"]), acc))
    return segments


def noise_level(values: np.ndarray) -> float:
    """Epoch-to-epoch jitter: median absolute second difference over the series' second half."""
    tail = values[len(values) // 2 :]
    return float(np.median(np.abs(np.diff(tail, 2))))


DELAYS = (5, 7, 10, 15)
PATIENCES = (5, 7, 10, 15)
LOSSES = ("linear", "soft_l1")
CURVE = "exponential"

Outcome = tuple[int, int]  # (epochs trained, kept epoch)


def _knee_outcomes(values: np.ndarray) -> dict[str, Outcome]:
    # Fits depend on the prefix only, not on delay or keep: share them across settings while
    # still going through knee_decision itself.
    real_fit = knee.fit_knee
    cache: dict[tuple[int, str, str], knee.KneeFit] = {}

    def cached_fit(v: Any, *, curve: str = CURVE, loss: str = "linear") -> knee.KneeFit:
        key = (len(v), curve, loss)
        if key not in cache:
            cache[key] = real_fit(v, curve=curve, loss=loss)
        return cache[key]

    knee.fit_knee = cached_fit  # type: ignore[assignment]
    out: dict[str, Outcome] = {}
    last = len(values) - 1
    try:
        for loss in LOSSES:
            for delay in DELAYS:
                for keep in knee.KNEE_KEEP_RULES:
                    for n in range(1, last + 1):
                        d = knee.knee_decision(
                            values[: n + 1],
                            delay=delay,
                            max_epochs=last,
                            curve=CURVE,
                            keep=keep,
                            loss=loss,
                        )
                        if d.stop:
                            out[f"knee T={delay} {loss} keep={keep}"] = (n, d.keep_epoch)
                            break
    finally:
        knee.fit_knee = real_fit
    return out


def _patient_outcomes(values: np.ndarray) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    last = len(values) - 1
    for patience in PATIENCES:
        study = optuna.create_study(
            direction="maximize", pruner=optuna.pruners.PatientPruner(None, patience)
        )
        trial = study.ask()
        stop = last
        for n in range(1, last + 1):
            trial.report(float(values[n]), n)
            if trial.should_prune():
                stop = n
                break
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        out[f"PatientPruner({patience})"] = (stop, int(np.argmax(values[: stop + 1])))
    return out


def _evaluate(segment: Segment) -> dict[str, Outcome]:
    values = segment.values
    last = len(values) - 1
    out = {"end (keep best)": (last, int(np.argmax(values)))}
    out.update(_patient_outcomes(values))
    out.update(_knee_outcomes(values))
    return out


def _metrics(segments: list[Segment], outcomes: list[dict[str, Outcome]], rule: str) -> Any:
    frac = []
    regret = []
    for seg, out in zip(segments, outcomes):
        stop, keep = out[rule]
        frac.append(stop / (len(seg.values) - 1))
        regret.append(100 * (float(np.max(seg.values)) - float(seg.values[keep])))
    r = np.asarray(regret)
    return float(np.mean(frac)), float(np.mean(r)), float(np.median(r)), float(np.quantile(r, 0.9))


def _table(segments: list[Segment], outcomes: list[dict[str, Outcome]], rules: list[str]) -> str:
    patient = {r: _metrics(segments, outcomes, r)[:2] for r in rules if r.startswith("Patient")}
    lines = [
        "| rule | epochs trained | mean regret | median regret | p90 regret | dominated by |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for rule in rules:
        f, m, med, p90 = _metrics(segments, outcomes, rule)
        beaten = [
            p
            for p, (pf, pm) in patient.items()
            if p != rule and pf <= f and pm <= m and (pf < f or pm < m)
        ]
        lines.append(
            f"| {rule} | {100 * f:.2f}% | {m:.2f} | {med:.2f} | {p90:.2f} | "
            f"{', '.join(beaten) or '-'} |"
        )
    return "\n".join(lines)


def _noisy(part: str, cut: float) -> Callable[[Segment], bool]:
    return lambda s: s.part == part and noise_level(s.values) >= cut


def _groups(segments: list[Segment]) -> list[tuple[str, Callable[[Segment], bool]]]:
    groups: list[tuple[str, Callable[[Segment], bool]]] = [
        ("ResNet, epochs 0-28 from scratch", lambda s: s.part == "scratch"),
        ("ResNet, epochs 28-49 fine-tuning after the lr drop", lambda s: s.part == "finetune"),
        ("MetaQNN, epochs 0-20 (lr x0.2 every 5 epochs)", lambda s: s.dataset == "metaqnn"),
    ]
    for part in ("scratch", "whole"):
        levels = [noise_level(s.values) for s in segments if s.part == part]
        cut = float(np.quantile(levels, 2 / 3))
        name = "ResNet from scratch" if part == "scratch" else "MetaQNN"
        title = f"{name}, noisiest third (epoch-to-epoch jitter >= {100 * cut:.2f} points)"
        groups.append((title, _noisy(part, cut)))
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/knee_rule.md")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    segments = load_segments()
    start = time.perf_counter()
    with multiprocessing.Pool(args.processes) as pool:
        outcomes = pool.map(_evaluate, segments, chunksize=16)
    elapsed = time.perf_counter() - start

    rules = list(outcomes[0])
    sections = []
    for title, member in _groups(segments):
        idx = [i for i, s in enumerate(segments) if member(s)]
        segs = [segments[i] for i in idx]
        outs = [outcomes[i] for i in idx]
        sections.append(f"### {title} ({len(segs)} segments)\n\n{_table(segs, outs, rules)}\n")

    command = ".venv/bin/python -m benchmarks.knee_rule"
    header = (
        "# Knee stopping rule vs PatientPruner on real learning curves\n\n"
        f"Command: `{command}` (from the repository root; {elapsed:.0f} s with "
        f"{args.processes} processes)\n"
        f"Date: {datetime.date.today().isoformat()}. Machine: {platform.machine()}, "
        f"2 cores, CPU only, Python {platform.python_version()}, optuna {optuna.__version__}.\n"
        "Regrets in accuracy points. 'dominated by': PatientPruner settings that train no more\n"
        "epochs with no more regret (one of them strictly less).\n"
        "The paper's rule as written is `knee T=10 linear keep=knee`.\n"
    )
    text = header + "\n" + "\n".join(sections)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
