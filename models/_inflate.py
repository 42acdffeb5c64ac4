"""Inflate 2D ResNet weights (a torchvision ``resnet*().state_dict()``) into a P3D ResNet.

The recipe keeps the inflated network equal to the 2D one applied frame by frame on a static
clip (all frames alike), so ImageNet training carries over:

- Spatial 1 x k x k convs take the 2D k x k kernels; 1 x 1 convs and BatchNorm are copied.
- The stem's 2D kernel is repeated over its temporal size and divided by that size.
- Temporal 3 x 1 x 1 convs start as the identity (centre tap = identity matrix, other taps
  zero) with a fresh BatchNorm; in P3D-B and P3D-C units, where the temporal branch is added to
  the spatial one, that BatchNorm's scale starts at zero so the branch starts silent.
- Global context and the classifier FCs keep their initialisation (the context is zero at
  initialisation, the 2D 1000-class FC is not used).

Both heads of a DG-P3D network take the 2D ``layer4``.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses

import torch
from torch import nn

from ._blocks import P3DBasicBlock
from ._blocks import P3DBottleneck
from ._blocks import _P3DUnit
from ._heads import DualHead
from ._p3d import P3DResNet

_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclasses.dataclass(frozen=True)
class InflationReport:
    """What :func:`inflate_from_2d` did, by state-dict key.

    Attributes:
        mapped: Each 3D key taken from the 2D state dict, mapped to the 2D key it came from.
        initialised: 3D keys set by the recipe (temporal convs and their BatchNorm).
        unmapped_3d: 3D keys left as the network was built (global context, classifier FCs).
        unmapped_2d: 2D keys not used (the 2D classifier ``fc``).
    """

    mapped: dict[str, str]
    initialised: tuple[str, ...]
    unmapped_3d: tuple[str, ...]
    unmapped_2d: tuple[str, ...]


def inflate_from_2d(
    model: P3DResNet, state_dict_2d: Mapping[str, torch.Tensor]
) -> InflationReport:
    """Initialise ``model`` in place from a 2D torchvision ResNet's state dict.

    Use ``resnet18`` weights for depth 18 and ``resnet50`` / ``resnet101`` for depth 50 / 101,
    with ``width_multiplier=1.0`` and RGB input. Nothing is changed when an error is raised.

    Args:
        model: A network from one of the ``*p3d_resnet*`` builders.
        state_dict_2d: e.g. ``torchvision.models.resnet50(weights=...).state_dict()``.

    Returns:
        Which keys were mapped, initialised by the recipe, or left unmapped.

    Raises:
        TypeError: ``model`` is not a :class:`P3DResNet`.
        ValueError: A key is missing, a shape does not match, or the 2D network is deeper.
    """
    if not isinstance(model, P3DResNet):
        raise TypeError(
            f"`model` must be a P3DResNet, but got an instance of {type(model).__name__}."
        )
    bottleneck_3d = isinstance(model.layer1[0], P3DBottleneck)
    bottleneck_2d = "layer1.0.conv3.weight" in state_dict_2d
    if bottleneck_3d != bottleneck_2d:
        kinds = {True: "bottleneck", False: "basic"}
        raise ValueError(
            f"`state_dict_2d` comes from a ResNet with {kinds[bottleneck_2d]} blocks but the "
            f"network has {kinds[bottleneck_3d]} blocks: use torchvision's resnet18 weights for "
            "depth 18 and resnet50 / resnet101 weights for depth 50 / 101."
        )
    plan = _InflationPlan(model, state_dict_2d)
    plan.add_conv("stem.conv", "conv1")
    plan.add_batchnorm("stem.bn", "bn1")
    stages: list[tuple[nn.Module, str, str]] = [
        (model.layer1, "layer1", "layer1"),
        (model.layer2, "layer2", "layer2"),
        (model.layer3, "layer3", "layer3"),
    ]
    if isinstance(model.head, DualHead):
        stages.append((model.head.temporal.stage, "head.temporal.stage", "layer4"))
        stages.append((model.head.spatial.stage, "head.spatial.stage", "layer4"))
    else:
        stages.append((model.head.stage, "head.stage", "layer4"))
    for stage, prefix_3d, prefix_2d in stages:
        for index, block in enumerate(stage.children()):
            plan.add_block(block, f"{prefix_3d}.{index}", f"{prefix_2d}.{index}")

    leftover = [key for key in state_dict_2d if key not in plan.used_2d]
    deeper = [key for key in leftover if not key.startswith("fc.")]
    if deeper:
        raise ValueError(
            f"`state_dict_2d` has keys this network has no place for, e.g. {deeper[0]!r}: "
            "it comes from a deeper ResNet than the network's depth."
        )
    model.load_state_dict(plan.values, strict=False)
    return InflationReport(
        mapped=plan.mapped,
        initialised=tuple(plan.initialised),
        unmapped_3d=tuple(key for key in plan.target if key not in plan.values),
        unmapped_2d=tuple(leftover),
    )


class _InflationPlan:
    """Collects every new value first, so a bad state dict fails before the model changes."""

    def __init__(self, model: P3DResNet, state_dict_2d: Mapping[str, torch.Tensor]) -> None:
        self.target = model.state_dict()
        self.source = state_dict_2d
        self.values: dict[str, torch.Tensor] = {}
        self.mapped: dict[str, str] = {}
        self.initialised: list[str] = []
        self.used_2d: set[str] = set()

    def _get_2d(self, key_2d: str, key_3d: str) -> torch.Tensor:
        if key_2d not in self.source:
            raise ValueError(
                f"`state_dict_2d` has no key {key_2d!r} to inflate into {key_3d!r}: is it a "
                "torchvision ResNet's state dict of at least the network's depth?"
            )
        self.used_2d.add(key_2d)
        return self.source[key_2d]

    def _set(self, key_3d: str, value: torch.Tensor, key_2d: str) -> None:
        expected = self.target[key_3d].shape
        if value.shape != expected:
            raise ValueError(
                f"cannot inflate {key_2d!r} into {key_3d!r}: the 2D value gives shape "
                f"{tuple(value.shape)} but the network expects {tuple(expected)}; build the "
                "network with width_multiplier=1.0 and 3 input channels."
            )
        self.values[key_3d] = value
        self.mapped[key_3d] = key_2d

    def add_conv(self, prefix_3d: str, prefix_2d: str) -> None:
        key_3d, key_2d = f"{prefix_3d}.weight", f"{prefix_2d}.weight"
        weight_2d = self._get_2d(key_2d, key_3d)
        # A kernel averaged over time answers a static clip as the 2D kernel answers a frame.
        time = self.target[key_3d].shape[2]
        self._set(key_3d, weight_2d.unsqueeze(2).repeat(1, 1, time, 1, 1) / time, key_2d)

    def add_batchnorm(self, prefix_3d: str, prefix_2d: str) -> None:
        for name in _BN_KEYS:
            key_3d, key_2d = f"{prefix_3d}.{name}", f"{prefix_2d}.{name}"
            self._set(key_3d, self._get_2d(key_2d, key_3d), key_2d)

    def add_block(self, block: nn.Module, prefix_3d: str, prefix_2d: str) -> None:
        if isinstance(block, P3DBottleneck):
            pairs = [
                ("conv1", "conv1", "bn1", "bn1"),
                ("p3d.spatial", "conv2", "p3d.bn_spatial", "bn2"),
                ("conv3", "conv3", "bn3", "bn3"),
            ]
        elif isinstance(block, P3DBasicBlock):
            pairs = [
                ("p3d.spatial", "conv1", "p3d.bn_spatial", "bn1"),
                ("conv2", "conv2", "bn2", "bn2"),
            ]
        else:
            raise TypeError(f"cannot inflate a block of type {type(block).__name__}.")
        if isinstance(block.downsample, nn.Sequential):
            pairs.append(("downsample.0", "downsample.0", "downsample.1", "downsample.1"))
        for conv_3d, conv_2d, bn_3d, bn_2d in pairs:
            self.add_conv(f"{prefix_3d}.{conv_3d}", f"{prefix_2d}.{conv_2d}")
            self.add_batchnorm(f"{prefix_3d}.{bn_3d}", f"{prefix_2d}.{bn_2d}")
        self._init_temporal(block.p3d, f"{prefix_3d}.p3d")

    def _init_temporal(self, unit: _P3DUnit, prefix: str) -> None:
        weight = torch.zeros_like(unit.temporal.weight)
        out_channels, in_channels = weight.shape[:2]
        weight[:, :, 1, 0, 0] = torch.eye(out_channels, in_channels)
        scale = 0.0 if unit.temporal_is_additive else 1.0
        bn = unit.bn_temporal
        values = {
            "temporal.weight": weight,
            "bn_temporal.weight": torch.full_like(bn.weight, scale),
            "bn_temporal.bias": torch.zeros_like(bn.bias),
            "bn_temporal.running_mean": torch.zeros_like(bn.weight),
            "bn_temporal.running_var": torch.ones_like(bn.weight),
            "bn_temporal.num_batches_tracked": torch.zeros((), dtype=torch.long),
        }
        for name, value in values.items():
            self.values[f"{prefix}.{name}"] = value.detach()
            self.initialised.append(f"{prefix}.{name}")
