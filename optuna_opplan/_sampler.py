from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence
import contextlib
import logging
import math
import threading
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.samplers import RandomSampler
from optuna.study import Study
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from optuna_opplan._attempts import DEFAULT_MAX_DEATHS
from optuna_opplan._attempts import check_budget
from optuna_opplan._graph import TransitionGraph
from optuna_opplan._plan import SCORES
from optuna_opplan._progress import Progress
from optuna_opplan._progress import TransitionStatus
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._protocol import OutcomeKind
from optuna_opplan._protocol import fail_trial
from optuna_opplan._state import INITIAL_KEY
from optuna_opplan._transition import Transition

_logger = logging.getLogger("optuna_opplan")

SOURCE_PARAM = "source"
TARGET_PARAM = "target"


class _Admitted(threading.local):
    trial_id: int | None = None


_admitted = _Admitted()


@contextlib.contextmanager
def admit_trial(trial_id: int) -> Iterator[None]:
    """Let the planning engine open a trial it claimed: any other trial that reaches the
    sampler (popped by ``study.ask()``/``study.optimize()``) is refused."""
    _admitted.trial_id = trial_id
    try:
        yield
    finally:
        _admitted.trial_id = None


DEFAULT_DEATH_BACKOFF = 30.0
# The wait before a retry after a death doubles with each death, up to this many times
# ``death_backoff``.
MAX_BACKOFF_FACTOR = 8
# Settings added after studies were already stored: a stored config without them has these.
LATER_DEFAULTS: dict[str, Any] = {
    "max_deaths": DEFAULT_MAX_DEATHS,
    "death_backoff": DEFAULT_DEATH_BACKOFF,
}


