"""The store's interface: ``Store`` (primitives + the shared publish/fetch behaviour), URI and manifest helpers.

A step publishes its outputs atomically: every file under the step's prefix first, then
``MANIFEST.json`` (file list, sizes, sha256) last. A step is done exactly when its manifest
exists; readers verify sizes and checksums when they fetch. The back-ends (``file``, ``s3``)
sit on this module; nothing here imports them.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from coe_runtime.errors import StoreError, TransientStoreError

MANIFEST = "MANIFEST.json"
# The S3 client's environment, named once: settings (endpoint, region, retries, transfers, timeouts)
# and the credential keys before them. The S3 back-end keys its client cache on them, the controller
# copies the settings beside an experiment's Secret, and a TrainJob pod gets them key by key.
S3_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
S3_SETTING_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_RETRY_MODE",
    "AWS_MAX_ATTEMPTS",
    "COE_S3_ADDRESSING_STYLE",
    "COE_S3_MULTIPART_THRESHOLD_MB",
    "COE_S3_MULTIPART_CHUNK_MB",
    "COE_S3_MAX_CONCURRENCY",
    "COE_S3_CONNECT_TIMEOUT_S",
    "COE_S3_READ_TIMEOUT_S",
)


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

    def read_jsonl(self, uri: str) -> builtins.list[dict]:  # `list` here is the method above
        return [json.loads(line) for line in self.read_bytes(uri).decode().splitlines() if line.strip()]

    def write_jsonl(self, uri: str, rows: Iterable[dict]) -> None:
        self.write_bytes(uri, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())

    def put_dir(self, local_dir: str | Path, prefix: str) -> builtins.list[dict]:
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
