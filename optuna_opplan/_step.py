from __future__ import annotations

from typing import Any

import optuna
from optuna.study import StudyDirection

from optuna_opplan._checkpoint import CheckpointError
from optuna_opplan._checkpoint import carrier_of
from optuna_opplan._checkpoint import source_checkpoint
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

    Get it with :func:`current_transition`. Start from :meth:`load_source_checkpoint` (the
    initial model when it returns :obj:`None`), train with :attr:`params`, report the
    validation score of epochs 1, 2, ... with ``trial.report(value, epoch)`` and hand each
    epoch's checkpoint to :meth:`save_checkpoint`, and stop when ``trial.should_prune()`` says
    so. The engine keeps the epochs that can still become the kept one, and uploads the kept
    one to the artifact store given to :func:`run_worker` before the trial completes; the
    next transitions start from it.

    An objective that keeps its own checkpoints instead (no ``artifact_store``) keeps the
    checkpoint of :attr:`keep_epoch` as the one the next transitions start from (0: the
    source's own, which it must then keep for :attr:`source_trial`'s successors too).

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
        sign = -1.0 if self.trial.study.direction == StudyDirection.MINIMIZE else 1.0
        best = max(values.items(), key=lambda kv: (sign * kv[1], -kv[0]))
        return int(best[0]) if sign * best[1] > sign * self.source_score else 0

    def save_checkpoint(self, epoch: int, data: bytes) -> None:
        """Hand the engine the checkpoint of ``epoch`` (after ``trial.report(value, epoch)``).

        Any serialisation works: the engine stores and returns the bytes as given. It keeps
        only the epochs of :meth:`retained_epochs` (at most ``delay + 1`` on local disk); once
        the objective returns it uploads the kept epoch's, hash-checked, to the artifact store
        given to :func:`run_worker`. Call it for every epoch: the kept one is only known at
        the end. Nothing to do for epoch 0 (keeping the source checkpoint needs no upload).

        Args:
            epoch: The epoch, as reported (1, 2, ...).
            data: The serialised checkpoint, e.g. ``torch.save`` into an ``io.BytesIO``.

        Raises:
            CheckpointError: if the worker was started without an artifact store; also (as
                a ``TypeError`` or ``ValueError`` too) if ``data`` is not bytes or ``epoch``
                not a positive int. It stops the worker: a retry would fail the same way.
        """
        carrier = carrier_of(self.trial.storage, self.trial._trial_id)
        if carrier is None:
            raise CheckpointError(
                f"Trial {self.trial.number} is not running under optuna_opplan.run_worker in "
                "this process: save_checkpoint() works only there."
            )
        if carrier.artifact_store is None:
            raise CheckpointError(
                "step.save_checkpoint() needs somewhere to keep the checkpoint the next "
                "transitions start from: start the worker with run_worker(study, objective, "
                "artifact_store=...) (an Optuna artifact store, or a folder all workers share)."
            )
        carrier.epochs.save(epoch, data)

    def load_source_checkpoint(self) -> bytes | None:
        """The checkpoint this transition starts from, as its objective saved it.

        That is :attr:`source_trial`'s kept checkpoint; a source that kept epoch 0 passes on
        its own source's, back to the nearest transition that trained. :obj:`None` means the
        initial model: build it as for the first transitions. Hash-checked.

        Raises:
            CheckpointError: if the checkpoint is missing or altered, or the worker has no
                artifact store to read it from.
        """
        carrier = carrier_of(self.trial.storage, self.trial._trial_id)
        store = None if carrier is None else carrier.artifact_store
        return source_checkpoint(self.trial.study, self.source_trial, store)

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
