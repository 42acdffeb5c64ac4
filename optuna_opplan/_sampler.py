from __future__ import annotations

from collections.abc import Collection
from collections.abc import Sequence
import json
import logging
import threading
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.samplers import BaseSampler
from optuna.samplers import RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._plan import SCORES
from optuna_opplan._progress import KEY_ATTEMPT
from optuna_opplan._progress import KEY_CONFIG
from optuna_opplan._progress import KEY_EPOCH0
from optuna_opplan._progress import KEY_OUTCOME
from optuna_opplan._progress import KEY_RETRY_DELAY
from optuna_opplan._progress import KEY_SOURCE_TRIAL
from optuna_opplan._progress import KEY_TRANSITION
from optuna_opplan._progress import Progress
from optuna_opplan._progress import TransitionStatus
from optuna_opplan._state import INITIAL_KEY
from optuna_opplan._transition import Transition

_logger = logging.getLogger("optuna_opplan")

SOURCE_PARAM = "source"
TARGET_PARAM = "target"

DEFAULT_MAX_DEATHS = 20
DEFAULT_DEATH_BACKOFF = 30.0
# Settings added after studies were already stored: a stored config without them has these.
LATER_DEFAULTS: dict[str, Any] = {
    "max_deaths": DEFAULT_MAX_DEATHS,
    "death_backoff": DEFAULT_DEATH_BACKOFF,
}
# The wait before a retry after a death doubles with each death, up to this many times the
# first one.
MAX_BACKOFF_FACTOR = 8


class ConfigMismatchError(RuntimeError):
    """The planning configuration of this process differs from the one stored in the study."""


class _Claim(threading.local):
    trial_id: int | None = None


_claim = _Claim()


