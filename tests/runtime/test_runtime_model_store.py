"""Base models from the Hub (a local stand-in), a store folder, or a local path (coe_runtime.models.hub).

Nothing here reaches the network: the Hub is ``LocalHub``, a folder laid out like the Hub. The real
client (``HuggingFaceHub``, huggingface_hub) cannot be exercised on these machines.
"""

from __future__ import annotations

import json
import shutil

import pytest

from coe_runtime.__main__ import main as runtime_main
from coe_runtime.driver import run_step
from coe_runtime.errors import ConfigError
from coe_runtime.models import hub, loading
from coe_runtime.models.hub import (
    LocalHub,
    content_key,
    is_hub_id,
    model_folder,
    select_files,
    snapshot,
    upload_model,
)
from coe_runtime.step import ModelRef, ModelStep
from coe_runtime.store import MANIFEST, get_store


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    import os

    old = os.environ.get("COE_CACHE_DIR")
    os.environ["COE_CACHE_DIR"] = str(tmp_path_factory.mktemp("tiny-cache"))
    try:
        return loading.ensure_tiny(0)
    finally:
        if old is None:
            os.environ.pop("COE_CACHE_DIR")
        else:
            os.environ["COE_CACHE_DIR"] = old


@pytest.fixture
def local_hub(tmp_path, tiny_dir, monkeypatch):
    """A Hub stand-in holding the tiny model as ``test-org/tiny`` (with a .bin copy the snapshot skips)."""
    root = tmp_path / "hub"
    repo = root / "test-org" / "tiny"
    shutil.copytree(tiny_dir, repo)
    (repo / "pytorch_model.bin").write_bytes(b"an old-format copy of the weights")
    (repo / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    monkeypatch.setenv(hub.LOCAL_HUB_ENV, str(root))
    return root


def test_hub_ids_are_told_from_paths_uris_and_builtin_names():
    assert is_hub_id("mistralai/Mistral-7B-Instruct-v0.2")
    assert is_hub_id("gpt2")
    for not_hub in (
        "tiny",
        "smollm2-135m-gguf",
        "s3://bucket/models/m",
        "file:///models/m",
        "/mnt/models/mistral",
        "./models/m",
        "../m",
        "~/m",
        "a/b/c",
        "org/../x",
    ):
        assert not is_hub_id(not_hub), not_hub
    assert set(hub.BUILTIN_MODELS) == {loading.TINY, loading.SMOLLM2_GGUF}


def test_snapshot_takes_safetensors_not_their_bin_copies():
    files = ["config.json", "model-00001.safetensors", "pytorch_model-00001.bin", "tf_model.h5"]
    files += ["tokenizer.json", ".gitattributes", "original/consolidated.pth", "flax_model.msgpack"]
    assert select_files(files) == ["config.json", "model-00001.safetensors", "tokenizer.json"]
    # A repository with only .bin weights keeps them.
    assert select_files(["config.json", "pytorch_model.bin"]) == ["config.json", "pytorch_model.bin"]


def test_snapshot_without_config_json_is_a_config_error(tmp_path):
    (tmp_path / "hub" / "org" / "nomodel").mkdir(parents=True)
    (tmp_path / "hub" / "org" / "nomodel" / "README.md").write_text("hi")
    with pytest.raises(ConfigError, match="org/nomodel: the repository has no config.json"):
        snapshot("org/nomodel", None, tmp_path / "out", LocalHub(tmp_path / "hub"))
    with pytest.raises(ConfigError, match="org/absent: no such repository"):
        snapshot("org/absent", None, tmp_path / "out", LocalHub(tmp_path / "hub"))


def test_model_step_snapshots_once_and_later_steps_load_it(tmp_path, cache, local_hub):
    out = f"file://{tmp_path}/store/exp/model/fp1"
    step = ModelStep(
        name="model", output=out, fingerprint="fp1", base_model=ModelRef(name_or_path="test-org/tiny")
    )
    summary = run_step(step)
    assert summary["source"] == "test-org/tiny" and summary["files"] >= 3
    manifest = get_store(out).manifest(out)
    names = {e["path"] for e in manifest["files"]}
    assert "config.json" in names and "model.safetensors" in names
    assert "pytorch_model.bin" not in names and ".gitattributes" not in names
    assert manifest["meta"]["kind"] == "model" and manifest["meta"]["commit"] == summary["commit"]
    # The same fingerprint is never snapshotted twice: the driver returns the published summary.
    assert run_step(step)["skipped"] is True
    # Later steps read the folder by URI.
    tok = loading.load_tokenizer(ModelRef(name_or_path=out))
    assert tok.padding_side == "left"
    model = loading.load_model(ModelRef(name_or_path=out))
    assert model.config.vocab_size == len(tok)


def test_model_step_through_the_entrypoint_exits_2_for_an_unknown_repository(
    tmp_path, cache, local_hub, capsys
):
    config = tmp_path / "step.json"
    config.write_text(
        json.dumps(
            {
                "kind": "model",
                "name": "model",
                "output": str(tmp_path / "store" / "model"),
                "base_model": {"name_or_path": "test-org/missing"},
            }
        )
    )
    assert runtime_main(["model", "--config", str(config)]) == 2
    assert "test-org/missing: no such repository" in capsys.readouterr().err


def test_local_folder_with_manifest_is_verified_and_a_changed_file_named(tmp_path, cache, tiny_dir):
    store_dir = tmp_path / "models" / "tiny"
    upload_model(tiny_dir, str(store_dir))
    assert (store_dir / MANIFEST).is_file()
    assert model_folder(str(store_dir)) == store_dir  # verified, remembered
    assert model_folder(f"file://{store_dir}") == store_dir
    weights = store_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes (and a new mtime)
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=rf"model {store_dir}: model.safetensors does not match"):
        model_folder(str(store_dir))


