"""What the quality runner copies into the repository, and how rationale samples are quoted."""

from __future__ import annotations

import json
from types import SimpleNamespace

from coe_controller.state import StepView

from bench.quality import report
from bench.quality.evidence import (
    blank_echoes,
    evidence_files,
    rationale_samples,
    redact_sample,
    slim_prediction,
    snapshot_arm,
)
from coe_runtime.store import get_store


def test_evidence_files_picks_the_metrics_not_the_adapter():
    names = ["MANIFEST.json", "adapter/adapter_config.json", "best.json", "dev-metrics-epoch-1.json",
             "dev-metrics-epoch-2.json", "resolved-config.json", "train-log.jsonl"]  # fmt: skip
    assert evidence_files("train", names) == [
        "best.json",
        "dev-metrics-epoch-1.json",
        "dev-metrics-epoch-2.json",
    ]
    assert evidence_files("generate", ["metrics.json", "metrics.txt", "predictions.jsonl"]) == [
        "metrics.json",
        "predictions.jsonl",
    ]
    assert evidence_files("steer_round", ["round-2.json", "generations.jsonl", "memory-r2.jsonl"]) == [
        "round-2.json"
    ]
    assert evidence_files("prepare", ["erc-train.jsonl", "summary.json"]) == []


def test_slim_prediction_drops_everything_but_ids_answer_and_labels():
    row = {"id": "erc:x", "output": "<joy>", "parsed_label": "joy", "gold": "joy", "parse_method": "tag",
           "decoding": "generate", "prompt": "Monica: dataset text"}  # fmt: skip
    assert slim_prediction(row) == {
        k: row[k] for k in ("id", "output", "parsed_label", "gold", "parse_method", "decoding")
    }


def test_redact_sample_blanks_quotes_and_cuts_on_a_word():
    text = 'Ross says "I cannot believe you did that to me" so he is <angry>'
    assert redact_sample(text) == "Ross says “…” so he is <angry>"
    long = "word " * 100
    cut = redact_sample(long, limit=40)
    assert len(cut) <= 42 and cut.endswith(" …") and "wor …" not in cut
    assert redact_sample("a | b") == "a \\| b"  # a table cell stays one cell


def test_rationale_samples_takes_accepted_then_rejected_in_id_order():
    recs = [{"id": f"e{i}", "gold": "joy", "parsed": "joy", "accepted": i % 2 == 0, "via": "direct",
             "text": f"text {i}"} for i in range(9)]  # fmt: skip
    got = rationale_samples(list(reversed(recs)), accepted=2, rejected=1)
    assert [(s["id"], s["accepted"]) for s in got] == [("e0", True), ("e2", True), ("e1", False)]
    assert got[0]["answer"] == "joy" and got[0]["hint_text"] is None  # no "answer" field: the parse


def test_a_rationalized_sample_shows_the_hinted_rationale_memory_stored():
    recs = [{"id": "e1", "gold": "anger", "parsed": "joy", "answer": "neutral", "accepted": True,
             "via": "rationalized", "text": "Monica expresses joy.", "hint_text": "The emotion is anger."}]  # fmt: skip
    (sample,) = rationale_samples(recs)
    assert (sample["answer"], sample["text"], sample["hint_text"]) == (
        "neutral",
        "Monica expresses joy.",
        "The emotion is anger.",
    )
    text = report.render_results([{"dataset": "meld", "arms": [{"arm": "steer", "rationale_samples": {"round": 1, "samples": [sample]}}], "baselines": []}])  # fmt: skip
    assert (
        "| steer | 1 | `e1` | anger | neutral | yes (rationalized) | Monica expresses joy. | The emotion is anger. |"
        in text
    )


def _publish(store, tmp_path, uri: str, files: dict) -> dict:
    """Publish ``files`` (name -> bytes) as one step output at ``uri``; returns its manifest."""
    local = tmp_path / "local" / uri.rsplit("/", 2)[-2] / uri.rsplit("/", 1)[-1]
    for name, data in files.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)
    return store.publish(local, uri)


