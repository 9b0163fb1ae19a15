"""The CoEExperiment spec: defaults, camelCase YAML, path resolution, every mistake reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from coe_controller.spec import CoEExperiment, load_spec, parse_spec, spec_json_schema

from coe_runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "manifests" / "examples"


def _doc(**spec) -> dict:
    return {
        "apiVersion": "coe.ml/v1alpha1",
        "kind": "CoEExperiment",
        "metadata": {"name": "exp"},
        "spec": spec,
    }


def test_local_spec_defaults_are_the_papers():
    s = parse_spec(_doc()).spec
    assert (s.lora.r, s.lora.alpha, s.lora.dropout) == (16, 16, 0.05)
    assert s.lora.target_modules == ["q_proj", "k_proj", "v_proj"]
    assert s.optimizer.learning_rate == 2e-4 and s.optimizer.betas == [0.9, 0.95]
    assert s.optimizer.per_device_batch_size * s.optimizer.gradient_accumulation_steps == 12
    assert [
        s.training.roleplay.epochs,
        s.training.speaker_id.epochs,
        s.training.steer.epochs,
        s.training.erc.epochs,
    ] == [
        2,
        2,
        8,
        20,
    ]
    assert s.dataset.max_length == 1400
    assert s.strategy == "full_curriculum"


def test_local_spec_five_mistakes_all_reported():
    doc = _doc(
        dataset={"historyWindow": -3},  # 1: negative window
        lora={"r": 0},  # 2: rank below 1
        strategy="best_one",  # 3: unknown strategy
        store="ftp://host/x",  # 4: unsupported store scheme
        training={"erc": {"epochs": 20, "batchSize": 4}},  # 5: unknown field (it is perDeviceBatchSize)
    )
    with pytest.raises(ConfigError) as err:
        parse_spec(doc, "bad.yaml")
    msg = str(err.value)
    assert "5 problem(s)" in msg
    for path in (
        "spec.dataset.historyWindow",
        "spec.lora.r",
        "spec.strategy",
        "spec.store",
        "spec.training.erc.batchSize",
    ):
        assert path in msg, f"{path} missing from:\n{msg}"
    assert msg.startswith("bad.yaml:")


def test_local_spec_cross_field_mistakes_have_clear_messages():
    with pytest.raises(ConfigError, match="needs files for \\['train', 'dev', 'test'\\]"):
        parse_spec(_doc(dataset={"format": "meld"}))
    with pytest.raises(ConfigError, match="source 'file' needs uri"):
        parse_spec(_doc(clues={"source": "file"}))
    with pytest.raises(ConfigError, match="erc must be the last stage"):
        parse_spec(_doc(stages=["erc", "roleplay"]))
    with pytest.raises(ConfigError, match="unknown label set 'nope'"):
        parse_spec(_doc(dataset={"labelSet": {"name": "nope"}}))
    with pytest.raises(ConfigError, match="metadata.name"):
        parse_spec({**_doc(), "metadata": {"name": "Has_Capitals"}})
    with pytest.raises(ConfigError, match="unknown step key"):
        parse_spec(_doc(resources={"overrides": {"ercc": {"cpu": "2"}}}))


def test_local_spec_stages_list_implies_custom():
    s = parse_spec(_doc(stages=["erc"])).spec
    assert s.strategy == "custom" and s.stage_order == ("erc",)
    with pytest.raises(ConfigError, match="contradict strategy"):
        parse_spec(_doc(strategy="steer_only", stages=["erc"]))


def test_local_spec_relative_paths_resolve_against_the_spec_file(tmp_path):
    (tmp_path / "sub").mkdir()
    doc = _doc(
        dataset={
            "format": "meld",
            "files": {"train": "d/train.csv", "dev": "/abs/dev.csv", "test": "s3://b/test.csv"},
        },
        clues={"source": "file", "uri": "clues.json"},
        store="file://./runs",
    )
    path = tmp_path / "sub" / "exp.yaml"
    path.write_text(yaml.safe_dump(doc))
    s = load_spec(path).spec
    assert s.store == f"file://{tmp_path}/sub/runs"
    assert s.dataset.files.train == str(tmp_path / "sub" / "d" / "train.csv")
    assert s.dataset.files.dev == "/abs/dev.csv" and s.dataset.files.test == "s3://b/test.csv"
    assert s.clues.uri == str(tmp_path / "sub" / "clues.json")
    assert load_spec(path, resolve=False).spec.store == "file://./runs"


def test_local_spec_load_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_spec(bad)
    two = tmp_path / "two.yaml"
    two.write_text("a: 1\n---\nb: 2\n")
    with pytest.raises(ConfigError, match="exactly one YAML document"):
        load_spec(two)


@pytest.mark.parametrize("name", ["quickstart", "meld-mistral7b", "emorynlp-mistral7b"])
def test_local_spec_examples_validate_and_round_trip(name):
    spec = load_spec(EXAMPLES / f"{name}.yaml", resolve=False)
    again = parse_spec(yaml.safe_load(spec.to_yaml()))
    assert again == spec


def test_local_spec_paper_examples_use_strategy_b_on_two_gpus():
    for name in ("meld-mistral7b", "emorynlp-mistral7b"):
        s = load_spec(EXAMPLES / f"{name}.yaml").spec
        assert s.strategy == "mixed_auxiliary"
        assert s.resources.gpus_per_pod == 2 and s.resources.procs_per_node == 2
        assert s.store.startswith("s3://")


def test_local_spec_json_schema_is_camel_case_and_described():
    schema = spec_json_schema()
    spec_props = schema["$defs"]["ExperimentSpec"]["properties"]
    assert {"baseModel", "dataset", "strategy", "stages", "steer", "resources", "store"} <= set(spec_props)
    dataset = schema["$defs"]["DatasetSpec"]["properties"]
    assert "historyWindow" in dataset and dataset["historyWindow"]["description"]
    assert CoEExperiment.model_fields["spec"].description
