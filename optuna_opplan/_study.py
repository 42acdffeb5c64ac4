from __future__ import annotations

import dataclasses
import json
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.study import Study

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._plan import GoalUnreachableError
from optuna_opplan._plan import Plan
from optuna_opplan._plan import check_direction
from optuna_opplan._plan import compute_plan
from optuna_opplan._progress import Progress
from optuna_opplan._protocol import KEY_CONFIG
from optuna_opplan._protocol import Status
from optuna_opplan._pruner import KneePointPruner
from optuna_opplan._queue import TransitionQueue
from optuna_opplan._sampler import LATER_DEFAULTS
from optuna_opplan._sampler import PlanningSampler
from optuna_opplan._sampler import study_direction
from optuna_opplan._storage import create_storage
from optuna_opplan._storage import storage_label


class ConfigMismatchError(RuntimeError):
    """The planning configuration of this process differs from the one stored in the study."""


class PlanIncompleteError(RuntimeError):
    """The plan was asked for before every transition finished."""


class StudyNotFoundError(KeyError):
    """No study of that name in the storage (a ``KeyError``, as Optuna's own)."""

    def __str__(self) -> str:  # KeyError would print the message quoted, as a key
        return str(self.args[0]) if self.args else ""


def _storage(storage: str | BaseStorage) -> BaseStorage:
    return create_storage(storage) if isinstance(storage, str) else storage


def _load_study(study_name: str, storage: BaseStorage, **kwargs: Any) -> Study:
    try:
        return optuna.load_study(study_name=study_name, storage=storage, **kwargs)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
        known = f"; it holds {', '.join(map(repr, names[:10]))}" if names else ", which is empty"
        more = f" and {len(names) - 10} more" if len(names) > 10 else ""
        raise StudyNotFoundError(
            f"There is no study {study_name!r} in {storage_label(storage)}{known}{more}."
        ) from None


def load_planning_study(*, study_name: str, storage: str | BaseStorage) -> Study:
    """Load a planning study with the sampler and pruner its workers were configured with.

    The graph and the settings come from the study itself (every worker stores and checks
    them), so status and plan tools need nothing but the storage and the name.

    Args:
        study_name: The study's name.
        storage: A storage URL or journal path (see :func:`create_storage`), or a storage.

    Raises:
        StudyNotFoundError: (a ``KeyError``) if the study does not exist; the message names
            it, the storage and the studies that do exist.
        ValueError: if it is not a planning study (no worker has run on it yet).

    Example:

        >>> import os, tempfile
        >>> import optuna, optuna_opplan as op
        >>> from optuna_opplan.simulation import SimulatedObjective
        >>> tmp = tempfile.mkdtemp()
        >>> url = f"sqlite:///{os.path.join(tmp, 'plan.db')}"
        >>> graph = op.TransitionGraph.basic(clip_lengths=(8,), learning_rates=(0.1, 0.01))
        >>> study = op.create_planning_study(
        ...     graph, storage=url, study_name="demo", pruner=op.KneePointPruner(delay=3)
        ... )
        >>> op.run_worker(study, SimulatedObjective(), max_transitions=1)
        1
        >>> again = op.load_planning_study(study_name="demo", storage=url)
        >>> again.sampler.graph.fingerprint() == graph.fingerprint()
        True
        >>> again.pruner.delay
        3
    """
    resolved = _storage(storage)
    study = _load_study(study_name, resolved)
    config = study._storage.get_study_system_attrs(study._study_id).get(KEY_CONFIG)
    if not isinstance(config, dict):
        raise ValueError(
            f"Study {study_name!r} in {storage_label(resolved)} is not a planning study: no "
            "planning configuration is stored in it yet (run `opplan init` or a worker first)."
        )
    config = {**LATER_DEFAULTS, **config}
    graph = TransitionGraph.from_dict(config["graph"])
    sampler = PlanningSampler(
        graph,
        score=config["score"],
        max_retries=config["max_retries"],
        max_deaths=config["max_deaths"],
        death_backoff=config["death_backoff"],
        initial_score=config["initial_score"],
    )
    pruner = KneePointPruner.from_config(config.get("pruner", {}))
    return _load_study(study_name, resolved, sampler=sampler, pruner=pruner)


