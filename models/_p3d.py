"""P3D, G-P3D and DG-P3D ResNets (Qiu et al., ICML 2021, section 4) and their builders.

Every network maps a clip (B, 3, T, H, W) to logits (B, num_classes) in eval mode. A dual-head
network (DG-P3D) returns a :class:`DualHeadOutput` in train mode; see :mod:`._outputs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._blocks import P3D_KINDS
from ._blocks import BlockFactory
from ._blocks import P3DBasicBlock
from ._blocks import P3DBottleneck
from ._blocks import Stem
from ._heads import ClassifierHead
from ._heads import DualHead
from ._outputs import DualHeadOutput
from ._outputs import ModelOutput
from ._validation import check_int_tuple
from ._validation import check_positive_float
from ._validation import check_positive_int
from ._validation import check_probability

_STEM_WIDTH = 64
_STAGE_WIDTHS = (64, 128, 256, 512)
_STAGE_SPATIAL_STRIDES = (1, 2, 2, 2)


def _scaled(channels: int, width_multiplier: float) -> int:
    return max(1, round(channels * width_multiplier))


class P3DResNet(nn.Module):
    """Pseudo-3D ResNet, optionally with global context (G-P3D) and a dual head (DG-P3D).

    ``stem -> layer1 -> layer2 -> layer3 -> head``; the head holds the last stage (layer4):
    a :class:`ClassifierHead`, or with ``dual_head`` a :class:`DualHead` whose second head owns a
    copy of the last stage with spatial stride 1 and reads layer3's output max-pooled over time.
    Residual block i, counted over the whole network from 0, holds a P3D unit of kind A, B, C for
    i mod 3 = 0, 1, 2; the second head's copy repeats the kinds of the last stage.

    Input (B, ``in_channels``, T, H, W). Output logits (B, ``num_classes``); with ``dual_head``
    in train mode a :class:`DualHeadOutput` (see :func:`classification_loss`). With the
    reference stem a 16 x 224 x 224 clip gives 4 x 7 x 7 features to head 1 and 1 x 14 x 14 to
    head 2.

    Args:
        block: Residual block type, :class:`P3DBasicBlock` or :class:`P3DBottleneck`.
        layers: Number of blocks in each of the four stages.
        num_classes: Number of classes.
        width_multiplier: Scales every channel count (1.0 = ResNet widths, 64 to 2048).
        context: Add :class:`GlobalContext` to every residual block.
        dual_head: Use the dual head instead of a single one.
        stem_temporal_kernel: Temporal size of the stem's conv kernel (4 in the reference).
        stem_temporal_stride: Temporal stride of the stem (4 in the reference; 1 for short
            clips).
        stage_temporal_strides: Temporal stride of each stage's first block.
        dual_head_temporal_pool: Temporal max-pool window and stride before head 2.
        dropout: Dropout probability before each FC.
        in_channels: Channels of the input clip.
    """

    def __init__(
        self,
        block: BlockFactory,
        layers: Sequence[int],
        *,
        num_classes: int,
        width_multiplier: float = 1.0,
        context: bool = False,
        dual_head: bool = False,
        stem_temporal_kernel: int = 4,
        stem_temporal_stride: int = 4,
        stage_temporal_strides: Sequence[int] = (1, 1, 1, 1),
        dual_head_temporal_pool: int = 4,
        dropout: float = 0.5,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        layers = check_int_tuple("layers", layers, 4)
        check_positive_int("num_classes", num_classes)
        width_multiplier = check_positive_float("width_multiplier", width_multiplier)
        temporal_strides = check_int_tuple("stage_temporal_strides", stage_temporal_strides, 4)
        check_probability("dropout", dropout)
        check_positive_int("stem_temporal_kernel", stem_temporal_kernel)
        check_positive_int("stem_temporal_stride", stem_temporal_stride)
        check_positive_int("dual_head_temporal_pool", dual_head_temporal_pool)
        self.num_classes = num_classes
        self.dual_head = dual_head

        stem_width = _scaled(_STEM_WIDTH, width_multiplier)
        self.stem = Stem(
            in_channels,
            stem_width,
            temporal_kernel=stem_temporal_kernel,
            temporal_stride=stem_temporal_stride,
        )

        def stage_width(index: int) -> int:
            return _scaled(_STAGE_WIDTHS[index], width_multiplier) * block.expansion

        def make_stage(index: int, in_width: int, spatial_stride: int) -> nn.Sequential:
            mid = _scaled(_STAGE_WIDTHS[index], width_multiplier)
            out = stage_width(index)
            first_block = sum(layers[:index])
            return nn.Sequential(
                *(
                    block(
                        in_width if i == 0 else out,
                        mid,
                        out,
                        kind=P3D_KINDS[(first_block + i) % len(P3D_KINDS)],
                        spatial_stride=spatial_stride if i == 0 else 1,
                        temporal_stride=temporal_strides[index] if i == 0 else 1,
                        context=context,
                    )
                    for i in range(layers[index])
                )
            )

        self.layer1 = make_stage(0, stem_width, _STAGE_SPATIAL_STRIDES[0])
        self.layer2 = make_stage(1, stage_width(0), _STAGE_SPATIAL_STRIDES[1])
        self.layer3 = make_stage(2, stage_width(1), _STAGE_SPATIAL_STRIDES[2])

        def make_head(spatial_stride: int) -> ClassifierHead:
            stage = make_stage(3, stage_width(2), spatial_stride)
            return ClassifierHead(stage, stage_width(3), num_classes, dropout=dropout)

        self.head: ClassifierHead | DualHead
        if dual_head:
            self.head = DualHead(
                make_head(_STAGE_SPATIAL_STRIDES[3]),
                make_head(1),
                temporal_pool=dual_head_temporal_pool,
            )
        else:
            self.head = make_head(_STAGE_SPATIAL_STRIDES[3])
        self._init_weights()

    def _init_weights(self) -> None:
        # Linear layers keep PyTorch's defaults: that leaves the zero-initialised last FC of
        # every global-context module alone.
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The third stage's output (B, C, T', H', W'), which the head(s) read."""
        return self.layer3(self.layer2(self.layer1(self.stem(x))))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        output: ModelOutput = self.head(self.features(x))
        return output

    def forward_heads(self, x: torch.Tensor) -> DualHeadOutput:
        """Both heads' logits whatever the mode; only for dual-head networks."""
        if not isinstance(self.head, DualHead):
            raise TypeError("`forward_heads` needs a dual-head network (dual_head=True).")
        return self.head.forward_heads(self.features(x))


