"""Bootstrap intervals, the paired comparison of two arms (dialogue bootstrap, McNemar, Holm,
MDE) and the pure report writer."""

from __future__ import annotations

import math
import random
import sys
from statistics import NormalDist

import pytest

from bench.quality import report, stats
from bench.quality.stats import (
    binomial_two_sided,
    bootstrap_intervals,
    cluster_weights,
    dialogue_of,
    holm,
    mcnemar,
    mde_factor,
    paired_bootstrap,
    point_scores,
    with_seed_variation,
)
from coe_runtime.data.labels import get_label_set
from coe_runtime.errors import ConfigError
from coe_runtime.metrics import compute_metrics
from tests.bench.paired_sample import LABELS, paired_sample


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
                "rationalized": 9,
                "hint_attempts": 79,
                "check_rejected": 60,
                "contradicting": 12,
                "hint_leaned": 5,
                "gate": {"n": 32, "correct_with": 3, "correct_without": 14},
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
    assert (
        "| erc-only | 1 | 160 | 40 | 9 of 79 | 60 / 12 / 5 | 25.00 | 3 / 14 of 32 (**hurt**) | 7 | 51 | 9,000 | continue |"
        in text
    )
    assert report.fmt_gate({"n": 32, "correct_with": 14, "correct_without": 14}) == "14 / 14 of 32"
    assert report.fmt_gate(None) == report.DASH


def test_bench_report_formats_durations():
    assert report.fmt_duration(None) == report.DASH
    assert report.fmt_duration(59) == "59s"
    assert report.fmt_duration(61) == "1m01s"
    assert report.fmt_duration(7260) == "2h01m"


# -- paired comparison of two arms -------------------------------------------------------------------------------------


def test_identical_predictions_differ_by_nothing():
    gold, a, _, groups = paired_sample()
    out = paired_bootstrap(gold, [(a, list(a))], groups, LABELS, resamples=500)
    for d in out.values():
        assert (d.delta, d.low, d.high, d.p_value, d.se) == (0.0, 0.0, 0.0, 1.0, 0.0)
    test = mcnemar(gold, a, list(a))
    assert (test.a_only, test.b_only, test.p_value) == (0, 0, 1.0)


def test_paired_delta_is_the_difference_of_the_scores_and_is_deterministic():
    gold, a, b, groups = paired_sample(right_a=0.7, right_b=0.5)
    out = paired_bootstrap(gold, [(a, b)], groups, LABELS, resamples=2000, seed=3)
    pa, pb = point_scores(gold, a, LABELS), point_scores(gold, b, LABELS)
    for m in stats.METRICS:
        assert out[m].delta == pytest.approx(pa[m] - pb[m], abs=0.011), m
        assert out[m].low <= out[m].delta <= out[m].high
    # A is much better: the interval excludes 0 and the p-value is small
    assert out["accuracy"].low > 0 and out["accuracy"].p_value < 0.01
    assert out == paired_bootstrap(gold, [(a, b)], groups, LABELS, resamples=2000, seed=3)
    assert out != paired_bootstrap(gold, [(a, b)], groups, LABELS, resamples=2000, seed=4)
    swapped = paired_bootstrap(gold, [(b, a)], groups, LABELS, resamples=2000, seed=3)
    assert swapped["weighted_f1"].delta == -out["weighted_f1"].delta
    assert swapped["weighted_f1"].p_value == out["weighted_f1"].p_value


def test_paired_delta_over_seed_pairs_is_their_mean():
    gold, a, b, groups = paired_sample(seed=2)
    _, a2, b2, _ = paired_sample(seed=5)
    one = paired_bootstrap(gold, [(a, b)], groups, LABELS, resamples=200)
    two = paired_bootstrap(gold, [(a2, b2)], groups, LABELS, resamples=200)
    both = paired_bootstrap(gold, [(a, b), (a2, b2)], groups, LABELS, resamples=200)
    expected = (one["weighted_f1"].delta + two["weighted_f1"].delta) / 2
    assert both["weighted_f1"].delta == pytest.approx(expected, abs=0.011)
    with pytest.raises(ConfigError, match="no prediction pairs"):
        paired_bootstrap(gold, [], groups, LABELS)
    with pytest.raises(ConfigError, match="dialogue ids"):
        paired_bootstrap(gold, [(a, b)], groups[:-1], LABELS)


def test_cluster_bootstrap_draws_whole_dialogues():
    groups = ["d0"] * 3 + ["d1"] * 5 + ["d2"] * 2 + ["d0"]  # an utterance of d0 out of file order too
    weights, index = cluster_weights(groups, resamples=300, seed=0)
    assert weights.shape == (300, 3) and list(index) == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 0]
    assert (weights.sum(axis=1) == 3).all()  # as many dialogues drawn as there are
    per_utterance = weights[:, index]
    for g in range(3):  # every utterance of a dialogue has the dialogue's weight
        cols = per_utterance[:, index == g]
        assert (cols == cols[:, :1]).all()
    assert len({tuple(r) for r in weights}) > 5  # and the draws vary


