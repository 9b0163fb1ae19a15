"""Metrics against hand-computed values."""

from __future__ import annotations

import json

import pytest

from coe_runtime.data.labels import LabelSet, get_label_set
from coe_runtime.errors import ConfigError
from coe_runtime.metrics import compute_metrics, majority_baseline, write_metrics

ABC = LabelSet("abc", ("a", "b", "c"), ("alpha", "beta", "gamma"))


def test_scores_by_hand():
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", None, "c"]  # one unparsed answer: wrong, never dropped
    m = compute_metrics(gold, pred, ABC, ["tag", "word", "tag", "none", "fuzzy"])
    # a: P 1, R .5, F1 .6667 (support 2); b: P .5, R .5, F1 .5 (2); c: 1, 1, 1 (1)
    assert m["per_class"]["a"] == {"precision": 100.0, "recall": 50.0, "f1": 66.67, "support": 2}
    assert m["per_class"]["b"] == {"precision": 50.0, "recall": 50.0, "f1": 50.0, "support": 2}
    assert m["weighted_f1"] == 66.67  # (2*.6667 + 2*.5 + 1*1) / 5
    assert m["macro_f1"] == 72.22  # (.6667 + .5 + 1) / 3
    assert m["accuracy"] == 60.0
    assert m["confusion_matrix"]["columns"] == ["a", "b", "c", "unparsed"]
    assert m["confusion_matrix"]["counts"] == [[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    assert m["unparsed"] == 1 and m["fallback_share"] == 40.0
    assert m["label_set"] == "abc" and m["labels"] == ["a", "b", "c"] and m["n"] == 5


def test_majority_baseline_by_hand():
    b = majority_baseline(["a", "a", "b"], ["a", "b", "c", "a"], ABC)
    # always "a": accuracy 2/4; F1(a) = 2*.5*1/1.5 = .6667 with support 2 of 4
    assert b == {"label": "a", "label_set": "abc", "weighted_f1": 33.33, "macro_f1": 22.22, "accuracy": 50.0}


def test_bad_inputs():
    with pytest.raises(ConfigError, match=r"gold labels \['joyful'\] are not in label set 'abc'"):
        compute_metrics(["joyful"], ["a"], ABC)
    with pytest.raises(ConfigError, match="2 gold labels but 1 predictions"):
        compute_metrics(["a", "b"], ["a"], ABC)
    with pytest.raises(ConfigError, match="no examples"):
        compute_metrics([], [], ABC)


def test_write_metrics(tmp_path):
    meld = get_label_set("meld", "coe")
    m = compute_metrics(
        ["joy", "anger", "neutral"], ["joy", "neutral", "neutral"], meld, ["tag", "tag", "word"]
    )
    m["majority_baseline"] = majority_baseline(["neutral"], ["joy", "anger", "neutral"], meld)
    json_path, txt_path = write_metrics(tmp_path / "out", m)
    assert json.loads(json_path.read_text()) == m
    text = txt_path.read_text()
    # joy 1, neutral .6667, anger 0; the four labels absent from gold and predictions are left out
    assert m["macro_f1"] == 55.56
    assert (
        "label set: meld" in text and "weighted F1:" in text and "majority-class baseline (neutral)" in text
    )
    assert any(line.split()[:2] == ["joy", "100.00"] for line in text.splitlines() if line.strip())
    assert not list((tmp_path / "out").glob("*.tmp"))
