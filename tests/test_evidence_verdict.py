"""How the evidence benchmark calls a difference against its 1-point target
(benchmarks/_evidence_verdict.py)."""

from __future__ import annotations

import pytest

from benchmarks._evidence_verdict import is_tie
from benchmarks._evidence_verdict import seeds_for_target


@pytest.mark.parametrize(
    ("half_width", "seeds", "expected"),
    [(0.7, 3, None), (1.0, 3, None), (5.0, 3, 75), (2.0, 4, 16), (1.5, 3, 7)],
)
def test_seeds_for_target(half_width: float, seeds: int, expected: int | None) -> None:
    assert seeds_for_target(half_width, seeds) == expected


@pytest.mark.parametrize(
    ("verdict", "ci95", "tie"),
    [
        ("no resolvable difference", [-1.0, 1.0], True),
        ("no resolvable difference", [0.0, 0.0], True),
        ("no resolvable difference", [-0.3, 1.2], False),
        ("no resolvable difference", [-1.5, 0.2], False),
        ("better", [0.2, 0.9], False),
        ("worse", [-0.9, -0.2], False),
    ],
)
def test_a_tie_is_an_unresolved_difference_within_one_point(
    verdict: str, ci95: list[float], tie: bool
) -> None:
    assert is_tie(verdict, ci95) is tie
