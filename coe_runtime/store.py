"""Artifact store: one interface, ``file://`` (default) and ``s3://bucket/prefix`` back-ends.

A step publishes its outputs atomically: every file under the step's prefix first, then
``MANIFEST.json`` (file list, sizes, sha256) last. A step is done exactly when its manifest
exists; readers verify sizes and checksums when they fetch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from coe_runtime.errors import StoreError

MANIFEST = "MANIFEST.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def join(base: str, *parts: str) -> str:
    """Join URI parts with ``/`` (works for file:// and s3:// alike)."""
    out = base.rstrip("/")
    for p in parts:
        p = p.strip("/")
        if p:
            out = f"{out}/{p}"
    return out


def normalize_uri(uri: str) -> str:
    """Plain paths become ``file://`` URIs with an absolute path."""
    if "://" not in uri:
        return "file://" + str(Path(uri).expanduser().resolve())
    return uri


class Store(ABC):
    """Operations take full URIs of this store's scheme."""

    @abstractmethod
    def put_file(self, local: str | Path, uri: str) -> None: ...

    @abstractmethod
    def get_file(self, uri: str, local: str | Path) -> None: ...

    @abstractmethod
    def read_bytes(self, uri: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, uri: str, data: bytes) -> None: ...

    @abstractmethod
    def exists(self, uri: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every object URI under ``prefix`` (recursive), sorted."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    # -- shared behaviour, in terms of the primitives above --------------------------------
    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_bytes(uri))

    def write_json(self, uri: str, obj: Any) -> None:
        self.write_bytes(uri, json.dumps(obj, indent=2, ensure_ascii=False).encode())

    def read_jsonl(self, uri: str) -> list[dict]:
        return [json.loads(line) for line in self.read_bytes(uri).decode().splitlines() if line.strip()]

    def write_jsonl(self, uri: str, rows: Iterable[dict]) -> None:
        self.write_bytes(uri, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())

    def put_dir(self, local_dir: str | Path, prefix: str) -> list[dict]:
        """Upload every file under ``local_dir``; returns manifest entries."""
        local_dir = Path(local_dir)
        entries = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(local_dir).as_posix()
            if rel == MANIFEST:
                continue
            self.put_file(path, join(prefix, rel))
            entries.append({"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)})
        return entries

    def publish(self, local_dir: str | Path, prefix: str, meta: dict | None = None) -> dict:
        """Upload a step's outputs, then write the manifest last: the step is done only now."""
        entries = self.put_dir(local_dir, prefix)
        manifest = {"files": entries, "published_at": time.time(), "meta": meta or {}}
        self.write_json(join(prefix, MANIFEST), manifest)
        return manifest

    def manifest(self, prefix: str) -> dict | None:
        uri = join(prefix, MANIFEST)
        if not self.exists(uri):
            return None
        return self.read_json(uri)

    def is_published(self, prefix: str) -> bool:
        return self.exists(join(prefix, MANIFEST))

    def fetch(self, prefix: str, local_dir: str | Path, verify: bool = True) -> dict:
        """Download a published step output and check every file against its manifest."""
        manifest = self.manifest(prefix)
        if manifest is None:
            raise StoreError(f"{prefix}: not published (no {MANIFEST}); the step that writes it has not finished")
        local_dir = Path(local_dir)
        for entry in manifest["files"]:
            dest = local_dir / entry["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.get_file(join(prefix, entry["path"]), dest)
            if verify:
                size = dest.stat().st_size
                if size != entry["size"] or sha256_file(dest) != entry["sha256"]:
                    raise StoreError(
                        f"{join(prefix, entry['path'])}: checksum mismatch after download "
                        f"(size {size}, expected {entry['size']}); the artifact is corrupt or was overwritten"
                    )
        return manifest


class FileStore(Store):
    """``file:///abs/path`` back-end; writes go through a temp file + rename."""

    @staticmethod
    def _path(uri: str) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise StoreError(f"{uri}: not a file:// URI")
        return Path(parsed.netloc + parsed.path) if parsed.netloc else Path(parsed.path)

    def put_file(self, local: str | Path, uri: str) -> None:
        dest = self._path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if Path(local).resolve() == dest.resolve():
            return
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        shutil.copyfile(local, tmp)
        os.replace(tmp, dest)

    def get_file(self, uri: str, local: str | Path) -> None:
        src = self._path(uri)
        if not src.is_file():
            raise StoreError(f"{uri}: no such artifact")
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != Path(local).resolve():
            shutil.copyfile(src, local)

    def read_bytes(self, uri: str) -> bytes:
        path = self._path(uri)
        if not path.is_file():
            raise StoreError(f"{uri}: no such artifact")
        return path.read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        dest = self._path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)

    def exists(self, uri: str) -> bool:
        return self._path(uri).is_file()

    def list(self, prefix: str) -> list[str]:
        root = self._path(prefix)
        if root.is_file():
            return [prefix]
        if not root.is_dir():
            return []
        return sorted(
            join(prefix, p.relative_to(root).as_posix())
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def delete_prefix(self, prefix: str) -> None:
        root = self._path(prefix)
        if root.is_dir():
            shutil.rmtree(root)
        elif root.exists():
            root.unlink()


def get_store(uri: str) -> Store:
    """The back-end for a URI's scheme (plain paths are file://)."""
    scheme = urlparse(normalize_uri(uri)).scheme
    if scheme == "file":
        return FileStore()
    if scheme == "s3":
        from coe_runtime.s3store import S3Store  # boto3 only where S3 is used

        return S3Store.from_env()
    raise StoreError(f"{uri}: unsupported store scheme {scheme!r}; expected file:// or s3://")


def cache_dir() -> Path:
    """Where fetched artifacts are cached (``$COE_CACHE_DIR``, default ``~/.cache/coe``)."""
    return Path(os.environ.get("COE_CACHE_DIR", Path.home() / ".cache" / "coe"))


def materialize(uri: str) -> Path:
    """A local path for a file or directory URI: file:// as is, others downloaded into the cache."""
    uri = normalize_uri(uri)
    store = get_store(uri)
    if isinstance(store, FileStore):
        return FileStore._path(uri)
    parsed = urlparse(uri)
    local = cache_dir() / "artifacts" / parsed.scheme / parsed.netloc / parsed.path.lstrip("/")
    if store.exists(uri):
        if not local.is_file():
            store.get_file(uri, local)
        return local
    files = store.list(uri)
    if not files:
        raise StoreError(f"{uri}: no such artifact")
    for f in files:
        dest = local / f[len(uri.rstrip("/")) + 1 :]
        if not dest.is_file():
            store.get_file(f, dest)
    return local
