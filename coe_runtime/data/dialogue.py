"""The one typed model every reader produces, and the uniform task example.

Dialogue -> ordered Utterances. Utterance ids are stable across readers of the same data
(seed rationales and clue files are keyed by them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coe_runtime.errors import ConfigError, DataError
from coe_runtime.store import atomic_write, materialize

if TYPE_CHECKING:
    from coe_runtime.data.labels import LabelSet

SPLITS = ("train", "dev", "test")
TASKS = ("erc", "roleplay", "speaker_id", "steer")


@dataclass(frozen=True)
class Utterance:
    uid: str  # stable id, unique within the dataset (e.g. "meld-train-d0-u3", "s01_e15_c01_u001")
    speakers: tuple[str, ...]  # usually one; EmoryNLP has a few lines with several
    text: str
    label: str  # the dataset's own label spelling
    source_line: int | None = None  # line in the original file, for error messages

    @property
    def speaker(self) -> str:
        return " & ".join(self.speakers)


@dataclass
class Dialogue:
    dialogue_id: str  # unique within (dataset, split)
    dataset: str  # label-set name: meld | emorynlp | iemocap | demo | ...
    split: str  # train | dev | test
    utterances: list[Utterance] = field(default_factory=list)
    source: str = ""  # file it came from

    @property
    def speakers(self) -> list[str]:
        seen: dict[str, None] = {}
        for u in self.utterances:
            for s in u.speakers:
                seen.setdefault(s, None)
        return list(seen)


@dataclass
class Example:
    """One training / inference example, the same form for every task.

    ``meta`` carries at least ``dialogue_id`` and ``uid``; ERC/STEeR examples also carry
    ``label`` (dataset's own spelling) and ``label_set``.
    """

    id: str
    task: str
    prompt: str
    target: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    def to_reference(self) -> str:
        """The reference implementation's ``{"input", "target"}`` line."""
        return json.dumps({"input": self.prompt, "target": self.target}, ensure_ascii=False)


def gold_label(example: Example, label_set: LabelSet, source: str, line: int | None = None) -> str | None:
    """The example's gold label (``meta.label``, the dataset's own spelling), checked against the
    label set it is judged with; None when the example carries none (e.g. unlabelled inference)."""
    label = example.meta.get("label")
    if label is not None and label not in label_set.labels:
        raise DataError(
            source,
            line,
            f"example {example.id!r} has label {label!r}, not in label set {label_set.name!r} "
            f"{list(label_set.labels)}; the step's label_set must be the dataset's own",
        )
    return label


def write_examples(path: str | Path, examples: Iterable[Example]) -> int:
    """Write JSONL atomically (temp file + rename): never a half-written artifact."""
    n = 0
    with atomic_write(path) as f:
        for ex in examples:
            f.write(ex.to_json() + "\n")
            n += 1
    return n


def parse_json(text: str, source: str, expected: str) -> Any:
    """A whole JSON document; one that is not JSON is a DataError naming ``source`` and the line,
    then ``expected``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            source, e.lineno, f"not valid JSON ({e.msg} at column {e.colno}): {expected}"
        ) from None


def iter_jsonl(lines: Iterable[str], source: str, expected: str) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line of a JSONL text; a line that is not JSON is a
    DataError naming ``source`` and the line, then ``expected`` (what a line should hold)."""
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(
                source, lineno, f"not valid JSON ({e.msg} at column {e.colno}): {expected}"
            ) from None
        yield lineno, value


def iter_examples(path: str | Path) -> Iterator[Example]:
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for lineno, d in iter_jsonl(f, str(path), "expected one example object per line"):
            missing = [k for k in ("id", "task", "prompt", "target") if k not in d]
            if missing:
                raise DataError(
                    str(path),
                    lineno,
                    f"example is missing {missing}; expected keys id, task, prompt, target, meta",
                )
            yield Example(d["id"], d["task"], d["prompt"], d["target"], d.get("meta") or {})


def read_examples(path: str | Path) -> list[Example]:
    return list(iter_examples(path))


def read_examples_uri(uri: str, field: str) -> list:
    """Examples from a file URI/path named by config field ``field``; a clear error when absent."""
    path = materialize(uri)
    if not Path(path).is_file():
        raise ConfigError(f"{field}: {uri} does not exist (expected an example JSONL file)")
    return read_examples(path)
