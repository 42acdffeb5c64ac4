from __future__ import annotations

import random

import pytest

import optuna_opplan as op


def _random_graph(rng: random.Random) -> op.TransitionGraph:
    a = op.Axis("a", tuple(range(1, rng.randint(2, 4) + 1)), "increasing")
    b = op.Axis("b", tuple(10.0**-i for i in range(rng.randint(2, 4))), "decreasing")
    salt = rng.random()

    def rank(s: op.State) -> int:
        return a.level(s["a"]) + b.level(s["b"])

    def rule(s: op.State, t: op.State) -> bool:
        step = rank(t) - rank(s)
        # Random forward edges (rank strictly grows, so no cycle), always the unit steps.
        return step == 1 or (step > 1 and random.Random(f"{salt}{s.key}{t.key}").random() < 0.3)

    return op.TransitionGraph([a, b], rule=rule)


def _random_results(
    graph: op.TransitionGraph, rng: random.Random
) -> dict[str, op.TransitionResult]:
    results = {}
    for t in graph.transitions:
        if rng.random() < 0.8:
            # Coarse scores make ties common, so tie-breaking is exercised too.
            score = round(rng.random(), 1)
            results[t.key] = op.TransitionResult(
                score=score, observed=score, epochs=rng.randint(0, 4), trial=len(results)
            )
    return results


def _all_paths(graph: op.TransitionGraph, ok: set[str]) -> dict[op.State, list[list]]:
    paths: dict[op.State, list[list]] = {s: [] for s in graph.states}
    for t in graph.successors(None):
        if t.key in ok:
            paths[t.target].append([t])
    for state in graph.states:  # topological order
        for t in graph.successors(state):
            if t.key in ok:
                paths[t.target].extend(p + [t] for p in paths[state])
    return paths


@pytest.mark.parametrize("seed", range(40))
def test_dp_against_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    graph = _random_graph(rng)
    results = _random_results(graph, rng)
    paths = _all_paths(graph, set(results))
    reachable = {s for s, p in paths.items() if p}

    def best_incoming(state: op.State) -> float | None:
        scores = [
            results[t.key].score
            for t in graph.predecessors(state)
            if t.key in results and (t.source is None or t.source in reachable)
        ]
        return max(scores, default=None)

    goal_scores = [best_incoming(g) for g in graph.goal_states if g in reachable]
    if not goal_scores:
        with pytest.raises(op.GoalUnreachableError, match="No goal state is reachable"):
            op.compute_plan(graph, results)
        return
    plan = op.compute_plan(graph, results)
    # The plan reaches the best goal score that any path of successful transitions reaches.
    assert plan.score == max(s for s in goal_scores if s is not None)
    assert plan.score == max(results[p[-1].key].score for g in graph.goal_states for p in paths[g])
    # It is a real path from the initial node to a goal ...
    assert plan.transitions[0].source is None
    assert plan.transitions[-1].target in graph.goal_states
    for a, b in zip(plan.transitions, plan.transitions[1:]):
        assert a.target == b.source
    # ... whose every edge is its target's best incoming transition (the DP's invariant).
    for t in plan.transitions:
        assert results[t.key].score == best_incoming(t.target)
    # Epochs per stage, with 0-epoch stages dropped.
    trained = [results[t.key] for t in plan.transitions if results[t.key].epochs > 0]
    assert list(plan.epochs) == [r.epochs for r in trained]
    assert plan.total_epochs == sum(results[t.key].epochs for t in plan.transitions)


@pytest.mark.parametrize("seed", range(20))
def test_minimising_is_maximising_the_negated_scores(seed: int) -> None:
    rng = random.Random(seed)
    graph = _random_graph(rng)
    results = _random_results(graph, rng)
    negated = {
        k: op.TransitionResult(-r.score, -r.observed, r.epochs, trial=r.trial)
        for k, r in results.items()
    }
    try:
        expected = op.compute_plan(graph, results)
    except op.GoalUnreachableError:
        with pytest.raises(op.GoalUnreachableError):
            op.compute_plan(graph, negated, direction="minimize")
        return
    plan = op.compute_plan(graph, negated, direction="minimize")
    assert plan.transitions == expected.transitions
    assert plan.score == -expected.score
    assert plan.direction == "minimize" and plan.to_dict()["direction"] == "minimize"


def test_direction_is_checked() -> None:
    graph = _chain_graph()
    with pytest.raises(ValueError, match="`direction` must be one of .* direction='min'"):
        op.compute_plan(graph, {}, direction="min")


