"""Where a step's results are in a file:// store: ``<experiment>/<step>/<fingerprint>/``.

Tests that know the experiment folder and a step name find its one published result with
:func:`result_dir`; tests that have the plan use the step's ``output`` (:func:`output_dir`).
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "MANIFEST.json"


def output_dir(step) -> Path:
    """The local folder of a planned step's output URI (file:// only)."""
    return Path(step.output.removeprefix("file://"))


def result_dirs(experiment_dir: Path, step: str) -> list[Path]:
    """Every published fingerprint folder of ``step``, oldest first."""
    found = [m.parent for m in Path(experiment_dir, step).glob(f"*/{MANIFEST}")]
    return sorted(found, key=lambda p: (p / MANIFEST).stat().st_mtime)


def result_dir(experiment_dir: Path, step: str) -> Path:
    """The one published fingerprint folder of ``step`` (fails when there are none or several)."""
    found = result_dirs(experiment_dir, step)
    assert len(found) == 1, f"{experiment_dir}/{step}: expected one published result, found {found}"
    return found[0]


def without_fingerprint(name: str) -> str:
    """A job or ConfigMap name with its step fingerprint taken out (``exp-erc-1a2b3c4d-a2`` ->
    ``exp-erc-a2``), for tests that check the naming scheme, not a particular identity."""
    import re

    return re.sub(r"-[0-9a-f]{8}(?=-(a\d+|config)$)", "", name)
