"""Shared fixtures: real-data location, one torch thread, a shared artifact cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Shared 2-core machines: torch's default threads slow ~25x when another process is busy.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("COE_CACHE_DIR", str(REPO / ".cache" / "coe-test"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def real_data_dir() -> Path | None:
    """``$COE_DATA_DIR`` or ``../shared/data`` beside the repository, if present."""
    env = os.environ.get("COE_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if (c / "meld").is_dir() or (c / "emorynlp").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = real_data_dir()
    if d is None:
        pytest.skip("real MELD/EmoryNLP files not found: set $COE_DATA_DIR or place them in ../shared/data")
    return d
