"""The quality runner end to end on a TINY configuration: tiny random model, two MELD dialogues per
split, two arms (plain ERC, and ERC with generated clues), one short epoch. It must write a
RESULTS.md with every column, and a second invocation must skip every step (no training)."""

from __future__ import annotations

import json

import pytest
import yaml

from bench.quality import run as runner

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def tiny_arm(name: str, clues: bool) -> dict:
    return {
        "apiVersion": "coe.ml/v1alpha1",
        "kind": "CoEExperiment",
        "metadata": {"name": f"tq-meld-{name}"},
        "spec": {
            "dataset": {
                "format": "meld",
                "files": {s: f"{s}_sent_emo.csv" for s in ("train", "dev", "test")},
                "labelSet": {"name": "meld", "naming": "coe"},
                "historyWindow": 1,
                "maxLength": 512,
                "maxDialogues": 2,
                "subsetSeed": 0,
            },
            "clues": (
                {
                    "source": "generate",
                    "futureTurns": True,
                    "generation": {"maxNewTokens": 4, "batchSize": 16},
                    "cache": "file://unused/clue-cache-meld",
                }
                if clues
                else {"source": "none"}
            ),
            "baseModel": {"nameOrPath": "tiny", "seed": 0},
            "lora": {"r": 4, "alpha": 8, "modulesToSave": ["embed_tokens", "lm_head"]},
            "optimizer": {
                "learningRate": 0.002,
                "perDeviceBatchSize": 8,
                "gradientAccumulationSteps": 1,
                "gradientCheckpointing": False,
            },
            "training": {"erc": {"epochs": 1}},
            "stages": ["erc"],
            "evaluation": {"generation": {"maxNewTokens": 4, "batchSize": 32}},
            "resources": {"gpusPerPod": 0, "nprocPerNode": 1, "maxRetries": 0},
            "store": "file://unused",
        },
    }


@pytest.fixture
def tiny_specs(tmp_path):
    folder = tmp_path / "specs" / "meld"
    folder.mkdir(parents=True)
    for name, clues in (("erc-only", False), ("clues", True)):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(tiny_arm(name, clues), sort_keys=False))
    return tmp_path / "specs"