class PlanningSampler(BaseSampler):
    """A sampler that hands out the transitions of a :class:`TransitionGraph` as trials.

    Each trial is one transition, enqueued as a waiting trial once the transition is ready:
    its source state is resolved, i.e. every transition into it is finished. (What is still
    blocked shows in :func:`~optuna_opplan.dashboard.graph_figure` and ``opplan status``.)
    :func:`run_worker` claims ready transitions in topological order, with the longest
    remaining chain first; many workers on one storage each run a different one.

    Exactly once: a claim is the storage's atomic ``WAITING -> RUNNING`` change of one trial,
    and a transition never has two live trials that a worker would claim (the lowest-numbered
    waiting trial is the only one claimed; duplicates enqueued by a race are retired).

    Retries: a trial whose objective raises is replaced by a new waiting trial, at most
    ``max_retries`` times. A trial whose worker dies (it stops sending heartbeats: a SIGKILL, a
    preempted or lost machine, an out-of-memory kill) is not the transition's fault as far as
    anyone can tell: it counts against its own, larger budget, ``max_deaths``, so preemptions
    never turn a transition into a failed edge, while a transition that kills its worker
    every time still ends, as a failed edge whose reason says so. A retry after a death backs
    off, so that such a transition does not take the fleet down one worker after another: it
    waits ``death_backoff`` seconds after the first death, twice that after the second, and so
    on up to ``MAX_BACKOFF_FACTOR`` times. Each worker counts that wait on its own clock from
    when it first sees the retry (as it judges heartbeats), so machines need not agree on the
    time; the price is that a worker started during the wait waits it whole.

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
            even with half of all attempts killed, 21 deaths in a row befall a transition
            about once in 2 million.
        death_backoff:
            Seconds the first retry after a death waits (doubling with each further death, up
            to ``MAX_BACKOFF_FACTOR`` times); 0 retries at once.
        initial_score:
            The score of the initial model: the epoch-0 point of the first transitions (an
            objective may report it itself as step 0). Defaults to 0 (an untrained model's
            accuracy). A minimised score (a loss) has no such default: without a reported
            step 0, the pruner takes the first epoch's loss as the level to improve on.
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
        initial_score: float | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(graph, TransitionGraph):
            raise ValueError(f"`graph` must be a TransitionGraph, but got graph={graph!r}.")
        if score not in SCORES:
            raise ValueError(f"`score` must be one of {SCORES}, but got score={score!r}.")
        check_budget("max_retries", max_retries)
        check_budget("max_deaths", max_deaths)
        if (
            isinstance(death_backoff, bool)
            or not isinstance(death_backoff, (int, float))
            or not 0 <= death_backoff < math.inf
        ):
            raise ValueError(
                "`death_backoff` must be a non-negative number of seconds, but got "
                f"death_backoff={death_backoff!r}."
            )
        if initial_score is not None and (
            isinstance(initial_score, bool)
            or not isinstance(initial_score, (int, float))
            or not math.isfinite(initial_score)
        ):
            raise ValueError(
                "`initial_score` must be a finite number or None, but got "
                f"initial_score={initial_score!r}."
            )
        self.graph = graph
        self.score = score
        self.max_retries = max_retries
        self.max_deaths = max_deaths
        self.death_backoff = float(death_backoff)
        self._initial_score = None if initial_score is None else float(initial_score)
        self._fallback = RandomSampler(seed=seed)
        self._distributions = transition_distributions(graph)

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
        if _admitted.trial_id == trial._trial_id:
            return
        # The trial was popped by study.ask()/optimize(), which ignore readiness. Retire it so
        # that nothing is lost (the transition gets a fresh waiting trial) and say what to use.
        if trial.state == TrialState.RUNNING:
            reason = "popped by study.ask()/study.optimize() instead of optuna_opplan.run_worker"
            fail_trial(study._storage, trial._trial_id, OutcomeKind.SUPERSEDED, reason)
        raise RuntimeError(
            "PlanningSampler hands out transitions only through "
            "optuna_opplan.run_worker(study, objective): study.optimize() and study.ask() "
            "would start transitions whose source state is not trained yet."
        )

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    # ----------------------------------------------------------------------- planning support
    @property
    def initial_score(self) -> float:
        """The initial model's score (0 unless given)."""
        return 0.0 if self._initial_score is None else self._initial_score

    def check_direction(self, study: Study) -> str:
        """The study's direction, once checked that this sampler can plan it.

        Raises:
            ValueError: for a multi-objective study.
        """
        return study_direction(study)

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
            direction=study_direction(study),
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

    def retry_delay(self, status: TransitionStatus) -> float:
        """Seconds the next attempt of ``status`` waits: 0 unless its last attempt died."""
        if not status.died_last or status.deaths == 0:
            return 0.0
        return self.death_backoff * min(2 ** (status.deaths - 1), MAX_BACKOFF_FACTOR)


def study_direction(study: Study) -> str:
    """``"maximize"`` or ``"minimize"``: the direction of a single-objective study.

    Raises:
        ValueError: for a multi-objective study.
    """
    if len(study.directions) != 1:
        raise ValueError(
            f"Study {study.study_name!r} has {len(study.directions)} objectives; a planning "
            "study has one: the validation score each transition reports."
        )
    return "minimize" if study.direction == StudyDirection.MINIMIZE else "maximize"


def _transition_params(transition: Transition) -> dict[str, Any]:
    return {
        SOURCE_PARAM: transition.source_key,
        TARGET_PARAM: transition.target.key,
        **transition.target.params,
    }


def transition_distributions(graph: TransitionGraph) -> dict[str, BaseDistribution]:
    """The params a planning trial records: source, target and each axis, as categoricals."""
    sources: Sequence[str] = [INITIAL_KEY, *(s.key for s in graph.states)]
    distributions: dict[str, BaseDistribution] = {
        SOURCE_PARAM: CategoricalDistribution(sources),
        TARGET_PARAM: CategoricalDistribution([s.key for s in graph.states]),
    }
    for axis in graph.axes:
        distributions[axis.name] = CategoricalDistribution(axis.values)
    return distributions
