"""The evidence benchmark's cost projection and results file."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
import datetime
import itertools
import json
import os
import time
from typing import Any

from benchmarks._env import git_commit
from benchmarks._env import load_average
from benchmarks._env import machine
from benchmarks._evidence_best import best_schedules
from benchmarks._evidence_best import own_line
from benchmarks._evidence_best import section_lines
from benchmarks._evidence_verdict import TARGET_POINTS
from benchmarks._evidence_verdict import VERDICTS
from benchmarks._evidence_verdict import is_tie
from benchmarks._evidence_verdict import seeds_for_target
from benchmarks._evidence_verdict import verdict_text
from optuna_opplan._bootstrap import paired_difference


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so stored and fresh compare."""
    return json.loads(json.dumps(value))


LABELS = {"planned": "planned", "grid": "best grid schedule", "tpe": "TPE + Hyperband"}


def _nice() -> list[str]:
    niceness = os.nice(0)
    return [f"nice -n {niceness}"] if niceness else []


@dataclass(frozen=True)
class Context:
    """Where and when this invocation ran."""

    command: str
    started: str
    commit: str
    machine: str
    load_at_start: str

    @classmethod
    def now(cls, argv: Sequence[str]) -> Context:
        return cls(
            command=" ".join([*_nice(), ".venv/bin/python -m benchmarks.evidence", *argv]),
            started=f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            commit=git_commit(),
            machine=machine(),
            load_at_start=load_average(),
        )


def project(cell: Any, say: Callable[[str], None]) -> dict[str, float]:
    """Time one epoch per clip length and a test pass on ``cell``'s data; print the projected
    cost of the whole run (seconds of one core, and at this machine's current speed)."""
    from optuna_opplan.video._grid import schedule_of
    from optuna_opplan.video._trainer import Runner

    setting = cell.setting
    started = time.monotonic()
    for flavour in setting.flavours:
        other = type(cell)(
            setting,
            flavour,
            cell.seed,
            os.path.dirname(cell.dir),
            cell.storage,
            cell.cache,
            cell.listset,
        )
        assert len(other.splits.test) > 0
    say(f"calibration: videos ready in {time.monotonic() - started:.0f}s")
    runner = Runner(cell.trainer, len(cell.splits.train.classes))
    model = runner.build_model()
    optimizer = runner.optimizer(model, setting.base_lr)
    if setting.decoded_cache_mb:
        # The run decodes each video once and keeps it in memory: time epochs as it runs them,
        # not the first, which decodes (60 training videos a class, 4 frames: 4.3 s, not 0.7).
        shortest = min(setting.clip_lengths)
        for split in (cell.splits.train, cell.splits.val):
            runner.evaluate(model, split.with_clip(clip_length=shortest).with_mode("val"))
    per_clip: dict[int, tuple[float, float]] = {}
    for clip in setting.clip_lengths:
        train = cell.splits.train.with_clip(clip_length=clip, sampling="uniform")
        wall, cpu = time.perf_counter(), time.process_time()
        runner.train_epoch(model, optimizer, train, seed=0, epoch=1)
        runner.evaluate(model, cell.splits.val.with_clip(clip_length=clip).with_mode("val"))
        per_clip[clip] = (time.perf_counter() - wall, time.process_time() - cpu)
    sample = cell.splits.test.with_entries(cell.splits.test.entries[:40])
    wall, cpu = time.perf_counter(), time.process_time()
    runner.evaluate(model, sample.with_clip(clip_length=max(setting.clip_lengths)))
    test_video = ((time.perf_counter() - wall) / 40, (time.process_time() - cpu) / 40)
    graph = cell.planning().sampler.graph
    per_transition = min(setting.knee_max_epochs, setting.knee_delay + 3)
    planning_epochs = Counter(int(t.target.params["clip_length"]) for t in graph.transitions)
    grid_epochs: Counter[int] = Counter()
    for values in itertools.product(*cell.space.values()):
        schedule = schedule_of(dict(zip(cell.space, values)), setting.base_lr)
        for stage in schedule.stages:
            grid_epochs[stage.clip_length] += stage.epochs
    out = {}
    for i, kind in enumerate(("wall", "cpu")):
        plan = sum(n * per_transition * per_clip[c][i] for c, n in planning_epochs.items())
        grid = sum(n * per_clip[c][i] for c, n in grid_epochs.items())
        test = 3 * len(cell.splits.test) * test_video[i]
        out[kind] = len(setting.cells()) * (2 * plan + grid + test)
    say(
        "calibration: one epoch (train + val) per clip length, wall/CPU s: "
        + ", ".join(f"{c}f {w:.1f}/{p:.1f}" for c, (w, p) in per_clip.items())
        + f"; test {test_video[0] * 1000:.0f}/{test_video[1] * 1000:.0f} ms a video"
    )
    say(
        f"projected total for {len(setting.cells())} cells (planning ~{per_transition} epochs a "
        f"transition, TPE = planning): {out['cpu'] / 3600:.1f} h of one core; "
        f"{out['wall'] / 3600:.1f} h at this machine's current speed (load {load_average()})"
    )
    return out


