from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["optuna_opplan", "optuna_opplan.simulation", "optuna_opplan.cli"]
)
def test_core_imports_neither_torch_nor_decord(module: str) -> None:
    code = (
        f"import {module}, sys\n"
        "heavy = sorted(m for m in ('torch', 'decord', 'torchvision') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
