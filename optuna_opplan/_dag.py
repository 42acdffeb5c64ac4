"""Plain algorithms over the transition graph's states and edges: reachability, the cycle
check and longest paths. :class:`~optuna_opplan.TransitionGraph` builds on them."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence

from optuna_opplan._state import State


def closure(roots: Sequence[State], edges: Mapping[State, Sequence[State]]) -> set[State]:
    """The states reachable from ``roots`` along ``edges``, the roots included."""
    seen = set(roots)
    stack = list(roots)
    while stack:
        for nxt in edges[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def raise_on_cycle(states: list[State], edges: Mapping[State, Sequence[State]]) -> None:
    """Raise ``ValueError`` naming the first cycle found, state by state."""
    colour = dict.fromkeys(states, 0)  # 0 new, 1 on the stack, 2 done
    for root in states:
        if colour[root]:
            continue
        stack: list[tuple[State, int]] = [(root, 0)]
        path = [root]
        colour[root] = 1
        while stack:
            node, i = stack.pop()
            targets = edges[node]
            if i < len(targets):
                stack.append((node, i + 1))
                nxt = targets[i]
                if colour[nxt] == 1:
                    cycle = path[path.index(nxt) :] + [nxt]
                    raise ValueError(
                        "The transition rule allows a cycle, so training could loop forever: "
                        + " -> ".join(s.key for s in cycle)
                    )
                if colour[nxt] == 0:
                    colour[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, 0))
            else:
                colour[node] = 2
                path.pop()


def longest_from_initial(
    states: list[State], successors: Mapping[State | None, list[State]]
) -> dict[State, int]:
    """Per state, the most transitions on a path from the initial model (``None``) to it."""
    indegree = dict.fromkeys(states, 0)
    for source, targets in successors.items():
        if source is not None:
            for t in targets:
                indegree[t] += 1
    depth = {s: 1 for s in successors[None]}
    ready = [s for s in states if indegree[s] == 0]
    while ready:
        node = ready.pop()
        for t in successors[node]:
            depth[t] = max(depth.get(t, 0), depth.get(node, 1) + 1)
            indegree[t] -= 1
            if indegree[t] == 0:
                ready.append(t)
    return depth


def longest_to_goal(
    states: list[State],
    successors: Mapping[State | None, list[State]],
    goals: set[State],
    weight: Callable[[State], float] | None = None,
) -> dict[State, float]:
    """Per state, the most transitions on a path from it to a goal (with ``weight``: the
    largest sum of the targets' weights); -1 for a state that reaches no goal."""
    # Visiting states deepest first sees successors before
    # their sources, since a transition always leads to a deeper state. Without a weight the
    # result counts transitions; with one, the sum of the targets' weights.
    step = weight or (lambda _: 1)
    depth = longest_from_initial(states, successors)
    height: dict[State, float] = {}
    for node in sorted(states, key=lambda s: -depth[s]):
        reachable = [height[t] + step(t) for t in successors[node] if height[t] >= 0]
        height[node] = max(reachable, default=0 if node in goals else -1)
        if node in goals:
            height[node] = max(height[node], 0)
    return height