def _done_cells(cells: Sequence[Any]) -> list[Any]:
    return [c for c in cells if c.done()]


def write(
    setting: Any,
    cells: Sequence[Any],
    context: Context,
    out_dir: str,
    *,
    smoke: bool,
    runs: Sequence[dict[str, Any]],
    projection: dict[str, Any] | None = None,
    data_text: str | None = None,
) -> str:
    """Write ``evidence.md``, ``evidence.json`` and ``headline.md`` from the finished cells;
    returns the path of ``evidence.md``. ``data_text`` describes a user's video set, which
    replaces the bundled flavours."""
    done_cells = _done_cells(cells)
    summaries = [c.summary() for c in done_cells]
    progress = {c.name: c.progress() for c in cells if c not in done_cells}
    by_flavour = {f: [s for s in summaries if s["flavour"] == f] for f in setting.flavours}
    complete = [f for f, rows in by_flavour.items() if len(rows) == len(setting.seeds)]
    results = {f: _flavour_result(by_flavour[f]) for f in complete}
    finished = len(summaries) == len(cells)
    data = {
        "context": asdict(context),
        "invocations": list(runs),
        "projection": projection,
        "finished_at": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "load_at_end": load_average(),
        "setting": jsonable(asdict(setting)),
        "data": data_text,
        "status": "complete" if finished else "partial",
        "cells_done": [[s["flavour"], s["seed"]] for s in summaries],
        "progress": progress,
        "results": results,
        "best_schedules": best_schedules(by_flavour),
        "cells": [{k: v for k, v in s.items()} for s in summaries],
    }
    os.makedirs(out_dir, exist_ok=True)
    _atomic(os.path.join(out_dir, "evidence.json"), json.dumps(jsonable(data), indent=1))
    path = os.path.join(out_dir, "evidence.md")
    _atomic(path, _markdown(data, setting, len(cells), smoke))
    _atomic(os.path.join(out_dir, "headline.md"), _headline(data, setting, len(cells), smoke))
    return path


def _atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _flavour_result(rows: list[dict[str, Any]]) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: r["seed"])
    out: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
    for method in ("planned", "grid", "tpe"):
        correct = [r[method]["correct"] for r in rows]
        # An accuracy is a difference from a model that is always wrong: same bootstrap.
        accuracy = paired_difference(correct, [[0] * len(c) for c in correct])
        out["test_videos"] = accuracy.test_videos
        out[method] = {
            "accuracy": accuracy.points,
            "ci95": list(accuracy.ci95),
            "per_seed": [100 * r[method]["accuracy"] for r in rows],
            **{
                key: sum(r[method]["compute"][key] for r in rows) / len(rows)
                for key in ("clip_frames", "clip_frame_epochs", "seconds", "attempts")
            },
        }
    out["tpe"]["repeats"] = sum(r["tpe"].get("repeats", 0) for r in rows) / len(rows)
    for other in ("grid", "tpe"):
        diff = paired_difference(
            [r["planned"]["correct"] for r in rows], [r[other]["correct"] for r in rows]
        )
        # Within one seed, over its test videos alone: resolves that seed's pair of models,
        # says nothing of the spread between seeds.
        within = [
            paired_difference([r["planned"]["correct"]], [r[other]["correct"]]) for r in rows
        ]
        out[f"planned_minus_{other}"] = {
            **diff.to_dict(),
            "half_width": (diff.ci95[1] - diff.ci95[0]) / 2,
            "tie": is_tie(diff.verdict, diff.ci95),
            "per_seed": [
                r["planned"]["accuracy"] * 100 - r[other]["accuracy"] * 100 for r in rows
            ],
            "per_seed_ci95": [list(d.ci95) for d in within],
            "per_seed_verdict": [d.verdict for d in within],
        }
    return out


