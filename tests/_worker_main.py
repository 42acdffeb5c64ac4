"""A planning worker run as a separate process by the concurrency tests and benchmarks.

Usage::

    python tests/_worker_main.py --storage URL --study NAME --log PATH [options]

It opens the storage with :func:`optuna_opplan.create_storage`, creates the study (or joins it
when it exists: several of these race to initialise it) and runs
:func:`optuna_opplan.run_worker` with a :class:`SimulatedObjective`. Every objective call
appends ``START <trial number> <transition key> <pid> <attempt>`` to the log when it begins and
``FINISH ...`` when it returns, so a test can count how often each transition really ran, even
for a worker that was killed in between. With ``--checkpoints DIR`` it also keeps a checkpoint
per transition in a real artifact store there, and starts each transition from its source's
checkpoint, loaded (hash-checked) the way the video trainer loads it.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from collections.abc import Sequence
import os
import sys
import time
from typing import Any

import optuna

import optuna_opplan as op
from optuna_opplan.simulation import SimulatedObjective

GRAPHS: dict[str, Callable[[], op.TransitionGraph]] = {
    # 2 x 2 states per sampling strategy, 14 transitions: wide enough for 4 workers.
    "small": lambda: op.TransitionGraph.extended(clip_lengths=(8, 16), learning_rates=(0.1, 0.01)),
    # The paper's extended graph: 36 transitions, critical path of 7.
    "extended": lambda: op.TransitionGraph.extended(),
    # Same axes as "small" with the basic rule: a different graph for the mismatch test.
    "small-basic": lambda: op.TransitionGraph.basic(
        clip_lengths=(8, 16), learning_rates=(0.1, 0.01)
    ),
}


# The tests' workers retry after a death within a second, not the default half minute: their
# grace periods are seconds too.
DEATH_BACKOFF = 0.5


def make_study(
    storage: str | optuna.storages.BaseStorage,
    study_name: str,
    *,
    graph: str = "small",
    score: str = "fitted",
    delay: int = 5,
    max_epochs: int = 30,
    create: bool = True,
    retries: dict[str, Any] | None = None,
) -> optuna.Study:
    """The planning study every worker and the tests agree on.

    ``retries`` holds the sampler's retry settings (``max_retries``, ``max_deaths``,
    ``death_backoff``) where they differ from the defaults (``death_backoff``:
    :data:`DEATH_BACKOFF`).
    """
    retries = {"death_backoff": DEATH_BACKOFF, **(retries or {})}
    if isinstance(storage, str):
        storage = op.create_storage(storage)
    graph_ = GRAPHS[graph]()
    pruner = op.KneePointPruner(delay=delay, max_epochs=max_epochs)
    if create:
        return op.create_planning_study(
            graph_,
            storage=storage,
            study_name=study_name,
            pruner=pruner,
            score=score,
            **retries,
        )
    sampler = op.PlanningSampler(graph_, score=score, **retries)
    return optuna.load_study(
        study_name=study_name, storage=storage, sampler=sampler, pruner=pruner
    )


def _log(fd: int, *fields: Any) -> None:
    # One write() per line on an O_APPEND descriptor: lines of concurrent workers never mix,
    # and fsync makes a START survive a SIGKILL right after it.
    os.write(fd, (" ".join(str(f) for f in fields) + "\n").encode())
    os.fsync(fd)


class LoggedObjective:
    """A :class:`SimulatedObjective` that logs its starts and finishes.

    ``hold`` maps a transition key to seconds to sleep right after the START of its first
    ``hold_attempts`` attempts, which gives a test a wide, deterministic window to kill the
    worker mid-transition.
    ``checkpoints`` is a folder for an artifact store: each transition loads its source's kept
    checkpoint (which must hold the source trial's number) and uploads its own when it ends.
    """

    # 256 KiB: larger than the chunks an artifact store copies, so an upload takes several.
    CHECKPOINT_FLOATS = 1 << 16

    def __init__(
        self,
        inner: SimulatedObjective,
        log_path: str,
        hold: dict[str, float],
        checkpoints: str | None = None,
        hold_attempts: int = 1,
    ) -> None:
        self.inner = inner
        self.fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.hold = hold
        self.hold_attempts = hold_attempts
        self.store: Any = None
        if checkpoints is not None:
            from optuna_opplan.video import CheckpointStore

            self.store = CheckpointStore(checkpoints)

    def __call__(self, trial: optuna.Trial) -> Any:
        step = op.current_transition(trial)
        key = step.transition.key
        _log(self.fd, "START", trial.number, key, os.getpid(), step.attempt)
        if step.attempt <= self.hold_attempts and key in self.hold:
            time.sleep(self.hold[key])
        if self.store is not None and step.source_trial is not None:
            weights = self.store.load(trial.study, step.source_trial)
            if float(weights["w"][0]) != step.source_trial:
                raise AssertionError(f"{key} got the weights of another trial than its source")
        result = self.inner(trial)
        if self.store is not None:
            import torch

            weights = {"w": torch.full((self.CHECKPOINT_FLOATS,), float(trial.number))}
            self.store.save(trial, weights, epoch=0)
        _log(self.fd, "FINISH", trial.number, key, os.getpid(), step.attempt)
        return result


def parse_log(path: str) -> list[tuple[str, int, str, int, int]]:
    """The log's ``(event, trial number, transition key, pid, attempt)`` lines."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = []
        for line in f:
            event, number, key, pid, attempt = line.split()
            rows.append((event, int(number), key, int(pid), int(attempt)))
        return rows


def count_starts(rows: Sequence[tuple[str, int, str, int, int]]) -> Counter[str]:
    """How often each transition's objective started, in a log parsed by :func:`parse_log`."""
    return Counter(key for event, _, key, _, _ in rows if event == "START")


def _hold(text: str) -> tuple[str, float]:
    key, _, seconds = text.rpartition("=")
    return key, float(seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--graph", default="small", choices=sorted(GRAPHS))
    parser.add_argument("--score", default="fitted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epoch-seconds", type=float, default=0.02)
    parser.add_argument("--delay", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--heartbeat-interval", type=float, default=0.2)
    parser.add_argument("--grace-period", type=float, default=2.0)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--max-poll-interval", type=float, default=0.5)
    parser.add_argument("--no-create", action="store_true", help="load_study, never create")
    parser.add_argument("--hold", type=_hold, action="append", default=[], metavar="KEY=SEC")
    parser.add_argument("--hold-attempts", type=int, default=1, metavar="N")
    parser.add_argument("--checkpoints", metavar="DIR", help="artifact store folder")
    parser.add_argument("--max-retries", type=int)
    parser.add_argument("--max-deaths", type=int)
    parser.add_argument("--death-backoff", type=float)
    args = parser.parse_args(argv)
    retries = {
        name: getattr(args, name)
        for name in ("max_retries", "max_deaths", "death_backoff")
        if getattr(args, name) is not None
    }

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = make_study(
        args.storage,
        args.study,
        graph=args.graph,
        score=args.score,
        delay=args.delay,
        max_epochs=args.max_epochs,
        create=not args.no_create,
        retries=retries,
    )
    inner = SimulatedObjective(
        seed=args.seed, epoch_seconds=args.epoch_seconds, max_epochs=args.max_epochs
    )
    objective = LoggedObjective(
        inner, args.log, dict(args.hold), args.checkpoints, hold_attempts=args.hold_attempts
    )
    done = op.run_worker(
        study,
        objective,
        heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period,
        poll_interval=args.poll_interval,
        max_poll_interval=args.max_poll_interval,
    )
    print(f"worker {os.getpid()} finished {done} transitions", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
