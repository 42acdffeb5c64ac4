from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._result import TransitionResult
from optuna_opplan._state import State
from optuna_opplan._transition import Transition

SCORES = ("fitted", "observed")
DIRECTIONS = ("maximize", "minimize")


def check_direction(direction: str) -> str:
    """``direction`` if it is ``"maximize"`` or ``"minimize"``; a ValueError otherwise."""
    if direction not in DIRECTIONS:
        raise ValueError(
            f"`direction` must be one of {DIRECTIONS}, but got direction={direction!r}."
        )
    return direction


class GoalUnreachableError(RuntimeError):
    """No goal state can be reached through transitions that succeeded."""


@dataclass(frozen=True)
class Winner:
    """A resolved state's best incoming transition and the best path's totals through it."""

    transition: Transition
    result: TransitionResult
    score: float
    total_epochs: int
    order: int


def resolve_states(
    graph: TransitionGraph,
    results: Mapping[str, TransitionResult],
    *,
    score: str = "fitted",
    finished: frozenset[str] | None = None,
    direction: str = "maximize",
) -> dict[State, Winner | None]:
    """The best incoming transition of every resolved state, in topological order.

    A state is resolved once each transition into it is finished: those in ``results``
    succeeded, the other finished ones failed. With ``finished`` :obj:`None` every transition
    counts as finished (the plan's view once planning is over); otherwise only the keys in
    ``finished`` do, and states with an unfinished incoming transition are left out (the
    scheduler's view while planning runs). A resolved state whose incoming transitions all
    failed, or start from unreachable states, maps to :obj:`None`. With ``direction``
    ``"minimize"`` the lowest score wins.
    """
    if score not in SCORES:
        raise ValueError(f"`score` must be one of {SCORES}, but got score={score!r}.")
    sign = 1.0 if check_direction(direction) == "maximize" else -1.0
    order = {t.key: i for i, t in enumerate(graph.transitions)}
    winners: dict[State, Winner | None] = {}
    for state in graph.states:
        incoming = graph.predecessors(state)
        if finished is not None and not all(t.key in finished for t in incoming):
            continue
        best: Winner | None = None
        for t in incoming:
            result = results.get(t.key)
            if result is None:
                continue
            if t.source is None:
                base_epochs = 0
            else:
                source = winners.get(t.source)
                if source is None:
                    continue
                base_epochs = source.total_epochs
            candidate = Winner(
                t, result, result.edge_score(score), base_epochs + result.epochs, order[t.key]
            )
            if best is None or _better(candidate, best, sign):
                best = candidate
        winners[state] = best
    return winners


def _better(a: Winner, b: Winner, sign: float = 1.0) -> bool:
    # The better score wins (higher, or lower with sign -1); ties go to the shorter schedule,
    # then to the earlier transition.
    return (-sign * a.score, a.total_epochs, a.order) < (-sign * b.score, b.total_epochs, b.order)


