"""Freeze BatchNorm for long clips, as the paper does at 64 and 128 frames (tiny batches).

A frozen BatchNorm layer normalises with its running statistics, never updates them, and its
scale and shift get no gradient. The freeze survives ``model.train()``: each frozen layer
switches itself back to eval mode at the start of every forward pass (a forward pre-hook), so
the usual ``model.train()`` / ``model.eval()`` calls of a training loop need no change.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _stay_in_eval(module: nn.Module, args: tuple[object, ...]) -> None:
    module.training = False


def _is_frozen(module: nn.Module) -> bool:
    return any(hook is _stay_in_eval for hook in module._forward_pre_hooks.values())


def freeze_batchnorm(model: nn.Module, *, except_first: bool = True) -> list[str]:
    """Freeze every BatchNorm layer of ``model`` (but the first, in module order, by default).

    Idempotent; undone by :func:`unfreeze_batchnorm`.

    Args:
        model: Any network.
        except_first: Leave the first BatchNorm layer (the stem's) trainable.

    Returns:
        Names of the frozen layers, in module order.

    Example:
        >>> model = nn.Sequential(nn.BatchNorm3d(2), nn.BatchNorm3d(2))
        >>> freeze_batchnorm(model)
        ['1']
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, _BatchNorm)]
    if except_first:
        layers = layers[1:]
    for _, layer in layers:
        layer.eval()
        for parameter in layer.parameters():
            parameter.requires_grad_(False)
        if not _is_frozen(layer):
            layer.register_forward_pre_hook(_stay_in_eval)
    return [name for name, _ in layers]


def unfreeze_batchnorm(model: nn.Module) -> list[str]:
    """Undo :func:`freeze_batchnorm`: the layers follow ``model``'s mode and train again.

    Returns:
        Names of the layers that were frozen, in module order.
    """
    names = []
    for name, layer in model.named_modules():
        if not (isinstance(layer, _BatchNorm) and _is_frozen(layer)):
            continue
        hooks = layer._forward_pre_hooks
        for key in [k for k, hook in hooks.items() if hook is _stay_in_eval]:
            del hooks[key]
        for parameter in layer.parameters():
            parameter.requires_grad_(True)
        layer.train(model.training)
        names.append(name)
    return names


def frozen_batchnorm_names(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers of ``model`` that :func:`freeze_batchnorm` froze."""
    return [n for n, m in model.named_modules() if isinstance(m, _BatchNorm) and _is_frozen(m)]
