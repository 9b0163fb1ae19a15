"""Publishing a step's results with what produced them.

Every step kind publishes through :func:`publish_step`: its files, a ``run-record.json`` beside
them (package versions, git commit, seeds, torch threads, device, world size, the fingerprint), and
the manifest last, whose ``meta`` carries the fingerprint and the step's identity. So every number
in the store can be traced to the exact settings and inputs that produced it, and a later spec can
say which fields it changed (coe_controller.state).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from coe_runtime.fingerprint import identity
from coe_runtime.store import MANIFEST, get_store

RUN_RECORD = "run-record.json"
_PACKAGES = ("torch", "transformers", "peft", "accelerate", "deepspeed", "tokenizers", "coe-k8s")
GIT_COMMIT_ENV = "COE_GIT_COMMIT"  # set by the image build; else read from a source checkout


def experiment_prefix_of(step: Any) -> str:
    """``<store>/<experiment>`` from a planned step's output ``<experiment>/<step>/<fingerprint>``."""
    out = step.output.rstrip("/")
    if step.fingerprint and out.endswith("/" + step.fingerprint):
        return out.rsplit("/", 2)[0]
    return out.rsplit("/", 1)[0]


def step_identity(step: Any) -> dict[str, Any]:
    return identity(step, experiment_prefix_of(step))


def published_manifest(step: Any, store: Any = None) -> dict | None:
    """The manifest of this exact step (same fingerprint), or None when it has not been published."""
    store = store or get_store(step.output)
    manifest = store.manifest(step.output)
    if manifest is None:
        return None
    if step.fingerprint and (manifest.get("meta") or {}).get("fingerprint") not in (None, step.fingerprint):
        return None  # a folder whose manifest names another identity is not this step's result
    return manifest


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    if os.environ.get(GIT_COMMIT_ENV):
        return os.environ[GIT_COMMIT_ENV]
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _seeds(step: Any) -> dict[str, int]:
    seeds = {"model": step.base_model.seed}
    if getattr(step, "optim", None) is not None:
        seeds["optim"] = step.optim.seed
    if getattr(step, "dataset", None) is not None:
        seeds["subset"] = step.dataset.subset_seed
    return seeds


def _device() -> dict[str, Any]:
    torch = sys.modules.get("torch")  # only describe torch when the step used it
    if torch is None:
        return {"device": "cpu", "torch_threads": None}
    info: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["device"] = "cuda"
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    else:
        info["device"] = "cpu"
    return info


def run_record(step: Any, started_at: float | None = None) -> dict[str, Any]:
    return {
        "step": step.name,
        "kind": step.kind,
        "fingerprint": step.fingerprint or None,
        "packages": _versions(),
        "git_commit": git_commit(),
        "seeds": _seeds(step),
        **_device(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "host": platform.node(),
        "platform": platform.platform(),
        "started_at": started_at,
        "finished_at": time.time(),
    }


def publish_step(
    step: Any, local_dir: str | Path, meta: dict[str, Any], started_at: float | None = None
) -> dict:
    """Write ``run-record.json`` into ``local_dir`` and publish it all under ``step.output``."""
    local_dir = Path(local_dir)
    if (local_dir / MANIFEST).exists():
        raise AssertionError(f"{local_dir}: a step's files must not contain {MANIFEST}")
    (local_dir / RUN_RECORD).write_text(json.dumps(run_record(step, started_at), indent=2) + "\n")
    full_meta = {**meta, "fingerprint": step.fingerprint or None, "identity": step_identity(step)}
    return get_store(step.output).publish(local_dir, step.output, meta=full_meta)
