"""Base models from where clusters keep them: Hub ids, model folders in the store, local paths.

``base_model.name_or_path`` is one of:

* a built-in name (``tiny``, ``smollm2-135m-gguf``: built by coe_runtime.models.loading, no network);
* a **store URI** (``s3://bucket/models/mistral-7b``, ``file:///…``): a model folder in the store,
  published with a ``MANIFEST.json`` (sha256 per file) by ``coe-ctl artifacts upload-model`` or by
  a ``model`` step. It is fetched through the node-local cache (``$COE_CACHE_DIR``), every file
  checked against the manifest; a folder without a manifest (``aws s3 sync``) is used with a warning
  that nothing could be verified;
* a **local path** (absolute, ``./``-relative or ``~``): a folder where the step runs, e.g. a PVC
  mounted into the pod. When it holds a ``MANIFEST.json`` (a copy of a store folder) its files are
  verified against it too;
* a **Hugging Face Hub id** (``org/name`` or ``name``). The planner (coe_controller.planner) turns
  it into a ``model`` step, planned first: :func:`run_model` snapshots the repository once per
  experiment into ``<store>/<experiment>/model/<fingerprint>/`` and every later step reads that
  folder as its base model, so a 15 GB model leaves the Hub once per experiment, not once per pod.

Every failure to find or trust a model (missing folder, digest mismatch, no ``config.json``, an
unknown or gated Hub repository) is a :class:`~coe_runtime.errors.ConfigError` naming the URI
(exit 2, permanent); storage and network outages stay retryable (exit 175).

What cannot be tested on machines without network access: the Hub client itself
(:class:`HuggingFaceHub`, a thin wrapper of ``huggingface_hub``) and its error mapping against real
Hub answers. The tests run the same snapshot path with :class:`LocalHub`, a folder laid out like
the Hub (``<root>/<org>/<name>/``), chosen with ``$COE_HF_LOCAL_HUB`` (a test hook).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from coe_runtime.errors import ConfigError, StoreError, TransientStoreError
from coe_runtime.store import (
    MANIFEST,
    cache_dir,
    cache_path,
    download,
    get_store,
    normalize_uri,
    sha256_file,
)

# Names coe_runtime.models.loading builds itself (kept in step with its TINY / SMOLLM2_GGUF; a test checks).
BUILTIN_MODELS = ("tiny", "smollm2-135m-gguf")
LOCAL_HUB_ENV = "COE_HF_LOCAL_HUB"  # test hook: a folder that stands in for the Hub
MODEL_KIND = "model"  # manifest meta "kind" of a model folder
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

# Weights in formats a transformers checkpoint does not need when safetensors are there (the Hub
# repositories of most 7B models carry both: downloading the .bin copy too doubles 15 GB).
_OTHER_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "consolidated*", "original/*")
_NEVER = ("*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", ".*", "*/.*")


def is_hub_id(name_or_path: str) -> bool:
    """``org/name`` or ``name`` that is not a built-in name, a URI or a path (``/``, ``.``, ``~``)."""
    if name_or_path in BUILTIN_MODELS or "://" in name_or_path:
        return False
    if name_or_path.startswith(("/", ".", "~")) or ".." in name_or_path or "--" in name_or_path:
        return False
    return bool(_HUB_ID.match(name_or_path))


def is_store_uri(name_or_path: str) -> bool:
    return "://" in name_or_path


# --------------------------------------------------------------------------------------------
# Reading a model folder: store URI or local path, verified
# --------------------------------------------------------------------------------------------
def model_folder(name_or_path: str) -> Path:
    """A local folder holding the model ``name_or_path`` (a store URI or a local path), verified.

    Store URIs go through the node-local cache; concurrent processes on a node (the ranks of a pod)
    take turns, so the model is downloaded once per node, not once per process.
    """
    if is_store_uri(name_or_path):
        uri = normalize_uri(name_or_path).rstrip("/")
        if urlparse(uri).scheme == "file":
            path = Path(urlparse(uri).path)
            if not path.is_dir():
                raise ConfigError(f"model {name_or_path}: no such folder in the store")
            _verify_local(path, name_or_path)
        else:
            path = _fetch_remote(uri, name_or_path)
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"model {name_or_path}: cannot load it: no such folder here (a local path must exist where the step "
                "runs, e.g. a PVC mounted into the pod; for a model in the store use its s3:// URI)"
            )
        _verify_local(path, name_or_path)
    _check_config(path, name_or_path)
    return path


def _fetch_remote(uri: str, label: str) -> Path:
    dest = cache_path(uri)
    with _node_lock(uri):
        try:
            transfer = download(uri, dest, cache=True)
        except TransientStoreError:
            raise
        except StoreError as e:
            raise ConfigError(f"model {label}: {e}") from None
    if transfer.published is None:
        print(
            f"warning: model {label} has no {MANIFEST}: its files could not be verified "
            "(upload it with `coe-ctl artifacts upload-model` to get sha256 digests)",
            file=sys.stderr,
        )
    return transfer.path


def _check_config(path: Path, label: str) -> None:
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model {label}: no config.json there; expected a Hugging Face model folder "
            "(config.json, weights, tokenizer files)"
        )


def _verify_local(path: Path, label: str) -> None:
    """Check a local folder against the ``MANIFEST.json`` it holds (if any).

    Hashing 15 GB on every load would cost a minute: a folder that passed once is remembered by its
    files' sizes and mtimes (under ``$COE_CACHE_DIR/versions/models/``) and hashed again only when
    one of them changes, the same rule the cache applies to unpublished objects.
    """
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"model {label}: unreadable {MANIFEST} ({e})") from None
    files: dict[str, list[int]] = {}
    stamp = {"manifest": sha256_file(manifest_path), "files": files}
    for entry in entries:
        f = path / entry["path"]
        if not f.is_file():
            raise ConfigError(f"model {label}: {entry['path']} is listed in {MANIFEST} but missing")
        st = f.stat()
        files[entry["path"]] = [st.st_size, st.st_mtime_ns]
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    recorded = cache_dir() / "versions" / "models" / f"{key}.json"
    with contextlib.suppress(OSError, ValueError):
        if json.loads(recorded.read_text()) == stamp:
            return
    for entry in entries:
        f = path / entry["path"]
        size = f.stat().st_size
        if size != entry["size"] or sha256_file(f) != entry["sha256"]:
            raise ConfigError(
                f"model {label}: {entry['path']} does not match {MANIFEST} (size {size}, expected "
                f"{entry['size']}; sha256 differs): the model folder is corrupt or was changed after "
                "it was published"
            )
    with contextlib.suppress(OSError):
        recorded.parent.mkdir(parents=True, exist_ok=True)
        recorded.write_text(json.dumps(stamp))


@contextlib.contextmanager
def _node_lock(uri: str) -> Iterator[None]:
    """An exclusive lock per model URI in the node-local cache (released when the process dies)."""
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(uri.encode()).hexdigest()[:32] + ".lock"
    with open(lock_dir / name, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def content_key(name_or_path: str) -> str:
    """What a model *is*, for caches keyed by the model (the clue cache): a store folder published
    as a model is named by its source and a digest of its files' sha256, so the same snapshot of
    one Hub model in two experiments is one model; anything else by its name."""
    if not is_store_uri(name_or_path):
        return name_or_path
    return _content_key(normalize_uri(name_or_path).rstrip("/"))


_CONTENT_KEYS: dict[str, str] = {}


def _content_key(uri: str) -> str:
    if uri not in _CONTENT_KEYS:
        manifest = get_store(uri).manifest(uri)
        if manifest is None:
            _CONTENT_KEYS[uri] = uri
        else:
            meta = manifest.get("meta") or {}
            files = sorted(
                (e["path"], e["sha256"]) for e in manifest["files"] if e["path"] != "run-record.json"
            )
            digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]
            _CONTENT_KEYS[uri] = f"{meta.get('source') or uri}@sha256:{digest}"
    return _CONTENT_KEYS[uri]


# --------------------------------------------------------------------------------------------
# The Hub, and a stand-in for it
# --------------------------------------------------------------------------------------------
class Hub(Protocol):
    def resolve(self, repo_id: str, revision: str | None) -> tuple[str, list[str]]:
        """The commit ``revision`` points at, and the repository's file names at that commit."""

    def download(self, repo_id: str, commit: str, files: list[str], dest: Path) -> None:
        """Download ``files`` of ``repo_id`` at ``commit`` into ``dest`` (keeping their paths)."""


