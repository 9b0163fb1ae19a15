"""Step identity: fingerprints follow what went into a step, and the experiment state says what is stale."""

from __future__ import annotations

import json

import pytest
from coe_controller.planner import plan
from coe_controller.spec import parse_spec
from coe_controller.state import DONE, READY, TENTATIVE, WAITING, observe

from coe_runtime.fingerprint import changed_fields, fingerprint_of, identity
from coe_runtime.record import RUN_RECORD, publish_step
from coe_runtime.store import MANIFEST, FileStore

ALL_CONTINUE = {1: {"continue": True}, 2: {"continue": True}}


def _spec(name="exp", store="s3://bucket/runs", **spec):
    spec.setdefault("store", store)
    spec.setdefault("steer", {"rounds": 2})
    return parse_spec(
        {"apiVersion": "coe.ml/v1alpha1", "kind": "CoEExperiment", "metadata": {"name": name}, "spec": spec}
    )


def _fps(spec, rounds=ALL_CONTINUE) -> dict[str, str]:
    return {s.name: s.config.fingerprint for s in plan(spec, rounds)}


def test_an_unchanged_spec_keeps_every_fingerprint():
    assert _fps(_spec()) == _fps(_spec())


def test_the_erc_epochs_change_erc_and_what_follows_it_only():
    before, after = _fps(_spec()), _fps(_spec(training={"erc": {"epochs": 3}}))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"erc", "test"}


def test_the_history_window_changes_prepare_and_everything_downstream():
    before = _fps(_spec())
    after = _fps(_spec(dataset={"format": "demo", "labelSet": {"name": "demo"}, "historyWindow": 3}))
    assert all(before[n] != after[n] for n in before)


def test_a_steer_setting_leaves_the_auxiliary_stages_alone():
    before, after = _fps(_spec()), _fps(_spec(training={"steer": {"epochs": 3}}))
    assert [n for n in before if before[n] == after[n]] == ["prepare", "roleplay", "speaker-id"]


def test_moving_the_store_or_renaming_the_experiment_keeps_the_identities():
    assert _fps(_spec()) == _fps(_spec(name="other", store="file:///elsewhere"))


def test_the_output_ends_in_the_fingerprint_and_the_fingerprint_covers_the_config():
    for step in plan(_spec(), ALL_CONTINUE):
        ident = identity(step.config, "s3://bucket/runs/exp")
        assert fingerprint_of(ident) == step.config.fingerprint
        assert step.output.endswith("/" + step.config.fingerprint)
        assert "output" not in ident["step"] and "fingerprint" not in ident["step"]
        assert "s3://bucket/runs/exp" not in json.dumps(ident)  # inputs are relative to the experiment


def test_changed_fields_names_every_path():
    a = {"step": {"optim": {"epochs": 2, "seed": 1}, "files": ["x", "y"]}}
    b = {"step": {"optim": {"epochs": 3, "seed": 1}, "files": ["x", "z"], "new": 1}}
    assert changed_fields(a, b) == ["step.files[1]", "step.new", "step.optim.epochs"]
    assert changed_fields(a, a) == []


def _publish(step, root_files: dict[str, object] | None = None, tmp=None):
    tmp.mkdir(parents=True, exist_ok=True)
    for name, doc in (root_files or {}).items():
        (tmp / name).write_text(json.dumps(doc))
    (tmp / "out.txt").write_text(step.name)
    publish_step(step.config, tmp, meta={"kind": step.kind})


def test_the_state_reuses_marks_stale_and_explains(tmp_path):
    store_uri = f"file://{tmp_path}/store"
    spec = _spec(store=store_uri, strategy="auxiliary_only")
    steps = plan(spec)
    for i, step in enumerate(steps):
        files = {"metrics.json": {"weighted_f1": 50.0}} if step.kind == "generate" else {}
        if step.name == "erc":
            files = {"best.json": {"epoch": 1, "weighted_f1": 40.0}}
        _publish(step, files, tmp_path / f"w{i}")
    first = observe(spec, FileStore())
    assert first.finished and not first.holds_earlier_results
    assert first.metrics()["test_weighted_f1"] == 50.0 and first.metrics()["dev_weighted_f1"] == 40.0
    record = json.loads((tmp_path / "store/exp/test" / steps[-1].config.fingerprint / RUN_RECORD).read_text())
    assert record["fingerprint"] == steps[-1].config.fingerprint and "torch_threads" in record

    edited = _spec(store=store_uri, strategy="auxiliary_only", training={"erc": {"epochs": 3}})
    state = observe(edited, FileStore())
    by = {v.name: v for v in state.steps}
    assert [by[n].state for n in ("prepare", "roleplay", "speaker-id")] == [DONE] * 3
    assert by["erc"].state == READY and by["test"].state == WAITING
    assert by["erc"].changes == ["optim.epochs: 20.0 -> 3.0"]
    assert by["test"].changes == ["adapter: from a new erc"]
    assert [v.name for v in state.stale] == ["erc", "test"]
    assert state.holds_earlier_results and not state.finished
    assert state.next_step().name == "erc"
    assert state.metrics() == {}  # the current spec has no results yet: the old ones are not shown as its
    # The old results are still there, under their own fingerprints.
    old_erc = tmp_path / "store/exp/erc" / steps[[s.name for s in steps].index("erc")].config.fingerprint
    assert (old_erc / MANIFEST).is_file() and (old_erc / "best.json").is_file()


