"""The step driver: the one way every step kind runs (``python -m coe_runtime`` calls it).

1. A step whose result with the same fingerprint is published is not run again: the driver
   returns the summary its manifest recorded (``"skipped": true``). Results of other fingerprints
   (an earlier spec) live in other folders and are never looked at, reused or overwritten.
2. Otherwise the step kind's run function does the work; it publishes through
   :func:`coe_runtime.record.publish_step` (rank 0, manifest last, run record beside the outputs).
3. The exit-code contract (``coe_runtime.errors.exit_code_for``) is applied by ``__main__``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from coe_runtime.record import published_manifest
from coe_runtime.store import normalize_uri

# Manifest meta keys that describe the step rather than summarise its run.
_NOT_SUMMARY = ("identity", "fingerprint", "kind")


def runner(kind: str) -> Callable[[Any], dict]:
    """The step kind's run function, imported only when needed (torch/transformers are slow to import)."""
    if kind == "prepare":
        from coe_runtime.prepare import run_prepare

        return run_prepare
    if kind == "clues":
        from coe_runtime.clues import run_clues

        return run_clues
    if kind == "train":
        from coe_runtime.train import run_train

        return run_train
    if kind == "generate":
        from coe_runtime.evaluate import run_generate

        return run_generate
    if kind == "steer_round":
        from coe_runtime.steer import run_steer_round

        return run_steer_round
    if kind == "model":
        from coe_runtime.models.hub import run_model

        return run_model
    raise AssertionError(kind)


def published_summary(step: Any) -> dict[str, Any] | None:
    """What a published run of this exact step recorded, or None when there is none."""
    manifest = published_manifest(step)
    if manifest is None:
        return None
    meta = manifest.get("meta") or {}
    return {**{k: v for k, v in meta.items() if k not in _NOT_SUMMARY}, "skipped": True}


def set_torch_threads(n: int) -> None:
    """Fix torch's intra-op thread count for this process (0: leave torch's default).

    Set before torch is imported (OMP/MKL read it then) and again on torch itself if it is loaded:
    CPU results differ between thread counts, so the count is part of the step's identity.
    """
    if n <= 0:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def run_step(step: Any, run: Callable[[Any], dict] | None = None) -> dict[str, Any]:
    """Run one step unless its result is published already; returns the step's summary."""
    step = step.model_copy(update={"output": normalize_uri(step.output)})  # a plain path is a file:// URI
    done = published_summary(step)
    if done is not None:
        return done
    set_torch_threads(step.distributed.torch_threads)
    return (run or runner(step.kind))(step)
