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

The package is not imported by :mod:`optuna_opplan`: plotly and optuna-dashboard are optional.
:func:`graph_view` (what the graph figure shows, as data) needs neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from optuna_opplan.dashboard._graph_data import EdgeView
from optuna_opplan.dashboard._graph_data import GraphView
from optuna_opplan.dashboard._graph_data import NodeView
from optuna_opplan.dashboard._graph_data import graph_view

if TYPE_CHECKING:
    from optuna_opplan.dashboard._curves import CURVES_FIGURE_ID
    from optuna_opplan.dashboard._curves import curve_figure
    from optuna_opplan.dashboard._curves import curves_figure
    from optuna_opplan.dashboard._graph_figure import GRAPH_FIGURE_ID
    from optuna_opplan.dashboard._graph_figure import graph_figure
    from optuna_opplan.dashboard._notes import plan_markdown
    from optuna_opplan.dashboard._notes import publish

__all__ = [
    "CURVES_FIGURE_ID",
    "GRAPH_FIGURE_ID",
    "EdgeView",
    "GraphView",
    "NodeView",
    "curve_figure",
    "curves_figure",
    "graph_figure",
    "graph_view",
    "plan_markdown",
    "publish",
]

# The drawing needs plotly: imported on first use, so the graph data works without it.
_DRAWING = {
    "CURVES_FIGURE_ID": "_curves",
    "curve_figure": "_curves",
    "curves_figure": "_curves",
    "GRAPH_FIGURE_ID": "_graph_figure",
    "graph_figure": "_graph_figure",
    "plan_markdown": "_notes",
    "publish": "_notes",
}


def __getattr__(name: str) -> Any:
    if name in _DRAWING:
        import importlib

        module = importlib.import_module(f"optuna_opplan.dashboard.{_DRAWING[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
