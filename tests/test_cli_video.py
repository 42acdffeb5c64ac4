from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import optuna
from optuna.trial import TrialState
import pytest

TINY_CONFIG = """
[graph]
preset = "basic"
clip_lengths = [4, 8]
learning_rates = [0.05, 0.005]
samplings = ["uniform"]
[knee]
delay = 1
max_epochs = 2
[dataset]
synthetic = "motion"
cache_dir = "{cache}"
num_classes = 2
videos_per_class = 6
crop_size = 32
scale_min = 32
scale_max = 36
eval_short_side = 32
num_test_clips = 2
[model]
name = "p3d_resnet18"
width_multiplier = 0.125
[trainer]
batch_size = 4
num_workers = 0
[artifacts]
path = "artifacts"
[grid]
total_epochs = [2]
decays = ["step", "cosine"]
samplings = ["uniform"]
"""


def _opplan(*args: str, cwd: Path, wait: bool = True):
    command = [sys.executable, "-m", "optuna_opplan.cli", *args]
    env = {**os.environ, "OPTUNA_STORAGE": ""}
    if not wait:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-video")
    (root / "plan.toml").write_text(TINY_CONFIG.format(cache=root / "cache"))
    return root


def test_init_workers_status_plan_grid_compare(workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'plan.db'}"
    study = ["--storage", url, "--study-name", "tiny"]
    out = _opplan("init", *study, "--config", "plan.toml", cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert "study: tiny" in out.stdout
    out = _opplan("grid", *study, cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert "tiny-grid (4 schedules" in out.stdout

    workers = [_opplan("worker", *study, cwd=workdir, wait=False) for _ in range(2)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=900)
        assert worker.returncode == 0, stderr[-2000:]

    loaded = optuna.load_study(study_name="tiny", storage=url)
    complete = [t for t in loaded.trials if t.state == TrialState.COMPLETE]
    keys = [t.system_attrs["opplan:transition"] for t in complete]
    assert len(keys) == len(set(keys)) == 6, "each transition trained exactly once"
    grid = optuna.load_study(study_name="tiny-grid", storage=url)
    assert [t.state.name for t in grid.trials] == ["COMPLETE"] * 4

    status = json.loads(_opplan("status", *study, "--json", cwd=workdir).stdout)
    assert status["complete"] and status["counts"]["done"] == 6
    plan = json.loads(_opplan("plan", *study, "--json", cwd=workdir).stdout)
    assert plan["goal"] == "sampling=uniform,clip_length=8,lr=0.005"

    out = _opplan("compare", *study, "--json", "--out", str(workdir / "cmp"), cwd=workdir)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert 0.0 <= result["planned"]["accuracy"] <= 1.0
    assert 0.0 <= result["grid_best"]["accuracy"] <= 1.0
    assert result["grid_best"]["schedule"]["decay"] in ("step", "cosine")
    planned, grid_total = result["planned"]["compute"], result["details"]["grid_total"]
    assert result["compute_ratio"] == pytest.approx(grid_total["clip_frames"] / planned)
    # The difference is paired over the 4 test videos (2 classes x 2), in accuracy points.
    difference = result["difference"]
    assert difference["test_videos"] == 4
    gain = result["planned"]["accuracy"] - result["grid_best"]["accuracy"]
    assert difference["points"] == pytest.approx(100 * gain)
    low, high = difference["ci95"]
    assert low <= difference["points"] <= high
    again = json.loads(
        _opplan("compare", *study, "--json", "--out", str(workdir / "cmp"), cwd=workdir).stdout
    )
    assert again["difference"] == difference, "the bootstrap is seeded"
    table = _opplan("compare", *study, "--out", str(workdir / "cmp"), cwd=workdir).stdout
    assert "95% CI" in table and "paired bootstrap over 4 test videos" in table
    assert (workdir / "cmp" / "compare.png").stat().st_size > 1000
    assert (workdir / "cmp" / "compare.html").exists()

    # The found plan trains again from scratch on another network.
    (workdir / "plan.json").write_text(json.dumps(plan))
    out = _opplan(
        "replay",
        "--plan",
        "plan.json",
        "--config",
        "plan.toml",
        "--model",
        "g_p3d_resnet18",
        cwd=workdir,
    )
    assert out.returncode == 0, out.stderr
    replayed = json.loads(out.stdout[out.stdout.index("{") :])
    assert 0.0 <= replayed["test_accuracy"] <= 1.0
    assert replayed["schedule"]["total_epochs"] == sum(s["epochs"] for s in plan["stages"])

    # A worker with another config is refused, naming the key, and changes nothing.
    (workdir / "other.toml").write_text(
        TINY_CONFIG.format(cache=workdir / "cache").replace("delay = 1", "delay = 2")
    )
    before = len(loaded.trials)
    out = _opplan("worker", *study, "--config", "other.toml", cwd=workdir)
    assert out.returncode == 1
    assert "knee.delay: 2 != 1" in out.stderr
    assert len(optuna.load_study(study_name="tiny", storage=url).trials) == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("[knee]", "[knee]\ndealy = 3"), "Unknown key `knee.dealy`; allowed: curve, delay"),
        (
            ("batch_size = 4", "batch_size = 'big'"),
            "`trainer.batch_size` must be an integer",
        ),
        (('preset = "basic"', 'preset = "diagonal"'), "`graph.preset` must be one of"),
        (("[grid]", "[gird]"), "Unknown section `[gird]`"),
        (
            ("[knee]", "[planner]\nmax_deaths = -1\n[knee]"),
            "`planner.max_deaths` must not be negative, but got -1",
        ),
        (("[knee]", "[planner]\ndeath_backoff = 'soon'\n[knee]"), "`planner.death_backoff`"),
        (("learning_rates = [0.05, 0.005]", "learning_rates = []"), "`graph.learning_rates` must"),
        (
            ("num_classes = 2", "num_classes = 2\nmin_frames = 40\nmax_frames = 20"),
            "`dataset.min_frames` must be at least 1 and at most `dataset.max_frames`",
        ),
        (('synthetic = "motion"', 'synthetic = "rhytm"'), "`dataset.synthetic` must be one of"),
    ],
)
def test_config_errors_name_the_key(workdir: Path, edit, message) -> None:
    text = TINY_CONFIG.format(cache=workdir / "cache").replace(*edit, 1)
    (workdir / "bad.toml").write_text(text)
    url = f"sqlite:///{workdir / 'bad.db'}"
    out = _opplan(
        "init", "--storage", url, "--study-name", "bad", "--config", "bad.toml", cwd=workdir
    )
    assert out.returncode == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr
