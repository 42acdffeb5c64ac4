"""3D ConvNets for optimization planning, importable as ``optuna_opplan.models``.

The P3D family of the paper (P3D, G-P3D with global context, DG-P3D with global context and a
dual head; depths 18, 50, 101), torchvision baselines behind the same builder interface, 2D
weight inflation, BatchNorm freezing for long clips, and size/cost counters. Every network maps
a clip (B, 3, T, H, W) to logits (B, num_classes) in eval mode; train a dual-head network with
:func:`classification_loss` and predict with :func:`predict_logits`, which accept any model's
output.
"""

from __future__ import annotations

from ._compat import ensure_torchvision_importable

ensure_torchvision_importable()

from ._baselines import mc3_18  # noqa: E402
from ._baselines import r2plus1d_18  # noqa: E402
from ._baselines import r3d_18  # noqa: E402
from ._batchnorm import freeze_batchnorm  # noqa: E402
from ._batchnorm import frozen_batchnorm_names  # noqa: E402
from ._batchnorm import unfreeze_batchnorm  # noqa: E402
from ._blocks import BlockFactory  # noqa: E402
from ._blocks import GlobalContext  # noqa: E402
from ._blocks import P3DBasicBlock  # noqa: E402
from ._blocks import P3DBottleneck  # noqa: E402
from ._blocks import P3DKind  # noqa: E402
from ._blocks import P3DUnitA  # noqa: E402
from ._blocks import P3DUnitB  # noqa: E402
from ._blocks import P3DUnitC  # noqa: E402
from ._blocks import Stem  # noqa: E402
from ._blocks import make_p3d_unit  # noqa: E402
from ._heads import ClassifierHead  # noqa: E402
from ._heads import DualHead  # noqa: E402
from ._inflate import InflationReport  # noqa: E402
from ._inflate import inflate_from_2d  # noqa: E402
from ._outputs import DualHeadOutput  # noqa: E402
from ._outputs import ModelOutput  # noqa: E402
from ._outputs import classification_loss  # noqa: E402
from ._outputs import predict_logits  # noqa: E402
from ._p3d import P3DResNet  # noqa: E402
from ._p3d import dg_p3d_resnet18  # noqa: E402
from ._p3d import dg_p3d_resnet50  # noqa: E402
from ._p3d import dg_p3d_resnet101  # noqa: E402
from ._p3d import g_p3d_resnet18  # noqa: E402
from ._p3d import g_p3d_resnet50  # noqa: E402
from ._p3d import g_p3d_resnet101  # noqa: E402
from ._p3d import p3d_resnet18  # noqa: E402
from ._p3d import p3d_resnet50  # noqa: E402
from ._p3d import p3d_resnet101  # noqa: E402
from ._plain import PlainC3D  # noqa: E402
from ._plain import c3d_small  # noqa: E402
from ._profile import count_parameters  # noqa: E402
from ._profile import flops_per_clip  # noqa: E402
from ._registry import ModelBuilder  # noqa: E402
from ._registry import get_model  # noqa: E402
from ._registry import list_models  # noqa: E402
from ._registry import register_model  # noqa: E402

__all__ = [
    "BlockFactory",
    "ClassifierHead",
    "DualHead",
    "DualHeadOutput",
    "GlobalContext",
    "InflationReport",
    "ModelBuilder",
    "ModelOutput",
    "P3DBasicBlock",
    "P3DBottleneck",
    "P3DKind",
    "P3DResNet",
    "P3DUnitA",
    "P3DUnitB",
    "P3DUnitC",
    "PlainC3D",
    "Stem",
    "c3d_small",
    "classification_loss",
    "count_parameters",
    "dg_p3d_resnet18",
    "dg_p3d_resnet50",
    "dg_p3d_resnet101",
    "flops_per_clip",
    "freeze_batchnorm",
    "frozen_batchnorm_names",
    "g_p3d_resnet18",
    "g_p3d_resnet50",
    "g_p3d_resnet101",
    "get_model",
    "inflate_from_2d",
    "list_models",
    "make_p3d_unit",
    "mc3_18",
    "p3d_resnet18",
    "p3d_resnet50",
    "p3d_resnet101",
    "predict_logits",
    "r2plus1d_18",
    "r3d_18",
    "register_model",
    "unfreeze_batchnorm",
]
