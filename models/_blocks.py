"""Building blocks of the pseudo-3D ResNets: stem, P3D units A/B/C, global context, blocks.

Every module here maps a video feature map laid out as (B, C, T, H, W) (batch, channels, time,
height, width) to another (B, C', T', H', W') map. Strides are given per axis: a
``spatial_stride`` divides H and W, a ``temporal_stride`` divides T.
"""

from __future__ import annotations

import abc
from typing import Literal
from typing import Protocol

import torch
from torch import nn

from ._validation import check_positive_int

P3DKind = Literal["A", "B", "C"]
"""The three pseudo-3D arrangements of Qiu et al. (2017): serial, parallel, serial + skip."""

P3D_KINDS: tuple[P3DKind, ...] = ("A", "B", "C")


class Stem(nn.Module):
    """Input stem: a ``temporal_kernel`` x 7 x 7 conv, BN, ReLU, then a 1 x 3 x 3 max-pool.

    The conv has stride (``temporal_stride``, 2, 2) and the pool (1, 2, 2), so a (B, 3, T, H, W)
    clip becomes (B, ``out_channels``, T / ``temporal_stride``, H / 4, W / 4) (rounded up). The
    reference DG-P3D uses a 4 x 7 x 7 conv with temporal stride 4; short clips on a CPU want
    temporal stride 1.

    Args:
        in_channels: Channels of the input (3 for RGB).
        out_channels: Channels of the output.
        temporal_kernel: Temporal size of the conv kernel.
        temporal_stride: Temporal stride of the conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        temporal_kernel: int = 4,
        temporal_stride: int = 4,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("temporal_kernel", temporal_kernel)
        check_positive_int("temporal_stride", temporal_stride)
        # Pads so that T frames give ceil(T / temporal_stride) outputs whatever the kernel size.
        temporal_padding = max(0, (temporal_kernel - temporal_stride + 1) // 2)
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=(temporal_kernel, 7, 7),
            stride=(temporal_stride, 2, 2),
            padding=(temporal_padding, 3, 3),
            bias=False,
        )
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class _P3DUnit(nn.Module, abc.ABC):
    """A 3 x 3 x 3 conv factorised into a spatial 1 x 3 x 3 and a temporal 3 x 1 x 1 conv.

    Subclasses fix how the two are wired and which conv carries which stride; all of them share
    the signature ``(in_channels, out_channels, *, spatial_stride, temporal_stride)`` and map
    (B, in_channels, T, H, W) to (B, out_channels, T / temporal_stride, H / spatial_stride,
    W / spatial_stride), ReLU applied.
    """

    temporal_is_additive: bool
    """Whether the temporal branch is added to the spatial one (B, C): a zero branch then leaves
    the unit a per-frame 2D conv, which is how 2D weights are inflated into it."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        spatial_stride: int = 1,
        temporal_stride: int = 1,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("spatial_stride", spatial_stride)
        check_positive_int("temporal_stride", temporal_stride)
        spatial_conv_stride, temporal_conv_stride = self._conv_strides(
            spatial_stride, temporal_stride
        )
        self.spatial = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=(1, 3, 3),
            stride=spatial_conv_stride,
            padding=(0, 1, 1),
            bias=False,
        )
        self.bn_spatial = nn.BatchNorm3d(out_channels)
        self.temporal = nn.Conv3d(
            self._temporal_in_channels(in_channels, out_channels),
            out_channels,
            kernel_size=(3, 1, 1),
            stride=temporal_conv_stride,
            padding=(1, 0, 0),
            bias=False,
        )
        self.bn_temporal = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    @abc.abstractmethod
    def _conv_strides(
        spatial_stride: int, temporal_stride: int
    ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(T, H, W) strides of the spatial conv and of the temporal conv."""

    @staticmethod
    @abc.abstractmethod
    def _temporal_in_channels(in_channels: int, out_channels: int) -> int:
        """Channels the temporal conv reads: the unit's input (parallel) or the spatial output."""


class P3DUnitA(_P3DUnit):
    """P3D-A: the temporal conv applied to the spatial conv's output (serial).

    ``relu(bn_t(T(relu(bn_s(S(x))))))``; S carries the spatial stride and T the temporal one.
    Layout (B, C, T, H, W), see :class:`_P3DUnit`.
    """

    temporal_is_additive = False

    @staticmethod
    def _conv_strides(
        spatial_stride: int, temporal_stride: int
    ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        return (1, spatial_stride, spatial_stride), (temporal_stride, 1, 1)

    @staticmethod
    def _temporal_in_channels(in_channels: int, out_channels: int) -> int:
        return out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn_spatial(self.spatial(x)))
        return self.relu(self.bn_temporal(self.temporal(x)))


class P3DUnitB(_P3DUnit):
    """P3D-B: the spatial and temporal convs both read the input (parallel), outputs summed.

    ``relu(bn_s(S(x)) + bn_t(T(x)))``. Both branches must land on the same grid, so both convs
    carry both strides (a kernel of size 1 along an axis just subsamples it). Layout
    (B, C, T, H, W), see :class:`_P3DUnit`.
    """

    temporal_is_additive = True

    @staticmethod
    def _conv_strides(
        spatial_stride: int, temporal_stride: int
    ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        stride = (temporal_stride, spatial_stride, spatial_stride)
        return stride, stride

    @staticmethod
    def _temporal_in_channels(in_channels: int, out_channels: int) -> int:
        return in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn_spatial(self.spatial(x)) + self.bn_temporal(self.temporal(x)))


class P3DUnitC(_P3DUnit):
    """P3D-C: the temporal conv reads the spatial output and is added to it (serial + skip).

    ``s = relu(bn_s(S(x))); relu(s + bn_t(T(s)))``. The sum needs T's input and output on the
    same grid, so S carries both strides. Layout (B, C, T, H, W), see :class:`_P3DUnit`.
    """

    temporal_is_additive = True

    @staticmethod
    def _conv_strides(
        spatial_stride: int, temporal_stride: int
    ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        return (temporal_stride, spatial_stride, spatial_stride), (1, 1, 1)

    @staticmethod
    def _temporal_in_channels(in_channels: int, out_channels: int) -> int:
        return out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.relu(self.bn_spatial(self.spatial(x)))
        return self.relu(s + self.bn_temporal(self.temporal(s)))


P3D_UNITS: dict[P3DKind, type[_P3DUnit]] = {"A": P3DUnitA, "B": P3DUnitB, "C": P3DUnitC}


def make_p3d_unit(
    kind: P3DKind,
    in_channels: int,
    out_channels: int,
    *,
    spatial_stride: int = 1,
    temporal_stride: int = 1,
) -> _P3DUnit:
    """Build the P3D unit of the given kind ("A", "B" or "C"); layout (B, C, T, H, W)."""
    if kind not in P3D_UNITS:
        raise ValueError(f"`kind` must be one of {list(P3D_UNITS)}, but got kind={kind!r}.")
    return P3D_UNITS[kind](
        in_channels,
        out_channels,
        spatial_stride=spatial_stride,
        temporal_stride=temporal_stride,
    )


class GlobalContext(nn.Module):
    """Global context: a residual computed from the clip-wide average, added at every position.

    Average pool over T, H, W -> FC C -> C / ``reduction`` -> ReLU -> FC -> C, broadcast and
    added to the input. The last FC starts at zero, so the module starts as an identity and a
    pretrained or inflated network is unchanged by inserting it. Maps (B, C, T, H, W) to the
    same shape.

    Args:
        channels: Channels C of the input.
        reduction: Bottleneck ratio of the two FCs (the hidden size is at least 1).
    """

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.fc2(self.relu(self.fc1(x.mean(dim=(2, 3, 4)))))
        return x + context[:, :, None, None, None]


def _downsample(
    in_channels: int, out_channels: int, spatial_stride: int, temporal_stride: int
) -> nn.Module:
    if in_channels == out_channels and spatial_stride == 1 and temporal_stride == 1:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=1,
            stride=(temporal_stride, spatial_stride, spatial_stride),
            bias=False,
        ),
        nn.BatchNorm3d(out_channels),
    )


