"""The OptunaHub folder loads through optunahub, and the wheel and sdist pass twine check."""

from __future__ import annotations

import email
from pathlib import Path
import runpy
import shutil
import subprocess
import sys
import tarfile
import zipfile

import optuna
import optunahub
import tomllib
import yaml

import optuna_opplan

ROOT = Path(__file__).resolve().parents[1]
HUB = ROOT / "hub"
PACKAGE = HUB / "samplers" / "opplan"
FRONT_MATTER = {"author", "title", "description", "tags", "optuna_versions", "license"}


def _front_matter() -> dict:
    text = (PACKAGE / "README.md").read_text()
    assert text.startswith("---\n"), "the registry reads the README's front matter first"
    head, _, _ = text[4:].partition("\n---\n")
    return yaml.safe_load(head)


def test_the_hub_folder_has_the_registry_layout() -> None:
    for name in ("__init__.py", "README.md", "LICENSE", "example.py", "requirements.txt"):
        assert (PACKAGE / name).is_file(), name
    front = _front_matter()
    assert set(front) == FRONT_MATTER
    assert all(
        isinstance(front[k], str) and front[k].strip()
        for k in FRONT_MATTER - {"tags", "optuna_versions"}
    )
    assert isinstance(front["tags"], list) and "sampler" in front["tags"]
    # The listing claims the Optuna version this suite runs on.
    assert optuna.__version__ in [str(v) for v in front["optuna_versions"]]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert front["license"] == f"{project['license']} License"
    assert (PACKAGE / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    requirements = [
        line.split("#")[0].strip()
        for line in (PACKAGE / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert project["name"] in requirements


def test_optunahub_loads_the_local_package() -> None:
    module = optunahub.load_local_module("samplers/opplan", registry_root=str(HUB))
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is getattr(optuna_opplan, name), name


def test_the_example_runs_against_the_local_package(monkeypatch, capsys) -> None:
    def load_module(package: str, **_: object):
        return optunahub.load_local_module(package, registry_root=str(HUB))

    monkeypatch.setattr(optunahub, "load_module", load_module)
    namespace = runpy.run_path(str(PACKAGE / "example.py"), run_name="__main__")
    study = namespace["study"]
    plan = namespace["plan"]
    assert len(study.trials) == len(namespace["graph"].transitions)
    assert str(plan) in capsys.readouterr().out
    assert plan.goal in namespace["graph"].goal_states


def test_wheel_and_sdist_build_and_pass_twine_check(tmp_path) -> None:
    # Built from a copy, offline (--no-isolation: the pinned setuptools of this venv), so the
    # work tree gets no build/ or egg-info litter.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("optuna_opplan", "models"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel, sdist = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheel) == len(sdist) == 1
    twine = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel[0]), str(sdist[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert twine.returncode == 0, twine.stdout + twine.stderr
    assert twine.stdout.count("PASSED") == 2

    names = set(zipfile.ZipFile(wheel[0]).namelist())
    for needed in (
        "optuna_opplan/py.typed",
        "optuna_opplan/cli.py",
        "optuna_opplan/video/_trainer.py",
        "optuna_opplan/models/__init__.py",
    ):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "benchmarks/", "models/")) for n in names)
    metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = email.message_from_bytes(zipfile.ZipFile(wheel[0]).read(metadata_name))
    assert {"video", "dashboard", "postgres", "s3"} <= set(metadata.get_all("Provides-Extra"))
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert (
        "opplan = optuna_opplan.cli:main" in zipfile.ZipFile(wheel[0]).read(entry_points).decode()
    )
    with tarfile.open(sdist[0]) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    assert {"LICENSE", "README.md", "pyproject.toml", "models/_p3d.py"} <= members
