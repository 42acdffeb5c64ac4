from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest

import optuna_opplan as op
from optuna_opplan.simulation import SimulatedObjective

SMALL = {"clip_lengths": (8, 16), "learning_rates": (0.1, 0.01), "samplings": ("uniform",)}


def _opplan(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "optuna_opplan.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[str, str, op.Plan]:
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'plan.db'}"
    study = op.create_planning_study(
        op.TransitionGraph.extended(**SMALL),
        storage=url,
        study_name="cli",
        pruner=op.KneePointPruner(delay=4, max_epochs=40),
    )
    op.run_worker(study, SimulatedObjective(seed=1), poll_interval=0.01)
    return url, "cli", op.get_plan(study)


def test_plan_json_matches_the_library(finished) -> None:
    url, name, plan = finished
    out = _opplan("plan", "--storage", url, "--study-name", name, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == plan.to_dict()


def test_plan_table_and_storage_from_environment(finished) -> None:
    url, name, plan = finished
    out = _opplan("plan", "--study-name", name, env={"OPTUNA_STORAGE": url})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(plan).strip()


def test_status_reports_counts_and_states(finished) -> None:
    url, name, _ = finished
    out = _opplan("status", "--storage", url, "--study-name", name, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["complete"] is True
    assert report["counts"]["done"] == len(op.TransitionGraph.extended(**SMALL).transitions)
    assert report["critical_path_left"]["transitions"] == 0
    assert all(s["status"] == "resolved" for s in report["states"])
    text = _opplan("status", "--storage", url, "--study-name", name)
    assert f"{report['counts']['done']} done" in text.stdout


def test_status_of_a_study_in_progress(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    graph = op.TransitionGraph.extended(**SMALL)
    study = op.create_planning_study(graph, storage=url, study_name="p")
    op.run_worker(study, SimulatedObjective(seed=1), max_transitions=2, poll_interval=0.01)
    report = json.loads(_opplan("status", "--storage", url, "--study-name", "p", "--json").stdout)
    assert report["counts"]["done"] == 2
    assert 0 < report["critical_path_left"]["transitions"] <= len(graph.critical_path())
    out = _opplan("plan", "--storage", url, "--study-name", "p")
    assert out.returncode == 1 and "unfinished transitions" in out.stderr
    assert "add --partial for the best plan so far" in out.stderr
    assert "partial=True" not in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "--study-name", "x"], "--storage is required"),
        (["plan", "--storage", "sqlite:///{tmp}/none.db", "--study-name", "x"], "no file"),
        (
            ["status", "--storage", "postgresql://u:hunter2@127.0.0.1:1/x", "--study-name", "x"],
            "OperationalError",
        ),
    ],
)
def test_errors_exit_non_zero_with_a_message(tmp_path, args, message) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = _opplan(*args, env={"OPTUNA_STORAGE": ""})
    assert out.returncode == 1
    assert message in out.stderr
    assert "hunter2" not in out.stderr + out.stdout


@pytest.mark.parametrize("command", ["status", "plan", "compare", "worker"])
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_commands_on_an_existing_study_never_create_a_storage_file(
    tmp_path, command, kind
) -> None:
    path = tmp_path / ("plan.log" if kind == "journal" else "plan.db")
    url = str(path) if kind == "journal" else f"sqlite:///{path}"
    out = _opplan(command, "--storage", url, "--study-name", "x")
    assert out.returncode == 1
    assert f"there is no file {path}" in out.stderr
    assert os.listdir(tmp_path) == [], "nothing created"


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_storage_in_a_missing_folder_is_one_clear_error(tmp_path, kind) -> None:
    folder = tmp_path / "typo"
    url = str(folder / "plan.log") if kind == "journal" else f"sqlite:///{folder / 'plan.db'}"
    with pytest.raises(FileNotFoundError, match=f"the folder {folder} does not exist"):
        op.create_planning_study(op.TransitionGraph.basic(**SMALL), storage=url, study_name="x")
    assert not folder.exists()
    out = _opplan("status", "--storage", url, "--study-name", "x")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and f"the folder {folder} does not exist" in out.stderr


