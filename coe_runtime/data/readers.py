"""Readers: each benchmark's original files -> ``Dialogue`` / ``Utterance`` (coe_runtime.data.dialogue).

Formats (documented in docs/data-formats.md):

- ``meld``: ``{train,dev,test}_sent_emo.csv`` from declare-lab/MELD, the current UTF-8 release and older
  copies whose cp1252 punctuation was decoded as Latin-1 (repaired here).
- ``emorynlp``: ``emorynlp_{train,dev,test}_final.csv``, the ERC split used by COSMIC/InstructERC/CoE.
- ``emorynlp-json``: the EmoryNLP v1.0 release, ``emotion-detection-{trn,dev,tst}.json``.
- ``jsonl``: the generic format, one utterance per line (for IEMOCAP holders and custom data).
- ``demo``: the bundled invented dialogues (``coe_runtime/demo/dialogues.jsonl``), read as ``jsonl``.

Every reader validates the whole file before returning anything: a defect raises ``DataError`` naming
the file, the line and what was expected; no row is ever skipped.
"""

from __future__ import annotations

import ast
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from coe_runtime.data.dialogue import SPLITS, Dialogue, Utterance, iter_jsonl, parse_json
from coe_runtime.data.labels import LabelSet, get_label_set
from coe_runtime.errors import ConfigError, DataError
from coe_runtime.step import DatasetSource

FORMATS = ("meld", "emorynlp", "emorynlp-json", "jsonl", "demo")

# The label set each format uses when the caller names none (jsonl has no natural default).
DEFAULT_LABEL_SET = {"meld": "meld", "emorynlp": "emorynlp", "emorynlp-json": "emorynlp", "demo": "demo"}

Split = Literal["train", "dev", "test"]  # the keys of dataset.files (coe_runtime.step.DatasetSource)
SPLIT_ALIASES: dict[str, Split] = {
    "train": "train",
    "trn": "train",
    "dev": "dev",
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "test": "test",
    "tst": "test",
}