def _fmt_ci(value: float, ci: Sequence[float]) -> str:
    return f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def _markdown(data: dict[str, Any], setting: Any, total_cells: int, smoke: bool) -> str:
    # The run's own command (a --report-only rewrite is not the run).
    ctx = data["invocations"][-1] if data["invocations"] else data["context"]
    first = data["invocations"][0] if data["invocations"] else data["context"]
    done = len(data["cells_done"])
    status = (
        f"**complete**: all {total_cells} cells ({len(setting.flavours)} flavours x "
        f"{len(setting.seeds)} seeds)"
        if data["status"] == "complete"
        else f"**PARTIAL**: {done} of {total_cells} cells finished "
        f"({', '.join(f'{f} s{s}' for f, s in data['cells_done']) or 'none'}); numbers below "
        "are given only for flavours with every seed finished, and are not the result until "
        "the run is complete"
    )
    lines = [
        "# Evidence: planned vs best grid schedule vs TPE + Hyperband"
        + (" (SMOKE SETTING, not a result)" if smoke else ""),
        "",
        f"- Status: {status}.",
        f"- Command of the last start or resume: `{ctx['command']}` (the same command resumes it)",
        f"- First started: {first['started']}; last started {ctx['started']}; this file "
        f"written {data['finished_at']}",
        f"- Git commit of the last start or resume: {ctx['commit']} (every start's is below)",
        "- Invocations (each start or resume of the run, all on the same storage): "
        + "; ".join(
            f"{r['started']} at {r['commit']}, load {r['load_at_start']}"
            for r in data["invocations"]
        ),
        f"- Machine: {ctx['machine']}; load average at the last start "
        f"{ctx['load_at_start']}, when this file was written {data['load_at_end']} (2 cores "
        "shared with other jobs: seconds are wall clock under the loads listed)",
        "",
        "## Setting",
        "",
        _setting_text(setting, data["data"]),
        "",
        "## Projected cost",
        "",
        _projection_text(data["projection"], total_cells),
        "",
        "## Measured cost",
        "",
        _cost_text(data["cells"], total_cells),
        "",
        "## Progress of unfinished cells",
        "",
        *([f"- {name}: {text}" for name, text in data["progress"].items()] or ["(none)"]),
        "",
        "## Results",
        "",
    ]
    if not data["results"]:
        lines.append("No flavour has every seed finished yet: no result.")
    for flavour, result in data["results"].items():
        lines += _flavour_lines(flavour, result, len(setting.seeds))
    lines += ["", "## Does the best schedule differ between flavours?", ""]
    lines += section_lines(data["best_schedules"], complete=data["status"] == "complete")
    lines += ["", "Raw per-cell data: `evidence.json` beside this file.", ""]
    return "\n".join(lines)


