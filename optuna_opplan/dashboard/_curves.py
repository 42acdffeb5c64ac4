from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import plotly.graph_objects as go

from optuna_opplan._knee_fit import KNEE_CURVES
from optuna_opplan._knee_fit import KneeFit
from optuna_opplan._knee_fit import fit_knee
from optuna_opplan._protocol import KEY_KNEE
from optuna_opplan._protocol import KEY_RESULT
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._protocol import curve_of
from optuna_opplan._result import TransitionResult
from optuna_opplan.dashboard._graph_figure import FONT

CURVES_FIGURE_ID = "opplan-transition-curves"
"""The dashboard id of the learning-curves figure: publishing again overwrites it."""


@dataclass(frozen=True)
class Curve:
    """A transition trial's curve (:func:`~optuna_opplan._protocol.curve_of`, the series
    the pruner fits), its last knee record, its result and the fit to draw."""

    trial: FrozenTrial
    transition_key: str
    values: list[float]
    record: dict[str, Any]
    result: TransitionResult | None
    fit: KneeFit | None


def read_curve(trial: FrozenTrial) -> Curve:
    """The curve of a transition trial; a clear error for any other trial."""
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
    return Curve(trial, key, values, record, result, _recorded_fit(record, values))


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


def transition_label(key: str) -> str:
    """``uniform/8/0.1 → uniform/16/0.1`` for a transition key."""
    source, _, target = key.partition("->")
    return f"{_compact_key(source)} → {_compact_key(target)}"


def _compact_key(key: str) -> str:
    # "sampling=uniform,clip_length=32,lr=0.01" -> "uniform/32/0.01", like the graph's nodes.
    if "=" not in key:
        return key
    return "/".join(part.partition("=")[2] for part in key.split(","))


def _curve_traces(curve: Curve) -> list[go.Scatter]:
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


def _curve_title(curve: Curve, *, transition: bool = True) -> str:
    title = f"Trial {curve.trial.number}"
    if transition:
        title += f": {transition_label(curve.transition_key)}"
    details = []
    if curve.result is not None:
        if curve.result.knee_epoch is not None:
            details.append(f"knee t* = {curve.result.knee_epoch}")
        details.append(f"kept {curve.result.epochs} of {curve.result.epochs_trained} epochs")
    elif curve.trial.state == TrialState.FAIL:
        details.append("failed")
    elif not curve.trial.state.is_finished():
        details.append(f"{curve.trial.state.name.lower()}, {len(curve.values) - 1} epochs so far")
    improve = improve_summary(curve.record)
    if improve:
        details.append(improve)
    return title + (" · " + ", ".join(details) if details else "")


def improve_summary(record: dict[str, Any]) -> str:
    """What the "improve" rule decided on at its last decision, in one phrase."""
    reason = record.get("reason")
    if record.get("rule") != "improve" or not isinstance(reason, str):
        return ""
    probability, threshold = record.get("probability"), record.get("threshold")
    if isinstance(probability, (int, float)) and isinstance(threshold, (int, float)):
        sign = "<" if probability < threshold else ">="
        return f"P(improve) {probability:.3f} {sign} {threshold:g} ({reason})"
    return f"improve rule: {reason.replace('_', ' ')}"


def _curve_layout(fig: go.Figure, title: str) -> None:
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=14)),
        template="simple_white",
        font=dict(family=FONT, size=11),
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
    curve = read_curve(trial)
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
    curves = [read_curve(t) for t in trials]
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
            label=f"#{c.trial.number} {transition_label(c.transition_key)}",
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
