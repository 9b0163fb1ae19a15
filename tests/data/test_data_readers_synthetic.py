"""Readers on small invented files: the generic JSONL format, repairs, and every bad-input message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coe_runtime.data.labels import get_label_set
from coe_runtime.data.readers import (
    ReadNotes,
    bundled_demo_path,
    find_split_files,
    load_split,
    read_file,
    repair_cp1252_mojibake,
    split_from_filename,
)
from coe_runtime.errors import ConfigError, DataError
from coe_runtime.step import DatasetSource, LabelSetRef

MELD_HEADER = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
)


def meld_row(sr, text, speaker, emotion, dia, utt, start="0:00:01,000", end="00:00:02,500"):
    quoted = '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
    return f'{sr},{quoted},{speaker},{emotion},neutral,{dia},{utt},1,2,"{start}","{end}"'


def write_meld(tmp_path: Path, rows: list[str], name="train_sent_emo.csv", newline="\r\n") -> Path:
    path = tmp_path / name
    path.write_bytes((newline.join([MELD_HEADER, *rows]) + newline).encode("utf-8"))
    return path


GOOD_MELD = [
    meld_row(1, "We are out of oat milk again.", "Ana", "sadness", 0, 0),
    meld_row(2, "Then, we buy more,\nlots more.", "Ben", "joy", 0, 1),
    meld_row(1, "The bus left early.", "Ana", "anger", 2, 0),
    meld_row(2, "Wait, what?", "Cleo", "surprise", 2, 3),  # a gap in utterance ids
]


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def raises(fn, *args, match: str, line: int | None = -1, **kwargs) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    if line != -1:
        assert info.value.line == line, str(info.value)
    return info.value


# -- MELD ---------------------------------------------------------------------------------------


def test_meld_crlf_quoted_newlines_gaps(tmp_path):
    dialogues = read_file(write_meld(tmp_path, GOOD_MELD), "meld")
    assert [d.dialogue_id for d in dialogues] == ["meld-train-d0", "meld-train-d2"]
    assert dialogues[0].utterances[1].text == "Then, we buy more,\nlots more."
    assert [u.uid for u in dialogues[1].utterances] == ["meld-train-d2-u0", "meld-train-d2-u3"]
    # Line numbers count physical lines: the quoted newline pushes the next record down.
    assert [u.source_line for d in dialogues for u in d.utterances] == [2, 3, 5, 6]


def test_meld_mojibake_repaired_in_text_and_speaker(tmp_path):
    rows = [meld_row(1, "It\x92s late\x85 really\x97late.", "Mr. Tre\x92ger", "fear", 0, 0)]
    notes = ReadNotes()
    [dialogue] = read_file(write_meld(tmp_path, rows), "meld", notes=notes)
    u = dialogue.utterances[0]
    assert u.text == "It\u2019s late\u2026 really\u2014late."
    assert u.speakers == ("Mr. Tre\u2019ger",)
    assert notes.repaired_fields == 2 and notes.first_repair_line == 2


def test_repair_leaves_clean_and_mixed_text_right():
    assert repair_cp1252_mojibake("caf\u00e9 \u2019ok\u2019") == "caf\u00e9 \u2019ok\u2019"
    assert repair_cp1252_mojibake("caf\u00e9 \x93hi\x94 \u2019") == "caf\u00e9 \u201chi\u201d \u2019"


def test_meld_label_case_insensitive(tmp_path):
    rows = [meld_row(1, "Fine.", "Ana", "Neutral", 0, 0)]
    [d] = read_file(write_meld(tmp_path, rows), "meld")
    assert d.utterances[0].label == "neutral"


def test_meld_missing_column(tmp_path):
    path = tmp_path / "dev_sent_emo.csv"
    path.write_text("Sr No.,Utterance,Speaker,Dialogue_ID,Utterance_ID\n1,Hi.,Ana,0,0\n", encoding="utf-8")
    raises(read_file, path, "meld", match=r"dev_sent_emo.csv:1: missing column\(s\) \['Emotion'\]", line=1)


def test_meld_unknown_label(tmp_path):
    rows = [*GOOD_MELD[:1], meld_row(2, "Hooray.", "Ben", "happiness", 0, 1)]
    raises(
        read_file,
        write_meld(tmp_path, rows),
        "meld",
        match=r":3: unknown label 'happiness' in Emotion; expected one of \['neutral'",
        line=3,
    )


def test_meld_empty_text(tmp_path):
    rows = [*GOOD_MELD[:1], meld_row(2, "  ", "Ben", "joy", 0, 1)]
    raises(
        read_file,
        write_meld(tmp_path, rows),
        "meld",
        match=r":3: empty Utterance; expected non-empty text",
        line=3,
    )


def test_meld_empty_speaker(tmp_path):
    rows = [meld_row(1, "Hello.", "", "joy", 0, 0)]
    raises(read_file, write_meld(tmp_path, rows), "meld", match=r":2: empty Speaker", line=2)


def test_meld_unreadable_encoding(tmp_path):
    path = tmp_path / "train_sent_emo.csv"
    body = "\r\n".join(
        [
            MELD_HEADER,
            meld_row(1, "Fine.", "Ana", "joy", 0, 0),
            meld_row(2, "It\u2019s me.", "Ben", "joy", 0, 1),
        ]
    )
    path.write_bytes(body.encode("cp1252"))  # raw cp1252 bytes: not UTF-8
    raises(read_file, path, "meld", match=r":3: byte 0x92 is not UTF-8; expected a UTF-8 file", line=3)


def test_meld_undefined_c1_character(tmp_path):
    rows = [meld_row(1, "Odd \x81 byte.", "Ana", "joy", 0, 0)]
    raises(
        read_file,
        write_meld(tmp_path, rows),
        "meld",
        match=r":2: Utterance holds control character U\+0081",
        line=2,
    )


def test_meld_truncated_inside_quoted_field(tmp_path):
    path = tmp_path / "train_sent_emo.csv"
    full = "\r\n".join([MELD_HEADER, *GOOD_MELD]) + "\r\n"
    path.write_text(full[: full.rindex("00:00:02,500") + 4], encoding="utf-8")
    raises(
        read_file,
        path,
        "meld",
        match=r":6: quoted field never closed before the end of the file: truncated",
        line=6,
    )


def test_meld_truncated_row(tmp_path):
    rows = [*GOOD_MELD[:1], "2,Cut off,Ben,joy"]
    raises(
        read_file,
        write_meld(tmp_path, rows),
        "meld",
        match=r":3: expected 11 fields \(Sr No\., .*found 4: truncated line",
        line=3,
    )


def test_meld_truncated_time_stamp(tmp_path):
    rows = [*GOOD_MELD[:1], meld_row(2, "Short.", "Ben", "joy", 0, 1, end="00:0")]
    raises(
        read_file,
        write_meld(tmp_path, rows),
        "meld",
        match=r":3: EndTime is '00:0'; expected a time stamp",
        line=3,
    )


def test_meld_broken_quoting(tmp_path):
    rows = [*GOOD_MELD[:1], '2,"Half "quoted" text",Ben,joy,neutral,0,1,1,2,"0:00:01,000","0:00:02,000"']
    raises(read_file, write_meld(tmp_path, rows), "meld", match=r":3: broken CSV quoting", line=3)


def test_meld_duplicate_uid(tmp_path):
    rows = [*GOOD_MELD[:1], meld_row(2, "Again.", "Ben", "joy", 0, 0)]
    raises(
        read_file,
        write_meld(tmp_path, rows),
        "meld",
        match=r":3: duplicate utterance id 'meld-train-d0-u0' \(first at line 2\)",
        line=3,
    )


def test_meld_bad_dialogue_id(tmp_path):
    rows = [meld_row(1, "Hello.", "Ana", "joy", "x1", 0)]
    raises(
        read_file,
        write_meld(tmp_path, rows),
        "meld",
        match=r":2: Dialogue_ID is 'x1'; expected a non-negative integer",
        line=2,
    )


def test_meld_header_only(tmp_path):
    raises(
        read_file, write_meld(tmp_path, []), "meld", match=r"no utterances; expected at least one data row"
    )


def test_meld_split_from_name_required(tmp_path):
    path = write_meld(tmp_path, GOOD_MELD, name="friends.csv")
    raises(read_file, path, "meld", match=r"the file name names no split")
    assert read_file(path, "meld", split="tst")[0].split == "test"


# -- EmoryNLP CSV / JSON ----------------------------------------------------------------------

EMORY_HEADER = "Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode,Start_Time,End_Time"


def write_emory(tmp_path: Path, rows: list[str], name="emorynlp_dev_final.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([EMORY_HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def test_emorynlp_scene_keys_and_speakers(tmp_path):
    rows = [
        "Morning.,['Dana Park'],Peaceful,1,1,2,3,00:00:01.000,00:00:02.000",
        "\"Hi, all.\",\"['Eli Moss', 'Fay Lin']\",joyful,1,2,2,3,00:00:02.000,00:00:03.000",
        "Other episode.,['Dana Park'],Neutral,1,1,2,4,00:00:01.000,00:00:02.000",
    ]
    dialogues = read_file(write_emory(tmp_path, rows), "emorynlp")
    assert [d.dialogue_id for d in dialogues] == ["s02_e03_c01", "s02_e04_c01"]  # Scene_ID alone collides
    assert [u.uid for u in dialogues[0].utterances] == ["s02_e03_c01_u001", "s02_e03_c01_u002"]
    assert dialogues[0].utterances[1].speakers == ("Eli Moss", "Fay Lin")
    assert dialogues[0].utterances[1].label == "Joyful"


def test_emorynlp_bad_speaker_list(tmp_path):
    rows = ["Morning.,Dana Park,Peaceful,1,1,2,3,00:00:01.000,00:00:02.000"]
    raises(
        read_file,
        write_emory(tmp_path, rows),
        "emorynlp",
        match=r":2: Speaker is 'Dana Park'; expected a Python list of names",
        line=2,
    )


def test_emorynlp_missing_column(tmp_path):
    path = tmp_path / "emorynlp_test_final.csv"
    path.write_text(
        "Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season\nHi.,['A'],Mad,1,1,1\n", encoding="utf-8"
    )
    raises(read_file, path, "emorynlp", match=r":1: missing column\(s\) \['Episode'\]", line=1)


def _emory_json(utterances: list[dict]) -> dict:
    return {
        "season_id": "tst",
        "episodes": [
            {"episode_id": "s09_e01", "scenes": [{"scene_id": "s09_e01_c01", "utterances": utterances}]}
        ],
    }


def _u(n: int, text="Hello there.", emotion="Joyful", speakers=("Gus Hale",)) -> dict:
    return {
        "utterance_id": f"s09_e01_c01_u{n:03d}",
        "speakers": list(speakers),
        "transcript": text,
        "tokens": [],
        "emotion": emotion,
    }


def test_emorynlp_json_reads_and_names_split(tmp_path):
    path = tmp_path / "emotion-detection-tst.json"
    path.write_text(json.dumps(_emory_json([_u(1), _u(2, emotion="sad")]), indent=2), encoding="utf-8")
    [scene] = read_file(path, "emorynlp-json")
    assert scene.split == "test" and scene.dialogue_id == "s09_e01_c01"
    assert [u.label for u in scene.utterances] == ["Joyful", "Sad"]
    lines = path.read_text().splitlines()
    expected = next(i for i, text in enumerate(lines, 1) if '"s09_e01_c01_u002"' in text)
    assert scene.utterances[1].source_line == expected


def test_emorynlp_json_unknown_emotion_names_line(tmp_path):
    path = tmp_path / "emotion-detection-dev.json"
    path.write_text(json.dumps(_emory_json([_u(1), _u(2, emotion="Bored")]), indent=2), encoding="utf-8")
    err = raises(
        read_file,
        path,
        "emorynlp-json",
        match=r"utterance s09_e01_c01_u002: unknown emotion 'Bored'; expected one of \['Joyful'",
    )
    assert err.line is not None and err.line > 10


def test_emorynlp_json_truncated(tmp_path):
    path = tmp_path / "emotion-detection-dev.json"
    text = json.dumps(_emory_json([_u(1), _u(2)]), indent=2)
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    raises(read_file, path, "emorynlp-json", match=r"not valid JSON .*: truncated file\?")


def test_emorynlp_json_missing_key_and_empty_text(tmp_path):
    path = tmp_path / "emotion-detection-dev.json"
    broken = _u(2)
    del broken["emotion"]
    path.write_text(json.dumps(_emory_json([_u(1), broken])), encoding="utf-8")
    raises(
        read_file, path, "emorynlp-json", match=r":1: utterance s09_e01_c01_u002 has no \['emotion'\]", line=1
    )
    path.write_text(json.dumps(_emory_json([_u(1, text=" ")])), encoding="utf-8")
    raises(read_file, path, "emorynlp-json", match=r"empty transcript of s09_e01_c01_u001")


def test_emorynlp_json_duplicate_uid(tmp_path):
    path = tmp_path / "emotion-detection-dev.json"
    path.write_text(json.dumps(_emory_json([_u(1), _u(1)]), indent=1), encoding="utf-8")
    raises(read_file, path, "emorynlp-json", match=r"duplicate utterance id 's09_e01_c01_u001'")


# -- generic JSONL ------------------------------------------------------------------------------


def _line(dia, speaker, text, label, **extra) -> dict:
    return {"dialogue_id": dia, "speaker": speaker, "text": text, "label": label, **extra}


def test_jsonl_splits_uids_and_label_spelling(tmp_path):
    path = write_jsonl(
        tmp_path / "custom.jsonl",
        [
            _line(7, "Ivy", "I passed the exam!", "HAPPY", split="train"),
            _line(7, ["Jon", "Kai"], "No way.", "Excited", split="trn"),
            "",
            _line("s2", "Ivy", "It rained all day.", "sad", split="test", utterance_id="ses02-f-001"),
        ],
    )
    every = read_file(path, "jsonl", label_set="iemocap")
    assert [(d.dialogue_id, d.split) for d in every] == [("7", "train"), ("s2", "test")]
    assert [u.uid for u in every[0].utterances] == ["7-u0", "7-u1"]
    assert every[0].utterances[0].label == "happy" and every[0].utterances[1].speakers == ("Jon", "Kai")
    assert every[1].utterances[0].uid == "ses02-f-001" and every[1].utterances[0].source_line == 4
    [test] = read_file(path, "jsonl", split="test", label_set="iemocap")
    assert test.dialogue_id == "s2"
    raises(
        read_file,
        path,
        "jsonl",
        split="dev",
        label_set="iemocap",
        match=r"no utterances for split 'dev'; the file holds \['test', 'train'\]",
    )
    assert find_split_files(path, "jsonl") == {"train": path, "test": path}


def test_jsonl_needs_label_set(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [_line(1, "A", "Hi.", "happy")])
    with pytest.raises(ConfigError, match="needs a label set"):
        read_file(path, "jsonl")


def test_jsonl_split_from_file_name(tmp_path):
    path = write_jsonl(tmp_path / "iemocap_dev.jsonl", [_line(1, "A", "Hi.", "neutral")])
    assert read_file(path, "jsonl", label_set="iemocap")[0].split == "dev"


def test_jsonl_no_split_anywhere(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [_line(1, "A", "Hi.", "neutral")])
    raises(
        read_file,
        path,
        "jsonl",
        label_set="iemocap",
        match=r":1: no 'split' field and the file name names no split",
        line=1,
    )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            '{"dialogue_id": 1, "speaker": "A", "text": "Hi.", "label": "sad"',
            r"not valid JSON .*truncated file\?",
        ),
        ('["a", "list"]', r"found a JSON list; expected \{\"dialogue_id\""),
        (json.dumps({"dialogue_id": 1, "speaker": "A", "text": "Hi."}), r"missing \['label'\]"),
        (json.dumps(_line(1, "A", "Hi.", "bored")), r"unknown label 'bored'; expected one of \['happy'"),
        (json.dumps(_line(1, "A", "   ", "sad")), r"empty text; expected non-empty text"),
        (json.dumps(_line(1, "A", 5, "sad")), r"text is 5; expected a string"),
        (json.dumps(_line(1, [], "Hi.", "sad")), r"speaker is \[\]; expected a non-empty name"),
        (
            json.dumps(_line(True, "A", "Hi.", "sad")),
            r"dialogue_id is True; expected a non-empty string or an integer",
        ),
        (json.dumps(_line(1, "A", "Hi.", "sad", split="holdout")), r"split is 'holdout'; expected one of"),
        (
            json.dumps(_line(1, "A", "Hi.", "sad", utterance_id="")),
            r"utterance_id is ''; expected a non-empty string",
        ),
    ],
)
def test_jsonl_bad_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "train.jsonl", [_line(1, "A", "Fine.", "neutral"), row])
    raises(read_file, path, "jsonl", label_set="iemocap", match=rf"train.jsonl:2: {message}", line=2)


def test_jsonl_duplicate_uid_and_dialogue_across_splits(tmp_path):
    dup = write_jsonl(
        tmp_path / "train.jsonl",
        [_line(1, "A", "Hi.", "sad", utterance_id="x"), _line(2, "B", "Yo.", "sad", utterance_id="x")],
    )
    raises(
        read_file,
        dup,
        "jsonl",
        label_set="iemocap",
        match=r":2: duplicate utterance id 'x' \(first at line 1\)",
        line=2,
    )
    spread = write_jsonl(
        tmp_path / "all.jsonl",
        [_line(1, "A", "Hi.", "sad", split="train"), _line(1, "B", "Yo.", "sad", split="test")],
    )
    raises(
        read_file,
        spread,
        "jsonl",
        label_set="iemocap",
        match=r":2: dialogue '1' is in split 'test' here but 'train' at line 1",
        line=2,
    )


def test_jsonl_empty_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n", encoding="utf-8")
    raises(read_file, path, "jsonl", label_set="iemocap", match=r"no utterances")


# -- folders, DatasetSource, URIs, demo ----------------------------------------------------------


def test_find_split_files_jsonl_folder_and_errors(tmp_path):
    for split in ("train", "dev"):
        write_jsonl(tmp_path / f"{split}.jsonl", [_line(1, "A", "Hi.", "sad")])
    assert find_split_files(tmp_path, "jsonl") == {
        "train": tmp_path / "train.jsonl",
        "dev": tmp_path / "dev.jsonl",
    }
    empty = tmp_path / "empty"
    empty.mkdir()
    raises(find_split_files, empty, "meld", match=r"no meld data files here; expected \['dev_sent_emo.csv'")
    raises(find_split_files, tmp_path / "nowhere", "meld", match="no such file or directory")


def test_load_split_paths_folders_and_uris(tmp_path):
    write_meld(tmp_path, GOOD_MELD, name="train_sent_emo.csv")
    write_meld(tmp_path, GOOD_MELD[:1], name="dev_sent_emo.csv")
    source = DatasetSource(
        format="meld",
        files={"train": str(tmp_path), "dev": (tmp_path / "dev_sent_emo.csv").as_uri()},
        label_set=LabelSetRef(name="meld", naming="coe"),
    )
    train = load_split(source, "trn")
    assert len(train) == 2 and train[0].dialogue_id == "meld-train-d0"
    assert len(load_split(source, "dev")) == 1
    with pytest.raises(ConfigError, match=r"dataset.files has no 'test' entry"):
        load_split(source, "test")


def test_prompt_names_accepted_as_labels(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [_line(1, "A", "Yay.", "joyful")])
    coe = get_label_set("meld", "coe")
    assert read_file(path, "jsonl", label_set=coe)[0].utterances[0].label == "joy"


def test_split_names():
    assert split_from_filename("emotion-detection-trn.json") == "train"
    assert split_from_filename("emorynlp_test_final.csv") == "test"
    assert split_from_filename("train_and_test.jsonl") is None
    with pytest.raises(ConfigError, match="unknown split 'holdout'"):
        read_file("x.jsonl", "jsonl", split="holdout", label_set="iemocap")


def test_bundled_demo_reads():
    if not bundled_demo_path().is_file():
        pytest.skip("bundled demo dialogues not written yet")
    source = DatasetSource()  # format demo, bundled files
    train = load_split(source, "train")
    assert train and all(d.dataset == "demo" and d.split == "train" for d in train)
    assert {u.label for d in train for u in d.utterances} <= set(get_label_set("demo").labels)
