"""The files behind each number of RESULTS.md, copied into the repository, and rationale samples.

A quality run lives in its store (often outside the repository, e.g. ``file:///big/disk/...``), so a
reader of RESULTS.md could not check a number. After every arm the runner copies the small files
that produce the arm's row into ``bench/quality/runs/<dataset>/<arm>/`` and links the table to them:

- ``spec.yaml``           the resolved experiment spec the local executor ran
- ``steps.json``          every planned step: state, attempts, wall time, exit code
- ``best.json``, ``dev-metrics-epoch-N.json``   dev figures of the ERC stage (model selection)
- ``metrics.json``, ``predictions.jsonl``        the test pass (one line per test utterance)
- ``round-N.json``        each STEeR round's acceptance figures
- ``clues-summary.json``  the clue step's counts

What is *not* copied: prompts, prepared examples, clue texts and rationales — they hold dataset
text, which must not enter the repository (predictions hold only ids, the model's short answer,
the parsed and gold labels). Rationale samples in RESULTS.md are the model's own words, cut short
and with quoted spans blanked, so no dataset line is reproduced.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# (step kind, file name pattern) -> copied when the step is published.
STEP_FILES: dict[str, tuple[str, ...]] = {
    "train": ("best.json", "dev-metrics-epoch-*.json"),
    "generate": ("metrics.json", "predictions.jsonl"),
    "steer_round": ("round-*.json",),
    "clues": ("clues-summary.json",),
}
PREDICTION_KEYS = ("id", "output", "parsed_label", "gold", "parse_method")
SAMPLE_CHARS = 220
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|'[^']{12,}'")


def evidence_files(step_kind: str, names: Iterable[str]) -> list[str]:
    """The file names (of one published step's output folder) that are evidence for RESULTS.md."""
    patterns = STEP_FILES.get(step_kind, ())
    return sorted(n for n in names if "/" not in n and any(fnmatch.fnmatchcase(n, p) for p in patterns))


def slim_prediction(row: Mapping[str, Any]) -> dict[str, Any]:
    """A test prediction without anything but ids, the model's answer and labels (no dataset text)."""
    return {k: row[k] for k in PREDICTION_KEYS if k in row}


def redact_sample(text: str, limit: int = SAMPLE_CHARS) -> str:
    """A generated rationale fit to quote: quoted spans blanked (they may repeat a dataset line),
    whitespace folded, cut to ``limit`` characters on a word boundary."""
    text = _QUOTED.sub("“…”", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " …"
    return text.replace("|", "\\|")


def rationale_samples(
    records: Sequence[Mapping[str, Any]], accepted: int = 3, rejected: int = 2
) -> list[dict[str, Any]]:
    """A few accepted and rejected generations of one STEeR round, in a fixed order (by id)."""
    ordered = sorted(records, key=lambda r: str(r.get("id")))
    take = [r for r in ordered if r.get("accepted")][:accepted]
    take += [r for r in ordered if not r.get("accepted")][:rejected]
    return [
        {
            "id": r.get("id"),
            "gold": r.get("gold"),
            "parsed": r.get("parsed"),
            "accepted": bool(r.get("accepted")),
            "via": r.get("via"),
            "text": redact_sample(str(r.get("text") or "")),
        }
        for r in take
    ]


def snapshot_arm(
    store: Any,
    dest: Path,
    spec_uri: str,
    steps: Sequence[Any],
    status_rows: Sequence[Mapping[str, Any]],
) -> dict[str, str]:
    """Copy one arm's evidence from ``store`` into ``dest`` (replaced whole); returns
    ``{link name: path}`` for RESULTS.md's links. ``steps`` are the planned steps (name, kind, output)."""
    from coe_runtime.store import join

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    links: dict[str, str] = {}
    if store.exists(spec_uri):
        (tmp / "spec.yaml").write_bytes(store.read_bytes(spec_uri))
        links["spec"] = "spec.yaml"
    rows = [
        {k: r.get(k) for k in ("name", "kind", "state", "attempts", "duration_s", "exit_code")}
        for r in status_rows
    ]
    (tmp / "steps.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    links["steps"] = "steps.json"
    done = {r["name"] for r in status_rows if r.get("state") == "succeeded"}
    for step in steps:
        if step.name not in done or step.kind not in STEP_FILES:
            continue
        root = step.output.rstrip("/") + "/"
        names = [u[len(root) :] for u in store.list(step.output) if u.startswith(root)]
        for name in evidence_files(step.kind, names):
            # A train step's files are named by the stage (erc-best.json), a round's keep their name.
            target = name if step.kind != "train" else f"{step.name}-{name}"
            if name == "predictions.jsonl":
                slim = [slim_prediction(r) for r in store.read_jsonl(join(step.output, name))]
                text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in slim)
                (tmp / target).write_text(text, encoding="utf-8")
            else:
                (tmp / target).write_bytes(store.read_bytes(join(step.output, name)))
            if step.name == "erc" and name == "best.json":
                links["best"] = target
            elif step.kind == "generate" and name in ("metrics.json", "predictions.jsonl"):
                links[name.split(".")[0]] = target
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    return links
