"""Moving artifacts between a store and this machine: the local cache (``materialize``), ``download``, ``copy``.

Everything here is written against ``Store`` and ``get_store``; it works the same for every back-end.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from coe_runtime.errors import StoreError
from coe_runtime.store.base import (
    MANIFEST,
    Store,
    entries_under,
    join,
    normalize_uri,
    sha256_file,
    verify_file,
)
from coe_runtime.store.file import FileStore
from coe_runtime.store.registry import get_store


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
    with artifact_lock(uri):
        return download(uri, cache_path(uri), cache=True).path


@contextlib.contextmanager
def artifact_lock(uri: str) -> Iterator[None]:
    """Hold the cache's lock on ``uri`` (an exclusive ``flock`` on a file under ``<cache>/locks``).

    The cache may be shared: a node-local volume mounted at ``$COE_CACHE_DIR`` serves every pod on
    the node. Pods that start together would otherwise each fetch the whole base model; with the
    lock the first one downloads and the others wait, then find every file intact (checked against
    the manifest) and fetch nothing. The kernel drops the lock when its holder dies, so a killed pod
    never leaves the cache locked.
    """
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / (hashlib.sha256(uri.encode()).hexdigest()[:32] + ".lock")
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    if prefix is not None and manifest is not None:  # find_manifest gives both or neither
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
            if prefix is not None and manifest is not None:
                _verify_local(local, prefix, src, manifest)
        else:
            result = download(src, Path(staging) / "artifact")
            local = result.path
        name = src.rsplit("/", 1)[-1]
        target = dst
        if local.is_dir():
            if result.published is not None and result.published == src:
                src_manifest = src_store.manifest(src)
                if src_manifest is None:
                    raise StoreError(f"{src}: its manifest disappeared while it was being copied")
                meta = dict(src_manifest.get("meta") or {})
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