@dataclass(frozen=True)
class Plan:
    """The planned training schedule: the best path to a goal state, with epochs per stage.

    Attributes:
        states: The trained states, from the first stage to the goal (0-epoch stages left out:
            they train nothing).
        epochs: The epochs of each stage in ``states``.
        score: The goal's score (its winning transition's edge score).
        transitions: Every transition on the path, including 0-epoch ones.
        trials: The trial number of each transition in ``transitions`` (:obj:`None` outside a
            study); the last one holds the planned model's checkpoint (see
            :func:`load_checkpoint`).
        score_kind: ``"fitted"`` or ``"observed"``.
        direction: ``"maximize"`` or ``"minimize"``: which scores are better.
        failed: The failed transitions the DP routed around, ``(key, last error)``, as
            :func:`get_plan` found them (a plan from :func:`compute_plan` knows none).
        unfinished: Transitions not finished yet, ``(key, status)``: only in a partial plan.

    The table (``print(plan)``) lists every transition of the path; one that kept epoch 0
    trains nothing and keeps its source checkpoint.

    Example:

        >>> import optuna_opplan as op
        >>> graph = op.TransitionGraph.basic(
        ...     clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("uniform",)
        ... )
        >>> results = {
        ...     t.key: op.TransitionResult(score=0.5 + 0.1 * i, observed=0.5, epochs=10)
        ...     for i, t in enumerate(graph.transitions)
        ... }
        >>> plan = op.compute_plan(graph, results)
        >>> assert plan.states[-1] == graph.goal_states[0]
        >>> assert plan.total_epochs == 10 * len(plan.states)
        >>> print(plan)  # doctest: +NORMALIZE_WHITESPACE
        stage  sampling  clip_length    lr  epochs   score  trial
        -----  --------  -----------  ----  ------  ------  -----
            1   uniform            8   0.1      10  0.5000      -
            2   uniform           16   0.1      10  0.7000      -
            3   uniform           16  0.01      10  1.0000      -
        total                                   30  1.0000
    """

    states: tuple[State, ...]
    epochs: tuple[int, ...]
    score: float
    transitions: tuple[Transition, ...]
    trials: tuple[int | None, ...]
    results: tuple[TransitionResult, ...]
    score_kind: str = "fitted"
    direction: str = "maximize"
    failed: tuple[tuple[str, str], ...] = ()
    unfinished: tuple[tuple[str, str], ...] = ()

    @property
    def total_epochs(self) -> int:
        """The epochs of the whole schedule."""
        return sum(self.epochs)

    @property
    def goal(self) -> State:
        """The goal state the plan ends in."""
        return self.transitions[-1].target

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form: one entry per trained stage, plus the totals."""
        stages = [
            {
                "state": t.target.key,
                "params": t.target.params,
                "epochs": r.epochs,
                "score": r.edge_score(self.score_kind),
                "observed": r.observed,
                "fitted": r.score,
                "trial": trial,
            }
            for t, r, trial in zip(self.transitions, self.results, self.trials)
            if r.epochs > 0
        ]
        return {
            "score": self.score,
            "score_kind": self.score_kind,
            "direction": self.direction,
            "total_epochs": self.total_epochs,
            "goal": self.goal.key,
            "stages": stages,
            "path": [t.key for t in self.transitions],
            "kept_source": [t.key for t, r in zip(self.transitions, self.results) if not r.epochs],
            "routed_around": [{"transition": k, "error": e} for k, e in self.failed],
            "unfinished": [{"transition": k, "status": st} for k, st in self.unfinished],
        }

    def __str__(self) -> str:
        names = list(self.goal.params)
        kept = any(r.epochs == 0 for r in self.results)
        header = ["stage", *names, "epochs", "score", "trial", *(["note"] if kept else [])]
        rows = []
        for i, (t, r, trial) in enumerate(zip(self.transitions, self.results, self.trials), 1):
            note = ["keeps its source checkpoint" if r.epochs == 0 else ""] if kept else []
            rows.append(
                [
                    str(i),
                    *(_fmt(t.target.params[n]) for n in names),
                    str(r.epochs),
                    f"{r.edge_score(self.score_kind):.4f}",
                    "-" if trial is None else str(trial),
                    *note,
                ]
            )
        total = ["total", *([""] * len(names)), str(self.total_epochs), f"{self.score:.4f}", ""]
        rows.append(total + ([""] if kept else []))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(
                c.ljust(w) if j == len(r) - 1 and kept else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths))
            ).rstrip()
            for r in [header, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if self.failed:
            lines.append(f"routed around {len(self.failed)} failed transitions:")
            lines += [f"  {key}: {error}" for key, error in self.failed]
        if self.unfinished:
            lines.append(
                f"partial: {len(self.unfinished)} transitions not finished yet, this plan may "
                "change:"
            )
            lines += [f"  {status:<8} {key}" for key, status in self.unfinished]
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def compute_plan(
    graph: TransitionGraph,
    results: Mapping[str, TransitionResult],
    *,
    score: str = "fitted",
    direction: str = "maximize",
) -> Plan:
    """Dynamic programming over the transition graph: a pure function of graph and results.

    Each state keeps its best incoming transition (in topological order, so every source is
    decided before its targets); the plan backtracks from the best goal state. Transitions
    missing from ``results`` count as failed edges. Ties go to the shorter schedule, then to
    the earlier transition in the graph's order, so the plan never depends on dict order.

    Args:
        graph: The transition graph.
        results: :class:`TransitionResult` by :attr:`Transition.key`, for the transitions that
            succeeded.
        score: ``"fitted"`` (fitted peak, the reference code's choice) or ``"observed"``.
        direction: ``"maximize"`` (accuracy: highest score wins) or ``"minimize"`` (a loss).

    Raises:
        GoalUnreachableError: when no goal state is reachable through successful transitions.

    Example:

        >>> import optuna_opplan as op
        >>> graph = op.TransitionGraph.basic(
        ...     clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("uniform",)
        ... )
        >>> plan = op.compute_plan(
        ...     graph,
        ...     {t.key: op.TransitionResult(0.7, 0.7, epochs=5) for t in graph.transitions},
        ... )
        >>> assert plan.score == 0.7
    """
    known = {t.key for t in graph.transitions}
    unknown = [key for key in results if key not in known]
    if unknown:
        raise ValueError(f"`results` names transitions that are not in the graph: {unknown}.")
    winners = resolve_states(graph, results, score=score, direction=direction)
    sign = 1.0 if direction == "maximize" else -1.0
    goals = [(winners.get(g), i) for i, g in enumerate(graph.goal_states)]
    reached = [(w, i) for w, i in goals if w is not None]
    if not reached:
        raise GoalUnreachableError(_unreachable_reason(graph, results, winners))
    best, _ = min(reached, key=lambda wi: (-sign * wi[0].score, wi[0].total_epochs, wi[1]))
    chain: list[Winner] = [best]
    while chain[-1].transition.source is not None:
        source_winner = winners[chain[-1].transition.source]
        assert source_winner is not None
        chain.append(source_winner)
    chain.reverse()
    trained = [w for w in chain if w.result.epochs > 0]
    return Plan(
        states=tuple(w.transition.target for w in trained),
        epochs=tuple(w.result.epochs for w in trained),
        score=best.score,
        transitions=tuple(w.transition for w in chain),
        trials=tuple(w.result.trial for w in chain),
        results=tuple(w.result for w in chain),
        score_kind=score,
        direction=direction,
    )


def _unreachable_reason(
    graph: TransitionGraph,
    results: Mapping[str, TransitionResult],
    winners: Mapping[State, Winner | None],
) -> str:
    parts = []
    for goal in graph.goal_states:
        incoming = graph.predecessors(goal)
        failed = [t.key for t in incoming if t.key not in results]
        orphaned = [
            t.key
            for t in incoming
            if t.key in results and t.source is not None and winners.get(t.source) is None
        ]
        parts.append(
            f"goal {goal.key}: {len(incoming)} incoming transitions, failed: {failed or 'none'}"
            + (f", from unreachable states: {orphaned}" if orphaned else "")
        )
    return "No goal state is reachable through successful transitions; " + "; ".join(parts)
