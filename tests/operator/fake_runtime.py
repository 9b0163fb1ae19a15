"""A fast stand-in for ``python -m coe_runtime <kind> --config step.json`` (failure/restart tests).

It reads the real step config, checks that the inputs it would read are published, writes small
outputs of the right names (round decisions, metrics) and publishes them through the real store,
so the controller sees exactly what a real step leaves behind — in a fraction of a second.

As the real runtime (coe_runtime.train.publish_outputs and record.publish_step run on world rank 0), only
node 0 publishes (``PET_NODE_RANK``, which torchrun reads as its node rank;
the other nodes check their inputs and exit 0). Two knobs, set as pod env through the experiment's
``resources.env`` (a step's own through ``resources.overrides``), let a test stop a pod mid-run:
``FAKE_RUNTIME_HOLD_S`` (wait that long before publishing) and ``FAKE_RUNTIME_IGNORE_SIGTERM=1`` (a
runtime that ignores SIGTERM, so only the SIGKILL at the end of the grace period stops it). Without
the latter, SIGTERM ends the process by Python's default action (the container reports 143).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from coe_runtime.record import publish_step
from coe_runtime.step import load_step
from coe_runtime.store import get_store


def main(argv: list[str]) -> int:
    kind, config = argv[0], argv[argv.index("--config") + 1]
    if os.environ.get("FAKE_RUNTIME_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    step = load_step(config)
    assert step.kind == kind, (step.kind, kind)
    store = get_store(step.output)
    # The controller must start a step only after its inputs are published.
    adapter = getattr(step, "init_adapter", None) or getattr(step, "adapter", None)
    if adapter and not store.list(adapter):
        print(f"fake runtime: input adapter {adapter} is not published", file=sys.stderr)
        return 2
    print(f"fake runtime: started {kind}", flush=True)
    time.sleep(float(os.environ.get("FAKE_RUNTIME_HOLD_S", "0")))
    node = int(os.environ.get("PET_NODE_RANK", "0"))
    if node != 0:
        print(f"fake runtime: node {node} done (node 0 publishes)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if kind == "train":
            (out / "adapter").mkdir()
            (out / "adapter" / "adapter_config.json").write_text("{}")
            if step.eval_file:
                (out / "best.json").write_text(json.dumps({"epoch": 1, "weighted_f1": 0.61, "accuracy": 0.7}))
        elif kind == "steer_round":
            n = step.round
            decision = {
                "round": n,
                "continue": n < step.steer.rounds,
                "accepted": 3,
                "memory_size": 10 + 3 * n,
            }
            (out / f"round-{n}.json").write_text(json.dumps(decision))
            (out / f"memory-r{n}.jsonl").write_text("")
            (out / f"pool-r{n}.jsonl").write_text("")
        elif kind == "generate":
            (out / "predictions.jsonl").write_text("")
            (out / "metrics.json").write_text(json.dumps({"weighted_f1": 0.55, "accuracy": 0.6}))
        else:
            (out / "summary.json").write_text(json.dumps({"kind": kind}))
        publish_step(step, out, meta={"kind": step.kind, "fake": True})
    print(f"fake runtime: published {step.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
