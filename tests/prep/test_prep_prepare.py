"""The prepare step on the demo data, published to a file:// store."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from coe_runtime.data.dialogue import read_examples
from coe_runtime.errors import ConfigError
from coe_runtime.prepare import run_prepare
from coe_runtime.prompts.builder import estimate_tokens
from coe_runtime.record import RUN_RECORD
from coe_runtime.step import PrepareStep
from coe_runtime.store import MANIFEST, sha256_file

ALL_TASKS = ["erc", "roleplay", "speaker_id", "steer"]
EXPECTED = {
    "erc-train.jsonl",
    "erc-dev.jsonl",
    "erc-test.jsonl",
    "roleplay-train.jsonl",
    "speaker_id-train.jsonl",
    "memory-r0.jsonl",
    "pool-r0.jsonl",
    "summary.json",
    "run-record.json",  # coe_runtime.record: versions, seeds, threads, device, fingerprint
    "reference/erc-train.json",
    "reference/erc-dev.json",
    "reference/erc-test.json",
    "reference/roleplay-train.json",
    "reference/speaker_id-train.json",
    "reference/trainbegin.json",
    "reference/train4infer.json",
}


def demo_step(out, **kw) -> PrepareStep:
    data = {"name": "prepare", "output": f"file://{out}", "dataset": {"format": "demo"}, "tasks": ALL_TASKS}
    for key, value in kw.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = data[key] | value
        else:
            data[key] = value
    return PrepareStep.model_validate(data)


def test_prepare_publishes_every_file_and_the_manifest(tmp_path):
    out = tmp_path / "store" / "exp" / "prepare"
    summary = run_prepare(demo_step(out), count_tokens=estimate_tokens)
    manifest = json.loads((out / MANIFEST).read_text())
    assert {f["path"] for f in manifest["files"]} == EXPECTED
    for entry in manifest["files"]:
        assert sha256_file(out / entry["path"]) == entry["sha256"]
    erc_train = read_examples(out / "erc-train.jsonl")
    memory, pool = read_examples(out / "memory-r0.jsonl"), read_examples(out / "pool-r0.jsonl")
    assert len(erc_train) == summary["splits"]["train"]["utterances"] == 237
    assert len(memory) == 14 and len(pool) == 237 - 14
    assert len(read_examples(out / "erc-test.jsonl")) == summary["splits"]["test"]["utterances"]
    for name, info in summary["files"].items():
        assert info["examples"] == len(read_examples(out / name))
        assert info["prompt_tokens"]["max"] <= 1400
    ref = [json.loads(line) for line in (out / "reference" / "trainbegin.json").read_text().splitlines()]
    assert [r["target"] for r in ref] == [m.target for m in memory] and set(ref[0]) == {"input", "target"}
    assert summary["clues"]["train"]["personas"] == summary["clues"]["train"]["speaker_pairs"]
    assert json.loads((out / "summary.json").read_text()) == summary


@pytest.mark.slow
def test_budget_with_the_model_tokenizer(tmp_path):
    from coe_runtime.models.loading import load_tokenizer
    from coe_runtime.step import ModelRef

    out = tmp_path / "prep"
    summary = run_prepare(demo_step(out, dataset={"max_length": 420}, tasks=["erc", "steer"]))
    assert summary["token_counter"] == "tokenizer:tiny"
    assert summary["files"]["erc-train.jsonl"]["history_cut"] > 0  # the budget did bite
    tok = load_tokenizer(ModelRef())
    for name in ("erc-train.jsonl", "memory-r0.jsonl"):
        for ex in read_examples(out / name):
            n = len(tok(ex.prompt + ex.target)["input_ids"]) + 1  # + EOS
            assert n <= 420, (ex.id, n)
            assert "### Question\n" in ex.prompt and ex.prompt.endswith("### Answer\n")


def test_subsetting_options_keep_seeds_and_strata(tmp_path):
    out = tmp_path / "prep"
    step = demo_step(
        out,
        dataset={"max_dialogues": 12, "max_train_examples": 40, "max_test_examples": 20, "subset_seed": 3},
        steer={"max_pool": 25},
    )
    summary = run_prepare(step, count_tokens=estimate_tokens)
    assert summary["splits"]["train"]["dialogues"] == 12
    erc = read_examples(out / "erc-train.jsonl")
    assert len(erc) == 40 and len(read_examples(out / "erc-test.jsonl")) == 20
    assert len(Counter(e.meta["label"] for e in erc)) == 7  # every class kept
    assert len(read_examples(out / "memory-r0.jsonl")) == 14  # seed dialogues always kept
    assert len(read_examples(out / "pool-r0.jsonl")) == 25


def test_only_the_requested_tasks_are_written(tmp_path):
    out = tmp_path / "prep"
    run_prepare(demo_step(out, tasks=["erc"]), count_tokens=estimate_tokens)
    written = {p.name for p in out.iterdir() if p.is_file()}
    assert written == {
        "erc-train.jsonl",
        "erc-dev.jsonl",
        "erc-test.jsonl",
        "summary.json",
        RUN_RECORD,
        MANIFEST,
    }


def test_bundled_demo_clues_can_be_turned_off(tmp_path):
    out = tmp_path / "prep"
    summary = run_prepare(
        demo_step(out, tasks=["erc"], use_bundled_clues=False), count_tokens=estimate_tokens
    )
    assert summary["clues"] is None
    assert all("### Personas" not in ex.prompt for ex in read_examples(out / "erc-test.jsonl"))


def test_only_rank_zero_prepares(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "prep"
    assert "skipped" in run_prepare(demo_step(out), count_tokens=estimate_tokens)
    assert not out.exists()


def test_user_jsonl_data_with_a_clue_file_and_no_train_split(tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text(
        json.dumps({"dialogue_id": "a", "speaker": "Kim", "text": "Hello there.", "label": "neutral"})
        + "\n"
        + json.dumps({"dialogue_id": "a", "speaker": "Lou", "text": "Yay, you came!", "label": "joy"})
        + "\n",
        encoding="utf-8",
    )
    clues = tmp_path / "clues.json"
    clues.write_text(
        json.dumps({"version": 1, "scenes": {"test/a": "A doorstep at dusk."}}), encoding="utf-8"
    )
    source = {"format": "jsonl", "files": {"test": str(data)}, "label_set": {"name": "demo"}}
    out = tmp_path / "prep"
    step = demo_step(out, dataset=source, tasks=["erc"], clues=str(clues))
    summary = run_prepare(step, count_tokens=estimate_tokens)
    examples = read_examples(out / "erc-test.jsonl")
    assert [e.target for e in examples] == ["<neutral>", "<joy>"]
    assert "A doorstep at dusk." in examples[1].prompt and summary["clues"]["test"]["scenes"] == 1
    with pytest.raises(ConfigError, match="'roleplay' is built from the training split"):
        run_prepare(
            demo_step(tmp_path / "p2", dataset=source, tasks=["roleplay"]), count_tokens=estimate_tokens
        )
    assert not (tmp_path / "p2").exists()  # nothing half-published


def test_summary_json_and_data_check_report_the_same_prompt_percentiles(tmp_path):
    """summary.json (the prepare step) and `coe-ctl data check` (data_report) count the same prompts
    on the demo data and report the same nearest-rank p50/p90/p99/max of them."""
    from coe_runtime import data_report

    summary = run_prepare(demo_step(tmp_path / "prep", tasks=["erc"]), count_tokens=estimate_tokens)
    label_set = data_report.resolve_label_set(None, "demo")
    splits = data_report.load_dataset(data_report.resolve_files(None, "demo"), "demo", label_set)
    clues, _ = data_report.load_clues_for(None, "demo")
    report = data_report.summarize(splits, label_set, clues=clues)
    for split in ("train", "dev", "test"):
        prepared = summary["files"][f"erc-{split}.jsonl"]["prompt_tokens"]
        checked = report["splits"][split]["prompt_tokens"]
        assert prepared == {k: checked[k] for k in ("p50", "p90", "p99", "max")}
