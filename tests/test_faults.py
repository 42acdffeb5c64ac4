"""Fault injection: killed workers, a restarted PostgreSQL server, failing artifact stores.

Each test breaks something on purpose and then checks the study, not just the exit codes: every
transition is COMPLETE exactly once, none is left RUNNING or WAITING, finished transitions never
start again, and the plan equals the plan of an undisturbed run with the same seed.

The worker processes are ``tests/_worker_main.py`` (which logs every objective START and
FINISH); this file run as a script is that worker plus fault hooks (``--kill-at``) that SIGKILL
the worker at a chosen point: half-way through a checkpoint upload, or around the engine's tell.

Grace periods are at least 3 s: shorter ones make a starved worker on a loaded CI machine look
dead and get its live transition run twice, which these tests would then (rightly) report.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
import contextlib
import errno
import io
import json
import os
from pathlib import Path
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any
from typing import BinaryIO

import _worker_main as wm
import optuna
from optuna.exceptions import StorageInternalError
from optuna.trial import TrialState
import pytest
import sqlalchemy.exc
from test_concurrency import GRAPH
from test_concurrency import SEED
from test_concurrency import SETTINGS
from test_concurrency import Fleet
from test_concurrency import _plan_summary
from test_concurrency import _study
from test_concurrency import undisturbed_plan

import optuna_opplan as op
from optuna_opplan import _storage as storage_module
from optuna_opplan._protocol import KEY_OUTCOME
from optuna_opplan._protocol import KEY_STALE
from optuna_opplan._protocol import KEY_TRANSITION
from optuna_opplan.simulation import SimulatedObjective
from optuna_opplan.testing import PostgresServer

HERE = Path(__file__)
WORKER_MAIN = str(HERE.with_name("_worker_main.py"))
HEARTBEAT_INTERVAL = 0.2
GRACE = 3.0
# How long a whole fleet may take before the test calls it a deadlock.
WAIT_SECONDS = 240.0

# ---------------------------------------------------------------------------- fault worker
# Points where --kill-at can SIGKILL the worker process: in the middle of the real artifact
# store's write of a transition's checkpoint, or around the engine's tell.
PHASES = ("mid-upload", "before-tell", "after-tell")
# Which transition the kill hits: the first told one whose target has outgoing transitions
# (so the next claim depends on it), or the last transition into a state with several.
TARGETS = ("feeding", "last-into-state")


def _key(study: optuna.Study, trial: optuna.Trial) -> str:
    return str(study._storage.get_trial_system_attrs(trial._trial_id)[KEY_TRANSITION])


def _matches(study: optuna.Study, trial: optuna.Trial, which: str) -> bool:
    graph: op.TransitionGraph = study.sampler.graph  # type: ignore[attr-defined]
    key = _key(study, trial)
    target = graph.transition(key).target
    if which == "feeding":
        return any(t.source == target for t in graph.transitions)
    incoming = [t for t in graph.transitions if t.target == target]
    if len(incoming) < 2:
        return False
    statuses = op.get_progress(study).statuses
    return all(statuses[t.key].finished for t in incoming if t.key != key)


class _DieHalfWay:
    """A file to upload that SIGKILLs the process once half of it has been read (the store has
    written the chunks read before: a half-written artifact is left behind)."""

    def __init__(self, body: BinaryIO, size: int) -> None:
        self.body, self.size, self.read_so_far = body, size, 0

    def read(self, n: int = -1) -> bytes:
        if self.read_so_far >= self.size // 2:
            os.kill(os.getpid(), signal.SIGKILL)
        data = self.body.read(n)
        self.read_so_far += len(data)
        return data


def _install_kill(phase: str, which: str, marker: str) -> None:
    """SIGKILL this process at ``phase`` of the first transition matching ``which``.

    The marker file is created exclusively, so across a fleet (and its restarts) exactly one
    worker dies; it records the trial and transition hit, for the test to check.
    """

    def chosen(study: optuna.Study, trial: optuna.Trial) -> bool:
        if os.path.exists(marker) or not _matches(study, trial, which):
            return False
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        hit = {"trial": trial.number, "key": _key(study, trial), "pid": os.getpid()}
        os.write(fd, json.dumps(hit).encode())
        os.fsync(fd)
        return True

    if phase == "mid-upload":
        from optuna_opplan.video import CheckpointStore

        save_file = CheckpointStore.save_file

        def saving(self: CheckpointStore, trial: optuna.Trial, path: Any, **kw: Any) -> Any:
            if chosen(trial.study, trial):
                store, size = self.artifact_store, os.path.getsize(path)
                doomed = SimpleNamespace(
                    open_reader=store.open_reader,
                    remove=store.remove,
                    write=lambda artifact_id, body: store.write(
                        artifact_id, _DieHalfWay(body, size)
                    ),
                )
                return save_file(CheckpointStore(doomed), trial, path, **kw)
            return save_file(self, trial, path, **kw)

        CheckpointStore.save_file = saving  # type: ignore[method-assign]
        return

    tell = optuna.Study.tell

    def patched(self: optuna.Study, trial: Any = None, *args: Any, **kwargs: Any) -> Any:
        if phase == "before-tell" and chosen(self, trial):
            # Result and outcome recorded, trial still RUNNING.
            os.kill(os.getpid(), signal.SIGKILL)
        told = tell(self, trial, *args, **kwargs)
        if phase == "after-tell" and chosen(self, trial):
            # COMPLETE, before this worker's next scan and claim.
            os.kill(os.getpid(), signal.SIGKILL)
        return told

    optuna.Study.tell = patched  # type: ignore[method-assign]


def fault_worker_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description="tests/_worker_main.py with fault hooks")
    parser.add_argument("--kill-at", metavar="PHASE:TARGET")
    parser.add_argument("--marker")
    args, rest = parser.parse_known_args(argv)
    if args.kill_at:
        phase, _, which = args.kill_at.partition(":")
        assert phase in PHASES and which in TARGETS and args.marker, args
        _install_kill(phase, which, args.marker)
    return wm.main(rest)


# ------------------------------------------------------------------------------- helpers
def _args(storage: str, log: Path, *extra: str, epoch_seconds: float | None = None) -> list[str]:
    seconds = SETTINGS["epoch_seconds"] if epoch_seconds is None else epoch_seconds
    return [
        sys.executable,
        str(HERE),
        *("--storage", storage, "--study", "plan", "--log", str(log), "--graph", GRAPH),
        *("--seed", str(SEED), "--epoch-seconds", str(seconds)),
        *("--delay", str(SETTINGS["delay"]), "--max-epochs", str(SETTINGS["max_epochs"])),
        *("--heartbeat-interval", str(HEARTBEAT_INTERVAL), "--grace-period", str(GRACE)),
        "--no-create",
        *extra,
    ]


@pytest.fixture(scope="module")
def reference_plan() -> dict[str, Any]:
    return undisturbed_plan()


def _wait_for(what: str, fleet: Fleet, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not ready():
        if time.monotonic() > deadline or all(p.poll() is not None for p in fleet.procs):
            pytest.fail(f"{what} never happened\n{fleet.output()}")
        time.sleep(0.05)


def _wait_ok(fleet: Fleet, procs: Sequence[subprocess.Popen[bytes]]) -> None:
    assert fleet.wait(procs, timeout=WAIT_SECONDS) == [0] * len(procs), fleet.output()


def _check_outcome(study: optuna.Study, reference: dict[str, Any]) -> None:
    """Every transition COMPLETE exactly once, nothing left over, the undisturbed plan."""
    keys = [t.key for t in wm.GRAPHS[GRAPH]().transitions]
    trials = study.get_trials(deepcopy=False)
    complete = Counter(
        t.system_attrs.get(KEY_TRANSITION) for t in trials if t.state == TrialState.COMPLETE
    )
    assert complete == Counter(keys), "every transition must have exactly one COMPLETE trial"
    assert [t.number for t in trials if not t.state.is_finished()] == []
    assert _plan_summary(op.get_plan(study)) == reference


# ------------------------------------------------------------------------ killed workers
def test_every_worker_killed_then_restarted_resumes_from_storage(
    fleet: Fleet, tmp_path: Path, reference_plan: dict[str, Any]
) -> None:
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    log = tmp_path / "starts.log"
    _study(url, create=True)
    # The held transition keeps one worker busy mid-transition, so the kill always finds work
    # in flight (its retry, attempt 2, is not held).
    held = wm.GRAPHS[GRAPH]().critical_path()[1].key
    args = _args(url, log, "--hold", f"{held}=120")
    first = [fleet.start(args) for _ in range(3)]

    def in_flight() -> bool:
        rows = wm.parse_log(str(log))
        return held in wm.count_starts(rows) and sum(r[0] == "FINISH" for r in rows) >= 4

    _wait_for(f"{held} started after 4 finished transitions", fleet, in_flight)
    for proc in first:
        proc.send_signal(signal.SIGKILL)
    assert [p.wait(timeout=30) for p in first] == [-signal.SIGKILL] * 3

    study = _study(url)
    before = study.get_trials(deepcopy=False)
    done = {t.system_attrs[KEY_TRANSITION] for t in before if t.state == TrialState.COMPLETE}
    abandoned = [t.number for t in before if t.state == TrialState.RUNNING]
    assert done and abandoned, "the kill must land between finished and running transitions"
    rows_before = len(wm.parse_log(str(log)))

    _wait_ok(fleet, [fleet.start(args) for _ in range(2)])

    study = _study(url)
    _check_outcome(study, reference_plan)
    restarted = wm.count_starts(wm.parse_log(str(log))[rows_before:])
    keys = [t.key for t in wm.GRAPHS[GRAPH]().transitions]
    # Finished transitions never start again; every other one starts exactly once more.
    assert restarted == Counter(k for k in keys if k not in done)
    for number in abandoned:
        trial = study.trials[number]
        assert trial.state == TrialState.FAIL
        assert KEY_STALE in trial.system_attrs, "an abandoned trial carries the stale marker"


@pytest.mark.parametrize(
    ("phase", "which"),
    [
        # Between tell and the next claim: the transition is COMPLETE, its worker is gone.
        ("after-tell", "feeding"),
        # The last transition into a state completes and resolves it, then its worker dies:
        # the state's outgoing transitions must become ready for the others.
        ("after-tell", "last-into-state"),
        # Result and outcome recorded, the trial not yet COMPLETE: a stale trial holding a
        # result must be retried, never taken as done.
        ("before-tell", "last-into-state"),
    ],
)
def test_kill_around_completion_loses_and_repeats_nothing(
    phase: str, which: str, fleet: Fleet, tmp_path: Path, reference_plan: dict[str, Any]
) -> None:
    study, rows, hit = _kill_one_worker(fleet, tmp_path, f"{phase}:{which}")
    _check_outcome(study, reference_plan)
    if phase == "after-tell":
        # Told before the kill: nothing is run again.
        assert study.trials[hit["trial"]].state == TrialState.COMPLETE
        assert wm.count_starts(rows) == _starts_once()
    else:
        _check_retried_once(study, rows, hit)


def test_kill_mid_checkpoint_upload_never_uses_the_half_written_artifact(
    fleet: Fleet, tmp_path: Path, reference_plan: dict[str, Any]
) -> None:
    from optuna_opplan.video import CheckpointStore
    from optuna_opplan.video._checkpoint import KEY_CHECKPOINT

    # Every transition loads its source's checkpoint (hash-checked; a load that fails or
    # gives another trial's weights fails the transition, which would show as an extra START)
    # and uploads its own; the kill lands half-way through one upload.
    folder = tmp_path / "artifacts"
    study, rows, hit = _kill_one_worker(
        fleet, tmp_path, "mid-upload:feeding", "--checkpoints", str(folder)
    )
    _check_outcome(study, reference_plan)
    _check_retried_once(study, rows, hit)
    assert KEY_CHECKPOINT not in study.trials[hit["trial"]].system_attrs, (
        "a half-written upload is never recorded"
    )
    # Every kept checkpoint is whole (its SHA-256 matches) and holds its own trial's weights.
    store = CheckpointStore(str(folder))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for t in complete:
        assert float(store.load(study, t.number)["w"][0]) == t.number
    recorded = {t.system_attrs[KEY_CHECKPOINT]["artifact_id"] for t in complete}
    # The half-written artifact is still in the store, shorter than a whole one, referenced
    # by no checkpoint record.
    (half,) = set(os.listdir(folder)) - recorded
    whole = complete[0].system_attrs[KEY_CHECKPOINT]["bytes"]
    assert 0 < (folder / half).stat().st_size < whole


def _kill_one_worker(
    fleet: Fleet, tmp_path: Path, kill_at: str, *extra: str
) -> tuple[optuna.Study, list[tuple[str, int, str, int, int]], dict[str, Any]]:
    """Run two workers until one SIGKILLs itself at ``kill_at``, restart it as a supervisor
    would, run to the end; return the study, the START/FINISH log and what the kill hit."""
    url = str(tmp_path / "plan.log")
    log = tmp_path / "starts.log"
    marker = tmp_path / "killed.json"
    _study(url, create=True)
    args = _args(url, log, *extra)
    first = [fleet.start([*args, "--kill-at", kill_at, "--marker", str(marker)]) for _ in range(2)]
    _wait_for(f"a kill at {kill_at}", fleet, marker.exists)
    hit = json.loads(marker.read_text())
    killed = next(p for p in first if p.pid == hit["pid"])
    assert killed.wait(timeout=30) == -signal.SIGKILL
    _wait_ok(fleet, [p for p in first if p is not killed] + [fleet.start(args)])
    return _study(url), wm.parse_log(str(log)), hit


def _starts_once() -> Counter[str]:
    return Counter(t.key for t in wm.GRAPHS[GRAPH]().transitions)


def _check_retried_once(
    study: optuna.Study, rows: Sequence[tuple[str, int, str, int, int]], hit: dict[str, Any]
) -> None:
    """The killed attempt was abandoned (failed as stale) and retried exactly once."""
    trial = study.trials[hit["trial"]]
    assert trial.state == TrialState.FAIL
    assert KEY_STALE in trial.system_attrs
    assert wm.count_starts(rows) == _starts_once() + Counter([hit["key"]])
    retry = [r for r in rows if r[0] == "START" and r[2] == hit["key"]][1]
    assert retry[4] == 2, "the retry is the transition's second attempt"


# ------------------------------------------------------------------------ repeated deaths
# The repeated-kill tests run with the engine's default death budget and the tests' short
# backoff (doubling after each death, capped at 8x), so that five deaths fit a test.
DEATH_BACKOFF = wm.DEATH_BACKOFF
RETRIES: dict[str, Any] = {}


def _retries_args(retries: dict[str, Any]) -> list[str]:
    return [f"--{name.replace('_', '-')}={value}" for name, value in retries.items()]


def _retry_study(url: str, retries: dict[str, Any], *, create: bool = False) -> optuna.Study:
    return wm.make_study(
        url,
        "plan",
        graph=GRAPH,
        delay=SETTINGS["delay"],
        max_epochs=SETTINGS["max_epochs"],
        create=create,
        retries=retries,
    )


def _backoff(death: int) -> float:
    """The least wait after the ``death``-th death of a transition, beyond the grace period."""
    return min(DEATH_BACKOFF * 2 ** (death - 1), 8 * DEATH_BACKOFF)


class Preemptor:
    """A supervisor and a preempting cloud in one: keeps ``n`` workers running, and SIGKILLs
    workers from outside whenever the START log shows an attempt that ``doomed`` picks (the
    worker that started it, or with ``everyone`` the whole fleet), starting replacements at
    once. The held attempts sleep after their START, so every kill lands mid-transition."""

    def __init__(self, fleet: Fleet, args: list[str], log: Path, n: int) -> None:
        self.fleet, self.args, self.log, self.n = fleet, args, log, n
        self.kills: list[tuple[float, tuple[str, int, str, int, int]]] = []
        self.starts: dict[tuple[str, int], float] = {}

    def run(self, doomed: Callable[[str, int], bool], *, everyone: bool = False) -> None:
        alive = [self.fleet.start(self.args) for _ in range(self.n)]
        seen = 0
        # Many grace periods and restarts in a row: a deadlock bound, not a speed target.
        deadline = time.monotonic() + 2.5 * WAIT_SECONDS
        while any(p.poll() is None for p in alive):
            if time.monotonic() > deadline:
                pytest.fail(f"the fleet never finished\n{self.fleet.output()}")
            rows = wm.parse_log(str(self.log))
            for row in rows[seen:]:
                event, _, key, pid, attempt = row
                if event != "START":
                    continue
                self.starts[key, attempt] = time.monotonic()
                if not doomed(key, attempt):
                    continue
                victims = [p for p in alive if p.poll() is None and (everyone or p.pid == pid)]
                assert victims, f"the worker that started {row} is gone\n{self.fleet.output()}"
                for proc in victims:
                    proc.send_signal(signal.SIGKILL)
                for proc in victims:
                    assert proc.wait(timeout=30) == -signal.SIGKILL
                    alive.remove(proc)
                alive += [self.fleet.start(self.args) for _ in range(self.n - len(alive))]
                self.kills.append((time.monotonic(), row))
            seen = len(rows)
            time.sleep(0.02)
        assert [p.returncode for p in alive] == [0] * len(alive), self.fleet.output()

    def deaths(self, key: str) -> list[int]:
        """The attempts of ``key`` whose worker was killed."""
        return [row[4] for _, row in self.kills if row[2] == key]


def _preempt(
    fleet: Fleet,
    tmp_path: Path,
    held: Sequence[str],
    attempts: int,
    *,
    everyone: bool = False,
    retries: dict[str, Any] = RETRIES,
) -> tuple[optuna.Study, Preemptor]:
    """Run 3 workers on a journal file, killing every worker that starts one of the first
    ``attempts`` attempts of a ``held`` transition (``everyone``: the whole fleet with it)."""
    url = str(tmp_path / "plan.log")
    log = tmp_path / "starts.log"
    _retry_study(url, retries, create=True)
    holds = [arg for key in held for arg in ("--hold", f"{key}=120")]
    args = _args(url, log, *holds, "--hold-attempts", str(attempts), *_retries_args(retries))
    preemptor = Preemptor(fleet, args, log, 3)
    preemptor.run(lambda key, attempt: key in held and attempt <= attempts, everyone=everyone)
    return _retry_study(url, retries), preemptor


def _check_deaths(study: optuna.Study, preemptor: Preemptor, key: str, deaths: int) -> None:
    """``key`` died ``deaths`` times, each attempt failed as stale, then succeeded once; each
    retry waited out a grace period and a growing backoff."""
    assert preemptor.deaths(key) == list(range(1, deaths + 1))
    trials = [t for t in study.get_trials(deepcopy=False) if t.system_attrs[KEY_TRANSITION] == key]
    ran = [
        t for t in trials if (t.system_attrs.get(KEY_OUTCOME) or {}).get("status") != "superseded"
    ]
    assert [t.state for t in ran] == [TrialState.FAIL] * deaths + [TrialState.COMPLETE]
    assert all(KEY_STALE in t.system_attrs for t in ran[:-1])
    status = op.get_progress(study).statuses[key]
    assert (status.status, status.failures, status.deaths) == ("done", 0, deaths)
    for death in range(1, deaths + 1):
        # The killed worker's last heartbeat may precede its START by one interval; the
        # grace period runs from there, then the backoff from the retry's enqueueing.
        waited = preemptor.starts[key, death + 1] - preemptor.starts[key, death]
        assert waited >= GRACE - HEARTBEAT_INTERVAL + _backoff(death), (death, waited)


def test_a_transition_killed_more_often_than_max_retries_still_finishes_once(
    fleet: Fleet, tmp_path: Path, reference_plan: dict[str, Any]
) -> None:
    # max_retries is 3: before deaths had their own budget, the 4th death made this
    # transition a failed edge, the workers left and the plan routed around it.
    key = wm.GRAPHS[GRAPH]().critical_path()[1].key
    study, preemptor = _preempt(fleet, tmp_path, [key], attempts=5)
    _check_outcome(study, reference_plan)
    _check_deaths(study, preemptor, key, 5)
    starts = wm.count_starts(wm.parse_log(str(tmp_path / "starts.log")))
    assert starts == _starts_once() + Counter({key: 5})


def test_kills_concentrated_at_the_end_of_the_graph(
    fleet: Fleet, tmp_path: Path, reference_plan: dict[str, Any]
) -> None:
    graph = wm.GRAPHS[GRAPH]()
    last = [t.key for t in graph.transitions if t.target in graph.goal_states]
    assert len(last) == 4
    study, preemptor = _preempt(fleet, tmp_path, last, attempts=4)
    _check_outcome(study, reference_plan)
    for key in last:
        _check_deaths(study, preemptor, key, 4)


def test_the_whole_fleet_killed_at_once_again_and_again(
    fleet: Fleet, tmp_path: Path, reference_plan: dict[str, Any]
) -> None:
    # Every time the held transition starts, every worker dies with it (a lost rack, a
    # cluster-wide preemption): it and whatever ran beside it die four times, one more than
    # max_retries.
    key = wm.GRAPHS[GRAPH]().critical_path()[1].key
    study, preemptor = _preempt(fleet, tmp_path, [key], attempts=4, everyone=True)
    _check_outcome(study, reference_plan)
    _check_deaths(study, preemptor, key, 4)
    assert len(preemptor.kills) == 4
    assert len(fleet.procs) == 3 + 4 * 3


def test_a_transition_that_kills_its_worker_every_time_ends_as_a_failed_edge_that_says_so(
    fleet: Fleet, tmp_path: Path
) -> None:
    graph = wm.GRAPHS[GRAPH]()
    key = graph.critical_path()[1].key
    retries = {**RETRIES, "max_deaths": 2}
    study, preemptor = _preempt(fleet, tmp_path, [key], attempts=10**6, retries=retries)
    # The budget (2 deaths) used up: the third death ends it; nothing else is lost.
    assert preemptor.deaths(key) == [1, 2, 3]
    status = op.get_progress(study).statuses[key]
    assert (status.status, status.deaths) == ("failed", 3)
    assert status.reason.startswith(
        "died 3 times: its worker stopped sending heartbeats each time"
    ), status.reason
    assert "last worker" in status.reason
    complete = Counter(
        t.system_attrs[KEY_TRANSITION] for t in study.get_trials(states=(TrialState.COMPLETE,))
    )
    assert complete == Counter(t.key for t in graph.transitions if t.key != key)
    # Each dead attempt says whose heartbeats stopped.
    died = [
        t.system_attrs[KEY_OUTCOME]["reason"]
        for t in study.get_trials(states=(TrialState.FAIL,))
        if t.system_attrs[KEY_TRANSITION] == key
        and t.system_attrs[KEY_OUTCOME]["status"] == "died"
    ]
    assert len(died) == 3
    assert all("stopped sending heartbeats" in reason for reason in died)


def _storage_error(url: str) -> None:
    """Raise what Optuna's RDBStorage raises when the server drops the connection; the driver's
    message quotes the URL with its password, as some drivers do."""
    try:
        raise sqlalchemy.exc.OperationalError(
            "SELECT 1", None, ConnectionError(f"server at {url} closed the connection")
        )
    except sqlalchemy.exc.OperationalError as exc:
        raise StorageInternalError("An exception is raised during the commit.") from exc


@pytest.mark.parametrize(("failures", "completes"), [(3, True), (10**9, False)])
def test_storage_errors_are_retried_a_bounded_number_of_times(
    failures: int,
    completes: bool,
    postgres_server: PostgresServer,
    postgres_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The test server trusts every client: a password in the URL is accepted and ignored.
    url = postgres_database_url.replace("postgres@", "postgres:secret@")
    monkeypatch.setattr(storage_module, "STORAGE_RETRIES", 3)
    monkeypatch.setattr(storage_module, "STORAGE_BACKOFF", 0.01)
    study = _study(url, create=True)
    sampler = study.sampler
    scan = sampler.progress
    calls = []

    def flaky_progress(study: optuna.Study) -> op.Progress:
        calls.append(1)
        if len(calls) <= failures:
            _storage_error(url)
        return scan(study)

    monkeypatch.setattr(sampler, "progress", flaky_progress)
    objective = SimulatedObjective(seed=SEED, max_epochs=SETTINGS["max_epochs"])
    if completes:
        n = len(wm.GRAPHS[GRAPH]().transitions)
        assert op.run_worker(study, objective, poll_interval=0.01) == n
    else:
        with pytest.raises(op.StorageUnavailableError) as info:
            op.run_worker(study, objective, poll_interval=0.01)
        assert len(calls) == 4, "three retries, then give up"
        message = str(info.value)
        assert "failed 4 times in a row" in message
        assert "closed the connection" in message, "the root cause, not Optuna's wrapper"
        assert "postgres:***@" in message
        assert info.value.__cause__ is None and info.value.__suppress_context__
        assert {t.state for t in study.get_trials(deepcopy=False)} == {TrialState.WAITING}, (
            "nothing was claimed: create_planning_study only enqueued the transitions"
        )
    out, err = capfd.readouterr()
    assert "attempt 1 of 3" in err
    assert "secret" not in out + err


# ------------------------------------------------------------------ failing artifact stores
class FailingStore:
    """An artifact store over a folder whose first ``failures`` writes stop half-way with
    ENOSPC (a full disk), leaving a half-written artifact behind."""

    def __init__(self, folder: Path, failures: int) -> None:
        from optuna.artifacts import FileSystemArtifactStore

        self.inner = FileSystemArtifactStore(str(folder))
        self.failures = failures

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.inner.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if self.failures <= 0:
            self.inner.write(artifact_id, content_body)
            return
        self.failures -= 1
        data = content_body.read()
        self.inner.write(artifact_id, io.BytesIO(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(artifact_id)


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` unwritable for this process while the block runs.

    Root ignores permission bits, so as root the process takes the ``nobody`` user's identity
    for the block instead (the folder belongs to root, mode 755).
    """
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    folder.chmod(0o755)
    nobody = pwd.getpwnam("nobody")
    os.setegid(nobody.pw_gid)
    os.seteuid(nobody.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


ARTIFACT_FAULTS = {
    "store raising on write": ("raise", "OSError: [Errno 28] No space left on device"),
    "read-only directory": ("read-only", "PermissionError: [Errno 13] Permission denied"),
}


@pytest.mark.parametrize("fault", sorted(ARTIFACT_FAULTS))
@pytest.mark.parametrize("failures", [1, 10**9])
def test_failing_checkpoint_upload_fails_the_transition_with_its_reason(
    fault: str, failures: int, tmp_path: Path
) -> None:
    import torch

    from optuna_opplan.video import CheckpointStore
    from optuna_opplan.video._checkpoint import KEY_CHECKPOINT

    kind, reason = ARTIFACT_FAULTS[fault]
    folder = tmp_path / "artifacts"
    folder.mkdir()
    store = CheckpointStore(FailingStore(folder, failures if kind == "raise" else 0))
    if kind == "read-only":
        with _read_only(folder), pytest.raises(PermissionError):
            (folder / "probe").write_bytes(b"")
    graph = op.TransitionGraph.basic(
        clip_lengths=(8, 16), learning_rates=(0.1, 0.01), samplings=("uniform",)
    )
    uploads = {"left": failures}

    def objective(trial: optuna.Trial) -> None:
        step = op.current_transition(trial)
        if step.source_trial is not None:
            # Hash-checked: only a fully uploaded, recorded checkpoint can be loaded.
            assert store.load(trial.study, step.source_trial) is not None
        SimulatedObjective(seed=SEED, max_epochs=SETTINGS["max_epochs"])(trial)
        state = {"w": torch.full((64,), float(trial.number))}
        unwritable = kind == "read-only" and uploads["left"] > 0
        uploads["left"] -= 1
        with _read_only(folder) if unwritable else contextlib.nullcontext():
            store.save(trial, state, epoch=SETTINGS["max_epochs"])

    def run(max_retries: int) -> optuna.Study:
        study = optuna.create_study(
            direction="maximize",
            sampler=op.PlanningSampler(graph, max_retries=max_retries),
            pruner=op.KneePointPruner(delay=SETTINGS["delay"], max_epochs=SETTINGS["max_epochs"]),
        )
        op.run_worker(study, objective, heartbeat_interval=0.05, poll_interval=0.01)
        return study

    study = run(max_retries=1)
    trials = study.get_trials(deepcopy=False)
    # Failed attempts; transitions out of a state that could not be reached are "skipped".
    failed = [
        t
        for t in trials
        if t.state == TrialState.FAIL and t.system_attrs[KEY_OUTCOME]["status"] != "skipped"
    ]
    assert failed, "the upload failure must fail the transition"
    for trial in failed:
        outcome = trial.system_attrs[KEY_OUTCOME]
        assert outcome["status"] == "error", "an I/O error is transient: retried"
        assert outcome["reason"].startswith(reason)
        assert KEY_CHECKPOINT not in trial.system_attrs, "a failed upload is never recorded"
    first = graph.transitions[0].key
    attempts = [t for t in trials if t.system_attrs[KEY_TRANSITION] == first]
    if failures == 1:
        # One failed attempt, retried once; the plan is the undisturbed one.
        assert [t.state for t in attempts] == [TrialState.FAIL, TrialState.COMPLETE]
        assert len(failed) == 1
        uploads["left"] = 0
        assert _plan_summary(op.get_plan(study)) == _plan_summary(op.get_plan(run(1)))
        if kind == "raise":
            # The half-written artifact stays in the store, but nothing refers to it.
            recorded = {
                t.system_attrs[KEY_CHECKPOINT]["artifact_id"]
                for t in trials
                if t.state == TrialState.COMPLETE
            }
            assert len(recorded) == len(graph.transitions)
            assert set(os.listdir(folder)) - recorded
    else:
        # Every attempt fails: retried max_retries times, then a failed edge with the reason.
        assert [t.state for t in attempts] == [TrialState.FAIL, TrialState.FAIL]
        status = op.get_progress(study).statuses[first]
        assert status.status == "failed"
        assert reason in status.reason
        with pytest.raises(op.GoalUnreachableError):
            op.get_plan(study)


# --------------------------------------------------------------------- secrets in storage URLs
def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_storage_password_is_never_printed(tmp_path: Path) -> None:
    url = f"postgresql://user:secret@127.0.0.1:{_closed_port()}/x"
    commands = {
        "library worker": [WORKER_MAIN, "--storage", url, "--study", "s", "--log", "log"],
        "opplan worker": [
            "-m",
            "optuna_opplan.cli",
            "worker",
            "--storage",
            url,
            "--study-name",
            "s",
        ],
        "opplan status": [
            "-m",
            "optuna_opplan.cli",
            "status",
            "--storage",
            url,
            "--study-name",
            "s",
        ],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, *args],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=WAIT_SECONDS)
        assert proc.returncode != 0, name
        assert "secret" not in out + err, name
        # Still a useful error: it says where the connection failed.
        assert "Connection refused" in err, (name, err[-2000:])