@pytest.mark.parametrize("seed", range(10))
def test_dp_does_not_depend_on_result_order(seed: int) -> None:
    rng = random.Random(seed)
    graph = _random_graph(rng)
    results = _random_results(graph, rng)
    items = list(results.items())
    rng.shuffle(items)
    try:
        expected = op.compute_plan(graph, results)
    except op.GoalUnreachableError:
        return
    assert op.compute_plan(graph, dict(items)) == expected


def _chain_graph() -> op.TransitionGraph:
    return op.TransitionGraph.extended(
        clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("uniform",)
    )


def test_ties_go_to_the_shorter_schedule() -> None:
    graph = _chain_graph()
    results = {t.key: op.TransitionResult(0.5, 0.5, epochs=5) for t in graph.transitions}
    goal = graph.goal_states[0]
    # Two ways into the goal with equal scores: the one with fewer total epochs wins.
    into_goal = graph.predecessors(goal)
    assert len(into_goal) == 2
    slow, fast = into_goal
    results[slow.key] = op.TransitionResult(0.9, 0.9, epochs=20)
    results[fast.key] = op.TransitionResult(0.9, 0.9, epochs=1)
    assert op.compute_plan(graph, results).transitions[-1] == fast


def test_score_kind_changes_the_winner() -> None:
    graph = _chain_graph()
    results = {t.key: op.TransitionResult(0.5, 0.5, epochs=5) for t in graph.transitions}
    a, b = graph.predecessors(graph.goal_states[0])
    results[a.key] = op.TransitionResult(score=0.9, observed=0.6, epochs=5)
    results[b.key] = op.TransitionResult(score=0.8, observed=0.7, epochs=5)
    assert op.compute_plan(graph, results).transitions[-1] == a
    observed = op.compute_plan(graph, results, score="observed")
    assert observed.transitions[-1] == b
    assert observed.score == 0.7


def test_zero_epoch_stages_are_dropped() -> None:
    graph = op.TransitionGraph.basic(
        clip_lengths=(8,), learning_rates=(0.1, 0.01, 0.001), samplings=("uniform",)
    )
    epochs = [7, 0, 3]  # the middle stage kept its parent's checkpoint
    results = {
        t.key: op.TransitionResult(0.5 + 0.1 * i, 0.5, epochs=e, trial=i)
        for i, (t, e) in enumerate(zip(graph.transitions, epochs))
    }
    plan = op.compute_plan(graph, results)
    assert [s["lr"] for s in plan.states] == [0.1, 0.001]
    assert plan.epochs == (7, 3)
    assert len(plan.transitions) == 3
    assert [s["epochs"] for s in plan.to_dict()["stages"]] == [7, 3]
    assert plan.to_dict()["kept_source"] == [graph.transitions[1].key]
    # The table shows every stage of the path, the one that trains nothing included.
    lines = str(plan).splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["1", "2", "3", "total"]
    assert lines[3].split()[4:] == ["0", "0.6000", "1", "keeps", "its", "source", "checkpoint"]


def test_a_goal_stage_of_zero_epochs_is_in_the_table() -> None:
    graph = op.TransitionGraph.basic(
        clip_lengths=(8,), learning_rates=(0.1, 0.01), samplings=("uniform",)
    )
    results = {
        t.key: op.TransitionResult(0.8, 0.8, epochs=e, trial=i)
        for i, (t, e) in enumerate(zip(graph.transitions, [9, 0]))
    }
    plan = op.compute_plan(graph, results)
    assert plan.states == (graph.transitions[0].target,)  # trained stages only
    last = str(plan).splitlines()[-2]
    assert last.split()[:4] == ["2", "uniform", "8", "0.01"]
    assert last.endswith("keeps its source checkpoint")


def test_unreachable_goal_says_why() -> None:
    graph = _chain_graph()
    goal_edges = {t.key for t in graph.predecessors(graph.goal_states[0])}
    results = {
        t.key: op.TransitionResult(0.5, 0.5, epochs=5)
        for t in graph.transitions
        if t.key not in goal_edges
    }
    with pytest.raises(op.GoalUnreachableError, match="failed: \\["):
        op.compute_plan(graph, results)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score": float("nan"), "observed": 0.5, "epochs": 1}, "`score` must be a finite"),
        ({"score": 0.5, "observed": 0.5, "epochs": -1}, "`epochs` must be a non-negative"),
    ],
)
def test_invalid_results(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        op.TransitionResult(**kwargs)


def test_unknown_transition_and_score_kind() -> None:
    graph = _chain_graph()
    with pytest.raises(ValueError, match="not in the graph"):
        op.compute_plan(graph, {"x->y": op.TransitionResult(0.5, 0.5, epochs=1)})
    with pytest.raises(ValueError, match="`score` must be one of"):
        op.compute_plan(graph, {}, score="best")