def test_missing_folder_and_missing_config_are_config_errors(tmp_path, cache):
    with pytest.raises(ConfigError, match="no such folder here"):
        model_folder(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=rf"model {tmp_path / 'empty'}: no config.json"):
        model_folder(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="no such folder in the store"):
        model_folder(f"file://{tmp_path}/absent")


def test_upload_model_leaves_hidden_files_out(tmp_path, cache, tiny_dir):
    src = tmp_path / "download"
    shutil.copytree(tiny_dir, src)
    (src / ".cache" / "huggingface").mkdir(parents=True)
    (src / ".cache" / "huggingface" / "x.metadata").write_text("x")
    manifest = upload_model(src, f"file://{tmp_path}/store/m", source="test-org/tiny")
    assert not any(e["path"].startswith(".") for e in manifest["files"])
    assert manifest["meta"] == {"kind": "model", "source": "test-org/tiny", "uploaded_from": str(src)}
    with pytest.raises(ConfigError, match="no config.json"):
        upload_model(tmp_path / "store", f"file://{tmp_path}/store/bad")


def test_content_key_names_a_published_model_by_source_and_digest(tmp_path, cache, tiny_dir):
    a, b = f"file://{tmp_path}/exp-a/model", f"file://{tmp_path}/exp-b/model"
    upload_model(tiny_dir, a, source="test-org/tiny")
    upload_model(tiny_dir, b, source="test-org/tiny")
    assert content_key(a) == content_key(b)
    assert content_key(a).startswith("test-org/tiny@sha256:")
    assert content_key("test-org/tiny") == "test-org/tiny"


# -- the real Hub client, with huggingface_hub's network calls replaced ----------------------------
class _Info:
    def __init__(self, sha, names):
        self.sha = sha
        self.siblings = [type("S", (), {"rfilename": n})() for n in names]


def test_huggingface_hub_client_downloads_only_the_chosen_files(tmp_path, monkeypatch, tiny_dir):
    import fnmatch

    import huggingface_hub

    repo = tmp_path / "remote"
    shutil.copytree(tiny_dir, repo)
    (repo / "pytorch_model.bin").write_bytes(b"old copy")
    names = sorted(p.name for p in repo.iterdir())
    calls = {}

    def model_info(self, repo_id, revision=None, **kw):
        calls["info"] = (repo_id, revision)
        return _Info("c0ffee" * 6 + "abcd", names)

    def snapshot_download(repo_id, revision=None, local_dir=None, allow_patterns=None, **kw):
        calls["download"] = (repo_id, revision, list(allow_patterns))
        for name in names:
            if any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                shutil.copyfile(repo / name, f"{local_dir}/{name}")
        (tmp_path / "out" / ".cache" / "huggingface").mkdir(parents=True)  # what huggingface_hub leaves
        return local_dir

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    meta = snapshot("org/tiny", "main", tmp_path / "out", hub.HuggingFaceHub())
    assert calls["info"] == ("org/tiny", "main")
    commit = "c0ffee" * 6 + "abcd"
    assert calls["download"][:2] == ("org/tiny", commit)  # the resolved commit, not the branch
    assert "pytorch_model.bin" not in calls["download"][2] and "model.safetensors" in calls["download"][2]
    assert meta == {"source": "org/tiny", "revision": "main", "commit": commit, "files": len(names) - 1}
    assert not (tmp_path / "out" / ".cache").exists()
    assert not (tmp_path / "out" / "pytorch_model.bin").exists()


def test_hub_errors_are_permanent_or_retryable_as_the_contract_says(monkeypatch):
    import httpx2
    import huggingface_hub
    from huggingface_hub import errors as hf

    from coe_runtime.errors import TransientStoreError

    req = httpx2.Request("GET", "https://huggingface.co/api/models/org/m")

    def answer(status, cls=hf.HfHubHTTPError):
        def model_info(self, repo_id, revision=None, **kw):
            raise cls("refused", response=httpx2.Response(status, request=req))

        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)

    client = hub.HuggingFaceHub()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for status, cls, kind, message in [
        (401, hf.GatedRepoError, ConfigError, "gated repository"),
        (404, hf.RepositoryNotFoundError, ConfigError, "no such repository"),
        (404, hf.RevisionNotFoundError, ConfigError, "no such revision"),
        (403, hf.HfHubHTTPError, ConfigError, "refused access"),
        (503, hf.HfHubHTTPError, TransientStoreError, "unavailable"),
        (429, hf.HfHubHTTPError, TransientStoreError, "unavailable"),
    ]:
        answer(status, cls)
        with pytest.raises(kind, match=message) as caught:
            client.resolve("org/m", "v1")
        assert "model org/m@v1" in str(caught.value)
        assert type(caught.value) is kind or kind is ConfigError

    def no_network(self, repo_id, revision=None, **kw):
        raise httpx2.ConnectError("name resolution failed", request=req)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_network)
    with pytest.raises(TransientStoreError, match="cannot reach the Hub"):
        client.resolve("org/m", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set"):
        client.resolve("org/m", None)