if __name__ == "__main__":
    sys.exit(fault_worker_main(sys.argv[1:]))


# ---------------------------------------------------------------------- PostgreSQL restart
def test_postgres_restart_mid_run_keeps_the_study_consistent(
    postgres_server: PostgresServer,
    postgres_database_url: str,
    fleet: Fleet,
    tmp_path: Path,
    reference_plan: dict[str, Any],
) -> None:
    url = postgres_database_url
    log = tmp_path / "starts.log"
    _study(url, create=True)
    # Longer epochs: transitions are mid-training (reporting, beating) when the server goes;
    # a transition on the critical path held for a while guarantees the plan is unfinished.
    held = wm.GRAPHS[GRAPH]().critical_path()[1].key
    args = _args(url, log, "--hold", f"{held}=5", epoch_seconds=0.05)
    first = [fleet.start(args) for _ in range(2)]
    _wait_for(f"{held} started", fleet, lambda: held in wm.count_starts(wm.parse_log(str(log))))
    # Down for less than the grace period (live trials must not be judged abandoned) and far
    # less than the workers' storage retries: they reconnect and carry on.
    finished = {key for event, _, key, _, _ in wm.parse_log(str(log)) if event == "FINISH"}
    assert held not in finished, "the outage must come mid-run"
    postgres_server.restart("fast", down_seconds=1.0)
    _wait_ok(fleet, first)
    # A worker started afterwards finds the plan complete on a consistent study.
    _wait_ok(fleet, [fleet.start(args)])
    _check_outcome(_study(url), reference_plan)
    # Attempts cut by the outage failed with a reason (or as stale) and were retried; no
    # transition ran more often than its failed attempts allow.
    study = _study(url)
    failed: Counter[str] = Counter()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        outcome = trial.system_attrs.get(KEY_OUTCOME) or {}
        if outcome.get("status") == "superseded":  # a duplicate that never ran
            continue
        assert outcome.get("reason") or KEY_STALE in trial.system_attrs
        failed[trial.system_attrs[KEY_TRANSITION]] += 1
    starts = wm.count_starts(wm.parse_log(str(log)))
    assert all(1 <= n <= 1 + failed[key] for key, n in starts.items()), (starts, failed)