_DEPTHS: dict[int, tuple[BlockFactory, tuple[int, int, int, int]]] = {
    18: (P3DBasicBlock, (2, 2, 2, 2)),
    50: (P3DBottleneck, (3, 4, 6, 3)),
    101: (P3DBottleneck, (3, 4, 23, 3)),
}


def _build(
    depth: int, *, num_classes: int, context: bool, dual_head: bool, **kwargs: Any
) -> P3DResNet:
    block, layers = _DEPTHS[depth]
    return P3DResNet(
        block, layers, num_classes=num_classes, context=context, dual_head=dual_head, **kwargs
    )


def p3d_resnet18(*, num_classes: int, **kwargs: Any) -> P3DResNet:
    """P3D ResNet-18: basic blocks [2, 2, 2, 2]; (B, 3, T, H, W) -> (B, num_classes).

    Args:
        num_classes: Number of classes.
        **kwargs: Passed to :class:`P3DResNet` (``width_multiplier``, ``stem_temporal_kernel``,
            ``stem_temporal_stride``, ``dropout``, ...).

    Example:
        >>> import torch
        >>> model = p3d_resnet18(num_classes=5, width_multiplier=0.125, stem_temporal_stride=1)
        >>> model.eval()(torch.randn(1, 3, 4, 32, 32)).shape
        torch.Size([1, 5])
    """
    return _build(18, num_classes=num_classes, context=False, dual_head=False, **kwargs)


def p3d_resnet50(*, num_classes: int, **kwargs: Any) -> P3DResNet:
    """P3D ResNet-50: bottleneck blocks [3, 4, 6, 3]; (B, 3, T, H, W) -> (B, num_classes).

    Args:
        num_classes: Number of classes.
        **kwargs: Passed to :class:`P3DResNet`.

    Example:
        >>> import torch
        >>> model = p3d_resnet50(num_classes=5, width_multiplier=0.125, stem_temporal_stride=1)
        >>> model.eval()(torch.randn(1, 3, 4, 32, 32)).shape
        torch.Size([1, 5])
    """
    return _build(50, num_classes=num_classes, context=False, dual_head=False, **kwargs)


def p3d_resnet101(*, num_classes: int, **kwargs: Any) -> P3DResNet:
    """P3D ResNet-101: bottleneck blocks [3, 4, 23, 3]; (B, 3, T, H, W) -> (B, num_classes).

    Args:
        num_classes: Number of classes.
        **kwargs: Passed to :class:`P3DResNet`.

    Example:
        >>> model = p3d_resnet101(num_classes=5, width_multiplier=0.125)
        >>> [len(stage) for stage in (model.layer1, model.layer2, model.layer3)]
        [3, 4, 23]
    """
    return _build(101, num_classes=num_classes, context=False, dual_head=False, **kwargs)


