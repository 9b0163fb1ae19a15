"""The quality runner reads an arm through the experiment state (coe_controller.state): results
under ``<experiment>/<step>/<fingerprint>/``, prepared files from the plan's prepare output, and
never an earlier spec's result or a file outside the published manifest. No data, no model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from coe_controller.local import runs_prefix
from coe_controller.planner import experiment_prefix
from coe_controller.spec import parse_spec

from bench.quality import run as runner
from coe_runtime.record import publish_step
from coe_runtime.store import MANIFEST, get_store, join


def _arm(tmp_path: Path, epochs: int = 1) -> runner.Arm:
    spec = parse_spec(
        {
            "apiVersion": "coe.ml/v1alpha1",
            "kind": "CoEExperiment",
            "metadata": {"name": "q-erc-only"},
            "spec": {
                "dataset": {"format": "demo", "labelSet": {"name": "demo"}},
                "stages": ["erc"],
                "training": {"erc": {"epochs": epochs}},
                "store": f"file://{tmp_path / 'store'}",
            },
        }
    )
    return runner.Arm("erc-only", tmp_path / "erc-only.yaml", spec)


def _rows(n: int, split: str) -> list[dict]:
    return [{"prompt": "dataset text", "meta": {"uid": f"{split}-{i}", "label": "joy"}} for i in range(n)]


def _publish(step, files: dict[str, object], work: Path) -> None:
    work.mkdir(parents=True)
    for name, doc in files.items():
        if name.endswith(".jsonl"):
            (work / name).write_text("".join(json.dumps(r) + "\n" for r in doc))
        else:
            (work / name).write_text(json.dumps(doc))
    publish_step(step.config, work, meta={"kind": step.kind})


def _attempt(spec, step, seconds: float, earlier: tuple[tuple[str, float, str | None], ...] = ()) -> None:
    """One succeeded attempt of ``seconds``, after ``earlier`` ones: (status, seconds, fingerprint
    or None for this step's)."""
    uri = join(runs_prefix(spec), step.name, "attempts.jsonl")
    fp = step.config.fingerprint
    records = []
    for n, (status, secs, other) in enumerate([*earlier, ("succeeded", seconds, None)], 1):
        records += [{"event": "start", "attempt": n, "fingerprint": other or fp},
                    {"event": "end", "attempt": n, "status": status, "duration_s": secs, "rc": 0 if status == "succeeded" else -15,
                     "fingerprint": other or fp}]  # fmt: skip
    get_store(uri).write_jsonl(uri, records)


def _files(step) -> dict[str, object]:
    if step.kind == "prepare":
        return {"erc-train.jsonl": _rows(4, "train"), "erc-dev.jsonl": _rows(3, "dev"), "erc-test.jsonl": _rows(2, "test")}  # fmt: skip
    if step.name == "erc":
        return {"best.json": {"epoch": 1, "weighted_f1": 40.0}, "dev-metrics-epoch-1.json": {"weighted_f1": 40.0},
                "resolved-config.json": {"summary": {"non_pad_tokens": 123}}}  # fmt: skip
    preds = [{"id": f"test-{i}", "output": "<joy>", "parsed_label": "joy", "gold": "joy", "parse_method": "tag",
              "prompt": "dataset text"} for i in range(2)]  # fmt: skip
    return {"metrics.json": {"n": 2, "weighted_f1": 41.0, "macro_f1": 30.0, "accuracy": 50.0, "labels": ["joy"]},
            "predictions.jsonl": preds}  # fmt: skip


def test_collect_arm_reads_the_current_fingerprints_results(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "count_answer_tokens", lambda texts, model: len(texts))
    arm = _arm(tmp_path)
    state = runner.observe_arm(arm)
    steps = state.plan
    assert [s.name for s in steps] == ["prepare", "erc", "test"]
    # An earlier spec's erc result, and a file in the old layout: neither is this arm's result.
    old = _arm(tmp_path, epochs=3)
    (old_erc,) = [s for s in runner.observe_arm(old).plan if s.name == "erc"]
    _publish(steps[0], _files(steps[0]), tmp_path / "w0")
    _publish(old_erc, {"best.json": {"epoch": 3, "weighted_f1": 99.0}}, tmp_path / "w-old")
    exp = Path(experiment_prefix(arm.spec).removeprefix("file://"))
    (exp / "erc").mkdir(exist_ok=True)
    (exp / "erc" / "best.json").write_text(json.dumps({"weighted_f1": 77.0}))

    out = runner.collect_arm(arm, tmp_path / "results", tmp_path / "results" / "runs")
    assert not out["complete"] and out["next_step"] == "erc"
    assert "dev" not in out and "test" not in out
    assert sorted(p.name for p in (tmp_path / "results" / "runs" / "erc-only").iterdir()) == [
        "arm.json",
        "steps.json",
    ]

    for i, step in enumerate(steps[1:], 1):
        _publish(step, _files(step), tmp_path / f"w{i}")
        # erc resumed after an interruption (both parts count); an earlier spec's attempt does not.
        earlier = (
            (("failed", 500.0, "0000other0000000"), ("interrupted", 7.0, None)) if step.name == "erc" else ()
        )
        _attempt(arm.spec, step, 10.0 * i, earlier)
    state = runner.observe_arm(arm)
    assert state.finished
    out = runner.collect_arm(arm, tmp_path / "results", tmp_path / "results" / "runs", state)
    assert out["complete"] and out["next_step"] is None
    assert out["dev"]["weighted_f1"] == 40.0  # this fingerprint's best.json, not 99 or 77
    assert out["test"]["weighted_f1"] == 41.0 and out["test"]["n"] == 2
    assert (out["wall_s"], out["tokens_trained"], out["tokens_generated"]) == (37.0, 123, 2)
    snap = tmp_path / "results" / "runs" / "erc-only"
    assert sorted(p.name for p in snap.iterdir()) == [
        "arm.json", "erc-best.json", "erc-dev-metrics-epoch-1.json", "metrics.json", "predictions.jsonl", "steps.json"]  # fmt: skip
    assert json.loads((snap / "erc-best.json").read_text())["weighted_f1"] == 40.0
    rows = json.loads((snap / "steps.json").read_text())
    assert [r["state"] for r in rows] == ["succeeded"] * 3
    assert [r["fingerprint"] for r in rows] == [s.config.fingerprint for s in steps]
    assert [(r["attempts"], r["duration_s"], r["attempts_s"]) for r in rows[1:]] == [
        (2, 10.0, 17.0),
        (1, 20.0, 20.0),
    ]
    for key in ("steps", "best", "metrics", "predictions"):
        assert (tmp_path / "results" / out["links"][key]).resolve().parent == snap.resolve(), key
    assert "prompt" not in (snap / "predictions.jsonl").read_text()

    # Prepared files come from the plan's prepare output (its fingerprint folder).
    assert runner.test_utterances([arm]) == (["test-0", "test-1"], "erc-only")
    assert runner._dev_n(state) == 3
    prep = state.view("prepare").step.output
    assert prep.endswith("/prepare/" + state.view("prepare").step.config.fingerprint)
    assert Path(prep.removeprefix("file://"), MANIFEST).is_file()


def test_an_unpublished_prepare_gives_no_test_utterances(tmp_path):
    arm = _arm(tmp_path)
    (prep,) = [s for s in runner.observe_arm(arm).plan if s.name == "prepare"]
    store = get_store(prep.output)
    store.write_jsonl(join(prep.output, "erc-test.jsonl"), _rows(2, "test"))  # written, no manifest yet
    assert runner.test_utterances([arm]) == (None, None)
    assert runner._dev_n(runner.observe_arm(arm)) is None


def _finished_arm_with_snapshot(tmp_path: Path, monkeypatch) -> tuple[runner.Arm, dict, Path]:
    monkeypatch.setattr(runner, "count_answer_tokens", lambda texts, model: len(texts))
    arm = _arm(tmp_path)
    for i, step in enumerate(runner.observe_arm(arm).plan):
        _publish(step, _files(step), tmp_path / f"w{i}")
        _attempt(arm.spec, step, 10.0)
    runs = tmp_path / "results" / "runs" / "demo"  # as build_section lays it out: runs/<dataset>/<arm>/
    out = runner.collect_arm(arm, tmp_path / "results", runs)
    assert out["complete"] and out["read_from"] == "store"
    return arm, out, runs


def test_an_arm_missing_from_the_store_is_read_from_its_committed_snapshot(tmp_path, monkeypatch):
    arm, from_store, runs = _finished_arm_with_snapshot(tmp_path, monkeypatch)
    shutil.rmtree(tmp_path / "store")  # a fresh clone: the evidence is committed, the store is not
    out = runner.collect_arm(arm, tmp_path / "results", runs)
    assert out["read_from"] == "snapshot" and out["complete"]
    for key in (
        "dev",
        "dev_n",
        "test",
        "test_ci",
        "wall_s",
        "tokens_trained",
        "tokens_generated",
        "test_ids",
    ):
        assert out[key] == from_store[key], key
    assert out["_predictions"] == from_store["_predictions"]
    # (this test's store has no spec.yaml, so the store row links one the snapshot lacks)
    assert out["links"] == {k: v for k, v in from_store["links"].items() if k != "spec"}
    monkeypatch.setattr(
        runner, "section_baselines", lambda *a: []
    )  # this test's ids are not the demo split's
    section = runner.build_section("demo", [arm], tmp_path / "results", "full", None, runs.parent)
    (row,) = section["arms"]
    assert row["test"]["weighted_f1"] == 41.0 and section["dev_n"] == 3
    assert section["test_n"] == 2  # the test ids of the committed predictions ("test-0", "test-1")
    assert "test predictions" in section["test_set_note"]


def test_a_snapshot_of_other_settings_or_a_rerun_under_way_is_not_mistaken(tmp_path, monkeypatch):
    arm, _, runs = _finished_arm_with_snapshot(tmp_path, monkeypatch)
    shutil.rmtree(tmp_path / "store")
    snap = runs / "erc-only"
    before = {p.name: p.read_bytes() for p in snap.iterdir()}
    # An edited spec (3 epochs): its erc and test fingerprints differ, so the evidence is not its.
    edited = runner.collect_arm(_arm(tmp_path, epochs=3), tmp_path / "results", runs)
    assert not edited["complete"] and "test" not in edited and edited["read_from"] == "store"
    # The same spec rerunning in a fresh store (prepare published again, erc under way): the
    # finished arm's evidence is shown and left as it was, not replaced by the partial run.
    prep = runner.observe_arm(arm).plan[0]
    _publish(prep, _files(prep), tmp_path / "again")
    out = runner.collect_arm(arm, tmp_path / "results", runs)
    assert out["read_from"] == "snapshot" and out["test"]["weighted_f1"] == 41.0
    assert {p.name: p.read_bytes() for p in snap.iterdir()} == before
    # A snapshot whose steps.json says a step failed is not evidence of a finished arm.
    rows = json.loads((snap / "steps.json").read_text())
    rows[-1]["state"] = "failed"
    (snap / "steps.json").write_text(json.dumps(rows))
    assert runner.collect_arm(arm, tmp_path / "results", runs)["read_from"] == "store"
