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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from coe_runtime.errors import StoreError, TransientStoreError

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

    def list_info(self, prefix: str) -> dict[str, dict]:
        """``{uri: {"size": bytes, "version": str}}`` for every object under ``prefix``.

        ``version`` changes whenever the object is rewritten (S3: ETag; files: mtime). Back-ends
        override this with one listing; this fallback reads every object.
        """
        return {uri: {"size": len(self.read_bytes(uri)), "version": None} for uri in self.list(prefix)}

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
        """Upload every file under ``local_dir``; returns manifest entries.

        Sizes and checksums are taken before each upload, so the manifest describes exactly
        the bytes that were sent.
        """
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise StoreError(f"{local_dir}: not a directory; nothing to publish")
        entries = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(local_dir).as_posix()
            if rel == MANIFEST:
                continue
            entry = {"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)}
            self.put_file(path, join(prefix, rel))
            entries.append(entry)
        return entries

    def publish(self, local_dir: str | Path, prefix: str, meta: dict | None = None) -> dict:
        """Upload a step's outputs, then write the manifest last: the step is done only now.

        Any earlier manifest is removed first, so a re-publish is never visible as complete
        while its files are being replaced. Before the manifest is written, one listing checks
        that every file arrived with its size; after, the manifest is read back and compared.
        An interruption anywhere leaves no manifest: the step is simply not done, and running
        ``publish`` again completes it.
        """
        manifest_uri = join(prefix, MANIFEST)
        if self.exists(manifest_uri):
            self.delete(manifest_uri)
        entries = self.put_dir(local_dir, prefix)
        stored = self.list_info(prefix)
        for entry in entries:
            found = stored.get(join(prefix, entry["path"]))
            if found is None or found["size"] != entry["size"]:
                raise TransientStoreError(
                    f"{join(prefix, entry['path'])}: missing or wrong size right after upload "
                    f"(found {found and found['size']}, sent {entry['size']}); not publishing {prefix}"
                )
        manifest = {
            "format": MANIFEST_FORMAT,
            "files": entries,
            "total_bytes": sum(e["size"] for e in entries),
            "published_at": time.time(),
            "meta": meta or {},
        }
        self.write_json(manifest_uri, manifest)
        if self.read_json(manifest_uri) != json.loads(json.dumps(manifest)):
            self.delete(manifest_uri)
            raise TransientStoreError(
                f"{manifest_uri}: read back differs from what was written; not published"
            )
        return manifest

    def delete(self, uri: str) -> None:
        """Remove one object (no error if it is absent)."""
        self.delete_prefix(uri)

    def manifest(self, prefix: str) -> dict | None:
        uri = join(prefix, MANIFEST)
        if not self.exists(uri):
            return None
        try:
            manifest = self.read_json(uri)
        except json.JSONDecodeError as e:
            raise StoreError(f"{uri}: not valid JSON ({e}); the manifest is corrupt") from None
        _check_manifest(uri, manifest)
        return manifest

    def is_published(self, prefix: str) -> bool:
        return self.exists(join(prefix, MANIFEST))

    def find_manifest(self, uri: str) -> tuple[str, dict] | tuple[None, None]:
        """The published prefix that covers ``uri`` (itself or its nearest ancestor) and its manifest."""
        parsed = urlparse(uri)
        parts = [p for p in parsed.path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            prefix = f"{parsed.scheme}://{parsed.netloc}/" + "/".join(parts[:depth])
            manifest = self.manifest(prefix.rstrip("/") if depth else prefix)
            if manifest is not None:
                return (prefix.rstrip("/") if depth else prefix), manifest
        return None, None

    def fetch(self, prefix: str, local_dir: str | Path, verify: bool = True) -> dict:
        """Download a published step output and check every file against its manifest."""
        manifest = self.manifest(prefix)
        if manifest is None:
            raise StoreError(
                f"{prefix}: not published (no {MANIFEST}); the step that writes it has not finished"
            )
        local_dir = Path(local_dir)
        for entry in manifest["files"]:
            dest = local_dir / entry["path"]
            self.get_file(join(prefix, entry["path"]), dest)
            if verify:
                verify_file(dest, entry, join(prefix, entry["path"]))
        return manifest


MANIFEST_FORMAT = "coe-manifest/1"


def _check_manifest(uri: str, manifest: Any) -> None:
    """A manifest read from storage is input like any other: reject what could escape the prefix."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise StoreError(f"{uri}: not a manifest (expected an object with a 'files' list)")
    for i, entry in enumerate(manifest["files"]):
        where = f"{uri}: files[{i}]"
        if not isinstance(entry, dict) or not {"path", "size", "sha256"} <= entry.keys():
            raise StoreError(f"{where}: expected an object with path, size and sha256")
        path = entry["path"]
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
            raise StoreError(f"{where}: path {path!r} must be relative and stay inside the prefix")


def entries_under(manifest: dict, rel: str) -> list[dict]:
    """Manifest entries of the file ``rel`` or of the folder ``rel`` ("" = everything)."""
    return [e for e in manifest["files"] if not rel or e["path"] == rel or e["path"].startswith(rel + "/")]


def verify_file(local: Path, entry: dict, uri: str) -> None:
    """Size and sha256 of a downloaded file against its manifest entry; a bad file is removed."""
    size = local.stat().st_size
    digest = sha256_file(local) if size == entry["size"] else None
    if size != entry["size"] or digest != entry["sha256"]:
        local.unlink(missing_ok=True)
        raise StoreError(
            f"{uri}: checksum mismatch after download (size {size}, sha256 {digest or 'not computed'}; "
            f"manifest says size {entry['size']}, sha256 {entry['sha256']}); the artifact is corrupt or "
            "was overwritten after publishing: re-run the step that writes it"
        )


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


def cache_path(uri: str) -> Path:
    """Where ``materialize`` keeps a local copy of a remote URI."""
    parsed = urlparse(uri)
    return cache_dir() / "artifacts" / parsed.scheme / parsed.netloc / parsed.path.lstrip("/")


@dataclass
class Transfer:
    """What ``download``/``copy`` did: where the artifact is, whether it was verified, how much moved."""

    path: Path  # local file or folder
    published: str | None  # the published prefix covering the source (its manifest verified the files)
    files: int = 0
    downloaded: int = 0  # files actually transferred (the rest were already present and verified)
    bytes: int = 0
    republished: bool = False  # copy(): the destination got its own manifest
    destination: str = ""  # copy(): the destination URI


def materialize(uri: str) -> Path:
    """A local path for a file or directory URI: file:// as is, others through the local cache.

    Inside a published prefix (the URI itself, a file in it, or a folder such as ``<step>/adapter``)
    every cached file is checked against the manifest's sha256 and downloaded again when it is
    missing or stale; files the manifest no longer lists are removed from the cached folder.
    Objects outside any published prefix are re-downloaded when their size or version (ETag)
    changed. So nothing is downloaded twice, and nothing stale is ever used.
    """
    uri = normalize_uri(uri).rstrip("/")
    if urlparse(uri).scheme == "file":
        return FileStore._path(uri)
    return download(uri, cache_path(uri), cache=True).path


def download(uri: str, dest: str | Path, cache: bool = False) -> Transfer:
    """Copy a file or folder URI to ``dest`` (a file path, or a folder for a folder URI).

    Files covered by a manifest are verified (size + sha256) and skipped when ``dest`` already
    holds them intact. ``cache=True`` (what ``materialize`` uses; ``dest`` is a cache folder that
    holds only this artifact) also records the version of unpublished objects, so an unchanged
    object is not fetched again, and removes files the artifact no longer has. Without it,
    nothing else in ``dest`` is touched.
    """
    uri = normalize_uri(uri).rstrip("/")
    dest = Path(dest)
    store = get_store(uri)
    prefix, manifest = store.find_manifest(uri)
    if manifest is not None:
        rel = uri[len(prefix) :].strip("/")
        entries = entries_under(manifest, rel)
        if not entries:
            raise StoreError(f"{uri}: no such artifact (not listed in {join(prefix, MANIFEST)})")
        result = Transfer(dest, prefix)
        if len(entries) == 1 and entries[0]["path"] == rel:
            result.path = _file_target(uri, dest, cache)
            _download_file(store, uri, result.path, result, entry=entries[0])
            return result
        for entry in entries:
            sub = entry["path"][len(rel) :].lstrip("/")
            _download_file(store, join(prefix, entry["path"]), dest / sub, result, entry=entry)
        if cache:
            _remove_unlisted(dest, {e["path"][len(rel) :].lstrip("/") for e in entries})
        return result
    objects = store.list_info(uri)
    if not objects:
        raise StoreError(f"{uri}: no such artifact")
    result = Transfer(dest, None)
    if list(objects) == [uri]:
        result.path = _file_target(uri, dest, cache)
        _download_file(store, uri, result.path, result, version=objects[uri], remember=cache)
        return result
    for object_uri, info in objects.items():
        sub = object_uri[len(uri) + 1 :]
        _download_file(store, object_uri, dest / sub, result, version=info, remember=cache)
    if cache:
        _remove_unlisted(dest, {u[len(uri) + 1 :] for u in objects})
    return result


def _file_target(uri: str, dest: Path, cache: bool) -> Path:
    """A file downloaded into an existing folder keeps its name (like ``cp``)."""
    return dest / uri.rsplit("/", 1)[-1] if not cache and dest.is_dir() else dest


def _version_file(local: Path) -> Path:
    # Kept outside the artifact folder so that a cached folder holds exactly the artifact's files.
    return (
        cache_dir() / "versions" / (local.resolve().relative_to(cache_dir().resolve()).as_posix() + ".json")
    )


def _download_file(
    store: Store,
    uri: str,
    local: Path,
    result: Transfer,
    entry: dict | None = None,
    version: dict | None = None,
    remember: bool = False,
) -> None:
    result.files += 1
    if local.is_file():
        st = local.stat()
        if entry is not None and st.st_size == entry["size"] and sha256_file(local) == entry["sha256"]:
            return
        if entry is None and remember:
            stamp = {"remote": version, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
            recorded = _version_file(local)
            if recorded.is_file() and json.loads(recorded.read_text()) == stamp:
                return
    local.parent.mkdir(parents=True, exist_ok=True)
    # Download beside the target and rename: a reader never sees a partial or unverified file.
    fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=".tmp-")
    os.close(fd)
    try:
        store.get_file(uri, tmp)
        if entry is not None:
            verify_file(Path(tmp), entry, uri)
        os.replace(tmp, local)
    finally:
        Path(tmp).unlink(missing_ok=True)
    result.downloaded += 1
    result.bytes += local.stat().st_size
    if entry is None and remember:
        st = local.stat()
        recorded = _version_file(local)
        recorded.parent.mkdir(parents=True, exist_ok=True)
        recorded.write_text(json.dumps({"remote": version, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def _remove_unlisted(local_dir: Path, wanted: set[str]) -> None:
    """Drop files of an older version of a folder (ignores other writers' temp files)."""
    for path in local_dir.rglob("*"):
        if (
            path.is_file()
            and not path.name.startswith(".tmp-")
            and path.relative_to(local_dir).as_posix() not in wanted
        ):
            path.unlink()


def copy(src: str, dst: str) -> Transfer:
    """Copy a file or folder between any two URIs (file:// or s3://, plain paths are file://).

    A published source is verified on the way and published again at the destination (manifest
    last, with the source's meta and ``copied_from``); an unpublished one is copied as plain files.
    A file copied to a URI ending in ``/`` (or to an existing local folder) keeps its name.
    """
    src, dst = normalize_uri(src), normalize_uri(dst)
    src_store, dst_store = get_store(src), get_store(dst)
    src = src.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="coe-copy-") as staging:
        if isinstance(src_store, FileStore) and FileStore._path(src).exists():
            local = FileStore._path(src)
            prefix, manifest = src_store.find_manifest(src)
            result = Transfer(local, prefix)
            if manifest is not None:
                _verify_local(local, prefix, src, manifest)
        else:
            result = download(src, Path(staging) / "artifact")
            local = result.path
        name = src.rsplit("/", 1)[-1]
        target = dst
        if local.is_dir():
            if result.published is not None and result.published == src:
                meta = dict(src_store.manifest(src).get("meta") or {})
                meta["copied_from"] = src
                manifest = dst_store.publish(local, dst, meta=meta)
                result.republished = True
                result.files, result.bytes = len(manifest["files"]), manifest["total_bytes"]
            else:
                entries = dst_store.put_dir(local, dst)
                result.files, result.bytes = len(entries), sum(e["size"] for e in entries)
        else:
            if dst.endswith("/") or (isinstance(dst_store, FileStore) and FileStore._path(dst).is_dir()):
                target = join(dst, name)
            dst_store.put_file(local, target)
            result.files, result.bytes = 1, local.stat().st_size
        result.destination = target if not local.is_dir() else dst
        return result


def _verify_local(local: Path, prefix: str, uri: str, manifest: dict) -> None:
    rel = uri[len(prefix) :].strip("/")
    for entry in entries_under(manifest, rel):
        sub = entry["path"][len(rel) :].lstrip("/")
        path = local / sub if sub else local
        if not path.is_file():
            raise StoreError(f"{join(prefix, entry['path'])}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise StoreError(
                f"{join(prefix, entry['path'])}: does not match its manifest (size {size}, expected "
                f"{entry['size']}); the artifact is corrupt or was overwritten after publishing"
            )
