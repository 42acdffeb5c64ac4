"""What a benchmark ran on: the facts every results file states next to its numbers."""

from __future__ import annotations

import os
from pathlib import Path
import platform
import subprocess


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def machine() -> str:
    """``Linux 6.1, 2 CPUs (AMD EPYC ...), 24 GiB``."""
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu_model()}), "
        f"{memory_gib():.0f} GiB"
    )


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: ``1.0, 2.0, 3.0``."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


_RESULTS = ":(exclude)benchmarks/results"


def git_commit() -> str:
    """The commit a benchmark runs: ``abc1234``, with ``(uncommitted changes)`` when the
    working tree's code differs from it, or ``unknown`` outside a git checkout.

    Results files are not code: a benchmark that rewrites its own results file as it goes
    (``evidence.py`` after every cell) still runs its commit."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", _RESULTS],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} (uncommitted changes)" if dirty else commit
