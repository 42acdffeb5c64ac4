"""Shapes and behaviour of the P3D blocks, heads and networks (tiny sizes: CPU, seconds)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from optuna_opplan import models

STRIDES = [(1, 1), (2, 1), (1, 2), (2, 2)]  # (spatial, temporal)
P3D_BUILDERS = [name for name in models.list_models() if "p3d" in name]
BASELINES = ["mc3_18", "r2plus1d_18", "r3d_18"]
TINY = {"width_multiplier": 0.125, "stem_temporal_kernel": 1, "stem_temporal_stride": 1}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _tiny(name: str, **kwargs: object) -> nn.Module:
    return models.get_model(name, num_classes=5, **{**TINY, **kwargs})


@pytest.mark.parametrize(
    ("kernel", "stride", "frames", "expected_frames"),
    [
        (4, 4, 16, 4),
        (4, 4, 8, 2),
        (1, 1, 5, 5),
        (3, 1, 8, 8),
        (5, 2, 16, 8),
        (3, 2, 7, 4),
    ],
)
def test_stem_shape(kernel: int, stride: int, frames: int, expected_frames: int) -> None:
    stem = models.Stem(3, 8, temporal_kernel=kernel, temporal_stride=stride)
    out = stem(torch.randn(2, 3, frames, 32, 24))
    assert out.shape == (2, 8, expected_frames, 8, 6)


@pytest.mark.parametrize("unit_type", [models.P3DUnitA, models.P3DUnitB, models.P3DUnitC])
@pytest.mark.parametrize(("spatial_stride", "temporal_stride"), STRIDES)
def test_p3d_unit_shape(
    unit_type: type[nn.Module], spatial_stride: int, temporal_stride: int
) -> None:
    unit = unit_type(4, 6, spatial_stride=spatial_stride, temporal_stride=temporal_stride)
    out = unit(torch.randn(2, 4, 4, 8, 8))
    assert out.shape == (2, 6, 4 // temporal_stride, 8 // spatial_stride, 8 // spatial_stride)
    assert (out >= 0).all()


@pytest.mark.parametrize(
    ("unit_type", "spatial_kernel_size", "temporal_in"),
    [
        (models.P3DUnitA, (1, 3, 3), 6),
        (models.P3DUnitB, (1, 3, 3), 4),
        (models.P3DUnitC, (1, 3, 3), 6),
    ],
)
def test_p3d_unit_factorises_the_3d_conv(
    unit_type: type[nn.Module], spatial_kernel_size: tuple[int, ...], temporal_in: int
) -> None:
    unit = unit_type(4, 6)
    assert unit.spatial.kernel_size == spatial_kernel_size
    assert unit.temporal.kernel_size == (3, 1, 1)
    assert unit.temporal.in_channels == temporal_in


def test_p3d_units_mix_time() -> None:
    # A frame-local change must reach the neighbouring frames through the temporal conv.
    for kind in ("A", "B", "C"):
        unit = models.make_p3d_unit(kind, 2, 2).eval()
        x = torch.randn(1, 2, 3, 4, 4)
        y = x.clone()
        y[:, :, 0] += 1.0
        changed = (unit(x) - unit(y)).abs().amax(dim=(0, 1, 3, 4))
        assert changed[1] > 0, kind


@pytest.mark.parametrize("block_type", [models.P3DBasicBlock, models.P3DBottleneck])
@pytest.mark.parametrize("kind", ["A", "B", "C"])
@pytest.mark.parametrize(("spatial_stride", "temporal_stride"), STRIDES)
@pytest.mark.parametrize("context", [False, True])
def test_block_shape(
    block_type: type[nn.Module],
    kind: str,
    spatial_stride: int,
    temporal_stride: int,
    context: bool,
) -> None:
    mid = 4
    out_channels = mid * block_type.expansion
    block = block_type(
        8,
        mid,
        out_channels,
        kind=kind,
        spatial_stride=spatial_stride,
        temporal_stride=temporal_stride,
        context=context,
    )
    out = block(torch.randn(2, 8, 4, 8, 8))
    assert out.shape == (
        2,
        out_channels,
        4 // temporal_stride,
        8 // spatial_stride,
        8 // spatial_stride,
    )
    assert isinstance(block.context, models.GlobalContext) == context


@pytest.mark.parametrize("block_type", [models.P3DBasicBlock, models.P3DBottleneck])
def test_block_keeps_identity_shortcut_when_shapes_match(block_type: type[nn.Module]) -> None:
    block = block_type(16, 16 // block_type.expansion, 16)
    assert isinstance(block.downsample, nn.Identity)


@pytest.mark.parametrize("channels", [1, 8, 64])
def test_global_context_is_identity_at_init(channels: int) -> None:
    context = models.GlobalContext(channels)
    x = torch.randn(2, channels, 3, 4, 5)
    assert torch.equal(context(x), x)
    assert context.fc1.out_features == max(1, channels // 16)


def test_global_context_adds_one_vector_per_clip() -> None:
    context = models.GlobalContext(32)
    nn.init.normal_(context.fc2.weight)
    x = torch.randn(2, 32, 3, 4, 5)
    delta = context(x) - x
    assert delta.abs().amax() > 0
    # Broadcast: the added residual is the same at every (t, h, w) of a clip.
    torch.testing.assert_close(delta, delta[:, :, :1, :1, :1].expand_as(delta))


def test_classifier_head_shape() -> None:
    head = models.ClassifierHead(nn.Conv3d(8, 16, 1, stride=(1, 2, 2)), 16, 7, dropout=0.5)
    assert head(torch.randn(3, 8, 2, 4, 4)).shape == (3, 7)


@pytest.mark.parametrize(
    ("frames", "pool", "spatial_frames"),
    [
        (8, 4, 2),
        (4, 4, 1),
        (2, 4, 1),
        (1, 4, 1),
        (6, 4, 2),
        (8, 2, 4),
    ],
)
def test_dual_head_shapes(frames: int, pool: int, spatial_frames: int) -> None:
    seen: list[torch.Size] = []
    spatial_stage = nn.Conv3d(8, 16, 1)
    spatial_stage.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    head = models.DualHead(
        models.ClassifierHead(nn.Conv3d(8, 16, 1, stride=(1, 2, 2)), 16, 7),
        models.ClassifierHead(spatial_stage, 16, 7),
        temporal_pool=pool,
    )
    x = torch.randn(2, 8, frames, 4, 4)
    output = head.train()(x)
    assert isinstance(output, models.DualHeadOutput)
    assert output.temporal.shape == output.spatial.shape == (2, 7)
    assert seen[-1] == (2, 16, spatial_frames, 4, 4)
    logits = head.eval()(x)
    torch.testing.assert_close(logits, (output.temporal + output.spatial) / 2)


def test_dg_p3d_head_resolutions_match_the_paper() -> None:
    # Figure 3: a 16 x 224 x 224 clip gives 4 x 7 x 7 to head 1 and 1 x 14 x 14 to head 2.
    model = models.dg_p3d_resnet18(num_classes=3, width_multiplier=0.125)
    assert isinstance(model.head, models.DualHead)
    seen = {}
    for name in ("temporal", "spatial"):
        stage = getattr(model.head, name).stage
        stage.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.shape))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 16, 224, 224))
    assert seen["temporal"][2:] == (4, 7, 7)
    assert seen["spatial"][2:] == (1, 14, 14)


@pytest.mark.parametrize(
    ("name", "layers"),
    [
        ("p3d_resnet18", [2, 2, 2, 2]),
        ("g_p3d_resnet50", [3, 4, 6, 3]),
        ("dg_p3d_resnet101", [3, 4, 23, 3]),
    ],
)
def test_blocks_cycle_a_b_c_by_global_index(name: str, layers: list[int]) -> None:
    model = _tiny(name)
    assert isinstance(model, models.P3DResNet)
    heads = model.head.children() if isinstance(model.head, models.DualHead) else [model.head]
    stage4 = [[type(b.p3d) for b in head.stage] for head in heads]
    blocks = [*model.layer1, *model.layer2, *model.layer3]
    kinds = [type(b.p3d) for b in blocks] + stage4[0]
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == layers[:3]
    cycle = (models.P3DUnitA, models.P3DUnitB, models.P3DUnitC)
    assert kinds == [cycle[i % 3] for i in range(sum(layers))]
    assert all(s == stage4[0] for s in stage4)
    with_context = [isinstance(b.context, models.GlobalContext) for b in blocks]
    assert all(with_context) if name.startswith(("g_", "dg_")) else not any(with_context)


@pytest.mark.parametrize("name", P3D_BUILDERS)
def test_every_p3d_builder_maps_a_clip_to_logits_in_eval_mode(name: str) -> None:
    model = _tiny(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 4, 32, 32))
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_maps_a_clip_to_logits_in_eval_mode(name: str) -> None:
    model = models.get_model(name, num_classes=5, dropout=0.5).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 4, 16, 16))
    assert logits.shape == (2, 5)


def test_reference_stem_divides_frames_by_four() -> None:
    model = models.p3d_resnet50(num_classes=3, width_multiplier=0.125)
    assert model.features(torch.randn(1, 3, 16, 64, 64)).shape == (1, 128, 4, 4, 4)


def test_stage_temporal_strides() -> None:
    model = _tiny("p3d_resnet18", stage_temporal_strides=(1, 2, 2, 1))
    assert model.features(torch.randn(1, 3, 8, 32, 32)).shape[2] == 2


def test_train_mode_outputs() -> None:
    x = torch.randn(2, 3, 4, 32, 32)
    single = _tiny("g_p3d_resnet18").train()(x)
    dual = _tiny("dg_p3d_resnet18").train()(x)
    assert isinstance(single, torch.Tensor) and single.shape == (2, 5)
    assert isinstance(dual, models.DualHeadOutput)
    assert dual.temporal.shape == dual.spatial.shape == (2, 5)


def test_dual_head_eval_logits_are_the_mean_of_both_heads() -> None:
    model = _tiny("dg_p3d_resnet18").eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        heads = model.forward_heads(x)
        torch.testing.assert_close(model(x), (heads.temporal + heads.spatial) / 2)
    assert not torch.allclose(heads.temporal, heads.spatial)


def test_forward_heads_needs_a_dual_head() -> None:
    with pytest.raises(TypeError, match="dual-head"):
        _tiny("p3d_resnet18").forward_heads(torch.randn(1, 3, 4, 32, 32))


def test_tiny_dg_p3d_forward_backward() -> None:
    model = models.dg_p3d_resnet18(
        num_classes=4, width_multiplier=0.25, stem_temporal_kernel=3, stem_temporal_stride=1
    ).train()
    clips, target = torch.randn(2, 3, 8, 32, 32), torch.tensor([1, 3])
    output = model(clips)
    loss = models.classification_loss(output, target)
    assert math.isfinite(loss.item())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    for name in (
        "head.temporal.fc.weight",
        "head.spatial.fc.weight",
        "layer1.0.p3d.temporal.weight",
    ):
        assert model.get_parameter(name).grad.abs().sum() > 0


def test_loss_and_prediction_helpers() -> None:
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    target = torch.tensor([0, 1, 3])
    dual = models.DualHeadOutput(temporal=a, spatial=b)
    expected = F.cross_entropy(a, target) + F.cross_entropy(b, target)
    torch.testing.assert_close(models.classification_loss(dual, target), expected)
    torch.testing.assert_close(models.classification_loss(a, target), F.cross_entropy(a, target))
    torch.testing.assert_close(models.predict_logits(dual), (a + b) / 2)
    assert models.predict_logits(a) is a


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "`num_classes` must be a positive int, but got num_classes=0."),
        ({"num_classes": True}, "`num_classes` must be a positive int"),
        ({"width_multiplier": 0.0}, "`width_multiplier` must be a positive finite float"),
        ({"width_multiplier": float("nan")}, "`width_multiplier` must be a positive finite float"),
        ({"dropout": 1.0}, "`dropout` must be a float in [0, 1), but got dropout=1.0."),
        ({"stem_temporal_stride": 0}, "`stem_temporal_stride` must be a positive int"),
        ({"stage_temporal_strides": (1, 2)}, "`stage_temporal_strides` must be a sequence of 4"),
        ({"dual_head_temporal_pool": -1}, "`dual_head_temporal_pool` must be a positive int"),
    ],
)
def test_builder_arguments_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        models.dg_p3d_resnet18(**{"num_classes": 3, **TINY, **kwargs})
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: models.make_p3d_unit("D", 2, 2), "`kind` must be one of ['A', 'B', 'C']"),
        (lambda: models.P3DUnitA(2, 2, spatial_stride=0), "`spatial_stride` must be a positive"),
        (lambda: models.GlobalContext(0), "`channels` must be a positive int"),
        (lambda: models.r3d_18(num_classes=-1), "`num_classes` must be a positive int"),
    ],
)
def test_block_arguments_are_validated(call: object, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        call()
    assert message in str(excinfo.value)


@pytest.mark.parametrize("frames", [1, 2, 4, 8])
def test_c3d_small_keeps_every_frame_count_and_scales_its_width(frames: int) -> None:
    model = models.get_model("c3d_small", num_classes=3, width_multiplier=0.5).eval()
    assert model(torch.randn(2, 3, frames, 24, 24)).shape == (2, 3)
    narrow = models.count_parameters(models.c3d_small(num_classes=3, width_multiplier=0.25))
    assert narrow < models.count_parameters(model) / 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"width_multiplier": 0}, "width_multiplier"), ({"dropout": 1.0}, "dropout")],
)
def test_c3d_small_validates_its_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        models.c3d_small(num_classes=3, **kwargs)