class PlanningSampler(BaseSampler):
    """A sampler that hands out the transitions of a :class:`TransitionGraph` as trials.

    Each trial is one transition, enqueued as a waiting trial once the transition is ready:
    its source state is resolved, i.e. every transition into it is finished. (What is still
    blocked shows in :func:`~optuna_opplan.dashboard.graph_figure` and ``opplan status``.)
    :func:`run_worker` claims ready transitions in topological order, with the longest
    remaining chain first; many workers on one storage each run a different one.

    Exactly once: a claim is the storage's atomic ``WAITING -> RUNNING`` change of one trial,
    and a transition never has two live trials that a worker would claim (the lowest-numbered
    waiting trial is the only one claimed; duplicates enqueued by a race are retired). A trial
    whose objective raises is replaced by a new waiting trial, at most ``max_retries`` times.
    A trial whose worker dies (it stops sending heartbeats: a SIGKILL, a preempted or lost
    machine, an out-of-memory kill) is not the transition's fault as far as anyone can tell:
    it counts against its own, larger budget, ``max_deaths``, so that preemptions never turn a
    transition into a failed edge; a transition that kills its worker every time still ends,
    as a failed edge whose reason says so. Its retry backs off: it waits ``death_backoff``
    seconds after the first death, twice that after the second, and so on up to
    ``MAX_BACKOFF_FACTOR`` times, so that a transition that kills its workers does not take
    them down one after another. Each worker counts that wait on its own clock from when it
    first sees the retry (as it judges heartbeats), so machines need not agree on the time;
    a worker that starts during the wait waits it whole.

    The trial's params record ``source`` and ``target`` (state keys, ``"initial"`` for the
    initial model) and the target's hyper-parameters, so the dashboard can filter on them.
    Parameters the objective suggests beyond those are sampled by an independent
    :class:`~optuna.samplers.RandomSampler`.

    Args:
        graph:
            The transition graph to plan on.
        score:
            The edge score the DP compares: ``"fitted"`` (the fitted peak f(t*), as the
            reference code) or ``"observed"`` (the kept checkpoint's observed score).
        max_retries:
            How often a transition whose objective raised is tried again before it counts as a
            failed edge.
        max_deaths:
            How often a transition whose worker died is tried again before it counts as a
            failed edge. Random preemptions rarely hit one transition many times in a row:
            with half of all attempts killed, 21 deaths in a row happen to one transition in
            2 million.
        death_backoff:
            Seconds the first retry after a death waits (doubling with each further death, up
            to ``MAX_BACKOFF_FACTOR`` times); 0 retries at once.
        initial_score:
            The score of the initial model: the epoch-0 point of the first transitions.
        seed:
            Seed of the sampler for parameters outside the graph.

    Example:

        >>> import optuna
        >>> import optuna_opplan as op
        >>> from optuna_opplan.simulation import SimulatedObjective
        >>> graph = op.TransitionGraph.basic(
        ...     clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("uniform",)
        ... )
        >>> study = optuna.create_study(
        ...     direction="maximize",
        ...     sampler=op.PlanningSampler(graph),
        ...     pruner=op.KneePointPruner(delay=5, max_epochs=40),
        ... )
        >>> op.run_worker(study, SimulatedObjective(seed=0))  # transitions trained
        6
        >>> plan = op.get_plan(study)
        >>> assert plan.goal == graph.goal_states[0]
    """

    def __init__(
        self,
        graph: TransitionGraph,
        *,
        score: str = "fitted",
        max_retries: int = 3,
        max_deaths: int = DEFAULT_MAX_DEATHS,
        death_backoff: float = DEFAULT_DEATH_BACKOFF,
        initial_score: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if not isinstance(graph, TransitionGraph):
            raise ValueError(f"`graph` must be a TransitionGraph, but got graph={graph!r}.")
        if score not in SCORES:
            raise ValueError(f"`score` must be one of {SCORES}, but got score={score!r}.")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(
                f"`max_retries` must be a non-negative int, but got max_retries={max_retries!r}."
            )
        if isinstance(max_deaths, bool) or not isinstance(max_deaths, int) or max_deaths < 0:
            raise ValueError(
                f"`max_deaths` must be a non-negative int, but got max_deaths={max_deaths!r}."
            )
        if (
            isinstance(death_backoff, bool)
            or not isinstance(death_backoff, (int, float))
            or not 0 <= death_backoff < float("inf")
        ):
            raise ValueError(
                "`death_backoff` must be a non-negative number of seconds, but got "
                f"death_backoff={death_backoff!r}."
            )
        if not isinstance(initial_score, (int, float)):
            raise ValueError(
                f"`initial_score` must be a number, but got initial_score={initial_score!r}."
            )
        self.graph = graph
        self.score = score
        self.max_retries = max_retries
        self.max_deaths = max_deaths
        self.death_backoff = float(death_backoff)
        self.initial_score = float(initial_score)
        self._fallback = RandomSampler(seed=seed)
        self._distributions = _distributions(graph)

    # ------------------------------------------------------------------ BaseSampler interface
    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        key = trial.system_attrs.get(KEY_TRANSITION)
        if key is not None and param_name in self._distributions:
            return _transition_params(self.graph.transition(key))[param_name]
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if _claim.trial_id == trial._trial_id:
            return
        # The trial was popped by study.ask()/optimize(), which ignore readiness. Retire it so
        # that nothing is lost (the transition gets a fresh waiting trial) and say what to use.
        if trial.state == TrialState.RUNNING:
            reason = "popped by study.ask()/study.optimize() instead of optuna_opplan.run_worker"
            try:
                study._storage.set_trial_system_attr(
                    trial._trial_id, KEY_OUTCOME, {"status": "superseded", "reason": reason}
                )
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                pass
        raise RuntimeError(
            "PlanningSampler hands out transitions only through "
            "optuna_opplan.run_worker(study, objective): study.optimize() and study.ask() "
            "would start transitions whose source state is not trained yet."
        )

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    # ----------------------------------------------------------------------- planning support
    def progress(self, study: Study) -> Progress:
        """A snapshot of the study's planning progress (reads the storage once)."""
        trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
        return Progress(
            self.graph,
            trials,
            score=self.score,
            max_retries=self.max_retries,
            max_deaths=self.max_deaths,
            initial_score=self.initial_score,
        )

    def config(self) -> dict[str, Any]:
        """What every worker of a study must agree on, as stored in the study."""
        return {
            "graph": self.graph.to_dict(),
            "fingerprint": self.graph.fingerprint(),
            "score": self.score,
            "max_retries": self.max_retries,
            "max_deaths": self.max_deaths,
            "death_backoff": self.death_backoff,
            "initial_score": self.initial_score,
        }

    def check_study(self, study: Study, extra: dict[str, Any] | None = None) -> None:
        """Store this sampler's configuration (plus ``extra``, e.g. the pruner's) in the study,
        or check that it matches the stored one.

        Raises:
            ConfigMismatchError: when the study was set up with another graph or setting.
        """
        stored = study._storage.get_study_system_attrs(study._study_id).get(KEY_CONFIG)
        mine = {**self.config(), **(extra or {})}
        if stored is None:
            study._storage.set_study_system_attr(study._study_id, KEY_CONFIG, mine)
            return
        # A study stored before a setting existed has its default.
        stored = {**LATER_DEFAULTS, **stored}
        if stored != mine:
            raise ConfigMismatchError(_describe_mismatch(study.study_name, stored, mine))

    def reconcile(
        self, study: Study, progress: Progress, *, only: Collection[str] | None = None
    ) -> bool:
        """Give ready transitions a waiting trial and retire trials that must not run.

        A transition gets its trial once its source state is resolved (a first attempt, or a
        retry), not before: blocked transitions waiting in the storage would be re-read on
        every scan (Optuna's cached storages re-read unfinished trials), and a fleet started
        together would each enqueue the whole graph before seeing the others' trials.

        Args:
            study: The planning study.
            progress: A snapshot of it.
            only: Enqueue only these ready transitions (keys); :obj:`None`: all of them.

        Returns:
            Whether a trial was enqueued: the snapshot then lacks claimable work, and the
            caller should scan again. (Retiring changes nothing a claim from this snapshot
            would take: it only ever claims the lowest-numbered waiting trial of a ready
            transition.)
        """
        for trial, kind, reason in progress.superseded():
            retire_trial(study, trial, kind, reason)
        enqueued = False
        for status in progress.with_status("pending"):
            if only is None or status.transition.key in only:
                self._enqueue(study, status)
                enqueued = True
        return enqueued

    def start_keys(self) -> set[str]:
        """The transitions out of the initial model: ready in a new study."""
        return {t.key for t in self.graph.transitions if t.source is None}

    def claim(self, study: Study, status: TransitionStatus, progress: Progress) -> int | None:
        """Claim ``status``'s waiting trial for this process; return its id, or :obj:`None`
        if another worker was faster."""
        assert status.waiting is not None
        trial_id = status.waiting._trial_id
        try:
            if not study._storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return None
        except UpdateFinishedTrialError:
            return None
        source_trial, epoch0 = progress.source_of(status.transition)
        study._storage.set_trial_system_attr(trial_id, KEY_SOURCE_TRIAL, source_trial)
        study._storage.set_trial_system_attr(trial_id, KEY_EPOCH0, epoch0)
        return trial_id

    def open_trial(self, study: Study, trial_id: int) -> optuna.Trial:
        """Wrap a claimed trial and record the transition's params on it."""
        _claim.trial_id = trial_id
        try:
            trial = optuna.Trial(study, trial_id)
        finally:
            _claim.trial_id = None
        for name, distribution in self._distributions.items():
            assert isinstance(distribution, CategoricalDistribution)
            trial.suggest_categorical(name, distribution.choices)
        return trial

    def retry_delay(self, status: TransitionStatus) -> float:
        """Seconds the next attempt of ``status`` waits: 0 unless its last attempt died."""
        if not status.died_last or status.deaths == 0:
            return 0.0
        factor = min(2 ** (status.deaths - 1), MAX_BACKOFF_FACTOR)
        return self.death_backoff * factor

    def _enqueue(self, study: Study, status: TransitionStatus) -> None:
        attrs: dict[str, Any] = {
            KEY_TRANSITION: status.transition.key,
            KEY_ATTEMPT: status.failures + status.deaths + 1,
        }
        delay = self.retry_delay(status)
        if delay > 0:
            attrs[KEY_RETRY_DELAY] = delay
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=attrs))


def retire_trial(study: Study, trial: FrozenTrial, kind: str, reason: str) -> bool:
    """Finish a waiting trial that must not run, recording why. False if someone claimed it."""
    try:
        if not study._storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
            return False
        study._storage.set_trial_system_attr(
            trial._trial_id, KEY_OUTCOME, {"status": kind, "reason": reason}
        )
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        # Claimed by a worker first, or (if this process stalled for a grace period midway)
        # failed as abandoned by another: either way not ours to finish.
        return False
    return True


def _transition_params(transition: Transition) -> dict[str, Any]:
    return {
        SOURCE_PARAM: transition.source_key,
        TARGET_PARAM: transition.target.key,
        **transition.target.params,
    }


def _distributions(graph: TransitionGraph) -> dict[str, BaseDistribution]:
    sources: Sequence[str] = [INITIAL_KEY, *(s.key for s in graph.states)]
    distributions: dict[str, BaseDistribution] = {
        SOURCE_PARAM: CategoricalDistribution(sources),
        TARGET_PARAM: CategoricalDistribution([s.key for s in graph.states]),
    }
    for axis in graph.axes:
        distributions[axis.name] = CategoricalDistribution(axis.values)
    return distributions


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
