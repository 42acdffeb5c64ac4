"""The evidence benchmark's results files from made-up finished cells: verdicts, partial runs,
the best-schedule check (benchmarks/_evidence_report.py)."""

from __future__ import annotations

from dataclasses import replace
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import _evidence_report as report
from benchmarks._evidence_setting import FULL

VIDEOS = 1200
PARAMS = {"clip_schedule": "4-16", "decay": "cosine", "total_epochs": 16}


class FakeCell:
    """A cell with a made-up summary: per-video hits drawn at given accuracies."""

    def __init__(
        self, flavour: str, seed: int, accuracy: dict[str, float], best: str, done: bool = True
    ) -> None:
        self.flavour, self.seed, self.name = flavour, seed, f"evidence-{flavour}-s{seed}"
        self._done = done
        # The same draw in every seed: no seed-to-seed spread, only the test videos' own.
        rng = np.random.default_rng(len(flavour))
        base = rng.random(VIDEOS)
        self._rows = {
            method: {
                "correct": (base < p).astype(int).tolist(),
                "accuracy": float((base < p).mean()),
                "compute": {
                    "clip_frames": {"planned": 1000, "grid": 7000, "tpe": 990}[method],
                    "clip_frame_epochs": 10,
                    "seconds": 5.0,
                    "cpu_seconds": 360.0,
                    "attempts": 3,
                },
                "params": {**PARAMS, "sampling": best},
                "plan": {"stages": [{"params": {"clip_length": 4, "lr": 0.1}, "epochs": 3}]},
            }
            for method, p in accuracy.items()
        }
        other = "uniform" if best == "consecutive" else "consecutive"
        self._rows["grid"]["val_by_point"] = {best: 0.9, other: 0.6, "other": 0.5}

    def done(self) -> bool:
        return self._done

    def summary(self) -> dict[str, Any]:
        return {"flavour": self.flavour, "seed": self.seed, **self._rows}

    def progress(self) -> str:
        return "planning 3 of 36 transitions; grid not started; TPE not started"


CONTEXT = report.Context("cmd", "2026-01-01 00:00 UTC", "abc1234", "a machine", "1.0, 1.0, 1.0")
RUN = {**CONTEXT.__dict__}
SETTING = replace(FULL, flavours=("motion", "temporal", "rhythm"))


def _cells(done: int = 9, same_best: bool = False) -> list[FakeCell]:
    # Planned equals the grid on motion, beats it by 6 points on temporal, loses 6 on rhythm;
    # TPE is 20 points behind everywhere.
    accuracy = {
        "motion": {"planned": 0.9, "grid": 0.9, "tpe": 0.7},
        "temporal": {"planned": 0.9, "grid": 0.84, "tpe": 0.7},
        "rhythm": {"planned": 0.84, "grid": 0.9, "tpe": 0.64},
    }
    best = {"motion": "consecutive", "temporal": "uniform", "rhythm": "consecutive"}
    cells = [
        FakeCell(f, s, accuracy[f], "uniform" if same_best else best[f])
        for s in SETTING.seeds
        for f in SETTING.flavours
    ]
    for cell in cells[done:]:
        cell._done = False
    return cells


def _write(tmp_path: Path, cells: list[FakeCell]) -> tuple[str, str, dict[str, Any]]:
    report.write(SETTING, cells, CONTEXT, str(tmp_path), smoke=False, runs=[RUN])
    return (
        (tmp_path / "evidence.md").read_text(),
        (tmp_path / "headline.md").read_text(),
        json.loads((tmp_path / "evidence.json").read_text()),
    )


def test_complete_run_says_where_planning_wins_ties_and_loses(tmp_path: Path) -> None:
    evidence, headline, data = _write(tmp_path, _cells())
    assert data["status"] == "complete"
    verdicts = {f: data["results"][f]["planned_minus_grid"]["verdict"] for f in SETTING.flavours}
    assert verdicts == {
        "motion": "no resolvable difference",
        "temporal": "better",
        "rhythm": "worse",
    }
    rows = {
        line.split(" |")[0][2:]: line for line in headline.splitlines() if line.startswith("| ")
    }
    # Motion's plan and grid are the same model video for video: [0, 0], a tie at the target.
    assert data["results"]["motion"]["planned_minus_grid"]["tie"] is True
    assert "**tie (within 1 point)**" in rows["motion"].split(" | ")[1]
    assert not data["results"]["temporal"]["planned_minus_grid"]["tie"]
    assert "**planning wins**" in rows["temporal"].split(" | ")[1]
    assert "**planning loses**" in rows["rhythm"].split(" | ")[1]
    assert all("**planning wins**" in rows[f].split(" | ")[2] for f in SETTING.flavours)
    assert "7.0x" in rows["motion"]  # whole grid / planning compute
    assert "**complete**: all 9 cells" in evidence
    assert "PARTIAL" not in evidence + headline
    # 3 identical seeds x 1,200 videos of a 6-point gap: under a point each side.
    temporal = data["results"]["temporal"]["planned_minus_grid"]
    assert temporal["points"] == pytest.approx(6.0, abs=1.0)
    assert temporal["half_width"] < 1.0 and temporal["test_videos"] == 3 * VIDEOS