class HuggingFaceHub:
    """The real Hub through ``huggingface_hub``; the token is ``$HF_TOKEN`` (the pod gets it from the
    Secret named by ``baseModel.hfTokenSecret``). Not exercised by the tests: there is no network."""

    def resolve(self, repo_id: str, revision: str | None) -> tuple[str, list[str]]:
        from huggingface_hub import HfApi

        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise ConfigError(
                f"model {repo_id}: HF_HUB_OFFLINE is set, but a Hub id must be downloaded once; unset it "
                "where the model step runs, or use a model folder in the store or a local path"
            )
        with _hub_errors(repo_id, revision):
            info = HfApi().model_info(repo_id, revision=revision)
        return str(info.sha), [s.rfilename for s in info.siblings or []]

    def download(self, repo_id: str, commit: str, files: list[str], dest: Path) -> None:
        from huggingface_hub import snapshot_download

        with _hub_errors(repo_id, commit):
            snapshot_download(repo_id, revision=commit, local_dir=dest, allow_patterns=files)
        shutil.rmtree(dest / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """Hub trouble as the exit-code contract wants it: a wrong id, revision or token is permanent;
    an outage (no answer, 429, 5xx) is retryable."""
    from huggingface_hub import errors as hf

    where = f"model {repo_id}" + (f"@{revision}" if revision else "")
    token_hint = "set baseModel.hfTokenSecret to a Secret holding a Hub token with access to it"
    try:
        yield
    except hf.GatedRepoError:
        raise ConfigError(
            f"{where}: a gated repository; accept its terms on the Hub and {token_hint}"
        ) from None
    except hf.RepositoryNotFoundError:
        raise ConfigError(
            f"{where}: no such repository on the Hub (or it is private: {token_hint})"
        ) from None
    except hf.RevisionNotFoundError:
        raise ConfigError(f"{where}: no such revision on the Hub") from None
    except hf.OfflineModeIsEnabled as e:
        raise ConfigError(f"{where}: {e}") from None
    except hf.HfHubHTTPError as e:
        raise _hub_http_error(where, e, token_hint) from None
    except OSError as e:  # connection refused, DNS, timeouts (httpx's errors are not OSErrors: below)
        raise TransientStoreError(f"{where}: cannot reach the Hub ({e})") from None
    except Exception as e:  # noqa: BLE001 - httpx transport errors, without importing httpx here
        if type(e).__module__.startswith(("httpx", "httpcore", "requests", "urllib3")):
            raise TransientStoreError(f"{where}: cannot reach the Hub ({type(e).__name__}: {e})") from None
        raise


def _hub_http_error(where: str, e: Exception, token_hint: str) -> Exception:
    """What an HTTP error from the Hub means: access refused, or another 4xx, is permanent
    (ConfigError); 429, 5xx and no status at all are an outage (TransientStoreError)."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403):
        return ConfigError(f"{where}: the Hub refused access (HTTP {status}); {token_hint}")
    if status is not None and status < 500 and status != 429:
        return ConfigError(f"{where}: the Hub answered HTTP {status}: {e}")
    return TransientStoreError(f"{where}: the Hub is unavailable ({e})")


class LocalHub:
    """A folder laid out like the Hub (``<root>/<org>/<name>/``): what the tests snapshot from.

    The "commit" is a digest of the repository's files, so it changes when they do.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _repo(self, repo_id: str) -> Path:
        repo = self.root / repo_id
        if not repo.is_dir():
            raise ConfigError(f"model {repo_id}: no such repository on the Hub (stand-in {self.root})")
        return repo

    def resolve(self, repo_id: str, revision: str | None) -> tuple[str, list[str]]:
        repo = self._repo(repo_id)
        files = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for name in files:
            digest.update(f"{name}\0{sha256_file(repo / name)}\0".encode())
        commit = digest.hexdigest()[:40]
        if revision not in (None, "main", commit):
            raise ConfigError(f"model {repo_id}@{revision}: no such revision on the Hub (stand-in)")
        return commit, files

    def download(self, repo_id: str, commit: str, files: list[str], dest: Path) -> None:
        repo = self._repo(repo_id)
        for name in files:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(repo / name, dest / name)


def hub() -> Hub:
    root = os.environ.get(LOCAL_HUB_ENV)
    return LocalHub(root) if root else HuggingFaceHub()


def select_files(files: list[str]) -> list[str]:
    """The files a transformers checkpoint needs: safetensors weights when the repository has them
    (then not its .bin / .pth / GGUF copies), never TensorFlow / Flax / ONNX weights or dotfiles."""

    def matches(name: str, patterns: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatch(name, p) for p in patterns)

    keep = [f for f in files if not matches(f, _NEVER)]
    if any(f.endswith(".safetensors") for f in keep):
        keep = [f for f in keep if not matches(f, _OTHER_WEIGHTS)]
    return keep


def snapshot(repo_id: str, revision: str | None, dest: Path, source: Hub | None = None) -> dict[str, Any]:
    """Download the files of ``repo_id`` a checkpoint needs into ``dest``; returns what was taken."""
    source = source or hub()
    commit, files = source.resolve(repo_id, revision)
    chosen = select_files(files)
    if "config.json" not in chosen:
        raise ConfigError(f"model {repo_id}: the repository has no config.json; not a transformers model")
    dest.mkdir(parents=True, exist_ok=True)
    source.download(repo_id, commit, chosen, dest)
    missing = [f for f in chosen if not (dest / f).is_file()]
    if missing:
        raise TransientStoreError(f"model {repo_id}@{commit}: download incomplete, missing {missing[:5]}")
    return {"source": repo_id, "revision": revision, "commit": commit, "files": len(chosen)}


# --------------------------------------------------------------------------------------------
# The ``model`` step, and uploads
# --------------------------------------------------------------------------------------------
def run_model(step: Any) -> dict[str, Any]:
    """Snapshot ``step.base_model`` (a Hub id) into ``step.output``, manifest last (rank 0 only)."""
    from coe_runtime.progress import is_rank_zero, report
    from coe_runtime.record import publish_step

    repo_id = step.base_model.name_or_path
    if not is_hub_id(repo_id):
        raise ConfigError(f"model step {step.name}: {repo_id!r} is not a Hugging Face Hub id")
    if not is_rank_zero():
        return {}
    started = time.time()
    report(step=step.name, phase="model", message=f"snapshotting {repo_id} from the Hub")
    with tempfile.TemporaryDirectory(prefix="coe-model-") as tmp:
        folder = Path(tmp) / "model"
        meta = snapshot(repo_id, step.revision, folder)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        report(step=step.name, phase="model", message=f"publishing {meta['files']} files ({size} bytes)")
        manifest = publish_step(
            step, folder, meta={"kind": MODEL_KIND, **meta, "bytes": size}, started_at=started
        )
        _keep_in_cache(folder, step.output)
    report(step=step.name, phase="model", message=f"published {repo_id}@{meta['commit']} to {step.output}")
    return {**meta, "bytes": manifest["total_bytes"]}


def _keep_in_cache(folder: Path, uri: str) -> None:
    """The snapshot just uploaded is what later steps on this node would download: keep it in the
    node-local cache (they still check every file against the manifest)."""
    uri = normalize_uri(uri).rstrip("/")
    if urlparse(uri).scheme == "file":
        return
    dest = cache_path(uri)
    if dest.exists():
        return
    with contextlib.suppress(OSError):
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(dest))


