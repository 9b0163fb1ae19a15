"""Where a benchmark's numbers come from, without importing torch (the controller and store
benchmarks run without it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return cpu


def cpu_description() -> str:
    """OS, CPU model, core count and Python version."""
    return f"{platform.system()} {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"
