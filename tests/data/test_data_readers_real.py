"""Readers on the real benchmark files: exact counts from ../shared/data/README.md, id mapping, repair."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from coe_runtime.data.readers import ReadNotes, find_split_files, read_file
from tests.support.shared import need_shared

pytestmark = pytest.mark.realdata

# (utterances, dialogues, label distribution) as ../shared/data/README.md states them.
EXPECTED = {
    "meld/train_sent_emo.csv": (
        9989,
        1038,
        dict(anger=1109, disgust=271, fear=268, joy=1743, neutral=4710, sadness=683, surprise=1205),
    ),
    "meld/dev_sent_emo.csv": (
        1109,
        114,
        dict(anger=153, disgust=22, fear=40, joy=163, neutral=470, sadness=111, surprise=150),
    ),
    "meld/test_sent_emo.csv": (
        2610,
        280,
        dict(anger=345, disgust=68, fear=50, joy=402, neutral=1256, sadness=208, surprise=281),
    ),
    "emorynlp/emorynlp_train_final.csv": (
        7551,
        659,
        dict(Joyful=1677, Mad=785, Neutral=2485, Peaceful=638, Powerful=551, Sad=474, Scared=941),
    ),
    "emorynlp/emorynlp_dev_final.csv": (
        954,
        89,
        dict(Joyful=205, Mad=97, Neutral=322, Peaceful=82, Powerful=70, Sad=51, Scared=127),
    ),
    "emorynlp/emorynlp_test_final.csv": (
        984,
        79,
        dict(Joyful=217, Mad=86, Neutral=288, Peaceful=111, Powerful=96, Sad=70, Scared=116),
    ),
    "emorynlp/v1.0-json/emotion-detection-dev.json": (
        1344,
        99,
        dict(Joyful=289, Mad=143, Neutral=393, Peaceful=132, Powerful=134, Sad=75, Scared=178),
    ),
    "emorynlp/v1.0-json/emotion-detection-tst.json": (
        1328,
        85,
        dict(Joyful=282, Mad=113, Neutral=349, Peaceful=159, Powerful=145, Sad=98, Scared=182),
    ),
}


def need(data_dir: Path, rel: str) -> Path:
    """The file, or skip: a data folder may hold only some of the benchmarks."""
    return need_shared(data_dir / rel)


def _format_of(rel: str) -> str:
    if rel.startswith("meld/"):
        return "meld"
    return "emorynlp-json" if rel.endswith(".json") else "emorynlp"


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_real_file_counts(data_dir: Path, rel: str):
    dialogues = read_file(need(data_dir, rel), _format_of(rel))
    n_utt, n_dia, labels = EXPECTED[rel]
    utterances = [u for d in dialogues for u in d.utterances]
    assert len(utterances) == n_utt
    assert len(dialogues) == n_dia
    assert dict(Counter(u.label for u in utterances)) == labels
    assert len({d.dialogue_id for d in dialogues}) == n_dia
    assert len({u.uid for u in utterances}) == n_utt
    assert all(u.text.strip() and u.speakers for u in utterances)


def test_meld_traps(data_dir: Path):
    train = read_file(need(data_dir, "meld/train_sent_emo.csv"), "meld")
    ids = {d.dialogue_id for d in train}
    assert "meld-train-d60" not in ids and "meld-train-d59" in ids  # dialogue 60 is absent from train
    assert train[0].utterances[0].uid == "meld-train-d0-u0"
    assert all(d.split == "train" and d.dataset == "meld" for d in train)
    # Utterance ids have gaps in some dialogues: file order is kept, ids are not renumbered.
    gaps = 0
    for d in train:
        numbers = [int(u.uid.rsplit("-u", 1)[1]) for u in d.utterances]
        gaps += numbers != list(range(len(numbers)))
    assert gaps > 0
    # The current release is clean UTF-8: typographic apostrophes, no C1 control characters.
    assert any("\u2019" in u.text for d in train for u in d.utterances)
    assert not any(any("\x80" <= c <= "\x9f" for c in u.text) for d in train for u in d.utterances)


def test_emorynlp_csv_ids_match_v1_json(data_dir: Path):
    """The ERC CSV's uids are the v1.0 JSON's: same text, speakers and label for every CSV line."""
    json_dir = need(data_dir, "emorynlp/v1.0-json")
    need(data_dir, "emorynlp/emorynlp_dev_final.csv")
    for csv_name, json_name in (
        ("emorynlp_dev_final.csv", "emotion-detection-dev.json"),
        ("emorynlp_test_final.csv", "emotion-detection-tst.json"),
    ):
        from_json = {
            u.uid: (d.dialogue_id, u)
            for d in read_file(json_dir / json_name, "emorynlp-json")
            for u in d.utterances
        }
        csv_dialogues = read_file(data_dir / "emorynlp" / csv_name, "emorynlp")
        for d in csv_dialogues:
            for u in d.utterances:
                scene, ju = from_json[u.uid]
                assert (scene, ju.text, ju.speakers, ju.label) == (d.dialogue_id, u.text, u.speakers, u.label)
        # The JSON is a superset: the ERC split dropped some utterances, and scenes keep JSON order.
        assert sum(len(d.utterances) for d in csv_dialogues) < len(from_json)


def test_emorynlp_multi_speaker_lines(data_dir: Path):
    train = read_file(need(data_dir, "emorynlp/emorynlp_train_final.csv"), "emorynlp")
    multi = [u for d in train for u in d.utterances if len(u.speakers) > 1]
    assert len(multi) == 50  # 43 with two names, 6 with three, 1 with four
    assert all(" & " in u.speaker for u in multi)


def test_cp1252_mojibake_variant_reads_like_utf8_release(data_dir: Path, tmp_path: Path):
    """Older MELD copies hold cp1252 punctuation decoded as Latin-1 (U+0092 for ’): repaired on read."""
    original = need(data_dir, "meld/train_sent_emo.csv")
    text = original.read_bytes().decode("utf-8")
    broken = text.encode("cp1252").decode("latin-1")
    assert "\x92" in broken and "\u2019" not in broken
    variant = tmp_path / "train_sent_emo.csv"
    variant.write_bytes(broken.encode("utf-8"))

    notes = ReadNotes()
    repaired = read_file(variant, "meld", notes=notes)
    clean = read_file(original, "meld")
    assert [(u.uid, u.speakers, u.text, u.label) for d in repaired for u in d.utterances] == [
        (u.uid, u.speakers, u.text, u.label) for d in clean for u in d.utterances
    ]
    # Exactly the fields holding punctuation outside Latin-1 (’ … — ‘ “ ” –) were repaired.
    affected = sum(
        any(ord(c) > 0xFF for c in field)
        for d in clean
        for u in d.utterances
        for field in (u.text, *u.speakers)
    )
    assert notes.repaired_fields == affected > 2000
    assert (
        read_file(original, "meld", notes=(clean_notes := ReadNotes())) and clean_notes.repaired_fields == 0
    )


def test_find_split_files_on_real_folders(data_dir: Path):
    meld = find_split_files(need(data_dir, "meld"), "meld")
    assert list(meld) == ["train", "dev", "test"]
    # The v1.0 JSON lives one folder down; the train file is not shipped here.
    js = find_split_files(need(data_dir, "emorynlp/v1.0-json").parent, "emorynlp-json")
    assert set(js) <= {"train", "dev", "test"} and {"dev", "test"} <= set(js)
    assert js["test"].name == "emotion-detection-tst.json"


def test_meld_train_reads_fast(data_dir: Path):
    import time

    # CPU time, not wall time: other processes on a shared machine must not fail this test.
    start = time.process_time()
    read_file(need(data_dir, "meld/train_sent_emo.csv"), "meld")
    assert time.process_time() - start < 1.5
