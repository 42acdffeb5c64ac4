"""One transition on many processes: DistributedDataParallel under the planning engine.

Rank 0 is an ordinary planning worker (:func:`~optuna_opplan.run_worker`): it claims a
transition, tells the other ranks what to train through the process group's key-value store,
and is the only rank that talks to the study's storage and the artifact store (reports, pruner
decisions, checkpoints), as optuna-integration's ``TorchDistributedTrial`` does. Every rank
trains the same model under DistributedDataParallel on its shard of the clips (a
``DistributedSampler``) and evaluates its shard of the validation videos; the scores are summed
over the group, so each rank sees the same score, and rank 0's pruner decision is broadcast
after every epoch, so every rank stops at the same epoch.

A rank that fails or dies breaks the group. Collectives time out (``timeout``); rank 0 records
the transition as failed (it is retried, by this or another worker) and every rank exits with
an error, for the launcher (``opplan worker --nproc-per-node``, torchrun, a Kubernetes Job,
SLURM) to start the group again. A failure every rank agrees on, such as a loss that turned NaN,
ends the transition as a failed edge and the group goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
import dataclasses
import datetime
import os
import pickle
import signal
import threading
from typing import Any

import optuna
import torch
from torch import nn
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data import Subset
from torch.utils.data.distributed import DistributedSampler

from optuna_opplan._step import TransitionStep
from optuna_opplan._step import current_transition
from optuna_opplan._worker import run_worker
from optuna_opplan.models import freeze_batchnorm
from optuna_opplan.video._dataset import VideoDataset
from optuna_opplan.video._trainer import Runner
from optuna_opplan.video._trainer import TransitionTrainer
from optuna_opplan.video._trainer import train_transition

_logger = optuna.logging.get_logger("optuna.opplan")

# Seconds a follower waits on the store before looking again: it only bounds how long a
# follower takes to notice that the store (rank 0's, or torchrun's agent's) is gone.
_POLL = 5.0
DEFAULT_TIMEOUT = 1800.0


class DistributedWorkerError(RuntimeError):
    """A rank of a distributed worker failed or died: the group cannot go on."""


@dataclasses.dataclass
class _Group:
    """This process's place in the worker group, and the group's channels."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    backend: str
    store: Any
    device: torch.device
    seq: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def send(self, command: tuple[str, Any]) -> None:
        """Rank 0: publish the next command for the followers."""
        self.seq += 1
        self.store.set(f"opplan/cmd/{self.seq}", pickle.dumps(command))

    def receive(self) -> tuple[str, Any]:
        """A follower: wait (as long as it takes) for rank 0's next command."""
        self.seq += 1
        key = f"opplan/cmd/{self.seq}"
        while True:
            try:
                self.store.wait([key], datetime.timedelta(seconds=_POLL))
            except Exception as exc:
                # A timeout just means rank 0 is busy or idle; a store that no longer answers
                # means rank 0 (or the launcher's agent) is gone.
                try:
                    self.store.check([key])
                except Exception:
                    raise DistributedWorkerError(
                        f"rank {self.rank}: lost rank 0's store while waiting for work ({exc})"
                    ) from None
                continue
            command: tuple[str, Any] = pickle.loads(self.store.get(key))
            return command

    def decide(self, value: bool) -> bool:
        """Rank 0's ``value``, on every rank."""
        flag = torch.tensor([1.0 if value else 0.0], device=self._comm_device)
        dist.broadcast(flag, src=0)
        return bool(flag.item() > 0.5)

    def all_true(self, value: bool) -> bool:
        """Whether ``value`` holds on every rank."""
        flag = torch.tensor([1.0 if value else 0.0], device=self._comm_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() > 0.5)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the group."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def _init_group(device: str, timeout: float) -> _Group:
    """Join the process group described by torchrun's environment variables."""
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise DistributedWorkerError(
            f"A distributed worker needs the environment of a rank ({', '.join(missing)} not "
            "set): start it with `opplan worker --nproc-per-node N`, torchrun, or launch()."
        )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if torch.cuda.device_count() <= local_rank:
            raise DistributedWorkerError(
                f"Local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible, "
                "start at most that many processes per node."
            )
        torch.cuda.set_device(local_rank)
        where = torch.device("cuda", local_rank)
    else:
        where = torch.device("cpu")
    backend = "nccl" if cuda else "gloo"
    wait_for = datetime.timedelta(seconds=timeout)
    store, rank, world = next(dist.rendezvous("env://", rank, world, timeout=wait_for))
    dist.init_process_group(
        backend, store=dist.PrefixStore("pg", store), rank=rank, world_size=world, timeout=wait_for
    )
    return _Group(rank, world, local_rank, local_world, backend, store, where)


