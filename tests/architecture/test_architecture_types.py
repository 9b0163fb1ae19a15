"""coe_runtime and coe_controller type-check: mypy (also run by ``make lint``) reports nothing.

The configuration is ``[tool.mypy]`` in pyproject.toml; it checks the controller through
``.typecheck/coe_controller``, a symlink to controller/ under the package's import name.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.tools import installed_tool

REPO = Path(__file__).resolve().parents[2]


def test_the_controller_is_checked_under_its_import_name():
    link = REPO / ".typecheck" / "coe_controller"
    assert link.is_symlink() and link.resolve() == (REPO / "controller").resolve()


def test_type_check_is_clean():
    proc = subprocess.run(
        [installed_tool("mypy", "mypy")], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout, proc.stdout
