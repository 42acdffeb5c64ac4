"""The README's own-loop example (examples/own_loop.py), run as a user runs it: a numpy MLP,
a minimise study on SQLite, engine-carried checkpoints, 2 worker processes and 1."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys
from typing import Any

import optuna
from optuna.trial import TrialState

import optuna_opplan as op
from optuna_opplan._protocol import KEY_OUTCOME

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_loop.py"


def _run(tmp_path: Path, workers: int) -> tuple[dict[str, Any], str, optuna.Study, Path]:
    folder = tmp_path / f"workers{workers}"
    folder.mkdir()
    url = f"sqlite:///{folder / 'own_loop.db'}"
    artifacts = folder / "artifacts"
    out = folder / "out.json"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--storage", url, "--artifacts", str(artifacts)]
        + ["--workers", str(workers), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=folder,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = op.load_planning_study(study_name="own-loop", storage=url)
    return json.loads(out.read_text()), proc.stdout, study, artifacts


def test_the_own_loop_example_plans_the_same_with_two_workers_as_with_one(
    tmp_path: Path,
) -> None:
    two, stdout, study, artifacts = _run(tmp_path, 2)
    one, _, _, _ = _run(tmp_path, 1)
    graph = study.sampler.graph  # type: ignore[attr-defined]

    # Minimised: the DP took the lowest validation loss.
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert two["plan"]["direction"] == "minimize"
    # The same plan: path, epochs per stage and score, to the last bit.
    assert two["plan"]["path"] == one["plan"]["path"]
    assert [s["epochs"] for s in two["plan"]["stages"]] == [
        s["epochs"] for s in one["plan"]["stages"]
    ]
    assert two["plan"]["score"] == one["plan"]["score"]
    # No failed transition, and none trained twice: each worker's count adds up.
    progress = op.get_progress(study)
    assert progress.counts()["done"] == len(graph.transitions)
    assert not [
        t
        for t in study.trials
        if t.state == TrialState.FAIL and t.system_attrs[KEY_OUTCOME]["status"] != "superseded"
    ]
    assert sum(two["trained"]) == len(graph.transitions) == sum(one["trained"])
    assert len(two["trained"]) == 2
    # The planned checkpoint reproduces the plan's score (score="observed": the measured loss
    # of the kept checkpoint), also when loaded here, outside the example.
    assert two["planned_loss"] == two["plan"]["score"]
    plan = op.get_plan(study)
    assert plan.failed == ()
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import own_loop
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    model = own_loop.from_bytes(
        op.load_checkpoint(study, plan.trials[-1], artifact_store=str(artifacts))
    )
    assert own_loop.evaluate(model)[0] == plan.score
    # A loss, planned: the planned model beats the untrained one by far.
    assert plan.score < 0.5 * own_loop.evaluate(own_loop.initial_model())[0]
    # The engine published the dashboard views: nobody called publish().
    import optuna_dashboard

    assert optuna_dashboard.get_note(study).startswith("## Optimization plan")
    assert "optuna-dashboard sqlite:///" in stdout