def g_p3d_resnet18(*, num_classes: int, **kwargs: Any) -> P3DResNet:
    """G-P3D ResNet-18: P3D-18 with global context in every block; (B, 3, T, H, W) -> logits.

    Args:
        num_classes: Number of classes.
        **kwargs: Passed to :class:`P3DResNet`.

    Example:
        >>> import torch
        >>> model = g_p3d_resnet18(num_classes=5, width_multiplier=0.125, stem_temporal_stride=1)
        >>> model.eval()(torch.randn(1, 3, 4, 32, 32)).shape
        torch.Size([1, 5])
    """
    return _build(18, num_classes=num_classes, context=True, dual_head=False, **kwargs)


def g_p3d_resnet50(*, num_classes: int, **kwargs: Any) -> P3DResNet:
    """G-P3D ResNet-50: P3D-50 with global context in every block; (B, 3, T, H, W) -> logits.

    Args:
        num_classes: Number of classes.
        **kwargs: Passed to :class:`P3DResNet`.

    Example:
        >>> import torch
        >>> model = g_p3d_resnet50(num_classes=5, width_multiplier=0.125, stem_temporal_stride=1)
        >>> model.eval()(torch.randn(1, 3, 4, 32, 32)).shape
        torch.Size([1, 5])
    """
    return _build(50, num_classes=num_classes, context=True, dual_head=False, **kwargs)


def g_p3d_resnet101(*, num_classes: int, **kwargs: Any) -> P3DResNet:
    """G-P3D ResNet-101: P3D-101 with global context in every block; (B, 3, T, H, W) -> logits.

    Args:
        num_classes: Number of classes.
        **kwargs: Passed to :class:`P3DResNet`.

    Example:
        >>> model = g_p3d_resnet101(num_classes=5, width_multiplier=0.125)
        >>> [len(stage) for stage in (model.layer1, model.layer2, model.layer3)]
        [3, 4, 23]
    """
    return _build(101, num_classes=num_classes, context=True, dual_head=False, **kwargs)


def dg_p3d_resnet18(*, num_classes: int, **kwargs: Any) -> P3DResNet:
    """DG-P3D ResNet-18: G-P3D-18 with the dual head; (B, 3, T, H, W) -> logits in eval mode.

    In train mode the network returns a :class:`DualHeadOutput`.

    Args:
        num_classes: Number of classes.
        **kwargs: Passed to :class:`P3DResNet`.

    Example:
        >>> import torch
        >>> model = dg_p3d_resnet18(num_classes=5, width_multiplier=0.125, stem_temporal_stride=1)
        >>> model.eval()(torch.randn(1, 3, 4, 32, 32)).shape
        torch.Size([1, 5])
    """
    return _build(18, num_classes=num_classes, context=True, dual_head=True, **kwargs)


def dg_p3d_resnet50(*, num_classes: int, **kwargs: Any) -> P3DResNet:
    """DG-P3D ResNet-50, the paper's network; (B, 3, T, H, W) -> logits in eval mode.

    In train mode the network returns a :class:`DualHeadOutput`.

    Args:
        num_classes: Number of classes.
        **kwargs: Passed to :class:`P3DResNet`.

    Example:
        >>> import torch
        >>> model = dg_p3d_resnet50(num_classes=5, width_multiplier=0.125, stem_temporal_stride=1)
        >>> model.eval()(torch.randn(1, 3, 4, 32, 32)).shape
        torch.Size([1, 5])
    """
    return _build(50, num_classes=num_classes, context=True, dual_head=True, **kwargs)


def dg_p3d_resnet101(*, num_classes: int, **kwargs: Any) -> P3DResNet:
    """DG-P3D ResNet-101; (B, 3, T, H, W) -> logits in eval mode.

    In train mode the network returns a :class:`DualHeadOutput`.

    Args:
        num_classes: Number of classes.
        **kwargs: Passed to :class:`P3DResNet`.

    Example:
        >>> model = dg_p3d_resnet101(num_classes=5, width_multiplier=0.125)
        >>> [len(stage) for stage in (model.layer1, model.layer2, model.layer3)]
        [3, 4, 23]
    """
    return _build(101, num_classes=num_classes, context=True, dual_head=True, **kwargs)
