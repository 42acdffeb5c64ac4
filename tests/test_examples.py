"""The Kubernetes and SLURM examples, checked as far as a machine without a cluster allows:
manifests parse and hang together, and every `opplan` command line in them is accepted by
the CLI's own parser."""

from __future__ import annotations

import argparse
from pathlib import Path
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from optuna_opplan.cli import build_parser

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KUBERNETES = EXAMPLES / "kubernetes"
SLURM = EXAMPLES / "slurm"
SEPARATORS = re.compile(r"&&|\|\||[;|\n]")
REDIRECTS = (">", ">>", "2>", "2>&1", "<", "&")


def _opplan_argvs(tokens: list[str]) -> list[list[str]]:
    """The argument lists of the ``opplan`` (or ``python -m optuna_opplan.cli``) calls."""
    for i, token in enumerate(tokens):
        module = token == "optuna_opplan.cli" and i > 0 and tokens[i - 1] == "-m"
        if token == "opplan" or token.endswith("/opplan") or module:
            rest = tokens[i + 1 :]
        else:
            continue
        cut = next((j for j, t in enumerate(rest) if t in REDIRECTS), len(rest))
        return [rest[:cut]]
    return []


def _shell_commands(script: str) -> list[list[str]]:
    script = re.sub(r"\\\n", " ", script)  # continuation lines
    found = []
    for segment in SEPARATORS.split(script):
        tokens = shlex.split(segment, comments=True)
        found += _opplan_argvs(tokens)
    return found


def _check_cli(argv: list[str], where: str) -> None:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `opplan {shlex.join(argv)}` is not a valid opplan command line")
    assert args.command in {"init", "worker", "status", "plan", "grid", "compare"}, where
    # Spelled out in full: argparse would also take an abbreviation such as --nproc.
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    options = commands.choices[args.command]._option_string_actions
    for token in argv:
        if token.startswith("--"):
            assert token.split("=")[0] in options, f"{where}: {token} is not an option of opplan"


def _manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return pod.get("initContainers", []) + pod.get("containers", [])


def _env_names(container: dict, secrets: dict[str, set[str]]) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        name = source["secretRef"]["name"]
        assert name in secrets, f"container {container['name']} reads a missing Secret {name}"
        names |= secrets[name]
    return names


def test_manifests_parse_and_name_their_kind() -> None:
    docs = _manifests()
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Secret", "StatefulSet", "Service", "ConfigMap", "Job", "Deployment"} <= kinds
    for where, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), where
        assert doc["metadata"]["name"], where
        if doc["kind"] in ("StatefulSet", "Deployment"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), where
        if doc["kind"] == "Service":
            selected = doc["spec"]["selector"]
            assert any(
                d["kind"] in ("StatefulSet", "Deployment")
                and selected.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                for _, d in docs
            ), f"{where}: Service {doc['metadata']['name']} selects no pods"


def test_every_opplan_command_in_the_manifests_is_the_clis() -> None:
    docs = _manifests()
    secrets = {
        doc["metadata"]["name"]: set(doc.get("stringData", {})) | set(doc.get("data", {}))
        for _, doc in docs
        if doc["kind"] == "Secret"
    }
    configs = {
        doc["metadata"]["name"]: doc["data"] for _, doc in docs if doc["kind"] == "ConfigMap"
    }
    images, commands = set(), 0
    for where, doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in _containers(doc):
            argv = list(container.get("command", [])) + list(container.get("args", []))
            env = _env_names(container, secrets)
            for var in re.findall(r"\$\((\w+)\)", " ".join(argv)):
                assert var in env, f"{where}: {container['name']} uses $({var}), never set"
            if argv[:2] in (["sh", "-c"], ["bash", "-c"]):
                calls = _shell_commands(argv[2])
            else:
                calls = _opplan_argvs(argv)
            for call in calls:
                commands += 1
                _check_cli(call, f"{where}: {container['name']}")
                # The storage comes from $OPTUNA_STORAGE, the CLI's default for --storage.
                assert "--storage" in call or "OPTUNA_STORAGE" in env, where
                if "--config" in call:
                    path = Path(call[call.index("--config") + 1])
                    mount = next(
                        m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)
                    )
                    config_map = volumes[mount["name"]]["configMap"]["name"]
                    assert path.name in configs[config_map], where
            if calls or "optuna-dashboard" in argv:
                images.add(container["image"])
    assert commands >= 3
    assert len(images) == 1, f"the opplan containers use different images: {images}"
    (image,) = images
    assert image in (KUBERNETES / "Dockerfile").read_text()
    assert image in (KUBERNETES / "README.md").read_text()


def test_the_config_map_holds_a_valid_plan_config() -> None:
    from optuna_opplan.video import PlanConfig

    (config,) = [d for _, d in _manifests() if d["kind"] == "ConfigMap"]
    plan = PlanConfig.from_dict(tomllib.loads(config["data"]["plan.toml"]))
    assert plan.section("artifacts")["path"].startswith("s3://")


def test_the_worker_job_uses_every_gpu_it_asks_for() -> None:
    (job,) = [
        d for _, d in _manifests() if d["kind"] == "Job" and "worker" in d["metadata"]["name"]
    ]
    assert job["spec"]["parallelism"] == job["spec"]["completions"] >= 2
    (worker,) = job["spec"]["template"]["spec"]["containers"]
    argv = worker["command"]
    gpus = worker["resources"]["limits"]["nvidia.com/gpu"]
    assert int(argv[argv.index("--nproc-per-node") + 1]) == gpus
    assert any(m["mountPath"] == "/dev/shm" for m in worker["volumeMounts"])


def test_the_dockerfile_installs_extras_that_exist() -> None:
    project = tomllib.loads((EXAMPLES.parent / "pyproject.toml").read_text())["project"]
    extras = set(project["optional-dependencies"])
    (wanted,) = re.findall(r'"\.\[([^\]]+)\]"', (KUBERNETES / "Dockerfile").read_text())
    assert set(wanted.split(",")) <= extras


@pytest.mark.parametrize("script", sorted(p.name for p in SLURM.glob("*.s*")))
def test_slurm_scripts_are_valid_bash_with_the_clis_commands(script: str) -> None:
    path = SLURM / script
    text = path.read_text()
    check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    calls = _shell_commands(text)
    assert calls, f"{script} runs no opplan command"
    for call in calls:
        _check_cli(call, script)
        if "--nproc-per-node" in call:
            gpus = re.search(r"#SBATCH --gpus-per-node=(\d+)", text)
            assert gpus and call[call.index("--nproc-per-node") + 1] == gpus.group(1), script
    if "torchrun" in text:
        # Under torchrun every process is a rank: the worker must not start its own group.
        assert all("--nproc-per-node" not in call for call in calls)
        gpus = re.search(r"#SBATCH --gpus-per-node=(\d+)", text)
        assert gpus and f"--nproc-per-node {gpus.group(1)}" in text
