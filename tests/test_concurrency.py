"""Exactly-once planning with several worker processes on a shared storage.

Each test starts real worker processes (``tests/_worker_main.py``) on SQLite, a journal file or
a PostgreSQL server started for the session, and checks the study and the workers' START log
afterwards: every transition ran once and completed once, nothing is left over, and the plan is
the one a single undisturbed process finds with the same seed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

import _worker_main as wm
import optuna
from optuna.trial import TrialState
import pytest

import optuna_opplan as op
from optuna_opplan._protocol import KEY_STALE
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan.simulation import SimulatedObjective

WORKER = str(Path(__file__).with_name("_worker_main.py"))
STORAGES = ("sqlite", "journal", "postgresql")
GRAPH = "small"
SEED = 7
# Short transitions that still overlap: a few epochs of 10 ms each, knee delay 3.
SETTINGS = {"epoch_seconds": 0.01, "delay": 3, "max_epochs": 8}
N_WORKERS = 4
HEARTBEAT_INTERVAL = 0.2
# Without kills no trial may be judged abandoned: a grace period far beyond any stall of a
# loaded CI machine, so a stale verdict there would be a real bug, not noise.
NO_KILL_GRACE = 60.0
# With a kill, survivors wait this long before retrying. Shorter grace periods were seen to
# fail live trials of a starved worker (2s at load average 14 on 2 cores), which reruns them.
KILL_GRACE = 6.0
# A deadlock or a lost transition shows up as a worker that never returns.
WAIT_SECONDS = 300.0


def _worker_args(storage: str, log: Path, grace: float, *extra: str) -> list[str]:
    return [
        sys.executable,
        WORKER,
        "--storage",
        storage,
        "--study",
        "plan",
        "--log",
        str(log),
        "--graph",
        GRAPH,
        "--seed",
        str(SEED),
        "--epoch-seconds",
        str(SETTINGS["epoch_seconds"]),
        "--delay",
        str(SETTINGS["delay"]),
        "--max-epochs",
        str(SETTINGS["max_epochs"]),
        "--heartbeat-interval",
        str(HEARTBEAT_INTERVAL),
        "--grace-period",
        str(grace),
        *extra,
    ]


class Fleet:
    """Worker processes started by one test; whatever is still alive at teardown is killed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str]) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        # Files, not pipes: a chatty worker must never block on a full pipe.
        with (
            open(self.folder / f"worker{n}.out", "wb") as out,
            open(self.folder / f"worker{n}.err", "wb") as err,
        ):
            proc = subprocess.Popen(list(args), stdout=out, stderr=err)
        self.procs.append(proc)
        return proc

    def wait(
        self,
        procs: Sequence[subprocess.Popen[bytes]] | None = None,
        *,
        timeout: float = WAIT_SECONDS,
    ) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for proc in self.procs if procs is None else procs:
            try:
                codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.kill_all()
                pytest.fail(f"a worker did not finish within {timeout}s\n{self.output()}")
        return codes

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.folder / f"worker{self.procs.index(proc)}.err").read_text(errors="replace")

    def output(self) -> str:
        parts = []
        for i, proc in enumerate(self.procs):
            err = (self.folder / f"worker{i}.err").read_text(errors="replace")
            parts.append(f"--- worker {i} pid {proc.pid} rc {proc.returncode}\n{err[-3000:]}")
        return "\n".join(parts)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(params=STORAGES)
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty storage of each kind (the PostgreSQL server starts on first use)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'plan.db'}"
    if request.param == "journal":
        return str(tmp_path / "plan.log")
    return str(request.getfixturevalue("postgres_database_url"))


def _plan_summary(plan: op.Plan) -> dict[str, Any]:
    # Trial numbers differ between runs (retired duplicates, retries); all else must not.
    summary = plan.to_dict()
    for stage in summary["stages"]:
        stage.pop("trial")
    return summary


