"""Dashboard views of planning studies: graph figure, curve figures, plan markdown, publish."""

from __future__ import annotations

from collections.abc import Callable
import subprocess
import sys
from typing import Any

import numpy as np
import optuna
import optuna_dashboard
import pytest

import optuna_opplan as op
from optuna_opplan import dashboard
from optuna_opplan.dashboard._graph_data import layout_of
from optuna_opplan.dashboard._graph_figure import STYLES
from optuna_opplan.dashboard._graph_figure import _node_score
from optuna_opplan.dashboard._notes import _NoteTarget
from optuna_opplan.simulation import SimulatedObjective

PLAN_COLOR = STYLES["plan"]["color"]


def _bad(value: Any) -> Any:
    """A wrongly typed argument, passed on purpose."""
    return value


def _study(
    graph: op.TransitionGraph,
    objective: Callable[[optuna.Trial], Any] | None = None,
    max_transitions: int | None = None,
) -> optuna.Study:
    study = optuna.create_study(
        direction="maximize",
        sampler=op.PlanningSampler(graph),
        # The paper rule: these figures draw its knee; the improve rule has its own test.
        pruner=op.KneePointPruner(delay=3, max_epochs=40, rule="paper"),
    )
    op.run_worker(study, objective or SimulatedObjective(seed=0), max_transitions=max_transitions)
    return study


def _small_graph() -> op.TransitionGraph:
    return op.TransitionGraph.basic(
        clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("uniform",)
    )


@pytest.fixture(scope="module")
def finished() -> dict[str, tuple[op.TransitionGraph, optuna.Study]]:
    graphs = {"basic": op.TransitionGraph.basic(), "extended": op.TransitionGraph.extended()}
    return {name: (graph, _study(graph)) for name, graph in graphs.items()}


@pytest.fixture(scope="module")
def with_failure() -> tuple[op.TransitionGraph, optuna.Study, str]:
    graph = op.TransitionGraph.basic(samplings=("uniform",))
    # A transition into a state with another way in, so every state stays reachable.
    failing = next(
        t.key
        for t in graph.transitions
        if t.source is not None and len(graph.predecessors(t.target)) > 1
    )
    simulated = SimulatedObjective(seed=0)

    def objective(trial: optuna.Trial) -> None:
        if op.current_transition(trial).transition.key == failing:
            raise op.TransitionFailed("loss became NaN")
        simulated(trial)

    return graph, _study(graph, objective), failing


def _arrows(fig: Any) -> list[Any]:
    return [a for a in fig.layout.annotations if a.showarrow]


def _arrow_ends(fig: Any, color: str) -> set[tuple[float, float, float, float, str]]:
    return {(a.ax, a.ay, a.x, a.y, a.xref) for a in _arrows(fig) if a.arrowcolor == color}


def _expected_ends(
    graph: op.TransitionGraph, transitions: Any
) -> set[tuple[float, float, float, float, str]]:
    layout = layout_of(graph)
    ends = set()
    for t in transitions:
        panel = layout.panel_of[t.target]
        x0, y0 = layout.initial[panel] if t.source is None else layout.pos[t.source]
        x1, y1 = layout.pos[t.target]
        ends.add((x0, y0, x1, y1, "x" if panel == 0 else f"x{panel + 1}"))
    return ends


def _traces(fig: Any, tag: str) -> list[Any]:
    return [t for t in fig.data if (t.meta or {}).get("opplan") == tag]


