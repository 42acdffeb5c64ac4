"""Make ``import torchvision`` work against a CPU-only torch build.

The PyPI torchvision wheel ships a C extension built for CUDA torch; against the CPU wheel it
fails to load, and torchvision's import then dies registering fake kernels for ``nms`` and
``qnms``, two operators whose schemas only that extension defines. Defining the two schemas
first lets the pure-Python part (models, transforms) import; the detection ops stay unusable,
which this project never needs.
"""

from __future__ import annotations

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None


def ensure_torchvision_importable() -> None:
    """Define torchvision's missing operator schemas when its C extension cannot provide them.

    Idempotent, and a no-op when the extension loads (a matching torchvision build).
    """
    global _library
    if _library is not None:
        return
    missing = [name for name in _SCHEMAS if not _has_op(name)]
    if not missing:
        return
    if _extension_loads():
        return
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _library.define(_SCHEMAS[name])


def _has_op(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _extension_loads() -> bool:
    import importlib.util
    import os

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.submodule_search_locations is None:
        return False
    for folder in spec.submodule_search_locations:
        for entry in os.listdir(folder):
            if entry.startswith("_C") and entry.endswith((".so", ".pyd")):
                try:
                    torch.ops.load_library(os.path.join(folder, entry))
                    return True
                except (OSError, RuntimeError):
                    return False
    return False
