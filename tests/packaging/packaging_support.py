"""Helpers shared by the packaging tests: find the tools, render, validate, compare RBAC rules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.packaging import packaging_sync as sync

REPO = sync.REPO
CHART = sync.CHART
ALL_OPTIONS_VALUES = CHART / "ci" / "all-options-values.yaml"
CRD_FILE = sync.CRD_DIR / "coe.ml_coeexperiments.yaml"
# Oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest the validator knows.
K8S_VERSIONS = ("1.27", "1.37")


def _tool(name: str) -> str | None:
    for c in (Path(sys.executable).parent / name, REPO / ".venv" / "bin" / name):
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return shutil.which(name)


def require_tool(name: str, how: str) -> str:
    """The tool's path; skip with the reason when it is absent (fail instead under CI, which installs it)."""
    path = _tool(name)
    if path is None:
        message = f"{name} not found in the virtualenv or on PATH; install it with: {how}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_helm() -> str:
    return require_tool("helm", "python tests/tools/install_helm.py --dest .venv/bin")


def require_crd() -> dict:
    if not CRD_FILE.is_file():
        pytest.fail(f"{CRD_FILE.relative_to(REPO)} is missing: generate it with coe_controller.crd")
    return yaml.safe_load(CRD_FILE.read_text())


def kubernetes_validate(text: str, version: str) -> subprocess.CompletedProcess:
    """``kubernetes-validate --strict`` on YAML text from stdin, offline (schemas ship in the package)."""
    exe = require_tool("kubernetes-validate", "pip install kubernetes-validate")
    return subprocess.run(
        [exe, "--strict", "--quiet", "-k", version, "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_valid_core_kinds(text: str) -> None:
    """Every document validates strictly, for every supported version, and none is of an unknown kind."""
    for version in K8S_VERSIONS:
        result = kubernetes_validate(text, version)
        out = (result.stdout + result.stderr).strip()
        assert result.returncode == 0, f"kubernetes-validate -k {version} failed:\n{out}"
        # The validator only warns about kinds it has no schema for: none of ours may be unchecked.
        assert "WARN" not in out, f"kubernetes-validate -k {version} could not check everything:\n{out}"


def crd_schema(crd: dict, version: str = "v1alpha1") -> dict:
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return entry["schema"]["openAPIV3Schema"]


def validate_against_crd(obj: dict, crd: dict) -> list[str]:
    """Errors (path: message) of a custom object against its CRD's openAPIV3Schema, as the API server
    would report them for the structural parts jsonschema understands. OpenAPI 3.0's ``nullable`` and
    boolean ``exclusiveMinimum`` are draft-4 JSON Schema once ``nullable`` is rewritten (crd.to_jsonschema)."""
    from coe_controller.crd import to_jsonschema

    version = obj.get("apiVersion", "").rsplit("/", 1)[-1]
    validator = jsonschema.Draft4Validator(to_jsonschema(crd_schema(crd, version)))
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


def rule_grants(rules: list[dict]) -> set[tuple[str, str, str, str]]:
    """PolicyRules flattened to the (apiGroup, resource, verb, resourceName) grants they make."""
    grants = set()
    for rule in rules:
        names = rule.get("resourceNames") or ["*"]
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    for name in names:
                        grants.add((group, resource, verb, name))
    return grants


def documents(text: str) -> list[dict]:
    return sync.load_documents(text)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]