def undisturbed_plan() -> dict[str, Any]:
    """The plan of one undisturbed in-process worker with the same seed and settings."""
    study = _study(optuna.storages.InMemoryStorage(), create=True)
    op.run_worker(study, SimulatedObjective(seed=SEED, max_epochs=SETTINGS["max_epochs"]))
    return _plan_summary(op.get_plan(study))


@pytest.fixture(scope="module")
def reference_plan() -> dict[str, Any]:
    return undisturbed_plan()


def _study(storage: str | optuna.storages.BaseStorage, *, create: bool = False) -> optuna.Study:
    return wm.make_study(
        storage,
        "plan",
        graph=GRAPH,
        delay=SETTINGS["delay"],
        max_epochs=SETTINGS["max_epochs"],
        create=create,
    )


def _check_exactly_once(
    study: optuna.Study,
    log: Path,
    reference: dict[str, Any],
    *,
    retried: dict[str, int] | None = None,
) -> list[tuple[str, int, str, int, int]]:
    """Assert the outcome of a finished fleet; ``retried`` maps a transition to its starts."""
    keys = [t.key for t in wm.GRAPHS[GRAPH]().transitions]
    trials = study.get_trials(deepcopy=False)

    complete = Counter(
        t.system_attrs.get(KEY_TRANSITION) for t in trials if t.state == TrialState.COMPLETE
    )
    assert complete == Counter(keys), "every transition must have exactly one COMPLETE trial"
    left = [(t.number, t.state.name) for t in trials if not t.state.is_finished()]
    assert left == [], "no trial may be left RUNNING or WAITING"

    rows = wm.parse_log(str(log))
    starts = wm.count_starts(rows)
    expected = Counter(keys)
    expected.update({k: n - 1 for k, n in (retried or {}).items()})
    assert starts == expected, "each transition must start once (plus the retries expected)"
    # The run that completed a transition is the one its COMPLETE trial stands for.
    finished = {(number, key) for event, number, key, _, _ in rows if event == "FINISH"}
    completed = {
        (t.number, t.system_attrs[KEY_TRANSITION])
        for t in trials
        if t.state == TrialState.COMPLETE
    }
    assert completed == finished

    assert _plan_summary(op.get_plan(study)) == reference
    return rows


@pytest.mark.parametrize(
    ("storage_url", "init"),
    [
        ("sqlite", "precreated"),
        # Workers racing on an empty storage to create the schema, the study and its trials:
        # how a fleet really starts.
        ("sqlite", "racing"),
        ("journal", "racing"),
        ("postgresql", "racing"),
        # A bare study made by Optuna's own CLI; the workers set it up for planning.
        ("sqlite", "optuna create-study"),
        ("journal", "optuna create-study"),
    ],
    indirect=["storage_url"],
)
def test_workers_run_each_transition_exactly_once(
    storage_url: str, init: str, fleet: Fleet, tmp_path: Path, reference_plan: dict[str, Any]
) -> None:
    log = tmp_path / "starts.log"
    extra: list[str] = []
    if init == "precreated":
        # The study (and the storage's tables) exist before any worker starts.
        _study(storage_url, create=True)
        extra = ["--no-create"]
    elif init == "optuna create-study":
        journal = () if "://" in storage_url else ("--storage-class", "JournalFileBackend")
        optuna_cli = Path(sys.executable).with_name("optuna")
        subprocess.run(
            [optuna_cli, "create-study", "--storage", storage_url, *journal]
            + ["--study-name", "plan", "--direction", "maximize"],
            check=True,
            capture_output=True,
        )
        extra = ["--no-create"]
    for _ in range(N_WORKERS):
        fleet.start(_worker_args(storage_url, log, NO_KILL_GRACE, *extra))
    codes = fleet.wait()
    assert codes == [0] * N_WORKERS, fleet.output()

    rows = _check_exactly_once(_study(storage_url), log, reference_plan)
    # The work was really shared, or the test proves nothing about concurrency.
    assert len({pid for event, _, _, pid, _ in rows if event == "START"}) > 1


