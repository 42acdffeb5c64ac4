"""2D inflation, BatchNorm freezing, the registry and the size/cost counters of the models."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from optuna_opplan import models

import torchvision  # isort: skip  (needs optuna_opplan.models' CPU shim first)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@functools.cache
def _resnet_2d(depth: int) -> nn.Module:
    """A random torchvision ResNet with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(depth)
    resnet = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth]()
    for module in resnet.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(module.weight, 0.5, 1.0)
            nn.init.uniform_(module.bias, -0.1, 0.1)
    return resnet.eval()


def _layer4_2d(resnet: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(frames))))
    return resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))


@pytest.mark.parametrize(
    ("builder", "depth"),
    [
        (models.dg_p3d_resnet18, 18),
        (models.dg_p3d_resnet50, 50),
    ],
)
def test_inflated_network_equals_the_2d_one_on_a_static_clip(
    builder: models.ModelBuilder, depth: int
) -> None:
    resnet = _resnet_2d(depth)
    model = builder(num_classes=3)
    assert isinstance(model, models.P3DResNet)
    models.inflate_from_2d(model, resnet.state_dict())
    model.eval()
    image = torch.randn(1, 3, 64, 64)
    clip = image[:, :, None].expand(1, 3, 8, 64, 64)
    head = model.head.temporal if isinstance(model.head, models.DualHead) else model.head
    with torch.no_grad():
        expected = _layer4_2d(resnet, image)
        got = head.stage(model.features(clip))
    assert got.shape[2] == 2  # reference stem: 8 frames / 4
    for t in range(got.shape[2]):
        torch.testing.assert_close(got[:, :, t], expected, rtol=1e-3, atol=1e-3)


def test_inflation_report_and_copied_kernels() -> None:
    resnet = _resnet_2d(18)
    model = models.dg_p3d_resnet18(num_classes=3, stem_temporal_kernel=3, stem_temporal_stride=1)
    report = models.inflate_from_2d(model, resnet.state_dict())
    state_2d, state_3d = resnet.state_dict(), model.state_dict()

    assert report.mapped["layer1.0.p3d.spatial.weight"] == "layer1.0.conv1.weight"
    assert report.mapped["head.spatial.stage.1.conv2.weight"] == "layer4.1.conv2.weight"
    assert (
        report.mapped["layer2.0.downsample.1.running_var"] == "layer2.0.downsample.1.running_var"
    )
    for key_3d, key_2d in report.mapped.items():
        if key_3d.endswith("conv.weight") and key_3d.startswith("stem"):
            # Repeated over the 3 temporal taps, a third each.
            expected = state_2d[key_2d].unsqueeze(2).expand_as(state_3d[key_3d]) / 3
            torch.testing.assert_close(state_3d[key_3d], expected)
        elif state_2d[key_2d].dim() == 4:
            torch.testing.assert_close(state_3d[key_3d][:, :, 0], state_2d[key_2d])
        else:
            torch.testing.assert_close(state_3d[key_3d], state_2d[key_2d])

    assert set(report.unmapped_2d) == {"fc.weight", "fc.bias"}
    assert "layer1.0.context.fc2.weight" in report.unmapped_3d
    assert "head.temporal.fc.weight" in report.unmapped_3d
    assert "layer1.0.p3d.temporal.weight" in report.initialised
    every_key = set(report.mapped) | set(report.initialised) | set(report.unmapped_3d)
    assert every_key == set(state_3d)
    assert not set(report.mapped) & set(report.initialised)


@functools.cache
def _inflated_p3d_resnet50() -> models.P3DResNet:
    model = models.p3d_resnet50(num_classes=3)
    models.inflate_from_2d(model, _resnet_2d(50).state_dict())
    return model


