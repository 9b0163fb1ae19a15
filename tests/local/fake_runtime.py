"""A stand-in for ``python -m coe_runtime`` that publishes plausible outputs in milliseconds.

The executor tests run it via ``$COE_RUNTIME_MODULE=tests.local.fake_runtime`` so that resuming,
failing and interrupting can be tested without training a model. It validates its step config
with the real schema, reports progress like the runtime and publishes through the real store.

Environment: ``FAKE_SLEEP=step:seconds`` sleeps inside that step (after writing
``FAKE_MARK_DIR/<step>.pid``); ``FAKE_FAIL=step:code`` exits with that code in that step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from coe_runtime import progress
from coe_runtime.record import publish_step
from coe_runtime.step import load_step

LABELS = ["neutral", "joy", "anger"]


def _env_pair(name: str, step: str) -> str | None:
    value = os.environ.get(name, "")
    if ":" in value and value.split(":", 1)[0] == step:
        return value.split(":", 1)[1]
    return None


def _examples(split: str, n: int) -> list[dict]:
    # neutral is the majority label, so the baseline is easy to check.
    return [
        {
            "id": f"{split}-{i}",
            "task": "erc",
            "prompt": f"p{i}",
            "target": "t",
            "meta": {"label": LABELS[0] if i % 3 else LABELS[1 + i % 2], "uid": f"u{i}", "dialogue_id": "d"},
        }
        for i in range(n)
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind")
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    cfg = load_step(args.config)
    assert cfg.kind == args.kind, (cfg.kind, args.kind)
    name = cfg.name
    progress.report(step=name, phase="start")
    failure = _env_pair("FAKE_FAIL", name)
    if failure:
        for i in range(30):  # a step that got some way first: its progress must not bury the error
            progress.report(step=name, phase="train", done=i, total=100)
        print(f"fake failure in {name}", file=sys.stderr)
        return int(failure)
    sleep = _env_pair("FAKE_SLEEP", name)
    if sleep:
        mark = Path(os.environ["FAKE_MARK_DIR"]) / f"{name}.pid"
        mark.write_text(str(os.getpid()))
        for i in range(int(float(sleep) * 10)):
            progress.report(step=name, phase="train", epoch=i / 10, loss=1.0, done=i, total=100)
            time.sleep(0.1)
    out = Path(tempfile.mkdtemp())
    if cfg.kind == "prepare":
        for split, n in (("train", 12), ("dev", 6), ("test", 6)):
            (out / f"erc-{split}.jsonl").write_text(
                "".join(json.dumps(e) + "\n" for e in _examples(split, n))
            )
        (out / "memory-r0.jsonl").write_text("{}\n")
        (out / "pool-r0.jsonl").write_text("{}\n")
    elif cfg.kind == "train":
        (out / "adapter").mkdir()
        (out / "adapter" / "adapter_config.json").write_text(json.dumps({"init": cfg.init_adapter}))
        if cfg.eval_file:
            (out / "best.json").write_text(json.dumps({"epoch": 1, "metrics": {"weighted_f1": 61.5}}))
        progress.report(step=name, phase="train", epoch=1.0, loss=0.5, done=1, total=1, eta_s=0)
    elif cfg.kind == "steer_round":
        n = cfg.round
        (out / f"round-{n}.json").write_text(
            json.dumps({"round": n, "accepted": 3, "continue": n < cfg.steer.rounds})
        )
        (out / f"memory-r{n}.jsonl").write_text("{}\n")
        (out / f"pool-r{n}.jsonl").write_text("{}\n")
    elif cfg.kind == "generate":
        (out / "predictions.jsonl").write_text("{}\n")
        (out / "metrics.json").write_text(
            json.dumps({"weighted_f1": 55.25, "macro_f1": 40.0, "accuracy": 60.0})
        )
    else:
        (out / "clues.json").write_text("{}")
    publish_step(cfg, out, meta={"kind": cfg.kind, "fake": True})
    progress.report(step=name, phase="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