def upload_model(local_dir: str | Path, uri: str, source: str | None = None) -> dict:
    """Publish a local model folder at ``uri`` with a manifest (sha256 per file); returns the manifest.

    Hidden entries (``.cache/`` of ``hf download --local-dir``, ``.git``) are left out.
    """
    local = Path(local_dir).expanduser()
    if not local.is_dir():
        raise ConfigError(f"{local_dir}: no such folder")
    _check_config(local, str(local_dir))
    meta = {
        "kind": MODEL_KIND,
        "source": source or local.resolve().name,
        "uploaded_from": str(local.resolve()),
    }
    store = get_store(normalize_uri(uri))
    if not any(local.rglob(".*")):
        return store.publish(local, normalize_uri(uri), meta=meta)
    with tempfile.TemporaryDirectory(prefix="coe-upload-") as tmp:
        staged = Path(tmp)
        for path in sorted(local.rglob("*")):
            rel = path.relative_to(local)
            if (
                path.is_file()
                and not any(part.startswith(".") for part in rel.parts)
                and rel.as_posix() != MANIFEST
            ):
                (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                (staged / rel).symlink_to(path.resolve())
        return store.publish(staged, normalize_uri(uri), meta=meta)


__all__ = [
    "BUILTIN_MODELS",
    "LOCAL_HUB_ENV",
    "HuggingFaceHub",
    "LocalHub",
    "content_key",
    "hub",
    "is_hub_id",
    "is_store_uri",
    "model_folder",
    "run_model",
    "select_files",
    "snapshot",
    "upload_model",
]
