"""Model builders by name, so a config file can say ``model = "dg_p3d_resnet50"``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from . import _baselines
from . import _p3d
from . import _plain

ModelBuilder = Callable[..., nn.Module]
"""A builder called as ``builder(*, num_classes, **kwargs)``."""

_BUILDERS: dict[str, ModelBuilder] = {
    "p3d_resnet18": _p3d.p3d_resnet18,
    "p3d_resnet50": _p3d.p3d_resnet50,
    "p3d_resnet101": _p3d.p3d_resnet101,
    "g_p3d_resnet18": _p3d.g_p3d_resnet18,
    "g_p3d_resnet50": _p3d.g_p3d_resnet50,
    "g_p3d_resnet101": _p3d.g_p3d_resnet101,
    "dg_p3d_resnet18": _p3d.dg_p3d_resnet18,
    "dg_p3d_resnet50": _p3d.dg_p3d_resnet50,
    "dg_p3d_resnet101": _p3d.dg_p3d_resnet101,
    "r3d_18": _baselines.r3d_18,
    "mc3_18": _baselines.mc3_18,
    "r2plus1d_18": _baselines.r2plus1d_18,
    "c3d_small": _plain.c3d_small,
}


def list_models() -> list[str]:
    """Names :func:`get_model` accepts, sorted.

    Example:
        >>> "dg_p3d_resnet50" in list_models()
        True
    """
    return sorted(_BUILDERS)


def get_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name``; it maps (B, 3, T, H, W) to (B, num_classes).

    Args:
        name: One of :func:`list_models`.
        num_classes: Number of classes.
        **kwargs: Passed to the builder (e.g. ``width_multiplier`` for the P3D family).

    Raises:
        ValueError: ``name`` is not registered.

    Example:
        >>> model = get_model("p3d_resnet18", num_classes=3, width_multiplier=0.125)
        >>> model.num_classes
        3
    """
    if name not in _BUILDERS:
        raise ValueError(f"`name` must be one of {list_models()}, but got name={name!r}.")
    return _BUILDERS[name](num_classes=num_classes, **kwargs)


def register_model(name: str, builder: ModelBuilder) -> None:
    """Make ``builder`` available to :func:`get_model` as ``name``.

    Raises:
        ValueError: ``name`` is empty or already registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty str, but got name={name!r}.")
    if name in _BUILDERS:
        raise ValueError(f"`name` must be a new model name, but {name!r} is registered.")
    _BUILDERS[name] = builder
