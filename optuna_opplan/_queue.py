from __future__ import annotations

from collections.abc import Collection
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from optuna_opplan._progress import Progress
from optuna_opplan._progress import TransitionStatus
from optuna_opplan._protocol import KEY_ATTEMPT
from optuna_opplan._protocol import KEY_EPOCH0
from optuna_opplan._protocol import KEY_RETRY_DELAY
from optuna_opplan._protocol import KEY_SOURCE_TRIAL
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._protocol import OutcomeKind
from optuna_opplan._protocol import Status
from optuna_opplan._protocol import claim_trial
from optuna_opplan._protocol import fail_trial
from optuna_opplan._sampler import PlanningSampler
from optuna_opplan._sampler import admit_trial
from optuna_opplan._sampler import transition_distributions


class TransitionQueue:
    """The waiting trials of a planning study, as the worker drives them.

    A ready transition gets one waiting trial (:meth:`reconcile`); a worker takes it with the
    storage's atomic ``WAITING -> RUNNING`` change (:meth:`claim`), so each is trained once;
    duplicates from racing workers, and trials a finished transition no longer needs, are
    retired unrun (:meth:`retire`). The queue keeps no state of its own: everything is in
    the study's trials.

    Args:
        study: The planning study.
        sampler: Its :class:`PlanningSampler` (the graph and the retry settings).
    """

    def __init__(self, study: Study, sampler: PlanningSampler) -> None:
        self.study = study
        self.sampler = sampler
        self._distributions = transition_distributions(sampler.graph)

    def progress(self) -> Progress:
        """A snapshot of the study's planning progress (reads the storage once)."""
        return self.sampler.progress(self.study)

    def start_keys(self) -> set[str]:
        """The transitions out of the initial model: ready in a new study."""
        return {t.key for t in self.sampler.graph.transitions if t.source is None}

    def reconcile(self, progress: Progress, *, only: Collection[str] | None = None) -> bool:
        """Give ready transitions a waiting trial and retire trials that must not run.

        A transition gets its trial once its source state is resolved (a first attempt, or a
        retry), not before: blocked transitions waiting in the storage would be re-read on
        every scan (Optuna's cached storages re-read unfinished trials), and a fleet started
        together would each enqueue the whole graph before seeing the others' trials.

        Args:
            progress: A snapshot of the study.
            only: Enqueue only these ready transitions (keys); :obj:`None`: all of them.

        Returns:
            Whether a trial was enqueued: the snapshot then lacks claimable work, and the
            caller should scan again. (Retiring changes nothing a claim from this snapshot
            would take: it only ever claims the lowest-numbered waiting trial of a ready
            transition.)
        """
        for trial, kind, reason in progress.superseded():
            self.retire(trial, kind, reason)
        enqueued = False
        for status in progress.with_status(Status.PENDING):
            if only is None or status.transition.key in only:
                self._enqueue(status)
                enqueued = True
        return enqueued

    def claim(self, status: TransitionStatus) -> int | None:
        """Claim ``status``'s waiting trial for this process; return its id, or :obj:`None`
        if another worker was faster.

        The claimed trial is RUNNING from here on and other workers judge it by its
        heartbeats: beat before anything else (:meth:`record_source` comes after), since every
        storage write in between is time an overloaded worker may be judged dead in.
        """
        if status.waiting is None:
            raise ValueError(f"Transition {status.transition.key} has no waiting trial.")
        trial_id = status.waiting._trial_id
        if not claim_trial(self.study._storage, trial_id):
            return None
        return trial_id

    def record_source(self, trial_id: int, status: TransitionStatus, progress: Progress) -> None:
        """Record on a claimed trial where its transition starts: the source state's kept
        trial and that checkpoint's score, as ``progress`` resolves them."""
        source_trial, epoch0 = progress.source_of(status.transition)
        self.study._storage.set_trial_system_attr(trial_id, KEY_SOURCE_TRIAL, source_trial)
        self.study._storage.set_trial_system_attr(trial_id, KEY_EPOCH0, epoch0)

    def open_trial(self, trial_id: int) -> optuna.Trial:
        """Wrap a claimed trial and record the transition's params on it."""
        with admit_trial(trial_id):
            trial = optuna.Trial(self.study, trial_id)
        for name, distribution in self._distributions.items():
            assert isinstance(distribution, CategoricalDistribution)
            trial.suggest_categorical(name, distribution.choices)
        return trial

    def retire(self, trial: FrozenTrial, kind: OutcomeKind, reason: str) -> bool:
        """Finish a waiting trial that must not run, recording why. False if someone claimed
        it first."""
        # Through RUNNING: only a trial this process took may be failed, so a claim that won
        # the race is never undone.
        if not claim_trial(self.study._storage, trial._trial_id):
            return False
        # Failed meanwhile (this process stalled for a grace period midway and another
        # judged it abandoned): not ours to finish, and nothing is lost.
        return fail_trial(self.study._storage, trial._trial_id, kind, reason)

    def _enqueue(self, status: TransitionStatus) -> None:
        attrs: dict[str, Any] = {
            KEY_TRANSITION: status.transition.key,
            KEY_ATTEMPT: status.attempts + 1,
        }
        # A retry after a death carries its backoff; workers count it on their own clocks.
        delay = self.sampler.retry_delay(status)
        if delay > 0:
            attrs[KEY_RETRY_DELAY] = delay
        self.study.add_trial(
            optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=attrs)
        )