class BlockFactory(Protocol):
    """The signature every residual block type shares, so a network can take either type."""

    expansion: int
    """``out_channels / mid_channels`` in the standard ResNet layout (1 basic, 4 bottleneck)."""

    def __call__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        *,
        kind: P3DKind,
        spatial_stride: int,
        temporal_stride: int,
        context: bool,
    ) -> nn.Module: ...


class P3DBottleneck(nn.Module):
    """ResNet bottleneck whose 3 x 3 conv is a P3D unit, optionally with global context.

    1 x 1 x 1 conv (``in_channels`` -> ``mid_channels``), P3D unit of ``kind`` (carries the
    strides), 1 x 1 x 1 conv (-> ``out_channels``), :class:`GlobalContext` on this residual branch
    if ``context``, plus the shortcut, ReLU. Maps (B, in_channels, T, H, W) to (B, out_channels,
    T / temporal_stride, H / spatial_stride, W / spatial_stride).

    Args:
        in_channels: Input channels.
        mid_channels: Channels inside the bottleneck.
        out_channels: Output channels.
        kind: P3D unit arrangement, "A", "B" or "C".
        spatial_stride: Stride over H and W.
        temporal_stride: Stride over T.
        context: Whether to add global context to the residual branch.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        *,
        kind: P3DKind = "A",
        spatial_stride: int = 1,
        temporal_stride: int = 1,
        context: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("mid_channels", mid_channels)
        check_positive_int("out_channels", out_channels)
        self.conv1 = nn.Conv3d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid_channels)
        self.p3d = make_p3d_unit(
            kind,
            mid_channels,
            mid_channels,
            spatial_stride=spatial_stride,
            temporal_stride=temporal_stride,
        )
        self.conv3 = nn.Conv3d(mid_channels, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.context: nn.Module = GlobalContext(out_channels) if context else nn.Identity()
        self.downsample = _downsample(in_channels, out_channels, spatial_stride, temporal_stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.relu(self.bn1(self.conv1(x)))
        residual = self.context(self.bn3(self.conv3(self.p3d(residual))))
        return self.relu(residual + self.downsample(x))


class P3DBasicBlock(nn.Module):
    """ResNet basic block whose first 3 x 3 conv is a P3D unit, optionally with global context.

    P3D unit of ``kind`` (``in_channels`` -> ``mid_channels``, carries the strides), 1 x 3 x 3 conv
    (-> ``out_channels``), :class:`GlobalContext` on this residual branch if ``context``, plus the
    shortcut, ReLU. One P3D unit per block, as in the bottleneck, keeps one temporal conv per
    residual block and lets both 2D convs of a ResNet-18 block be inflated. Maps (B, in_channels,
    T, H, W) to (B, out_channels, T / temporal_stride, H / spatial_stride, W / spatial_stride).

    Args:
        in_channels: Input channels.
        mid_channels: Channels between the two convs.
        out_channels: Output channels.
        kind: P3D unit arrangement, "A", "B" or "C".
        spatial_stride: Stride over H and W.
        temporal_stride: Stride over T.
        context: Whether to add global context to the residual branch.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        *,
        kind: P3DKind = "A",
        spatial_stride: int = 1,
        temporal_stride: int = 1,
        context: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("mid_channels", mid_channels)
        check_positive_int("out_channels", out_channels)
        self.p3d = make_p3d_unit(
            kind,
            in_channels,
            mid_channels,
            spatial_stride=spatial_stride,
            temporal_stride=temporal_stride,
        )
        self.conv2 = nn.Conv3d(
            mid_channels, out_channels, kernel_size=(1, 3, 3), padding=(0, 1, 1), bias=False
        )
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.context: nn.Module = GlobalContext(out_channels) if context else nn.Identity()
        self.downsample = _downsample(in_channels, out_channels, spatial_stride, temporal_stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.context(self.bn2(self.conv2(self.p3d(x))))
        return self.relu(residual + self.downsample(x))
