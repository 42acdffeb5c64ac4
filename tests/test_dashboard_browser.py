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
from typing import Any
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
def dashboard_server(
    storage_url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
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
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
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
    """Plan the paper's extended graph, publish it and screenshot the study page's figures.

    The dashboard puts user figures below its own plots, so Chromium renders a tall window and
    the image is cropped to the row of our figures (found by the plan path's colour). Needs
    Pillow (installed with the ``video`` extra).
    """
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url = f"sqlite:///{work / 'plan.db'}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = planning_study(url, op.TransitionGraph.extended(), delay=10)
        publish(study)
        full = work / "page.png"
        seed = _hash_seed_showing_first(url, study.study_name, GRAPH_FIGURE_ID)
        with dashboard_server(url, work / "dashboard.log", {"PYTHONHASHSEED": seed}) as base:
            run_chromium(
                f"{base}/dashboard/studies/{study._study_id}",
                work / "chrome",
                f"--screenshot={full}",
                "--window-size=1400,1800",
                budget_ms=15000,
            )
        with Image.open(full) as page:
            rgb = page.convert("RGB")
            pixels = rgb.load()
            assert pixels is not None
            orange = [
                y
                for y in range(rgb.height)
                for x in range(0, rgb.width, 2)
                if _near(pixels[x, y], (232, 89, 12))
            ]
            if not orange:
                raise RuntimeError(f"The published figures are not in the page; see {full}.")
            # From the figure titles above the plan path to the cards' bottom edge below the
            # legend, right of the dashboard's icon bar.
            top, bottom = max(0, min(orange) - 120), min(rgb.height, max(orange) + 55)
            rgb.crop((62, top, rgb.width, bottom)).save(path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def _hash_seed_showing_first(url: str, study_name: str, figure_id: str) -> str:
    # optuna-dashboard lists a study's figures in the order of a Python set of their ids, so
    # string hashing decides which comes first; pick a seed that puts the graph on the left.
    probe = (
        "import optuna; from optuna_dashboard._custom_plot_data import list_graph_object_ids;"
        f"s = optuna.load_study(study_name={study_name!r}, storage={url!r});"
        "print(list_graph_object_ids(s._storage.get_study_system_attrs(s._study_id))[0])"
    )
    for seed in range(20):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        first = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        if first == figure_id:
            return str(seed)
    return "0"


def _near(pixel: Any, colour: tuple[int, int, int]) -> bool:
    return all(abs(int(a) - b) <= 12 for a, b in zip(pixel, colour))


if __name__ == "__main__":
    make_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png"))