@pytest.mark.parametrize(
    ("block_index", "kind", "temporal_scale"),
    [
        (0, "A", 1.0),
        (1, "B", 0.0),
        (2, "C", 0.0),
    ],
)
def test_inflated_temporal_convs_start_as_identity(
    block_index: int, kind: str, temporal_scale: float
) -> None:
    unit = _inflated_p3d_resnet50().layer1[block_index].p3d
    assert type(unit).__name__ == f"P3DUnit{kind}"
    weight = unit.temporal.weight
    torch.testing.assert_close(weight[:, :, 1, 0, 0], torch.eye(*weight.shape[:2]))
    assert weight[:, :, [0, 2]].abs().sum() == 0
    assert torch.all(unit.bn_temporal.weight == temporal_scale)


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("builder", "depth", "kwargs", "message"),
    [
        (models.p3d_resnet18, 50, {}, "with bottleneck blocks but the network has basic"),
        (models.p3d_resnet50, 18, {}, "with basic blocks but the network has bottleneck"),
        (
            models.p3d_resnet18,
            18,
            {"width_multiplier": 0.5},
            "build the network with width_multip",
        ),
        (models.p3d_resnet18, 18, {"in_channels": 2}, "3 input channels"),
    ],
)
def test_inflation_rejects_mismatched_weights_without_touching_the_model(
    builder: models.ModelBuilder, depth: int, kwargs: dict[str, object], message: str
) -> None:
    model = builder(num_classes=3, **kwargs)
    before = _state_copy(model)
    with pytest.raises(ValueError, match=message):
        models.inflate_from_2d(model, _resnet_2d(depth).state_dict())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_inflation_rejects_a_missing_key() -> None:
    state = dict(_resnet_2d(18).state_dict())
    del state["layer3.1.bn2.running_var"]
    with pytest.raises(ValueError, match="no key 'layer3.1.bn2.running_var'"):
        models.inflate_from_2d(models.p3d_resnet18(num_classes=3), state)


def test_inflation_rejects_a_deeper_2d_network() -> None:
    state = dict(_resnet_2d(18).state_dict())
    state["layer3.2.conv1.weight"] = torch.zeros(256, 256, 3, 3)
    with pytest.raises(ValueError, match="deeper ResNet"):
        models.inflate_from_2d(models.p3d_resnet18(num_classes=3), state)


def test_inflation_needs_a_p3d_network() -> None:
    with pytest.raises(TypeError, match="P3DResNet"):
        models.inflate_from_2d(nn.Linear(2, 2), {})


def _tiny_dg_p3d() -> nn.Module:
    return models.dg_p3d_resnet18(
        num_classes=3, width_multiplier=0.125, stem_temporal_kernel=1, stem_temporal_stride=1
    )


def _batchnorms(model: nn.Module) -> list[nn.BatchNorm3d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]


@pytest.mark.parametrize("except_first", [True, False])
def test_frozen_batchnorm_survives_train_mode(except_first: bool) -> None:
    model = _tiny_dg_p3d()
    frozen = models.freeze_batchnorm(model, except_first=except_first)
    norms = _batchnorms(model)
    assert frozen[0] == ("layer1.0.p3d.bn_spatial" if except_first else "stem.bn")
    assert len(frozen) == len(norms) - except_first
    assert models.frozen_batchnorm_names(model) == frozen
    before = [bn.running_mean.clone() for bn in norms]

    model.train()
    output = model(torch.randn(2, 3, 4, 32, 32))
    models.classification_loss(output, torch.tensor([0, 2])).backward()

    trainable = norms[:1] if except_first else []
    for bn, mean in zip(norms, before):
        stats_moved = not torch.equal(bn.running_mean, mean)
        assert stats_moved == (bn in trainable)
        assert bn.weight.requires_grad == (bn in trainable)
        assert (bn.weight.grad is not None) == (bn in trainable)
    assert model.layer1[0].p3d.spatial.weight.grad is not None  # gradients still flow through


