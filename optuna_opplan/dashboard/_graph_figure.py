from __future__ import annotations

from typing import Any

from optuna.study import Study
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._plan import Plan
from optuna_opplan._progress import Progress
from optuna_opplan.dashboard._graph_data import graph_view

GRAPH_FIGURE_ID = "opplan-transition-graph"
"""The dashboard id of the transition graph figure: publishing again overwrites it."""

FONT = "Arial, Helvetica, sans-serif"
PLAN_COLOR = "#e8590c"
# Edge styles by kind (see graph_view), in legend order.
STYLES: dict[str, dict[str, Any]] = {
    "plan": {"color": PLAN_COLOR, "width": 4.0, "dash": "solid", "label": "plan path"},
    "done": {"color": "#868e96", "width": 1.6, "dash": "solid", "label": "explored"},
    "failed": {"color": "#e03131", "width": 1.8, "dash": "dash", "label": "failed"},
    "running": {"color": "#2f9e44", "width": 2.0, "dash": "dot", "label": "running"},
    "todo": {"color": "#ced4da", "width": 1.2, "dash": "dot", "label": "not run yet"},
}
_NODE_SIZE = 30  # px; arrows stop this far from node centres (half the size, plus a margin)


def _node_score(value: float) -> str:
    # Nodes are small: drop the leading zero of accuracies, as papers do in dense figures.
    return f"{value:.3f}"[1:] if 0.0 <= value < 0.9995 else f"{value:.3g}"


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
        A plotly figure: one subplot per panel, a legend of the edge kinds. What it shows,
        as data: :func:`~optuna_opplan.dashboard.graph_view`.

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
    view = graph_view(graph, progress_or_study, plan)
    layout = view.layout
    n_panels = len(layout.panels)
    fig = make_subplots(
        rows=1,
        cols=n_panels,
        subplot_titles=layout.titles if n_panels > 1 else None,
        shared_yaxes=True,
        horizontal_spacing=0.04 if n_panels > 1 else 0.0,
    )
    annotations: list[dict[str, Any]] = []
    lines: dict[str, tuple[list[float | None], list[float | None], int]] = {}
    hovers: dict[int, tuple[list[float], list[float], list[str]]] = {}
    for edge in view.edges:
        kind, panel = edge.kind, edge.panel
        style = STYLES[kind]
        (x0, y0), (x1, y1) = edge.start, edge.end
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
        label = edge.label
        if kind == "plan":
            label = f"<b>{label}</b><br><b>{edge.plan_epochs} ep</b>"
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
                    font=dict(size=10, color=PLAN_COLOR if kind == "plan" else "#343a40"),
                    bgcolor="rgba(255,255,255,0.85)",
                    borderpad=1,
                )
            )
        hx, hy, ht = hovers.setdefault(panel, ([], [], []))
        hx.append(mx)
        hy.append(my)
        ht.append(edge.hover)

    for key, (xs, ys, panel) in lines.items():
        kind = key.split(":")[0]
        style = STYLES[kind]
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

    for panel in range(n_panels):
        nodes = [n for n in view.nodes if n.panel == panel]
        fig.add_trace(
            go.Scatter(
                x=[n.position[0] for n in nodes],
                y=[n.position[1] for n in nodes],
                mode="markers+text",
                text=["–" if n.best is None else _node_score(n.best) for n in nodes],
                textfont=dict(size=10, color="#212529"),
                hovertext=[n.hover for n in nodes],
                hoverinfo="text",
                marker=dict(
                    size=_NODE_SIZE,
                    color=["#fff4e6" if n.on_plan else "white" for n in nodes],
                    symbol=["square" if n.goal else "circle" for n in nodes],
                    line=dict(
                        color=[PLAN_COLOR if n.on_plan else "#495057" for n in nodes],
                        width=[2.5 if n.on_plan else 1.2 for n in nodes],
                    ),
                ),
                showlegend=False,
                name="states",
                meta={"opplan": "states"},
            ),
            row=1,
            col=panel + 1,
        )
        x0, y0 = layout.initial[panel]
        fig.add_trace(
            go.Scatter(
                x=[x0],
                y=[y0],
                mode="markers+text",
                text=["init"],
                textfont=dict(size=9, color="white"),
                hovertext=[view.initial_hover],
                hoverinfo="text",
                marker=dict(size=_NODE_SIZE, color="#495057", symbol="circle"),
                showlegend=False,
                name="initial",
                meta={"opplan": "initial"},
            ),
            row=1,
            col=panel + 1,
        )

    for kind in view.kinds:
        style = STYLES[kind]
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
    fig.update_layout(
        title=dict(text=view.title, x=0.01, xanchor="left", font=dict(size=15)),
        template="simple_white",
        font=dict(family=FONT, size=11),
        margin=dict(l=60, r=10, t=60 if n_panels > 1 else 45, b=70),
        legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.13, yanchor="top"),
        hovermode="closest",
        meta={"opplan": "graph", "plan_score": None if view.plan is None else view.plan.score},
    )
    return fig