def test_a_folder_whose_manifest_names_another_fingerprint_is_not_done(tmp_path):
    spec = _spec(store=f"file://{tmp_path}/store", strategy="auxiliary_only")
    prepare = plan(spec)[0]
    work = tmp_path / "w"
    work.mkdir()
    (work / "f").write_text("x")
    FileStore().publish(work, prepare.output, meta={"fingerprint": "0" * 16})
    assert observe(spec, FileStore()).steps[0].state == READY


def test_steps_after_an_undecided_round_are_tentative(tmp_path):
    spec = _spec(store=f"file://{tmp_path}/store")
    states = {v.name: v.state for v in observe(spec, FileStore()).steps}
    assert states["prepare"] == READY and states["erc"] == TENTATIVE


def test_a_spec_without_spec_is_refused():
    from coe_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="spec"):
        parse_spec({"apiVersion": "coe.ml/v1alpha1", "kind": "CoEExperiment", "metadata": {"name": "x"}})


def test_editing_a_bundled_seed_makes_prepare_and_everything_after_it_stale(monkeypatch):
    from coe_runtime import fingerprint

    before = _fps(_spec())
    monkeypatch.setattr(fingerprint, "bundled_data_digest", lambda: "0" * 16)  # other seed bytes
    after = _fps(_spec())
    assert all(before[n] != after[n] for n in before)


def test_the_bundled_data_digest_covers_the_seed_files():
    from coe_runtime.data.seeds import SEEDS_DIR
    from coe_runtime.fingerprint import bundled_data_digest

    seeds = [p for p in SEEDS_DIR.iterdir() if p.is_file()]
    assert seeds and len(bundled_data_digest()) == 16


# The quick start's and the GPU erc-only example's fingerprints as of 2026-12-02. A fingerprint is a
# stored result's identity: a change here (a step config field, a default, bundled seed or demo data)
# makes every user's stored steps stale and reruns them. Refactors must leave these alone; a change
# that means to alter results bumps STEP_SCHEMA_VERSION (or edits the data) and records the new values.
# quality-erc-only's prepare (and so erc, test) changed once, on purpose: its prepare override used to
# replace the planner's one-CPU-process default, so prepare ran as 2 processes on the GPU nodes.
# The quick start's STEeR rounds (and so everything after steer-r1) changed once, on purpose, on
# 2026-12-02: a round no longer accepts a rationale that names another emotion than the gold label
# (SteerRoundStep.consistent), and — STEP_KIND_VERSIONS["steer_round"] 2, then 3 — a hinted rationale
# that repeats the hint's wording (plurals aside) is rejected; prepare, the auxiliary stages and steer-r1-train kept theirs.
KNOWN_FINGERPRINTS = {
    "quickstart.yaml": {
        "erc": "2f8b0c36eb36f1b1",
        "prepare": "b91dcc997a3a16c8",
        "roleplay": "d2ceb8f686420433",
        "speaker-id": "ce96cab9857d7463",
        "steer-r1": "03299d3beec33c64",
        "steer-r1-train": "4994d2cac23284f8",
        "steer-r2": "9295c1a2df967130",
        "steer-r2-train": "06cd9a38eacf1fdf",
        "test": "5f524a492f36bbeb",
    },
    "quality-erc-only.yaml": {
        "erc": "73bb76255a551c8c",
        "model": "0cedf24112b71b14",
        "prepare": "d2573226f8cb14e2",
        "test": "89b82bcbe4299c53",
    },
}


@pytest.mark.parametrize("example", sorted(KNOWN_FINGERPRINTS))
def test_the_example_specs_keep_their_recorded_fingerprints(example):
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "manifests" / "examples" / example
    spec = parse_spec(yaml.safe_load(path.read_text()))
    rounds = {i: {"continue": True} for i in range(1, 10)}
    assert _fps(spec, rounds) == KNOWN_FINGERPRINTS[example]
