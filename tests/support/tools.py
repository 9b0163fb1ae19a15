"""Command-line tools the suite runs (lint-imports, mypy): the one installed beside this interpreter
(the venv's), else the one on PATH; a clear failure when neither is there."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def installed_tool(name: str, package: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} not installed: pip install -e '.[test]' ({package})"
    return found