@pytest.mark.parametrize(
    ("storage_url", "survivors"),
    [
        ("sqlite", "others"),
        ("journal", "restarted"),
        ("postgresql", "others"),
    ],
    indirect=["storage_url"],
)
def test_killed_worker_transition_is_retried_once(
    storage_url: str,
    survivors: str,
    fleet: Fleet,
    tmp_path: Path,
    reference_plan: dict[str, Any],
) -> None:
    log = tmp_path / "starts.log"
    graph = wm.GRAPHS[GRAPH]()
    # A transition out of a trained state, so its retry must reuse the same source checkpoint;
    # its first attempt sleeps after START, so the kill lands mid-transition.
    victim = graph.critical_path()[1].key
    args = _worker_args(storage_url, log, KILL_GRACE, "--hold", f"{victim}=120")
    _study(storage_url, create=True)
    first = [fleet.start(args) for _ in range(N_WORKERS if survivors == "others" else 1)]

    deadline = time.monotonic() + WAIT_SECONDS
    started: list[tuple[str, int, str, int, int]] = []
    while not started:
        if time.monotonic() > deadline or any(p.poll() is not None for p in first):
            pytest.fail(f"{victim} never started\n{fleet.output()}")
        time.sleep(0.05)
        started = [r for r in wm.parse_log(str(log)) if r[0] == "START" and r[2] == victim]
    _, killed_trial, _, killed_pid, _ = started[0]
    killed = next(p for p in first if p.pid == killed_pid)
    os.kill(killed_pid, signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL

    if survivors == "restarted":
        fleet.start(args)
    rest = [p for p in fleet.procs if p is not killed]
    assert fleet.wait(rest) == [0] * len(rest), fleet.output()

    study = _study(storage_url)
    rows = _check_exactly_once(study, log, reference_plan, retried={victim: 2})
    trial = study.trials[killed_trial]
    assert trial.state == TrialState.FAIL
    assert KEY_STALE in trial.system_attrs, "the abandoned trial must carry the stale marker"
    retry = [r for r in rows if r[0] == "START" and r[2] == victim and r[1] != killed_trial]
    assert [(pid != killed_pid, attempt) for _, _, _, pid, attempt in retry] == [(True, 2)]


def _snapshot(study: optuna.Study) -> dict[str, Any]:
    trials = [
        (t.number, t.state, t.params, t.system_attrs, t.intermediate_values, t.values)
        for t in study.get_trials(deepcopy=False)
    ]
    return {
        "trials": trials,
        "study_system_attrs": study._storage.get_study_system_attrs(study._study_id),
        "user_attrs": study.user_attrs,
        "studies": [s.study_name for s in optuna.get_all_study_summaries(study._storage)],
    }


@pytest.mark.parametrize(
    ("storage_url", "option", "value", "mentioned"),
    [
        ("sqlite", "--graph", "small-basic", "graph rule"),
        ("journal", "--graph", "extended", "graph axes"),
        ("journal", "--score", "observed", "score"),
        ("journal", "--delay", "5", "pruner"),
    ],
    indirect=["storage_url"],
)
def test_worker_with_another_config_exits_and_leaves_study_unchanged(
    storage_url: str, option: str, value: str, mentioned: str, fleet: Fleet, tmp_path: Path
) -> None:
    study = _study(storage_url, create=True)
    # A study that is partly planned: its config stored, some transitions done, others waiting.
    objective = SimulatedObjective(seed=SEED, max_epochs=SETTINGS["max_epochs"])
    assert op.run_worker(study, objective, max_transitions=2) == 2
    before = _snapshot(study)

    log = tmp_path / "starts.log"
    proc = fleet.start(_worker_args(storage_url, log, NO_KILL_GRACE, option, value))
    assert fleet.wait([proc]) != [0]
    err = fleet.stderr(proc)
    assert "ConfigMismatchError" in err
    assert "differs from the one study 'plan' was set up with" in err
    assert mentioned in err
    assert wm.parse_log(str(log)) == []
    assert _snapshot(_study(storage_url)) == before