def test_a_transition_finishing_during_a_postgres_restart_is_recorded_not_retrained(
    postgres_server: PostgresServer,
    postgres_database_url: str,
    reference_plan: dict[str, Any],
    capfd: pytest.CaptureFixture[str],
) -> None:
    study = _study(postgres_database_url, create=True)
    victim = wm.GRAPHS[GRAPH]().critical_path()[1].key
    pid_file = Path(postgres_server.tmp, "data", "postmaster.pid")
    starts: Counter[str] = Counter()
    restarts: list[threading.Thread] = []

    def objective(trial: optuna.Trial) -> None:
        key = op.current_transition(trial).transition.key
        starts[key] += 1
        SimulatedObjective(seed=SEED, max_epochs=SETTINGS["max_epochs"])(trial)
        if key == victim and not restarts:
            # The server goes down as the transition ends: its result, outcome and
            # COMPLETE state must all be written while it is away or coming back.
            restart = threading.Thread(
                target=postgres_server.restart, kwargs={"down_seconds": 2.0}
            )
            restarts.append(restart)
            restart.start()
            while pid_file.exists():
                time.sleep(0.01)

    op.run_worker(study, objective, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE)
    restarts[0].join()
    _check_outcome(_study(postgres_database_url), reference_plan)
    assert starts[victim] == 1, "trained once: the outcome waited for the server"
    assert study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) == []
    err = capfd.readouterr().err
    assert f"({victim}) could not be recorded" in err
    assert "is recorded after all" in err
