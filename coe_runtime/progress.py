"""Progress events from a running step, as one JSON object per line on stdout.

The local executor parses these lines to drive its live display; in a pod they are ordinary
log lines (``kubectl logs``). Only rank 0 reports.

    COE_PROGRESS {"step": "erc", "phase": "train", "epoch": 1.5, "loss": 0.42, "done": 30, "total": 60, "eta_s": 12.0}
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

PREFIX = "COE_PROGRESS "


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def report(**fields: Any) -> None:
    """Emit one progress event (rank 0 only). Fields: step, phase, epoch, loss, done, total, eta_s, message…"""
    if not is_rank_zero():
        return
    sys.stdout.write(PREFIX + json.dumps(fields, default=str) + "\n")
    sys.stdout.flush()


def parse(line: str) -> dict[str, Any] | None:
    """The event in a log line, or None when the line is not an event."""
    if not line.startswith(PREFIX):
        return None
    try:
        return json.loads(line[len(PREFIX) :])
    except json.JSONDecodeError:
        return None


def throttled(step: str, phase: str, every_s: float = 10.0) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback for long loops (a generation pass): reports at most once per
    ``every_s`` seconds, and always at the end, with an ETA from the rate so far."""
    start = time.monotonic()
    last = [start]

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < every_s:
            return
        last[0] = now
        rate = done / max(now - start, 1e-9)
        eta = (total - done) / rate if rate > 0 else None
        report(step=step, phase=phase, done=done, total=total, eta_s=None if eta is None else round(eta, 1))

    return update
