"""S3Store against a real SeaweedFS server: transfers, verification, errors, listing."""

from __future__ import annotations

import os

import pytest

from coe_runtime.errors import StoreError, TransientStoreError
from coe_runtime.store import MANIFEST, get_store, join
from coe_runtime.store.s3 import S3Store, parse_s3_uri
from tests.store.conftest import MB, count_calls

pytestmark = pytest.mark.s3


def make_step_output(root, big_bytes: int = 12 * MB):
    """A step-like output folder: a big checkpoint (multipart), small files, a nested adapter."""
    (root / "adapter").mkdir(parents=True)
    (root / "adapter" / "adapter_model.safetensors").write_bytes(os.urandom(big_bytes))
    (root / "adapter" / "adapter_config.json").write_text('{"r": 16}')
    (root / "metrics.json").write_text('{"weighted_f1": 0.5}')
    (root / "empty.txt").write_bytes(b"")
    return root


def test_round_trip_directory_with_multipart_file(s3_store, s3_root, tmp_path, seaweed_server):
    src = make_step_output(tmp_path / "out")
    prefix = join(s3_root, "erc")
    manifest = s3_store.publish(src, prefix, meta={"step": "erc"})

    assert s3_store.is_published(prefix)
    assert sorted(e["path"] for e in manifest["files"]) == [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "empty.txt",
        "metrics.json",
    ]
    # The 12 MiB file went up as a 3-part multipart upload (S3 marks such ETags "-<parts>").
    bucket, key = parse_s3_uri(join(prefix, "adapter/adapter_model.safetensors"))
    etag = seaweed_server.client().head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    assert etag.endswith("-3"), etag

    dest = tmp_path / "back"
    fetched = s3_store.fetch(prefix, dest)
    assert fetched["meta"] == {"step": "erc"}
    for entry in manifest["files"]:
        assert (dest / entry["path"]).read_bytes() == (src / entry["path"]).read_bytes()


def test_get_store_builds_s3_store_from_environment(s3_env, s3_root, tmp_path):
    store = get_store(s3_root)
    assert isinstance(store, S3Store)
    assert store.endpoint == s3_env["AWS_ENDPOINT_URL"]
    assert store.client.meta.config.s3["addressing_style"] == "path"
    assert store.client.meta.config.retries["mode"] == "adaptive"
    store.write_jsonl(join(s3_root, "rows.jsonl"), [{"a": 1}, {"a": 2}])
    assert store.read_jsonl(join(s3_root, "rows.jsonl")) == [{"a": 1}, {"a": 2}]
    assert get_store(s3_root) is store  # one client per configuration and process


