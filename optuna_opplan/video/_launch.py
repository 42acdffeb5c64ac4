"""A torchrun-like launcher: the ranks of one process group on this machine, stopped together.

:func:`launch` is what ``opplan worker --nproc-per-node`` runs; under torchrun, SLURM or a
Kubernetes Job the ranks are started by those instead and call
:func:`~optuna_opplan.video.run_distributed_worker` directly.
"""

from __future__ import annotations

from collections.abc import Callable
import multiprocessing
from multiprocessing.connection import wait
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import optuna

from optuna_opplan.video._distributed import DistributedWorkerError

_logger = optuna.logging.get_logger("optuna.opplan")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(target: Callable[..., Any], args: tuple[Any, ...], env: dict[str, str]) -> None:
    os.environ.update(env)
    code = target(*args)
    sys.exit(code if isinstance(code, int) else 0)


def launch(
    target: Callable[..., Any],
    args: tuple[Any, ...] = (),
    *,
    nproc_per_node: int,
    grace_period: float = 30.0,
    kill_after: float = 10.0,
) -> int:
    """Run ``target(*args)`` in ``nproc_per_node`` new processes, as the ranks of one group.

    Each process gets the environment torchrun would give it (``RANK``, ``LOCAL_RANK``,
    ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``).
    SIGTERM sent to the launcher is passed on to the ranks. When a rank exits with an error
    or dies, the others get ``grace_period`` seconds to
    notice (rank 0 records its transition as failed) and exit, then are terminated (SIGTERM,
    which fails a running transition too) and killed after ``kill_after`` more seconds: a
    broken group is never left hanging. ``target`` must be
    importable (processes are spawned) and typically calls :func:`run_distributed_worker`.

    Returns:
        0 if every rank exited with 0, else the first failing rank's exit code (or 1 if it
        was killed by a signal).
    """
    if isinstance(nproc_per_node, bool) or not isinstance(nproc_per_node, int):
        raise ValueError(f"`nproc_per_node` must be a positive int, but got {nproc_per_node!r}.")
    if nproc_per_node <= 0:
        raise ValueError(f"`nproc_per_node` must be a positive int, but got {nproc_per_node!r}.")
    if "RANK" in os.environ:
        raise DistributedWorkerError(
            "launch() was called inside a rank (RANK is set): under torchrun, call "
            "run_distributed_worker() directly."
        )
    context = multiprocessing.get_context("spawn")
    port = str(_free_port())
    processes: list[Any] = []

    def forward(signum: int, frame: Any) -> None:
        # A scheduler stopping the launcher (Kubernetes deleting the pod, where the launcher
        # is PID 1 and would ignore SIGTERM; scancel) stops the ranks, which fail their
        # transition on the way out.
        for process in processes:
            if process.exitcode is None:
                process.terminate()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, forward)
    for rank in range(nproc_per_node):
        env = {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(nproc_per_node),
            "LOCAL_WORLD_SIZE": str(nproc_per_node),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        process = context.Process(target=_rank_main, args=(target, args, env), name=f"rank{rank}")
        process.start()
        processes.append(process)
    failed: int | None = None
    try:
        running = list(processes)
        while running and failed is None:
            wait([p.sentinel for p in running])
            for process in list(running):
                if process.exitcode is None:
                    continue
                running.remove(process)
                if process.exitcode != 0 and failed is None:
                    failed = process.exitcode if process.exitcode > 0 else 1
                    _logger.warning(
                        f"{process.name} (pid {process.pid}) exited with {process.exitcode}: "
                        "stopping the other ranks."
                    )
        deadline = time.monotonic() + grace_period
        while running and time.monotonic() < deadline:
            wait([p.sentinel for p in running], timeout=max(0.0, deadline - time.monotonic()))
            running = [p for p in running if p.exitcode is None]
    finally:
        for process in processes:
            if process.exitcode is None:
                process.terminate()
        deadline = time.monotonic() + kill_after
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return failed or 0