# ----------------------------------------------------------------------------- graph data
def test_graph_view_is_data_and_needs_no_plotly() -> None:
    code = (
        "import sys\n"
        "sys.modules['plotly'] = None  # any import of plotly fails\n"
        "import optuna_opplan as op\n"
        "from optuna_opplan.dashboard import graph_view\n"
        "graph = op.TransitionGraph.basic(clip_lengths=(8, 16), learning_rates=(0.1,))\n"
        "view = graph_view(graph, op.Progress(graph, []))\n"
        "print(len(view.edges), len(view.nodes), view.kinds)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    graph = op.TransitionGraph.basic(clip_lengths=(8, 16), learning_rates=(0.1,))
    assert out.stdout.split()[:2] == [str(len(graph.transitions)), str(len(graph.states))]


def test_graph_view_marks_the_plan_failures_and_best_scores(
    with_failure: tuple[op.TransitionGraph, optuna.Study, str],
) -> None:
    graph, study, failing = with_failure
    view = dashboard.graph_view(graph, study)
    plan = op.get_plan(study)
    assert view.plan == plan
    assert view.plan_path == [t.key for t in plan.transitions]
    kinds = {e.transition.key: e.kind for e in view.edges}
    assert [k for k, kind in kinds.items() if kind == "plan"] == view.plan_path
    assert kinds[failing] == "failed"
    assert {kinds[t.key] for t in graph.transitions} <= {"plan", "done", "failed"}
    by_key = {e.transition.key: e for e in view.edges}
    assert by_key[failing].label == "✕ failed" and by_key[failing].score is None
    progress = op.get_progress(study)
    for edge in view.edges:
        result = progress.statuses[edge.transition.key].result
        if result is not None:
            assert edge.score == result.edge_score(progress.score)
        epochs = edge.plan_epochs
        assert (epochs is None) == (edge.kind != "plan")
    stages = dict(zip(view.plan_path, (r.epochs for r in plan.results)))
    assert {e.transition.key: e.plan_epochs for e in view.edges if e.kind == "plan"} == stages
    for node in view.nodes:
        winner = progress.winners.get(node.state)
        assert node.best == (None if winner is None else winner.score)
        assert node.on_plan == (node.state in {t.target for t in plan.transitions})
    assert view.title.startswith(f"Transition graph: plan {plan.score:.4f}")


# --------------------------------------------------------------------------- graph figure
@pytest.mark.parametrize("name", ["basic", "extended"])
def test_graph_figure_draws_every_transition_and_highlights_the_plan(
    finished: dict[str, tuple[op.TransitionGraph, optuna.Study]], name: str
) -> None:
    graph, study = finished[name]
    plan = op.get_plan(study)
    fig = dashboard.graph_figure(graph, study)

    assert fig.layout.title.text == (
        f"Transition graph: plan {plan.score:.4f} in {plan.total_epochs} epochs"
    )
    # One panel per sampling strategy, nine states in each.
    titles = {a.text for a in fig.layout.annotations if not a.showarrow}
    assert {"sampling = consecutive", "sampling = uniform"} <= titles
    assert [len(t.x) for t in _traces(fig, "states")] == [9, 9]
    # Every transition finished, so every one is an arrow; the plan's in the plan colour.
    assert len(_arrows(fig)) == len(graph.transitions)
    assert _arrow_ends(fig, PLAN_COLOR) == _expected_ends(graph, plan.transitions)
    labels = [a.text for a in fig.layout.annotations if a.font.color == PLAN_COLOR]
    for stage_epochs in plan.epochs:
        assert any(f"<b>{stage_epochs} ep</b>" in label for label in labels)
    # The plan's states are drawn with the plan colour, the others not.
    layout = layout_of(graph)
    for panel, trace in enumerate(_traces(fig, "states")):
        states = [s for s in graph.states if layout.panel_of[s] == panel]
        assert list(zip(trace.x, trace.y)) == [layout.pos[s] for s in states]
        on_plan = [colour == PLAN_COLOR for colour in trace.marker.line.color]
        assert on_plan == [s in plan.states for s in states]


def test_graph_figure_lays_states_out_as_the_paper() -> None:
    graph = op.TransitionGraph.extended()
    layout = layout_of(graph)
    cases = [
        ({"sampling": "consecutive", "clip_length": 16, "lr": 0.01}, 0, (0.0, 0.0)),
        ({"sampling": "consecutive", "clip_length": 64, "lr": 0.01}, 0, (2.0, 0.0)),
        ({"sampling": "uniform", "clip_length": 16, "lr": 0.0001}, 1, (0.0, -2.0)),
        ({"sampling": "uniform", "clip_length": 64, "lr": 0.0001}, 1, (2.0, -2.0)),
    ]
    for params, panel, position in cases:
        state = op.State.from_params(params, ("sampling", "clip_length", "lr"))
        assert layout.panel_of[state] == panel
        assert layout.pos[state] == position
    # The initial model sits above the two start states (clip 16 and 32 at lr 0.01).
    assert layout.initial == ((0.5, 0.8), (0.5, 0.8))
    assert layout.x_ticks[1] == ("16", "32", "64")
    assert layout.y_ticks[1] == ("0.01", "0.001", "0.0001")


def test_graph_figure_scores_edges_and_states(
    finished: dict[str, tuple[op.TransitionGraph, optuna.Study]],
) -> None:
    graph, study = finished["basic"]
    progress = op.get_progress(study)
    fig = dashboard.graph_figure(graph, progress)
    labels = " ".join(str(a.text) for a in fig.layout.annotations)
    for result in progress.results.values():
        assert f"{result.score:.3f}" in labels
    node_text = [text for trace in _traces(fig, "states") for text in trace.text]
    winner = progress.winners[op.get_plan(study).goal]
    assert winner is not None
    assert _node_score(winner.score) in node_text


def test_failed_edges_are_dashed_and_red(
    with_failure: tuple[op.TransitionGraph, optuna.Study, str],
) -> None:
    graph, study, failing = with_failure
    fig = dashboard.graph_figure(graph, study)
    (failed,) = _traces(fig, "edges:failed")
    assert failed.line.dash == "dash"
    assert failed.line.color == STYLES["failed"]["color"]
    (x0, y0, x1, y1, _) = _expected_ends(graph, [graph.transition(failing)]).pop()
    assert list(failed.x) == [x0, x1, None]
    assert list(failed.y) == [y0, y1, None]
    assert any(a.text == "✕ failed" for a in fig.layout.annotations)
    assert "failed" in [t.name for t in fig.data if t.showlegend is not False]
    # The failed transition has no arrow: arrows are the other, successful ones.
    assert len(_arrows(fig)) == len(graph.transitions) - 1


def test_partial_study_shows_progress_without_a_plan() -> None:
    graph = op.TransitionGraph.basic()
    study = _study(graph, max_transitions=3)
    fig = dashboard.graph_figure(graph, study)
    assert (
        fig.layout.title.text
        == f"Transition graph: 3 of {len(graph.transitions)} transitions done"
    )
    assert _arrow_ends(fig, PLAN_COLOR) == set()
    assert len(_arrows(fig)) == 3
    (todo,) = [t for t in fig.data if (t.meta or {}).get("opplan") == "legend:todo"]
    assert todo.name == "not run yet"


def test_running_transition_is_drawn_while_it_trains() -> None:
    graph = _small_graph()
    seen: dict[str, Any] = {}
    simulated = SimulatedObjective(seed=0)

    def capture(trial: optuna.Trial) -> None:
        study = trial.study
        seen["graph"] = dashboard.graph_figure(graph, study)
        seen["curve"] = dashboard.curve_figure(study._storage.get_trial(trial._trial_id))
        seen["ids"] = dashboard.publish(study)
        seen["note"] = optuna_dashboard.get_note(study)

    def objective(trial: optuna.Trial) -> None:
        report = trial.report

        def report_then_look(value: float, step: int) -> None:
            report(value, step)
            if step == 2 and not seen:  # mid-training of the first transition
                capture(trial)

        trial.report = report_then_look  # type: ignore[method-assign]
        simulated(trial)

    _study(graph, objective)
    assert "1 running" in seen["graph"].layout.title.text
    assert len(_arrow_ends(seen["graph"], STYLES["running"]["color"])) == 1
    assert "epochs so far" in seen["curve"].layout.title.text
    assert [t.meta["opplan"] for t in seen["curve"].data] == ["epoch0", "reported"]
    assert seen["ids"] == [dashboard.GRAPH_FIGURE_ID]  # no finished transition yet: no curves
    assert "Planning in progress" in seen["note"]
    assert "| running transition | trial |" in seen["note"]


def test_explicit_plan_is_highlighted_on_a_partial_study() -> None:
    graph = _small_graph()
    study = _study(graph)
    plan = op.get_plan(study)
    # The same trials minus the last one: unfinished, but the given plan is still drawn.
    progress = op.Progress(graph, study.trials[:-1])
    fig = dashboard.graph_figure(graph, progress, plan)
    assert _arrow_ends(fig, PLAN_COLOR) == _expected_ends(graph, plan.transitions)


@pytest.mark.parametrize(
    "axes, rule",
    [
        # One moving axis: a row per panel.
        (
            [op.Axis("sampling", ("a", "b"), "fixed"), op.Axis("size", (1, 2, 3), "increasing")],
            "basic",
        ),
        # Two moving axes without the paper's names: first across, second down.
        (
            [op.Axis("width", (1, 2), "increasing"), op.Axis("decay", (0.1, 0.01), "decreasing")],
            "basic",
        ),
        # Three moving axes: laid out by depth.
        (
            [
                op.Axis("a", (1, 2), "increasing"),
                op.Axis("b", (1, 2), "increasing"),
                op.Axis("c", (2, 1), "decreasing"),
            ],
            "basic",
        ),
    ],
)
def test_generic_graphs_get_distinct_positions(axes: list[op.Axis], rule: str) -> None:
    graph = op.TransitionGraph(axes, rule=rule)
    layout = layout_of(graph)
    for panel in range(len(layout.panels)):
        spots = [layout.pos[s] for s in graph.states if layout.panel_of[s] == panel]
        assert len(spots) == len(set(spots))
        assert layout.initial[panel] not in spots
    fig = dashboard.graph_figure(graph, op.Progress(graph, []))
    assert len(_traces(fig, "edges:todo")) == len(layout.panels)
    assert fig.layout.title.text.startswith("Transition graph: 0 of ")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda g, s: dashboard.graph_figure(_bad("graph"), s), "must be a TransitionGraph"),
        (lambda g, s: dashboard.graph_figure(g, _bad(42)), "must be an optuna_opplan.Progress"),
        (lambda g, s: dashboard.graph_figure(_small_graph(), s), "another graph"),
        (
            lambda g, s: dashboard.graph_figure(g, s, plan=_bad("plan")),
            "must be an optuna_opplan.Plan",
        ),
        (lambda g, s: dashboard.graph_figure(g, optuna.create_study()), "not a PlanningSampler"),
        (lambda g, s: dashboard.plan_markdown(_bad(None)), "must be an optuna_opplan.Plan"),
        (lambda g, s: dashboard.curve_figure(_bad(s.trials)), "must be an optuna FrozenTrial"),
        (lambda g, s: dashboard.curves_figure([]), "is empty"),
        (lambda g, s: dashboard.curves_figure(_bad(s.trials[0])), "sequence of FrozenTrial"),
        (lambda g, s: dashboard.curves_figure(s.trials, selected=999), "must be one of"),
        (lambda g, s: dashboard.publish(optuna.create_study()), "not a PlanningSampler"),
        (lambda g, s: dashboard.publish(_bad("study")), "must be an optuna Study"),
    ],
)
def test_arguments_are_validated(
    finished: dict[str, tuple[op.TransitionGraph, optuna.Study]],
    call: Callable[[op.TransitionGraph, optuna.Study], Any],
    message: str,
) -> None:
    graph, study = finished["basic"]
    with pytest.raises(ValueError, match=message):
        call(graph, study)


