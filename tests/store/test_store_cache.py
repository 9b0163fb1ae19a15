"""materialize(): a local cache validated against manifests (and ETags outside published prefixes)."""

from __future__ import annotations

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
