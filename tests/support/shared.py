"""Files from ``../shared`` beside the repository: the real benchmark data and upstream Kubernetes CRDs.

They are not in the repository. A test that needs one asks for it here (``need_shared``, or
``need_data`` / the ``data_dir`` fixture / the ``realdata`` marker for the benchmark data) and is
skipped where it is absent, always with the same reason text (``SKIP_REASON``), so that
``pytest -ra`` groups every such skip under one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"

SKIP_REASON = (
    "needs ../shared (real data, upstream CRDs) beside the repository, or $COE_DATA_DIR for the data"
)


def skip_reason(path: Path | str) -> str:
    return f"{SKIP_REASON}: {path} not found"


def real_data_dir() -> Path | None:
    """``$COE_DATA_DIR`` or ``../shared/data`` beside the repository, if it holds MELD or EmoryNLP."""
    env = os.environ.get("COE_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(SHARED / "data")
    for c in candidates:
        if (c / "meld").is_dir() or (c / "emorynlp").is_dir():
            return c
    return None


def need_shared(path: Path) -> Path:
    """``path`` (under ../shared), or skip the test."""
    if not path.exists():
        pytest.skip(skip_reason(path))
    return path


def need_data(rel: str = "") -> Path:
    """The real data folder (or ``rel`` inside it: a folder may hold only some benchmarks), or skip."""
    root = real_data_dir()
    if root is None:
        pytest.skip(skip_reason(Path(os.environ.get("COE_DATA_DIR") or SHARED / "data") / rel))
    return need_shared(root / rel) if rel else root


def requires_shared(path: Path) -> pytest.MarkDecorator:
    """A ``skipif`` mark for tests (or parametrized cases) whose ``path`` is not there at collection."""
    return pytest.mark.skipif(not path.exists(), reason=skip_reason(path))
