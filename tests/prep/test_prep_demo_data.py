"""The bundled demo dataset: shape, class balance, learnability, reproducibility, and our own text."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from coe_runtime.data.clue_file import DEMO_CLUES, load_clues
from coe_runtime.data.readers import read_file

REPO = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO / "coe_runtime" / "demo"


@pytest.fixture(scope="module")
def demo():
    return {split: read_file(None, "demo", split, "demo") for split in ("train", "dev", "test")}


def test_shape_and_balance(demo):
    assert [len(demo[s]) for s in ("train", "dev", "test")] == [40, 8, 10]
    assert all(4 <= len(d.utterances) <= 8 for ds in demo.values() for d in ds)
    train = Counter(u.label for d in demo["train"] for u in d.utterances)
    share = train["neutral"] / sum(train.values())
    assert train.most_common(1)[0][0] == "neutral" and 0.25 <= share <= 0.35
    assert len(train) == 7 and min(train.values()) >= 20
    for split in ("dev", "test"):
        assert len({u.label for d in demo[split] for u in d.utterances}) == 7


def test_clues_cover_every_dialogue_and_speaker(demo):
    clues = load_clues(str(DEMO_CLUES))
    for ds in demo.values():
        for d in ds:
            assert clues.scene(d.dialogue_id, d.split)
            assert all(clues.persona(d.dialogue_id, s, d.split) for s in d.speakers)


def test_wording_signals_the_emotion(demo):
    """A bag-of-words classifier (a stand-in for the tiny model) beats the majority class by far."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    def xy(split):
        utts = [u for d in demo[split] for u in d.utterances]
        return [u.text for u in utts], [u.label for u in utts]

    (x_train, y_train), (x_test, y_test) = xy("train"), xy("test")
    vec = CountVectorizer()
    clf = LogisticRegression(max_iter=2000).fit(vec.fit_transform(x_train), y_train)
    learned = f1_score(y_test, clf.predict(vec.transform(x_test)), average="weighted")
    majority = f1_score(y_test, ["neutral"] * len(y_test), average="weighted")
    assert learned >= 0.85 > majority + 0.5


def test_generator_reproduces_the_committed_files(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_demo_data", REPO / "bench" / "tools" / "make_demo_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows, clues = module.generate()
    committed = [json.loads(line) for line in (DEMO_DIR / "dialogues.jsonl").read_text().splitlines()]
    assert rows == committed
    assert clues == json.loads((DEMO_DIR / "clues.json").read_text())


@pytest.mark.realdata
def test_no_benchmark_line_in_the_demo(demo, data_dir):
    """Our dialogues are invented: no demo utterance equals a MELD or EmoryNLP line."""

    def norm(text: str) -> str:
        return " ".join(text.lower().replace("\u2019", "'").split())

    ours = {norm(u.text) for ds in demo.values() for d in ds for u in d.utterances}
    theirs = set()
    for split in ("train", "dev", "test"):
        for d in read_file(data_dir / "meld" / f"{split}_sent_emo.csv", "meld", split, "meld"):
            theirs |= {norm(u.text) for u in d.utterances}
        for d in read_file(
            data_dir / "emorynlp" / f"emorynlp_{split}_final.csv", "emorynlp", split, "emorynlp"
        ):
            theirs |= {norm(u.text) for u in d.utterances}
    assert not ours & theirs