def test_cluster_bootstrap_is_wider_when_dialogues_move_together():
    """Outcomes shared within a dialogue: resampling dialogues sees ~sqrt(size) more spread than
    resampling utterances, which would pretend the table is more certain than it is."""
    rng = random.Random(0)
    size, n = 10, 60
    gold = ["joy"] * (size * n)
    a, b = [], []
    for _ in range(n):  # per dialogue: both right, only A, only B, or neither
        ra, rb = rng.random() < 0.6, rng.random() < 0.5
        a += ["joy" if ra else "anger"] * size
        b += ["joy" if rb else "anger"] * size
    dialogues = [f"d{i // size}" for i in range(len(gold))]
    utterances = [f"u{i}" for i in range(len(gold))]
    by_dialogue = paired_bootstrap(gold, [(a, b)], dialogues, LABELS, resamples=3000)["accuracy"]
    by_utterance = paired_bootstrap(gold, [(a, b)], utterances, LABELS, resamples=3000)["accuracy"]
    assert by_dialogue.delta == by_utterance.delta
    assert by_dialogue.se > 2 * by_utterance.se
    assert by_dialogue.se == pytest.approx(math.sqrt(size) * by_utterance.se, rel=0.25)


def test_mcnemar_exact_p_value():
    # 8 utterances only A gets right, 2 only B, 10 both, 5 neither: p = 2 * P(X <= 2 | n=10, 1/2)
    gold = ["joy"] * 25
    a = ["joy"] * 8 + ["anger"] * 2 + ["joy"] * 10 + [None] * 5
    b = ["anger"] * 8 + ["joy"] * 2 + ["joy"] * 10 + ["sadness"] * 5
    test = mcnemar(gold, a, b)
    assert (test.a_only, test.b_only) == (8, 2)
    assert test.p_value == pytest.approx(112 / 1024, abs=1e-4)
    assert mcnemar(gold, b, a).p_value == test.p_value
    with pytest.raises(ConfigError, match="25 gold labels, 25 and 24"):
        mcnemar(gold, a, b[:-1])


def test_binomial_p_value_without_scipy_is_the_same(monkeypatch):
    cases = [(2, 10), (0, 7), (5, 10), (3, 40), (20, 20), (0, 0)]
    with_scipy = [binomial_two_sided(k, n) for k, n in cases]
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # import now fails: the math.comb sum
    without = [binomial_two_sided(k, n) for k, n in cases]
    assert without == pytest.approx(with_scipy, abs=1e-12)
    assert without[0] == pytest.approx(112 / 1024) and without[2] == 1.0 and without[-1] == 1.0


def test_holm_on_known_p_values():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1, never decreasing
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_minimum_detectable_effect_factor():
    assert mde_factor(0.05, 0.8) == pytest.approx(2.8016, abs=1e-3)
    assert mde_factor(0.05 / 6, 0.8) == pytest.approx(3.48, abs=0.01)
    assert mde_factor(0.05, 0.9) > mde_factor(0.05, 0.8)
    with pytest.raises(ConfigError):
        mde_factor(0.0, 0.8)


def test_seed_variation_widens_the_standard_error():
    se, p = with_seed_variation(2.0, 0.7, 1.2, 1, 3)
    assert se == pytest.approx(math.sqrt(0.49 + 1.44 * (1 + 1 / 3)), abs=1e-9)
    assert p == pytest.approx(2 * (1 - NormalDist().cdf(2.0 / se)), abs=1e-12) and 0.15 < p < 0.25
    assert with_seed_variation(2.0, 0.7, 0.0, 1, 1) == pytest.approx(
        (0.7, 2 * (1 - NormalDist().cdf(2 / 0.7)))
    )
    assert with_seed_variation(0.0, 0.0, 0.0, 1, 1) == (0.0, 1.0)
    assert with_seed_variation(-1.0, 0.5, 1.0, 3, 3)[1] == with_seed_variation(1.0, 0.5, 1.0, 3, 3)[1]
    with pytest.raises(ConfigError, match="at least one run"):
        with_seed_variation(1.0, 0.5, 1.0, 0, 3)
    with pytest.raises(ConfigError, match=">= 0"):
        with_seed_variation(1.0, -0.5, 1.0, 1, 3)


def test_dialogue_of_reads_the_utterance_id():
    assert dialogue_of("erc:meld-test-d12-u3") == "meld-test-d12"
    assert dialogue_of("erc:s01_e15_c01_u001") == "s01_e15_c01"
    assert dialogue_of("plain") == "plain"
