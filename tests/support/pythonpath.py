"""The PYTHONPATH a test's child process gets: the repository first, then whatever the caller had
(an install with ``pip --target`` puts the dependencies there, so dropping it breaks the child)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def child_pythonpath() -> str:
    inherited = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(p for p in (str(REPO), inherited) if p)