def create_planning_study(
    graph: TransitionGraph,
    *,
    storage: str | BaseStorage | None = None,
    study_name: str | None = None,
    pruner: KneePointPruner | None = None,
    load_if_exists: bool = True,
    direction: str = "maximize",
    **sampler_kwargs: Any,
) -> Study:
    """Create (or load) a study set up for planning on ``graph``.

    The configuration is stored in the study at once, so a worker or a tool that loads it
    later gets the same graph and settings, and a worker with different ones is refused. The
    transitions out of the initial model are enqueued; each later one is enqueued by a worker
    once it becomes ready. Any number of processes may call this at once on the same storage.

    Args:
        graph: The transition graph.
        storage: A storage URL or journal path (see :func:`create_storage`), a storage, or
            :obj:`None` for an in-memory study.
        study_name: The study's name.
        pruner: The knee pruner; ``KneePointPruner()`` by default.
        load_if_exists: Load the study if it exists (its stored configuration must match).
        direction: ``"maximize"`` if the objectives report a score such as accuracy,
            ``"minimize"`` for a loss.
        sampler_kwargs: Passed to :class:`PlanningSampler` (``score``, ``max_retries``,
            ``initial_score``, ``seed``).

    Raises:
        ConfigMismatchError: if the existing study was set up with another graph or setting.
        ValueError: if the existing study has the other direction.

    Example:
        >>> import optuna_opplan as op
        >>> graph = op.TransitionGraph.basic(clip_lengths=(8, 16), learning_rates=(0.1, 0.01))
        >>> study = op.create_planning_study(graph, study_name="ucf")
        >>> len(study.trials), len(graph.transitions)  # the out-of-initial ones, as waiting
        (4, 12)
    """
    check_direction(direction)
    sampler = PlanningSampler(graph, **sampler_kwargs)
    pruner = pruner or KneePointPruner()
    study = optuna.create_study(
        storage=None if storage is None else _storage(storage),
        study_name=study_name,
        direction="minimize" if direction == "minimize" else "maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=load_if_exists,
    )
    if study_direction(study) != direction:
        raise ValueError(
            f"Study {study.study_name!r} in {storage_label(study._storage)} was created to "
            f"{study_direction(study)}, not to {direction}: pass "
            f"direction={study_direction(study)!r}, or use another study name."
        )
    check_config(study, sampler, pruner)
    queue = TransitionQueue(study, sampler)
    queue.reconcile(queue.progress(), only=queue.start_keys())
    return study


def planning_parts(study: Study) -> tuple[PlanningSampler, KneePointPruner]:
    """The study's planning sampler and knee pruner; a clear error if it has others."""
    sampler, pruner = study.sampler, study.pruner
    if not isinstance(sampler, PlanningSampler):
        raise ValueError(
            "The study's sampler must be an optuna_opplan.PlanningSampler, but got "
            f"{type(sampler).__name__}: create the study with sampler=PlanningSampler(graph)."
        )
    if not isinstance(pruner, KneePointPruner):
        raise ValueError(
            "The study's pruner must be an optuna_opplan.KneePointPruner, but got "
            f"{type(pruner).__name__}: create the study with pruner=KneePointPruner(...)."
        )
    return sampler, pruner


def check_config(study: Study, sampler: PlanningSampler, pruner: KneePointPruner) -> None:
    """Store the planning configuration (sampler and pruner settings) in the study, or check
    that it matches the stored one.

    Raises:
        ConfigMismatchError: when the study was set up with another graph or setting.
        ValueError: when the study has several objectives.
    """
    sampler.check_direction(study)
    stored = study._storage.get_study_system_attrs(study._study_id).get(KEY_CONFIG)
    mine = {**sampler.config(), "pruner": pruner.config()}
    if isinstance(stored, dict) and isinstance(stored.get("pruner"), dict):
        # Configs stored before the pruner had rules ran the paper's.
        stored = {**stored, "pruner": {"rule": "paper", **stored["pruner"]}}
    if stored is None:
        study._storage.set_study_system_attr(study._study_id, KEY_CONFIG, mine)
        return
    # A study stored before a setting existed has its default (and keeps its stored config).
    stored = {**LATER_DEFAULTS, **stored}
    if stored != mine:
        raise ConfigMismatchError(_describe_mismatch(study.study_name, stored, mine))


