from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from optuna_opplan._protocol import KEY_STALE
from optuna_opplan._protocol import KEY_WORKER
from optuna_opplan._protocol import OutcomeKind
from optuna_opplan._protocol import outcome_of

DEFAULT_MAX_DEATHS = 20
"""How often a unit of work may lose its worker (killed, preempted) before it is given up."""


def check_budget(name: str, value: object) -> None:
    """Raise :class:`ValueError` unless ``value`` is a retry budget: a non-negative int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative int, but got {name}={value!r}.")


@dataclass
class Attempts:
    """The failed attempts at one unit of work (a transition, a grid point), as the retry
    rule counts them.

    The one place that decides what a failed trial costs and when a unit is given up: the
    planning progress and the grid worker both count through it. An attempt whose objective
    failed counts against ``max_retries``; one whose worker died (its heartbeat went silent:
    killed, preempted, out of memory) is not the unit's fault as far as anyone can tell and
    counts against ``max_deaths``.

    Example:
        >>> import optuna
        >>> from optuna_opplan._protocol import KEY_OUTCOME
        >>> failed = optuna.trial.create_trial(
        ...     state=optuna.trial.TrialState.FAIL,
        ...     system_attrs={KEY_OUTCOME: {"status": "error", "reason": "OOM"}},
        ... )
        >>> died = optuna.trial.create_trial(
        ...     state=optuna.trial.TrialState.FAIL,
        ...     system_attrs={KEY_OUTCOME: {"status": "died", "reason": "no heartbeat"}},
        ... )
        >>> attempts = Attempts.of([failed, died, died])
        >>> attempts.failures, attempts.deaths, attempts.died_last
        (1, 2, True)
        >>> attempts.exhausted(max_retries=1, max_deaths=2)
        False
    """

    failures: int = 0
    deaths: int = 0
    died_last: bool = False
    last_error: str = ""
    last_death: str = ""

    @classmethod
    def of(cls, failed: Iterable[FrozenTrial]) -> Attempts:
        """The attempts of a unit whose failed trials are ``failed``."""
        attempts = cls()
        for trial in failed:
            attempts.add(trial)
        return attempts

    def add(self, trial: FrozenTrial, reason: str | None = None) -> None:
        """Count ``trial`` as a failed attempt; ``reason`` overrides the stored one."""
        kind, stored = outcome_of(trial)
        if reason is None and (
            kind == OutcomeKind.DIED
            or (KEY_STALE in trial.system_attrs and kind in (None, OutcomeKind.OK))
        ):
            # A killed or preempted process, a lost machine (a result recorded but never
            # told counts here too).
            self.deaths += 1
            self.died_last = True
            worker = trial.system_attrs.get(KEY_WORKER)
            self.last_death = (f"worker {worker}, " if worker else "") + f"trial {trial.number}"
            return
        reason = stored if reason is None else reason
        self.failures += 1
        self.died_last = False
        self.last_error = f"trial {trial.number}: {reason or 'failed'}"

    def exhausted(self, max_retries: int, max_deaths: int) -> bool:
        """Whether the unit is given up: it failed more than ``max_retries`` times, or its
        worker died more than ``max_deaths`` times."""
        return self.failures > max_retries or self.deaths > max_deaths

    def give_up_reason(self, max_retries: int, max_deaths: int) -> str:
        """Why the unit was given up, for the plan, the CLI and the dashboard."""
        if self.failures <= max_retries:
            return (
                f"died {self.deaths} times: its worker stopped sending heartbeats each time "
                "(killed, out of memory, or its machine lost), more than "
                f"max_deaths={max_deaths} allows; last {self.last_death}"
            )
        last = self.last_error
        if self.died_last:
            last = f"{self.last_death}: its worker stopped sending heartbeats"
        return f"gave up after {self.failures} failed attempts; last: {last}"
