"""Bootstrap intervals and the pure report writer."""

from __future__ import annotations

import random

import pytest

from bench.quality import report
from bench.quality.stats import bootstrap_intervals, point_scores
from coe_runtime.data.labels import get_label_set
from coe_runtime.errors import ConfigError
from coe_runtime.metrics import compute_metrics

LABELS = ["neutral", "joy", "anger", "sadness"]


def _sample(n: int = 400, seed: int = 1):
    rng = random.Random(seed)
    gold = [rng.choice(LABELS) for _ in range(n)]
    pred = [g if rng.random() < 0.6 else rng.choice([*LABELS, None]) for g in gold]
    return gold, pred


def test_bench_point_scores_match_runtime_metrics():
    """Same definitions as coe_runtime.metrics (unparsed counts wrong; macro over occurring labels)."""
    gold, pred = _sample()
    ls = get_label_set("meld")
    gold = [{"joy": "joy"}.get(g, g) for g in gold]
    ours = point_scores(gold, pred, ls.labels)
    theirs = compute_metrics(gold, pred, ls)
    for key in ("weighted_f1", "macro_f1", "accuracy"):
        assert ours[key] == pytest.approx(theirs[key], abs=0.01), key


def test_bench_bootstrap_contains_point_and_is_deterministic():
    gold, pred = _sample()
    a = bootstrap_intervals(gold, pred, LABELS, resamples=500, seed=7)
    b = bootstrap_intervals(gold, pred, LABELS, resamples=500, seed=7)
    c = bootstrap_intervals(gold, pred, LABELS, resamples=500, seed=8)
    assert a == b
    assert a["weighted_f1"] != c["weighted_f1"]  # the seed matters
    for ci in a.values():
        assert ci.low <= ci.point <= ci.high
        assert ci.high - ci.low < 20  # 400 examples: a few points wide, not degenerate
        assert ci.high > ci.low


def test_bench_bootstrap_perfect_predictions_have_zero_width():
    gold = ["joy", "anger", "neutral"] * 20
    ci = bootstrap_intervals(gold, list(gold), LABELS, resamples=200)
    assert ci["accuracy"].low == ci["accuracy"].high == 100.0


def test_bench_bootstrap_rejects_bad_input():
    with pytest.raises(ConfigError, match="2 gold labels but 1 predictions"):
        bootstrap_intervals(["joy", "joy"], ["joy"], LABELS)
    with pytest.raises(ConfigError, match=r"predicted labels \['happy'\]"):
        bootstrap_intervals(["joy"], ["happy"], LABELS)
    with pytest.raises(ConfigError, match="resamples"):
        bootstrap_intervals(["joy"], ["joy"], LABELS, resamples=0)


def _arm(name: str, complete: bool = True) -> dict:
    ci = {"point": 50.0, "low": 45.0, "high": 55.0}
    return {
        "arm": name,
        "experiment": f"q-meld-{name}",
        "complete": complete,
        "next_step": None if complete else "erc",
        "dev": {"weighted_f1": 48.5, "macro_f1": 30.1, "accuracy": 52.0, "epoch": 2} if complete else None,
        "test": {"per_class": {"neutral": {"f1": 70.0}, "joy": {"f1": 40.0}}, "fallback_share": 1.5}
        if complete
        else None,
        "test_ci": {"weighted_f1": ci, "macro_f1": ci, "accuracy": ci} if complete else None,
        "tokens_trained": 123456,
        "tokens_generated": 7890,
        "wall_s": 3725,
        "steer_rounds": [
            {
                "round": 1,
                "pool_size": 160,
                "accepted": 40,
                "accuracy": 0.25,
                "cut_at_limit": 7,
                "memory_size": 51,
                "tokens_generated": 9000,
                "continue": True,
            }
        ],  # fmt: skip
        "links": {"run_dir": "../../coe-runs/quality/x", "metrics": "m.json", "predictions": "p.jsonl"},
    }


def test_bench_report_renders_every_column_and_an_incomplete_arm():
    section = {
        "dataset": "meld",
        "title": "MELD",
        "label_set": "meld",
        "labels": ["neutral", "joy"],
        "test_n": 2610,
        "dev_n": 500,
        "settings": ["Base model `smollm2-135m-gguf`."],
        "arms": [_arm("erc-only"), _arm("steer", complete=False)],
        "baselines": [
            {
                "name": "majority class",
                "key": "majority",
                "seconds": 0.1,
                "test": {"per_class": {"neutral": {"f1": 65.0}, "joy": {"f1": 0.0}}},
                "test_ci": {"weighted_f1": {"point": 31.27, "low": 29.5, "high": 33.0}},
            },
        ],  # fmt: skip
        "bootstrap": {"resamples": 1000, "seed": 0},
    }
    text = report.render_results([section])
    for header in report.MAIN_HEADER:
        assert header in text
    assert "| erc-only | 48.50 | 30.10 | 52.00 | 50.00 [45.00, 55.00] |" in text
    assert "steer (incomplete: next erc)" in text
    assert "123,456" in text and "1h02m" in text
    assert "[run dir](../../coe-runs/quality/x)" in text
    assert "majority: 31.27 here vs 31.27 there" in text
    assert "70.11" in text and "not comparable" in text  # the papers' figures, labelled
    assert "### STEeR rounds" in text  # finished rounds of an unfinished arm are shown too
    assert "| erc-only | 1 | 160 | 40 | 25.00 | 7 | 51 | 9,000 | continue |" in text


def test_bench_report_formats_durations():
    assert report.fmt_duration(None) == report.DASH
    assert report.fmt_duration(59) == "59s"
    assert report.fmt_duration(61) == "1m01s"
    assert report.fmt_duration(7260) == "2h01m"
