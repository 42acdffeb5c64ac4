"""The real optuna-dashboard in real headless Chromium shows a published planning study.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``); without it the test fails
and says so. The same code makes the README's screenshot::

    .venv/bin/python tests/test_dashboard_browser.py docs/dashboard.png

(plans the paper's extended graph on the simulated objective, publishes it, serves it with
``optuna-dashboard`` on 127.0.0.1 and screenshots the study page with headless Chromium).
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import os
from pathlib import Path
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import optuna
import pytest

import optuna_opplan as op
from optuna_opplan.dashboard import GRAPH_FIGURE_ID
from optuna_opplan.dashboard import publish
from optuna_opplan.simulation import SimulatedObjective

INSTALL_HINT = "apt-get update && apt-get install -y chromium"

# Without these Chromium waits for the network (closed here) and for a GPU it does not have.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def find_chromium() -> str:
    """The Chromium executable, or a failure that says how to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "Chromium is not installed, so the dashboard cannot be checked in a browser; "
        f"install Debian's package: `{INSTALL_HINT}`.",
        pytrace=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def dashboard_server(storage_url: str, log: Path) -> Iterator[str]:
    """Run ``optuna-dashboard`` on a free port of 127.0.0.1; yield its base URL."""
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "from optuna_dashboard._cli import main; main()",
        storage_url,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--server",
        "wsgiref",
    ]
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_until_serving(proc, f"{base}/api/studies", log)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until_serving(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"optuna-dashboard exited with {proc.returncode}: {log.read_text()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"optuna-dashboard did not answer {url} within 60 s: {log.read_text()}")


def run_chromium(url: str, profile: Path, *args: str, budget_ms: int = 10000) -> str:
    """Load ``url`` in headless Chromium, let its scripts run, return stdout."""
    command = [
        find_chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        *args,
        url,
    ]
    done = subprocess.run(command, capture_output=True, timeout=180, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"chromium exited with {done.returncode}: {done.stderr.decode(errors='replace')}"
        )
    return done.stdout.decode(errors="replace")


def planning_study(storage_url: str, graph: op.TransitionGraph, delay: int) -> optuna.Study:
    """A planning study on ``graph``, run to completion on the simulated objective."""
    study = optuna.create_study(
        storage=storage_url,
        study_name="opplan-dashboard",
        direction="maximize",
        sampler=op.PlanningSampler(graph),
        pruner=op.KneePointPruner(delay=delay),
    )
    op.run_worker(study, SimulatedObjective(seed=0))
    return study


def test_dashboard_shows_transition_graph_in_chromium(tmp_path: Path) -> None:
    find_chromium()  # fail first, with the install hint, if there is no browser
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    graph = op.TransitionGraph.basic(clip_lengths=(8, 16), learning_rates=(0.1, 0.01))
    study = planning_study(url, graph, delay=3)
    publish(study)
    with dashboard_server(url, tmp_path / "dashboard.log") as base:
        dom = run_chromium(
            f"{base}/dashboard/studies/{study._study_id}", tmp_path / "chrome", "--dump-dom"
        )
    # The dashboard rendered the study page, with our figure drawn by plotly.js (its SVG).
    assert study.study_name in dom
    assert f'id="user-defined-plot:{GRAPH_FIGURE_ID}"' in dom
    assert "Transition graph: plan 0." in dom
    figure = dom.split(f'id="user-defined-plot:{GRAPH_FIGURE_ID}"', 1)[1]
    assert 'class="main-svg"' in figure.split('id="user-defined-plot:', 1)[0]


def make_screenshot(path: Path) -> None:
    """Plan the paper's extended graph, publish it and screenshot the study page."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url = f"sqlite:///{work / 'plan.db'}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = planning_study(url, op.TransitionGraph.extended(), delay=10)
        publish(study)
        with dashboard_server(url, work / "dashboard.log") as base:
            run_chromium(
                f"{base}/dashboard/studies/{study._study_id}",
                work / "chrome",
                f"--screenshot={path.resolve()}",
                "--window-size=1400,1800",
                budget_ms=15000,
            )
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    make_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png"))