# File names per format and split, as the original releases spell them.
_SPLIT_FILE_NAMES = {
    "meld": {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"},
    "emorynlp": {
        "train": "emorynlp_train_final.csv",
        "dev": "emorynlp_dev_final.csv",
        "test": "emorynlp_test_final.csv",
    },
    "emorynlp-json": {
        "train": "emotion-detection-trn.json",
        "dev": "emotion-detection-dev.json",
        "test": "emotion-detection-tst.json",
    },
}

# MELD writes time stamps both as H:MM:SS,mmm and HH:MM:SS,mmm; EmoryNLP as HH:MM:SS.mmm.
_TIME_RE = re.compile(r"^\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}$")
_C1_RE = re.compile("[\x80-\x9f]")
_NON_NEG_INT_RE = re.compile(r"^\d+$")


def bundled_demo_path() -> Path:
    """The invented demo dialogues shipped inside the package."""
    return Path(str(resources.files("coe_runtime") / "demo" / "dialogues.jsonl"))


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def normalize_split(name: str) -> Split:
    """``trn``/``tst``/``valid``… -> ``train``/``dev``/``test``; anything else is a ConfigError."""
    key = str(name).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ConfigError(f"unknown split {name!r}; expected one of {list(SPLITS)} (or trn, tst, valid)")
    return SPLIT_ALIASES[key]


def split_from_filename(path: str | Path) -> str | None:
    """The split a file name names (``train_sent_emo.csv`` -> train), or None if none or ambiguous."""
    tokens = re.split(r"[^a-z]+", Path(path).name.lower())
    found = {SPLIT_ALIASES[t] for t in tokens if t in SPLIT_ALIASES}
    return found.pop() if len(found) == 1 else None


def repair_cp1252_mojibake(text: str) -> str:
    """Undo cp1252 bytes that were decoded as Latin-1 (``\\x92`` -> ``’``, ``\\x85`` -> ``…``).

    Applied only to C1 control characters (U+0080..U+009F), which never occur in real text. Per
    character rather than ``s.encode('latin-1').decode('cp1252')`` on the whole string, because the two
    agree wherever the latter works (Latin-1 and cp1252 coincide on U+00A0..U+00FF) and this one also
    handles a string that already mixes repaired and broken punctuation. Raises ValueError for the
    five C1 bytes cp1252 leaves undefined.
    """
    if not _C1_RE.search(text):
        return text
    return _C1_RE.sub(lambda m: bytes([ord(m.group())]).decode("cp1252"), text)


class LabelNormalizer:
    """Maps a label as spelled in a file to the label set's own spelling (case-insensitive).

    Accepts the dataset spelling and the label set's prompt names (``joyful`` for MELD's ``joy``
    under the CoE naming); the dataset spelling wins if the two ever collide.
    """

    def __init__(self, label_set: LabelSet):
        self.label_set = label_set
        self._map: dict[str, str] = {}
        for label, prompt_name in zip(label_set.labels, label_set.prompt_names, strict=True):
            self._map.setdefault(prompt_name.lower(), label)
        for label in label_set.labels:
            self._map[label.lower()] = label

    def __call__(self, value: object) -> str | None:
        if not isinstance(value, str):
            return None
        return self._map.get(value.strip().lower())

    def expected(self) -> str:
        return f"one of {list(self.label_set.labels)} (label set {self.label_set.name})"


def resolve_label_set(label_set: str | LabelSet | None, fmt: str) -> LabelSet:
    if isinstance(label_set, LabelSet):
        return label_set
    name = label_set or DEFAULT_LABEL_SET.get(fmt)
    if name is None:
        raise ConfigError(
            f"format {fmt!r} needs a label set: one of meld, emorynlp, iemocap, demo (e.g. --label-set iemocap)"
        )
    return get_label_set(name)


@dataclass
class ReadNotes:
    """What a reader noticed but accepted (shown by ``coe-ctl data check``), never a dropped row."""

    repaired_fields: int = 0  # fields repaired from cp1252 mojibake
    first_repair_line: int | None = None
    messages: list[str] = field(default_factory=list)

    def repaired(self, line: int | None) -> None:
        self.repaired_fields += 1
        if self.first_repair_line is None:
            self.first_repair_line = line


# --------------------------------------------------------------------------------------------
# File access
# --------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    """Whole file as text: UTF-8 (a BOM is allowed), or a DataError naming the line of the bad byte."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(str(path), None, "no such file") from None
    except IsADirectoryError:
        raise DataError(str(path), None, "is a directory; expected a data file") from None
    except OSError as e:
        raise DataError(str(path), None, f"cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            str(path),
            line,
            f"byte 0x{data[e.start]:02x} is not UTF-8; expected a UTF-8 file "
            "(convert a cp1252 copy with: iconv -f cp1252 -t utf-8 IN > OUT)",
        ) from None


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """(first physical line, fields) for every non-blank record, header included.

    ``strict`` makes the csv module reject broken quoting instead of guessing; an unclosed quote
    at the end of the file (a truncated copy) is reported at the line where the record began.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            msg = str(e)
            if "unexpected end of data" in msg:
                raise DataError(
                    str(path), start, "quoted field never closed before the end of the file: truncated file?"
                ) from None
            raise DataError(
                str(path), reader.line_num, f"broken CSV quoting ({msg}); expected RFC 4180 quoting"
            ) from None
        if row and any(cell.strip() for cell in row):
            yield start, row
        start = reader.line_num + 1


def _text_field(path: Path, line: int | None, column: str, value: str, notes: ReadNotes) -> str:
    if not value.strip():
        raise DataError(str(path), line, f"empty {column}; expected non-empty text")
    try:
        repaired = repair_cp1252_mojibake(value)
    except UnicodeDecodeError:
        bad = _C1_RE.findall(value)[0]  # only a C1 character fails to decode
        raise DataError(
            str(path),
            line,
            f"{column} holds control character U+{ord(bad):04X}, which is neither text nor cp1252 "
            "punctuation decoded as Latin-1; expected readable text",
        ) from None
    if repaired != value:
        notes.repaired(line)
    return repaired


def _non_negative_int(path: Path, line: int, column: str, value: str) -> int:
    if not _NON_NEG_INT_RE.match(value.strip()):
        raise DataError(str(path), line, f"{column} is {value!r}; expected a non-negative integer")
    return int(value)


class _Csv:
    """Header handling shared by the two CSV formats."""

    def __init__(self, path: Path, text: str, required: tuple[str, ...], what: str):
        self.path = path
        self.records = _csv_records(path, text)
        try:
            _, header = next(self.records)
        except StopIteration:
            raise DataError(str(path), 1, f"empty file; expected a {what} header and rows") from None
        self.header = [h.strip() for h in header]
        missing = [c for c in required if c not in self.header]
        if missing:
            raise DataError(
                str(path),
                1,
                f"missing column(s) {missing}; expected a {what} header with {list(required)}, "
                f"found {self.header}",
            )
        self.index = {name: i for i, name in enumerate(self.header)}

    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        n = len(self.header)
        for line, row in self.records:
            if len(row) != n:
                raise DataError(
                    str(self.path),
                    line,
                    f"expected {n} fields ({', '.join(self.header)}), found {len(row)}: "
                    "truncated line or broken quoting?",
                )
            yield line, {name: row[i] for name, i in self.index.items()}


def _check_times(path: Path, line: int, row: dict[str, str], columns: tuple[str, ...]) -> None:
    """Time stamps are the last fields of a row: a malformed one usually means a truncated file."""
    for column in columns:
        if column in row and not _TIME_RE.match(row[column].strip()):
            raise DataError(
                str(path),
                line,
                f"{column} is {row[column]!r}; expected a time stamp like 0:01:02,345 or 00:01:02.345 "
                "(truncated file?)",
            )


def _label(path: Path, line: int, column: str, value: str, labels: LabelNormalizer) -> str:
    label = labels(value)
    if label is None:
        raise DataError(str(path), line, f"unknown label {value!r} in {column}; expected {labels.expected()}")
    return label


def _check_unique(path: Path, line: int | None, uid: str, seen: dict[str, int | None]) -> None:
    if uid in seen:
        first = f" (first at line {seen[uid]})" if seen[uid] is not None else ""
        raise DataError(str(path), line, f"duplicate utterance id {uid!r}{first}")
    seen[uid] = line


def _require_rows(path: Path, dialogues: dict[str, Dialogue]) -> list[Dialogue]:
    if not dialogues:
        raise DataError(str(path), None, "no utterances; expected at least one data row")
    return list(dialogues.values())


# --------------------------------------------------------------------------------------------
# MELD
# --------------------------------------------------------------------------------------------

MELD_REQUIRED = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


def read_meld(path: Path, split: str, labels: LabelNormalizer, notes: ReadNotes) -> list[Dialogue]:
    """MELD ``*_sent_emo.csv``. ``Sr No.`` is not a key (it repeats in train); dialogues are keyed by
    ``Dialogue_ID`` and utterances keep file order (ids have gaps in 76 dialogues, dialogue 60 is absent
    from train)."""
    table = _Csv(path, _read_text(path), MELD_REQUIRED, "MELD")
    dialogues: dict[str, Dialogue] = {}
    seen: dict[str, int | None] = {}
    for line, row in table.rows():
        dia = _non_negative_int(path, line, "Dialogue_ID", row["Dialogue_ID"])
        utt = _non_negative_int(path, line, "Utterance_ID", row["Utterance_ID"])
        text = _text_field(path, line, "Utterance", row["Utterance"], notes)
        speaker = _text_field(path, line, "Speaker", row["Speaker"], notes).strip()
        label = _label(path, line, "Emotion", row["Emotion"], labels)
        _check_times(path, line, row, ("StartTime", "EndTime"))
        uid = f"meld-{split}-d{dia}-u{utt}"
        _check_unique(path, line, uid, seen)
        dialogue_id = f"meld-{split}-d{dia}"
        dialogue = dialogues.get(dialogue_id)
        if dialogue is None:
            dialogue = dialogues[dialogue_id] = Dialogue(
                dialogue_id, labels.label_set.name, split, source=str(path)
            )
        dialogue.utterances.append(Utterance(uid, (speaker,), text, label, line))
    return _require_rows(path, dialogues)


# --------------------------------------------------------------------------------------------
# EmoryNLP
# --------------------------------------------------------------------------------------------

EMORYNLP_REQUIRED = ("Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode")


def emorynlp_scene_id(season: int, episode: int, scene: int) -> str:
    """The v1.0 JSON's scene id (``s01_e15_c01``): the ERC CSV and the JSON share it."""
    return f"s{season:02d}_e{episode:02d}_c{scene:02d}"


def emorynlp_utterance_id(season: int, episode: int, scene: int, utterance: int) -> str:
    """The v1.0 JSON's utterance id (``s01_e15_c01_u001``); the CSV's Utterance_ID is the same number."""
    return f"{emorynlp_scene_id(season, episode, scene)}_u{utterance:03d}"


def _parse_speakers(path: Path, line: int, value: str, notes: ReadNotes) -> tuple[str, ...]:
    """``['Monica Geller']`` (a Python list literal, sometimes with several names)."""
    expected = "expected a Python list of names like ['Monica Geller']"
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        raise DataError(str(path), line, f"Speaker is {value!r}; {expected}") from None
    if not isinstance(parsed, list | tuple) or not parsed:
        raise DataError(str(path), line, f"Speaker is {value!r}; {expected}")
    speakers = []
    for name in parsed:
        if not isinstance(name, str) or not name.strip():
            raise DataError(str(path), line, f"Speaker is {value!r}; {expected} (non-empty strings)")
        speakers.append(_text_field(path, line, "Speaker", name, notes).strip())
    return tuple(speakers)


def read_emorynlp_csv(path: Path, split: str, labels: LabelNormalizer, notes: ReadNotes) -> list[Dialogue]:
    """EmoryNLP ERC CSV: a scene is keyed by (Season, Episode, Scene_ID), not Scene_ID alone."""
    table = _Csv(path, _read_text(path), EMORYNLP_REQUIRED, "EmoryNLP")
    dialogues: dict[str, Dialogue] = {}
    seen: dict[str, int | None] = {}
    for line, row in table.rows():
        season = _non_negative_int(path, line, "Season", row["Season"])
        episode = _non_negative_int(path, line, "Episode", row["Episode"])
        scene = _non_negative_int(path, line, "Scene_ID", row["Scene_ID"])
        utt = _non_negative_int(path, line, "Utterance_ID", row["Utterance_ID"])
        text = _text_field(path, line, "Utterance", row["Utterance"], notes)
        speakers = _parse_speakers(path, line, row["Speaker"], notes)
        label = _label(path, line, "Emotion", row["Emotion"], labels)
        _check_times(path, line, row, ("Start_Time", "End_Time"))
        uid = emorynlp_utterance_id(season, episode, scene, utt)
        _check_unique(path, line, uid, seen)
        dialogue_id = emorynlp_scene_id(season, episode, scene)
        dialogue = dialogues.get(dialogue_id)
        if dialogue is None:
            dialogue = dialogues[dialogue_id] = Dialogue(
                dialogue_id, labels.label_set.name, split, source=str(path)
            )
        dialogue.utterances.append(Utterance(uid, speakers, text, label, line))
    return _require_rows(path, dialogues)


_JSON_UID_RE = re.compile(r'"utterance_id"\s*:\s*"([^"\\]*)"')


def _json_uid_lines(text: str) -> dict[str, int]:
    """Line of each ``"utterance_id": "…"`` in the raw text (json.load keeps no positions)."""
    lines: dict[str, int] = {}
    line, pos = 1, 0
    for m in _JSON_UID_RE.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        lines.setdefault(m.group(1), line)
    return lines


_EMORYNLP_JSON_EXPECTED = "expected an EmoryNLP v1.0 object with 'episodes' → 'scenes' → 'utterances'"


def read_emorynlp_json(
    path: Path, split: str | None, labels: LabelNormalizer, notes: ReadNotes
) -> list[Dialogue]:
    """EmoryNLP v1.0: ``{"season_id", "episodes": [{"episode_id", "scenes": [{"scene_id", "utterances":
    [{"utterance_id", "speakers", "transcript", "emotion", …}]}]}]}``."""
    text = _read_text(path)
    doc = parse_json(text, str(path), "truncated file?")
    uid_lines = _json_uid_lines(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("episodes"), list):
        raise DataError(str(path), 1, f"no 'episodes' list; {_EMORYNLP_JSON_EXPECTED}")
    if split is None:
        season = doc.get("season_id")
        split = SPLIT_ALIASES.get(str(season).lower()) if season is not None else None
        if split is None:
            raise DataError(str(path), 1, f"season_id {season!r} names no split; pass the split explicitly")
    dialogues: dict[str, Dialogue] = {}
    seen: dict[str, int | None] = {}
    for e_i, episode in enumerate(doc["episodes"]):
        where = f"episodes[{e_i}]"
        if not isinstance(episode, dict) or not isinstance(episode.get("scenes"), list):
            raise DataError(str(path), None, f"{where} has no 'scenes' list; {_EMORYNLP_JSON_EXPECTED}")
        for s_i, scene in enumerate(episode["scenes"]):
            scene_id = _json_scene_id(path, scene, f"{where}.scenes[{s_i}]", dialogues)
            dialogue = Dialogue(scene_id, labels.label_set.name, split, source=str(path))
            for u_i, utt in enumerate(scene["utterances"]):
                uwhere = f"{where}.scenes[{s_i}].utterances[{u_i}]"
                utterance = _json_utterance(path, utt, uwhere, labels, notes, uid_lines)
                _check_unique(path, utterance.source_line, utterance.uid, seen)
                dialogue.utterances.append(utterance)
            if not dialogue.utterances:
                raise DataError(str(path), None, f"scene {scene_id} has no utterances")
            dialogues[scene_id] = dialogue
    return _require_rows(path, dialogues)


def _json_scene_id(path: Path, scene: Any, swhere: str, dialogues: dict[str, Dialogue]) -> str:
    """The id of one EmoryNLP scene (a scene object with an utterances list, not seen before)."""
    if not isinstance(scene, dict) or not isinstance(scene.get("utterances"), list):
        raise DataError(str(path), None, f"{swhere} has no 'utterances' list; {_EMORYNLP_JSON_EXPECTED}")
    scene_id = scene.get("scene_id")
    if not isinstance(scene_id, str) or not scene_id:
        raise DataError(str(path), None, f"{swhere} has no 'scene_id'; expected a string like s01_e15_c01")
    if scene_id in dialogues:
        raise DataError(str(path), None, f"{swhere}: scene id {scene_id!r} appears twice")
    return scene_id


def _json_utterance(
    path: Path, utt: Any, uwhere: str, labels: LabelNormalizer, notes: ReadNotes, uid_lines: dict[str, int]
) -> Utterance:
    """One EmoryNLP utterance object, checked (its line: where its utterance_id is in the file)."""
    uid = utt.get("utterance_id") if isinstance(utt, dict) else None
    if not isinstance(uid, str) or not uid:
        raise DataError(str(path), None, f"{uwhere} has no 'utterance_id'; expected a string")
    line = uid_lines.get(uid)
    missing = [k for k in ("speakers", "transcript", "emotion") if k not in utt]
    if missing:
        raise DataError(
            str(path),
            line,
            f"utterance {uid} has no {missing}; expected speakers, transcript, emotion",
        )
    transcript = utt["transcript"]
    if not isinstance(transcript, str):
        raise DataError(str(path), line, f"utterance {uid}: transcript is not a string")
    text_ = _text_field(path, line, f"transcript of {uid}", transcript, notes)
    names = utt["speakers"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise DataError(
            str(path),
            line,
            f"utterance {uid}: speakers is {names!r}; expected a non-empty list of names",
        )
    speakers = tuple(_text_field(path, line, "speaker", n, notes).strip() for n in names)
    label = labels(utt["emotion"])
    if label is None:
        raise DataError(
            str(path),
            line,
            f"utterance {uid}: unknown emotion {utt['emotion']!r}; expected {labels.expected()}",
        )
    return Utterance(uid, speakers, text_, label, line)


# --------------------------------------------------------------------------------------------
# Generic JSONL
# --------------------------------------------------------------------------------------------

JSONL_KEYS = ("dialogue_id", "speaker", "text", "label")
JSONL_EXPECTED = (
    'expected {"dialogue_id": str|int, "speaker": str|[str], "text": str, "label": str, '
    '"split"?: "train"|"dev"|"test", "utterance_id"?: str}'
)


def read_jsonl(path: Path, split: str | None, labels: LabelNormalizer, notes: ReadNotes) -> list[Dialogue]:
    """One utterance per line; a dialogue's utterances in file order. The whole file is validated
    (every split), then the dialogues of ``split`` are returned (all splits when ``split`` is None).

    A line's split is its ``split`` field, else ``split``, else the split its file name names.
    """
    text = _read_text(path)
    default_split = split or split_from_filename(path)
    dialogues: dict[str, Dialogue] = {}
    dialogue_lines: dict[str, int] = {}
    seen: dict[str, int | None] = {}
    for line, obj in iter_jsonl(text.splitlines(), str(path), f"truncated file? {JSONL_EXPECTED}"):
        dialogue_id, speakers, utterance_text, label = _jsonl_fields(path, line, obj, labels, notes)
        line_split = _jsonl_line_split(path, line, obj, default_split)
        dialogue = dialogues.get(dialogue_id)
        if dialogue is None:
            dialogue = dialogues[dialogue_id] = Dialogue(
                dialogue_id, labels.label_set.name, line_split, source=str(path)
            )
            dialogue_lines[dialogue_id] = line
        elif dialogue.split != line_split:
            raise DataError(
                str(path),
                line,
                f"dialogue {dialogue_id!r} is in split {line_split!r} here but {dialogue.split!r} at line "
                f"{dialogue_lines[dialogue_id]}; expected one split per dialogue",
            )
        uid = _jsonl_uid(path, line, obj, f"{dialogue_id}-u{len(dialogue.utterances)}")
        _check_unique(path, line, uid, seen)
        dialogue.utterances.append(Utterance(uid, speakers, utterance_text, label, line))

    if not dialogues:
        raise DataError(str(path), None, f"no utterances; {JSONL_EXPECTED}")
    if split is None:
        return list(dialogues.values())
    chosen = [d for d in dialogues.values() if d.split == split]
    if not chosen:
        present = sorted({d.split for d in dialogues.values()})
        raise DataError(str(path), None, f"no utterances for split {split!r}; the file holds {present}")
    return chosen


def _jsonl_fields(
    path: Path, line: int, obj: Any, labels: LabelNormalizer, notes: ReadNotes
) -> tuple[str, tuple[str, ...], str, str]:
    """(dialogue id, speakers, text, label) of one JSONL line, checked."""
    if not isinstance(obj, dict):
        raise DataError(str(path), line, f"found a JSON {type(obj).__name__}; {JSONL_EXPECTED}")
    missing = [k for k in JSONL_KEYS if k not in obj]
    if missing:
        raise DataError(str(path), line, f"missing {missing}; {JSONL_EXPECTED}")

    dia = obj["dialogue_id"]
    if isinstance(dia, bool) or not isinstance(dia, str | int) or not str(dia).strip():
        raise DataError(str(path), line, f"dialogue_id is {dia!r}; expected a non-empty string or an integer")

    speaker = obj["speaker"]
    names = speaker if isinstance(speaker, list) else [speaker]
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise DataError(
            str(path), line, f"speaker is {speaker!r}; expected a non-empty name or a list of names"
        )
    speakers = tuple(_text_field(path, line, "speaker", n, notes).strip() for n in names)

    if not isinstance(obj["text"], str):
        raise DataError(str(path), line, f"text is {obj['text']!r}; expected a string")
    utterance_text = _text_field(path, line, "text", obj["text"], notes)

    label = labels(obj["label"])
    if label is None:
        raise DataError(str(path), line, f"unknown label {obj['label']!r}; expected {labels.expected()}")
    return str(dia).strip(), speakers, utterance_text, label


def _jsonl_line_split(path: Path, line: int, obj: dict, default_split: str | None) -> str:
    """A line's split: its ``split`` field, else the split the caller or the file name gives."""
    if "split" in obj:
        raw_split = obj["split"]
        line_split = SPLIT_ALIASES.get(str(raw_split).strip().lower()) if isinstance(raw_split, str) else None
        if line_split is None:
            raise DataError(str(path), line, f"split is {raw_split!r}; expected one of {list(SPLITS)}")
        return line_split
    if default_split is not None:
        return default_split
    raise DataError(
        str(path),
        line,
        "no 'split' field and the file name names no split; expected \"split\": "
        '"train"|"dev"|"test" on each line, or a file named like train.jsonl',
    )


def _jsonl_uid(path: Path, line: int, obj: dict, default: str) -> str:
    """A line's ``utterance_id`` (stripped), or ``default`` (``<dialogue>-u<index>``) without one."""
    if "utterance_id" not in obj:
        return default
    uid = obj["utterance_id"]
    if not isinstance(uid, str) or not uid.strip():
        raise DataError(str(path), line, f"utterance_id is {uid!r}; expected a non-empty string")
    return uid.strip()


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown data format {fmt!r}; expected one of {list(FORMATS)}")


def read_file(
    path: str | Path | None,
    format: str,
    split: str | None = None,
    label_set: str | LabelSet | None = None,
    notes: ReadNotes | None = None,
) -> list[Dialogue]:
    """Read one original data file into dialogues (file order).

    ``split``: for the CSV formats it defaults to the split the file name names; for ``jsonl``/``demo``
    it selects the dialogues of that split (None: all, each tagged with its own split).
    ``label_set``: name or LabelSet; labels are normalised to its spelling. ``notes`` collects what was
    repaired. ``path`` may be a store URI; for ``demo`` it may be None (the bundled file).
    """
    _check_format(format)
    labels = LabelNormalizer(resolve_label_set(label_set, format))
    notes = notes if notes is not None else ReadNotes()
    if path is None:
        if format != "demo":
            raise ConfigError(f"format {format!r} needs a file path")
        local = bundled_demo_path()
    else:
        local = _local_path(str(path))
    if split is not None:
        split = normalize_split(split)
    if format in ("jsonl", "demo"):
        return read_jsonl(local, split, labels, notes)
    if format == "emorynlp-json":
        return read_emorynlp_json(local, split, labels, notes)
    split = split or split_from_filename(local)
    if split is None:
        raise DataError(
            str(local),
            None,
            f"the file name names no split; expected one of {list(SPLITS)} in it, or pass the split",
        )
    if format == "meld":
        return read_meld(local, split, labels, notes)
    return read_emorynlp_csv(local, split, labels, notes)


def _local_path(path_or_uri: str) -> Path:
    if "://" in path_or_uri:
        from coe_runtime.store import materialize

        return materialize(path_or_uri)
    return Path(path_or_uri).expanduser()


def find_split_files(path: str | Path, format: str) -> dict[str, Path]:
    """The data file of each split found in a directory (or a single file: its split(s)).

    Looks for the original release names first (``train_sent_emo.csv``, ``emotion-detection-trn.json``),
    in the folder and then below it; for ``jsonl``, ``*.jsonl`` files whose name names a split, or one
    ``.jsonl`` file holding ``split`` fields (mapped to every split it holds).
    """
    _check_format(format)
    if format == "demo" and (path is None or str(path) == ""):
        path = bundled_demo_path()
    root = _local_path(str(path))
    if root.is_file():
        return _splits_of_file(root, format)
    if not root.is_dir():
        raise DataError(str(root), None, "no such file or directory")
    if format in _SPLIT_FILE_NAMES:
        found = _release_files(root, format)
        expected = sorted(_SPLIT_FILE_NAMES[format].values())
    else:
        jsonl = sorted(root.glob("*.jsonl")) or sorted(root.rglob("*.jsonl"))
        found = _jsonl_files_by_name(root, jsonl)
        if not found and len(jsonl) == 1:
            return _splits_of_file(jsonl[0], format)
        expected = ["train.jsonl", "dev.jsonl", "test.jsonl (or one .jsonl with 'split' fields)"]
    if not found:
        raise DataError(str(root), None, f"no {format} data files here; expected {expected}")
    return {s: found[s] for s in SPLITS if s in found}


def _release_files(root: Path, format: str) -> dict[str, Path]:
    """Split -> the file with the original release's name, in ``root`` or (only one) below it."""
    found: dict[str, Path] = {}
    for split, name in _SPLIT_FILE_NAMES[format].items():
        direct = root / name
        candidates = [direct] if direct.is_file() else sorted(root.rglob(name))
        if len(candidates) > 1:
            raise DataError(
                str(root),
                None,
                f"several {name} below this folder ({[str(c) for c in candidates]}); name one folder",
            )
        if candidates:
            found[split] = candidates[0]
    return found


def _jsonl_files_by_name(root: Path, jsonl: list[Path]) -> dict[str, Path]:
    """Split -> the ``.jsonl`` file whose name names it (two for one split: a DataError)."""
    found: dict[str, Path] = {}
    for candidate in jsonl:
        named = split_from_filename(candidate)
        if named is None:
            continue
        if named in found:
            raise DataError(str(root), None, f"two {named} files: {found[named]} and {candidate}")
        found[named] = candidate
    return found


def _splits_of_file(path: Path, format: str) -> dict[str, Path]:
    named = split_from_filename(path)
    if format in ("jsonl", "demo"):
        if named is not None:
            return {named: path}
        present: set[str] = set()
        for _, obj in iter_jsonl(_read_text(path).splitlines(), str(path), JSONL_EXPECTED):
            value = obj.get("split") if isinstance(obj, dict) else None
            if isinstance(value, str) and value.strip().lower() in SPLIT_ALIASES:
                present.add(SPLIT_ALIASES[value.strip().lower()])
        if not present:
            raise DataError(str(path), None, "no 'split' fields and the file name names no split")
        return {s: path for s in SPLITS if s in present}
    if named is None:
        raise DataError(
            str(path), None, f"the file name names no split; expected one of {list(SPLITS)} in it"
        )
    return {named: path}


def load_split(source: DatasetSource, split: str) -> list[Dialogue]:
    """The dialogues of one split of a step's dataset (files may be paths, folders or store URIs)."""
    split = normalize_split(split)
    ref = source.label_set
    label_set = get_label_set(ref.name, ref.naming, ref.custom_prompt_names or None)
    location = source.files.get(split)
    if location is None:
        if source.format != "demo":
            raise ConfigError(
                f"dataset.files has no {split!r} entry; expected a path or URI for each of {list(SPLITS)} "
                f"(format {source.format})"
            )
        return read_file(None, "demo", split, label_set)
    local = _local_path(location)
    if local.is_dir():
        files = find_split_files(local, source.format)
        if split not in files:
            raise DataError(str(local), None, f"no {split} file for format {source.format} in this folder")
        local = files[split]
    return read_file(local, source.format, split, label_set)
