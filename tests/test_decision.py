from __future__ import annotations

import math

import numpy as np
import pytest

from optuna_opplan._decision import best_retained
from optuna_opplan._decision import check_window


@pytest.mark.parametrize(
    ("values", "first", "expected"),
    [
        ([0.1, 0.9, 0.5, 0.6], 0, 1),
        # Only epochs from `first` on are retained: the best before it is out of reach.
        ([0.1, 0.9, 0.5, 0.6], 2, 3),
        # A tie keeps the earlier epoch.
        ([0.2, 0.7, 0.7], 0, 1),
        # Non-finite scores are never kept while a finite one is retained.
        ([0.2, math.nan, 0.4, math.inf], 1, 2),
        # Nothing retained is finite: the newest.
        ([0.2, 0.5, math.nan, math.nan], 2, 3),
    ],
)
def test_best_retained(values: list[float], first: int, expected: int) -> None:
    assert best_retained(np.asarray(values, dtype=np.float64), first) == expected


@pytest.mark.parametrize(
    ("delay", "max_epochs", "message"),
    [
        (3, None, None),
        (np.int64(3), np.int64(8), None),
        (0, None, "`delay` must be a positive int, but got delay=0."),
        (True, None, "`delay` must be a positive int, but got delay=True."),
        (2.0, None, "`delay` must be a positive int, but got delay=2.0."),
        (3, 0, "`max_epochs` must be a positive int or None, but got max_epochs=0."),
        (3, "8", "`max_epochs` must be a positive int or None, but got max_epochs='8'."),
    ],
)
def test_check_window(delay: object, max_epochs: object, message: str | None) -> None:
    if message is None:
        check_window(delay, max_epochs)
        return
    with pytest.raises(ValueError) as info:
        check_window(delay, max_epochs)
    assert str(info.value) == message
