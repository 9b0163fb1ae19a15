"""The Python package itself: the wheel builds without setuptools warnings and ships every file of
the two packages (the bundled data included), and `make demo` / `make test` install the extras
that those targets need (pyproject.toml's base install is the controller alone: no torch)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.packaging import packaging_support as ps

EXTRAS = tomllib.loads((ps.REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
# The images' build context (their COPY lines): a wheel built from it is what they install.
SOURCES = ("pyproject.toml", "README.md", "coe_runtime", "controller")
PACKAGE_DIRS = {"coe_runtime": "coe_runtime", "controller": "coe_controller"}
_JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _files(root: Path) -> list[Path]:
    return [p.relative_to(root) for p in root.rglob("*") if p.is_file()]


def test_wheel_builds_without_warnings_and_ships_every_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = ps.REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=_JUNK)
        else:
            shutil.copy2(path, src / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
         "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    # setuptools' own warnings (SetuptoolsDeprecationWarning, "Package would be ignored", ...)
    warnings = [line.strip() for line in out.splitlines() if re.search(r"\w+Warning:|would be ignored", line)]
    assert not warnings, "\n".join(warnings)

    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = z.read(metadata).decode()
    expected = {f"{PACKAGE_DIRS[d]}/{p.as_posix()}" for d in PACKAGE_DIRS for p in _files(src / d)}
    assert any(not n.endswith(".py") for n in expected), "no data files found to check"
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks {missing}"
    assert "License-Expression: Apache-2.0" in meta.splitlines()
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist: torch")]
    assert requires and all('extra == "runtime"' in line for line in requires), requires


def _make_n(target: str, tmp_path: Path) -> list[str]:
    """The commands `make TARGET` would run on a machine with no virtualenv yet."""
    result = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"],
        capture_output=True, text=True, timeout=60, cwd=ps.REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _installs(lines: list[str]) -> list[tuple[int, set[str]]]:
    """(line number, extras) of each editable install of the project."""
    out = []
    for i, line in enumerate(lines):
        m = re.search(r"pip install .*-e (\"?)\.(\[([\w,-]+)\])?\1(\s|$)", line)
        if m:
            out.append((i, set(filter(None, (m.group(3) or "").split(",")))))
    return out


@pytest.mark.parametrize(
    ("target", "needs"),
    [
        ("demo", {"runtime"}),
        ("test", {"runtime", "test", "gguf"}),
        ("test-fast", {"runtime", "test", "gguf"}),
    ],
)
def test_make_installs_the_extras_the_target_needs(target, needs, tmp_path):
    """The demo trains a model (the runtime extra); the suite also needs the test and gguf extras.
    The CPU build of torch goes in first, so that the extra's torch range keeps it."""
    lines = _make_n(target, tmp_path)
    installs = _installs(lines)
    assert installs, f"make {target} installs no project:\n" + "\n".join(lines)
    named = set().union(*(extras for _, extras in installs))
    assert named <= set(EXTRAS), f"make {target} names extras pyproject.toml lacks: {named - set(EXTRAS)}"
    assert needs <= named, f"make {target} installs {sorted(named)}, needs {sorted(needs)}"
    torch = [i for i, line in enumerate(lines) if re.search(r"pip install .*\"torch==", line)]
    assert torch and torch[0] < installs[0][0], "torch (CPU build) must be installed before the project"
