"""Classifier heads: the last ResNet stage, pooling, dropout and FC, single or dual.

A head maps the third stage's features (B, C, T, H, W) to logits (B, num_classes), or, for the
dual head in train mode, to a :class:`DualHeadOutput` with both heads' logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._outputs import DualHeadOutput
from ._outputs import ModelOutput
from ._outputs import predict_logits
from ._validation import check_positive_int
from ._validation import check_probability


class ClassifierHead(nn.Module):
    """``stage``, average pool over T, H, W, dropout, FC: (B, C, T, H, W) -> (B, num_classes).

    Args:
        stage: The last ResNet stage, mapping the input to (B, in_features, T', H', W').
        in_features: Channels of the stage's output.
        num_classes: Number of classes.
        dropout: Dropout probability before the FC.
    """

    def __init__(
        self, stage: nn.Module, in_features: int, num_classes: int, *, dropout: float = 0.0
    ) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("num_classes", num_classes)
        self.stage = stage
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(check_probability("dropout", dropout))
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.stage(x)).flatten(1)))


class DualHead(nn.Module):
    """Two classifier heads on the same features; their logits are averaged in eval mode.

    The temporal head reads the features as they are. The spatial head reads them max-pooled
    over time with kernel = stride = ``temporal_pool`` (fewer when the clip has fewer frames
    left; a last partial window is kept), and its stage should keep the spatial resolution
    (spatial stride 1). Maps (B, C, T, H, W) to (B, num_classes) in eval mode and to a
    :class:`DualHeadOutput` in train mode.

    Args:
        temporal: Head 1 (:class:`ClassifierHead` with the usual last stage).
        spatial: Head 2 (:class:`ClassifierHead` with its own copy of the last stage).
        temporal_pool: Temporal max-pool window and stride before head 2.
    """

    def __init__(
        self, temporal: ClassifierHead, spatial: ClassifierHead, *, temporal_pool: int = 4
    ) -> None:
        super().__init__()
        self.temporal = temporal
        self.spatial = spatial
        self.temporal_pool = check_positive_int("temporal_pool", temporal_pool)

    def forward_heads(self, x: torch.Tensor) -> DualHeadOutput:
        """Both heads' logits, whatever the mode."""
        window = min(self.temporal_pool, x.shape[2])
        pooled = F.max_pool3d(x, kernel_size=(window, 1, 1), stride=(window, 1, 1), ceil_mode=True)
        return DualHeadOutput(temporal=self.temporal(x), spatial=self.spatial(pooled))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        output = self.forward_heads(x)
        if self.training:
            return output
        return predict_logits(output)