def test_partial_run_gives_numbers_only_for_flavours_with_every_seed(tmp_path: Path) -> None:
    # Seed-major order: 7 done leaves rhythm's and temporal's last seed unfinished... only
    # motion has all three seeds.
    evidence, headline, data = _write(tmp_path, _cells(done=7))
    assert data["status"] == "partial" and set(data["results"]) == {"motion"}
    assert "PARTIAL: 7 of 9 cells" in headline
    assert "Not finished yet (no numbers): temporal, rhythm." in headline
    assert "### temporal" not in evidence and "### motion" in evidence
    assert "- evidence-rhythm-s2: planning 3 of 36 transitions" in evidence
    # 7 cells x 3 methods x 360 CPU seconds: 2.1 h of one core, 3 CPU minutes a cell.
    assert "7 of 9 cells finished" in evidence and "took 2.10 h of CPU time" in evidence
    assert "1.05 h on 2 cores" in evidence and "about 1.4 h on 2 cores" in evidence


def test_no_finished_flavour_is_no_result(tmp_path: Path) -> None:
    evidence, headline, data = _write(tmp_path, _cells(done=2))
    assert data["results"] == {}
    assert "**No result yet**" in headline and "points" not in headline
    assert "No flavour has every seed finished yet: no result." in evidence


@pytest.mark.parametrize(("same_best", "expected"), [(False, "differs"), (True, "is the SAME")])
def test_best_schedule_check(tmp_path: Path, same_best: bool, expected: str) -> None:
    evidence, _, _ = _write(tmp_path, _cells(same_best=same_best))
    assert f"The best grid point by mean validation score {expected}" in evidence


@pytest.mark.parametrize(
    ("same_best", "expected"),
    [
        # motion's and rhythm's bests are the same point: neither has one of its own.
        (
            False,
            "temporal. Without one: motion (rhythm's as high in at least one seed); "
            "rhythm (motion's as high in at least one seed).",
        ),
        (
            True,
            "no flavour. Without one: motion (temporal's and rhythm's as high in at least one "
            "seed); temporal (",
        ),
    ],
)
def test_a_flavour_has_a_best_schedule_of_its_own_only_if_no_other_best_ties_it(
    tmp_path: Path, same_best: bool, expected: str
) -> None:
    evidence, headline, _ = _write(tmp_path, _cells(same_best=same_best))
    for text in (evidence, headline):
        line = next(x for x in text.splitlines() if x.startswith("A best schedule of its own"))
        assert line.split("in every seed): ")[1].startswith(expected)


def test_each_flavour_says_what_another_flavours_best_schedule_would_cost_it(
    tmp_path: Path,
) -> None:
    # temporal's best is "uniform"; motion's and rhythm's "consecutive", which temporal's own
    # grid scores 30 points lower.
    evidence, _, _ = _write(tmp_path, _cells())
    lines = evidence.splitlines()
    assert (
        "- On temporal: motion's best costs 30.0 points, rhythm's best costs 30.0 points of "
        "mean validation accuracy." in lines
    )
    assert (
        "- On motion: temporal's best costs 30.0 points, rhythm's best costs 0.0 points of "
        "mean validation accuracy." in lines
    )
    # Columns in the setting's flavour order: motion, temporal, rhythm.
    row = next(x for x in lines if x.startswith("| temporal | "))
    assert row.split(" | ")[1:] == [
        "60.0 (-30.0, -30.0, -30.0)",
        "90.0 (+0.0, +0.0, +0.0)",
        "60.0 (-30.0, -30.0, -30.0) |",
    ]


