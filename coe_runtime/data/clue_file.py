"""The clue file: per-speaker persona text and per-dialogue scene text, as one JSON document.

Format (version 1)::

    {
      "version": 1,
      "personas": {"<dialogue key>": {"<speaker>": "persona text", ...}, ...},
      "scenes":   {"<dialogue key>": "scene text", ...},
      "utterance_personas": {"<uid>": {"<speaker>": "persona text", ...}},   # optional
      "meta": {...}                                                          # free-form
    }

A *dialogue key* is ``"<split>/<dialogue_id>"`` or a bare ``"<dialogue_id>"``. Dialogue ids
are unique only within a split (MELD numbers each split's dialogues from 0), so lookups try
the split-qualified key first and fall back to the bare one; files for data whose ids are
unique across splits (the demo data) may use bare keys.

``utterance_personas`` holds personas written from a speaker's lines *up to* one target
utterance (no peeking at later turns); when present for a uid it wins over the dialogue-level
persona for that uid's prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coe_runtime.data.dialogue import parse_json
from coe_runtime.errors import DataError
from coe_runtime.store import atomic_write

CLUE_FILE_VERSION = 1
DEMO_CLUES = Path(__file__).resolve().parent.parent / "demo" / "clues.json"


def dialogue_key(split: str, dialogue_id: str) -> str:
    """The split-qualified key a clue file uses for one dialogue."""
    return f"{split}/{dialogue_id}"


@dataclass
class Clues:
    personas: dict[str, dict[str, str]] = field(default_factory=dict)
    scenes: dict[str, str] = field(default_factory=dict)
    utterance_personas: dict[str, dict[str, str]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def _lookup_key(self, table: dict, dialogue_id: str, split: str | None) -> str | None:
        if split is not None:
            key = dialogue_key(split, dialogue_id)
            if key in table:
                return key
        return dialogue_id if dialogue_id in table else None

    def persona(
        self, dialogue_id: str, speaker: str, split: str | None = None, uid: str | None = None
    ) -> str | None:
        """Persona text for ``speaker`` in a dialogue (the per-utterance one for ``uid`` if given)."""
        if uid is not None and speaker in self.utterance_personas.get(uid, {}):
            return self.utterance_personas[uid][speaker]
        key = self._lookup_key(self.personas, dialogue_id, split)
        return None if key is None else self.personas[key].get(speaker)

    def scene(self, dialogue_id: str, split: str | None = None) -> str | None:
        key = self._lookup_key(self.scenes, dialogue_id, split)
        return None if key is None else self.scenes[key]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": CLUE_FILE_VERSION, "personas": self.personas, "scenes": self.scenes}
        if self.utterance_personas:
            out["utterance_personas"] = self.utterance_personas
        out["meta"] = self.meta
        return out

    def __len__(self) -> int:
        return len(self.personas) + len(self.scenes) + len(self.utterance_personas)


def _require_text(value: Any, source: str, path: str) -> str:
    if not isinstance(value, str):
        raise DataError(source, None, f"{path}: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(source, None, f"{path}: empty text; leave the entry out instead")
    return value.strip()


def _speaker_table(value: Any, source: str, path: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise DataError(
            source, None, f"{path}: expected an object {{speaker: persona text}}, got {type(value).__name__}"
        )
    return {speaker: _require_text(text, source, f"{path}.{speaker}") for speaker, text in value.items()}


def parse_clues(obj: Any, source: str = "clue file") -> Clues:
    """Validate a decoded clue document; errors name the JSON path and what was expected."""
    if not isinstance(obj, dict):
        raise DataError(
            source,
            None,
            f"$: expected a JSON object with 'version', 'personas', 'scenes', got {type(obj).__name__}",
        )
    version = obj.get("version")
    if version != CLUE_FILE_VERSION:
        raise DataError(source, None, f"$.version: expected {CLUE_FILE_VERSION}, got {version!r}")
    unknown = sorted(set(obj) - {"version", "personas", "scenes", "utterance_personas", "meta"})
    if unknown:
        raise DataError(
            source,
            None,
            f"$: unknown keys {unknown}; expected version, personas, scenes, utterance_personas, meta",
        )
    tables: dict[str, dict] = {}
    for name in ("personas", "scenes", "utterance_personas"):
        value = obj.get(name, {})
        if not isinstance(value, dict):
            raise DataError(
                source, None, f"$.{name}: expected an object keyed by dialogue, got {type(value).__name__}"
            )
        tables[name] = value
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise DataError(source, None, f"$.meta: expected an object, got {type(meta).__name__}")
    return Clues(
        personas={
            key: _speaker_table(v, source, f"$.personas.{key}") for key, v in tables["personas"].items()
        },
        scenes={key: _require_text(v, source, f"$.scenes.{key}") for key, v in tables["scenes"].items()},
        utterance_personas={
            uid: _speaker_table(v, source, f"$.utterance_personas.{uid}")
            for uid, v in tables["utterance_personas"].items()
        },
        meta=meta,
        source=source,
    )


def load_clues(uri: str | Path) -> Clues:
    """Load a clue file from a path or a store URI (file:// or s3://)."""
    from coe_runtime.store import materialize  # store may fetch from S3 into the cache

    path = materialize(str(uri))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(str(uri), None, f"cannot read clue file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise DataError(
            str(uri), None, f"not UTF-8 text ({e.reason} at byte {e.start}); expected a JSON clue file"
        ) from None
    return parse_clues(parse_json(text, str(uri), "expected a clue file"), str(uri))


def write_clues(path: str | Path, clues: Clues) -> None:
    """Write atomically (temp file + rename)."""
    with atomic_write(path) as f:
        f.write(json.dumps(clues.to_dict(), indent=1, ensure_ascii=False, sort_keys=True) + "\n")


def check_coverage(clues: Clues, dialogues: list) -> dict[str, int]:
    """How many dialogues / (dialogue, speaker) pairs of ``dialogues`` the clues cover."""
    scenes = personas = pairs = 0
    for d in dialogues:
        scenes += clues.scene(d.dialogue_id, d.split) is not None
        for speaker in d.speakers:
            pairs += 1
            personas += clues.persona(d.dialogue_id, speaker, d.split) is not None
    return {"dialogues": len(dialogues), "scenes": scenes, "speaker_pairs": pairs, "personas": personas}
