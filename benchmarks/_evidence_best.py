"""The evidence benchmark's answer to "does the best schedule differ between flavours?".

A flavour's best grid point is picked by validation score averaged over seeds; it is then scored
on every other flavour's validation split, and a flavour has a best schedule of its own only if
no other flavour's best scores as high on it in any seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def best_schedules(by_flavour: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per flavour: the grid point with the best validation score averaged over finished
    seeds, each seed's best grid point, and each seed's plan."""
    out: dict[str, Any] = {}
    for flavour, rows in by_flavour.items():
        if not rows:
            continue
        points: dict[str, list[float]] = {}
        for row in rows:
            for point, value in row["grid"]["val_by_point"].items():
                points.setdefault(point, []).append(value)
        mean: dict[str, float] = {k: sum(v) / len(v) for k, v in points.items()}
        out[flavour] = {
            "best_mean_val": max(mean, key=mean.__getitem__),
            "val_by_point": points,
            "per_seed_grid": [point_name(r["grid"]["params"]) for r in rows],
            "per_seed_plan": [_describe_plan(r["planned"]["plan"]) for r in rows],
            "per_seed_tpe": [point_name(r["tpe"]["params"]) for r in rows],
        }
    return out


def _describe_plan(plan: dict[str, Any]) -> str:
    stages = plan.get("stages", [])
    if not stages:
        return "(empty)"
    first = stages[0]["params"].get("sampling", "")
    path = " -> ".join(
        f"{s['params']['clip_length']}f@{s['params']['lr']:g}x{s['epochs']}" for s in stages
    )
    return f"{first} {path}"


def point_name(params: dict[str, Any]) -> str:
    """A schedule of the grid space as the report names it: ``consecutive 4-16 cosine 12ep``."""
    return (
        f"{params['sampling']} {params['clip_schedule']} {params['decay']} "
        f"{params['total_epochs']}ep"
    )


def section_lines(best: dict[str, Any], *, complete: bool) -> list[str]:
    """The results file's section on whether the best schedule differs between flavours, from
    :func:`best_schedules` (``complete``: every seed of every flavour finished)."""
    lines: list[str] = []
    if not best:
        lines.append("No cell finished yet.")
    for flavour, row in best.items():
        lines.append(
            f"- {flavour} (seeds done: {len(row['per_seed_grid'])}): best grid point by mean "
            f"validation score `{row['best_mean_val']}`; per seed, grid: "
            f"{'; '.join(row['per_seed_grid'])}; plan: {'; '.join(row['per_seed_plan'])}; "
            f"TPE: {'; '.join(row['per_seed_tpe'])}"
        )
    lines += _cross_lines(best)
    picks = {row["best_mean_val"] for row in best.values()}
    if len(best) >= 2:
        lines += [
            "",
            "The best grid point by mean validation score "
            + ("differs between flavours." if len(picks) > 1 else "is the SAME for all flavours.")
            + (" (Partial: from the seeds finished so far.)" if not complete else ""),
            "",
            own_line(best),
        ]
    return lines


def _cross_lines(best: dict[str, Any]) -> list[str]:
    """Each flavour's best grid point scored on every flavour's validation: how much picking
    another flavour's schedule would cost."""
    if len(best) < 2:
        return []
    lines = [
        "",
        "Each flavour's best grid point (columns) on each flavour's validation split (rows), "
        "mean over seeds, %; beside it, per seed, its difference from the row's own best "
        "(the best is picked on these same scores, so a gap of a few points is no evidence):",
        "",
        "| validation split | "
        + " | ".join(f"{f}'s best (`{row['best_mean_val']}`)" for f, row in best.items())
        + " |",
        "|---" * (len(best) + 1) + "|",
    ]
    for flavour, row in best.items():
        own = row["val_by_point"][row["best_mean_val"]]
        cells = []
        for other in best.values():
            scores = row["val_by_point"].get(other["best_mean_val"])
            if scores is None:
                cells.append("n/a")
                continue
            gaps = ", ".join(f"{100 * (a - b):+.1f}" for a, b in zip(scores, own))
            cells.append(f"{100 * _mean(scores):.1f} ({gaps})")
        lines.append(f"| {flavour} | " + " | ".join(cells) + " |")
    lines.append("")
    for flavour, row in best.items():
        scores = row["val_by_point"]
        own = _mean(scores[row["best_mean_val"]])
        costs = [
            f"{other}'s best costs {100 * (own - _mean(scores[o['best_mean_val']])):.1f} points"
            if o["best_mean_val"] in scores
            else f"{other}'s best was not run"
            for other, o in best.items()
            if other != flavour
        ]
        lines.append(f"- On {flavour}: {', '.join(costs)} of mean validation accuracy.")
    return lines


def own_best(best: dict[str, Any]) -> dict[str, list[str]]:
    """Per flavour, the other flavours whose best grid point scores as high as its own on its
    validation split in at least one seed: empty when it has a best schedule of its own.

    A point's name differing is not enough: two flavours whose bests are interchangeable share
    one schedule, whatever the tie-break picked.
    """
    out: dict[str, list[str]] = {}
    for flavour, row in best.items():
        own = row["val_by_point"][row["best_mean_val"]]
        out[flavour] = [
            other
            for other, o in best.items()
            if other != flavour
            and any(
                theirs >= mine
                for theirs, mine in zip(row["val_by_point"].get(o["best_mean_val"], []), own)
            )
        ]
    return out


def own_line(best: dict[str, Any]) -> str:
    """:func:`own_best` as the report's one line: who has a best schedule of its own, who not."""
    shared = own_best(best)
    mine = [f for f, others in shared.items() if not others]
    not_mine = []
    for flavour, others in shared.items():
        if others:
            owners = " and ".join(f"{other}'s" for other in others)
            not_mine.append(f"{flavour} ({owners} as high in at least one seed)")
    verdict = f"{', '.join(mine) or 'no flavour'}."
    if not_mine:
        verdict += f" Without one: {'; '.join(not_mine)}."
    return (
        "A best schedule of its own (every other flavour's best grid point scores lower on its "
        f"validation split in every seed): {verdict}"
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
