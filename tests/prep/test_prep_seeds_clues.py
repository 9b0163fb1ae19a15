"""Seed and clue file formats: the bundled files load; bad files fail naming file, line / JSON path."""

from __future__ import annotations

import json

import pytest

from coe_runtime.data.clue_file import DEMO_CLUES, Clues, load_clues, parse_clues, write_clues
from coe_runtime.data.labels import get_label_set
from coe_runtime.data.seeds import load_seeds
from coe_runtime.errors import ConfigError, DataError

GOOD = {"uid": "demo-train-01-u0", "label": "joy", "rationale": "She says she is delighted."}


def seed_file(tmp_path, *rows) -> str:
    path = tmp_path / "seeds.jsonl"
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return str(path)


def test_bundled_demo_seeds_cover_every_label():
    seeds = load_seeds("demo")
    assert len(seeds) >= 14
    assert {s.label for s in seeds} == set(get_label_set("demo").labels)
    assert all(not s.rationale.rstrip().endswith(">") and len(s.rationale.split()) >= 8 for s in seeds)


def test_user_seed_file_by_path_and_uri(tmp_path):
    path = seed_file(tmp_path, GOOD)
    assert load_seeds("demo", path)[0].uid == "demo-train-01-u0"
    assert load_seeds("demo", "file://" + path)[0].label == "joy"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", ":2: not valid JSON"),
        ({"uid": "x", "label": "joy"}, ":2: seed is missing ['rationale']"),
        (
            {**GOOD, "uid": "y", "label": "joyful"},
            ":2: label 'joyful' is not in label set 'demo'; expected one of",
        ),
        (
            {**GOOD, "uid": "y", "rationale": "Plainly happy. <joy>"},
            ":2: rationale ends with a label tag '<joy>'",
        ),
        ({**GOOD, "rationale": "again"}, ":2: uid 'demo-train-01-u0' already has a seed on line 1"),
        ({**GOOD, "uid": "y", "rationale": "  "}, ":2: rationale: expected a non-empty string"),
        ({**GOOD, "uid": "y", "why": "?"}, ":2: unknown keys ['why']"),
    ],
)
def test_bad_seed_lines(tmp_path, bad, message):
    path = seed_file(tmp_path, GOOD, bad)
    with pytest.raises(DataError) as err:
        load_seeds("demo", path)
    assert str(err.value).startswith(path) and message in str(err.value)


def test_seed_labels_are_checked_against_their_own_label_set(tmp_path):
    # EmoryNLP spells labels its own way; MELD's "joy" is not one of them (the reference mixed them up).
    path = seed_file(tmp_path, {**GOOD, "label": "Joyful"})
    assert load_seeds("emorynlp", path)[0].label == "Joyful"
    with pytest.raises(DataError, match="not in label set 'emorynlp'"):
        load_seeds("emorynlp", seed_file(tmp_path, GOOD))


def test_missing_seed_sources(tmp_path):
    with pytest.raises(ConfigError, match="no bundled seed rationales for label set 'iemocap'"):
        load_seeds("iemocap")
    with pytest.raises(DataError, match="no seeds in file"):
        load_seeds("demo", seed_file(tmp_path, ""))


def test_demo_clue_file_loads_and_looks_up():
    clues = load_clues(str(DEMO_CLUES))
    assert clues.scene("train-01") and clues.persona("train-01", "Mara") is not None
    assert clues.scene("train-01", split="train") == clues.scene("train-01")
    assert clues.persona("train-01", "Nobody") is None and clues.scene("no-such") is None


def test_split_qualified_keys_win_over_bare_ones(tmp_path):
    clues = Clues(personas={"0": {"A": "bare"}, "dev/0": {"A": "dev one"}}, scenes={"test/0": "test scene"})
    assert clues.persona("0", "A", split="dev") == "dev one"
    assert clues.persona("0", "A", split="train") == "bare"
    assert clues.scene("0", split="test") == "test scene" and clues.scene("0", split="dev") is None
    write_clues(tmp_path / "c.json", clues)
    again = load_clues(str(tmp_path / "c.json"))
    assert again.personas == clues.personas and again.scenes == clues.scenes


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "$: expected a JSON object"),
        ({"version": 2}, "$.version: expected 1, got 2"),
        ({"version": 1, "personas": []}, "$.personas: expected an object keyed by dialogue"),
        ({"version": 1, "personas": {"d1": {"Mara": 3}}}, "$.personas.d1.Mara: expected a string, got int"),
        (
            {"version": 1, "personas": {"d1": "Mara"}},
            "$.personas.d1: expected an object {speaker: persona text}",
        ),
        ({"version": 1, "scenes": {"d1": " "}}, "$.scenes.d1: empty text"),
        ({"version": 1, "extra": {}}, "$: unknown keys ['extra']"),
    ],
)
def test_bad_clue_documents(doc, message):
    with pytest.raises(DataError) as err:
        parse_clues(doc, "clues.json")
    assert str(err.value) == f"clues.json: {message}" or str(err.value).startswith(f"clues.json: {message}")


def test_clue_file_that_is_not_json(tmp_path):
    path = tmp_path / "clues.json"
    path.write_text('{"version": 1,\n  "scenes": {,}}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"clues.json:2: not valid JSON"):
        load_clues(str(path))
