"""The graph algorithms, on small hand-drawn DAGs of states named by one letter."""

from __future__ import annotations

import pytest

from optuna_opplan import State
from optuna_opplan._dag import closure
from optuna_opplan._dag import longest_from_initial
from optuna_opplan._dag import longest_to_goal
from optuna_opplan._dag import raise_on_cycle


def _s(name: str) -> State:
    return State((("name", name),))


def _edges(text: str) -> dict[State | None, list[State]]:
    """``"-a a-b"``: the initial model (``-``, None) leads to a, a to b; every state named
    appears as a key."""
    edges: dict[State | None, list[State]] = {None: []}
    for pair in text.split():
        source, target = pair.split("-")
        edges.setdefault(_s(target), [])
        key = _s(source) if source else None
        edges.setdefault(key, []).append(_s(target))
    return edges


def _states(edges: dict[State | None, list[State]]) -> list[State]:
    return sorted(s for s in edges if s is not None)


# A diamond with a long side: -a, a-b, b-c, c-d, a-d; e hangs off a and reaches no goal (d).
DIAMOND = "-a a-b b-c c-d a-d a-e"


@pytest.mark.parametrize(
    ("roots", "expected"),
    [("a", "abcde"), ("b", "bcd"), ("e", "e"), ("be", "bcde")],
)
def test_closure(roots: str, expected: str) -> None:
    edges = _edges(DIAMOND)
    assert closure([_s(r) for r in roots], edges) == {_s(n) for n in expected}


def test_longest_from_initial_counts_the_longest_path() -> None:
    edges = _edges(DIAMOND)
    depth = longest_from_initial(_states(edges), edges)
    assert {s["name"]: d for s, d in depth.items()} == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 2}


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        # Transitions to the goal d; e reaches no goal.
        (None, {"a": 3, "b": 2, "c": 1, "d": 0, "e": -1}),
        # Weighted: the sum of the targets' weights along the heaviest path (a-b-c-d).
        ({"b": 1, "c": 2, "d": 5, "e": 9}, {"a": 8, "b": 7, "c": 5, "d": 0, "e": -1}),
    ],
)
def test_longest_to_goal(weights: dict[str, float] | None, expected: dict[str, float]) -> None:
    edges = _edges(DIAMOND)
    weight = None if weights is None else (lambda s: weights[s["name"]])
    height = longest_to_goal(_states(edges), edges, {_s("d")}, weight)
    assert {s["name"]: h for s, h in height.items()} == expected


@pytest.mark.parametrize(
    ("text", "cycle"),
    [
        ("-a a-b b-a", "name=a -> name=b -> name=a"),
        ("-a a-b b-c c-b", "name=b -> name=c -> name=b"),
        ("-a a-a", "name=a -> name=a"),
        (DIAMOND, None),
    ],
)
def test_raise_on_cycle_names_the_cycle(text: str, cycle: str | None) -> None:
    edges = _edges(text)
    if cycle is None:
        raise_on_cycle(_states(edges), edges)
        return
    with pytest.raises(ValueError, match="allows a cycle") as info:
        raise_on_cycle(_states(edges), edges)
    assert str(info.value).endswith(cycle)
