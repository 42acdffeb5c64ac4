from __future__ import annotations

from typing import Any

import optuna

from optuna_opplan._graph import TransitionGraph
from optuna_opplan._protocol import KEY_ATTEMPT
from optuna_opplan._protocol import KEY_EPOCH0
from optuna_opplan._protocol import KEY_KNEE
from optuna_opplan._protocol import KEY_SOURCE_TRIAL
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._state import State
from optuna_opplan._transition import Transition


class TransitionStep:
    """What an objective needs to train one transition: where to start and what to keep.

    Get it with :func:`current_transition`. Train from :attr:`source_trial`'s kept checkpoint
    (the initial model when it is :obj:`None`) with :attr:`params`, report the validation score
    of epochs 1, 2, ... with ``trial.report(value, epoch)``, and stop when
    ``trial.should_prune()`` says so. Keep the checkpoint of :attr:`keep_epoch`: it is the one
    the next transitions start from. While training, only the checkpoints of
    :meth:`retained_epochs` can still become the kept one; the others can be deleted.

    Attributes:
        trial: The Optuna trial of this transition.
        graph: The study's transition graph.
        transition: The transition being trained.
        source_trial: The number of the trial whose kept checkpoint is the starting point, or
            :obj:`None` for the initial model.
        source_score: The score of that checkpoint: the fitted curve's epoch-0 point.
        attempt: 1 for the first try, more when the transition is retried.
    """

    def __init__(self, trial: optuna.Trial) -> None:
        attrs = trial.storage.get_trial_system_attrs(trial._trial_id)
        key = attrs.get(KEY_TRANSITION)
        sampler = trial.study.sampler
        graph = getattr(sampler, "graph", None)
        if key is None or graph is None:
            raise RuntimeError(
                f"Trial {trial.number} is not a planning transition: run the objective with "
                "optuna_opplan.run_worker(study, objective) on a study whose sampler is a "
                "PlanningSampler."
            )
        self.trial = trial
        self.graph: TransitionGraph = graph
        self.transition: Transition = graph.transition(key)
        self.source_trial: int | None = attrs.get(KEY_SOURCE_TRIAL)
        self.source_score: float = float(attrs.get(KEY_EPOCH0, 0.0))
        self.attempt: int = int(attrs.get(KEY_ATTEMPT, 1))
        pruner = trial.study.pruner
        self._delay: int = int(getattr(pruner, "delay", 0))

    @property
    def source(self) -> State | None:
        """The state whose checkpoint this transition starts from (:obj:`None`: initial)."""
        return self.transition.source

    @property
    def target(self) -> State:
        """The state whose hyper-parameters this transition trains with."""
        return self.transition.target

    @property
    def params(self) -> dict[str, Any]:
        """The target state's hyper-parameters, ``{axis name: value}``."""
        return self.target.params

    @property
    def knee(self) -> dict[str, Any] | None:
        """The knee pruner's latest decision for this trial, or :obj:`None` before the first."""
        decision = self.trial.storage.get_trial_system_attrs(self.trial._trial_id).get(KEY_KNEE)
        return decision if isinstance(decision, dict) else None

    @property
    def keep_epoch(self) -> int:
        """The epoch whose checkpoint to keep (0 = the source checkpoint itself).

        Before the knee pruner has decided anything, the best observed epoch so far.
        """
        decision = self.knee
        if decision is not None and "keep_epoch" in decision:
            return int(decision["keep_epoch"])
        values = self.trial.storage.get_trial(self.trial._trial_id).intermediate_values
        if not values:
            return 0
        best = max(values.items(), key=lambda kv: (kv[1], -kv[0]))
        return int(best[0]) if best[1] > self.source_score else 0

    def retained_epochs(self, epoch: int) -> range:
        """The epochs whose checkpoints may still become the kept one after ``epoch``.

        The knee pruner keeps one of the last ``delay + 1`` epochs, so checkpoints older than
        that can be deleted: disk use stays bounded by ``delay + 1`` checkpoints.
        """
        return range(max(0, epoch - self._delay), epoch + 1)

    def __repr__(self) -> str:
        return (
            f"TransitionStep(trial={self.trial.number}, transition={self.transition.key!r}, "
            f"source_trial={self.source_trial}, attempt={self.attempt})"
        )


def current_transition(trial: optuna.Trial) -> TransitionStep:
    """The transition that ``trial`` trains, with its starting point and what to keep.

    Args:
        trial: A trial handed to the objective by :func:`run_worker`.

    Raises:
        RuntimeError: when the trial is not a planning transition.

    Example:

        >>> import optuna
        >>> import optuna_opplan as op
        >>> graph = op.TransitionGraph.basic(
        ...     clip_lengths=(8,), learning_rates=(0.1, 0.01), samplings=("uniform",)
        ... )
        >>> seen = []
        >>> def objective(trial):
        ...     step = op.current_transition(trial)
        ...     seen.append((step.source, step.target.params["lr"], step.source_trial))
        ...     for epoch in range(1, 30):
        ...         trial.report(0.9 - 0.5 / epoch, epoch)
        ...         if trial.should_prune():
        ...             break
        ...
        >>> study = optuna.create_study(
        ...     direction="maximize",
        ...     sampler=op.PlanningSampler(graph),
        ...     pruner=op.KneePointPruner(delay=3, max_epochs=30),
        ... )
        >>> op.run_worker(study, objective)
        2
        >>> assert seen[0] == (None, 0.1, None)
        >>> assert seen[1][1:] == (0.01, 0)  # starts from trial 0's kept checkpoint
    """
    return TransitionStep(trial)
