"""Views of a planning study for optuna-dashboard: the transition graph, learning curves, plan.

Install the ``dashboard`` extra (``pip install "optuna-opplan[dashboard]"``), then publish a
planning study and open it in the dashboard::

    import optuna_opplan as op
    from optuna_opplan.dashboard import publish

    publish(study)  # any time: while workers run, or once the plan is complete
    # $ optuna-dashboard sqlite:///plan.db

:func:`publish` puts the transition graph (:func:`graph_figure`) and the learning curves of
every finished transition (:func:`curve_figure`, in one figure with a picker) on the study
page, the plan table (:func:`plan_markdown`) in the study note, and the knee numbers in each
transition trial's note. optuna-dashboard stores figures per study only, so the curves live
in the study page's "Transition curves" figure; each trial note says which entry to pick.

This module is not imported by :mod:`optuna_opplan`: plotly and optuna-dashboard are optional.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math
from typing import Any

import numpy as np
from optuna.study import Study
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._knee import KNEE_CURVES
from optuna_opplan._knee import KneeFit
from optuna_opplan._knee import fit_knee
from optuna_opplan._plan import GoalUnreachableError
from optuna_opplan._plan import Plan
from optuna_opplan._plan import compute_plan
from optuna_opplan._progress import Progress
from optuna_opplan._progress import TransitionStatus
from optuna_opplan._protocol import KEY_KNEE
from optuna_opplan._protocol import KEY_OUTCOME
from optuna_opplan._protocol import KEY_RESULT
from optuna_opplan._protocol import KEY_SOURCE_TRIAL
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._protocol import OutcomeKind
from optuna_opplan._protocol import curve_of
from optuna_opplan._result import TransitionResult
from optuna_opplan._sampler import PlanningSampler
from optuna_opplan._state import State

__all__ = [
    "CURVES_FIGURE_ID",
    "GRAPH_FIGURE_ID",
    "curve_figure",
    "curves_figure",
    "graph_figure",
    "plan_markdown",
    "publish",
]

GRAPH_FIGURE_ID = "opplan-transition-graph"
"""The dashboard id of the transition graph figure: publishing again overwrites it."""

CURVES_FIGURE_ID = "opplan-transition-curves"
"""The dashboard id of the learning-curves figure: publishing again overwrites it."""

# Edge styles by what the edge is; the legend shows them in this order.
_PLAN = "#e8590c"
_STYLES: dict[str, dict[str, Any]] = {
    "plan": {"color": _PLAN, "width": 4.0, "dash": "solid", "label": "plan path"},
    "done": {"color": "#868e96", "width": 1.6, "dash": "solid", "label": "explored"},
    "failed": {"color": "#e03131", "width": 1.8, "dash": "dash", "label": "failed"},
    "running": {"color": "#2f9e44", "width": 2.0, "dash": "dot", "label": "running"},
    "todo": {"color": "#ced4da", "width": 1.2, "dash": "dot", "label": "not run yet"},
}
_NODE_SIZE = 30  # px; arrows stop this far from node centres (half the size, plus a margin)
_FONT = "Arial, Helvetica, sans-serif"


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _node_score(value: float) -> str:
    # Nodes are small: drop the leading zero of accuracies, as papers do in dense figures.
    return f"{value:.3f}"[1:] if 0.0 <= value < 0.9995 else f"{value:.3g}"


def _short(state: State | None) -> str:
    return "initial" if state is None else "/".join(_fmt(v) for _, v in state.items)


# --------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class _Layout:
    panels: tuple[tuple[Any, ...], ...]
    titles: tuple[str, ...]
    panel_of: dict[State, int]
    pos: dict[State, tuple[float, float]]
    initial: tuple[tuple[float, float], ...]
    x_title: str
    y_title: str
    x_ticks: tuple[tuple[float, ...], tuple[str, ...]]
    y_ticks: tuple[tuple[float, ...], tuple[str, ...]]


def _layout(graph: TransitionGraph) -> _Layout:
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
        ", ".join(f"{a.name} = {_fmt(v)}" for a, v in zip(fixed, k)) or "states" for k in keys
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
            tuple(_fmt(v) for v in x_axis.values),
        )
        if y_axis is not None:
            y_ticks = (
                tuple(-float(i) for i in range(len(y_axis.values))),
                tuple(_fmt(v) for v in y_axis.values),
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
    return _Layout(
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


# ---------------------------------------------------------------------------- graph figure
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


def _resolve_plan(graph: TransitionGraph, progress: Progress, plan: Plan | None) -> Plan | None:
    if plan is None:
        if not progress.is_complete:
            return None
        try:
            return compute_plan(
                graph, progress.results, score=progress.score, direction=progress.direction
            )
        except GoalUnreachableError:
            return None
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
    if status.status in ("done", "failed", "running"):
        return status.status
    return "todo"


def _edge_hover(status: TransitionStatus, score_kind: str, epochs: int | None) -> str:
    t = status.transition
    lines = [f"<b>{_short(t.source)} → {_short(t.target)}</b>", f"status: {status.status}"]
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


def graph_figure(
    graph: TransitionGraph, progress_or_study: Progress | Study, plan: Plan | None = None
) -> go.Figure:
    """Draw the transition graph as the paper does, with what planning found on it.

    States sit on a grid, clip length across and learning rate down (for other graphs: the
    first moving axis across, the second down, or the number of transitions from the initial
    model across when more than two axes move), one panel per value of the ``"fixed"`` axes
    (the sampling strategy). Explored transitions are arrows labelled with their edge score,
    failed ones red and dashed, running and unexplored ones dotted; each node shows the
    state's best score so far; the plan's path is highlighted with the epochs of each stage.

    Args:
        graph: The study's transition graph.
        progress_or_study: A :class:`~optuna_opplan.Progress` snapshot, or a planning study
            (its sampler must be a :class:`~optuna_opplan.PlanningSampler`).
        plan: The plan to highlight. By default the DP's plan once every transition is
            finished, and none before.

    Returns:
        A plotly figure: one subplot per panel, a legend of the edge kinds.

    Raises:
        ValueError: if the arguments have the wrong types, or belong to different graphs.

    Example:

        >>> import optuna, optuna_opplan as op
        >>> from optuna_opplan.dashboard import graph_figure
        >>> from optuna_opplan.simulation import SimulatedObjective
        >>> graph = op.TransitionGraph.basic(
        ...     clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("uniform",)
        ... )
        >>> study = optuna.create_study(
        ...     direction="maximize",
        ...     sampler=op.PlanningSampler(graph),
        ...     pruner=op.KneePointPruner(delay=3),
        ... )
        >>> op.run_worker(study, SimulatedObjective(seed=0))
        6
        >>> fig = graph_figure(graph, study)
        >>> fig.layout.title.text.startswith("Transition graph: plan 0.")
        True
    """
    if not isinstance(graph, TransitionGraph):
        raise ValueError(f"`graph` must be a TransitionGraph, but got {graph!r}.")
    progress = _resolve_progress(graph, progress_or_study)
    plan = _resolve_plan(graph, progress, plan)
    layout = _layout(graph)
    n_panels = len(layout.panels)
    fig = make_subplots(
        rows=1,
        cols=n_panels,
        subplot_titles=layout.titles if n_panels > 1 else None,
        shared_yaxes=True,
        horizontal_spacing=0.04 if n_panels > 1 else 0.0,
    )
    plan_epochs: dict[str, int] = {}
    plan_states: set[State] = set()
    if plan is not None:
        for t, r in zip(plan.transitions, plan.results):
            plan_epochs[t.key] = r.epochs
            plan_states.add(t.target)

    def where(state: State | None, panel: int) -> tuple[float, float]:
        return layout.initial[panel] if state is None else layout.pos[state]

    annotations: list[dict[str, Any]] = []
    lines: dict[str, tuple[list[float | None], list[float | None], int]] = {}
    hovers: dict[int, tuple[list[float], list[float], list[str]]] = {}
    for t in graph.transitions:
        status = progress.statuses[t.key]
        panel = layout.panel_of[t.target]
        kind = _edge_kind(status, t.key in plan_epochs)
        style = _STYLES[kind]
        (x0, y0), (x1, y1) = where(t.source, panel), where(t.target, panel)
        ref = "" if panel == 0 else str(panel + 1)
        if kind in ("plan", "done", "running"):
            # Annotation arrows can stop short of the nodes in pixels, whatever the zoom.
            annotations.append(
                dict(
                    x=x1,
                    y=y1,
                    ax=x0,
                    ay=y0,
                    xref=f"x{ref}",
                    yref=f"y{ref}",
                    axref=f"x{ref}",
                    ayref=f"y{ref}",
                    text="",
                    showarrow=True,
                    arrowhead=2,
                    arrowsize=0.7 if kind == "plan" else 1.3,
                    arrowwidth=style["width"],
                    arrowcolor=style["color"],
                    standoff=_NODE_SIZE / 2 + 2,
                    startstandoff=_NODE_SIZE / 2 + 2,
                )
            )
        else:
            xs, ys, _ = lines.setdefault(f"{kind}:{panel}", ([], [], panel))
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        label = ""
        if status.result is not None:
            label = f"{status.result.edge_score(progress.score):.3f}"
        if kind == "plan":
            label = f"<b>{label}</b><br><b>{plan_epochs[t.key]} ep</b>"
        elif kind == "failed":
            label = "✕ failed"
        elif kind == "running":
            label = "running"
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        if label:
            annotations.append(
                dict(
                    x=mx,
                    y=my,
                    xref=f"x{ref}",
                    yref=f"y{ref}",
                    text=label,
                    showarrow=False,
                    font=dict(size=10, color=_PLAN if kind == "plan" else "#343a40"),
                    bgcolor="rgba(255,255,255,0.85)",
                    borderpad=1,
                )
            )
        hx, hy, ht = hovers.setdefault(panel, ([], [], []))
        hx.append(mx)
        hy.append(my)
        ht.append(_edge_hover(status, progress.score, plan_epochs.get(t.key)))

    for key, (xs, ys, panel) in lines.items():
        kind = key.split(":")[0]
        style = _STYLES[kind]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line=dict(color=style["color"], width=style["width"], dash=style["dash"]),
                hoverinfo="skip",
                showlegend=False,
                name=style["label"],
                meta={"opplan": f"edges:{kind}"},
            ),
            row=1,
            col=panel + 1,
        )
    for panel, (hx, hy, ht) in hovers.items():
        fig.add_trace(
            go.Scatter(
                x=hx,
                y=hy,
                mode="markers",
                marker=dict(size=14, opacity=0),
                hovertext=ht,
                hoverinfo="text",
                showlegend=False,
                name="transitions",
                meta={"opplan": "edge-hover"},
            ),
            row=1,
            col=panel + 1,
        )

    goals = set(graph.goal_states)
    for panel in range(n_panels):
        states = [s for s in graph.states if layout.panel_of[s] == panel]
        xs, ys, text, hover, fill, border = [], [], [], [], [], []
        for s in states:
            winner = progress.winners.get(s)
            x, y = layout.pos[s]
            xs.append(x)
            ys.append(y)
            text.append("–" if winner is None else _node_score(winner.score))
            info = [f"<b>{_short(s)}</b>", *(f"{k}: {_fmt(v)}" for k, v in s.items)]
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
            hover.append("<br>".join(info))
            fill.append("#fff4e6" if s in plan_states else "white")
            border.append(_PLAN if s in plan_states else "#495057")
        x0, y0 = layout.initial[panel]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers+text",
                text=text,
                textfont=dict(size=10, color="#212529"),
                hovertext=hover,
                hoverinfo="text",
                marker=dict(
                    size=_NODE_SIZE,
                    color=fill,
                    symbol=["square" if s in goals else "circle" for s in states],
                    line=dict(
                        color=border, width=[2.5 if s in plan_states else 1.2 for s in states]
                    ),
                ),
                showlegend=False,
                name="states",
                meta={"opplan": "states"},
            ),
            row=1,
            col=panel + 1,
        )
        fig.add_trace(
            go.Scatter(
                x=[x0],
                y=[y0],
                mode="markers+text",
                text=["init"],
                textfont=dict(size=9, color="white"),
                hovertext=[f"the initial model (epoch-0 score {progress.initial_score:g})"],
                hoverinfo="text",
                marker=dict(size=_NODE_SIZE, color="#495057", symbol="circle"),
                showlegend=False,
                name="initial",
                meta={"opplan": "initial"},
            ),
            row=1,
            col=panel + 1,
        )

    kinds_present = {_edge_kind(progress.statuses[t.key], t.key in plan_epochs) for t in graph}
    for kind, style in _STYLES.items():
        if kind not in kinds_present:
            continue
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                line=dict(color=style["color"], width=style["width"], dash=style["dash"]),
                name=style["label"],
                meta={"opplan": f"legend:{kind}"},
            ),
            row=1,
            col=1,
        )

    xs_all = [p[0] for p in layout.pos.values()] + [p[0] for p in layout.initial]
    ys_all = [p[1] for p in layout.pos.values()] + [p[1] for p in layout.initial]
    for panel in range(n_panels):
        fig.update_xaxes(
            row=1,
            col=panel + 1,
            range=[min(xs_all) - 0.45, max(xs_all) + 0.45],
            tickvals=list(layout.x_ticks[0]),
            ticktext=list(layout.x_ticks[1]),
            title=dict(text=layout.x_title, font=dict(size=11), standoff=4),
            showgrid=False,
            zeroline=False,
            fixedrange=True,
        )
    fig.update_yaxes(
        range=[min(ys_all) - 0.4, max(ys_all) + 0.4],
        tickvals=list(layout.y_ticks[0]),
        ticktext=list(layout.y_ticks[1]),
        showgrid=False,
        zeroline=False,
        fixedrange=True,
    )
    fig.update_yaxes(row=1, col=1, title=dict(text=layout.y_title, font=dict(size=11)))
    # Subplot titles are annotations too: keep them small so the labels stay readable. One
    # layout update instead of one add_annotation per edge: plotly validates on every call.
    titles = [dict(a.to_plotly_json(), font=dict(size=12)) for a in fig.layout.annotations]
    fig.layout.annotations = titles + annotations
    counts = progress.counts()
    if plan is not None:
        title = f"Transition graph: plan {plan.score:.4f} in {plan.total_epochs} epochs"
    else:
        title = (
            f"Transition graph: {counts['done']} of {len(graph.transitions)} transitions done"
            + (f", {counts['running']} running" if counts["running"] else "")
            + (f", {counts['failed']} failed" if counts["failed"] else "")
        )
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=15)),
        template="simple_white",
        font=dict(family=_FONT, size=11),
        margin=dict(l=60, r=10, t=60 if n_panels > 1 else 45, b=70),
        legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.13, yanchor="top"),
        hovermode="closest",
        meta={"opplan": "graph", "plan_score": None if plan is None else plan.score},
    )
    return fig


# ---------------------------------------------------------------------------- curve figure
@dataclass(frozen=True)
class _Curve:
    trial: FrozenTrial
    transition_key: str
    values: list[float]
    record: dict[str, Any]
    result: TransitionResult | None
    fit: KneeFit | None


def _read_curve(trial: FrozenTrial) -> _Curve:
    if not isinstance(trial, FrozenTrial):
        raise ValueError(f"`trial` must be an optuna FrozenTrial, but got {trial!r}.")
    key = trial.system_attrs.get(KEY_TRANSITION)
    if not isinstance(key, str):
        raise ValueError(
            f"Trial {trial.number} is not a planning transition: it has no "
            f"{KEY_TRANSITION!r} system attribute."
        )
    values = curve_of(trial)
    record = trial.system_attrs.get(KEY_KNEE)
    record = record if isinstance(record, dict) else {}
    raw = trial.system_attrs.get(KEY_RESULT)
    try:
        result = TransitionResult.from_dict(raw) if isinstance(raw, dict) else None
    except (TypeError, ValueError):
        result = None
    return _Curve(trial, key, values, record, result, _recorded_fit(record, values))


def _recorded_fit(record: dict[str, Any], values: list[float]) -> KneeFit | None:
    params = record.get("params")
    curve = record.get("curve")
    if not record.get("fit_ok") or curve not in KNEE_CURVES or not isinstance(params, list):
        return None
    if any(p is None for p in params):
        return None
    if record.get("epoch") != len(values) - 1:
        # The last recorded decision is about fewer epochs than reported (a report after the
        # last prune check): refit, which gives what the pruner would have fitted.
        if record.get("minimize"):  # fitted as its negation, drawn in the study's units
            fit = fit_knee([-v for v in values], curve=curve)
            return fit.negated() if fit.ok else None
        fit = fit_knee(values, curve=curve)
        return fit if fit.ok else None
    return KneeFit(
        epoch=int(record.get("knee_epoch") or 0),
        value=float(record.get("fitted_peak") or math.nan),
        observed=float(record.get("observed_at_knee") or math.nan),
        params=tuple(float(p) for p in params),
        rmse=float(record.get("rmse") or math.nan),
        r2=float(record.get("r2") or math.nan),
        curve=curve,
        ok=True,
        message="",
    )


def _transition_label(key: str) -> str:
    source, _, target = key.partition("->")
    return f"{_compact_key(source)} → {_compact_key(target)}"


def _compact_key(key: str) -> str:
    # "sampling=uniform,clip_length=32,lr=0.01" -> "uniform/32/0.01", like the graph's nodes.
    if "=" not in key:
        return key
    return "/".join(part.partition("=")[2] for part in key.split(","))


def _curve_traces(curve: _Curve) -> list[go.Scatter]:
    values = curve.values
    n = len(values) - 1
    traces: list[go.Scatter] = [
        go.Scatter(
            x=[0],
            y=[values[0]],
            mode="markers",
            marker=dict(size=9, symbol="circle-open", color="#1971c2", line=dict(width=2)),
            name="epoch 0 (inherited)",
            hovertemplate="epoch 0 (starting checkpoint): %{y:.4f}<extra></extra>",
            meta={"opplan": "epoch0"},
        ),
        go.Scatter(
            x=list(range(1, n + 1)),
            y=values[1:],
            mode="lines+markers",
            line=dict(color="#1971c2", width=1.5),
            marker=dict(size=4),
            name="reported",
            hovertemplate="epoch %{x}: %{y:.4f}<extra></extra>",
            meta={"opplan": "reported"},
        ),
    ]
    fit = curve.fit
    if fit is not None:
        t = np.linspace(0.0, float(n), max(2, 4 * n + 1))
        traces.append(
            go.Scatter(
                x=t.tolist(),
                y=fit.predict(t).tolist(),
                mode="lines",
                line=dict(color="#e8590c", width=2),
                name=f"fitted ({fit.curve})",
                hoverinfo="skip",
                meta={"opplan": "fit"},
            )
        )
    knee = curve.record.get("knee_epoch")
    if curve.result is not None and curve.result.knee_epoch is not None:
        knee = curve.result.knee_epoch
    if isinstance(knee, int) and fit is not None:
        finite = [v for v in values if math.isfinite(v)] or [0.0]
        peak = float(fit.predict([knee])[0])
        traces.append(
            go.Scatter(
                x=[knee, knee, knee],
                y=[min(finite), max(finite), peak],
                mode="lines+markers",
                line=dict(color="#e8590c", width=1, dash="dash"),
                marker=dict(size=[0, 0, 11], symbol="diamond", color="#e8590c"),
                name=f"knee t* = {knee}",
                hovertemplate=f"knee t* = {knee}: fitted peak {peak:.4f}<extra></extra>",
                meta={"opplan": "knee", "epoch": knee},
            )
        )
    # While a transition trains, the pruner's keep_epoch is only "if it stopped now": mark the
    # kept epoch once the result fixes it.
    kept = curve.result.epochs if curve.result is not None else None
    if kept is not None and 0 <= kept <= n:
        traces.append(
            go.Scatter(
                x=[kept],
                y=[values[kept]],
                mode="markers",
                marker=dict(size=15, symbol="star", color="#2f9e44", line=dict(width=1)),
                name=f"kept epoch {kept}",
                hovertemplate=f"kept epoch {kept}: %{{y:.4f}}<extra></extra>",
                meta={"opplan": "kept", "epoch": kept},
            )
        )
    return traces


def _curve_title(curve: _Curve, *, transition: bool = True) -> str:
    title = f"Trial {curve.trial.number}"
    if transition:
        title += f": {_transition_label(curve.transition_key)}"
    details = []
    if curve.result is not None:
        if curve.result.knee_epoch is not None:
            details.append(f"knee t* = {curve.result.knee_epoch}")
        details.append(f"kept {curve.result.epochs} of {curve.result.epochs_trained} epochs")
    elif curve.trial.state == TrialState.FAIL:
        details.append("failed")
    elif not curve.trial.state.is_finished():
        details.append(f"{curve.trial.state.name.lower()}, {len(curve.values) - 1} epochs so far")
    return title + (" · " + ", ".join(details) if details else "")


def _curve_layout(fig: go.Figure, title: str) -> None:
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=14)),
        template="simple_white",
        font=dict(family=_FONT, size=11),
        xaxis=dict(title=dict(text="epoch"), rangemode="tozero"),
        yaxis=dict(title=dict(text="validation score")),
        legend=dict(x=0.99, xanchor="right", y=0.02, yanchor="bottom", bgcolor="rgba(0,0,0,0)"),
        margin=dict(l=60, r=15, t=50, b=45),
        hovermode="closest",
    )


def curve_figure(trial: FrozenTrial) -> go.Figure:
    """One transition's learning curve with the knee pruner's fit.

    Shows the epoch-0 point (the inherited checkpoint's score), the reported validation
    scores, the fitted curve rebuilt from the parameters the pruner recorded, the knee
    ``t*`` (dashed line, diamond at the fitted peak) and the kept epoch (star).

    Args:
        trial: A trial of a planning study (finished or not).

    Returns:
        A plotly figure.

    Raises:
        ValueError: if ``trial`` is not a :class:`~optuna.trial.FrozenTrial` of a transition.

    Example:

        >>> import optuna, optuna_opplan as op
        >>> from optuna_opplan.dashboard import curve_figure
        >>> from optuna_opplan.simulation import SimulatedObjective
        >>> graph = op.TransitionGraph.basic(
        ...     clip_lengths=(8,), learning_rates=(0.1, 0.01), samplings=("uniform",)
        ... )
        >>> study = optuna.create_study(
        ...     direction="maximize",
        ...     sampler=op.PlanningSampler(graph),
        ...     pruner=op.KneePointPruner(delay=3),
        ... )
        >>> op.run_worker(study, SimulatedObjective(seed=0))
        2
        >>> fig = curve_figure(study.trials[0])
        >>> [trace.meta["opplan"] for trace in fig.data][:3]
        ['epoch0', 'reported', 'fit']
    """
    curve = _read_curve(trial)
    fig = go.Figure(_curve_traces(curve))
    _curve_layout(fig, _curve_title(curve))
    return fig


def curves_figure(trials: Sequence[FrozenTrial], *, selected: int | None = None) -> go.Figure:
    """The curves of several transitions in one figure, with a menu to pick the trial.

    optuna-dashboard shows figures on the study page only, so :func:`publish` puts every
    transition's :func:`curve_figure` into this one.

    Args:
        trials: Trials of a planning study, shown in this order.
        selected: The number of the trial shown first (default: the first one).

    Returns:
        A plotly figure whose dropdown menu switches between the trials.

    Raises:
        ValueError: if ``trials`` is empty, holds a non-transition trial, or ``selected`` is
            not one of their numbers.

    Example:

        >>> import optuna, optuna_opplan as op
        >>> from optuna_opplan.dashboard import curves_figure
        >>> from optuna_opplan.simulation import SimulatedObjective
        >>> graph = op.TransitionGraph.basic(
        ...     clip_lengths=(8,), learning_rates=(0.1, 0.01), samplings=("uniform",)
        ... )
        >>> study = optuna.create_study(
        ...     direction="maximize",
        ...     sampler=op.PlanningSampler(graph),
        ...     pruner=op.KneePointPruner(delay=3),
        ... )
        >>> op.run_worker(study, SimulatedObjective(seed=0))
        2
        >>> fig = curves_figure(study.trials, selected=1)
        >>> len(fig.layout.updatemenus[0].buttons)
        2
    """
    if isinstance(trials, FrozenTrial) or not isinstance(trials, Sequence):
        raise ValueError(f"`trials` must be a sequence of FrozenTrial, but got {trials!r}.")
    if len(trials) == 0:
        raise ValueError("`trials` is empty: there is no curve to show.")
    curves = [_read_curve(t) for t in trials]
    numbers = [c.trial.number for c in curves]
    if selected is None:
        selected = numbers[0]
    if selected not in numbers:
        raise ValueError(f"`selected` must be one of the trial numbers {numbers}, got {selected}.")
    fig = go.Figure()
    owner: list[int] = []
    for i, curve in enumerate(curves):
        for trace in _curve_traces(curve):
            trace.visible = curve.trial.number == selected
            trace.legendgroup = str(curve.trial.number)
            fig.add_trace(trace)
            owner.append(i)
    buttons = [
        dict(
            label=f"#{c.trial.number} {_transition_label(c.transition_key)}",
            method="update",
            args=[
                {"visible": [o == i for o in owner]},
                {"title.text": _curve_title(c, transition=False)},
            ],
        )
        for i, c in enumerate(curves)
    ]
    first = numbers.index(selected)
    _curve_layout(fig, _curve_title(curves[first], transition=False))
    # The menu sits under the title, where it names the transition the title leaves out.
    fig.update_layout(
        title=dict(y=0.98, yanchor="top"),
        updatemenus=[
            dict(
                buttons=buttons,
                active=first,
                direction="down",
                x=0.0,
                xanchor="left",
                y=1.02,
                yanchor="bottom",
                pad=dict(t=0, b=0),
                font=dict(size=10),
                showactive=True,
            )
        ],
        margin=dict(t=80),
        meta={"opplan": "curves", "trials": numbers},
    )
    return fig


# --------------------------------------------------------------------------- markdown, notes
def plan_markdown(plan: Plan) -> str:
    """The plan as a markdown table: one row per trained stage, then the totals.

    Args:
        plan: A plan from :func:`~optuna_opplan.get_plan` or :func:`~optuna_opplan.compute_plan`.

    Returns:
        Markdown text: a one-line summary and the table (stage, the state's
        hyper-parameters, epochs, score, trial).

    Raises:
        ValueError: if ``plan`` is not a :class:`~optuna_opplan.Plan`.

    Example:

        >>> import optuna_opplan as op
        >>> from optuna_opplan.dashboard import plan_markdown
        >>> graph = op.TransitionGraph.basic(
        ...     clip_lengths=(8, 16), learning_rates=(0.1,), samplings=("uniform",)
        ... )
        >>> results = {t.key: op.TransitionResult(0.6, 0.6, epochs=5) for t in graph}
        >>> text = plan_markdown(op.compute_plan(graph, results))
        >>> print(text.splitlines()[0][:50])
        **Plan**: score **0.6000** (fitted) in **5** epoch
        >>> for line in text.splitlines()[2:]:
        ...     print(line)
        | stage | sampling | clip_length | lr | epochs | score | trial |
        |---:|---|---|---|---:|---:|---:|
        | 1 | uniform | 16 | 0.1 | 5 | 0.6000 | - |
        | **total** | | | | **5** | **0.6000** | |
    """
    if not isinstance(plan, Plan):
        raise ValueError(f"`plan` must be an optuna_opplan.Plan, but got {plan!r}.")
    data = plan.to_dict()
    names = list(plan.goal.params)
    lines = [
        f"**Plan**: score **{plan.score:.4f}** ({plan.score_kind}) in "
        f"**{plan.total_epochs}** epochs, goal `{plan.goal.key}`.",
        "",
        "| " + " | ".join(["stage", *names, "epochs", "score", "trial"]) + " |",
        "|---:|" + "---|" * len(names) + "---:|---:|---:|",
    ]
    for i, stage in enumerate(data["stages"], 1):
        trial = "-" if stage["trial"] is None else str(stage["trial"])
        cells = [str(i), *(_fmt(stage["params"][n]) for n in names)]
        cells += [str(stage["epochs"]), f"{stage['score']:.4f}", trial]
        lines.append("| " + " | ".join(cells) + " |")
    blanks = " |" * len(names)
    lines.append(f"| **total** |{blanks} **{plan.total_epochs}** | **{plan.score:.4f}** | |")
    return "\n".join(lines)


def _progress_markdown(progress: Progress) -> str:
    counts = {k: v for k, v in progress.counts().items() if v}
    lines = [
        "**Planning in progress**: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f" of {len(progress.statuses)} transitions.",
    ]
    running = progress.with_status("running")
    if running:
        lines += ["", "| running transition | trial |", "|---|---:|"]
        for s in running:
            number = "-" if s.running is None else str(s.running.number)
            lines.append(f"| `{s.transition.key}` | {number} |")
    failed = progress.with_status("failed")
    if failed:
        lines += ["", "| failed transition | reason |", "|---|---|"]
        lines += [f"| `{s.transition.key}` | {s.reason or 'failed'} |" for s in failed]
    return "\n".join(lines)


def _study_note(graph: TransitionGraph, progress: Progress, plan: Plan | None) -> str:
    parts = ["## Optimization plan", ""]
    if plan is not None:
        parts.append(plan_markdown(plan))
    elif progress.is_complete:
        parts.append("**No plan**: every path to a goal state goes through a failed transition.")
    else:
        parts.append(_progress_markdown(progress))
    if plan is not None and progress.with_status("failed"):
        parts += ["", _progress_markdown(progress).split("\n", 2)[-1]]
    parts += [
        "",
        f"Graph: {len(graph.states)} states, {len(graph.transitions)} transitions "
        f"(rule `{graph.rule_name}`), edge score `{progress.score}`. The figures "
        '"Transition graph" and "Transition curves" on this page show every transition; '
        "each trial's note has its knee numbers.",
        "",
        "<!-- written by optuna_opplan.dashboard.publish: edits are overwritten -->",
    ]
    return "\n".join(parts)


def _num(value: Any, fmt: str = ".4f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def _trial_note(curve: _Curve) -> str:
    trial = curve.trial
    source = trial.system_attrs.get(KEY_SOURCE_TRIAL)
    record, result = curve.record, curve.result
    rows = [
        ("transition", f"`{curve.transition_key}`"),
        ("starts from", "the initial model" if source is None else f"trial {source}"),
        ("epoch-0 score", _num(curve.values[0])),
        ("epochs trained", str(len(curve.values) - 1)),
    ]
    if result is not None:
        rows += [
            ("status", f"done ({result.reason or 'finished'})"),
            ("knee t*", str(result.knee_epoch) if result.knee_epoch is not None else "-"),
            ("kept epoch", f"{result.epochs} (observed {result.observed:.4f})"),
            ("fitted peak f(t*)", f"{result.score:.4f}"),
        ]
    else:
        outcome = trial.system_attrs.get(KEY_OUTCOME)
        reason = outcome.get("reason") if isinstance(outcome, dict) else None
        rows.append(("status", f"{trial.state.name.lower()}: {reason or 'no result'}"))
        if record.get("knee_epoch") is not None:
            rows.append(("last knee t*", str(record["knee_epoch"])))
    if curve.fit is not None:
        rows.append(
            (
                "fit",
                f"{curve.fit.curve}, RMSE {_num(curve.fit.rmse)}, R² {_num(curve.fit.r2, '.3f')}",
            )
        )
    table = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(
        [
            f"### Transition {_transition_label(curve.transition_key)}",
            "",
            *table,
            "",
            f'The curve and its fit: the study page\'s "Transition curves" figure, '
            f"entry #{trial.number}.",
        ]
    )


class _NoteTarget:
    # optuna_dashboard.save_note/get_note take a Study or anything shaped like an optuna.Trial
    # (storage, study, _trial_id). A real optuna.Trial cannot be opened on a finished trial of
    # a planning study: PlanningSampler.before_trial refuses trials it did not hand out.
    def __init__(self, study: Study, trial_id: int) -> None:
        self.storage = study._storage
        self.study = study
        self._trial_id = trial_id


def _save_note_if_changed(target: Any, body: str) -> bool:
    import optuna_dashboard

    # save_note bumps the note's version on every call: skip identical bodies, so that
    # publishing twice leaves the storage as it was.
    if optuna_dashboard.get_note(target) == body:
        return False
    optuna_dashboard.save_note(target, body)
    return True


def _noted_trials(study: Study) -> list[FrozenTrial]:
    trials = []
    for trial in study.get_trials(deepcopy=False):
        if KEY_TRANSITION not in trial.system_attrs or not trial.state.is_finished():
            continue
        outcome = trial.system_attrs.get(KEY_OUTCOME)
        if isinstance(outcome, dict) and outcome.get("status") == OutcomeKind.SUPERSEDED:
            continue  # never ran: retired duplicates or trials popped by study.ask()
        trials.append(trial)
    return trials


def publish(study: Study, *, curves: bool = True) -> list[str]:
    """Put the planning study's views into optuna-dashboard's storage.

    Saves the transition graph (:func:`graph_figure`) and, with ``curves``, the learning
    curves of every finished transition (:func:`curves_figure`) as study figures, the plan
    table (:func:`plan_markdown`, or the progress while planning runs) as the study note, and
    the knee numbers of each finished transition in its trial's note. Call it whenever you
    like: the figures have fixed ids and notes are only rewritten when they change, so
    publishing twice stores the same thing once. Notes are overwritten, so edit elsewhere.

    Args:
        study: A planning study whose sampler is a :class:`~optuna_opplan.PlanningSampler`.
        curves: Also publish the curves figure and the trial notes.

    Returns:
        The ids of the figures saved (:data:`GRAPH_FIGURE_ID`, :data:`CURVES_FIGURE_ID`).

    Raises:
        ValueError: if the study is not a planning study.

    Example:

        >>> import optuna, optuna_dashboard, optuna_opplan as op
        >>> from optuna_opplan.dashboard import publish
        >>> from optuna_opplan.simulation import SimulatedObjective
        >>> graph = op.TransitionGraph.basic(
        ...     clip_lengths=(8,), learning_rates=(0.1, 0.01), samplings=("uniform",)
        ... )
        >>> study = optuna.create_study(
        ...     direction="maximize",
        ...     sampler=op.PlanningSampler(graph),
        ...     pruner=op.KneePointPruner(delay=3),
        ... )
        >>> op.run_worker(study, SimulatedObjective(seed=0))
        2
        >>> publish(study)
        ['opplan-transition-graph', 'opplan-transition-curves']
        >>> optuna_dashboard.get_note(study).startswith("## Optimization plan")
        True
    """
    import optuna_dashboard

    if not isinstance(study, Study):
        raise ValueError(f"`study` must be an optuna Study, but got {study!r}.")
    sampler = study.sampler
    if not isinstance(sampler, PlanningSampler):
        raise ValueError(
            f"Study {study.study_name!r} has a {type(sampler).__name__}, not a "
            "PlanningSampler: load it with the sampler its workers use."
        )
    graph = sampler.graph
    progress = sampler.progress(study)
    plan = _resolve_plan(graph, progress, None)
    optuna_dashboard.save_plotly_graph_object(
        study, graph_figure(graph, progress, plan), graph_object_id=GRAPH_FIGURE_ID
    )
    saved = [GRAPH_FIGURE_ID]
    _save_note_if_changed(study, _study_note(graph, progress, plan))
    if not curves:
        return saved
    trials = _noted_trials(study)
    if trials:
        # Show the goal's curve first: it is the one the planned model comes from.
        goal_trial = plan.trials[-1] if plan is not None else None
        numbers = [t.number for t in trials]
        selected = goal_trial if goal_trial in numbers else None
        optuna_dashboard.save_plotly_graph_object(
            study, curves_figure(trials, selected=selected), graph_object_id=CURVES_FIGURE_ID
        )
        saved.append(CURVES_FIGURE_ID)
    for trial in trials:
        _save_note_if_changed(_NoteTarget(study, trial._trial_id), _trial_note(_read_curve(trial)))
    return saved
