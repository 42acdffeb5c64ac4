"""The transition graph: the states on a grid of axes, the allowed changes between them (a DAG),
and the presets of the paper (basic, extended)."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
import hashlib
import itertools
import json
from typing import Any

from optuna_opplan._axis import Axis
from optuna_opplan._dag import closure
from optuna_opplan._dag import longest_from_initial
from optuna_opplan._dag import longest_to_goal
from optuna_opplan._dag import raise_on_cycle
from optuna_opplan._state import State
from optuna_opplan._transition import Transition

Rule = Callable[[State, State], bool]
StateSelector = Callable[[State], bool] | Sequence[Mapping[str, Any]] | None

PAPER_CLIP_LENGTHS = (16, 32, 64)
PAPER_LEARNING_RATES = (0.01, 0.001, 0.0001)
PAPER_SAMPLINGS = ("consecutive", "uniform")


class TransitionGraph:
    """The DAG of allowed stage changes that optimization planning searches.

    States are all combinations of the axes' values. A transition ``S_i -> S_j`` is allowed
    when the rule says so; a virtual initial node (the untrained or pre-trained model) leads to
    the start states. Only states on some path from a start state to a goal state are kept, so
    no transition is trained that cannot lead to a goal.

    Built-in rules:

    - ``"basic"``: one monotone axis moves one level in its direction, the others stay.
    - ``"extended"``: ``"basic"``, plus the learning rate moves one level down while the clip
      length moves one level back (the paper's diagonal edges).

    A custom rule is any ``rule(source, target) -> bool``; it must not allow cycles.

    Args:
        axes:
            The stage-wise hyper-parameters, each an :class:`Axis`.
        rule:
            ``"basic"``, ``"extended"`` or a callable ``rule(source, target) -> bool``.
        start:
            The states the initial node leads to: a predicate on states, or a list of partial
            parameter mappings (a state matches one when it has all of its values). By default,
            the states no allowed transition leads to.
        goals:
            The goal states, same forms as ``start``. By default, the states no allowed
            transition leaves. The plan is the best path that ends in one of them.

    Raises:
        ValueError: on empty or duplicate axes, an unknown rule, a rule with a cycle, a start
            or goal selector that matches nothing, or a goal no start state can reach.

    Example:

        >>> import optuna_opplan as op
        >>> graph = op.TransitionGraph.basic()
        >>> assert len(graph.transitions) == 28  # 14 per sampling strategy
        >>> assert len(graph.critical_path()) == 5
        >>> first = graph.transitions[0]
        >>> assert first.source is None and first.target.params["lr"] == 0.01
    """

    def __init__(
        self,
        axes: Sequence[Axis],
        *,
        rule: str | Rule = "basic",
        start: StateSelector = None,
        goals: StateSelector = None,
        cost: Callable[[State], float] | None = None,
    ) -> None:
        if isinstance(axes, Axis) or not isinstance(axes, Sequence):
            raise ValueError(f"`axes` must be a sequence of Axis, but got axes={axes!r}.")
        if len(axes) == 0:
            raise ValueError("`axes` is empty: a transition graph needs at least one Axis.")
        for axis in axes:
            if not isinstance(axis, Axis):
                raise ValueError(f"`axes` must hold Axis objects, but got {axis!r}.")
        names = [axis.name for axis in axes]
        if len(set(names)) != len(names):
            raise ValueError(f"`axes` has duplicate names: {names}.")
        if not any(axis.direction != "fixed" for axis in axes):
            raise ValueError(
                "Every axis is 'fixed', so no transition could change anything: declare at "
                "least one 'increasing' or 'decreasing' axis."
            )
        self.axes: tuple[Axis, ...] = tuple(axes)
        self._cost = cost
        self._axis_by_name = {axis.name: axis for axis in self.axes}
        self.rule_name = rule if isinstance(rule, str) else getattr(rule, "__name__", "custom")
        allowed = self._resolve_rule(rule)

        all_states = [
            State(tuple(zip(names, values)))
            for values in itertools.product(*(axis.values for axis in self.axes))
        ]
        if isinstance(rule, str):
            # Built-in rules only move one level along an axis or two: test those neighbours
            # instead of every pair of states, which would be quadratic in the states.
            by_levels = {self._levels(s): s for s in all_states}
            edges = {
                s: [t for t in self._neighbours(s, by_levels) if allowed(s, t)] for s in all_states
            }
        else:
            edges = {s: [t for t in all_states if t != s and allowed(s, t)] for s in all_states}
        raise_on_cycle(all_states, edges)
        incoming = {s: 0 for s in all_states}
        for targets in edges.values():
            for t in targets:
                incoming[t] += 1

        start_states = self._select(start, all_states, "start", lambda s: incoming[s] == 0)
        goal_states = self._select(goals, all_states, "goals", lambda s: not edges[s])
        reachable = closure(start_states, edges)
        for goal in goal_states:
            if goal not in reachable:
                raise ValueError(
                    f"Goal state {goal.key!r} cannot be reached from any start state "
                    f"({', '.join(s.key for s in start_states)}) under rule {self.rule_name!r}."
                )
        reverse: dict[State, list[State]] = {s: [] for s in all_states}
        for s, targets in edges.items():
            for t in targets:
                reverse[t].append(s)
        useful = reachable & closure(goal_states, reverse)

        order = {s: i for i, s in enumerate(all_states)}
        kept = [s for s in all_states if s in useful]
        self._successors: dict[State | None, list[State]] = {
            s: [t for t in edges[s] if t in useful] for s in kept
        }
        self._successors[None] = [s for s in start_states if s in useful]
        self.start_states: tuple[State, ...] = tuple(self._successors[None])
        self.goal_states: tuple[State, ...] = tuple(goal_states)

        # Longest distances give a topological order in which transitions with the longest
        # remaining path come first (Hu's rule): list scheduling on it keeps the critical path
        # busy, and every transition into a state still precedes every transition out of it.
        self._depth = longest_from_initial(kept, self._successors)
        if cost is not None:
            for state in kept:
                value = cost(state)
                if not isinstance(value, (int, float)) or not value > 0:
                    raise ValueError(
                        f"`cost` must be positive, but cost({state.key}) = {value!r}."
                    )
        self._height = longest_to_goal(kept, self._successors, set(goal_states))
        weight = self._cost or (lambda _: 1.0)
        work = longest_to_goal(kept, self._successors, set(goal_states), weight)
        self.states: tuple[State, ...] = tuple(
            sorted(kept, key=lambda s: (self._depth[s], order[s]))
        )
        transitions = [
            Transition(source, target)
            for source in (None, *self.states)
            for target in self._successors[source]
        ]
        transitions.sort(
            key=lambda t: (
                -(work[t.target] + weight(t.target)),
                -1 if t.source is None else self._depth[t.source],
                -1 if t.source is None else order[t.source],
                order[t.target],
            )
        )
        self.transitions: tuple[Transition, ...] = tuple(transitions)
        self._by_key = {t.key: t for t in self.transitions}
        self._state_by_key = {s.key: s for s in self.states}
        self._incoming: dict[State, list[Transition]] = {s: [] for s in self.states}
        self._outgoing: dict[State | None, list[Transition]] = {s: [] for s in self.states}
        self._outgoing[None] = []
        for edge in self.transitions:
            self._incoming[edge.target].append(edge)
            self._outgoing[edge.source].append(edge)

    # ----------------------------------------------------------------------------- presets
    @classmethod
    def basic(
        cls,
        *,
        clip_lengths: Sequence[int] = PAPER_CLIP_LENGTHS,
        learning_rates: Sequence[float] = PAPER_LEARNING_RATES,
        samplings: Sequence[str] = PAPER_SAMPLINGS,
        start: StateSelector = None,
        goals: StateSelector = None,
        extra_axes: Sequence[Axis] = (),
    ) -> TransitionGraph:
        """The paper's basic graph: lr down one level, or clip length up one level.

        For 3 clip lengths x 3 learning rates that is 12 edges plus 2 start edges per sampling
        strategy. By default the initial node leads to the states with the highest learning
        rate and one of the two shortest clip lengths, and the goal is the longest clip at the
        lowest learning rate, one per sampling strategy.

        Example:

            >>> import optuna_opplan as op
            >>> graph = op.TransitionGraph.basic(samplings=("uniform",))
            >>> assert len(graph.transitions) == 14
        """
        return cls._paper(
            "basic", clip_lengths, learning_rates, samplings, start, goals, extra_axes
        )

    @classmethod
    def extended(
        cls,
        *,
        clip_lengths: Sequence[int] = PAPER_CLIP_LENGTHS,
        learning_rates: Sequence[float] = PAPER_LEARNING_RATES,
        samplings: Sequence[str] = PAPER_SAMPLINGS,
        start: StateSelector = None,
        goals: StateSelector = None,
        extra_axes: Sequence[Axis] = (),
    ) -> TransitionGraph:
        """The paper's extended graph: the basic edges plus "clip length down one level while
        the learning rate goes down one level" (18 transitions per sampling strategy for 3 x 3).

        Example:

            >>> import optuna_opplan as op
            >>> graph = op.TransitionGraph.extended(samplings=("consecutive",))
            >>> assert len(graph.transitions) == 18
            >>> assert len(graph.critical_path()) == 7
        """
        return cls._paper(
            "extended", clip_lengths, learning_rates, samplings, start, goals, extra_axes
        )

    @classmethod
    def _paper(
        cls,
        rule: str,
        clip_lengths: Sequence[int],
        learning_rates: Sequence[float],
        samplings: Sequence[str],
        start: StateSelector,
        goals: StateSelector,
        extra_axes: Sequence[Axis],
    ) -> TransitionGraph:
        for name, values in (("clip_lengths", clip_lengths), ("learning_rates", learning_rates)):
            if not all(isinstance(v, (int, float)) and v > 0 for v in values):
                raise ValueError(f"`{name}` must hold positive numbers, but got {values!r}.")
        clip = Axis("clip_length", clip_lengths, "increasing")
        lr = Axis("lr", learning_rates, "decreasing")
        axes = [Axis("sampling", samplings, "fixed"), clip, lr, *extra_axes]
        if start is None:
            # The paper starts at the highest learning rate with one of the two shortest clips.
            short_clips = set(clip.values[:2])
            first_lr = lr.values[0]

            def start(state: State) -> bool:
                return state["lr"] == first_lr and state["clip_length"] in short_clips

        # An epoch's cost grows with the clip length: weigh the remaining work by it.
        return cls(axes, rule=rule, start=start, goals=goals, cost=lambda s: s["clip_length"])

    # ----------------------------------------------------------------------------- queries
    def predecessors(self, state: State) -> list[Transition]:
        """The transitions into ``state`` (it is resolved once all of them are done)."""
        return list(self._incoming[self._check_state(state)])

    def successors(self, state: State | None) -> list[Transition]:
        """The transitions out of ``state`` (:obj:`None`: out of the initial node)."""
        if state is not None:
            self._check_state(state)
        return list(self._outgoing[state])

    def transition(self, key: str) -> Transition:
        """The transition with the given :attr:`Transition.key`."""
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"This graph has no transition {key!r}.") from None

    def state(self, key: str) -> State:
        """The state with the given :attr:`State.key`."""
        try:
            return self._state_by_key[key]
        except KeyError:
            raise KeyError(f"This graph has no state {key!r}.") from None

    def axis(self, name: str) -> Axis:
        """The axis with the given name."""
        return self._axis_by_name[name]

    def depth(self, state: State) -> int:
        """The number of transitions on the longest path from the initial node to ``state``."""
        return self._depth[self._check_state(state)]

    def critical_path(self) -> list[Transition]:
        """The longest chain of transitions from the initial node to a goal state.

        With enough workers, planning takes as long as training this chain: it bounds the
        wall time from below.
        """
        path: list[Transition] = []
        node: State | None = None
        while node is None or self._height[node] > 0:
            step = max(self._outgoing[node], key=lambda t: self._height[t.target])
            path.append(step)
            node = step.target
        return path

    def __iter__(self) -> Iterator[Transition]:
        return iter(self.transitions)

    def __len__(self) -> int:
        return len(self.transitions)

    # ----------------------------------------------------------------------------- identity
    def to_dict(self) -> dict[str, Any]:
        """A JSON description: axes, rule name, states, start and goal states, transitions.

        Two graphs with equal descriptions plan the same thing; :meth:`fingerprint` hashes it so
        workers can check they agree with the study.
        """
        return {
            "axes": [axis.to_dict() for axis in self.axes],
            "rule": self.rule_name,
            "start": [s.key for s in self.start_states],
            "goals": [s.key for s in self.goal_states],
            "transitions": [t.key for t in self.transitions],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransitionGraph:
        """Rebuild a graph from :meth:`to_dict`'s output (e.g. the copy stored in a study).

        The transitions are taken as listed, so a graph built with a custom rule comes back
        too, without its callable.
        """
        try:
            axes = [Axis.from_dict(a) for a in data["axes"]]
            edges = set(data["transitions"])
            start, goals = set(data["start"]), set(data["goals"])
            rule_name = str(data["rule"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"Not a transition graph description: missing {exc}.") from None

        def listed(source: State, target: State) -> bool:
            return f"{source.key}->{target.key}" in edges

        graph = cls(
            axes, rule=listed, start=lambda s: s.key in start, goals=lambda s: s.key in goals
        )
        graph.rule_name = rule_name
        if set(graph._by_key) == edges:
            # The stored order may have come from a cost that the description does not carry.
            graph.transitions = tuple(graph._by_key[key] for key in data["transitions"])
        if graph.to_dict() != {**data, "axes": [a.to_dict() for a in axes]}:
            raise ValueError("The graph description is inconsistent: its transitions differ.")
        return graph

    def fingerprint(self) -> str:
        """A short SHA-256 of :meth:`to_dict`, stable across processes and machines."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        axes = ", ".join(f"{a.name}={list(a.values)}" for a in self.axes)
        return (
            f"TransitionGraph({axes}, rule={self.rule_name!r}, states={len(self.states)}, "
            f"transitions={len(self.transitions)})"
        )

    # ----------------------------------------------------------------------------- internals
    def _check_state(self, state: State) -> State:
        if state not in self._incoming:
            key = getattr(state, "key", state)
            raise KeyError(f"State {key!r} is not in this graph.")
        return state

    def _resolve_rule(self, rule: str | Rule) -> Rule:
        if callable(rule):
            return rule
        if rule == "basic":
            return self._basic_step
        if rule == "extended":
            for name, direction in (("lr", "decreasing"), ("clip_length", "increasing")):
                axis = self._axis_by_name.get(name)
                if axis is None or axis.direction != direction:
                    raise ValueError(
                        f"rule='extended' needs a {direction!r} axis named {name!r} (its "
                        "diagonal edges lower the lr while shortening the clip); "
                        f"axes are {[a.name for a in self.axes]}."
                    )
            return self._extended_step
        raise ValueError(
            f"`rule` must be 'basic', 'extended' or a callable(source, target) -> bool, "
            f"but got rule={rule!r}."
        )

    def _levels(self, state: State) -> tuple[int, ...]:
        return tuple(axis.level(v) for axis, (_, v) in zip(self.axes, state.items))

    def _neighbours(self, state: State, by_levels: dict[tuple[int, ...], State]) -> list[State]:
        levels = self._levels(state)
        found = []
        for deltas in itertools.product((-1, 0, 1), repeat=len(levels)):
            if not any(deltas) or sum(map(abs, deltas)) > 2:
                continue
            moved = tuple(a + d for a, d in zip(levels, deltas))
            if moved in by_levels:
                found.append(by_levels[moved])
        return found

    def _moves(self, source: State, target: State) -> dict[str, int]:
        moves = {}
        for axis, (_, a), (_, b) in zip(self.axes, source.items, target.items):
            if a != b:
                if axis.direction == "fixed":
                    return {"<fixed>": 0}
                moves[axis.name] = axis.level(b) - axis.level(a)
        return moves

    def _basic_step(self, source: State, target: State) -> bool:
        moves = self._moves(source, target)
        return len(moves) == 1 and next(iter(moves.values())) == 1

    def _extended_step(self, source: State, target: State) -> bool:
        return self._basic_step(source, target) or self._moves(source, target) == {
            "lr": 1,
            "clip_length": -1,
        }

    def _select(
        self,
        selector: StateSelector,
        states: list[State],
        what: str,
        default: Callable[[State], bool],
    ) -> list[State]:
        if selector is None:
            chosen = [s for s in states if default(s)]
        elif callable(selector):
            chosen = [s for s in states if selector(s)]
        else:
            if isinstance(selector, (str, Mapping)) or not isinstance(selector, Sequence):
                raise ValueError(
                    f"`{what}` must be a predicate or a list of parameter mappings, "
                    f"but got {what}={selector!r}."
                )
            for partial in selector:
                for name, value in partial.items():
                    if name not in self._axis_by_name:
                        raise ValueError(
                            f"`{what}` names axis {name!r}, which is not one of "
                            f"{list(self._axis_by_name)}."
                        )
                    self._axis_by_name[name].level(value)
            chosen = [
                s
                for s in states
                if any(all(s[k] == v for k, v in partial.items()) for partial in selector)
            ]
        if not chosen:
            raise ValueError(f"`{what}` selects no state of this graph.")
        return chosen