def test_corrupted_object_fails_fetch_with_clear_message(s3_store, s3_root, tmp_path, seaweed_server):
    src = make_step_output(tmp_path / "out", big_bytes=1000)
    prefix = join(s3_root, "prepare")
    s3_store.publish(src, prefix)
    # Overwrite one file behind the store's back with same-size, different bytes.
    bucket, key = parse_s3_uri(join(prefix, "metrics.json"))
    seaweed_server.client().put_object(Bucket=bucket, Key=key, Body=b'{"weighted_f1": 0.9}')

    dest = tmp_path / "back"
    with pytest.raises(StoreError, match=r"metrics\.json: checksum mismatch.*sha256") as err:
        s3_store.fetch(prefix, dest)
    assert not isinstance(err.value, TransientStoreError)
    assert not (dest / "metrics.json").exists()  # the corrupt copy is not left behind


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "SignatureDoesNotMatch"),
        ({"AWS_ACCESS_KEY_ID": "nobody"}, "InvalidAccessKeyId"),
    ],
)
def test_wrong_credentials_give_clear_error(seaweed_server, s3_root, monkeypatch, tmp_path, overrides, code):
    from tests.store.conftest import s3_environment

    s3_environment(seaweed_server, monkeypatch, tmp_path, **overrides)
    store = S3Store()
    for action in (
        lambda: store.exists(join(s3_root, MANIFEST)),
        lambda: store.put_file(__file__, join(s3_root, "x.py")),
        lambda: store.list(s3_root),
    ):
        with pytest.raises(StoreError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") as err:
            action()
        assert code in str(err.value) or "403" in str(err.value)
        assert type(err.value) is StoreError  # permanent: a retry cannot fix credentials


def test_no_credentials_at_all(seaweed_server, s3_root, monkeypatch, tmp_path):
    from tests.store.conftest import s3_environment

    s3_environment(seaweed_server, monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreError, match="no usable S3 credentials.*AWS_PROFILE"):
        S3Store().read_bytes(join(s3_root, "x"))


def test_missing_bucket_and_missing_object(s3_store, s3_root):
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-coe' does not exist"):
        s3_store.exists("s3://no-such-bucket-coe/exp/prepare/MANIFEST.json")
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-coe' does not exist"):
        s3_store.write_bytes("s3://no-such-bucket-coe/x", b"1")
    with pytest.raises(StoreError, match="no such artifact"):
        s3_store.read_bytes(join(s3_root, "missing.json"))
    assert not s3_store.exists(join(s3_root, "missing.json"))
    assert s3_store.manifest(join(s3_root, "missing")) is None


def test_unreachable_endpoint_is_transient(s3_env, monkeypatch):
    from tests.support.seaweed import free_ports

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    store = S3Store()
    with pytest.raises(TransientStoreError, match="cannot reach the S3 endpoint.*AWS_ENDPOINT_URL") as err:
        store.is_published("s3://bucket/exp/prepare")
    assert err.value.exit_code >= 128  # the pod is retried, never treated as "not published"


def test_listing_more_keys_than_one_page(s3_env, s3_root, small_parts):
    store = S3Store(transfer_config=small_parts, page_size=7)
    keys = [f"pool/part-{i:03d}.jsonl" for i in range(25)]
    for k in keys:
        store.write_bytes(join(s3_root, k), k.encode())
    store.write_bytes(join(s3_root + "-sibling", "x"), b"not under the prefix")
    pages = count_calls(store, "ListObjectsV2")

    listed = store.list(join(s3_root, "pool"))
    assert listed == [join(s3_root, k) for k in keys]
    assert len(pages) == 4  # 7 + 7 + 7 + 4
    info = store.list_info(s3_root)
    assert info[join(s3_root, keys[0])]["size"] == len(keys[0])
    assert store.list(join(s3_root, keys[3])) == [join(s3_root, keys[3])]  # an object lists as itself

    store.delete_prefix(join(s3_root, "pool"))
    assert store.list(join(s3_root, "pool")) == []


def test_republish_replaces_manifest_last(s3_store, s3_root, tmp_path):
    prefix = join(s3_root, "steer-r1")
    first = tmp_path / "v1"
    first.mkdir()
    (first / "memory-r1.jsonl").write_text('{"n": 1}\n')
    s3_store.publish(first, prefix, meta={"round": 1})
    second = tmp_path / "v2"
    second.mkdir()
    (second / "memory-r1.jsonl").write_text('{"n": 1}\n{"n": 2}\n')
    manifest = s3_store.publish(second, prefix, meta={"round": 1, "attempt": 2})
    assert s3_store.manifest(prefix) == manifest
    back = tmp_path / "back"
    s3_store.fetch(prefix, back)
    assert (back / "memory-r1.jsonl").read_text().count("\n") == 2


def test_manifest_with_escaping_path_is_rejected(s3_store, s3_root, tmp_path):
    prefix = join(s3_root, "evil")
    s3_store.write_json(
        join(prefix, MANIFEST), {"files": [{"path": "../../etc/passwd", "size": 1, "sha256": "0" * 64}]}
    )
    with pytest.raises(StoreError, match=r"files\[0\]: path '../../etc/passwd' must be relative"):
        s3_store.fetch(prefix, tmp_path / "x")