def test_curve_figure_rejects_trials_outside_planning() -> None:
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(ValueError, match="not a planning transition"):
        dashboard.curve_figure(study.trials[0])


# --------------------------------------------------------------------------- curve figures
@pytest.mark.parametrize("index", [0, 5, -1])
def test_curve_figure_marks_knee_and_kept_epoch(
    finished: dict[str, tuple[op.TransitionGraph, optuna.Study]], index: int
) -> None:
    _, study = finished["basic"]
    trial = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE][index]
    result = op.TransitionResult.from_dict(trial.system_attrs["opplan:result"])
    fig = dashboard.curve_figure(trial)
    by_tag = {t.meta["opplan"]: t for t in fig.data}
    assert set(by_tag) == {"epoch0", "reported", "fit", "knee", "kept"}
    assert result.epochs_trained is not None
    assert list(by_tag["reported"].x) == list(range(1, result.epochs_trained + 1))
    assert by_tag["knee"].meta["epoch"] == result.knee_epoch
    assert set(by_tag["knee"].x) == {result.knee_epoch}
    # The marker on the knee line is the fitted peak the plan scored the transition with.
    assert by_tag["knee"].y[-1] == pytest.approx(result.score, abs=1e-9)
    assert list(by_tag["kept"].x) == [result.epochs]
    assert by_tag["kept"].y[0] == pytest.approx(result.observed)
    # The rebuilt curve is the one a fresh, deterministic fit of the values gives.
    values = [by_tag["epoch0"].y[0], *by_tag["reported"].y]
    refit = op.fit_knee(values, curve=trial.system_attrs["opplan:knee"]["curve"])
    fit_x = np.asarray(by_tag["fit"].x)
    np.testing.assert_allclose(by_tag["fit"].y, refit.predict(fit_x), atol=1e-9)
    assert f"knee t* = {result.knee_epoch}" in fig.layout.title.text


