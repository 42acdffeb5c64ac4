"""Video runtime: clip sampling, datasets, the transition trainer (needs torch and decord)."""

from __future__ import annotations

from optuna_opplan.video._compat import ensure_torchvision_importable

ensure_torchvision_importable()
