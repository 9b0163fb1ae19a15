"""How step pods reach their model: HF_HUB_OFFLINE only where the model is not a Hub id, HF_TOKEN
from the Secret the spec names (baseModel.hfTokenSecret), never inlined."""

from __future__ import annotations

from pathlib import Path

from coe_controller import render
from coe_controller.planner import plan
from coe_controller.spec import load_spec

from coe_runtime.step import parse_step

REPO = Path(__file__).resolve().parents[2]


def _env(step) -> dict[str, dict]:
    objs = render.renderer().render(render.Owner("meld"), step, 1, render.settings_from(step.resources))
    container = objs[1]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container["env"]}


def test_meld_example_snapshot_pod_reaches_the_hub_with_the_token_and_the_others_stay_offline():
    steps = plan(load_spec(REPO / "manifests" / "examples" / "meld-mistral7b.yaml"))
    model, rest = steps[0], steps[1:]
    assert model.kind == "model"
    env = _env(model)
    assert "HF_HUB_OFFLINE" not in env
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}},
    }
    assert "value" not in env["HF_TOKEN"]
    for s in rest:
        env = _env(s)
        assert env["HF_HUB_OFFLINE"]["value"] == "1", s.name  # they read the snapshot from the store
        assert "HF_TOKEN" not in env, s.name


def test_a_step_config_naming_a_hub_id_directly_is_not_forced_offline():
    from coe_controller.planner import PlannedStep

    config = parse_step(
        {
            "kind": "generate",
            "name": "test",
            "output": "s3://b/exp/test",
            "input_file": "s3://b/exp/prepare/erc-test.jsonl",
            "base_model": {"name_or_path": "mistralai/Mistral-7B-Instruct-v0.2"},
        }
    )
    assert "HF_HUB_OFFLINE" not in _env(PlannedStep(name="test", config=config))
    local = config.model_copy(
        update={"base_model": config.base_model.model_copy(update={"name_or_path": "/mnt/m"})}
    )
    assert _env(PlannedStep(name="test", config=local))["HF_HUB_OFFLINE"]["value"] == "1"