def _flavour_lines(flavour: str, result: dict[str, Any], seeds: int) -> list[str]:
    per_seed_videos = result["test_videos"] // max(1, len(result["seeds"]))
    lines = [
        f"### {flavour} ({seeds} seeds x {per_seed_videos} test videos, paired)",
        "",
        "| method | test accuracy % [95% CI] | per seed | compute: clip-frames (train + "
        "validation) | clip-frame-epochs (training) | attempts | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in ("planned", "grid", "tpe"):
        row = result[method]
        whole = " (whole grid)" if method == "grid" else ""
        lines.append(
            f"| {LABELS[method]} | {_fmt_ci(row['accuracy'], row['ci95'])} | "
            f"{', '.join(f'{a:.1f}' for a in row['per_seed'])} | "
            f"{row['clip_frames']:,.0f}{whole} | {row['clip_frame_epochs']:,.0f} | "
            f"{row['attempts']:.0f} | {row['seconds']:,.0f} |"
        )
    lines += [
        "",
        "Compute, attempts and seconds are means per seed; seconds are wall clock of every "
        "attempt's training and validation (test passes excluded).",
        "",
    ]
    for other in ("grid", "tpe"):
        diff = result[f"planned_minus_{other}"]
        needed = seeds_for_target(diff["half_width"], seeds)
        wider = (
            ""
            if needed is None
            else f", WIDER than the 1-point target: if the spread between seeds stays what it "
            f"is, about {needed} seeds would narrow it to 1 point"
        )
        lines.append(
            f"- Planned minus {LABELS[other]}: {diff['points']:+.2f} points, 95% CI "
            f"[{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}] (half-width "
            f"{diff['half_width']:.2f}{wider}"
            f"): **{verdict_text(diff)}**. Per seed, over its own test videos "
            "(that seed's two models, not the spread between seeds): "
            + "; ".join(_per_seed(diff))
            + "."
        )
    ratio = result["grid"]["clip_frames"] / max(result["planned"]["clip_frames"], 1e-9)
    tpe = result["tpe"]["clip_frames"] / max(result["planned"]["clip_frames"], 1e-9)
    lines += [
        f"- Compute: the whole grid cost {ratio:.1f}x the planning; TPE + Hyperband spent "
        f"{tpe:.2f}x the planning (its budget, to the epoch), besides proposing "
        f"{result['tpe']['repeats']:.1f} schedules a seed that it had already trained (not "
        "trained again, no cost).",
        "",
    ]
    return lines


def _per_seed(diff: dict[str, Any]) -> list[str]:
    return [
        f"{points:+.2f} [{lo:+.2f}, {hi:+.2f}] {VERDICTS[verdict]}"
        for points, (lo, hi), verdict in zip(
            diff["per_seed"], diff["per_seed_ci95"], diff["per_seed_verdict"]
        )
    ]


def _setting_text(setting: Any, data_text: str | None = None) -> str:
    s = asdict(setting)
    rung = s["hyperband_min_resource"]
    videos = data_text or (
        f"Per flavour {s['num_classes']} classes, {s['train_per_class']} training videos a "
        f"class ({s['val_fraction']:.0%} of them held out for validation) and "
        f"{s['test_per_class']} test videos a class; {s['num_frames'][0]}-{s['num_frames'][1]} "
        f"frames of {s['size']}x{s['size']} px (synthetic generator version "
        f"{s['generator_version']}), crops {s['crop']} px, test {s['num_test_clips']} clips "
        "x 3 crops."
    )
    grid = (
        len(setting.decays) * len(setting.samplings) * len(setting.grid_epochs) * 3
        if len(setting.clip_lengths) >= 3
        else None
    )
    return (
        f"{'Video set' if data_text else 'Flavours'} {', '.join(s['flavours'])}; seeds "
        f"{list(s['seeds'])} (the seed sets the "
        "model initialisation, the data order, the train/validation split and TPE's sampler; "
        f"the test videos are the same in every seed). {videos} Model `{s['model']}` (width "
        f"{s['width']}), batch {s['batch_size']}, CPU, one thread"
        + (
            f", decoded videos kept in memory (up to {s['decoded_cache_mb']} MB a split)"
            if s.get("decoded_cache_mb")
            else ""
        )
        + ". Planning: extended graph "
        f"over clips {list(s['clip_lengths'])} x lr {list(s['learning_rates'])} x "
        f'{list(s["samplings"])}, stopping rule "{s.get("knee_rule", "paper")}" with delay '
        f"{s['knee_delay']}, at most "
        f"{s['knee_max_epochs']} epochs a transition. Grid"
        + (f" ({grid} schedules)" if grid else "")
        + f": the paper's clip schedules x decays {list(s['decays'])} x samplings x epoch "
        f"budgets {list(s['grid_epochs'])}, base lr {s['base_lr']}, best by final validation "
        "score. TPE + Hyperband: TPESampler over the same space, HyperbandPruner (min "
        f"resource {rung} epoch{'' if rung == 1 else 's'}, reduction factor "
        f"{s['hyperband_reduction']}), stopped at the "
        "planning's compute to the epoch, best completed schedule by final validation score; "
        "a schedule it proposes again after training it to the end is not trained again (it "
        "is told the first run's score, at no cost: training is seeded, so a second run would "
        "repeat the first). "
        "Compute is counted as `opplan compare` counts it (`optuna_opplan/video/_compute.py`): "
        "clip-frames of every training epoch and validation pass of every attempt, step-0 "
        "evaluations and failed attempts included; clip-frame-epochs (epochs x clip length) "
        "beside it. Intervals: `opplan compare`'s paired bootstrap (10,000 resamples) over "
        "seeds and, within each, test videos; a difference whose interval spans 0 is no "
        "resolvable difference, and a tie when its whole interval lies within one point of 0."
    )


def _projection_text(projection: dict[str, Any] | None, total_cells: int) -> str:
    if not projection:
        return "No calibration on record."
    return (
        f"Calibrated {projection['at']} (load {projection['load']}) by timing one epoch and "
        "validation pass per clip length and a test pass, with planning assumed at delay + 3 "
        f"epochs a transition and TPE at the planning's compute: {total_cells} cells need "
        f"{projection['cpu'] / 3600:.1f} h of one core (CPU time, itself inflated by the load), "
        f"{projection['cpu'] / 7200:.1f} h on 2 cores with two instances of the command; "
        f"{projection['wall'] / 3600:.1f} h of wall clock for one instance at the calibration's "
        "speed."
    )


def _cost_text(cells: Sequence[dict[str, Any]], total_cells: int) -> str:
    """What the finished cells cost, summed over every attempt of every method."""
    if not cells:
        return "No cell finished yet."
    cpu = sum(c[m]["compute"].get("cpu_seconds", 0.0) for c in cells for m in LABELS)
    wall = sum(c[m]["compute"]["seconds"] for c in cells for m in LABELS)
    text = (
        f"{len(cells)} of {total_cells} cells finished: the training and validation of every "
        f"attempt (planning, grid, TPE + Hyperband) took {cpu / 3600:.2f} h of CPU time of one "
        f"core ({cpu / 7200:.2f} h on 2 cores with two instances of the command) and "
        f"{wall / 3600:.2f} h of wall clock summed over attempts (under the loads listed "
        "above, with two instances sharing 2 cores); test passes are not included."
    )
    if len(cells) < total_cells:
        per_cell = cpu / len(cells)
        text += (
            f" At {per_cell / 60:.0f} CPU minutes a cell, all {total_cells} cells need about "
            f"{per_cell * total_cells / 7200:.1f} h on 2 cores."
        )
    return text


def _status_line(data: dict[str, Any], setting: Any, total_cells: int) -> str:
    done = len(data["cells_done"])
    if data["status"] == "complete":
        return f"complete: {total_cells} of {total_cells} cells"
    return (
        f"PARTIAL: {done} of {total_cells} cells ({len(setting.flavours)} flavours x "
        f"{len(setting.seeds)} seeds) finished"
    )


def _headline(data: dict[str, Any], setting: Any, total_cells: int, smoke: bool) -> str:
    """The product's headline, from the evidence benchmark's finished flavours only."""
    lines = [
        "# Headline: planned schedule vs the best hand-tuned schedule and TPE + Hyperband"
        + (" (SMOKE SETTING, not a result)" if smoke else ""),
        "",
        "Generated by `benchmarks/evidence.py` with `evidence.md` (command, dates, git commits, "
        "machine, load, setting and per-seed numbers are there). Status: "
        f"**{_status_line(data, setting, total_cells)}**.",
        "",
    ]
    if not data["results"]:
        lines += [
            "**No result yet**: no flavour has all its seeds finished. Nothing here supports "
            'or refutes the claim "as good as the best hand-tuned schedule for a fraction of '
            'its compute" until it has.',
            "",
        ]
        return "\n".join(lines)
    lines += [
        "| flavour | planned vs best of the grid | planned vs TPE + Hyperband (same compute) "
        "| test accuracy %: planned / grid / TPE | grid compute / planning |",
        "|---|---|---|---|---|",
    ]
    for flavour, result in data["results"].items():
        cells = []
        for other in ("grid", "tpe"):
            diff = result[f"planned_minus_{other}"]
            cells.append(
                f"{diff['points']:+.2f} points [{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}]: "
                f"**{verdict_text(diff)}**"
                + ("" if diff["half_width"] <= TARGET_POINTS else " (interval wider than 1 point)")
            )
        accuracy = " / ".join(f"{result[m]['accuracy']:.1f}" for m in ("planned", "grid", "tpe"))
        ratio = result["grid"]["clip_frames"] / max(result["planned"]["clip_frames"], 1e-9)
        lines.append(f"| {flavour} | {cells[0]} | {cells[1]} | {accuracy} | {ratio:.1f}x |")
    missing = [f for f in setting.flavours if f not in data["results"]]
    videos = next(iter(data["results"].values()))["test_videos"] // len(setting.seeds)
    lines += [
        "",
        f"{len(setting.seeds)} seeds x {videos} "
        "paired test videos a flavour; 95% paired bootstrap intervals over seeds and test "
        "videos, in accuracy points; a difference whose interval spans 0 is no resolvable "
        "difference, and a tie when its whole interval lies within one point of 0. Compute in "
        "clip-frames (training and validation of every attempt).",
    ]
    for other in ("grid", "tpe"):
        counts = Counter(
            verdict
            for result in data["results"].values()
            for verdict in result[f"planned_minus_{other}"]["per_seed_verdict"]
        )
        lines += [
            "",
            f"Seed by seed, against {LABELS[other]} (each seed's pair of models over its own "
            f"{videos} test videos; this says nothing of the spread between seeds): "
            + ", ".join(
                f"{VERDICTS[v]} {counts[v]}"
                for v in ("better", "no resolvable difference", "worse")
            )
            + f" of {sum(counts.values())}.",
        ]
    if len(data["best_schedules"]) >= 2:
        lines += ["", own_line(data["best_schedules"])]
    if missing:
        lines += ["", f"Not finished yet (no numbers): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"
