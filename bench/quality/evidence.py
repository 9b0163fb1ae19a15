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
- ``arm.json``            the arm's row as RESULTS.json holds it (figures read from the store:
  tokens, clue counts, redacted rationale samples, dev and test scores with intervals)

``steps.json`` records each step's fingerprint, so a later report can tell whether the snapshot
is the evidence of the arm's *current* spec (:func:`snapshot_matches`). That lets a fresh clone,
or a machine whose store lacks the arm, rewrite RESULTS.md from the committed evidence instead of
dropping the arm; a changed setting or step version changes a fingerprint, and the arm then
shows as not run.

What is *not* copied: prompts, prepared examples, clue texts and rationales — they hold dataset
text, which must not enter the repository (predictions hold only ids, the model's short answer,
the parsed and gold labels). Rationale samples in RESULTS.md are the model's own words, cut short,
with quoted spans blanked and every run of four or more words that also occurs in the example's
prompt blanked (a small model often repeats a dialogue line), so no dataset line is reproduced.
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
# RESULTS.md's link name -> the file snapshot_arm writes for it (the ERC stage's best.json and the
# test pass's files; a train step's files carry the stage's name).
EVIDENCE_LINKS = {
    "spec": "spec.yaml",
    "steps": "steps.json",
    "best": "erc-best.json",
    "metrics": "metrics.json",
    "predictions": "predictions.jsonl",
}
STEP_ROW_KEYS = ("name", "kind", "fingerprint", "state", "attempts", "duration_s", "attempts_s", "exit_code")
ARM_FILE = "arm.json"
PREDICTION_KEYS = ("id", "output", "parsed_label", "gold", "parse_method", "decoding")
SAMPLE_CHARS = 220
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|'[^']{12,}'")
_WORD = re.compile(r"\w+(?:['’]\w+)*")
ECHO_WORDS = 4  # a shared run this long counts as repeating the prompt


def evidence_files(step_kind: str, names: Iterable[str]) -> list[str]:
    """The file names (of one published step's output folder) that are evidence for RESULTS.md."""
    patterns = STEP_FILES.get(step_kind, ())
    return sorted(n for n in names if "/" not in n and any(fnmatch.fnmatchcase(n, p) for p in patterns))


def slim_prediction(row: Mapping[str, Any]) -> dict[str, Any]:
    """A test prediction without anything but ids, the model's answer and labels (no dataset text)."""
    return {k: row[k] for k in PREDICTION_KEYS if k in row}


