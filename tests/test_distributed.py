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
    return _opplan(
        "worker", *study, "--nproc-per-node", "2", "--no-grid", "--collective-timeout", "60",
        cwd=root, log=log,
    )  # fmt: skip


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


def test_a_rank_killed_mid_transition_fails_it_and_a_restarted_worker_retrains_it(
    workdir,
) -> None:
    root, study = workdir
    log = root / "worker.log"
    worker = _worker(root, study, log)
    # Kill rank 1 once rank 0 has finished an epoch of a transition that has epochs to go.
    deadline = time.monotonic() + 300
    pid = None
    while time.monotonic() < deadline and worker.poll() is None:
        text = log.read_text()
        found = re.search(r"Rank 1 of 2 \(pid (\d+)", text)
        if found and re.search(r"trial \d+ \S+ epoch 1:", text):
            pid = int(found.group(1))
            break
        time.sleep(0.05)
    assert pid is not None, log.read_text()[-3000:]
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    worker.communicate(timeout=180)  # nothing hangs: the group breaks and everyone exits
    assert worker.returncode == 1, log.read_text()[-3000:]
    assert time.monotonic() - started < 180
    assert "failed (exit code" in log.read_text()

    trials = [t for ts in _trials_by_transition(root).values() for t in ts]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    outcome = failed[0].system_attrs["opplan:outcome"]
    assert outcome["status"] == "error" and "worker group broke" in outcome["reason"]

    again = _worker(root, study, root / "again.log")
    again.communicate(timeout=600)
    assert again.returncode == 0, (root / "again.log").read_text()[-3000:]
    by_key = _trials_by_transition(root)
    assert len(by_key) == _transitions(root)
    killed = failed[0].system_attrs["opplan:transition"]
    for key, trials in by_key.items():
        states = [t.state for t in trials]
        expected = (
            [TrialState.FAIL, TrialState.COMPLETE] if key == killed else [TrialState.COMPLETE]
        )
        assert states == expected, key


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