def get_plan(study: Study, *, partial: bool = False) -> Plan:
    """The plan of a planning study: the DP over its finished transitions.

    The plan names the failed transitions it routed around (:attr:`Plan.failed`, with their
    last error), and in a partial plan the transitions not finished yet.

    Args:
        study: A planning study.
        partial: Compute the best plan from the transitions finished so far instead of
            raising while some are unfinished.

    Raises:
        PlanIncompleteError: if transitions are unfinished and ``partial`` is false.
        GoalUnreachableError: if no goal state can be reached through transitions that
            succeeded; the message names the transitions that failed and their errors (and,
            for a partial plan, those not finished yet).
    """
    sampler, _ = planning_parts(study)
    progress = sampler.progress(study)
    if not progress.is_complete and not partial:
        counts = {k: v for k, v in progress.counts().items() if v}
        raise PlanIncompleteError(
            f"Study {study.study_name!r} has unfinished transitions ({counts}); run workers "
            "until they finish, or ask for the best plan so far: "
            "get_plan(study, partial=True), or `opplan plan --partial`."
        )
    failed = failed_transitions(progress)
    unfinished = tuple(
        (s.transition.key, str(s.status)) for s in progress.statuses.values() if not s.finished
    )
    try:
        plan = compute_plan(
            sampler.graph, progress.results, score=sampler.score, direction=progress.direction
        )
    except GoalUnreachableError:
        raise GoalUnreachableError(_unreachable(study, progress, failed, unfinished)) from None
    return dataclasses.replace(plan, failed=failed, unfinished=unfinished)


def failed_transitions(progress: Progress) -> tuple[tuple[str, str], ...]:
    """The transitions that failed for their own reason, ``(key, last error)``; those left out
    only because their source became unreachable follow from these."""
    return tuple(
        (s.transition.key, s.reason)
        for s in progress.with_status(Status.FAILED)
        if not s.reason.startswith("source state")
    )


def _unreachable(
    study: Study,
    progress: Progress,
    failed: tuple[tuple[str, str], ...],
    unfinished: tuple[tuple[str, str], ...],
) -> str:
    goals = ", ".join(g.key for g in progress.graph.goal_states)
    text = f"Study {study.study_name!r}: no goal state ({goals}) is reachable"
    if unfinished:
        counts: dict[str, int] = {}
        for _, status in unfinished:
            counts[status] = counts.get(status, 0) + 1
        text += (
            " yet through the transitions finished so far; "
            + ", ".join(f"{n} {status}" for status, n in counts.items())
            + " transitions are not finished"
        )
    else:
        text += " through transitions that succeeded"
    if failed:
        shown = "; ".join(f"{key}: {error}" for key, error in failed[:5])
        more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
        text += f". Failed transitions ({len(failed)}): {shown}{more}"
    skipped = len(progress.with_status(Status.FAILED)) - len(failed)
    if skipped:
        text += f". {skipped} transitions out of states left unreachable were not trained"
    return text + "."


def get_progress(study: Study) -> Progress:
    """A snapshot of a planning study: status of each transition, resolved states."""
    sampler, _ = planning_parts(study)
    return sampler.progress(study)


def _describe_mismatch(study_name: str, stored: dict[str, Any], mine: dict[str, Any]) -> str:
    diffs = []
    for key in sorted(set(stored) | set(mine) - {"graph", "fingerprint"}):
        if key not in ("graph", "fingerprint") and stored.get(key) != mine.get(key):
            diffs.append(f"{key}: study has {stored.get(key)!r}, this worker {mine.get(key)!r}")
    theirs, ours = stored.get("graph", {}), mine["graph"]
    for key in ("axes", "rule", "start", "goals"):
        if theirs.get(key) != ours.get(key):
            diffs.append(
                f"graph {key}: study has {json.dumps(theirs.get(key))}, "
                f"this worker {json.dumps(ours.get(key))}"
            )
    if not diffs and stored.get("fingerprint") != mine["fingerprint"]:
        diffs.append(
            f"graph fingerprint: study has {stored.get('fingerprint')}, "
            f"this worker {mine['fingerprint']}"
        )
    return (
        f"This worker's planning configuration differs from the one study {study_name!r} was "
        "set up with, and mixing them would corrupt the plan: " + "; ".join(diffs) + "."
    )
