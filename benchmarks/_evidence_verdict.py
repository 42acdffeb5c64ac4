"""How the evidence benchmark calls a planned-minus-baseline difference against its target: an
interval at most one accuracy point either side of the difference.

``opplan compare`` says whether an interval spans 0; the benchmark also says whether the run
was fine enough to mean anything by it (a tie) and, when it was not, how many seeds would be.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

TARGET_POINTS = 1.0
"""The half-width, in accuracy points, an interval must reach to resolve one point."""

VERDICTS = {
    "better": "planning wins",
    "worse": "planning loses",
    "no resolvable difference": "no resolvable difference",
}


def seeds_for_target(half_width: float, seeds: int) -> int | None:
    """Seeds that would bring an interval over ``seeds`` seeds to the 1-point target, or
    :obj:`None` if it is there already.

    A projection, not a measurement: a half-width shrinks as one over the square root of the
    seeds only while the spread between seeds dominates it and stays what it was.

    Example:
        >>> seeds_for_target(5.0, 3), seeds_for_target(0.7, 3)
        (75, None)
    """
    if half_width <= TARGET_POINTS:
        return None
    return math.ceil(round(seeds * (half_width / TARGET_POINTS) ** 2, 6))


def is_tie(verdict: str, ci95: Sequence[float]) -> bool:
    """Whether a difference is a tie at the 1-point target: unresolved, and its whole interval
    within one point of 0.

    An interval that spans 0 but reaches past a point either way says only that the run could
    not tell; a tie says it could, and found less than a point.

    Example:
        >>> is_tie("no resolvable difference", [-0.4, 0.7]), is_tie("better", [0.1, 0.8])
        (True, False)
        >>> is_tie("no resolvable difference", [-0.2, 1.6])
        False
    """
    return (
        verdict == "no resolvable difference"
        and ci95[0] >= -TARGET_POINTS
        and ci95[1] <= TARGET_POINTS
    )


def verdict_text(diff: dict[str, Any]) -> str:
    """A pooled difference's verdict as the results files say it (``diff`` as stored in
    ``evidence.json``).

    Example:
        >>> verdict_text({"verdict": "no resolvable difference", "tie": True})
        'tie (within 1 point)'
    """
    return "tie (within 1 point)" if diff.get("tie") else VERDICTS[diff["verdict"]]
