"""Progress events from a running step, as one JSON object per line on stdout.

The local executor parses these lines to drive its live display; in a pod they are ordinary
log lines (``kubectl logs``). Only rank 0 reports.

    COE_PROGRESS {"step": "erc", "phase": "train", "epoch": 1.5, "loss": 0.42, "done": 30, "total": 60, "eta_s": 12.0}
"""

from __future__ import annotations

import json
import os
import sys
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
