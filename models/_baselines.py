"""torchvision's video ResNets as baselines, behind the same builder interface as P3D.

Each builder maps (B, 3, T, H, W) to logits (B, num_classes) and starts from random weights
(torchvision's ``weights`` argument still works where a download is possible).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ._validation import check_positive_int
from ._validation import check_probability


def _torchvision_video(name: str, *, num_classes: int, dropout: float, **kwargs: Any) -> nn.Module:
    check_positive_int("num_classes", num_classes)
    check_probability("dropout", dropout)
    # Imported here: the package's __init__ must make torchvision importable on CPU torch first.
    from torchvision.models import video

    model: nn.Module = getattr(video, name)(num_classes=num_classes, **kwargs)
    if dropout > 0:
        # torchvision's video ResNets have no dropout; P3D's heads do, so plans compare alike.
        model.fc = nn.Sequential(nn.Dropout(dropout), model.get_submodule("fc"))
    return model


def r3d_18(*, num_classes: int, dropout: float = 0.0, **kwargs: Any) -> nn.Module:
    """torchvision's R3D-18 (3 x 3 x 3 convs); (B, 3, T, H, W) -> (B, num_classes).

    Args:
        num_classes: Number of classes.
        dropout: Dropout probability before the FC (0 keeps torchvision's plain FC).
        **kwargs: Passed to ``torchvision.models.video.r3d_18``.

    Example:
        >>> import torch
        >>> r3d_18(num_classes=5).eval()(torch.randn(1, 3, 2, 16, 16)).shape
        torch.Size([1, 5])
    """
    return _torchvision_video("r3d_18", num_classes=num_classes, dropout=dropout, **kwargs)


def mc3_18(*, num_classes: int, dropout: float = 0.0, **kwargs: Any) -> nn.Module:
    """torchvision's MC3-18 (3D convs in the first stages, 2D after); (B, 3, T, H, W) -> logits.

    Args:
        num_classes: Number of classes.
        dropout: Dropout probability before the FC (0 keeps torchvision's plain FC).
        **kwargs: Passed to ``torchvision.models.video.mc3_18``.

    Example:
        >>> import torch
        >>> mc3_18(num_classes=5).eval()(torch.randn(1, 3, 2, 16, 16)).shape
        torch.Size([1, 5])
    """
    return _torchvision_video("mc3_18", num_classes=num_classes, dropout=dropout, **kwargs)


def r2plus1d_18(*, num_classes: int, dropout: float = 0.0, **kwargs: Any) -> nn.Module:
    """torchvision's R(2+1)D-18 (factorised 3D convs); (B, 3, T, H, W) -> (B, num_classes).

    Args:
        num_classes: Number of classes.
        dropout: Dropout probability before the FC (0 keeps torchvision's plain FC).
        **kwargs: Passed to ``torchvision.models.video.r2plus1d_18``.

    Example:
        >>> import torch
        >>> r2plus1d_18(num_classes=5).eval()(torch.randn(1, 3, 2, 16, 16)).shape
        torch.Size([1, 5])
    """
    return _torchvision_video("r2plus1d_18", num_classes=num_classes, dropout=dropout, **kwargs)
