"""Seed rationales for STEeR: the hand-written start of the memory.

Format: JSON Lines, one seed per line::

    {"uid": "<utterance id of a training utterance>", "label": "<dataset's own label>",
     "rationale": "<one or two short sentences citing only what the prompt shows, WITHOUT the trailing label tag>"}

Seeds are keyed by utterance id, never by text: prompts are rebuilt from the user's own copy of
the data, so no dataset text is stored with the seeds. When the STEeR memory is built the label
set's prompt name is appended as a tag (``... <joyful>``), so the same seeds serve either label
naming. Bundled seed files live in ``coe_runtime/data/seeds/<label set>.jsonl``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coe_runtime.data.dialogue import iter_jsonl
from coe_runtime.data.labels import get_label_set
from coe_runtime.errors import ConfigError, DataError

_TRAILING_TAG_RE = re.compile(r"<\s*[A-Za-z][A-Za-z _-]*\s*>\s*$")
SEEDS_DIR = Path(__file__).resolve().parent / "seeds"


@dataclass(frozen=True)
class Seed:
    uid: str
    label: str  # dataset's own spelling
    rationale: str  # without the label tag
    line: int = 0  # line in the seed file, for error messages
    source: str = ""


def bundled_seed_file(label_set_name: str) -> Path:
    return SEEDS_DIR / f"{label_set_name}.jsonl"


def parse_seed_lines(lines: list[str], source: str, label_set_name: str) -> list[Seed]:
    labels = get_label_set(label_set_name).labels
    seeds: list[Seed] = []
    first_line: dict[str, int] = {}
    for lineno, row in iter_jsonl(lines, source, "expected {uid, label, rationale}"):
        uid, label, rationale = _seed_fields(row, source, lineno, labels, label_set_name)
        if uid in first_line:
            raise DataError(source, lineno, f"uid {uid!r} already has a seed on line {first_line[uid]}")
        first_line[uid] = lineno
        seeds.append(Seed(uid, label, " ".join(rationale.split()), lineno, source))
    if not seeds:
        raise DataError(source, None, "no seeds in file; expected JSON Lines {uid, label, rationale}")
    return seeds


def _seed_fields(
    row: Any, source: str, lineno: int, labels: Sequence[str], label_set_name: str
) -> tuple[str, str, str]:
    """(uid, label, rationale) of one seed line, or a DataError saying what is wrong with it."""
    if not isinstance(row, dict):
        raise DataError(source, lineno, "expected a JSON object {uid, label, rationale}")
    missing = [k for k in ("uid", "label", "rationale") if k not in row]
    if missing:
        raise DataError(source, lineno, f"seed is missing {missing}; expected keys uid, label, rationale")
    unknown = sorted(set(row) - {"uid", "label", "rationale"})
    if unknown:
        raise DataError(source, lineno, f"unknown keys {unknown}; expected uid, label, rationale")
    uid, label, rationale = row["uid"], row["label"], row["rationale"]
    for key, value in (("uid", uid), ("label", label), ("rationale", rationale)):
        if not isinstance(value, str) or not value.strip():
            raise DataError(source, lineno, f"{key}: expected a non-empty string, got {value!r}")
    if label not in labels:
        raise DataError(
            source,
            lineno,
            f"label {label!r} is not in label set {label_set_name!r}; expected one of {list(labels)}",
        )
    tag = _TRAILING_TAG_RE.search(rationale)
    if tag:
        raise DataError(
            source,
            lineno,
            f"rationale ends with a label tag {tag.group(0).strip()!r}; leave it out (the label set's prompt name is appended)",
        )
    return uid, label, rationale


def load_seeds(label_set_name: str, seed_file: str | None = None) -> list[Seed]:
    """The bundled seeds of a label set (``seed_file`` None), or a user's file (path or URI)."""
    if seed_file is None:
        path = bundled_seed_file(label_set_name)
        if not path.is_file():
            raise ConfigError(
                f"no bundled seed rationales for label set {label_set_name!r} (looked for {path}); "
                "give your own with steer.seed_file"
            )
        source = str(path)
    else:
        from coe_runtime.store import materialize  # may fetch from S3

        path = materialize(seed_file)
        source = seed_file
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(source, None, "seed file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(source, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_seed_lines(text.splitlines(), source, label_set_name)
