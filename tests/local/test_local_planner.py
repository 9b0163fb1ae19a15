"""The planner: every strategy's step sequence, determinism, adapters, STEeR rounds as they are decided."""

from __future__ import annotations

import json

import pytest
from coe_controller.planner import observe_rounds, plan, plan_as_dicts, step_inputs
from coe_controller.spec import parse_spec

from coe_runtime.step import parse_step
from coe_runtime.store import FileStore, join
from tests.local.local_support import QUICKSTART_STEPS

STORE = "s3://bucket/runs"


def _spec(**spec):
    spec.setdefault("store", STORE)
    spec.setdefault("steer", {"rounds": 2})
    return parse_spec(
        {"apiVersion": "coe.ml/v1alpha1", "kind": "CoEExperiment", "metadata": {"name": "exp"}, "spec": spec}
    )


ALL_CONTINUE = {1: {"continue": True}, 2: {"continue": True}}
EXPECTED = {
    "full_curriculum": QUICKSTART_STEPS,
    "steer_only": ["prepare", "steer-r1-train", "steer-r1", "steer-r2-train", "steer-r2", "erc", "test"],
    "auxiliary_only": ["prepare", "roleplay", "speaker-id", "erc", "test"],
    "mixed_auxiliary": [
        "prepare",
        "steer-r1-train",
        "steer-r1",
        "steer-r2-train",
        "steer-r2",
        "mixed",
        "erc",
        "test",
    ],
}


@pytest.mark.parametrize("strategy", sorted(EXPECTED))
def test_local_planner_strategy_step_sequence(strategy):
    steps = plan(_spec(strategy=strategy), ALL_CONTINUE)
    assert [s.name for s in steps] == EXPECTED[strategy]
    assert not any(s.tentative for s in steps)


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        (["erc"], ["prepare", "erc", "test"]),
        (["roleplay", "erc"], ["prepare", "roleplay", "erc", "test"]),
        (["speaker_id", "roleplay"], ["prepare", "speaker-id", "roleplay", "test"]),
    ],
)
def test_local_planner_custom_stages(stages, expected):
    assert [s.name for s in plan(_spec(stages=stages))] == expected


def test_local_planner_generated_clues_come_first_and_feed_prepare():
    steps = plan(_spec(clues={"source": "generate"}, stages=["erc"]))
    assert [s.name for s in steps][:2] == ["clues", "prepare"]
    assert steps[1].config.clues == f"{steps[0].output}/clues.json"
    assert steps[1].needs == ("clues",)


def test_local_planner_is_deterministic():
    a = json.dumps(plan_as_dicts(plan(_spec(), {1: {"continue": True}})), sort_keys=True)
    b = json.dumps(plan_as_dicts(plan(_spec(), {1: {"continue": True}})), sort_keys=True)
    assert a == b


def test_local_planner_configs_validate_as_step_configs():
    for strategy in EXPECTED:
        for step in plan(_spec(strategy=strategy, clues={"source": "generate"})):
            again = parse_step(step.config.model_dump(mode="json"))
            assert again == step.config
            # <store>/<experiment>/<step>/<fingerprint>
            assert step.output == f"{STORE}/exp/{step.name}/{step.config.fingerprint}"
            assert len(step.config.fingerprint) == 16
            assert step.name == step.config.name


def test_local_planner_adapters_chain_through_the_curriculum():
    planned = plan(_spec(), ALL_CONTINUE)
    steps = {s.name: s.config for s in planned}
    o = {s.name: s.output for s in planned}
    assert steps["roleplay"].init_adapter is None
    assert steps["speaker-id"].init_adapter == f"{o['roleplay']}/adapter"
    assert steps["steer-r1-train"].init_adapter == f"{o['speaker-id']}/adapter"
    assert steps["steer-r1-train"].train_files == [f"{o['prepare']}/memory-r0.jsonl"]
    assert steps["steer-r2-train"].init_adapter == f"{o['steer-r1-train']}/adapter"
    assert steps["steer-r2-train"].train_files == [f"{o['steer-r1']}/memory-r1.jsonl"]
    assert steps["steer-r2"].memory == f"{o['steer-r1']}/memory-r1.jsonl"
    assert steps["steer-r2"].pool == f"{o['steer-r1']}/pool-r1.jsonl"
    assert steps["steer-r2"].adapter == f"{o['steer-r2-train']}/adapter"
    assert steps["erc"].init_adapter == f"{o['steer-r2-train']}/adapter"
    assert steps["erc"].eval_file == f"{o['prepare']}/erc-dev.jsonl"
    assert steps["test"].adapter == f"{o['erc']}/adapter"
    assert steps["test"].input_file == f"{o['prepare']}/erc-test.jsonl"
    # Per-stage epochs: the paper's defaults.
    assert [steps[n].optim.epochs for n in ("roleplay", "speaker-id", "steer-r1-train", "erc")] == [
        2,
        2,
        8,
        20,
    ]
    assert set(steps["prepare"].tasks) == {"erc", "roleplay", "speaker_id", "steer"}