def test_a_missing_study_is_named(finished) -> None:
    url, name, _ = finished
    out = _opplan("status", "--storage", url, "--study-name", "clii")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"opplan: error: There is no study 'clii' in {url}; it holds '{name}'."
    )


def test_failed_transitions_are_named_by_status_and_plan(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    graph = op.TransitionGraph.extended(**SMALL)
    study = op.create_planning_study(graph, storage=url, study_name="f", max_retries=1)
    broken = graph.transitions[1].key
    inner = SimulatedObjective(seed=1)

    def objective(trial) -> None:
        if op.current_transition(trial).transition.key == broken:
            raise KeyError(3)
        inner(trial)

    op.run_worker(study, objective, poll_interval=0.01)
    report = json.loads(_opplan("status", "--storage", url, "--study-name", "f", "--json").stdout)
    (failed,) = report["failed"]
    assert failed["transition"] == broken
    assert failed["error"].startswith("gave up after 2 failed attempts; last: trial ")
    assert failed["error"].endswith(": KeyError: 3")
    text = _opplan("status", "--storage", url, "--study-name", "f").stdout
    assert f"failed   {broken}: gave up after 2 failed attempts" in text
    out = _opplan("plan", "--storage", url, "--study-name", "f")
    assert out.returncode == 0
    assert f"routed around 1 failed transitions:\n  {broken}: gave up" in out.stdout
    assert f"warning: the plan routes around 1 failed transitions ({broken})" in out.stderr


def test_a_missing_extra_names_the_pip_install(tmp_path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import importlib.util as u; real = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n == 'matplotlib' else real(n, *a)\n"
        "from optuna_opplan.cli import main\n"
        f"sys.exit(main(['demo', '--workdir', {str(tmp_path / 'demo')!r}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "opplan: error: `opplan demo` needs matplotlib, which is not installed: "
        "pip install 'optuna-opplan[dashboard]'"
    )


def test_not_a_planning_study(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    optuna.create_study(storage=url, study_name="plain")
    out = _opplan("plan", "--storage", url, "--study-name", "plain")
    assert out.returncode == 1 and "not a planning study" in out.stderr


def test_help_per_subcommand() -> None:
    for command in ("status", "plan", "demo"):
        out = _opplan(command, "--help")
        assert out.returncode == 0 and "usage: opplan" in out.stdout


def test_status_shows_the_retry_budget_of_a_killed_transition(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    graph = op.TransitionGraph.extended(**SMALL)
    study = op.create_planning_study(
        graph, storage=url, study_name="k", max_retries=3, max_deaths=7, death_backoff=4.0
    )
    first = graph.transitions[0].key
    died = {
        "opplan:transition": first,
        "opplan:worker": "host:1:abc",
        "opplan:stale": "observer",
        "opplan:outcome": {"status": "died", "reason": "no heartbeat"},
    }
    # Its first attempt (the trial the study was set up with) and a second one were killed;
    # the retry waits out its backoff.
    storage, first_trial = study._storage, study.trials[0]._trial_id
    storage.set_trial_state_values(first_trial, optuna.trial.TrialState.RUNNING)
    for key, value in died.items():
        storage.set_trial_system_attr(first_trial, key, value)
    storage.set_trial_state_values(first_trial, optuna.trial.TrialState.FAIL)
    study.add_trial(
        optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, system_attrs=died)
    )
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            system_attrs={"opplan:transition": first, "opplan:retry_delay": 8.0},
        )
    )
    report = json.loads(_opplan("status", "--storage", url, "--study-name", "k", "--json").stdout)
    assert report["retrying"] == [
        {
            "transition": first,
            "failed": 0,
            "max_retries": 3,
            "died": 2,
            "max_deaths": 7,
            "backoff_seconds": 8.0,
        }
    ]
    assert report["failed"] == [] and report["complete"] is False
    text = _opplan("status", "--storage", url, "--study-name", "k").stdout
    assert f"retrying {first}: 0 of 3 retries after errors, 2 of 7 after deaths" in text
    assert "8s backoff" in text