def test_snapshot_arm_copies_published_steps_only_and_replaces_the_folder(tmp_path):
    """Files come from each step's planned output (``<experiment>/<step>/<fingerprint>/``), as its
    manifest lists them, only for steps the experiment state calls done."""
    root = f"file://{tmp_path / 'store'}/x"
    store = get_store(root)
    store.write_bytes(f"{root}/_runs/spec.yaml", b"kind: CoEExperiment\n")
    erc_out, test_out = f"{root}/erc/fp-erc", f"{root}/test/fp-test"
    best = json.dumps({"epoch": 1, "weighted_f1": 40.0}).encode()
    erc_manifest = _publish(store, tmp_path, erc_out, {
        "best.json": best, "dev-metrics-epoch-1.json": best, "adapter/adapter_model.safetensors": b"\0" * 8})  # fmt: skip
    # an earlier spec's result of the same step, and a stray file not in the manifest: not evidence
    _publish(store, tmp_path, f"{root}/erc/fp-old", {"best.json": b"{}", "dev-metrics-epoch-9.json": b"{}"})
    store.write_json(f"{erc_out}/dev-metrics-epoch-7.json", {"weighted_f1": 1.0})
    pred = {"id": "a", "output": "<joy>", "parsed_label": "joy", "gold": "joy", "parse_method": "tag",
            "prompt": "dataset text"}  # fmt: skip
    store.write_jsonl(f"{test_out}/predictions.jsonl", [pred])  # written, not yet published
    store.write_json(f"{test_out}/metrics.json", {"weighted_f1": 41.0})
    views = [
        StepView(SimpleNamespace(name="erc", kind="train", output=erc_out), "done", erc_manifest),
        StepView(SimpleNamespace(name="test", kind="generate", output=test_out), "ready"),
    ]
    rows = [{"name": "erc", "kind": "train", "state": "succeeded", "attempts": 1, "duration_s": 9.5},
            {"name": "test", "kind": "generate", "state": "interrupted", "attempts": 1}]  # fmt: skip
    dest = tmp_path / "runs" / "meld" / "arm"
    dest.mkdir(parents=True)
    (dest / "stale.json").write_text("{}")
    links = snapshot_arm(store, dest, f"{root}/_runs/spec.yaml", views, rows)
    assert sorted(p.name for p in dest.iterdir()) == [
        "erc-best.json", "erc-dev-metrics-epoch-1.json", "spec.yaml", "steps.json"]  # fmt: skip
    assert links == {"spec": "spec.yaml", "steps": "steps.json", "best": "erc-best.json"}
    assert json.loads((dest / "erc-best.json").read_text())["weighted_f1"] == 40.0
    assert json.loads((dest / "steps.json").read_text())[1]["state"] == "interrupted"

    # the test pass published: its files come too, predictions slimmed
    manifest = _publish(store, tmp_path, test_out, {
        "predictions.jsonl": (json.dumps(pred) + "\n").encode(), "metrics.json": b'{"weighted_f1": 41.0}'})  # fmt: skip
    views[1] = StepView(views[1].step, "done", manifest)
    rows[1]["state"] = "succeeded"
    links = snapshot_arm(store, dest, f"{root}/_runs/spec.yaml", views, rows)
    assert (links["metrics"], links["predictions"]) == ("metrics.json", "predictions.jsonl")
    (got,) = [json.loads(line) for line in (dest / links["predictions"]).read_text().splitlines()]
    assert "prompt" not in got and got["parsed_label"] == "joy"
    assert not (tmp_path / "runs" / "meld" / "arm.tmp").exists()


def test_words_the_model_repeats_from_its_prompt_are_blanked():
    prompt = "Dialogue:\nRachel: I mean, I was gonna be homeless!\nMonica: Okay.\nWhich emotion?"
    text = "Rachel: I mean, I was gonna be homeless. Rachel is relieved, I mean happy."
    assert blank_echoes(text, prompt) == "…. Rachel is relieved, I mean happy."  # 3 shared words stay
    assert blank_echoes(text, "") == text
    recs = [{"id": "e1", "gold": "joy", "parsed": "joy", "accepted": False, "text": text}]
    (sample,) = rationale_samples(recs, prompts={"e1": prompt})
    assert "homeless" not in sample["text"] and sample["text"].startswith("…")


def test_results_name_a_store_inside_the_repository_by_its_relative_path(tmp_path):
    from bench.quality.run import REPO, shown_location

    inside = (REPO / "coe-runs" / "quality" / "q-meld-clues").as_uri()
    assert shown_location(inside) == "coe-runs/quality/q-meld-clues"
    outside = (tmp_path / "store" / "q-meld-clues").as_uri()
    assert shown_location(outside) == outside  # another machine's folder: named in full
    assert shown_location("s3://bucket/quality/q-meld-clues") == "s3://bucket/quality/q-meld-clues"
