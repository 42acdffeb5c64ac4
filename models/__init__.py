"""3D ConvNets for optimization planning, importable as ``optuna_opplan.models``."""

from __future__ import annotations

from optuna_opplan.video._compat import ensure_torchvision_importable

ensure_torchvision_importable()