def test_curve_figure_of_a_failed_transition(
    with_failure: tuple[op.TransitionGraph, optuna.Study, str],
) -> None:
    _, study, failing = with_failure
    (trial,) = [t for t in study.trials if t.system_attrs["opplan:transition"] == failing]
    fig = dashboard.curve_figure(trial)
    assert fig.layout.title.text.endswith("· failed")
    assert "fit" not in {t.meta["opplan"] for t in fig.data}


def test_curves_figure_switches_between_trials(
    finished: dict[str, tuple[op.TransitionGraph, optuna.Study]],
) -> None:
    _, study = finished["basic"]
    trials = study.trials[:4]
    fig = dashboard.curves_figure(trials, selected=trials[2].number)
    menu = fig.layout.updatemenus[0]
    assert menu.active == 2
    assert len(menu.buttons) == 4
    visible = [bool(t.visible) for t in fig.data]
    owners = [t.legendgroup for t in fig.data]
    assert {o for o, v in zip(owners, visible) if v} == {str(trials[2].number)}
    for button, trial in zip(menu.buttons, trials):
        mask = button.args[0]["visible"]
        assert {o for o, v in zip(owners, mask) if v} == {str(trial.number)}
        assert button.label.startswith(f"#{trial.number} ")


# ------------------------------------------------------------------------ markdown, publish
def test_plan_markdown_has_a_row_per_stage(
    finished: dict[str, tuple[op.TransitionGraph, optuna.Study]],
) -> None:
    _, study = finished["extended"]
    plan = op.get_plan(study)
    text = dashboard.plan_markdown(plan)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == "| stage | sampling | clip_length | lr | epochs | score | trial |"
    assert len(rows) == 1 + len(plan.states) + 1
    for i, (state, epochs, trial) in enumerate(
        zip(plan.states, plan.epochs, [t for t, r in zip(plan.trials, plan.results) if r.epochs])
    ):
        cells = [c.strip() for c in rows[1 + i].strip("|").split("|")]
        assert cells[1:4] == [
            str(v) if not isinstance(v, float) else f"{v:g}" for v in state.params.values()
        ]
        assert cells[4] == str(epochs)
        assert cells[6] == str(trial)
    assert f"**{plan.total_epochs}**" in rows[-1]


