from __future__ import annotations

from typing import Any

from optuna.study import Study
from optuna.trial import FrozenTrial

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._plan import Plan
from optuna_opplan._progress import Progress
from optuna_opplan._protocol import KEY_SOURCE_TRIAL
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._protocol import OutcomeKind
from optuna_opplan._protocol import Status
from optuna_opplan._protocol import outcome_of
from optuna_opplan._sampler import PlanningSampler
from optuna_opplan.dashboard._curves import CURVES_FIGURE_ID
from optuna_opplan.dashboard._curves import Curve
from optuna_opplan.dashboard._curves import curves_figure
from optuna_opplan.dashboard._curves import read_curve
from optuna_opplan.dashboard._curves import transition_label
from optuna_opplan.dashboard._graph_data import fmt
from optuna_opplan.dashboard._graph_data import resolve_plan
from optuna_opplan.dashboard._graph_figure import GRAPH_FIGURE_ID
from optuna_opplan.dashboard._graph_figure import graph_figure


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
        cells = [str(i), *(fmt(stage["params"][n]) for n in names)]
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
    running = progress.with_status(Status.RUNNING)
    if running:
        lines += ["", "| running transition | trial |", "|---|---:|"]
        for s in running:
            number = "-" if s.running is None else str(s.running.number)
            lines.append(f"| `{s.transition.key}` | {number} |")
    failed = progress.with_status(Status.FAILED)
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
    if plan is not None and progress.with_status(Status.FAILED):
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


def _trial_note(curve: Curve) -> str:
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
        _, reason = outcome_of(trial)
        rows.append(("status", f"{trial.state.name.lower()}: {reason or 'no result'}"))
        if record.get("knee_epoch") is not None:
            rows.append(("last knee t*", str(record["knee_epoch"])))
    if record.get("rule"):
        rows.append(("stopping rule", str(record["rule"])))
    if record.get("rule") == "improve":
        rows.append(("last decision", f"epoch {record.get('epoch')}: {record.get('reason')}"))
        if record.get("probability") is not None:
            rows += [
                (
                    "probability of improvement",
                    f"{_num(record['probability'], '.3f')} (stops below "
                    f"{_num(record.get('threshold'), 'g')})",
                ),
                (
                    "gain that counts",
                    f"> {_num(record.get('tolerance'))} (noise {_num(record.get('noise'))})",
                ),
                ("expected gain", _num(record.get("expected_gain"))),
            ]
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
            f"### Transition {transition_label(curve.transition_key)}",
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


def _save_note_if_changed(
    target: Any, body: str, study_attrs: dict[str, Any] | None = None
) -> bool:
    """Save ``body`` as ``target``'s note unless it is already; ``study_attrs``: the study's
    system attributes, read once by the caller for many notes.

    optuna-dashboard's ``get_note`` and ``save_note`` each read every study system attribute
    (all notes of all trials): per trial that made publishing a finished 1,000-transition
    study on PostgreSQL take many minutes. With the attributes read once, a note is looked
    up in them and written the way ``save_note`` writes it (version, then the body's chunks,
    then the stale chunks of a longer old body emptied).
    """
    import optuna_dashboard

    try:
        from optuna_dashboard import _note
    except ImportError:  # another optuna-dashboard layout: the public, slower way
        study_attrs = None
    if study_attrs is None:
        # save_note bumps the note's version on every call: skip identical bodies, so that
        # publishing twice leaves the storage as it was.
        if optuna_dashboard.get_note(target) == body:
            return False
        optuna_dashboard.save_note(target, body)
        return True
    trial_id = getattr(target, "_trial_id", None)
    if _note.get_note_from_system_attrs(study_attrs, trial_id)["body"] == body:
        return False
    storage, study_id = target.storage, target.study._study_id
    version = study_attrs.get(_note.note_ver_key(trial_id), 0) + 1
    storage.set_study_system_attr(study_id, _note.note_ver_key(trial_id), version)
    chunks = _note.split_body(body, trial_id)
    for key, value in chunks.items():
        storage.set_study_system_attr(study_id, key, value)
    prefix = _note.note_str_key_prefix(trial_id)
    old = sum(1 for key in study_attrs if key.startswith(prefix))
    for i in range(len(chunks), old):
        storage.set_study_system_attr(study_id, f"{prefix}{i}", "")
    return True


def _noted_trials(study: Study) -> list[FrozenTrial]:
    trials = []
    for trial in study.get_trials(deepcopy=False):
        if KEY_TRANSITION not in trial.system_attrs or not trial.state.is_finished():
            continue
        if outcome_of(trial)[0] == OutcomeKind.SUPERSEDED:
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
    plan = resolve_plan(graph, progress, None)
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
    study_attrs = study._storage.get_study_system_attrs(study._study_id)
    for trial in trials:
        _save_note_if_changed(
            _NoteTarget(study, trial._trial_id), _trial_note(read_curve(trial)), study_attrs
        )
    return saved
