"""Stopping rules vs Optuna's PatientPruner frontier on five sets of real learning curves.

Run from the repository root::

    nice -n 10 .venv/bin/python -m benchmarks.knee_rule [--out PATH] [--processes 2]

Every constant-learning-rate segment of ``benchmarks.learning_curves`` is replayed epoch by
epoch (``benchmarks.stopping_eval``). Per rule and set: the fraction of the epochs trained, the
mean and p90 regret against the observed best and against a 5-epoch running mean. Rules:

- ``PatientPruner(p)``, p in 2, 3, 5, 7, 10, 15, 20, 30: Optuna's rule, replayed by a re-
  implementation that this benchmark checks against the real pruner (a study, one trial per
  segment) on the first segments of every set before it uses it. It keeps the best epoch seen.
- ``paper T=d``: the knee rule (``rule="paper"``, ``keep="best"``) at several delays, and the
  paper as written (``keep="knee"``) at T=10.
- ``improve ...``: the extrapolation rule (``rule="improve"``) at a few settings.

Every rule is capped at the segment's end. On AlexNet (500 evaluations) the paper and improve
rules are asked every 10th evaluation, then, once one stops, at the skipped evaluations before
it (``stopping_eval.replay``): exact unless a rule would stop at a skipped evaluation and not at
the next asked one; the paper rule, whose fits are slow at 500 points, runs on every 10th run
only. Time on a shared machine also made the MetaQNN sets (every 4th run) and AlexNet (every
2nd run) subsampled (``RUN_EVERY``). Outcomes are cached per set in
``benchmarks/.work/knee_rule/``, so an interrupted run resumes and a rerun only redoes the
tables; ``--fresh`` clears the cache.

The improve rule's setting is chosen by leave-one-set-out: for each set, the setting with the
best worst-case advantage over the frontier on the other four sets; the results say which
setting each held-out set got and how it did.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import datetime
import json
import multiprocessing
import os
from pathlib import Path
import shlex
import subprocess
import sys
import time
from typing import Any
import warnings

import numpy as np
import optuna

from benchmarks import learning_curves as lc
from benchmarks import stopping_eval as se
from benchmarks._env import load_average
from benchmarks._env import machine
from benchmarks._knee_frontier import BOOTSTRAP
from benchmarks._knee_frontier import ISSUE_PATIENCES
from benchmarks._knee_frontier import STRICT_PATIENCES
from benchmarks._knee_frontier import Frame
from benchmarks._knee_frontier import Table
from benchmarks._knee_frontier import bootstrap
from benchmarks._knee_frontier import meets_issue_bar
from benchmarks._knee_frontier import meets_strict_bar
from benchmarks._knee_frontier import patient_name
from benchmarks._knee_frontier import position
from benchmarks._knee_frontier import room
from benchmarks._knee_frontier import verdict
from optuna_opplan import _improvement as im
from optuna_opplan import _knee as knee
from optuna_opplan._knee_fit import KneeFit

CACHE = Path(__file__).parent / ".work" / "knee_rule"
PAPER_DELAYS = (5, 10, 15)
STRIDE_LONG = 10  # decision stride on segments of more than 100 epochs

# (threshold, noise_factor, delay); the first is KneePointPruner(rule="improve")'s default.
IMPROVE_SETTINGS: tuple[tuple[float, float, int], ...] = (
    (im.DEFAULT_THRESHOLD, im.DEFAULT_NOISE_FACTOR, im.DEFAULT_DELAY),
    (0.02, 1.0, 4),
    (0.03, 1.5, 4),
    (0.02, 1.5, 5),
)
PAPER_EVERY_LONG = 10  # the paper rule runs on every 10th AlexNet run (its fits are slow there)
# Runs kept per set, one in every k (the machine this ran on was shared by many jobs): all
# ResNet and LSTM runs, every 4th MetaQNN run (still 1,000 / 1,300 segments), every 2nd AlexNet.
RUN_EVERY = {"metaqnn_cifar10": 4, "metaqnn_svhn": 4, "alexnet_imagenet": 2}


def improve_name(threshold: float, noise_factor: float, delay: int) -> str:
    return f"improve p<{threshold:g} noise x{noise_factor:g} T={delay}"


def _stride(values: np.ndarray) -> int:
    return STRIDE_LONG if len(values) > 101 else 1


def _paper_outcomes(values: np.ndarray) -> dict[str, se.Outcome]:
    last = len(values) - 1
    fits: dict[int, KneeFit] = {}
    real_fit = knee.fit_knee

    def cached_fit(v: Any, *, curve: str = "exponential", loss: str = "linear") -> Any:
        if len(v) not in fits:
            fits[len(v)] = real_fit(v, curve=curve, loss=loss)
        return fits[len(v)]

    out: dict[str, se.Outcome] = {}
    knee.fit_knee = cached_fit  # type: ignore[assignment]
    try:
        for delay, keep in [(d, "best") for d in PAPER_DELAYS] + [(10, "knee")]:

            def decide(v: np.ndarray, delay: int = delay, keep: str = keep) -> tuple[bool, int]:
                d = knee.knee_decision(v, delay=delay, max_epochs=last, keep=keep)
                return d.stop, d.keep_epoch

            name = f"paper T={delay}" + (" keep=knee (as written)" if keep == "knee" else "")
            out[name] = se.replay(values, decide, first=1, stride=_stride(values))
    finally:
        knee.fit_knee = real_fit
    return out


def _improve_outcomes(values: np.ndarray) -> dict[str, se.Outcome]:
    last = len(values) - 1
    out: dict[str, se.Outcome] = {}
    for threshold, noise_factor, delay in IMPROVE_SETTINGS:

        def decide(
            v: np.ndarray, t: float = threshold, f: float = noise_factor, d: int = delay
        ) -> Any:
            dec = im.improve_decision(v, delay=d, max_epochs=last, threshold=t, noise_factor=f)
            return dec.stop, dec.keep_epoch

        name = improve_name(threshold, noise_factor, delay)
        out[name] = se.replay(values, decide, first=1, stride=_stride(values))
    return out


def _evaluate(job: tuple[np.ndarray, bool]) -> dict[str, se.Outcome]:
    values, paper = job
    out = {
        patient_name(p): se.patient_outcome(values, p) for p in se.EXTRA_PATIENCES + se.PATIENCES
    }
    out.update(_improve_outcomes(values))
    if paper:
        out.update(_paper_outcomes(values))
    return out


def _check_patience(segments: Sequence[lc.Segment], n: int = 30) -> None:
    # The replay must decide exactly as optuna's PatientPruner does.
    for seg in segments[:n]:
        v = seg.values
        for p in se.EXTRA_PATIENCES + se.PATIENCES:
            study = optuna.create_study(
                direction="maximize", pruner=optuna.pruners.PatientPruner(None, p)
            )
            trial = study.ask()
            stop = len(v) - 1
            for epoch in range(1, len(v)):
                trial.report(float(v[epoch]), epoch)
                if trial.should_prune():
                    stop = epoch
                    break
            if stop != se.patient_outcome(v, p)[0]:
                raise AssertionError(f"PatientPruner({p}) replay differs on {seg}")


def outcomes_for(
    name: str, processes: int, limit: int | None = None, redo_improve: bool = False
) -> Table:
    """All rules' outcomes on one set, from the cache when it has them (``redo_improve``:
    all but the improve rule's, which are recomputed, as after a change to that rule)."""
    every = RUN_EVERY.get(name, 1)
    segments = [s for s in lc.load(name) if s.run % every == 0][:limit]
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / (f"{name}.json" if limit is None else f"{name}-first{limit}.json")
    if path.exists():
        cached = json.loads(path.read_text())
        if len(cached) == len(segments):
            if redo_improve:
                with multiprocessing.Pool(processes) as pool:
                    fresh = pool.map(_improve_outcomes, [s.values for s in segments], chunksize=8)
                for old, new in zip(cached, fresh):
                    old.update({k: list(v) for k, v in new.items()})
                path.write_text(json.dumps(cached))
            return segments, [{k: tuple(v) for k, v in o.items()} for o in cached]
    _check_patience(segments)
    jobs = [(s.values, s.epochs <= 100 or s.run % PAPER_EVERY_LONG == 0) for s in segments]
    with multiprocessing.Pool(processes) as pool:
        outs = pool.map(_evaluate, jobs, chunksize=8)
    path.write_text(json.dumps(outs))
    return segments, outs


