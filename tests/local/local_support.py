"""Shared by the local-run tests: the quick start's step sequence and ``coe-ctl run`` as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

QUICKSTART_STEPS = [
    "prepare",
    "roleplay",
    "speaker-id",
    "steer-r1-train",
    "steer-r1",
    "steer-r2-train",
    "steer-r2",
    "erc",
    "test",
]


def run_coe_ctl(spec_path: Path, timeout: int = 900) -> dict:
    """``coe-ctl run SPEC --output json`` in a subprocess; asserts success and returns the summary."""
    proc = subprocess.run(
        [sys.executable, "-m", "coe_controller.cli", "run", str(spec_path), "--output", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)
