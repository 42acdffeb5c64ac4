from __future__ import annotations

import pytest

from benchmarks._evidence_best import own_best


@pytest.mark.parametrize(
    ("scores", "shared"),
    [
        # Each row: the flavour's validation scores per seed of (its best, the other's best).
        ({"a": ([0.9, 0.9], [0.6, 0.8]), "b": ([0.9, 0.8], [0.5, 0.7])}, {"a": [], "b": []}),
        ({"a": ([0.9, 0.9], [0.6, 0.9]), "b": ([0.9, 0.8], [0.5, 0.7])}, {"a": ["b"], "b": []}),
        ({"a": ([0.9, 0.9], [0.9, 0.9]), "b": ([0.8, 0.8], [0.8, 0.9])}, {"a": ["b"], "b": ["a"]}),
    ],
)
def test_own_best_counts_a_tie_in_any_seed_as_shared(
    scores: dict[str, tuple[list[float], list[float]]], shared: dict[str, list[str]]
) -> None:
    best = {
        flavour: {
            "best_mean_val": f"{flavour}-point",
            "val_by_point": {f"{flavour}-point": own, f"{other}-point": theirs},
        }
        for (flavour, (own, theirs)), other in zip(scores.items(), reversed(list(scores)))
    }
    assert own_best(best) == shared