class _DistributedRunner(Runner):
    """The trainer's loops on one rank: its shard of the data, sums over the group."""

    def __init__(self, trainer: TransitionTrainer, group: _Group) -> None:
        config = trainer.config
        if config.batch_size % group.world_size:
            raise ValueError(
                f"`batch_size` ({config.batch_size}) must be a multiple of the number of "
                f"processes ({group.world_size}): each trains batch_size / processes clips per "
                "step, so the effective batch stays the same."
            )
        cores = max(1, (os.cpu_count() or 1) // group.local_world_size)
        config = dataclasses.replace(
            config,
            batch_size=config.batch_size // group.world_size,
            cpu_threads=config.cpu_threads or max(1, cores - config.num_workers),
        )
        super().__init__(config, len(trainer.train.classes))
        self.device = group.device
        self.group = group

    def all_finite(self, loss: torch.Tensor) -> bool:
        return self.group.all_true(bool(torch.isfinite(loss)))

    def loader(self, dataset: VideoDataset, batch: int, *, shuffle: bool, seed: int) -> DataLoader:
        group = self.group
        generator = torch.Generator().manual_seed(seed * 1_000 + group.rank)
        workers = self.config.num_workers
        kwargs: dict[str, Any] = {
            "batch_size": batch,
            "num_workers": workers,
            "generator": generator,
            "pin_memory": self.device.type == "cuda",
            "prefetch_factor": 4 if workers else None,
        }
        if shuffle:
            # Every rank gets as many clips (the sampler pads with repeats), hence as many
            # optimizer steps: DDP needs every rank in every gradient all-reduce.
            sampler: DistributedSampler[Any] = DistributedSampler(
                dataset, num_replicas=group.world_size, rank=group.rank, shuffle=True, seed=seed
            )
            return DataLoader(dataset, sampler=sampler, **kwargs)
        shard = Subset(dataset, range(group.rank, len(dataset), group.world_size))
        return DataLoader(shard, shuffle=False, **kwargs)

    def evaluate(self, model: nn.Module, dataset: VideoDataset, **kwargs: Any) -> float:
        # Both metrics are means over the videos: summing score x count over the shards
        # (without padding) gives the score of the whole split.
        if isinstance(model, DistributedDataParallel):
            model = model.module
        count = len(range(self.group.rank, len(dataset), self.group.world_size))
        score = super().evaluate(model, dataset, **kwargs) if count else 0.0
        total, videos = self.group.sum([score * count, count])
        if videos == 0:
            raise ValueError(f"Cannot evaluate on an empty dataset: {dataset!r}.")
        return total / videos


class _Leader:
    """Rank 0's objective: hand the transition to the followers, then train it with them."""

    def __init__(self, trainer: TransitionTrainer, runner: _DistributedRunner) -> None:
        self.trainer = trainer
        self.runner = runner
        # run_worker takes it from here: rank 0's engine keeps and uploads the checkpoints.
        self.artifact_store = trainer.artifact_store

    def __call__(self, trial: optuna.Trial) -> None:
        step = current_transition(trial)
        command = {
            "trial": trial.number,
            "key": step.transition.key,
            "params": step.params,
            "has_source": step.source_trial is not None,
        }
        self.runner.group.send(("train", command))
        try:
            _train(self.trainer, self.runner, command, trial, step)
        except Exception as exc:
            if _agreed(exc):
                raise
            raise DistributedWorkerError(
                f"the worker group broke while training trial {trial.number} "
                f"({type(exc).__name__}: {exc})"
            ) from exc


def _agreed(exc: BaseException) -> bool:
    # A failure every rank raised at the same point (NaN loss): the group is still in step.
    from optuna_opplan._worker import TransitionFailed

    return isinstance(exc, TransitionFailed)


def _train(
    trainer: TransitionTrainer,
    runner: _DistributedRunner,
    command: dict[str, Any],
    trial: optuna.Trial | None,
    step: TransitionStep | None,
) -> None:
    """Train one transition on this rank; ``trial`` and ``step`` are rank 0's only."""
    group = runner.group

    def wrap(model: nn.Module) -> nn.Module:
        if int(command["params"]["clip_length"]) >= runner.config.freeze_bn_from_clip:
            # Before DDP sees the parameters: those it registers must all get gradients.
            freeze_batchnorm(model, except_first=True)
        # DDP broadcasts rank 0's weights (the source checkpoint) to every rank here.
        return DistributedDataParallel(
            model, device_ids=[group.local_rank] if group.device.type == "cuda" else None
        )

    epochs = train_transition(
        trainer,
        runner,
        command["trial"],
        command["key"],
        command["params"],
        has_source=command["has_source"],
        trial=trial,
        step=step,
        wrap=wrap,
        processes=group.world_size,
        decide=group.decide,
    )
    if trial is None:
        _logger.info(f"Rank {group.rank} trained trial {command['trial']} for {epochs} epochs.")


def run_distributed_worker(
    study: optuna.Study | Callable[[], optuna.Study],
    trainer: TransitionTrainer,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    **worker_kwargs: Any,
) -> int:
    """Be one rank of a worker that trains each transition on all ranks of a process group.

    Call it in every process of the group (started by :func:`launch`, ``opplan worker
    --nproc-per-node``, or ``torchrun``, which set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT``). Rank 0 runs :func:`~optuna_opplan.run_worker` and
    the others follow it until the plan is complete; see the module docstring.

    Args:
        study: The planning study, or a function that loads it (called on rank 0 only, so the
            other ranks never open the storage).
        trainer: The transition trainer; its ``config.batch_size`` is the effective batch, a
            multiple of the number of processes.
        timeout: Seconds a collective (or the group's start) may wait for a silent rank before
            the group is declared broken.
        worker_kwargs: Passed to :func:`~optuna_opplan.run_worker` on rank 0 (its ``catch``
            cannot be set: any failure not agreed by all ranks ends the group).

    Returns:
        The number of transitions the group finished.

    Raises:
        DistributedWorkerError: if a rank failed or died; the transition it was training is
            failed (and retried) if rank 0 is alive, else once its heartbeats stop.

    Example:
        A script run as ``torchrun --nproc-per-node 4 train.py``, or as ``python train.py``
        with the :func:`launch` line::

            import optuna_opplan as op
            from optuna_opplan.video import TransitionTrainer, launch, run_distributed_worker

            def rank_main():
                trainer = TransitionTrainer(train, val, "s3://bucket/ucf101", config=config)
                study = lambda: op.load_planning_study(study_name="ucf101", storage=URL)
                return run_distributed_worker(study, trainer)

            if __name__ == "__main__":
                rank_main()  # under torchrun
                # or: launch(rank_main, nproc_per_node=4)
    """
    if not isinstance(trainer, TransitionTrainer):
        raise ValueError(f"`trainer` must be a TransitionTrainer, but got {trainer!r}.")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"`timeout` must be a positive number, but got timeout={timeout!r}.")
    if "catch" in worker_kwargs:
        raise ValueError("`catch` cannot be set for a distributed worker.")
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a launcher stopping a broken group, Kubernetes deleting a pod) unwinds like
        # an error, so rank 0 records its running transition as failed before it exits.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    group = _init_group(trainer.config.device, timeout)
    _logger.info(
        f"Rank {group.rank} of {group.world_size} (pid {os.getpid()}, {group.backend}, "
        f"{group.device}) is ready."
    )
    runner = _DistributedRunner(trainer, group)
    try:
        if not group.leader:
            return _follow(trainer, runner)
        finished = False
        try:
            loaded = study() if callable(study) else study
            done = run_worker(loaded, _Leader(trainer, runner), catch=(), **worker_kwargs)
            finished = True
            return done
        finally:
            # Idle followers leave on "stop"; busy ones are in a collective that fails now.
            group.send(("stop", {"finished": finished}))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _follow(trainer: TransitionTrainer, runner: _DistributedRunner) -> int:
    group = runner.group
    done = 0
    while True:
        kind, command = group.receive()
        if kind == "stop":
            if not command["finished"]:
                raise DistributedWorkerError(f"rank {group.rank}: rank 0 stopped on an error.")
            return done
        try:
            _train(trainer, runner, command, None, None)
        except Exception as exc:
            if not _agreed(exc):
                raise DistributedWorkerError(
                    f"rank {group.rank}: the worker group broke while training trial "
                    f"{command['trial']} ({type(exc).__name__}: {exc})"
                ) from exc
        done += 1
