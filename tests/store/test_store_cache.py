"""materialize(): a local cache validated against manifests (and ETags outside published prefixes)."""

from __future__ import annotations

import time

import pytest

from coe_runtime.errors import StoreError
from coe_runtime.store import cache_path, get_store, join, materialize
from coe_runtime.store.s3 import S3Store
from tests.store.conftest import count_calls

pytestmark = pytest.mark.s3


def publish_adapter(store, prefix, tmp_path, weights: bytes, extra: str | None = None):
    src = tmp_path / f"src-{len(weights)}-{extra}"
    (src / "adapter").mkdir(parents=True)
    (src / "adapter" / "adapter_model.safetensors").write_bytes(weights)
    (src / "adapter" / "adapter_config.json").write_text('{"r": 16}')
    if extra:
        (src / "adapter" / extra).write_text("old file")
    (src / "best.json").write_text('{"epoch": 3}')
    return store.publish(src, prefix)


def test_published_folder_is_downloaded_once_and_refreshed_when_stale(s3_env, s3_root, tmp_path):
    store = get_store(s3_root)
    prefix = join(s3_root, "erc")
    publish_adapter(store, prefix, tmp_path, b"w" * 4096, extra="stale.bin")
    gets = count_calls(store, "GetObject")

    adapter = materialize(join(prefix, "adapter"))
    assert adapter == cache_path(join(prefix, "adapter"))
    assert sorted(p.name for p in adapter.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "stale.bin",
    ]
    first = len(gets)
    assert materialize(join(prefix, "adapter")) == adapter
    assert len(gets) == first + 1  # only the manifest was read again: no file downloaded twice

    # A cached file damaged locally is noticed (sha256 against the manifest) and fetched again.
    (adapter / "adapter_model.safetensors").write_bytes(b"x" * 4096)
    materialize(join(prefix, "adapter"))
    assert (adapter / "adapter_model.safetensors").read_bytes() == b"w" * 4096

    # A re-published step: new bytes are fetched, files it no longer has disappear from the cache.
    publish_adapter(store, prefix, tmp_path, b"v" * 5000)
    materialize(join(prefix, "adapter"))
    assert (adapter / "adapter_model.safetensors").read_bytes() == b"v" * 5000
    assert not (adapter / "stale.bin").exists()

    # A single file inside a published prefix.
    best = materialize(join(prefix, "best.json"))
    assert best.read_text() == '{"epoch": 3}'


def test_corrupt_remote_object_is_never_cached(s3_env, s3_root, tmp_path, seaweed_server):
    store = get_store(s3_root)
    prefix = join(s3_root, "prepare")
    publish_adapter(store, prefix, tmp_path, b"w" * 100)
    bucket, key = s3_root[5:].split("/", 1)
    seaweed_server.client().put_object(Bucket=bucket, Key=f"{key}/prepare/best.json", Body=b'{"epoch": 9}')
    with pytest.raises(StoreError, match="best.json: checksum mismatch"):
        materialize(join(prefix, "best.json"))
    assert not cache_path(join(prefix, "best.json")).exists()


def test_unpublished_objects_are_revalidated_by_etag(s3_env, s3_root, small_parts):
    store = S3Store.from_env()
    uri = join(s3_root, "base-model", "config.json")
    store.write_bytes(uri, b'{"v": 1}')
    gets = count_calls(store, "GetObject")
    assert materialize(uri).read_bytes() == b'{"v": 1}'
    assert materialize(uri).read_bytes() == b'{"v": 1}'
    assert len(gets) == 1
    store.write_bytes(uri, b'{"v": 2}')
    assert materialize(join(s3_root, "base-model")).joinpath("config.json").read_bytes() == b'{"v": 2}'
    with pytest.raises(StoreError, match="no such artifact"):
        materialize(join(s3_root, "nothing-here"))


def test_file_uris_are_used_in_place(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    assert materialize(str(tmp_path / "a.json")) == tmp_path / "a.json"
    assert materialize(f"file://{tmp_path}") == tmp_path


_MATERIALIZE_WHEN_TOLD = """
import json, sys, time
from pathlib import Path
from coe_runtime.store import get_store, materialize

uri, go = sys.argv[1], Path(sys.argv[2])
store = get_store(uri)
fetched = []
store.client.meta.events.register(
    "provide-client-params.s3.GetObject", lambda params, **_: fetched.append(params["Key"])
)
while not go.exists():
    time.sleep(0.005)
path = materialize(uri)
print(json.dumps({"path": str(path), "fetched": [k for k in fetched if not k.endswith("MANIFEST.json")]}))
"""


def test_pods_sharing_a_node_cache_download_a_model_once(s3_env, s3_root, tmp_path):
    # Two pods on one node start together with the same node-local volume at $COE_CACHE_DIR: the
    # cache's per-artifact lock lets one download while the other waits, then finds every file intact.
    import json
    import subprocess
    import sys

    store = get_store(s3_root)
    src = tmp_path / "model"
    src.mkdir()
    (src / "model.safetensors").write_bytes(bytes(range(256)) * (32 * 1024))  # 8 MiB
    (src / "config.json").write_text('{"model_type": "llama"}')
    model = join(s3_root, "node-cache-model")
    store.publish(src, model)
    go = tmp_path / "go"
    pods = [
        subprocess.Popen(
            [sys.executable, "-c", _MATERIALIZE_WHEN_TOLD, model, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(1.5)  # both have imported boto3 and are polling for the signal
    go.touch()
    results = []
    for pod in pods:
        out, err = pod.communicate(timeout=120)
        assert pod.returncode == 0, err
        results.append(json.loads(out))
    assert {r["path"] for r in results} == {str(cache_path(model))}
    fetched = sorted(k.rsplit("/", 1)[-1] for r in results for k in r["fetched"])
    assert fetched == ["config.json", "model.safetensors"], fetched  # once in all, not once per pod
    assert (cache_path(model) / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
