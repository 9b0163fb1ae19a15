"""The runner's paired comparisons against erc-only and seed summaries, seed repeats and the
compute-matched control in check_same_budget, both TF-IDF fits, and the report's paired and seed
tables. No data, no model: predictions are constructed here (the statistics themselves:
test_bench_quality_stats.py)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from bench.quality import report
from bench.quality import run as runner
from bench.quality.stats import holm, mde_factor, point_scores
from coe_runtime.errors import ConfigError
from tests.bench.paired_sample import LABELS, paired_sample

# -- the runner: paired comparisons and seed summaries from collected arms ----------------------


def _collected(arm: str, seed: int, gold, pred, ids, repeat_of: str | None = None) -> dict:
    scores = point_scores(gold, pred, LABELS)
    return {
        "arm": arm,
        "seed": seed,
        "repeat_of": repeat_of,
        "test": {"labels": LABELS},
        "test_ci": {m: {"point": v} for m, v in scores.items()},
        "dev": {"weighted_f1": scores["weighted_f1"] - 1},
        "_predictions": {i: (g, p) for i, g, p in zip(ids, gold, pred, strict=True)},
    }


def test_paired_comparisons_pair_seeds_and_correct_for_the_family():
    gold, ref, better, groups = paired_sample(n_dialogues=80, right_a=0.5, right_b=0.8, seed=4)
    _, _, same, _ = paired_sample(n_dialogues=80, right_a=0.5, right_b=0.5, seed=9)
    rng = random.Random(3)  # a second erc-only seed: the first one's answers, a few of them changed
    ref2 = [rng.choice(LABELS) if rng.random() < 0.1 else p for p in ref]
    ids = [f"erc:{g}-u{i}" for i, g in enumerate(groups)]
    collected = [
        _collected("erc-only", 42, gold, ref, ids),
        _collected("clues", 42, gold, better, ids),
        _collected("steer", 7, gold, same, ids),  # no erc-only run of seed 7: paired with seed 42
        {"arm": "full-curriculum", "seed": 42, "repeat_of": None},  # not scored yet
        _collected("erc-only-seed2", 2, gold, ref2, ids, repeat_of="erc-only"),
        _collected("clues-seed2", 2, gold, better, ids, repeat_of="clues"),
    ]
    out = runner.paired_comparisons(collected, {}, resamples=2000)
    rows = {r["arm"]: r for r in out["rows"]}
    assert list(rows) == ["clues", "steer"]
    assert [(r["run"], r["seed"]) for r in rows["clues"]["runs"]] == [("clues", 42), ("clues-seed2", 2)]
    assert [r["seed"] for r in rows["steer"]["runs"]] == [7]
    assert [r["seed"] for r in rows["steer"]["reference_runs"]] == [42, 2]
    # Δ is the arm's seed mean minus erc-only's seed mean
    wf1 = {c["arm"]: c["test_ci"]["weighted_f1"]["point"] for c in collected if c.get("test_ci")}
    assert rows["steer"]["weighted_f1"]["delta"] == pytest.approx(
        wf1["steer"] - (wf1["erc-only"] + wf1["erc-only-seed2"]) / 2, abs=0.01
    )
    assert rows["clues"]["weighted_f1"]["delta"] == pytest.approx(
        (wf1["clues"] + wf1["clues-seed2"] - wf1["erc-only"] - wf1["erc-only-seed2"]) / 2, abs=0.01
    )
    # McNemar: the first run against erc-only's run of its seed, else erc-only's first run
    assert (rows["clues"]["mcnemar"]["run"], rows["clues"]["mcnemar"]["reference_run"]) == (
        "clues",
        "erc-only",
    )
    assert rows["steer"]["mcnemar"]["reference_run"] == "erc-only"
    # two erc-only seeds: their sd is every arm's seed variation
    sd = out["reference_seed_sd"]
    assert sd == pytest.approx(abs(wf1["erc-only"] - wf1["erc-only-seed2"]) / math.sqrt(2), abs=1e-3)
    steer = rows["steer"]
    assert steer["with_seeds"]["se"] == pytest.approx(
        math.sqrt(steer["weighted_f1"]["se"] ** 2 + sd**2 * (1 + 1 / 2)), abs=1e-3
    )
    assert out["dialogues"] == 80 and out["n"] == len(ids)  # groups read from the ids
    assert out["pending"] == ["full-curriculum"]
    clues = rows["clues"]
    assert (
        clues["weighted_f1"]["delta"] > 10
        and clues["holm_p"] < 0.05
        and clues["verdict"] == "better than erc-only"
    )
    assert clues["mcnemar"]["a_only"] > clues["mcnemar"]["b_only"] and clues["mcnemar"]["p_value"] < 0.001
    expected = holm([r["weighted_f1"]["p_value"] for r in out["rows"]])
    assert [r["holm_p"] for r in out["rows"]] == pytest.approx(expected, abs=1e-4)
    assert rows["steer"]["holm_p"] >= rows["steer"]["weighted_f1"]["p_value"]
    mde = out["mde"]
    ses = sorted(r["weighted_f1"]["se"] for r in out["rows"])
    assert mde["comparisons"] == 2 and mde["se_min"] == ses[0] and mde["se_max"] == ses[-1]
    assert mde["weighted_f1"] == pytest.approx(mde_factor() * float(np.median(ses)), abs=0.01)
    assert mde["weighted_f1_first_holm_step"] > mde["weighted_f1"]
    assert mde["seed_sd"] == sd and mde["reference_runs"] == 2
    assert (
        mde["weighted_f1_with_seeds_one_run"] > mde["weighted_f1_with_seeds_three_runs"] > mde["weighted_f1"]
    )
    one = math.sqrt(float(np.median(ses)) ** 2 + sd**2 * 1.5)
    assert mde["weighted_f1_with_seeds_one_run"] == pytest.approx(mde_factor() * one, abs=0.01)

    # an arm scored on other utterances is left out, not compared
    other = _collected("clues-no-future", 42, gold[:-1], better[:-1], ids[:-1])
    out = runner.paired_comparisons([*collected, other], {}, resamples=200)
    assert out["skipped"] == ["clues-no-future"]
    assert runner.paired_comparisons(collected[1:3], {}) is None  # no erc-only run: no table


def test_a_bootstrap_difference_inside_the_seed_spread_is_not_called_a_win():
    gold, ref, better, groups = paired_sample(n_dialogues=80, right_a=0.5, right_b=0.56, seed=4)
    _, _, far, _ = paired_sample(n_dialogues=80, right_a=0.5, right_b=0.2, seed=5)
    ids = [f"erc:{g}-u{i}" for i, g in enumerate(groups)]
    one_seed = [_collected("erc-only", 42, gold, ref, ids), _collected("clues", 42, gold, better, ids)]
    (alone,) = runner.paired_comparisons(one_seed, {}, resamples=2000)["rows"]
    assert alone["holm_p"] < 0.05 and alone["verdict"] == "better than erc-only" and "with_seeds" not in alone
    # a second erc-only seed that scores far lower: the seed spread swamps the difference
    seeds = [*one_seed, _collected("erc-only-seed2", 2, gold, far, ids, repeat_of="erc-only")]
    (row,) = runner.paired_comparisons(seeds, {}, resamples=2000)["rows"]
    assert row["holm_p"] < 0.05 and row["with_seeds"]["holm_p"] >= 0.05
    assert row["verdict"] == "within seed variation"


def test_paired_comparisons_resample_the_dialogues_they_are_given():
    gold, ref, arm, groups = paired_sample(n_dialogues=40, size=6, seed=6)
    ids = [f"x{i}" for i in range(len(gold))]  # ids that name no dialogue
    collected = [_collected("erc-only", 42, gold, ref, ids), _collected("clues", 42, gold, arm, ids)]
    mapped = runner.paired_comparisons(collected, dict(zip(ids, groups, strict=True)), resamples=200)
    assert mapped["dialogues"] == 40
    assert runner.paired_comparisons(collected, {}, resamples=200)["dialogues"] == len(ids)


def test_seed_summaries_give_mean_and_sd_where_repeats_exist():
    collected = [
        {"arm": "erc-only", "seed": 42, "test_ci": {"weighted_f1": {"point": 50.0}, "accuracy": {"point": 55.0}},
         "dev": {"weighted_f1": 40.0}},
        {"arm": "clues", "seed": 42, "test_ci": {"weighted_f1": {"point": 51.0}, "accuracy": {"point": 56.0}}},
        {"arm": "erc-only-seed2", "seed": 2, "repeat_of": "erc-only",
         "test_ci": {"weighted_f1": {"point": 52.0}, "accuracy": {"point": 57.0}}, "dev": {"weighted_f1": 42.0}},
        {"arm": "erc-only-seed3", "seed": 3, "repeat_of": "erc-only"},  # not scored yet
    ]  # fmt: skip
    (row,) = runner.seed_summaries(collected)
    assert row["arm"] == "erc-only"
    assert [(r["seed"], r["scored"]) for r in row["runs"]] == [(42, True), (2, True), (3, False)]
    assert row["test_weighted_f1"] == {"mean": 51.0, "sd": round(math.sqrt(2), 2), "n": 2}
    assert row["dev_weighted_f1"]["mean"] == 41.0
    assert row["against_first"] == []  # no predictions to pair


def test_seed_summaries_pair_each_repeat_with_the_first_seed():
    gold, first, other, groups = paired_sample(n_dialogues=60, right_a=0.7, right_b=0.5, seed=11)
    ids = [f"erc:{g}-u{i}" for i, g in enumerate(groups)]
    collected = [
        _collected("erc-only", 42, gold, first, ids),
        _collected("erc-only-seed2", 2, gold, other, ids, repeat_of="erc-only"),
        # scored on other utterances: not paired
        _collected("erc-only-seed3", 3, gold[:-1], other[:-1], ids[:-1], repeat_of="erc-only"),
    ]
    (row,) = runner.seed_summaries(collected, {})
    (x,) = row["against_first"]
    assert (x["run"], x["seed"], x["first_run"]) == ("erc-only-seed2", 2, "erc-only")
    wf1 = [c["test_ci"]["weighted_f1"]["point"] for c in collected[:2]]
    assert x["weighted_f1"]["delta"] == pytest.approx(wf1[1] - wf1[0], abs=0.01)
    assert x["weighted_f1"]["delta"] < -5
    assert x["weighted_f1"]["p_value"] < 0.01 and x["mcnemar"]["b_only"] > x["mcnemar"]["a_only"]
    text = report.render_results([{"dataset": "meld", "arms": [], "baselines": [], "seeds": [row]}])
    assert (
        f"seed 2: {report.fmt_delta(x['weighted_f1'])}, p {report.fmt_p(x['weighted_f1']['p_value'])}" in text
    )


# -- check_same_budget: seed repeats and the compute-matched control ---------------------------


@pytest.fixture
def meld_folder(tmp_path):
    """The MELD arm files copied to a folder of their own (to edit), with stand-in data files."""
    folder = tmp_path / "specs" / "meld"
    folder.mkdir(parents=True)
    for p in (runner.BENCH_DIR / "meld").glob("*.yaml"):
        (folder / p.name).write_text(p.read_text())
        for f in yaml.safe_load(p.read_text())["spec"]["dataset"]["files"].values():
            (tmp_path / "meld").mkdir(exist_ok=True)
            (tmp_path / "meld" / Path(f).name).write_text("")
    return folder


def _edit(folder: Path, name: str, change) -> None:
    path = folder / f"{name}.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _check(folder: Path) -> None:
    runner.check_same_budget(runner.load_arms(folder, folder.parent.parent))


def test_seed_repeats_run_last_and_may_differ_only_in_the_seed(meld_folder):
    arms = runner.load_arms(meld_folder, meld_folder.parent.parent)
    assert [a.name for a in arms][-2:] == ["erc-only-seed2", "erc-only-seed3"]
    runner.check_same_budget(arms)

    _edit(meld_folder, "erc-only-seed2", lambda d: d["spec"]["optimizer"].update(learningRate=0.001))
    with pytest.raises(
        ConfigError, match=r"erc-only-seed2.yaml: a seed repeat of erc-only .* \['optimizer.learning_rate'\]"
    ):
        _check(meld_folder)
    _edit(meld_folder, "erc-only-seed2", lambda d: d["spec"]["optimizer"].update(learningRate=0.0003))
    _check(meld_folder)
    _edit(meld_folder, "erc-only-seed2", lambda d: d["spec"]["training"]["erc"].update(epochs=2))
    with pytest.raises(ConfigError, match=r"differs in \['training'\]"):
        _check(meld_folder)
    _edit(meld_folder, "erc-only-seed2", lambda d: d["spec"]["training"]["erc"].update(epochs=1))
    _edit(meld_folder, "erc-only-seed2", lambda d: d["spec"]["optimizer"].update(seed=3))
    with pytest.raises(
        ConfigError,
        match="erc-only-seed3.yaml: a seed repeat of erc-only with optimizer.seed 3, the seed of erc-only-seed2",
    ):
        _check(meld_folder)
    _edit(meld_folder, "erc-only-seed2", lambda d: d["spec"]["optimizer"].update(seed=42))
    with pytest.raises(ConfigError, match="optimizer.seed 42, the seed of erc-only;"):
        _check(meld_folder)
    _edit(
        meld_folder,
        "erc-only-seed2",
        lambda d: d["metadata"]["labels"].update({runner.REPEAT_LABEL: "nothing"}),
    )
    with pytest.raises(ConfigError, match="a seed repeat of 'nothing'"):
        _check(meld_folder)


def test_an_arm_that_is_not_a_repeat_may_not_change_its_seed(meld_folder):
    _edit(meld_folder, "clues", lambda d: d["spec"]["optimizer"].update(seed=7))
    with pytest.raises(ConfigError, match=r"clues.yaml: arm differs from erc-only.yaml in \['optimizer'\]"):
        _check(meld_folder)


def test_only_the_compute_matched_arm_may_train_erc_longer_and_only_by_the_computed_steps(meld_folder):
    _edit(meld_folder, "erc-only-matched", lambda d: d["spec"]["training"]["erc"].update(epochs=2))
    with pytest.raises(
        ConfigError,
        match=r"must take 950 \+ 968 .* = 1918 optimiser steps; .* gives 1900 \(write epochs: 2.018\)",
    ):
        _check(meld_folder)
    _edit(
        meld_folder,
        "erc-only-matched",
        lambda d: d["spec"]["training"]["erc"].update(epochs=2.018, learningRate=0.001),
    )
    with pytest.raises(
        ConfigError, match=r"training.erc.epochs only; it differs in training.erc \['learning_rate'\]"
    ):
        _check(meld_folder)
    _edit(meld_folder, "erc-only-matched", lambda d: d["spec"]["training"]["erc"].pop("learningRate"))
    _check(meld_folder)
    # the same ERC length without the label is refused like any budget difference
    _edit(meld_folder, "erc-only-matched", lambda d: d["metadata"]["labels"].pop(runner.MATCHED_LABEL))
    with pytest.raises(ConfigError, match=r"erc-only-matched.yaml: arm differs .* \['erc'\]"):
        _check(meld_folder)
    # matched to the other curriculum: its own earlier stages (STEeR 18 + mixed 952 steps)
    _edit(
        meld_folder,
        "erc-only-matched",
        lambda d: d["metadata"]["labels"].update({runner.MATCHED_LABEL: "mixed-auxiliary"}),
    )
    with pytest.raises(ConfigError, match=r"950 \+ 970 \(steer 18 \+ mixed 952\) = 1920"):
        _check(meld_folder)


def test_planned_steps_follow_batch_accumulation_and_max_steps(meld_folder):
    (arm,) = runner.load_arms(meld_folder, meld_folder.parent.parent, only=["erc-only"])
    spec = arm.spec
    assert runner.planned_train_steps(spec, "erc", 3800) == 950
    assert runner.planned_train_steps(spec, "erc", 3801) == 951
    assert runner.planned_train_steps(spec, "roleplay", 3800) == 475
    erc = spec.spec.training.erc.model_copy(update={"gradient_accumulation_steps": 3})
    other = spec.model_copy(deep=True)
    other.spec.training.erc = erc
    assert runner.planned_train_steps(other, "erc", 3800) == 317  # ceil(950 / 3)
    other.spec.training.erc = erc.model_copy(update={"max_steps": 10})
    assert runner.planned_train_steps(other, "erc", 3800) == 10
    assert runner.epochs_for_steps(1918, 950) == 2.018
    assert math.ceil(runner.epochs_for_steps(7, 3) * 3) == 7


# -- the report ---------------------------------------------------------------------------------


def test_report_renders_the_paired_table_the_mde_line_and_the_seed_table():
    gold, ref, better, groups = paired_sample(n_dialogues=50, right_a=0.5, right_b=0.75, seed=8)
    ids = [f"erc:{g}-u{i}" for i, g in enumerate(groups)]
    collected = [
        _collected("erc-only", 42, gold, ref, ids),
        _collected("clues", 42, gold, better, ids),
        _collected("steer", 42, gold, ref, ids),
        {"arm": "mixed-auxiliary", "seed": 42, "repeat_of": None},
        _collected("erc-only-seed2", 2, gold, ref, ids, repeat_of="erc-only"),
    ]
    paired = runner.paired_comparisons(collected, {}, resamples=500)
    section = {
        "dataset": "meld",
        "title": "MELD",
        "arms": [],
        "baselines": [],
        "paired": paired,
        "seeds": runner.seed_summaries(collected),
    }
    text = report.render_results([section])
    assert "### Paired against erc-only" in text
    for header in report.PAIRED_HEADER:
        assert header in text
    rows = {r["arm"]: r for r in paired["rows"]}
    c = rows["clues"]
    line = next(line for line in text.splitlines() if line.startswith("| clues |"))
    assert (
        f"{c['weighted_f1']['delta']:+.2f} [{c['weighted_f1']['low']:+.2f}, {c['weighted_f1']['high']:+.2f}]"
        in line
    )
    assert line.startswith("| clues | 42 / 42, 2 |") and line.endswith("| better than erc-only |")
    ws = c["with_seeds"]
    assert f"| {ws['se']:.2f}, {report.fmt_p(ws['p_value'])} ({report.fmt_p(ws['holm_p'])}) |" in line
    assert f"({c['mcnemar']['a_only']} / {c['mcnemar']['b_only']})" in line
    steer = next(line for line in text.splitlines() if line.startswith("| steer |"))
    assert "| +0.00 [+0.00, +0.00] |" in steer and steer.endswith(
        "| 1.0000 | 0.00, 1.0000 (1.0000) | no difference shown |"
    )
    assert f"**{paired['mde']['weighted_f1']:.2f} points**" in text and "2.80 ×" in text
    assert f"**{paired['mde']['weighted_f1_with_seeds_one_run']:.2f} points** for an arm of one run" in text
    assert "Not scored yet: mixed-auxiliary." in text
    assert "### Seeds" in text and "| erc-only | 42, 2 | 2 of 2 |" in text
    assert report.fmt_p(0.00002) == "< 0.0001" and report.fmt_p(None) == report.DASH


def test_report_without_paired_data_has_no_paired_table():
    text = report.render_results([{"dataset": "meld", "arms": [], "baselines": []}])
    assert "Paired against" not in text and "### Seeds" not in text


# -- baselines: both fits -------------------------------------------------------------------------


def test_both_baselines_keep_the_majority_class_once(monkeypatch):
    calls = []

    def fake(arm, test_uids, train="full", cache_uri=None, train_uids=None):
        calls.append((train, train_uids))
        suffix = "_arms" if train == "arms" else ""
        return [{"key": f"majority{suffix}"}, {"key": f"tfidf_lr{suffix}"}]

    monkeypatch.setattr(runner, "compute_baselines", fake)
    monkeypatch.setattr(
        runner, "prepared_rows", lambda arms, name, states: ([{"meta": {"uid": "u1"}}], "erc-only")
    )
    arms, states = ["erc-only"], [None]
    both = runner.section_baselines(arms, states, None, "both", None)
    assert [b["key"] for b in both] == ["majority", "tfidf_lr", "tfidf_lr_arms"]
    assert calls == [("full", None), ("arms", ["u1"])]
    assert [b["key"] for b in runner.section_baselines(arms, states, None, "arms", None)] == [
        "majority_arms",
        "tfidf_lr_arms",
    ]
    assert [b["key"] for b in runner.section_baselines(arms, states, None, "full", None)] == [
        "majority",
        "tfidf_lr",
    ]
    assert runner.parse_args([]).baseline_train == "both"
    with pytest.raises(ConfigError, match="full, arms or both"):
        runner.section_baselines(arms, states, None, "train", None)


def test_arms_training_uids_are_the_stratified_subset_prepare_takes():
    rng = random.Random(0)
    dialogues = [  # stand-ins for coe_runtime dialogues: only ids and labels are read
        SimpleNamespace(
            utterances=[SimpleNamespace(uid=f"d{d}-u{u}", label=rng.choice(LABELS)) for u in range(10)]
        )
        for d in range(30)
    ]
    src = SimpleNamespace(max_dialogues=0, max_train_examples=100, subset_seed=0)
    uids = runner.arms_training_uids(src, dialogues)
    assert len(uids) == 100 and len(set(uids)) == 100
    order = [u.uid for d in dialogues for u in d.utterances]
    assert uids == [u for u in order if u in set(uids)]  # file order kept
    labels = {u.uid: u.label for d in dialogues for u in d.utterances}
    for lab in LABELS:  # stratified: each label's share within one example of the whole's
        whole = sum(1 for x in labels.values() if x == lab) / len(labels)
        assert abs(sum(1 for u in uids if labels[u] == lab) - 100 * whole) <= 1
    assert runner.arms_training_uids(src, dialogues) == uids
