"""A small plain 3D CNN: three 3 x 3 x 3 conv layers, for quick CPU runs and sanity checks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._validation import check_positive_float
from ._validation import check_positive_int
from ._validation import check_probability

_WIDTHS = (32, 64, 128)


class PlainC3D(nn.Module):
    """Three ``conv3d(3 x 3 x 3) -> BatchNorm -> ReLU`` layers, spatial max-pooling after the
    first two, global average pooling and one FC.

    No temporal pooling before the end, so every layer keeps the clip's frame count and
    a motion only visible between adjacent frames survives. It learns small synthetic sets
    in a few CPU epochs where a deep network is still at chance, which is why the demo uses it;
    it is not one of the paper's networks.

    Args:
        num_classes: Number of classes.
        width_multiplier: Scales the channel counts (32, 64, 128 at 1.0).
        dropout: Dropout probability before the FC.
        in_channels: Channels of the input clip.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        width_multiplier: float = 1.0,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_float("width_multiplier", width_multiplier)
        check_probability("dropout", dropout)
        check_positive_int("in_channels", in_channels)
        self.num_classes = num_classes
        widths = [max(1, round(w * width_multiplier)) for w in _WIDTHS]
        layers: list[nn.Module] = []
        previous = in_channels
        for index, width in enumerate(widths):
            layers += [
                nn.Conv3d(previous, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
            ]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool3d(kernel_size=(1, 2, 2)))
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"Expected a clip batch (B, C, T, H, W), but got {tuple(x.shape)}.")
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))


def c3d_small(*, num_classes: int, **kwargs: Any) -> nn.Module:
    """A :class:`PlainC3D`: (B, 3, T, H, W) -> logits (B, num_classes).

    Example:
        >>> import torch
        >>> model = c3d_small(num_classes=3, width_multiplier=0.5)
        >>> model.eval()(torch.randn(2, 3, 4, 32, 32)).shape
        torch.Size([2, 3])
    """
    return PlainC3D(num_classes=num_classes, **kwargs)