def test_an_interval_wider_than_the_target_says_how_many_seeds_would_narrow_it(
    tmp_path: Path,
) -> None:
    cells = _cells()
    # TPE's seeds spread: 40 points below in one seed of three, level in the others.
    for cell in cells:
        if cell.seed == 0:
            tpe = cell._rows["tpe"]
            tpe["correct"] = [0] * VIDEOS
            tpe["accuracy"] = 0.0
    evidence, headline, data = _write(tmp_path, cells)
    diff = data["results"]["motion"]["planned_minus_tpe"]
    assert diff["half_width"] > 5
    line = next(x for x in evidence.splitlines() if x.startswith("- Planned minus TPE"))
    assert "WIDER than the 1-point target" in line and "seeds would narrow it" in line
    grid = next(x for x in evidence.splitlines() if x.startswith("- Planned minus best grid"))
    assert "WIDER" not in grid
    assert "(interval wider than 1 point)" in headline


def test_each_seed_gets_its_own_interval_over_its_test_videos(tmp_path: Path) -> None:
    cells = _cells()
    for cell in cells:
        tpe, planned = cell._rows["tpe"], cell._rows["planned"]
        if cell.seed == 0:  # TPE misses everything: planning wins by 90 points
            tpe["correct"], tpe["accuracy"] = [0] * VIDEOS, 0.0
        if cell.seed == 2:  # TPE's model is planning's, video for video: a tie
            tpe["correct"], tpe["accuracy"] = list(planned["correct"]), planned["accuracy"]
    evidence, _, data = _write(tmp_path, cells)
    diff = data["results"]["motion"]["planned_minus_tpe"]
    assert diff["per_seed_verdict"] == ["better", "better", "no resolvable difference"]
    assert diff["per_seed_ci95"][2] == [0.0, 0.0]
    # Seed 1: about 90 % vs 70 % on 1,200 videos, so a few points wide, far from 0.
    low, high = diff["per_seed_ci95"][1]
    assert 15 < low < diff["per_seed"][1] < high < low + 5
    line = next(x for x in evidence.splitlines() if x.startswith("- Planned minus TPE"))
    assert (
        f"(that seed's two models, not the spread between seeds): {diff['per_seed'][0]:+.2f} ["
        in line
    )
    assert line.endswith("planning wins; +0.00 [+0.00, +0.00] no resolvable difference.")
    _, headline, _ = _write(tmp_path, cells)
    # Every flavour's seeds as motion's above: two wins and a tie each.
    assert (
        "Seed by seed, against TPE + Hyperband (each seed's pair of models over its own 1200 "
        "test videos; this says nothing of the spread between seeds): planning wins 6, "
        "no resolvable difference 3, planning loses 0 of 9." in headline
    )


def test_an_unresolved_difference_wider_than_a_point_is_not_called_a_tie(tmp_path: Path) -> None:
    # Motion's grid model differs from its plan on seeds 0 and 1 (planning wins 16 points on
    # seed 0 and loses 2 on seed 1) and is the same on seed 2: unresolved, and far wider than
    # a point.
    cells = _cells()
    for cell in cells:
        grid, planned = cell._rows["grid"], cell._rows["planned"]
        if cell.flavour == "motion" and cell.seed in (0, 1):
            flip = VIDEOS // 5
            hits = list(planned["correct"])
            hits[:flip] = [1 - h for h in hits[:flip]] if cell.seed == 0 else [1] * flip
            grid["correct"] = hits
            grid["accuracy"] = sum(hits) / VIDEOS
    evidence, headline, data = _write(tmp_path, cells)
    diff = data["results"]["motion"]["planned_minus_grid"]
    assert diff["verdict"] == "no resolvable difference" and diff["tie"] is False
    assert diff["half_width"] > 1.0
    row = next(line for line in headline.splitlines() if line.startswith("| motion"))
    assert "**no resolvable difference** (interval wider than 1 point)" in row.split(" | ")[1]
    assert "tie" not in row.split(" | ")[1]


def test_the_header_names_the_first_start_and_the_last(tmp_path: Path) -> None:
    later = {**RUN, "started": "2026-01-02 09:00 UTC", "commit": "def5678", "command": "again"}
    report.write(SETTING, _cells(), CONTEXT, str(tmp_path), smoke=False, runs=[RUN, later])
    evidence = (tmp_path / "evidence.md").read_text()
    assert "- Command of the last start or resume: `again`" in evidence
    assert "- First started: 2026-01-01 00:00 UTC; last started 2026-01-02 09:00 UTC" in evidence
    assert "- Git commit of the last start or resume: def5678 (every start's is below)" in evidence
    assert "2026-01-01 00:00 UTC at abc1234" in evidence
