"""Base models in S3 (the real SeaweedFS server): uploaded with ``coe-ctl artifacts upload-model``,
fetched through the node-local cache and verified; a Hub id snapshotted once per experiment.

The Hub itself is a local stand-in (``$COE_HF_LOCAL_HUB``): these machines have no network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from coe_controller.cli import main as coe_ctl
from coe_controller.local import experiment_status
from coe_controller.planner import plan
from coe_controller.spec import load_spec

from coe_runtime.__main__ import main as runtime_main
from coe_runtime.errors import ConfigError
from coe_runtime.models import hub
from coe_runtime.models.loading import ensure_tiny
from coe_runtime.store import MANIFEST, cache_path, get_store, join
from tests.runtime.runtime_fixtures import write_synthetic

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.s3


@pytest.fixture
def tiny_in_s3(s3_env, s3_root, tmp_path, monkeypatch, capsys):
    """The tiny model uploaded with the CLI; then a fresh node cache (nothing local to fall back on)."""
    local = ensure_tiny(0)
    uri = join(s3_root, "models", "tiny")
    assert coe_ctl(["artifacts", "upload-model", str(local), uri, "--source", "tiny-0"]) == 0
    assert "published with sha256 digests" in capsys.readouterr().out
    monkeypatch.setenv("COE_CACHE_DIR", str(tmp_path / "node-cache"))
    return uri


def _train_config(tmp_path: Path, model_uri: str, output: str) -> Path:
    train = write_synthetic(tmp_path / "train.jsonl", 16, seed=0, prefix="tr")
    config = {
        "kind": "train",
        "name": "erc",
        "output": output,
        "train_files": [str(train)],
        "base_model": {"name_or_path": model_uri},
        "label_set": {"name": "meld"},
        "lora": {"modules_to_save": ["embed_tokens", "lm_head"]},
        "optim": {
            "epochs": 1,
            "max_steps": 2,
            "per_device_batch_size": 8,
            "gradient_accumulation_steps": 1,
            "gradient_checkpointing": False,
            "max_length": 128,
        },
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_a_train_step_trains_from_a_model_in_s3(tiny_in_s3, s3_root, tmp_path):
    store = get_store(tiny_in_s3)
    manifest = store.manifest(tiny_in_s3)
    assert manifest["meta"]["kind"] == "model" and manifest["meta"]["source"] == "tiny-0"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {e["path"] for e in manifest["files"]}

    output = join(s3_root, "exp", "erc", "fp")
    assert runtime_main(["train", "--config", str(_train_config(tmp_path, tiny_in_s3, output))]) == 0
    assert store.is_published(output)
    assert store.exists(join(output, "adapter", "adapter_config.json"))
    # The model came through the node-local cache, and a second load downloads nothing again.
    cached = cache_path(tiny_in_s3)
    weights = cached / "model.safetensors"
    assert (cached / "config.json").is_file() and weights.is_file()
    before = weights.stat().st_mtime_ns
    assert hub.model_folder(tiny_in_s3) == cached
    assert weights.stat().st_mtime_ns == before


def test_a_corrupted_model_file_is_a_permanent_error_naming_the_uri(tiny_in_s3, tmp_path, capsys):
    store = get_store(tiny_in_s3)
    weights = join(tiny_in_s3, "model.safetensors")
    size = len(store.read_bytes(weights))
    store.write_bytes(weights, b"\0" * size)  # same size, other bytes: only the digest tells
    output = join(tiny_in_s3.rsplit("/", 2)[0], "exp", "erc", "fp")
    code = runtime_main(["train", "--config", str(_train_config(tmp_path, tiny_in_s3, output))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"model {tiny_in_s3}:" in err and "checksum mismatch" in err and weights in err
    assert not (cache_path(tiny_in_s3) / "model.safetensors").exists()  # never left for the next step


def test_missing_model_and_a_folder_without_config_are_permanent_errors(s3_env, s3_root, tmp_path):
    absent = join(s3_root, "models", "absent")
    with pytest.raises(ConfigError, match=f"model {absent}: .*no such artifact"):
        hub.model_folder(absent)
    store = get_store(s3_root)
    no_config = join(s3_root, "models", "weights-only")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model.safetensors").write_bytes(b"x" * 10)
    store.publish(tmp_path / "w", no_config, meta={"kind": "model"})
    with pytest.raises(ConfigError, match=f"model {no_config}: no config.json"):
        hub.model_folder(no_config)


@pytest.mark.slow
def test_a_hub_model_is_snapshotted_once_per_experiment_and_every_step_reads_it(
    s3_env, s3_root, tmp_path, monkeypatch, capsys
):
    local_hub = tmp_path / "hub"
    shutil.copytree(ensure_tiny(0), local_hub / "test-org" / "tiny")
    monkeypatch.setenv(hub.LOCAL_HUB_ENV, str(local_hub))
    doc = yaml.safe_load((REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
    doc["metadata"]["name"] = "hub-model"
    spec_doc = doc["spec"]
    spec_doc["baseModel"] = {"nameOrPath": "test-org/tiny"}
    spec_doc["stages"] = ["erc"]
    spec_doc.pop("strategy")
    spec_doc["training"] = {"erc": {"epochs": 1, "maxSteps": 2}}
    spec_doc["evaluation"]["devEachEpoch"] = False
    spec_doc["dataset"]["maxTestExamples"] = 8
    spec_doc["store"] = s3_root
    spec_path = tmp_path / "hub-model.yaml"
    spec_path.write_text(yaml.safe_dump(doc))

    assert coe_ctl(["run", str(spec_path)]) == 0, capsys.readouterr()
    spec = load_spec(spec_path)
    steps = plan(spec, {})
    assert [s.name for s in steps] == ["model", "prepare", "erc", "test"]
    snapshot = steps[0].output
    store = get_store(snapshot)
    manifest = store.manifest(snapshot)
    assert manifest["meta"]["kind"] == "model" and manifest["meta"]["source"] == "test-org/tiny"
    assert "config.json" in {e["path"] for e in manifest["files"]}
    for s in steps[1:]:
        assert s.config.base_model.name_or_path == snapshot
        assert store.is_published(s.output), s.name
    status = experiment_status(spec)
    assert status["phase"] == "Succeeded", status

    # Run again: the snapshot (and everything else) is reused, the Hub is not asked again.
    shutil.rmtree(local_hub)
    capsys.readouterr()
    assert coe_ctl(["run", str(spec_path)]) == 0, capsys.readouterr()
    assert store.read_json(join(snapshot, MANIFEST))["published_at"] == manifest["published_at"]
