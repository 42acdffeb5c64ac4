from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from optuna_opplan._protocol import KEY_STALE
from optuna_opplan._protocol import outcome_of


@dataclass
class Attempts:
    """The failed attempts at one unit of work (a transition, a grid point), as the retry
    rule counts them.

    The one place that decides what a failed trial costs and when a unit is given up: the
    planning progress and the grid worker both count through it. Today an attempt whose
    worker died (its heartbeat went silent) counts like one whose objective raised.

    Example:
        >>> import optuna
        >>> from optuna_opplan._protocol import KEY_OUTCOME
        >>> failed = optuna.trial.create_trial(
        ...     state=optuna.trial.TrialState.FAIL,
        ...     system_attrs={KEY_OUTCOME: {"status": "error", "reason": "OOM"}},
        ... )
        >>> attempts = Attempts.of([failed, failed])
        >>> attempts.failures, attempts.exhausted(max_retries=1)
        (2, True)
    """

    failures: int = 0
    last_error: str = ""

    @classmethod
    def of(cls, failed: Iterable[FrozenTrial]) -> Attempts:
        """The attempts of a unit whose failed trials are ``failed``."""
        attempts = cls()
        for trial in failed:
            attempts.add(trial)
        return attempts

    def add(self, trial: FrozenTrial, reason: str | None = None) -> None:
        """Count ``trial`` as a failed attempt; ``reason`` overrides the stored one."""
        if reason is None:
            _, reason = outcome_of(trial)
        if not reason and KEY_STALE in trial.system_attrs:
            reason = "its worker stopped sending heartbeats"
        self.failures += 1
        self.last_error = f"trial {trial.number}: {reason or 'failed'}"

    def exhausted(self, max_retries: int) -> bool:
        """Whether the unit is given up: it failed more than ``max_retries`` times."""
        return self.failures > max_retries

    def give_up_reason(self) -> str:
        """Why the unit was given up, for the plan, the CLI and the dashboard."""
        return f"gave up after {self.failures} failed attempts; last: {self.last_error}"