def _dashboard_attrs(study: optuna.Study) -> dict[str, Any]:
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {k: v for k, v in attrs.items() if k.startswith("dashboard:")}


def test_publish_is_idempotent_and_notes_every_finished_transition(
    with_failure: tuple[op.TransitionGraph, optuna.Study, str],
) -> None:
    graph, study, failing = with_failure
    assert dashboard.publish(study) == [dashboard.GRAPH_FIGURE_ID, dashboard.CURVES_FIGURE_ID]
    first = _dashboard_attrs(study)
    assert dashboard.publish(study) == [dashboard.GRAPH_FIGURE_ID, dashboard.CURVES_FIGURE_ID]
    assert _dashboard_attrs(study) == first

    figure_ids = {k.split(":")[2] for k in first if k.startswith("dashboard:plot_data:")}
    assert figure_ids == {dashboard.GRAPH_FIGURE_ID, dashboard.CURVES_FIGURE_ID}
    note = optuna_dashboard.get_note(study)
    assert dashboard.plan_markdown(op.get_plan(study)) in note
    assert "| failed transition | reason |" in note and failing in note
    for trial in study.trials:
        body = optuna_dashboard.get_note(_NoteTarget(study, trial._trial_id))
        assert f"entry #{trial.number}" in body
        if trial.state == optuna.trial.TrialState.COMPLETE:
            knee = trial.system_attrs["opplan:result"]["knee_epoch"]
            assert f"| knee t* | {knee} |" in body
        else:
            assert "loss became NaN" in body


def test_publish_updates_as_planning_goes_on() -> None:
    graph = _small_graph()
    study = optuna.create_study(
        direction="maximize",
        sampler=op.PlanningSampler(graph),
        pruner=op.KneePointPruner(delay=3, max_epochs=40),
    )
    assert dashboard.publish(study) == [dashboard.GRAPH_FIGURE_ID]  # nothing ran yet
    op.run_worker(study, SimulatedObjective(seed=0), max_transitions=2)
    dashboard.publish(study)
    assert "Planning in progress" in optuna_dashboard.get_note(study)
    op.run_worker(study, SimulatedObjective(seed=0))
    dashboard.publish(study)
    note = optuna_dashboard.get_note(study)
    assert "Planning in progress" not in note
    assert dashboard.plan_markdown(op.get_plan(study)) in note


