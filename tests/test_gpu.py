"""The CUDA paths of the trainer: mixed precision, cudnn.benchmark, pinned memory, NCCL.

They run where torch sees a GPU; elsewhere they are reported as skipped, with the reason, in
pytest's summary (``-ra``). The checks that need no GPU (a clear refusal) run everywhere.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import optuna_opplan as op
from optuna_opplan.video import VideoDataset
from optuna_opplan.video._checkpoint import CheckpointStore
from optuna_opplan.video._trainer import Runner
from optuna_opplan.video._trainer import TrainerConfig
from optuna_opplan.video._trainer import TransitionTrainer

NO_GPU = "no CUDA GPU visible to torch: the CUDA paths (AMP, cudnn.benchmark, pinned memory)"
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason=f"{NO_GPU} were not run")
two_gpus = pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="fewer than 2 CUDA GPUs: DDP over NCCL was not run"
)
TINY = {"width_multiplier": 0.125, "stem_temporal_stride": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> VideoDataset:
    from video_fixtures import tiny_synthetic
    from video_fixtures import tiny_transform

    generated = tiny_synthetic(tmp_path_factory.mktemp("videos"))
    return VideoDataset.from_list_file(
        generated.root, generated.train_list, generated.class_file, transform=tiny_transform()
    )


def _config(**kwargs) -> TrainerConfig:
    base = {"model": "dg_p3d_resnet18", "model_kwargs": TINY, "batch_size": 2, "progress": False}
    return TrainerConfig(**{**base, **kwargs})


def test_asking_for_cuda_without_a_gpu_is_refused_clearly() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the refusal cannot happen here")
    with pytest.raises(ValueError, match="device is 'cuda' but torch sees no CUDA GPU"):
        Runner(_config(device="cuda"), num_classes=2)


def test_the_gpu_benchmark_refuses_to_run_without_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the benchmark would run")
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--out", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "needs a CUDA GPU" in out.stderr


@gpu
def test_mixed_precision_training_on_the_gpu(data) -> None:
    runner = Runner(_config(device="cuda", amp=True, num_workers=1), num_classes=2)
    assert torch.backends.cudnn.benchmark
    model = runner.build_model()
    assert next(model.parameters()).is_cuda
    dtypes: list[torch.dtype] = []
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv3d))
    conv.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    loader = runner.loader(data.with_clip(clip_length=4), 2, shuffle=True, seed=0)
    assert loader.pin_memory
    before = [p.detach().clone() for p in model.parameters()]
    stats = runner.train_epoch(
        model, runner.optimizer(model, 0.01), data.with_clip(clip_length=4), seed=0, epoch=1
    )
    assert stats.clips == len(data) and stats.loss == stats.loss  # finite, not NaN
    assert torch.float16 in dtypes or torch.bfloat16 in dtypes, "autocast was not used"
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    score = runner.evaluate(model, data.with_clip(clip_length=4).with_mode("val"))
    assert 0.0 <= score <= 1.0


@gpu
def test_a_transition_trained_on_the_gpu_keeps_a_checkpoint_that_loads_on_the_cpu(
    data, tmp_path
) -> None:
    graph = op.TransitionGraph.basic(
        clip_lengths=(4,), learning_rates=(0.05, 0.005), samplings=("uniform",)
    )
    study = op.create_planning_study(graph, pruner=op.KneePointPruner(delay=1, max_epochs=2))
    trainer = TransitionTrainer(data, data, tmp_path, config=_config(device="cuda"))
    assert op.run_worker(study, trainer, poll_interval=0.01) == 2
    for trial in study.trials:
        assert trial.system_attrs["opplan:compute"]["device"] == "cuda"
    state = CheckpointStore(tmp_path).load(study, study.trials[-1].number)
    assert state is None or all(t.device.type == "cpu" for t in state.values())


@gpu
@two_gpus
def test_a_two_gpu_worker_uses_nccl(tmp_path) -> None:
    # The CLI test of the distributed worker, on two GPUs: NCCL instead of gloo.
    from test_distributed import CONFIG

    config = CONFIG.replace("[trainer]\n", '[trainer]\ndevice = "cuda"\n')
    (tmp_path / "plan.toml").write_text(config.format(cache=tmp_path / "cache"))
    study = ["--storage", f"sqlite:///{tmp_path / 'plan.db'}", "--study-name", "nccl"]
    cli = [sys.executable, "-m", "optuna_opplan.cli"]
    run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=900)
    init = subprocess.run([*cli, "init", *study, "--config", "plan.toml"], **run)
    assert init.returncode == 0, init.stderr
    worker = subprocess.run([*cli, "worker", *study, "--nproc-per-node", "2", "--no-grid"], **run)
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "nccl" in worker.stderr and "Rank 1 of 2" in worker.stderr