def test_unfreeze_batchnorm_restores_training() -> None:
    model = _tiny_dg_p3d()
    frozen = models.freeze_batchnorm(model)
    frozen_copy = copy.deepcopy(model)
    assert models.unfreeze_batchnorm(model) == frozen
    assert models.frozen_batchnorm_names(model) == []
    assert models.frozen_batchnorm_names(frozen_copy) == frozen
    model.train()
    assert all(bn.training and bn.weight.requires_grad for bn in _batchnorms(model))
    bn = model.get_submodule(frozen[0])
    mean = bn.running_mean.clone()
    model(torch.randn(2, 3, 4, 32, 32))
    assert not torch.equal(bn.running_mean, mean)


def test_freezing_twice_is_harmless() -> None:
    model = nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2), nn.BatchNorm3d(2))
    assert models.freeze_batchnorm(model) == models.freeze_batchnorm(model) == ["2"]
    assert len(model[2]._forward_pre_hooks) == 1


def test_registry_lists_every_builder() -> None:
    names = models.list_models()
    assert names == sorted(names)
    expected = {f"{p}p3d_resnet{d}" for p in ("", "g_", "dg_") for d in (18, 50, 101)}
    assert set(names) == expected | {"r3d_18", "mc3_18", "r2plus1d_18", "c3d_small"}


def test_registry_builds_by_name() -> None:
    model = models.get_model("dg_p3d_resnet18", num_classes=7, width_multiplier=0.125)
    assert isinstance(model, models.P3DResNet)
    assert model.dual_head and model.num_classes == 7


@pytest.mark.parametrize("name", ["resnet50", "DG_P3D_RESNET50", ""])
def test_registry_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="must be one of .*'dg_p3d_resnet50'"):
        models.get_model(name, num_classes=3)


def test_register_model(monkeypatch: pytest.MonkeyPatch) -> None:
    builders = dict(models._registry._BUILDERS)
    monkeypatch.setattr("optuna_opplan.models._registry._BUILDERS", builders)
    models.register_model("linear", lambda *, num_classes: nn.Linear(2, num_classes))
    assert models.get_model("linear", num_classes=4).out_features == 4
    with pytest.raises(ValueError, match="'linear' is registered"):
        models.register_model("linear", nn.Identity)


@pytest.mark.parametrize(("trainable_only", "expected"), [(False, 6 * 3 + 3 + 2 * 2), (True, 4)])
def test_count_parameters(trainable_only: bool, expected: int) -> None:
    model = nn.Sequential(nn.Linear(6, 3), nn.BatchNorm1d(2))
    model[0].requires_grad_(False)
    assert models.count_parameters(model, trainable_only=trainable_only) == expected


@pytest.mark.parametrize(
    ("clip_shape", "macs"),
    [
        ((3, 2, 5, 5), 4 * 2 * 5 * 5 * 3 * 27),
        ((3, 4, 5, 5), 4 * 4 * 5 * 5 * 3 * 27),
    ],
)
def test_flops_of_a_conv(clip_shape: tuple[int, int, int, int], macs: int) -> None:
    conv = nn.Conv3d(3, 4, kernel_size=3, padding=1)
    assert models.flops_per_clip(conv, clip_shape) == pytest.approx(2 * macs / 1e9)


def test_flops_scale_with_frames_and_restore_the_mode() -> None:
    model = _tiny_dg_p3d().train()
    short = models.flops_per_clip(model, (3, 4, 32, 32))
    long = models.flops_per_clip(model, (3, 8, 32, 32))
    assert model.training
    assert long == pytest.approx(2 * short, rel=0.02)


def test_bigger_models_cost_more() -> None:
    kwargs = {"num_classes": 10, "width_multiplier": 0.25}
    costs = [
        models.flops_per_clip(models.get_model(name, **kwargs), (3, 8, 64, 64))
        for name in ("p3d_resnet18", "p3d_resnet50", "dg_p3d_resnet50")
    ]
    assert costs == sorted(costs) and len(set(costs)) == 3
