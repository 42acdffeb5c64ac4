from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from optuna_opplan._attempts import Attempts
from optuna_opplan._graph import TransitionGraph
from optuna_opplan._plan import Winner
from optuna_opplan._plan import resolve_states
from optuna_opplan._protocol import FINISHED
from optuna_opplan._protocol import IGNORED
from optuna_opplan._protocol import KEY_RESULT
from optuna_opplan._protocol import KEY_STALE
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._protocol import KEY_WORKER
from optuna_opplan._protocol import PERMANENT
from optuna_opplan._protocol import OutcomeKind
from optuna_opplan._protocol import Status
from optuna_opplan._protocol import outcome_of
from optuna_opplan._result import TransitionResult
from optuna_opplan._state import State
from optuna_opplan._transition import Transition

# A transition's trials are its only shared state: everything here is derived from them
# (through the keys and outcome kinds of the trial protocol) on each scan.
STATUSES = tuple(s.value for s in Status)


@dataclass
class TransitionStatus:
    """Where one transition stands, derived from its trials.

    ``status`` is a :class:`Status` (equal to its string): ``"done"`` (succeeded),
    ``"failed"`` (finished without a result: a permanent failure, retries used up, or an
    unreachable source), ``"running"``, ``"ready"`` (source resolved, a waiting trial can be
    claimed), ``"pending"`` (source resolved, no waiting trial yet) or ``"blocked"`` (source
    not resolved yet).
    """

    transition: Transition
    status: Status = Status.BLOCKED
    trials: list[FrozenTrial] = field(default_factory=list)
    waiting: FrozenTrial | None = None
    running: FrozenTrial | None = None
    result: TransitionResult | None = None
    # Attempts whose objective failed (counted against max_retries), and attempts whose
    # worker died (against max_deaths); whether the latest counted attempt was a death.
    failures: int = 0
    deaths: int = 0
    died_last: bool = False
    reason: str = ""

    @property
    def attempts(self) -> int:
        """Attempts counted so far (failed or died)."""
        return self.failures + self.deaths

    @property
    def finished(self) -> bool:
        """Whether the transition is done or failed for good."""
        return self.status in FINISHED


