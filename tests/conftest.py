"""Shared fixtures: real-data location, one torch thread, the artifact cache.

The artifact cache (``$COE_CACHE_DIR``: built models, downloads, train work folders) defaults to
``.cache/coe-test`` in the repository; a fresh clone (CI) starts with it empty, and nothing in the
suite relies on what an earlier run left there: ``COE_CACHE_DIR=$(mktemp -d) make test`` checks it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.shared import need_data

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


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MELD/EmoryNLP folder (``$COE_DATA_DIR`` or ../shared/data), or skip (tests/support/shared.py)."""
    return need_data()


@pytest.hookimpl(tryfirst=True)  # before -m selects on the markers
def pytest_collection_modifyitems(config, items):
    # A test that reads the real data is a `realdata` test, whether or not it says so:
    # `-m "not realdata"` deselects it, and it skips with the one shared reason.
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()) and item.get_closest_marker("realdata") is None:
            item.add_marker(pytest.mark.realdata)


def pytest_runtest_setup(item):
    if item.get_closest_marker("realdata") is not None:
        need_data()