def test_the_knee_view_shows_what_the_improve_rule_decided_on() -> None:
    graph = _small_graph()
    study = optuna.create_study(
        direction="maximize",
        sampler=op.PlanningSampler(graph),
        pruner=op.KneePointPruner(rule="improve", max_epochs=60),
    )
    op.run_worker(study, SimulatedObjective(seed=0))
    dashboard.publish(study)
    for trial in study.trials:
        record = trial.system_attrs["opplan:knee"]
        assert record["rule"] == "improve"
        body = optuna_dashboard.get_note(_NoteTarget(study, trial._trial_id))
        assert "| stopping rule | improve |" in body
        if record["reason"] == "no_improvement":
            assert f"| probability of improvement | {record['probability']:.3f} " in body
            title = dashboard.curve_figure(trial).layout.title.text
            assert f"P(improve) {record['probability']:.3f} < 0.02 (no_improvement)" in title
    assert any(t.system_attrs["opplan:knee"]["reason"] == "no_improvement" for t in study.trials)


def knee_epoch(fig: Any) -> int:
    (knee,) = _traces(fig, "knee")
    return int(knee.meta["epoch"])


def test_a_minimised_loss_is_drawn_in_its_own_units_with_the_lowest_plan() -> None:
    graph = _small_graph()

    def loss(trial: optuna.Trial) -> None:
        # A loss falling to its lowest point near epoch 8, then rising; lower for lr 0.01.
        step = op.current_transition(trial)
        base = 0.4 if step.params["lr"] == 0.01 else 0.6
        for epoch in range(1, 60):
            trial.report(base + 1.2 * 0.6**epoch + 0.003 * (epoch - 8) ** 2, epoch)
            if trial.should_prune():
                break

    study = optuna.create_study(
        direction="minimize",
        sampler=op.PlanningSampler(graph, initial_score=2.0),
        pruner=op.KneePointPruner(delay=3, max_epochs=60),
    )
    op.run_worker(study, loss)
    plan = op.get_plan(study)
    trial = study.trials[0]
    fig = dashboard.curve_figure(trial)
    fit = _traces(fig, "fit")[0]
    reported = dict(zip(_traces(fig, "reported")[0].x, _traces(fig, "reported")[0].y))
    # The fit follows the reported loss (not its mirror image) ...
    fitted = dict(zip(fit.x, fit.y))
    errors = [abs(fitted[float(e)] - v) for e, v in reported.items()]
    assert sum(errors) / len(errors) < 0.1
    # A mirrored fit would peak where the loss is lowest; this one bottoms out there.
    assert min(fitted, key=lambda e: fitted[e]) == pytest.approx(knee_epoch(fig), abs=2)
    # ... and the knee sits at the loss's lowest point, not its highest.
    assert 5 <= knee_epoch(fig) <= 11
    # The DP kept the lowest loss into the goal, and the graph figure highlights that plan.
    progress = op.get_progress(study)
    into_goal = [progress.statuses[t.key].result for t in graph.predecessors(plan.goal)]
    assert plan.score == min(r.score for r in into_goal if r is not None)
    fig = dashboard.graph_figure(graph, study)
    assert _arrow_ends(fig, PLAN_COLOR) == _expected_ends(graph, plan.transitions)


def test_republishing_reads_the_notes_once_not_once_per_trial(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = _study(op.TransitionGraph.basic(learning_rates=(0.1, 0.01)))
    dashboard.publish(study)  # every worker publishes at its end: the later ones change nothing
    notes = {
        t.number: optuna_dashboard.get_note(_NoteTarget(study, t._trial_id)) for t in study.trials
    }
    storage = study._storage
    reads = []
    real = storage.get_study_system_attrs

    def counted(study_id: int) -> dict[str, Any]:
        reads.append(study_id)
        return real(study_id)

    monkeypatch.setattr(storage, "get_study_system_attrs", counted)
    dashboard.publish(study)
    # A fixed number (the study note, the figures, one read for all trial notes), not one
    # read per trial.
    assert len(study.trials) >= 8
    assert len(reads) <= 4
    monkeypatch.undo()
    assert {
        t.number: optuna_dashboard.get_note(_NoteTarget(study, t._trial_id)) for t in study.trials
    } == notes


def test_a_published_note_replaces_a_longer_one_written_by_hand() -> None:
    study = _study(_small_graph())
    dashboard.publish(study)
    trial = study.trials[0]
    target = _NoteTarget(study, trial._trial_id)
    published = optuna_dashboard.get_note(target)
    optuna_dashboard.save_note(target, "x" * 5000)  # three chunks of a system attribute
    dashboard.publish(study)
    assert optuna_dashboard.get_note(target) == published
    dashboard.publish(study)  # unchanged: nothing written
    assert optuna_dashboard.get_note(target) == published
