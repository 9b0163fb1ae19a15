"""Artifact store: one interface, ``file://`` (default) and ``s3://bucket/prefix`` back-ends.

A step publishes its outputs atomically: every file under the step's prefix first, then
``MANIFEST.json`` (file list, sizes, sha256) last. A step is done exactly when its manifest
exists; readers verify sizes and checksums when they fetch.

The package, bottom to top (import-linter checks it, see pyproject.toml):

* ``base``     — the ``Store`` interface, ``join``/``normalize_uri``, manifest helpers
* ``file``     — ``FileStore`` (file://), ``atomic_write``      ``s3`` — ``S3Store`` (s3://; the only module that imports boto3)
* ``registry`` — ``get_store``: the back-end for a URI (imports ``s3`` lazily, on the first s3:// URI)
* ``cache``    — ``materialize`` (local cache), ``download``, ``copy``

Import from here (``from coe_runtime.store import get_store``); the S3 classes are imported from
``coe_runtime.store.s3`` so that boto3 is loaded only where S3 is used.
"""

from __future__ import annotations

from coe_runtime.store.base import (
    MANIFEST,
    MANIFEST_FORMAT,
    Store,
    entries_under,
    join,
    normalize_uri,
    sha256_file,
    verify_file,
)
from coe_runtime.store.cache import Transfer, cache_dir, cache_path, copy, download, materialize
from coe_runtime.store.file import FileStore, atomic_write
from coe_runtime.store.registry import get_store

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "FileStore",
    "Store",
    "Transfer",
    "atomic_write",
    "cache_dir",
    "cache_path",
    "copy",
    "download",
    "entries_under",
    "get_store",
    "join",
    "materialize",
    "normalize_uri",
    "sha256_file",
    "verify_file",
]