class Progress:
    """A snapshot of planning: the status of every transition and the resolved states.

    It is a pure function of the graph and the study's trials, so every worker that scans the
    same trials reaches the same decisions.

    Args:
        graph: The transition graph.
        trials: The study's trials.
        score: The DP's edge score, ``"fitted"`` or ``"observed"``.
        max_retries: How often a transition whose objective failed (an exception) is tried
            again before it counts as a failed edge.
        max_deaths: How often a transition whose worker died (stopped sending heartbeats) is
            tried again before it counts as a failed edge.
        initial_score: The epoch-0 point of transitions out of the initial node.
        direction: ``"maximize"`` or ``"minimize"``: which edge scores the DP prefers.
    """

    def __init__(
        self,
        graph: TransitionGraph,
        trials: Sequence[FrozenTrial],
        *,
        score: str = "fitted",
        max_retries: int = 3,
        max_deaths: int = 20,
        initial_score: float = 0.0,
        direction: str = "maximize",
    ) -> None:
        self.graph = graph
        self.score = score
        self.max_retries = max_retries
        self.max_deaths = max_deaths
        self.initial_score = initial_score
        self.direction = direction
        self.statuses: dict[str, TransitionStatus] = {
            t.key: TransitionStatus(t) for t in graph.transitions
        }
        self.stray: list[FrozenTrial] = []
        for trial in sorted(trials, key=lambda t: t.number):
            key = trial.system_attrs.get(KEY_TRANSITION)
            status = self.statuses.get(key) if isinstance(key, str) else None
            if status is None:
                if key is not None:
                    self.stray.append(trial)
                continue
            status.trials.append(trial)

        for status in self.statuses.values():
            _classify(status, max_retries, max_deaths)
        # Running trials that are not their transition's run (a retirement in progress, or
        # one whose retiring worker died in between): watched for heartbeats like the runs,
        # so that none stays RUNNING forever.
        self.orphans = [
            t
            for s in self.statuses.values()
            for t in s.trials
            if t.state == TrialState.RUNNING and t is not s.running
        ]
        self.results = {k: s.result for k, s in self.statuses.items() if s.result is not None}
        # A transition out of an unreachable state fails, which can make its target
        # unreachable in turn: resolve until nothing changes.
        while True:
            finished = frozenset(k for k, s in self.statuses.items() if s.finished)
            self.winners: dict[State, Winner | None] = resolve_states(
                graph, self.results, score=score, finished=finished, direction=direction
            )
            changed = False
            for status in self.statuses.values():
                source = status.transition.source
                if status.finished or status.running is not None or source is None:
                    continue
                if source in self.winners and self.winners[source] is None:
                    status.status = Status.FAILED
                    status.reason = f"source state {source.key} is unreachable"
                    changed = True
            if not changed:
                break
        for status in self.statuses.values():
            if status.finished or status.running is not None:
                continue
            source = status.transition.source
            if source is not None and source not in self.winners:
                status.status = Status.BLOCKED
            else:
                status.status = Status.READY if status.waiting is not None else Status.PENDING

    # ----------------------------------------------------------------------------- queries
    @property
    def is_complete(self) -> bool:
        """Whether every transition is finished, so the plan can be computed."""
        return all(s.finished for s in self.statuses.values())

    def with_status(self, *statuses: Status | str) -> list[TransitionStatus]:
        """The transitions in any of ``statuses``, in the graph's topological order."""
        return [s for s in self.statuses.values() if s.status in statuses]

    def counts(self) -> dict[str, int]:
        """How many transitions are in each status."""
        counts = dict.fromkeys(STATUSES, 0)
        for s in self.statuses.values():
            counts[s.status.value] += 1
        return counts

    def source_of(self, transition: Transition) -> tuple[int | None, float]:
        """The trial holding ``transition``'s starting checkpoint and that checkpoint's score.

        The source must be resolved; the initial node gives ``(None, initial_score)``.
        """
        if transition.source is None:
            return None, self.initial_score
        winner = self.winners.get(transition.source)
        if winner is None:
            raise RuntimeError(f"Source state {transition.source.key} is not resolved.")
        return winner.result.trial, winner.result.observed

    def superseded(self) -> list[tuple[FrozenTrial, OutcomeKind, str]]:
        """Waiting trials that must never run: ``(trial, outcome kind, reason)``.

        Duplicates appear when workers enqueue the same missing transition at once; the
        lowest-numbered waiting trial is the one that runs, and a waiting trial of a finished or
        running transition is not needed either. A transition out of an unreachable state is
        ``"skipped"``: it finishes as a failed edge without training.
        """
        extra = []
        for status in self.statuses.values():
            for trial in status.trials:
                if trial.state != TrialState.WAITING or trial is status.waiting:
                    continue
                extra.append(
                    (
                        trial,
                        OutcomeKind.SUPERSEDED,
                        f"duplicate of a trial of {status.transition.key}",
                    )
                )
            if status.waiting is None:
                continue
            if status.status == Status.FAILED and status.reason.startswith("source state"):
                extra.append((status.waiting, OutcomeKind.SKIPPED, status.reason))
            elif status.finished or status.running is not None:
                extra.append(
                    (
                        status.waiting,
                        OutcomeKind.SUPERSEDED,
                        f"{status.transition.key} is {status.status}",
                    )
                )
        return extra

    def summary(self) -> dict[str, Any]:
        """Counts per status plus the number of trials seen."""
        return {**self.counts(), "trials": sum(len(s.trials) for s in self.statuses.values())}


def _classify(status: TransitionStatus, max_retries: int, max_deaths: int) -> None:
    attempts = Attempts()
    for trial in status.trials:
        kind, reason = outcome_of(trial)
        if trial.state == TrialState.COMPLETE and KEY_RESULT in trial.system_attrs:
            try:
                result = TransitionResult.from_dict(trial.system_attrs[KEY_RESULT])
            except (TypeError, ValueError) as exc:
                attempts.add(trial, f"it holds an unreadable result: {exc}")
                continue
            status.status = Status.DONE
            status.result = result
            status.failures, status.deaths = attempts.failures, attempts.deaths
            return
        if trial.state == TrialState.RUNNING:
            # Claims take the lowest-numbered waiting trial, so a running trial numbered above
            # a waiting one is no run: it is a duplicate being retired (retire_trial passes
            # it through RUNNING). Taking it for the run would retire the real waiting trial.
            if status.waiting is None and status.running is None:
                status.running = trial
        elif trial.state == TrialState.WAITING:
            if status.waiting is None:
                status.waiting = trial
        elif kind in PERMANENT:
            status.status = Status.FAILED
            status.reason = reason or str(kind)
            status.failures, status.deaths = attempts.failures, attempts.deaths
            return
        elif kind in IGNORED:
            continue
        elif (
            KEY_STALE in trial.system_attrs
            and kind is None
            and KEY_WORKER not in trial.system_attrs
        ):
            # Failed as stale before any worker ran it: a duplicate whose retiring worker
            # died midway (an orphan), or a claim whose process died at once. No attempt.
            continue
        else:
            attempts.add(trial)
    status.failures, status.deaths = attempts.failures, attempts.deaths
    status.died_last = attempts.died_last
    if status.running is not None:
        status.status = Status.RUNNING
    elif attempts.exhausted(max_retries, max_deaths) and status.waiting is None:
        status.status = Status.FAILED
        status.reason = attempts.give_up_reason(max_retries, max_deaths)
