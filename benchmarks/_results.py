"""How the micro-benchmarks (overhead, scheduling, storage choice) write their results files:
the head that states command, date, commit, machine and load, and their tables."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys

import numpy as np
import optuna

from benchmarks._env import cpu_model
from benchmarks._env import git_commit
from benchmarks._env import load_average

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine_info() -> dict[str, str]:
    """What the numbers were measured on."""
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def command_line() -> str:
    """The command that runs this benchmark, as a results file states it."""
    spec = sys.modules["__main__"].__spec__
    name = spec.name if spec is not None else "benchmarks"
    return ".venv/bin/python -m " + shlex.join([name, *sys.argv[1:]])


def header_lines(title: str, command: str, load_at_start: str = "") -> list[str]:
    """The result file's head; the load average shows how shared the machine was."""
    info = machine_info()
    load = f"{load_at_start} at the start, " if load_at_start else ""
    return [
        f"# {title}",
        "",
        f"- Command: `{command}` (from the repository root)",
        f"- Date: {info['date']}",
        f"- Commit: {git_commit()}",
        f"- Machine: {info['nproc']} CPUs (`nproc`), {info['cpu']}, {info['platform']}",
        f"- Python {info['python']}, optuna {info['optuna']}, numpy {info['numpy']}",
        f"- Load average (1, 5, 15 min): {load}{load_average()} at the end",
        "",
    ]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """The same table right-aligned for the terminal."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header, *rows])
