from __future__ import annotations

import json

import pytest

import optuna_opplan as op

C, U = "consecutive", "uniform"
L = (16, 32, 64)
R = (0.01, 0.001, 0.0001)


def _key(sampling: str, clip: int, lr: float) -> str:
    return f"sampling={sampling},clip_length={clip},lr={lr!r}"


def _basic_edges(sampling: str) -> set[str]:
    edges = {f"initial->{_key(sampling, L[0], R[0])}", f"initial->{_key(sampling, L[1], R[0])}"}
    for i, clip in enumerate(L):
        for j, lr in enumerate(R):
            if j + 1 < len(R):
                edges.add(f"{_key(sampling, clip, lr)}->{_key(sampling, clip, R[j + 1])}")
            if i + 1 < len(L):
                edges.add(f"{_key(sampling, clip, lr)}->{_key(sampling, L[i + 1], lr)}")
    return edges


def _diagonal_edges(sampling: str) -> set[str]:
    # clip length down one level while lr goes down one level
    return {
        f"{_key(sampling, L[i], R[j])}->{_key(sampling, L[i - 1], R[j + 1])}"
        for i in (1, 2)
        for j in (0, 1)
    }


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("basic", _basic_edges(C) | _basic_edges(U)),
        ("extended", _basic_edges(C) | _basic_edges(U) | _diagonal_edges(C) | _diagonal_edges(U)),
    ],
)
def test_paper_edge_sets(preset: str, expected: set[str]) -> None:
    graph = getattr(op.TransitionGraph, preset)()
    assert {t.key for t in graph.transitions} == expected


@pytest.mark.parametrize(
    ("preset", "per_sampling", "critical"), [("basic", 14, 5), ("extended", 18, 7)]
)
def test_paper_counts_and_critical_path(preset: str, per_sampling: int, critical: int) -> None:
    graph = getattr(op.TransitionGraph, preset)(samplings=(U,))
    assert len(graph.transitions) == per_sampling
    path = graph.critical_path()
    assert len(path) == critical
    assert path[0].source is None
    assert path[-1].target in graph.goal_states
    for a, b in zip(path, path[1:]):
        assert a.target == b.source


@pytest.mark.parametrize("preset", ["basic", "extended"])
def test_start_goal_and_sampling_never_changes(preset: str) -> None:
    graph = getattr(op.TransitionGraph, preset)()
    assert {s.key for s in graph.start_states} == {
        _key(s, clip, R[0]) for s in (C, U) for clip in L[:2]
    }
    assert {s.key for s in graph.goal_states} == {_key(C, 64, 0.0001), _key(U, 64, 0.0001)}
    for t in graph.transitions:
        if t.source is not None:
            assert t.source["sampling"] == t.target["sampling"]


@pytest.mark.parametrize("preset", ["basic", "extended"])
def test_transitions_are_in_topological_order(preset: str) -> None:
    graph = getattr(op.TransitionGraph, preset)()
    position = {t.key: i for i, t in enumerate(graph.transitions)}
    for state in graph.states:
        for into in graph.predecessors(state):
            for out in graph.successors(state):
                assert position[into.key] < position[out.key]


def test_configurable_start_and_goals() -> None:
    graph = op.TransitionGraph.basic(
        samplings=(C,),
        start=[{"clip_length": 16, "lr": 0.01}],
        goals=[{"clip_length": 32, "lr": 0.0001}],
    )
    assert [s.key for s in graph.start_states] == [_key(C, 16, 0.01)]
    assert [s.key for s in graph.goal_states] == [_key(C, 32, 0.0001)]
    # No transition leads only away from the goal: clip 64 cannot come back to 32.
    assert all(t.target["clip_length"] != 64 for t in graph.transitions)


def test_custom_rule_and_generic_axes() -> None:
    axes = [
        op.Axis("lr", (0.1, 0.01, 0.001), "decreasing"),
        op.Axis("resolution", (112, 160), "increasing"),
    ]

    def lr_then_resolution(source: op.State, target: op.State) -> bool:
        lr_step = axes[0].level(target["lr"]) - axes[0].level(source["lr"])
        res_step = axes[1].level(target["resolution"]) - axes[1].level(source["resolution"])
        return (lr_step, res_step) in {(1, 0), (2, 0), (0, 1)}

    graph = op.TransitionGraph(axes, rule=lr_then_resolution)
    keys = {t.key for t in graph.transitions}
    assert "lr=0.1,resolution=112->lr=0.001,resolution=112" in keys
    assert graph.start_states[0].params == {"lr": 0.1, "resolution": 112}
    assert graph.goal_states[0].params == {"lr": 0.001, "resolution": 160}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"axes": []}, "at least one Axis"),
        ({"axes": [op.Axis("s", ("a", "b"), "fixed")]}, "Every axis is 'fixed'"),
        (
            {"axes": [op.Axis("lr", (0.1, 0.01), "decreasing")], "rule": "diagonal"},
            "`rule` must be",
        ),
        (
            {"axes": [op.Axis("lr", (0.1, 0.01), "decreasing")], "rule": "extended"},
            "needs a 'increasing' axis named 'clip_length'",
        ),
        (
            {"axes": [op.Axis("lr", (0.1, 0.01), "decreasing")], "rule": lambda s, t: s != t},
            "allows a cycle",
        ),
        (
            {"axes": [op.Axis("lr", (0.1, 0.01), "decreasing")], "goals": [{"lr": 0.5}]},
            "not a value of axis 'lr'",
        ),
        (
            {"axes": [op.Axis("lr", (0.1, 0.01), "decreasing")], "start": [{"clip": 8}]},
            "names axis 'clip'",
        ),
        (
            {
                "axes": [op.Axis("lr", (0.1, 0.01, 0.001), "decreasing")],
                "start": [{"lr": 0.01}],
                "goals": [{"lr": 0.1}],
            },
            "cannot be reached",
        ),
    ],
)
def test_invalid_graphs_fail_clearly(kwargs: dict, message: str) -> None:
    axes = kwargs.pop("axes")
    with pytest.raises(ValueError, match=message):
        op.TransitionGraph(axes, **kwargs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("lr", (), "decreasing"), "no values"),
        (("lr", (0.1, 0.1), "decreasing"), "duplicate values"),
        (("lr", (0.1, "x"), "decreasing"), "must be numbers"),
        (("lr", (0.1,), "down"), "`direction`"),
        (("2lr", (0.1,), "decreasing"), "identifier"),
        (("lr", "abc", "fixed"), "sequence of values"),
    ],
)
def test_invalid_axes_fail_clearly(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        op.Axis(*args)


def test_fingerprint_is_stable_and_sensitive() -> None:
    a = op.TransitionGraph.extended()
    b = op.TransitionGraph.extended()
    c = op.TransitionGraph.basic()
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert json.loads(json.dumps(a.to_dict())) == a.to_dict()


def test_lookups() -> None:
    graph = op.TransitionGraph.basic(samplings=(U,))
    first = graph.transitions[0]
    assert graph.transition(first.key) == first
    assert graph.state(first.target.key) == first.target
    assert graph.successors(None)[0].source is None
    with pytest.raises(KeyError, match="no transition"):
        graph.transition("nope")
