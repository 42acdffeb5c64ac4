"""The evidence benchmark (benchmarks/evidence.py) end to end on its smoke setting: killed
mid-grid, reported as partial, resumed to the end without repeating finished work; and on a
list-file video set of a user's own."""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

import optuna
from optuna.trial import TrialState
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _command(workdir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.evidence",
        "--smoke",
        "--workdir",
        str(workdir),
        "--heartbeat",
        "0.3",
        "--grace",
        "2",
        "--no-calibrate",
    ]


def _studies(workdir: Path) -> dict[str, optuna.Study]:
    from optuna_opplan import create_storage

    storage = create_storage(str(workdir / "evidence.log"))
    return {
        s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
        for s in optuna.get_all_study_summaries(storage)
    }


def _wait_for_grid_progress(workdir: Path, process: subprocess.Popen, timeout: float) -> str:
    """Wait until the first cell's grid has a completed schedule and another running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the benchmark ended before it could be interrupted"
        if (workdir / "evidence.log").exists():
            for name, study in _studies(workdir).items():
                if not name.endswith("-grid"):
                    continue
                states = [t.state for t in study.get_trials(deepcopy=False)]
                if TrialState.COMPLETE in states and TrialState.RUNNING in states:
                    return name
        time.sleep(0.05)
    raise AssertionError("no grid progress to interrupt")


def test_smoke_run_killed_mid_grid_resumes_and_finishes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        _command(tmp_path), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        killed_grid = _wait_for_grid_progress(tmp_path, process, timeout=300)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    running = [
        t.number
        for t in _studies(tmp_path)[killed_grid].get_trials(deepcopy=False)
        if t.state == TrialState.RUNNING
    ]
    assert running, "the kill was meant to leave a grid schedule running"

    # Before resuming: the report says partial and gives no numbers for unfinished flavours.
    subprocess.run([*_command(tmp_path), "--report-only"], cwd=ROOT, env=env, check=True)
    partial = (tmp_path / "evidence.md").read_text()
    assert "PARTIAL" in partial and "0 of 3 cells" in partial
    assert "No flavour has every seed finished yet: no result." in partial
    assert json.loads((tmp_path / "evidence.json").read_text())["results"] == {}
    headline = (tmp_path / "headline.md").read_text()
    assert "PARTIAL: 0 of 3 cells" in headline and "**No result yet**" in headline
    assert "points" not in headline

    done = subprocess.run(
        _command(tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = (tmp_path / "evidence.md").read_text()
    assert "**complete**: all 3 cells" in report
    data = json.loads((tmp_path / "evidence.json").read_text())
    assert data["status"] == "complete" and set(data["results"]) == {
        "temporal",
        "motion",
        "rhythm",
    }
    headline = (tmp_path / "headline.md").read_text().split("\n")
    assert "complete: 3 of 3 cells" in headline[2]
    assert sum(line.startswith(("| temporal", "| motion", "| rhythm")) for line in headline) == 3
    assert len(data["invocations"]) == 2  # the first run and the resume are both on record

    studies = _studies(tmp_path)
    for flavour in ("temporal", "motion", "rhythm"):
        grid = studies[f"evidence-{flavour}-s0-grid"]
        complete = [t for t in grid.trials if t.state == TrialState.COMPLETE]
        points = [tuple(sorted(t.params.items())) for t in complete]
        # Every grid point ran to completion exactly once (the smoke grid has 2 clip schedules x
        # 1 decay x 3 samplings x 2 budgets).
        assert len(points) == len(set(points)) == 12
        failed = [t for t in grid.trials if t.state == TrialState.FAIL]
        assert len(failed) == (1 if grid.study_name == killed_grid else 0)
        assert [t.number for t in failed] == (running if failed else [])

        planning = studies[f"evidence-{flavour}-s0"]
        tpe = studies[f"evidence-{flavour}-s0-tpe-unique"]
        cell = next(c for c in data["cells"] if c["flavour"] == flavour)
        budget = cell["planned"]["compute"]["clip_frames"]
        # TPE spent the planning's compute to the epoch: never more, and less only by less
        # than one epoch and its validation pass (6 training + 6 validation videos, at most
        # 4 frames a clip: 48 clip-frames).
        assert 0 <= budget - cell["tpe"]["compute"]["clip_frames"] < 48
        assert any(t.state == TrialState.COMPLETE for t in tpe.trials)
        # The grid's compute: every completed schedule in full, plus what the killed one did.
        assert cell["grid"]["compute"]["clip_frame_epochs"] == sum(
            _schedule_cfe(t.params) for t in complete
        ) + sum(
            t.system_attrs.get("opplan:compute", {}).get("clip_frame_epochs", 0) for t in failed
        )
        assert len(cell["planned"]["correct"]) == 6  # 6 classes x 1 test video
        assert planning.trials

    # Everything is done: running the command again trains nothing.
    again = subprocess.run(
        _command(tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "transitions" not in again.stdout
    after = _studies(tmp_path)
    assert {n: len(s.trials) for n, s in after.items()} == {
        n: len(s.trials) for n, s in studies.items()
    }


def _schedule_cfe(params: dict) -> int:
    from optuna_opplan.video._grid import schedule_of

    return schedule_of(params, 0.1).clip_frame_epochs


def _list_set(tmp_path: Path) -> tuple[Path, list[str]]:
    """A small list-file set as a user would bring one: mp4 files, two lists, a class file
    (made by the synthetic generator, then read only through the list files)."""
    from optuna_opplan.video.synthetic import ensure_dataset

    data = ensure_dataset(
        tmp_path / "made-outside",
        flavour="motion",
        num_classes=2,
        videos_per_class=4,
        num_frames=(16, 16),
        size=32,
        test_fraction=0.5,
    )
    flags = ["--train-list", str(data.train_list), "--test-list", str(data.test_list)]
    return Path(data.root), [*flags, "--class-file", str(data.class_file), "--name", "mine"]


def test_a_list_file_set_of_ones_own_replaces_the_flavours(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    root, flags = _list_set(tmp_path)
    workdir = tmp_path / "work"
    command = [*_command(workdir), *flags, "--root", str(root), "--seeds", "3"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((workdir / "evidence.json").read_text())
    assert data["status"] == "complete" and set(data["results"]) == {"mine"}
    assert data["setting"]["flavours"] == ["mine"] and data["setting"]["seeds"] == [3]
    assert data["setting"]["num_classes"] == 2
    (cell,) = data["cells"]
    assert (cell["flavour"], cell["seed"]) == ("mine", 3)
    assert len(cell["planned"]["correct"]) == 4  # the test list's videos, each scored
    report = (workdir / "evidence.md").read_text()
    assert "Video set mine; seeds [3]" in report
    assert "The list-file set `mine`" in report and "2 classes, 4 training videos" in report
    assert "flip off" in report and "no video skipped as unreadable" in report
    assert not (ROOT / "benchmarks" / ".work" / "evidence-mine").exists()
    # The same command without --seeds goes on with the seeds the run has.
    subprocess.run(
        [*_command(workdir), *flags, "--root", str(root), "--report-only"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    assert json.loads((workdir / "evidence.json").read_text())["setting"]["seeds"] == [3]

    # The same storage with other videos is refused, naming both; nothing is trained.
    other = [f if f != "mine" else "yours" for f in flags]
    refused = subprocess.run(
        [*_command(workdir), *other, "--root", str(root)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0
    assert "another --workdir" in refused.stderr and "'yours'" in refused.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--class-file", None), "--class-file is required with --train-list"),
        (("--test-list", "missing.txt"), "No such file"),
        (("--class-file", "bad-classes.txt"), "already named on line 1"),
    ],
)
def test_a_bad_list_file_set_is_named_before_anything_runs(
    tmp_path: Path, change: tuple[str, str | None], message: str
) -> None:
    _, flags = _list_set(tmp_path)
    (tmp_path / "bad-classes.txt").write_text("left\nleft\n")
    flag, value = change
    at = flags.index(flag)
    flags = flags[:at] + flags[at + 2 :]
    if value is not None:
        flags += [flag, str(tmp_path / value)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workdir = tmp_path / "work"
    refused = subprocess.run(
        [*_command(workdir), *flags], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    assert not workdir.exists(), "a refused run must leave nothing behind"


def test_a_new_hyperband_rung_resumes_a_stored_run_beside_its_tpe_studies() -> None:
    from dataclasses import asdict
    from dataclasses import replace

    from benchmarks._evidence_cell import Cell
    from benchmarks._evidence_setting import FULL
    from benchmarks._evidence_setting import check_setting
    from benchmarks._evidence_setting import jsonable

    storage = optuna.storages.InMemoryStorage()
    # A run stored before Hyperband's first rung was a setting: it had none, and used 1.
    old = jsonable(asdict(FULL))
    del old["hyperband_min_resource"]
    meta = optuna.create_study(storage=storage, study_name="evidence-setting")
    storage.set_study_system_attr(meta._study_id, "setting", old)
    storage.set_study_system_attr(meta._study_id, "list_set", None)

    setting = check_setting(storage, FULL, None, None)
    assert setting.hyperband_min_resource == 3
    names = [
        Cell(
            replace(FULL, hyperband_min_resource=rung), "motion", 0, "/nowhere", storage
        ).study_names()[2]
        for rung in (1, 3)
    ]
    # The first rung's studies keep their name; another rung's sit beside them.
    assert names == ["evidence-motion-s0-tpe-unique", "evidence-motion-s0-tpe-unique-r3"]
    with pytest.raises(SystemExit, match="differs in knee_delay"):
        check_setting(storage, replace(FULL, knee_delay=2), None, None)


@pytest.mark.parametrize(
    ("stored_version", "report_only", "expected"),
    [
        # Before the version was a setting: its videos were version 1's.
        (None, True, "v1"),
        ("other", True, "other"),
        ("other", False, "refused"),
        ("current", False, "current"),
    ],
)
def test_a_run_on_another_generators_videos_is_only_reported(
    stored_version: str | None, report_only: bool, expected: str
) -> None:
    from dataclasses import asdict

    from benchmarks._evidence_setting import FULL
    from benchmarks._evidence_setting import check_setting
    from benchmarks._evidence_setting import jsonable

    current = FULL.generator_version
    versions = {"v1": 1, "current": current, "other": current + 1}
    storage = optuna.storages.InMemoryStorage()
    old = jsonable(asdict(FULL))
    if stored_version is None:
        del old["generator_version"]
    else:
        old["generator_version"] = versions[stored_version]
    meta = optuna.create_study(storage=storage, study_name="evidence-setting")
    storage.set_study_system_attr(meta._study_id, "setting", old)
    storage.set_study_system_attr(meta._study_id, "list_set", None)

    if expected == "refused":
        with pytest.raises(SystemExit, match=f"generator version {current + 1}; this code"):
            check_setting(storage, FULL, None, None, report_only=report_only)
        return
    setting = check_setting(storage, FULL, None, None, report_only=report_only)
    assert setting.generator_version == versions[expected]


def test_flavours_pick_the_cells_and_their_order(tmp_path: Path) -> None:
    command = [*_command(tmp_path), "--report-only", "--results", str(tmp_path)]
    first = subprocess.run(
        [*command, "--flavours", "rhythm", "motion", "rhythm"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    data = json.loads((tmp_path / "evidence.json").read_text())
    assert data["setting"]["flavours"] == ["rhythm", "motion"]
    assert "0 of 2 cells" in (tmp_path / "evidence.md").read_text()
    bad = subprocess.run(
        [*command, "--flavours", "kinetics"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid choice: 'kinetics'" in bad.stderr


def test_forget_unfinished_deletes_only_unfinished_cells(tmp_path: Path) -> None:
    from optuna_opplan import create_storage

    command = [*_command(tmp_path), "--results", str(tmp_path)]
    made = subprocess.run(
        [*command, "--report-only"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert made.returncode == 0, made.stdout + made.stderr
    storage = create_storage(str(tmp_path / "evidence.log"))
    # temporal's planning and grid had started; motion's cell is finished (its tests stored).
    for name in ("evidence-temporal-s0", "evidence-temporal-s0-grid"):
        optuna.create_study(storage=storage, study_name=name)
    for suffix in ("", "-grid", "-tpe-unique"):
        study = optuna.create_study(storage=storage, study_name=f"evidence-motion-s0{suffix}")
        storage.set_study_system_attr(study._study_id, "evidence:test", {"accuracy": 1.0})
    forgot = subprocess.run(
        [*command, "--forget-unfinished"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    assert "evidence-temporal-s0: forgot evidence-temporal-s0, evidence-temporal-s0-grid" in (
        forgot.stdout
    )
    left = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert left == {
        "evidence-setting",
        "evidence-motion-s0",
        "evidence-motion-s0-grid",
        "evidence-motion-s0-tpe-unique",
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--val-fraction", "1"], "--val-fraction: must be strictly between 0 and 1, but got 1"),
        (
            ["--val-fraction", "half"],
            "--val-fraction: must be strictly between 0 and 1, but got half",
        ),
        (["--train-per-class", "0"], "--train-per-class: must be a positive int, but got 0"),
        (["--train-per-class", "2.5"], "--train-per-class: must be a positive int, but got 2.5"),
        (
            ["--train-per-class", "8", "--train-list", "train.txt"],
            "--train-per-class sizes the bundled flavours; a --train-list set is its own",
        ),
    ],
)
def test_a_bad_split_option_is_named_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    from benchmarks.evidence import main

    workdir = tmp_path / "work"
    with pytest.raises(SystemExit) as refused:
        main([*_command(workdir)[3:], *flags])
    assert refused.value.code == 2 and message in capsys.readouterr().err
    assert not workdir.exists(), "a refused run must leave nothing behind"


def test_the_split_options_are_the_runs_setting_and_a_resume_keeps_them(tmp_path: Path) -> None:
    from benchmarks.evidence import main

    command = [*_command(tmp_path)[3:], "--report-only", "--results", str(tmp_path)]
    assert main([*command, "--train-per-class", "6", "--val-fraction", "0.25"]) == 0
    stored = json.loads((tmp_path / "evidence.json").read_text())["setting"]
    assert (stored["train_per_class"], stored["val_fraction"]) == (6, 0.25)
    assert (
        "6 training videos a class (25% of them held out for validation)"
        in (tmp_path / "evidence.md").read_text()
    )
    # Resuming with other values would mix two splits in one run's intervals: refused.
    with pytest.raises(SystemExit, match="differs in val_fraction"):
        main([*command, "--train-per-class", "6", "--val-fraction", "0.5"])
    with pytest.raises(SystemExit, match="differs in train_per_class"):
        main([*command, "--val-fraction", "0.25"])


@pytest.mark.parametrize(("stored", "resumed"), [(None, 1024), (1024, 0), (0, 512)])
def test_a_run_resumes_with_another_decoded_video_cache(stored: int | None, resumed: int) -> None:
    from dataclasses import asdict
    from dataclasses import replace

    from benchmarks._evidence_setting import FULL
    from benchmarks._evidence_setting import check_setting
    from benchmarks._evidence_setting import jsonable

    storage = optuna.storages.InMemoryStorage()
    old = jsonable(asdict(FULL))
    if stored is None:  # a run from before the cache
        del old["decoded_cache_mb"]
    else:
        old["decoded_cache_mb"] = stored
    meta = optuna.create_study(storage=storage, study_name="evidence-setting")
    storage.set_study_system_attr(meta._study_id, "setting", old)
    storage.set_study_system_attr(meta._study_id, "list_set", None)

    # The cache changes seconds, not clips: no reason to refuse the resume.
    setting = check_setting(storage, replace(FULL, decoded_cache_mb=resumed), None, None)
    assert setting.decoded_cache_mb == resumed
    with pytest.raises(SystemExit, match="differs in base_lr"):
        check_setting(storage, replace(FULL, base_lr=FULL.base_lr / 2), None, None)


def test_the_report_states_the_decoded_video_cache(tmp_path: Path) -> None:
    from benchmarks.evidence import main

    assert main([*_command(tmp_path)[3:], "--report-only", "--results", str(tmp_path)]) == 0
    text = (tmp_path / "evidence.md").read_text()
    assert "decoded videos kept in memory (up to 1024 MB a split)" in text


@pytest.mark.parametrize(
    ("typed", "resumes"),
    [(0.3333333333, True), (1 / 3, True), (0.333, False), (0.34, False)],
)
def test_a_typed_fraction_resumes_a_run_of_the_same_fraction(typed: float, resumes: bool) -> None:
    from dataclasses import asdict
    from dataclasses import replace

    from benchmarks._evidence_setting import FULL
    from benchmarks._evidence_setting import check_setting
    from benchmarks._evidence_setting import jsonable

    storage = optuna.storages.InMemoryStorage()
    # The run behind benchmarks/results/evidence.md was started with the flag typed out.
    old = jsonable(asdict(replace(FULL, val_fraction=0.3333333333)))
    meta = optuna.create_study(storage=storage, study_name="evidence-setting")
    storage.set_study_system_attr(meta._study_id, "setting", old)
    storage.set_study_system_attr(meta._study_id, "list_set", None)

    setting = replace(FULL, val_fraction=typed)
    if resumes:
        # Its cells' studies hold configs made with the stored value: the run goes on with it.
        assert check_setting(storage, setting, None, None).val_fraction == 0.3333333333
    else:
        with pytest.raises(SystemExit, match="differs in val_fraction"):
            check_setting(storage, setting, None, None)


def test_calibration_times_epochs_on_decoded_videos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run decodes each video once and keeps it: epochs timed while decoding projected the
    # 60-videos-a-class run at 9.6 h of one core; its training and validation took 4.6 h.
    from benchmarks.evidence import main
    from optuna_opplan.video._trainer import Runner

    seen: list[tuple[int, int]] = []
    train_epoch = Runner.train_epoch

    def spy(self: Runner, model: Any, optimizer: Any, dataset: Any, **kwargs: Any) -> Any:
        seen.append((dataset.decoded_cache.stats()["videos"], len(dataset)))
        return train_epoch(self, model, optimizer, dataset, **kwargs)

    monkeypatch.setattr(Runner, "train_epoch", spy)
    command = ["--smoke", "--workdir", str(tmp_path), "--results", str(tmp_path)]
    assert main([*command, "--calibrate-only"]) == 0
    assert len(seen) == 2  # one timed epoch per clip length of the smoke setting
    # Every training video already decoded when the first epoch is timed.
    assert all(cached >= videos > 0 for cached, videos in seen), seen
    meta = _studies(tmp_path)["evidence-setting"]
    projection = meta._storage.get_study_system_attrs(meta._study_id)["projection"]
    assert projection["cpu"] > 0 and projection["wall"] > 0
