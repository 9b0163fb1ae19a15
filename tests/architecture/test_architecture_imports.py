"""Dependencies point one way (docs/architecture.md): import-linter checks the contracts in pyproject.toml.

``lint-imports`` (also run by ``make lint``) checks every import, lazy ones inside functions
included (those under ``if TYPE_CHECKING:`` do not count): coe_runtime never imports
coe_controller, the runtime's floors, the store's back-ends, boto3 only in the S3 back-end, and
no import cycles. This suite runs it too, and checks what import-linter cannot: that the floors
docs/architecture.md shows are the floors the contract enforces.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from tests.support.tools import installed_tool

REPO = Path(__file__).resolve().parents[2]


def _contract(contract_id: str) -> dict:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["id"] == contract_id]
    return contract


def test_import_contracts_hold():
    proc = subprocess.run(
        [installed_tool("lint-imports", "import-linter"), "--no-cache", "--no-logo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout, proc.stdout


def test_documented_floors_are_the_enforced_floors():
    contract = _contract("runtime-floors")
    assert contract["type"] == "layers" and contract["exhaustive"] is True
    enforced = [
        {name.strip().strip("()") for name in re.split(r"[:|]", layer)}
        for layer in reversed(contract["layers"])
    ]
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    documented = []
    for row in re.findall(r"^\| (\d) [^|]*\| ([^\n]*) \|$", doc, flags=re.M):
        cell = re.sub(r"\([^)]*\)", "", row[1])  # names in parentheses are notes, not modules
        documented.append(set(re.findall(r"`([\w.]+)`", cell)))
    assert documented == enforced