def loso(frames: dict[str, Frame]) -> list[str]:
    """Leave-one-set-out choice of the improve setting; one line per held-out set.

    The criterion is unit-free: the mean, over the other sets, of the epoch saving at equal
    regret against the issue's frontier (positive inside it).
    """
    names = [improve_name(*s) for s in IMPROVE_SETTINGS]
    saving = {(s, r): position(frames[s], r).epoch_saving for s in frames for r in names}
    lines = [
        "| held-out set | setting chosen on the other sets | its epoch saving on the held-out "
        "set | the default's |",
        "| --- | --- | ---: | ---: |",
    ]
    for held in frames:
        others = [s for s in frames if s != held]
        if not others:
            continue
        best = max(names, key=lambda r: float(np.mean([saving[(s, r)] for s in others])))
        lines.append(
            f"| {held} | {best} | {100 * saving[(held, best)]:+.1f}% | "
            f"{100 * saving[(held, names[0])]:+.1f}% |"
        )
    overall = max(names, key=lambda r: float(np.mean([saving[(s, r)] for s in frames])))
    lines += ["", f"On all sets together the same criterion picks: {overall}."]
    return lines


def decision_time() -> list[str]:
    """CPU time per decision at 200 points, improve and paper rules (median of 30 calls)."""
    rng = np.random.default_rng(0)
    t = np.arange(201)
    lines = []
    rules: list[tuple[str, Any]] = [
        ("improve (default settings)", lambda v: im.improve_decision(v, max_epochs=400)),
        ("paper T=10", lambda v: knee.knee_decision(v, delay=10, max_epochs=400)),
    ]
    for label, fn in rules:
        times = []
        for i in range(30):
            v = 0.8 - 0.7 * np.exp(-t / (20 + i)) + 0.005 * rng.standard_normal(t.size)
            start = time.process_time()
            fn(v)
            times.append(time.process_time() - start)
        lines.append(
            f"- {label}: median {1000 * np.median(times):.2f} ms, max "
            f"{1000 * np.max(times):.2f} ms CPU per call (30 curves of 201 points; the improve "
            "rule's one fit when it stops is included)"
        )
    return lines


