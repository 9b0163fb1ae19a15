"""Step identity: a fingerprint of everything that went into a step.

A step's fingerprint is the sha256 of its *identity*: the frozen step config with every default
resolved, minus the fields that only say where it goes (``output``, ``fingerprint``), plus the
step-config schema version (and, for a kind in ``STEP_KIND_VERSIONS``, that kind's version). The inputs a step reads from earlier steps are URIs that end in those
steps' fingerprints (``<experiment>/<step>/<fingerprint>/...``), so the identity of a step covers
the identity of everything upstream of it, as in make, DVC or Snakemake: change a setting and that
step and every step downstream of it get new fingerprints; the others keep theirs.

URIs under the experiment's own prefix are written relative to it (``@/prepare/<fp>/erc-train.jsonl``)
so renaming an experiment or moving its store does not, by itself, change what a step *is*.

Pure functions; no I/O.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from typing import Any

from coe_runtime.step import STEP_KIND_VERSIONS, STEP_SCHEMA_VERSION

FINGERPRINT_LENGTH = 16  # hex characters (64 bits): the folder name of a step's results
# Fields that say where a step's results go, not what they are.
_NOT_IDENTITY = ("output", "fingerprint")
EXPERIMENT_REF = "@"  # stands for the experiment's prefix inside an identity


def _relative(value: Any, prefix: str) -> Any:
    if isinstance(value, str):
        if value == prefix:
            return EXPERIMENT_REF
        if value.startswith(prefix + "/"):
            return EXPERIMENT_REF + value[len(prefix) :]
        return value
    if isinstance(value, dict):
        return {k: _relative(v, prefix) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_relative(v, prefix) for v in value]
    return value


# Data that ships inside the package and that a prepare step reads without naming it in its config:
# the bundled seed rationales and the demo dataset. Their bytes are part of the prepare step's
# identity, so editing a seed makes prepare (and everything after it) stale.
# Bundled data folders by the name their files are hashed under: the name, not where the package keeps
# the folder, is part of the identity, so moving a folder inside the package changes no fingerprint.
BUNDLED_DATA = {"seeds": "data/seeds", "demo": "demo"}


@functools.lru_cache(maxsize=1)
def bundled_data_digest() -> str:
    root = resources.files("coe_runtime")
    h = hashlib.sha256()
    for name, folder in BUNDLED_DATA.items():
        base = root.joinpath(*folder.split("/"))
        files = sorted((p for p in _walk(base) if p.is_file()), key=lambda p: str(p))
        for f in files:
            h.update(f"/{name}{str(f)[len(str(base)) :]}".encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:FINGERPRINT_LENGTH]


def _walk(node: Any):
    for child in node.iterdir():
        if child.is_dir():
            yield from _walk(child)
        else:
            yield child


def identity(config: Any, experiment_prefix: str) -> dict[str, Any]:
    """The part of a step config that decides its results, as plain JSON."""
    data = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    for key in _NOT_IDENTITY:
        data.pop(key, None)
    ident = {"schema": STEP_SCHEMA_VERSION, "step": _relative(data, experiment_prefix.rstrip("/"))}
    if data.get("kind") == "prepare":
        ident["bundled_data"] = bundled_data_digest()
    if data.get("kind") in STEP_KIND_VERSIONS:
        ident["kind_version"] = STEP_KIND_VERSIONS[data["kind"]]
    return ident


def fingerprint_of(ident: dict[str, Any]) -> str:
    canonical = json.dumps(ident, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def changed_fields(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths where two identities differ (``step.optim.epochs``, ``step.train_files[0]``).

    An input URI that differs only because an upstream step changed shows up as that input's path,
    which is how a downstream step names *why* it is stale.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                out.append(sub)
            else:
                out.extend(changed_fields(old[key], new[key], sub))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out.extend(changed_fields(a, b, f"{path}[{i}]"))
        return out
    return [] if old == new else [path or "(root)"]


def strip_schema_prefix(paths: list[str]) -> list[str]:
    """``step.optim.epochs`` -> ``optim.epochs`` for messages (the schema version stays ``schema``)."""
    return [p[len("step.") :] if p.startswith("step.") else p for p in paths]
