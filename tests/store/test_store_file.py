"""The file:// back-end and the shared publish/fetch/manifest logic (no server needed)."""

from __future__ import annotations

import json

import pytest

from coe_runtime.errors import StoreError, TransientStoreError
from coe_runtime.store import MANIFEST, FileStore, copy, download, get_store, join, normalize_uri


@pytest.fixture
def root(tmp_path):
    return f"file://{tmp_path / 'store'}"


def write_tree(base, files: dict[str, bytes]):
    for rel, data in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    return base


def test_publish_writes_manifest_last_with_sizes_and_checksums(root, tmp_path):
    store = FileStore()
    src = write_tree(tmp_path / "out", {"a.jsonl": b"1\n", "adapter/w.bin": b"\x00" * 10})
    order: list[str] = []
    write_bytes = store.write_bytes
    put_file = store.put_file
    store.put_file = lambda local, uri: (order.append(uri), put_file(local, uri))[1]
    store.write_bytes = lambda uri, data: (order.append(uri), write_bytes(uri, data))[1]
    manifest = store.publish(src, join(root, "prepare"), meta={"step": "prepare"})
    assert order[-1] == join(root, "prepare", MANIFEST)
    assert manifest["format"] == "coe-manifest/1" and manifest["total_bytes"] == 12
    assert {e["path"]: e["size"] for e in manifest["files"]} == {"a.jsonl": 2, "adapter/w.bin": 10}
    assert all(len(e["sha256"]) == 64 for e in manifest["files"])
    assert store.manifest(join(root, "prepare")) == json.loads(json.dumps(manifest))


def test_publish_refuses_when_a_file_did_not_arrive(root, tmp_path):
    store = FileStore()
    src = write_tree(tmp_path / "out", {"a.jsonl": b"1\n", "b.jsonl": b"2\n"})
    store.put_file = lambda local, uri: None  # an upload that silently lost the file
    with pytest.raises(TransientStoreError, match=r"a\.jsonl: missing or wrong size right after upload"):
        store.publish(src, join(root, "s"))
    assert not FileStore().is_published(join(root, "s"))


def test_republish_removes_the_old_manifest_before_uploading(root, tmp_path):
    store = FileStore()
    prefix = join(root, "erc")
    store.publish(write_tree(tmp_path / "v1", {"a": b"1"}), prefix)
    seen: list[bool] = []
    put_file = store.put_file
    store.put_file = lambda local, uri: (seen.append(FileStore().is_published(prefix)), put_file(local, uri))[
        1
    ]
    store.publish(write_tree(tmp_path / "v2", {"a": b"22"}), prefix)
    assert seen == [False]  # while files were replaced, the step did not look done


def test_fetch_detects_tampering_and_bad_manifests(root, tmp_path):
    store = FileStore()
    prefix = join(root, "p")
    store.publish(write_tree(tmp_path / "out", {"x.json": b"{}"}), prefix)
    FileStore._path(join(prefix, "x.json")).write_bytes(b"[]")
    with pytest.raises(StoreError, match="x.json: checksum mismatch"):
        store.fetch(prefix, tmp_path / "back")
    FileStore._path(join(prefix, MANIFEST)).write_text("{not json")
    with pytest.raises(StoreError, match="MANIFEST.json: not valid JSON"):
        store.fetch(prefix, tmp_path / "back")
    FileStore._path(join(prefix, MANIFEST)).write_text('{"files": [{"path": "/etc/passwd"}]}')
    with pytest.raises(StoreError, match=r"files\[0\]: expected an object with path, size and sha256"):
        store.manifest(prefix)
    with pytest.raises(StoreError, match="not published"):
        store.fetch(join(root, "never"), tmp_path / "back")
    with pytest.raises(StoreError, match="not a directory"):
        store.publish(tmp_path / "missing-dir", join(root, "q"))


def test_find_manifest_walks_up_to_the_published_prefix(root, tmp_path):
    store = FileStore()
    prefix = join(root, "exp", "erc")
    store.publish(write_tree(tmp_path / "out", {"adapter/w.bin": b"w"}), prefix)
    assert store.find_manifest(join(prefix, "adapter", "w.bin"))[0] == prefix
    assert store.find_manifest(prefix)[0] == prefix
    assert store.find_manifest(join(root, "exp")) == (None, None)


def test_download_and_copy_on_files(root, tmp_path):
    store = FileStore()
    prefix = join(root, "erc")
    store.publish(write_tree(tmp_path / "out", {"adapter/w.bin": b"w" * 5, "m.json": b"{}"}), prefix)
    first = download(join(prefix, "adapter"), tmp_path / "dl")
    assert (first.files, first.downloaded, first.published) == (1, 1, prefix)
    again = download(join(prefix, "adapter"), tmp_path / "dl")
    assert again.downloaded == 0  # already present and verified
    result = copy(prefix, join(root, "erc-copy"))
    assert result.republished and store.manifest(join(root, "erc-copy"))["meta"]["copied_from"] == prefix
    FileStore._path(join(prefix, "m.json")).write_bytes(b"[]")
    with pytest.raises(StoreError, match="does not match its manifest"):
        copy(prefix, join(root, "erc-copy-2"))


def test_get_store_and_uris(tmp_path):
    assert isinstance(get_store(str(tmp_path)), FileStore)
    assert normalize_uri(str(tmp_path)) == f"file://{tmp_path}"
    with pytest.raises(StoreError, match="unsupported store scheme 'gs'"):
        get_store("gs://bucket/x")
