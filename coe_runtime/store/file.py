"""``file://`` back-end of the artifact store (the default; plain paths are file:// too)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO
from urllib.parse import urlparse

from coe_runtime.errors import StoreError
from coe_runtime.store.base import Store, join


@contextmanager
def atomic_write(path: str | Path) -> Iterator[TextIO]:
    """A local text file (UTF-8) written through ``<name>.tmp`` beside it and a rename: a reader never
    sees a half-written file, and a failed write leaves none. Makes the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            yield f
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


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

    def list_info(self, prefix: str) -> dict[str, dict]:
        info = {}
        for uri in self.list(prefix):
            st = self._path(uri).stat()
            info[uri] = {"size": st.st_size, "version": str(st.st_mtime_ns)}
        return info

    def delete_prefix(self, prefix: str) -> None:
        root = self._path(prefix)
        if root.is_dir():
            shutil.rmtree(root)
        elif root.exists():
            root.unlink()
