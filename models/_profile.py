"""Model size and cost: parameter count and FLOPs per clip, as PyTorch's own counter sees them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ._validation import check_int_tuple


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements, optionally only those with ``requires_grad``.

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops_per_clip(model: nn.Module, clip_shape: Sequence[int] = (3, 16, 112, 112)) -> float:
    """GFLOPs of one eval-mode forward pass on one clip of shape (C, T, H, W).

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products,
    a multiply-add counting as 2 FLOPs (papers that report "FLOPs" from fvcore, as the
    GFLOPs x views columns of most video papers do, count multiply-adds: half this number).
    Pooling, normalisation and activations are not counted. The model's mode is restored.

    Example:
        >>> flops_per_clip(nn.Conv3d(3, 4, kernel_size=1), clip_shape=(3, 1, 10, 10))
        2.4e-06
    """
    shape = check_int_tuple("clip_shape", clip_shape, 4)
    was_training = model.training
    parameter = next(model.parameters())
    clip = torch.zeros((1, *shape), dtype=parameter.dtype, device=parameter.device)
    counter = FlopCounterMode(display=False)
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(clip)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9