def _default_line(frame: Frame, label: str, patiences: Any) -> str:
    default = improve_name(*IMPROVE_SETTINGS[0])
    p = position(frame, default, patiences=patiences)
    reg_ci, ep_ci = bootstrap(frame, default, patiences)
    return (
        f"- {label}: regret gain {p.regret_gain:+.2f} [{reg_ci[0]:+.2f}, {reg_ci[1]:+.2f}]"
        + ("" if p.regret_in_range else " (a)")
        + f", epoch saving at equal regret {100 * p.epoch_saving:+.1f}% "
        f"[{100 * ep_ci[0]:+.1f}%, {100 * ep_ci[1]:+.1f}%]"
        + ("" if p.epochs_in_range else " (a)")
        + f": **{verdict(p, reg_ci, ep_ci)}**."
    )


def summary(frames: dict[str, Frame]) -> list[str]:
    default = improve_name(*IMPROVE_SETTINGS[0])
    lines = [
        f"Default rule: {default}. Gains against the issue's frontier (patience 2-30, "
        "interpolated; below patience 2 towards 'train nothing') / the stricter one (patience "
        "0-30); '(a)': the comparison is against the line to 'train nothing'. The issue's bar: "
        "a regret gain of at least 0.5 or an epoch saving of at least 15%.",
        "",
        "| set | oracle epochs | epochs | mean regret | p90 | regret gain | epoch saving | "
        "issue's bar | bar against patience 0-30 settings only |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, frame in frames.items():
        a = position(frame, default)
        b = position(frame, default, patiences=STRICT_PATIENCES)
        m = a.metrics

        def fmt(x: float, ok: bool, pct: bool = False) -> str:
            return (f"{100 * x:+.1f}%" if pct else f"{x:+.2f}") + ("" if ok else " (a)")

        lines.append(
            f"| {name} | {100 * room(frame.segments):.0f}% | {100 * m.epochs:.1f}% | "
            f"{m.regret:.2f} | {m.regret_p90:.2f} | "
            f"{fmt(a.regret_gain, a.regret_in_range)} / {fmt(b.regret_gain, b.regret_in_range)} | "
            f"{fmt(a.epoch_saving, a.epochs_in_range, True)} / "
            f"{fmt(b.epoch_saving, b.epochs_in_range, True)} | "
            f"{'met' if meets_issue_bar(frame, default) else 'missed'} | "
            f"{'met' if meets_strict_bar(frame, default) else 'missed'} |"
        )
    return lines


def section(name: str, frame: Frame) -> str:
    segments = frame.segments
    parts = sorted({s.part for s in segments})
    unit = "perplexity points" if name == "lstm_ptb" else "accuracy points"
    every = RUN_EVERY.get(name, 1)
    runs = "all runs" if every == 1 else f"one run in {every}"
    lines = [
        f"### {name}: {len(segments)} segments of {runs} ({', '.join(parts)}); regret in {unit}",
        "",
        f"Oracle (stop at the first epoch within 0.5 of the segment's best): "
        f"{100 * room(segments):.1f}% of the epochs.",
        "",
        "| rule | segments | epochs | mean regret | p90 | smoothed mean | smoothed p90 | "
        "frontier at these epochs | regret gain | epoch saving at equal regret |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rule in frame.rules:
        p = position(frame, rule)
        m = p.metrics
        lines.append(
            f"| {rule} | {m.n} | {100 * m.epochs:.1f}% | {m.regret:.2f} | {m.regret_p90:.2f} | "
            f"{m.regret_smooth:.2f} | {m.regret_smooth_p90:.2f} | "
            f"{m.regret + p.regret_gain:.2f} | {p.regret_gain:+.2f}"
            f"{'' if p.regret_in_range else ' (a)'} | {100 * p.epoch_saving:+.1f}%"
            f"{'' if p.epochs_in_range else ' (a)'} |"
        )
    lines += [
        "",
        f"Default rule ({improve_name(*IMPROVE_SETTINGS[0])}), 95% intervals:",
        "",
        _default_line(frame, "against the issue's frontier (patience 2-30)", ISSUE_PATIENCES),
        _default_line(frame, "against the stricter one (patience 0-30)", STRICT_PATIENCES),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/knee_rule.md")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--sets", nargs="*", default=list(lc.SETS))
    parser.add_argument("--fresh", action="store_true", help="ignore cached outcomes")
    parser.add_argument(
        "--redo-improve",
        action="store_true",
        help="recompute the improve rule's cached outcomes (after a change to that rule)",
    )
    parser.add_argument("--limit", type=int, help="first N segments per set (a smoke run)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.fresh and CACHE.exists():
        for p in CACHE.glob("*.json"):
            p.unlink()

    load_before = load_average()
    start = time.perf_counter()
    frames = {}
    for name in args.sets:
        frames[name] = Frame(outcomes_for(name, args.processes, args.limit, args.redo_improve))
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    command = "nice -n 10 .venv/bin/python -m benchmarks.knee_rule " + shlex.join(sys.argv[1:])
    header = [
        "# Stopping rules vs PatientPruner on real learning curves",
        "",
        f"Command: `{command.strip()}` (from the repository root; {elapsed:.0f} s with "
        f"{args.processes} processes; outcomes are cached in `benchmarks/.work/knee_rule/`, a "
        "rerun with the cache only redoes the tables)",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
        f"Commit: {commit}. Machine: {machine()}. Load average before / after: "
        f"{load_before} / {load_average()}. Python {sys.version.split()[0]}, "
        f"optuna {optuna.__version__}.",
        "",
        "Regret: best score of the segment (epoch 0 included) minus the kept epoch's, in "
        "accuracy points (LSTM: perplexity points). 'smoothed': the same on a centred 5-epoch "
        "running mean. The frontier: PatientPruner's (epochs, mean regret) points for patience "
        "2-30 (the issue's), plus the trivial rules 'train nothing' and 'train everything' (any "
        "mix of two rules is achievable, so their points may be joined), Pareto-optimal points "
        "joined linearly. 'regret gain': the frontier's regret at the rule's epochs minus the "
        "rule's; 'epoch saving': 1 - the rule's epochs / the frontier's epochs at the rule's "
        "regret; positive means inside the frontier. Patience without bound is 'train "
        "everything', so the line to that point is patience's own; '(a)': the rule trains fewer "
        "epochs (or has more regret) than the shortest patience, so the figure is against the "
        "line from that patience to 'train nothing' (the issue's frontier interpolated below "
        "patience 2), not between two patience settings. "
        "PatientPruner(0) and (1) are shown too, and a stricter frontier that includes them is "
        f"reported for the default. Intervals: 95% bootstrap over runs ({BOOTSTRAP} resamples). "
        f"On AlexNet the paper and improve rules decide every {STRIDE_LONG}th evaluation, "
        "refined backwards once one stops (exact unless a rule would stop at a skipped "
        "evaluation and not at the next asked one), and the paper rule runs on every "
        f"{PAPER_EVERY_LONG}th of those runs only (its rows, and the frontier they are set "
        "against, are on those runs). The LSTM and ResNet sets are complete; the others use "
        "one run in k (the 'segments' column), for time on a machine shared by many jobs.",
        "",
        "## Summary",
        "",
        *summary(frames),
        "",
        "## Decision time at 200 points",
        "",
        *decision_time(),
        "",
        "## Leave-one-set-out choice of the improve rule's setting",
        "",
        *loso(frames),
        "",
        "## Per set",
        "",
    ]
    text = "\n".join(header) + "\n".join(section(n, frames[n]) for n in frames)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
