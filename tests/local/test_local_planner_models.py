"""The planner's ``model`` step: a Hub id is snapshotted once per experiment and feeds every step."""

from __future__ import annotations

import pytest
from coe_controller.planner import plan, step_inputs
from coe_controller.spec import parse_spec

from coe_runtime import step as rt
from coe_runtime.errors import ConfigError
from coe_runtime.store import join

STORE = "s3://bucket/runs"
HUB_ID = "mistralai/Mistral-7B-Instruct-v0.2"


def _spec(base_model: dict, **spec):
    spec.setdefault("store", STORE)
    spec.setdefault("steer", {"rounds": 2})
    spec["baseModel"] = base_model
    return parse_spec(
        {"apiVersion": "coe.ml/v1alpha1", "kind": "CoEExperiment", "metadata": {"name": "exp"}, "spec": spec}
    )


def test_a_hub_id_gets_a_model_step_first_that_every_step_needs_and_reads():
    steps = plan(_spec({"nameOrPath": HUB_ID, "dtype": "bfloat16"}, strategy="mixed_auxiliary"))
    first, rest = steps[0], steps[1:]
    assert (first.name, first.kind, first.stage, first.needs) == ("model", "model", "model", ())
    assert isinstance(first.config, rt.ModelStep)
    assert first.config.base_model.name_or_path == HUB_ID
    assert first.output == join(STORE, "exp", "model", first.config.fingerprint)
    assert first.resources.gpus_per_pod == 0 and first.config.distributed.nproc_per_node == 1
    for s in rest:
        assert s.config.base_model.name_or_path == first.output, s.name
        assert s.config.base_model.dtype == "bfloat16", s.name  # the spec's dtype stays with the steps
        assert "model" in s.needs, s.name
        assert first.output in step_inputs(s.config), s.name
    assert not any(isinstance(s.config, rt.ModelStep) for s in rest)


def test_the_model_step_is_reused_across_runs_and_edits_that_do_not_change_the_files():
    fp = plan(_spec({"nameOrPath": HUB_ID}))[0].config.fingerprint
    assert plan(_spec({"nameOrPath": HUB_ID}))[0].config.fingerprint == fp  # the same on every plan
    # Training settings, the dtype and the token Secret do not change what is downloaded.
    other = _spec(
        {"nameOrPath": HUB_ID, "dtype": "float16", "hfTokenSecret": {"name": "hf"}},
        lora={"r": 8},
        training={"erc": {"epochs": 1}},
        resources={"gpusPerPod": 4, "torchThreads": 3},
    )
    assert plan(other)[0].config.fingerprint == fp
    # The revision does; so does the model.
    assert plan(_spec({"nameOrPath": HUB_ID, "revision": "abc123"}))[0].config.fingerprint != fp
    assert plan(_spec({"nameOrPath": "mistralai/Mistral-7B-v0.1"}))[0].config.fingerprint != fp


def test_the_token_secret_goes_to_the_model_step_only():
    steps = plan(_spec({"nameOrPath": HUB_ID, "hfTokenSecret": {"name": "hf-token", "key": "token"}}))
    assert steps[0].hf_token_secret == ("hf-token", "token")
    assert all(s.hf_token_secret is None for s in steps[1:])
    assert plan(_spec({"nameOrPath": HUB_ID, "hfTokenSecret": {"name": "hf"}}))[0].hf_token_secret == (
        "hf",
        "HF_TOKEN",
    )


@pytest.mark.parametrize("where", ["tiny", "s3://models/mistral-7b", "/mnt/models/mistral-7b"])
def test_models_not_on_the_hub_get_no_model_step(where):
    steps = plan(_spec({"nameOrPath": where}))
    assert steps[0].name == "prepare"
    assert {s.config.base_model.name_or_path for s in steps} == {where}


def test_the_same_hub_model_for_clues_is_one_snapshot_another_is_a_second():
    same = plan(_spec({"nameOrPath": HUB_ID}, clues={"source": "generate", "model": {"nameOrPath": HUB_ID}}))
    assert [s.name for s in same[:3]] == ["model", "clues", "prepare"]
    assert same[1].config.base_model.name_or_path == same[0].output
    other = plan(
        _spec(
            {"nameOrPath": HUB_ID, "hfTokenSecret": {"name": "hf"}},
            clues={"source": "generate", "model": {"nameOrPath": "Qwen/Qwen2.5-7B-Instruct"}},
        )
    )
    assert [s.name for s in other[:4]] == ["model", "clues-model", "clues", "prepare"]
    assert other[2].config.base_model.name_or_path == other[1].output
    assert other[1].hf_token_secret == (
        "hf",
        "HF_TOKEN",
    )  # the base model's Secret unless the clue model has one
    assert other[3].config.base_model.name_or_path == other[0].output


def test_revision_and_token_are_refused_for_models_not_on_the_hub(tmp_path):
    with pytest.raises(ConfigError, match="revision: only for a Hugging Face Hub id"):
        _spec({"nameOrPath": "tiny", "revision": "main"})
    with pytest.raises(ConfigError, match="hfTokenSecret: only for a Hugging Face Hub id"):
        _spec({"nameOrPath": "s3://models/m", "hfTokenSecret": {"name": "hf"}})


def test_relative_model_paths_resolve_against_the_spec_file(tmp_path):
    from coe_controller.spec import load_spec

    path = tmp_path / "exp.yaml"
    path.write_text(
        "apiVersion: coe.ml/v1alpha1\nkind: CoEExperiment\nmetadata: {name: exp}\n"
        "spec: {baseModel: {nameOrPath: ./models/m}}\n"
    )
    assert load_spec(path).spec.base_model.name_or_path == str(tmp_path / "models" / "m")