def test_bench_runner_tiny_end_to_end_is_resumable(tmp_path, tiny_specs, data_dir):
    store = f"file://{tmp_path / 'store'}"
    results = tmp_path / "out" / "RESULTS.md"
    args = runner.parse_args(
        ["--dataset", "meld", "--specs", str(tiny_specs), "--data-dir", str(data_dir), "--store", store,
         "--results", str(results), "--baseline-train", "arms"]
    )  # fmt: skip
    assert runner.main_with_args(args) == 0
    text = results.read_text()
    for column in (
        "dev wF1", "test wF1 [95% CI]", "test macro F1", "fallback parse %", "tokens trained",
        "tokens generated", "wall time", "Per-class F1", "majority class", "TF-IDF", "Published figures",
    ):  # fmt: skip
        assert column in text, column
    data = json.loads(results.with_suffix(".json").read_text())
    (section,) = data
    arms = {a["arm"]: a for a in section["arms"]}
    assert list(arms) == ["erc-only", "clues"]  # run order: ARM_ORDER
    for arm in arms.values():
        assert arm["complete"], arm
        assert arm["tokens_trained"] > 0 and arm["tokens_generated"] > 0 and arm["wall_s"] > 0
        ci = arm["test_ci"]["weighted_f1"]
        assert ci["low"] <= ci["point"] <= ci["high"]
        assert arm["test"]["n"] == section["test_n"]
        # each number is traceable: the linked files exist
        # each number is traceable: the linked files exist, copied beside RESULTS.md
        snap = results.parent / "runs" / "meld" / arm["arm"]
        for key in ("spec", "steps", "best", "metrics", "predictions"):
            linked = (results.parent / arm["links"][key]).resolve()
            assert linked.is_file() and linked.parent == snap.resolve(), (key, arm["links"][key])
        preds = [json.loads(line) for line in (snap / "predictions.jsonl").read_text().splitlines()]
        assert len(preds) == arm["test"]["n"]
        # no dataset text enters the evidence: ids, the model's answer and labels only
        assert all(
            set(p) <= {"id", "output", "parsed_label", "gold", "parse_method", "decoding"} for p in preds
        )
        steps = json.loads((snap / "steps.json").read_text())
        assert [s["state"] for s in steps] == ["succeeded"] * len(steps)
        assert "](runs/meld/" + arm["arm"] in text
    assert arms["clues"]["clues"]["generated"] > 0
    # --baseline-train arms: fitted on the arms' ERC training examples only
    assert {b["key"] for b in section["baselines"]} == {"majority_arms", "tfidf_lr_arms"}
    # clues paired against erc-only on the same test utterances, whole dialogues resampled
    paired = section["paired"]
    assert paired["reference"] == "erc-only" and paired["n"] == section["test_n"]
    assert paired["dialogues"] == 2  # two MELD test dialogues
    (row,) = paired["rows"]
    assert row["arm"] == "clues" and row["runs"] == [{"run": "clues", "seed": 42}]
    assert row["reference_runs"] == [{"run": "erc-only", "seed": 42}] and "with_seeds" not in row
    assert 0 <= row["holm_p"] <= 1 and row["verdict"]
    assert "### Paired against erc-only" in text and "Smallest effect this table can detect" in text
    assert "_predictions" not in results.with_suffix(".json").read_text()
    # the clue cache was moved into the replaced store
    assert (tmp_path / "store" / "clue-cache-meld").is_dir()

    # Second invocation: every step is published, so nothing runs (no new attempt anywhere).
    attempts = sorted((tmp_path / "store").glob("*/_runs/*/attempts.jsonl"))
    before = {p: p.read_text() for p in attempts}
    assert runner.main_with_args(args) == 0
    assert {p: p.read_text() for p in attempts} == before
    assert "test wF1" in results.read_text()

    # The same through coe-ctl, report only.
    from coe_controller.cli import main as coe_ctl

    results.unlink()
    argv = ["bench", "quality", "--dataset", "meld", "--specs", str(tiny_specs), "--data-dir", str(data_dir),
            "--store", store, "--results", str(results), "--baseline-train", "arms", "--report-only"]  # fmt: skip
    assert coe_ctl(argv) == 0
    assert "Produced by `coe-ctl bench quality --dataset meld`" in results.read_text()
    assert {p: p.read_text() for p in attempts} == before

    # The other dataset's command (here report-only, nothing of it has run) keeps the MELD table.
    emory = tiny_arm("erc-only", False)
    emory["metadata"]["name"] = "tq-emorynlp-erc-only"
    emory["spec"]["dataset"].update(
        format="emorynlp",
        files={s: f"emorynlp_{s}_final.csv" for s in ("train", "dev", "test")},
        labelSet={"name": "emorynlp", "naming": "coe"},
    )
    (tiny_specs / "emorynlp").mkdir()
    (tiny_specs / "emorynlp" / "erc-only.yaml").write_text(yaml.safe_dump(emory, sort_keys=False))
    argv[argv.index("meld")] = "emorynlp"
    assert coe_ctl(argv) == 0
    sections = {s["dataset"]: s for s in json.loads(results.with_suffix(".json").read_text())}
    assert list(sections) == ["meld", "emorynlp"]
    assert all(a["complete"] for a in sections["meld"]["arms"])
    assert not sections["emorynlp"]["arms"][0]["complete"]
    text = results.read_text()
    assert "## MELD" in text and "## EmoryNLP" in text
    assert "`coe-ctl bench quality --dataset meld` and `coe-ctl bench quality --dataset emorynlp`" in text


def test_bench_runner_rejects_arms_with_different_budgets(tmp_path, tiny_specs, data_dir):
    other = tiny_arm("clues", True)
    other["spec"]["training"]["erc"]["epochs"] = 3
    (tiny_specs / "meld" / "clues.yaml").write_text(yaml.safe_dump(other))
    arms = runner.load_arms(tiny_specs / "meld", data_dir)
    with pytest.raises(runner.ConfigError, match=r"clues.yaml: arm differs .* \['erc'\]"):
        runner.check_same_budget(arms)


def test_bench_runner_names_a_missing_data_file(tmp_path, tiny_specs):
    with pytest.raises(runner.ConfigError, match="dataset file for train not found at .*train_sent_emo.csv"):
        runner.load_arms(tiny_specs / "meld", tmp_path / "nowhere")
