from __future__ import annotations

from collections.abc import Sequence
import threading
import time
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from optuna_opplan._protocol import CANCELLED
from optuna_opplan._protocol import KEY_HEARTBEAT
from optuna_opplan._protocol import KEY_STALE
from optuna_opplan._protocol import KEY_WORKER
from optuna_opplan._protocol import OutcomeKind
from optuna_opplan._protocol import fail_trial
from optuna_opplan._protocol import outcome_of

_logger = optuna.logging.get_logger("optuna.opplan")


class Heartbeat(threading.Thread):
    """Bumps a counter in a running trial's system attributes every ``interval`` seconds.

    A counter, not a timestamp: observers judge it on their own clocks, so machines need not
    agree on the time. If the storage refuses the beat because the trial was finished
    meanwhile (another worker judged it abandoned), the trial is marked cancelled, which the
    :class:`KneePointPruner` turns into a stop.
    """

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float) -> None:
        super().__init__(daemon=True, name=f"opplan-heartbeat-{trial_id}")
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._stop_event = threading.Event()

    def start(self) -> None:
        """Beat once in the caller's thread, then go on beating in this one.

        The first beat is written before this returns: a worker that just claimed a trial
        shows it is alive before it writes anything else. It raises what the storage raises
        (:class:`~optuna.exceptions.UpdateFinishedTrialError` if the trial was failed
        meanwhile), and then no thread is started.
        """
        self._storage.set_trial_system_attr(self._trial_id, KEY_HEARTBEAT, 0)
        super().start()

    def run(self) -> None:
        beat, wait = 1, self._interval
        while not self._stop_event.wait(wait):
            try:
                self._storage.set_trial_system_attr(self._trial_id, KEY_HEARTBEAT, beat)
            except UpdateFinishedTrialError:
                CANCELLED.add(self._trial_id)
                return
            except Exception as exc:  # a storage outage must not kill the training thread
                _logger.warning(f"Heartbeat of trial id {self._trial_id} failed: {exc!r}")
                # Beat again soon: the first beat after an outage tells the other workers,
                # whose clocks ran on while they could not look either, that this one lives.
                wait = min(self._interval, 1.0)
            else:
                wait = self._interval
            beat += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class StalenessWatch:
    """Which running trials stopped beating for ``grace`` seconds of this process's clock.

    Call :meth:`stale` on every scan; call :meth:`forget` after a storage outage, during
    which beats may have been written unseen (or failed like this process's own reads).
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._seen: dict[int, tuple[Any, float]] = {}

    def stale(self, running: Sequence[FrozenTrial]) -> list[tuple[FrozenTrial, float]]:
        """The trials of ``running`` silent for a whole grace period, with how long."""
        now = time.monotonic()
        ids = {t._trial_id for t in running}
        self._seen = {k: v for k, v in self._seen.items() if k in ids}
        silent = []
        for trial in running:
            beat = trial.system_attrs.get(KEY_HEARTBEAT)
            last = self._seen.get(trial._trial_id)
            if last is None or last[0] != beat:
                self._seen[trial._trial_id] = (beat, now)
            elif now - last[1] >= self.grace:
                silent.append((trial, now - last[1]))
        return silent

    def forget(self) -> None:
        self._seen.clear()


def fail_abandoned(
    storage: BaseStorage, trial: FrozenTrial, observer: str, silent_for: float = 0.0
) -> bool:
    """Fail a running trial whose worker went silent, marking who judged it; False if it
    finished meanwhile.

    Its outcome becomes :attr:`OutcomeKind.DIED` if a worker ran it, unless that worker
    recorded a failure of its own before it went silent (an exception is the transition's
    doing, a death is not). A trial no worker ran (a duplicate whose retiring worker died
    midway) gets none: the ``"superseded"`` outcome it may already hold must stand.
    """
    kind, _ = outcome_of(trial)
    if kind not in (None, OutcomeKind.OK) or KEY_WORKER not in trial.system_attrs:
        return fail_trial(storage, trial._trial_id, None, attrs={KEY_STALE: observer})
    owner = trial.system_attrs[KEY_WORKER]
    reason = (
        f"its worker {owner} stopped sending heartbeats (silent for {silent_for:.0f}s as seen "
        f"by {observer})"
    )
    return fail_trial(
        storage, trial._trial_id, OutcomeKind.DIED, reason, attrs={KEY_STALE: observer}
    )
