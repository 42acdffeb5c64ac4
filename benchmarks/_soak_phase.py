"""The soak's study (its custom graph, the workers' settings, the reference plan) and what a
phase measured: :class:`Phase`, and the check of its study against the workers' START log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from benchmarks._env import load_average
import optuna_opplan as op
from optuna_opplan._protocol import KEY_OUTCOME
from optuna_opplan._protocol import KEY_STALE
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan._protocol import KEY_WORKER
from optuna_opplan.simulation import SimulatedObjective

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "soak.md"
STUDY = "soak"
SEED = 11
CLIP_LENGTHS = (4, 8, 16, 32)
LEARNING_RATES = (0.1, 0.03, 0.01, 0.003, 0.001)
SAMPLINGS = ("a", "b", "c")
# Two more axes make it a custom graph: a resolution that only grows, a width that stays.
EXTRA_AXES = (
    op.Axis("resolution", (112, 160, 224), "increasing"),
    op.Axis("width", (1, 2), "fixed"),
)
PHASES = ("undisturbed", "SIGKILLs", "racing start")


def make_graph() -> op.TransitionGraph:
    return op.TransitionGraph.extended(
        clip_lengths=CLIP_LENGTHS,
        learning_rates=LEARNING_RATES,
        samplings=SAMPLINGS,
        extra_axes=EXTRA_AXES,
    )


@dataclass(frozen=True)
class Settings:
    epoch_seconds: float = 0.05
    delay: int = 2
    max_epochs: int = 8
    heartbeat_interval: float = 1.0
    # Far above any stall of a busy machine: a live transition judged abandoned would rerun.
    grace_period: float = 10.0
    poll_interval: float = 0.1
    max_poll_interval: float = 1.0
    # The first retry after a death waits this long (doubling after each further death).
    death_backoff: float = 2.0

    def args(self) -> list[str]:
        return [f"--{k.replace('_', '-')}={v}" for k, v in self.__dict__.items()]


def reference_plan(settings: Settings) -> dict[str, Any]:
    """The plan of one undisturbed in-process worker (no sleeps) with the same settings."""
    study = make_study(optuna.storages.InMemoryStorage(), settings)
    objective = SimulatedObjective(seed=SEED, max_epochs=settings.max_epochs)
    op.run_worker(study, objective, poll_interval=0.01)
    return plan_summary(op.get_plan(study))


def plan_summary(plan: op.Plan) -> dict[str, Any]:
    # Trial numbers differ between runs (retired duplicates, retries); all else must not.
    summary = plan.to_dict()
    for stage in summary["stages"]:
        stage.pop("trial")
    return summary


def make_study(url: str | optuna.storages.BaseStorage, settings: Settings) -> optuna.Study:
    pruner = op.KneePointPruner(delay=settings.delay, max_epochs=settings.max_epochs)
    return op.create_planning_study(
        make_graph(),
        storage=url,
        study_name=STUDY,
        pruner=pruner,
        load_if_exists=True,
        death_backoff=settings.death_backoff,
    )


@dataclass
class Phase:
    name: str
    transitions: int = 0
    wall: float = 0.0
    complete: bool = False
    workers_started: int = 0
    kills: int = 0
    kills_mid_transition: int = 0
    bursts: list[int] = field(default_factory=list)
    deaths: Counter[str] = field(default_factory=Counter)
    starts: int = 0
    killed_attempts: int = 0
    duplicates: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    left_over: int = 0
    left_trials: list[str] = field(default_factory=list)
    failed_exits: list[int] = field(default_factory=list)
    asks: list[float] = field(default_factory=list)
    scans: list[float] = field(default_factory=list)
    lost_claims: int = 0
    trials: int = 0
    plan: dict[str, Any] | None = None
    load_after: str = ""

    @property
    def per_minute(self) -> float:
        return 60.0 * self.transitions / self.wall if self.wall else 0.0


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def parse_log(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def close_phase(
    phase: Phase, url: str, settings: Settings, log: Path, latency: Path, killed: set[int]
) -> None:
    """Check the phase's study against its START log and read its latencies."""
    phase.load_after = load_average()
    check_phase(phase, url, settings, log, killed)
    for row in parse_log(latency):
        if row[0] == "ASK":
            phase.asks.append(float(row[1]))
        elif row[0] == "SCAN":
            phase.scans.append(float(row[1]))
        elif row[0] == "LOST":
            phase.lost_claims += 1


def busy_pids(rows: list[list[str]]) -> set[int]:
    """Pids with an objective STARTed and not FINISHed (mid-transition)."""
    open_: Counter[int] = Counter()
    for event, _, _, pid, _ in rows:
        open_[int(pid)] += 1 if event == "START" else -1
    return {pid for pid, n in open_.items() if n > 0}


def check_phase(phase: Phase, url: str, settings: Settings, log: Path, killed: set[int]) -> None:
    study = make_study(url, settings)
    graph = make_graph()
    keys = [t.key for t in graph.transitions]
    trials = study.get_trials(deepcopy=False)
    phase.trials = len(trials)
    complete = Counter(
        t.system_attrs.get(KEY_TRANSITION) for t in trials if t.state == TrialState.COMPLETE
    )
    phase.transitions = sum(complete.values())
    phase.lost = [k for k in keys if complete[k] == 0]
    phase.duplicates = [f"{k} completed {n} times" for k, n in complete.items() if n > 1]
    left = [t for t in trials if not t.state.is_finished()]
    phase.left_over = len(left)
    phase.left_trials = [
        f"trial {t.number} ({t.system_attrs.get(KEY_TRANSITION)}) left {t.state.name}, "
        f"attempt {t.system_attrs.get('opplan:attempt')}, worker {t.system_attrs.get(KEY_WORKER)}"
        for t in left
    ]
    phase.complete = not phase.lost and not phase.left_over
    phase.deaths = Counter(
        str(t.system_attrs.get(KEY_TRANSITION))
        for t in trials
        if t.state == TrialState.FAIL and KEY_STALE in t.system_attrs
    )

    # Every START is either the run of the trial that completed its transition, or of an
    # attempt whose worker we killed (its trial failed as stale). Anything else ran twice.
    by_number = {t.number: t for t in trials}
    rows = [r for r in parse_log(log) if r[0] == "START"]
    phase.starts = len(rows)
    seen: Counter[int] = Counter()
    for _, number, key, pid, _ in rows:
        trial = by_number[int(number)]
        seen[trial.number] += 1
        if seen[trial.number] > 1:
            phase.duplicates.append(f"trial {number} ({key}) started twice")
        elif trial.state == TrialState.COMPLETE:
            continue
        elif int(pid) in killed and (
            KEY_STALE in trial.system_attrs or trial.state == TrialState.RUNNING
        ):
            # Failed as stale after the kill (or, if the phase timed out, not yet).
            phase.killed_attempts += 1
        else:
            outcome = trial.system_attrs.get(KEY_OUTCOME)
            phase.duplicates.append(
                f"trial {number} ({key}) by live worker {pid}: {trial.state.name}, "
                f"outcome {outcome}, stale marker {KEY_STALE in trial.system_attrs}, "
                f"worker attr {trial.system_attrs.get(KEY_WORKER)}"
            )
    if not phase.lost:
        phase.plan = plan_summary(op.get_plan(study))
