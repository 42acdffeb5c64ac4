"""`opplan worker --nproc-per-node 2`: each transition trained once by a 2-process
DistributedDataParallel group (gloo on CPU), through real torch.distributed process groups,
including a rank killed in the middle of a transition."""

from __future__ import annotations

import collections
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState
import pytest
from test_cli_video import TINY_CONFIG

# More videos than the CLI test, so an epoch lasts long enough to kill a rank inside it, and
# one learning rate: a chain of two transitions keeps the test short.
CONFIG = TINY_CONFIG.replace("videos_per_class = 6", "videos_per_class = 8").replace(
    "learning_rates = [0.05, 0.005]", "learning_rates = [0.05]"
)
STUDY = "ddp"


def _opplan(*args: str, cwd: Path, log: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "OPTUNA_STORAGE": ""}
    return subprocess.Popen(
        [sys.executable, "-m", "optuna_opplan.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("w") if log else subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def workdir(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("ddp")
    (root / "plan.toml").write_text(CONFIG.format(cache=root / "cache"))
    study = ["--storage", f"sqlite:///{root / 'plan.db'}", "--study-name", STUDY]
    init = _opplan("init", *study, "--config", "plan.toml", cwd=root)
    _, stderr = init.communicate(timeout=300)
    assert init.returncode == 0, stderr
    return root, study


def _worker(root: Path, study: list[str], log: Path) -> subprocess.Popen:
    # A 2 s heartbeat (12 s grace period): a transition whose rank 0 was killed is retried soon.
    return _opplan(
        "worker", *study, "--nproc-per-node", "2", "--no-grid", "--collective-timeout", "60",
        "--heartbeat-interval", "2", cwd=root, log=log,
    )  # fmt: skip


def _kill_mid_transition(worker: subprocess.Popen, log: Path, rank: int) -> None:
    """SIGKILL ``rank`` once rank 0 has finished an epoch of a transition that goes on."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and worker.poll() is None:
        text = log.read_text()
        found = re.search(rf"Rank {rank} of 2 \(pid (\d+)", text)
        if found and re.search(r"trial \d+ \S+ epoch 1:", text):
            os.kill(int(found.group(1)), signal.SIGKILL)
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"no epoch ended while the worker ran: {log.read_text()[-3000:]}")
    started = time.monotonic()
    worker.communicate(timeout=180)  # nothing hangs: the group breaks and everyone exits
    assert worker.returncode == 1, log.read_text()[-3000:]
    assert time.monotonic() - started < 180
    assert "failed (exit code" in log.read_text()


def _trials_by_transition(root: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{root / 'plan.db'}")
    by_key = collections.defaultdict(list)
    for trial in study.trials:
        by_key[trial.system_attrs["opplan:transition"]].append(trial)
    return by_key


def _transitions(root: Path) -> int:
    from optuna_opplan.video import PlanConfig
    from optuna_opplan.video._setup import build_graph

    return len(build_graph(PlanConfig.from_file(root / "plan.toml")).transitions)


def test_killed_ranks_fail_their_transition_and_restarted_workers_retrain_it(workdir) -> None:
    root, study = workdir
    # 1. A follower dies: rank 0 sees the broken group, records the transition as failed at
    # once, and exits.
    log = root / "worker1.log"
    _kill_mid_transition(_worker(root, study, log), log, rank=1)
    trials = [t for ts in _trials_by_transition(root).values() for t in ts]
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    outcome = failed.system_attrs["opplan:outcome"]
    assert outcome["status"] == "error" and "worker group broke" in outcome["reason"]

    # 2. Rank 0 dies: the follower finds its group broken and exits by itself; the transition
    # stays RUNNING (nobody is left to record anything) until its heartbeats are missed.
    log = root / "worker2.log"
    _kill_mid_transition(_worker(root, study, log), log, rank=0)
    assert "rank 1: the worker group broke" in log.read_text()
    (running,) = [
        t
        for ts in _trials_by_transition(root).values()
        for t in ts
        if t.state == TrialState.RUNNING
    ]

    # 3. A new 2-process worker fails the silent trial after its grace period and completes
    # the plan: each transition has one COMPLETE trial, trained by both ranks.
    log = root / "worker3.log"
    again = _worker(root, study, log)
    again.communicate(timeout=600)
    text = log.read_text()
    assert again.returncode == 0, text[-3000:]
    assert "Rank 0 of 2" in text and "Rank 1 of 2" in text and "gloo" in text
    by_key = _trials_by_transition(root)
    assert len(by_key) == _transitions(root)
    stale = {t.number: t for ts in by_key.values() for t in ts}[running.number]
    assert stale.state == TrialState.FAIL and "opplan:stale" in stale.system_attrs
    followed = dict(re.findall(r"Rank 1 trained trial (\d+) for (\d+) epochs", text))
    for key, trials in by_key.items():
        states = [t.state for t in trials]
        assert states[-1] == TrialState.COMPLETE and TrialState.COMPLETE not in states[:-1], key
        assert set(states[:-1]) <= {TrialState.FAIL}, key
        trial = trials[-1]
        compute = trial.system_attrs["opplan:compute"]
        assert compute["processes"] == 2
        # Rank 1 trained it with rank 0 and stopped at the same epoch.
        assert int(followed[str(trial.number)]) == compute["train_epochs"]
        # The sampler shards the clips, each rank half an epoch (rounded up, padded): the
        # group's work is counted, not rank 0's.
        per_process = -(-compute["videos_per_epoch"] // 2)
        clip = int(trial.params["clip_length"])
        assert compute["train_clip_frames"] == compute["train_epochs"] * 2 * per_process * clip
    assert sum(len(trials) - 1 for trials in by_key.values()) == 2  # the two killed attempts


def _rank(folder: str, code: int) -> int:
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    rank = os.environ["RANK"]
    Path(folder, f"rank{rank}").write_text(" ".join(os.environ[k] for k in keys))
    if rank == "1":
        return code
    time.sleep(10_000)  # a rank that would wait for hours: launch() must end it
    return 0


def test_launch_gives_each_rank_its_environment_and_ends_a_broken_group(tmp_path) -> None:
    from optuna_opplan.video import launch

    started = time.monotonic()
    assert launch(_rank, (str(tmp_path), 3), nproc_per_node=2, grace_period=1, kill_after=2) == 3
    assert time.monotonic() - started < 300  # spawning two ranks is slow on a busy machine
    envs = {p.name: p.read_text().split() for p in tmp_path.iterdir()}
    assert envs["rank0"][:4] == ["0", "0", "2", "2"] and envs["rank1"][:4] == ["1", "1", "2", "2"]
    assert envs["rank0"][4:] == envs["rank1"][4:]  # one rendezvous address for the group
    with pytest.raises(ValueError, match="nproc_per_node"):
        launch(_rank, (), nproc_per_node=0)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--nproc-per-node", "0"], "--nproc-per-node must be >= 1, but got 0"),
        (["--nproc-per-node", "2", "--grid-only"], "drop --nproc-per-node"),
    ],
)
def test_bad_distributed_worker_flags_are_refused_before_anything_starts(
    flags, message, tmp_path, capsys
) -> None:
    from optuna_opplan.cli import main

    storage = f"sqlite:///{tmp_path / 'never.db'}"
    assert main(["worker", "--storage", storage, "--study-name", "s", *flags]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never.db").exists()


def test_sigterm_to_the_launcher_reaches_the_ranks(tmp_path) -> None:
    # As when Kubernetes deletes a worker pod whose PID 1 is the launcher.
    import threading

    from optuna_opplan.video import launch

    def stop_when_both_started() -> None:
        deadline = time.monotonic() + 240
        while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    stopper = threading.Thread(target=stop_when_both_started, daemon=True)
    stopper.start()
    started = time.monotonic()
    # Both ranks would sleep for hours.
    code = launch(_sleeper, (str(tmp_path),), nproc_per_node=2, grace_period=1, kill_after=5)
    assert code == 1  # terminated ranks count as failed
    assert time.monotonic() - started < 300
    assert len(list(tmp_path.iterdir())) == 2
    assert signal.getsignal(signal.SIGTERM) == before  # restored


def _sleeper(folder: str) -> int:
    Path(folder, f"rank{os.environ['RANK']}").write_text(str(os.getpid()))
    time.sleep(10_000)
    return 0
