"""The transition graph as data: where states sit, what each edge is, the plan's path.

Pure data (no plotly): :func:`graph_view` is what :func:`~optuna_opplan.dashboard.graph_figure`
draws, and what tests and other front ends can read directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from optuna.study import Study

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._plan import GoalUnreachableError
from optuna_opplan._plan import Plan
from optuna_opplan._plan import compute_plan
from optuna_opplan._progress import Progress
from optuna_opplan._progress import TransitionStatus
from optuna_opplan._protocol import Status
from optuna_opplan._sampler import PlanningSampler
from optuna_opplan._state import State
from optuna_opplan._study import failed_transitions
from optuna_opplan._transition import Transition

# Edge kinds, in the order the legend shows them.
EDGE_KINDS = ("plan", "done", "failed", "running", "todo")

Point = tuple[float, float]


def fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def short(state: State | None) -> str:
    return "initial" if state is None else "/".join(fmt(v) for _, v in state.items)


# --------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Layout:
    """Where the states of a graph sit: one panel per value of the fixed axes."""

    panels: tuple[tuple[Any, ...], ...]
    titles: tuple[str, ...]
    panel_of: dict[State, int]
    pos: dict[State, tuple[float, float]]
    initial: tuple[tuple[float, float], ...]
    x_title: str
    y_title: str
    x_ticks: tuple[tuple[float, ...], tuple[str, ...]]
    y_ticks: tuple[tuple[float, ...], tuple[str, ...]]


def layout_of(graph: TransitionGraph) -> Layout:
    fixed = [a for a in graph.axes if a.direction == "fixed"]
    monotone = [a for a in graph.axes if a.direction != "fixed"]
    names = {a.name for a in monotone}
    # The paper draws clip length across and learning rate down, one panel per sampling.
    if names == {"clip_length", "lr"}:
        grid = [graph.axis("clip_length"), graph.axis("lr")]
    elif len(monotone) <= 2:
        grid = monotone
    else:
        grid = []  # more than two moving axes do not fit a plane: lay states out by depth

    def panel_key(state: State) -> tuple[Any, ...]:
        return tuple(state[a.name] for a in fixed)

    keys = sorted(
        {panel_key(s) for s in graph.states},
        key=lambda k: tuple(a.level(v) for a, v in zip(fixed, k)),
    )
    index = {k: i for i, k in enumerate(keys)}
    titles = tuple(
        ", ".join(f"{a.name} = {fmt(v)}" for a, v in zip(fixed, k)) or "states" for k in keys
    )
    panel_of = {s: index[panel_key(s)] for s in graph.states}
    pos: dict[State, tuple[float, float]] = {}
    if grid:
        x_axis = grid[0]
        y_axis = grid[1] if len(grid) > 1 else None
        for s in graph.states:
            y = -float(y_axis.level(s[y_axis.name])) if y_axis is not None else 0.0
            pos[s] = (float(x_axis.level(s[x_axis.name])), y)
        x_ticks = (
            tuple(float(i) for i in range(len(x_axis.values))),
            tuple(fmt(v) for v in x_axis.values),
        )
        if y_axis is not None:
            y_ticks = (
                tuple(-float(i) for i in range(len(y_axis.values))),
                tuple(fmt(v) for v in y_axis.values),
            )
        else:
            y_ticks = ((), ())
        x_title = x_axis.name.replace("_", " ")
        y_title = "learning rate" if y_axis is not None and y_axis.name == "lr" else ""
        if y_axis is not None and y_axis.name != "lr":
            y_title = y_axis.name.replace("_", " ")
    else:
        rank: dict[tuple[int, int], int] = {}
        for s in graph.states:  # graph.states is sorted by depth: ranks are stable
            slot = (panel_of[s], graph.depth(s))
            pos[s] = (float(graph.depth(s)), -float(rank.get(slot, 0)))
            rank[slot] = rank.get(slot, 0) + 1
        depths = sorted({graph.depth(s) for s in graph.states})
        x_ticks = (tuple(float(d) for d in depths), tuple(str(d) for d in depths))
        y_ticks = ((), ())
        x_title, y_title = "transitions from the initial model", ""

    initial = []
    for i in range(len(keys)):
        starts = [pos[t.target] for t in graph.successors(None) if panel_of[t.target] == i]
        xs = [p[0] for p in starts]
        ys = [p[1] for p in starts]
        if grid and len(grid) > 1:
            # Above the start states, as the paper's figures put the initial model.
            initial.append((sum(xs) / len(xs), max(ys) + 0.8))
        else:
            initial.append((min(xs) - 1.0, sum(ys) / len(ys)))
    return Layout(
        panels=tuple(keys),
        titles=titles,
        panel_of=panel_of,
        pos=pos,
        initial=tuple(initial),
        x_title=x_title,
        y_title=y_title,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
    )


def _resolve_progress(graph: TransitionGraph, progress_or_study: Progress | Study) -> Progress:
    if isinstance(progress_or_study, Progress):
        progress = progress_or_study
    elif isinstance(progress_or_study, Study):
        sampler = progress_or_study.sampler
        if not isinstance(sampler, PlanningSampler):
            raise ValueError(
                f"Study {progress_or_study.study_name!r} has a {type(sampler).__name__}, not a "
                "PlanningSampler: load it with the sampler its workers use (e.g. "
                "optuna.load_study(..., sampler=PlanningSampler(graph)))."
            )
        progress = sampler.progress(progress_or_study)
    else:
        raise ValueError(
            "`progress_or_study` must be an optuna_opplan.Progress or an optuna Study, "
            f"but got {type(progress_or_study).__name__}."
        )
    if progress.graph is not graph and progress.graph.fingerprint() != graph.fingerprint():
        raise ValueError(
            f"The progress belongs to another graph ({progress.graph!r}) than `graph` ({graph!r})."
        )
    return progress


def resolve_plan(graph: TransitionGraph, progress: Progress, plan: Plan | None) -> Plan | None:
    if plan is None:
        if not progress.is_complete:
            return None
        try:
            plan = compute_plan(
                graph, progress.results, score=progress.score, direction=progress.direction
            )
        except GoalUnreachableError:
            return None
        # As get_plan: the failed edges the plan routed around are part of it.
        return dataclasses.replace(plan, failed=failed_transitions(progress))
    if not isinstance(plan, Plan):
        raise ValueError(f"`plan` must be an optuna_opplan.Plan or None, but got {plan!r}.")
    for t in plan.transitions:
        try:
            graph.transition(t.key)
        except KeyError:
            raise ValueError(f"`plan` goes through {t.key!r}, which is not in `graph`.") from None
    return plan


def _edge_kind(status: TransitionStatus, on_plan: bool) -> str:
    if on_plan:
        return "plan"
    if status.status in (Status.DONE, Status.FAILED, Status.RUNNING):
        return str(status.status)
    return "todo"


def _edge_hover(status: TransitionStatus, score_kind: str, epochs: int | None) -> str:
    t = status.transition
    lines = [f"<b>{short(t.source)} → {short(t.target)}</b>", f"status: {status.status}"]
    result = status.result
    if result is not None:
        lines += [
            f"trial {result.trial}",
            f"score ({score_kind}): {result.edge_score(score_kind):.4f}",
            f"observed at kept epoch: {result.observed:.4f}",
            f"kept epoch {result.epochs} of {result.epochs_trained} trained"
            + (f", knee t* = {result.knee_epoch}" if result.knee_epoch is not None else ""),
        ]
    elif status.running is not None:
        lines.append(f"trial {status.running.number}")
    if status.reason:
        lines.append(f"reason: {status.reason}")
    if epochs is not None:
        lines.append(f"<b>plan: {epochs} epochs</b>")
    return "<br>".join(lines)


@dataclass(frozen=True)
class EdgeView:
    """One transition as the graph figure draws it.

    ``kind`` is ``"plan"`` (on the plan's path), ``"done"``, ``"failed"``, ``"running"`` or
    ``"todo"`` (not run yet); ``score`` the edge score once done; ``plan_epochs`` the epochs
    of its stage when on the plan.
    """

    transition: Transition
    status: Status
    kind: str
    panel: int
    start: Point
    end: Point
    score: float | None
    plan_epochs: int | None
    hover: str

    @property
    def label(self) -> str:
        """The text written on the edge."""
        if self.kind == "failed":
            return "✕ failed"
        if self.kind == "running":
            return "running"
        return "" if self.score is None else f"{self.score:.3f}"


@dataclass(frozen=True)
class NodeView:
    """One state: its best score so far (:obj:`None`: not resolved or unreachable)."""

    state: State
    panel: int
    position: Point
    best: float | None
    resolved: bool
    on_plan: bool
    goal: bool
    hover: str


@dataclass(frozen=True)
class GraphView:
    """Everything the graph figure shows, as data."""

    layout: Layout
    nodes: tuple[NodeView, ...]
    edges: tuple[EdgeView, ...]
    plan: Plan | None
    title: str
    initial_hover: str

    @property
    def plan_path(self) -> list[str]:
        """The keys of the plan's transitions, in order (empty without a plan)."""
        return [] if self.plan is None else [t.key for t in self.plan.transitions]

    @property
    def kinds(self) -> list[str]:
        """The edge kinds present, in legend order."""
        present = {e.kind for e in self.edges}
        return [k for k in EDGE_KINDS if k in present]


def graph_view(
    graph: TransitionGraph, progress_or_study: Progress | Study, plan: Plan | None = None
) -> GraphView:
    """The transition graph with what planning found on it, as data.

    Args:
        graph: The study's transition graph.
        progress_or_study: A :class:`~optuna_opplan.Progress` snapshot, or a planning study.
        plan: The plan to highlight; by default the DP's plan once every transition is
            finished, and none before.

    Raises:
        ValueError: if the arguments have the wrong types, or belong to different graphs.

    Example:
        >>> import optuna_opplan as op
        >>> graph = op.TransitionGraph.basic(
        ...     clip_lengths=(8, 16), learning_rates=(0.1,), samplings=("uniform",)
        ... )
        >>> progress = op.Progress(graph, [])
        >>> view = graph_view(graph, progress)
        >>> [(e.transition.key, e.kind) for e in view.edges][:1]
        [('initial->sampling=uniform,clip_length=8,lr=0.1', 'todo')]
        >>> view.title
        'Transition graph: 0 of 3 transitions done'
    """
    if not isinstance(graph, TransitionGraph):
        raise ValueError(f"`graph` must be a TransitionGraph, but got {graph!r}.")
    progress = _resolve_progress(graph, progress_or_study)
    plan = resolve_plan(graph, progress, plan)
    layout = layout_of(graph)
    plan_epochs: dict[str, int] = {}
    plan_states: set[State] = set()
    if plan is not None:
        for t, r in zip(plan.transitions, plan.results):
            plan_epochs[t.key] = r.epochs
            plan_states.add(t.target)

    def where(state: State | None, panel: int) -> Point:
        return layout.initial[panel] if state is None else layout.pos[state]

    edges = []
    for t in graph.transitions:
        status = progress.statuses[t.key]
        panel = layout.panel_of[t.target]
        result = status.result
        edges.append(
            EdgeView(
                transition=t,
                status=status.status,
                kind=_edge_kind(status, t.key in plan_epochs),
                panel=panel,
                start=where(t.source, panel),
                end=where(t.target, panel),
                score=None if result is None else result.edge_score(progress.score),
                plan_epochs=plan_epochs.get(t.key),
                hover=_edge_hover(status, progress.score, plan_epochs.get(t.key)),
            )
        )
    goals = set(graph.goal_states)
    nodes = []
    for s in graph.states:
        winner = progress.winners.get(s)
        info = [f"<b>{short(s)}</b>", *(f"{k}: {fmt(v)}" for k, v in s.items)]
        if winner is not None:
            info += [
                f"best score: {winner.score:.4f} (trial {winner.result.trial})",
                f"epochs from the initial model: {winner.total_epochs}",
            ]
        elif s in progress.winners:
            info.append("unreachable: every way in failed")
        else:
            info.append("not resolved yet")
        if s in goals:
            info.append("goal state")
        nodes.append(
            NodeView(
                state=s,
                panel=layout.panel_of[s],
                position=layout.pos[s],
                best=None if winner is None else winner.score,
                resolved=s in progress.winners,
                on_plan=s in plan_states,
                goal=s in goals,
                hover="<br>".join(info),
            )
        )
    counts = progress.counts()
    if plan is not None:
        title = f"Transition graph: plan {plan.score:.4f} in {plan.total_epochs} epochs"
    else:
        title = (
            f"Transition graph: {counts['done']} of {len(graph.transitions)} transitions done"
            + (f", {counts['running']} running" if counts["running"] else "")
            + (f", {counts['failed']} failed" if counts["failed"] else "")
        )
    return GraphView(
        layout=layout,
        nodes=tuple(nodes),
        edges=tuple(edges),
        plan=plan,
        title=title,
        initial_hover=f"the initial model (epoch-0 score {progress.initial_score:g})",
    )
