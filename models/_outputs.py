"""What a model's forward returns, and the two helpers that make every model look alike.

A single-head model returns logits (B, num_classes). A dual-head model returns a
:class:`DualHeadOutput` in train mode and the mean of its two heads' logits in eval mode, so a
trainer written with :func:`classification_loss` and :func:`predict_logits` handles both.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F


class DualHeadOutput(NamedTuple):
    """Logits of both heads of a dual-head network, each (B, num_classes).

    Attributes:
        temporal: Head 1, the last stage at full temporal resolution (e.g. 4 x 7 x 7 features).
        spatial: Head 2, the last stage on the time-max-pooled features at twice the spatial
            resolution (e.g. 1 x 14 x 14 features).
    """

    temporal: torch.Tensor
    spatial: torch.Tensor


ModelOutput = torch.Tensor | DualHeadOutput
"""Logits (B, num_classes), or both heads' logits for a dual-head model in train mode."""


def predict_logits(output: ModelOutput) -> torch.Tensor:
    """Logits (B, num_classes) to predict with: the mean of the two heads' logits if dual.

    Example:
        >>> import torch
        >>> predict_logits(DualHeadOutput(torch.zeros(1, 2), torch.ones(1, 2))).tolist()
        [[0.5, 0.5]]
    """
    if isinstance(output, DualHeadOutput):
        return (output.temporal + output.spatial) / 2
    return output


def classification_loss(output: ModelOutput, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits against class indices ``target`` (B,), averaged over B.

    A dual-head output gives the sum of the two heads' cross-entropies, as the paper trains.

    Example:
        >>> import torch
        >>> logits = torch.zeros(2, 4)
        >>> loss = classification_loss(DualHeadOutput(logits, logits), torch.tensor([0, 3]))
        >>> round(loss.item(), 4)  # 2 * log(4)
        2.7726
    """
    if isinstance(output, DualHeadOutput):
        return F.cross_entropy(output.temporal, target) + F.cross_entropy(output.spatial, target)
    return F.cross_entropy(output, target)