def test_local_planner_restart_from_base_restarts_each_round_from_the_entry_adapter():
    planned = plan(_spec(steer={"rounds": 2, "restartFromBase": True}), ALL_CONTINUE)
    steps = {s.name: s.config for s in planned}
    o = {s.name: s.output for s in planned}
    assert steps["steer-r2-train"].init_adapter == f"{o['speaker-id']}/adapter"
    assert steps["erc"].init_adapter == f"{o['steer-r2-train']}/adapter"


def test_local_planner_mixed_stage_trains_on_auxiliary_data_and_final_memory():
    planned = plan(_spec(strategy="mixed_auxiliary"), ALL_CONTINUE)
    steps = {s.name: s.config for s in planned}
    o = {s.name: s.output for s in planned}
    assert steps["mixed"].train_files == [
        f"{o['prepare']}/roleplay-train.jsonl",
        f"{o['prepare']}/speaker_id-train.jsonl",
        f"{o['steer-r2']}/memory-r2.jsonl",
    ]


def test_local_planner_undecided_rounds_make_later_steps_tentative():
    steps = plan(_spec(steer={"rounds": 3}))
    tentative = {s.name: s.tentative for s in steps}
    assert not tentative["steer-r1-train"] and not tentative["steer-r1"]
    assert tentative["steer-r2-train"] and tentative["steer-r3"] and tentative["erc"] and tentative["test"]
    # Round 1 decided to continue: round 2 is definite, round 3 and later still tentative.
    steps = plan(_spec(steer={"rounds": 3}), {1: {"continue": True}})
    tentative = {s.name: s.tentative for s in steps}
    assert not tentative["steer-r2"] and tentative["steer-r3-train"] and tentative["erc"]


def test_local_planner_a_round_that_stops_ends_steer():
    steps = plan(
        _spec(steer={"rounds": 3}), {1: {"continue": True}, 2: {"continue": False, "stop_reason": "few"}}
    )
    names = [s.name for s in steps]
    assert "steer-r3-train" not in names and names[-2:] == ["erc", "test"]
    erc = next(s for s in steps if s.name == "erc")
    r2_train = next(s for s in steps if s.name == "steer-r2-train")
    assert erc.config.init_adapter == f"{r2_train.output}/adapter" and not erc.tentative
    assert "steer-r2" in erc.needs


def test_local_planner_needs_are_producers_of_inputs():
    steps = plan(_spec(), ALL_CONTINUE)
    names = [s.name for s in steps]
    for i, s in enumerate(steps):
        assert all(names.index(n) < i for n in s.needs)
        for uri in step_inputs(s.config):
            producer = uri[len(f"{STORE}/exp/") :].split("/")[0]
            assert producer in s.needs, (s.name, uri)


def test_local_planner_resources_per_step():
    spec = _spec(
        resources={"gpusPerPod": 2, "deepspeed": "zero2", "overrides": {"erc": {"activeDeadlineSeconds": 60}}}
    )
    steps = {s.name: s for s in plan(spec, ALL_CONTINUE)}
    assert (
        steps["prepare"].resources.gpus_per_pod == 0
        and steps["prepare"].config.distributed.nproc_per_node == 1
    )
    assert steps["roleplay"].config.distributed.nproc_per_node == 2
    assert steps["roleplay"].config.distributed.deepspeed == "zero2"
    assert steps["test"].config.distributed.deepspeed is None  # DeepSpeed is for training only
    assert steps["erc"].resources.active_deadline_seconds == 60
    assert steps["roleplay"].resources.active_deadline_seconds is None


def test_local_planner_observe_rounds_reads_published_decisions(tmp_path):
    spec = _spec(store=f"file://{tmp_path}", steer={"rounds": 3})
    store = FileStore()
    assert observe_rounds(spec, store) == {}
    r1 = next(s for s in plan(spec) if s.name == "steer-r1").output
    store.write_json(join(r1, "round-1.json"), {"continue": True, "accepted": 4})
    assert observe_rounds(spec, store) == {}  # not published until its manifest exists
    store.write_json(join(r1, "MANIFEST.json"), {"files": []})
    assert observe_rounds(spec, store) == {1: {"continue": True, "accepted": 4}}


def test_local_planner_a_prepare_override_keeps_prepare_on_one_cpu_process():
    # An override for more memory must not bring back the training steps' GPUs and processes.
    spec = _spec(
        resources={
            "gpusPerPod": 2,
            "nprocPerNode": 2,
            "deepspeed": "zero2",
            "overrides": {"prepare": {"memory": "16Gi"}},
        }
    )
    prepare = next(s for s in plan(spec, ALL_CONTINUE) if s.name == "prepare")
    assert prepare.resources.gpus_per_pod == 0 and prepare.resources.memory == "16Gi"
    assert prepare.config.distributed.nproc_per_node == 1 and prepare.config.distributed.nnodes == 1
    assert prepare.config.distributed.deepspeed is None
