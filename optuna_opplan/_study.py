from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.study import Study

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._plan import Plan
from optuna_opplan._plan import compute_plan
from optuna_opplan._progress import Progress
from optuna_opplan._protocol import KEY_CONFIG
from optuna_opplan._pruner import KneePointPruner
from optuna_opplan._queue import TransitionQueue
from optuna_opplan._sampler import LATER_DEFAULTS
from optuna_opplan._sampler import PlanningSampler
from optuna_opplan._storage import create_storage
from optuna_opplan._storage import storage_label


class ConfigMismatchError(RuntimeError):
    """The planning configuration of this process differs from the one stored in the study."""


class PlanIncompleteError(RuntimeError):
    """The plan was asked for before every transition finished."""


def _storage(storage: str | BaseStorage) -> BaseStorage:
    return create_storage(storage) if isinstance(storage, str) else storage


class StudyNotFoundError(KeyError):
    """No study of that name in the storage (a ``KeyError``, as Optuna's own)."""

    def __str__(self) -> str:  # KeyError would print the message quoted, as a key
        return str(self.args[0]) if self.args else ""


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
        KeyError: if the study does not exist.
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
    **sampler_kwargs: Any,
) -> Study:
    """Create (or load) a maximising study set up for planning on ``graph``.

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
        sampler_kwargs: Passed to :class:`PlanningSampler`.

    Raises:
        ConfigMismatchError: if the existing study was set up with another graph or setting.
        ValueError: if the existing study minimises.

    Example:
        >>> import optuna_opplan as op
        >>> graph = op.TransitionGraph.basic(clip_lengths=(8, 16), learning_rates=(0.1, 0.01))
        >>> study = op.create_planning_study(graph, study_name="ucf")
        >>> len(study.trials), len(graph.transitions)  # the out-of-initial ones, as waiting
        (4, 12)
    """
    sampler = PlanningSampler(graph, **sampler_kwargs)
    pruner = pruner or KneePointPruner()
    study = optuna.create_study(
        storage=None if storage is None else _storage(storage),
        study_name=study_name,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=load_if_exists,
    )
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ValueError(
            f"Study {study.study_name!r} minimises; a planning study must maximise its "
            "validation score."
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
    """
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

    Args:
        study: A planning study.
        partial: Compute the best plan from the transitions finished so far instead of
            raising while some are unfinished.

    Raises:
        PlanIncompleteError: if transitions are unfinished and ``partial`` is false.
        GoalUnreachableError: if every path to the goal states went through failed edges.
    """
    sampler, _ = planning_parts(study)
    progress = sampler.progress(study)
    if not progress.is_complete and not partial:
        counts = {k: v for k, v in progress.counts().items() if v}
        raise PlanIncompleteError(
            f"Study {study.study_name!r} has unfinished transitions ({counts}); run workers "
            "until they finish, or pass partial=True for the best plan so far."
        )
    return compute_plan(sampler.graph, progress.results, score=sampler.score)


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