def blank_echoes(text: str, source: str, n: int = ECHO_WORDS) -> str:
    """``text`` with every run of ``n`` or more words that also occurs word for word (ignoring
    case and punctuation) in ``source`` replaced by "…"."""
    words = list(_WORD.finditer(text))
    if len(words) < n or not source:
        return text
    src = [w.lower() for w in _WORD.findall(source)]
    grams = {tuple(src[i : i + n]) for i in range(len(src) - n + 1)}
    low = [m.group().lower() for m in words]
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        if tuple(low[i : i + n]) in grams:
            covered[i : i + n] = [True] * n
    out, pos, i = [], 0, 0
    while i < len(words):
        if not covered[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(words) and covered[j + 1]:
            j += 1
        out += [text[pos : words[i].start()], "…"]
        pos, i = words[j].end(), j + 1
    out.append(text[pos:])
    return "".join(out)


def redact_sample(text: str, limit: int = SAMPLE_CHARS, source: str = "") -> str:
    """A generated rationale fit to quote: runs of words repeated from ``source`` (the prompt) and
    quoted spans blanked (either may be a dataset line), whitespace folded, cut to ``limit``
    characters on a word boundary."""
    text = blank_echoes(text, source)
    text = _QUOTED.sub("“…”", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " …"
    return text.replace("|", "\\|")


def rationale_samples(
    records: Sequence[Mapping[str, Any]],
    accepted: int = 3,
    rejected: int = 2,
    prompts: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """A few accepted and rejected generations of one STEeR round, in a fixed order (by id);
    ``prompts`` (id -> prompt) lets the redaction blank what the model repeated from its prompt."""
    prompts = prompts or {}
    ordered = sorted(records, key=lambda r: str(r.get("id")))
    take = [r for r in ordered if r.get("accepted")][:accepted]
    take += [r for r in ordered if not r.get("accepted")][:rejected]

    def quoted(text: Any, example_id: Any) -> str:
        return redact_sample(str(text or ""), source=prompts.get(str(example_id), ""))

    # "answer" is the label the round scored (or parsed) after the model's own rationale; a
    # rationalized sample also shows the hinted rationale, which is what memory stored.
    return [
        {
            "id": r.get("id"),
            "gold": r.get("gold"),
            "parsed": r.get("parsed"),
            "answer": r.get("answer", r.get("parsed")),
            "accepted": bool(r.get("accepted")),
            "via": r.get("via"),
            "text": quoted(r.get("text"), r.get("id")),
            "hint_text": quoted(r.get("hint_text"), r.get("id")) if r.get("hint_text") else None,
        }
        for r in take
    ]


def published_files(view: Any) -> list[str]:
    """The file names a published step's manifest lists (paths inside its output folder)."""
    return [str(f["path"]) for f in (view.manifest or {}).get("files") or [] if f.get("path")]


def snapshot_arm(
    store: Any,
    dest: Path,
    spec_uri: str,
    views: Sequence[Any],
    status_rows: Sequence[Mapping[str, Any]],
) -> dict[str, str]:
    """Copy one arm's evidence from ``store`` into ``dest`` (replaced whole); returns
    ``{link name: path}`` for RESULTS.md's links.

    ``views`` are the arm's :class:`coe_controller.state.StepView` s: a step's files are copied
    when it is done (published with the current fingerprint), from its planned output folder
    (``<experiment>/<step>/<fingerprint>/``) as its manifest lists them. ``status_rows`` are
    ``experiment_status``'s steps: they become ``steps.json`` (state, attempts, the last successful attempt's wall time
    ``duration_s`` and ``attempts_s``, all its attempts')."""
    from coe_runtime.store import join

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if store.exists(spec_uri):
        (tmp / "spec.yaml").write_bytes(store.read_bytes(spec_uri))
    rows = [{k: r.get(k) for k in STEP_ROW_KEYS} for r in status_rows]
    (tmp / "steps.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    for view in views:
        step = view.step
        if not view.done or step.kind not in STEP_FILES:
            continue
        for name in evidence_files(step.kind, published_files(view)):
            # A train step's files are named by the stage (erc-best.json), a round's keep their name.
            target = name if step.kind != "train" else f"{step.name}-{name}"
            if name == "predictions.jsonl":
                slim = [slim_prediction(r) for r in store.read_jsonl(join(step.output, name))]
                text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in slim)
                (tmp / target).write_text(text, encoding="utf-8")
            else:
                (tmp / target).write_bytes(store.read_bytes(join(step.output, name)))
    links = snapshot_links(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    return links


def snapshot_links(snapshot: Path) -> dict[str, str]:
    """``{link name: file name}`` for the evidence files ``snapshot`` holds (:data:`EVIDENCE_LINKS`)."""
    return {key: name for key, name in EVIDENCE_LINKS.items() if (snapshot / name).is_file()}


def snapshot_matches(snapshot: Path, views: Sequence[Any]) -> bool:
    """Whether ``snapshot`` (an arm's folder of evidence) holds the results of exactly the steps in
    ``views`` (the arm's current plan, :class:`coe_controller.state.StepView` s): the same step
    names, each recorded as succeeded with the fingerprint the plan gives it now."""
    try:
        rows = json.loads((snapshot / "steps.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not (snapshot / ARM_FILE).is_file() or not isinstance(rows, list):
        return False
    recorded = {r.get("name"): r for r in rows if isinstance(r, dict)}
    planned = {v.step.name: v.step.config.fingerprint for v in views}
    return set(recorded) == set(planned) and all(
        recorded[name].get("state") == "succeeded" and recorded[name].get("fingerprint") == fp
        for name, fp in planned.items()
    )


def read_snapshot(snapshot: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An arm's row (``arm.json``) and its slim test predictions (empty when it has none)."""
    from coe_runtime.store import get_store

    row = json.loads((snapshot / ARM_FILE).read_text(encoding="utf-8"))
    preds_uri = (snapshot / EVIDENCE_LINKS["predictions"]).resolve().as_uri()
    store = get_store(preds_uri)
    return row, store.read_jsonl(preds_uri) if store.exists(preds_uri) else []
