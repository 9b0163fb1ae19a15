"""``get_store``: the back-end for a URI's scheme.

The S3 back-end is imported only when an ``s3://`` URI is used, so boto3 is loaded only where
S3 is used, and the interface (``base``) never imports a back-end.
"""

from __future__ import annotations

from urllib.parse import urlparse

from coe_runtime.errors import StoreError
from coe_runtime.store.base import Store, normalize_uri
from coe_runtime.store.file import FileStore


def get_store(uri: str) -> Store:
    """The back-end for a URI's scheme (plain paths are file://)."""
    scheme = urlparse(normalize_uri(uri)).scheme
    if scheme == "file":
        return FileStore()
    if scheme == "s3":
        from coe_runtime.store.s3 import S3Store  # boto3 only where S3 is used

        return S3Store.from_env()
    raise StoreError(f"{uri}: unsupported store scheme {scheme!r}; expected file:// or s3://")
