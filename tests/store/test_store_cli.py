"""``coe-ctl artifacts ls|get|cp`` on file:// and s3:// (the real SeaweedFS server)."""

from __future__ import annotations

import json

import pytest
from coe_controller.cli import EXIT_BAD_INPUT, EXIT_UNREACHABLE, main

from coe_runtime.store import FileStore, get_store, join
from tests.support.seaweed import free_ports


def make_published(store, prefix, tmp_path):
    src = tmp_path / "step-out"
    (src / "adapter").mkdir(parents=True)
    (src / "adapter" / "weights.bin").write_bytes(b"\x01" * 3000)
    (src / "metrics.json").write_text('{"weighted_f1": 0.7}')
    store.publish(src, prefix, meta={"step": "erc"})
    return src


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(params=["file", "s3"])
def root(request, tmp_path, monkeypatch):
    """A fresh store root on each back-end."""
    if request.param == "file":
        monkeypatch.setenv("COE_CACHE_DIR", str(tmp_path / "cache"))
        return f"file://{tmp_path / 'store'}"
    request.getfixturevalue("s3_env")
    return request.getfixturevalue("s3_root")


def test_ls_get_cp_round_trip(root, tmp_path, capsys):
    store = get_store(root)
    prefix = join(root, "exp", "erc")
    src = make_published(store, prefix, tmp_path)

    listed = run_json(capsys, "artifacts", "ls", prefix, "--output", "json")
    assert listed["published"] is True
    assert [o["path"] for o in listed["objects"]] == ["MANIFEST.json", "adapter/weights.bin", "metrics.json"]
    assert listed["manifest"]["meta"] == {"step": "erc"}

    assert main(["artifacts", "ls", prefix]) == 0  # the table view
    table = capsys.readouterr().out
    assert "published" in table and "adapter/weights.bin" in table

    # get: a published prefix, a folder inside it, one file into an existing folder.
    assert main(["artifacts", "get", prefix, str(tmp_path / "got")]) == 0
    assert "verified" in capsys.readouterr().out
    assert (tmp_path / "got" / "adapter" / "weights.bin").read_bytes() == b"\x01" * 3000
    assert main(["artifacts", "get", join(prefix, "adapter"), str(tmp_path / "adapter-only")]) == 0
    assert (tmp_path / "adapter-only" / "weights.bin").is_file()
    (tmp_path / "one").mkdir()
    assert main(["artifacts", "get", join(prefix, "metrics.json"), str(tmp_path / "one" / "m.json")]) == 0
    assert (tmp_path / "one" / "m.json").read_text() == '{"weighted_f1": 0.7}'
    assert main(["artifacts", "get", join(prefix, "metrics.json"), str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / "metrics.json").read_text() == '{"weighted_f1": 0.7}'
    # a download into a folder never removes what else is there
    assert main(["artifacts", "get", prefix, str(tmp_path / "one")]) == 0
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["adapter", "m.json", "metrics.json"]

    # cp: published prefix to the other back-end and back, stays published and verified.
    target = (
        f"file://{tmp_path / 'other' / 'copy'}" if root.startswith("s3://") else join(root, "exp", "erc-copy")
    )
    assert main(["artifacts", "cp", prefix, target]) == 0
    out = capsys.readouterr().out
    assert "published at the destination" in out and f"-> {target}:" in out
    copied = get_store(target).manifest(target)
    assert copied["meta"] == {"step": "erc", "copied_from": prefix}
    # a plain local folder (a path, not a URI) and a single file
    assert main(["artifacts", "cp", str(src / "adapter"), join(root, "exp", "plain")]) == 0
    assert get_store(root).list(join(root, "exp", "plain")) == [join(root, "exp", "plain", "weights.bin")]
    assert main(["artifacts", "cp", str(src / "metrics.json"), join(root, "exp", "files") + "/"]) == 0
    assert get_store(root).read_json(join(root, "exp", "files", "metrics.json")) == {"weighted_f1": 0.7}


@pytest.mark.s3
def test_cp_between_back_ends(s3_env, s3_root, tmp_path, capsys):
    local_prefix = f"file://{tmp_path / 'runs' / 'erc'}"
    make_published(FileStore(), local_prefix, tmp_path)
    assert main(["artifacts", "cp", local_prefix, join(s3_root, "erc")]) == 0
    assert main(["artifacts", "cp", join(s3_root, "erc"), str(tmp_path / "back" / "erc")]) == 0
    capsys.readouterr()
    back = FileStore().fetch(f"file://{tmp_path / 'back' / 'erc'}", tmp_path / "verify")
    assert back["meta"]["copied_from"] == join(s3_root, "erc")


def test_errors_are_messages_with_exit_codes(tmp_path, capsys, monkeypatch):
    assert main(["artifacts", "get", f"file://{tmp_path}/nothing", str(tmp_path / "x")]) == EXIT_BAD_INPUT
    assert "no such artifact" in capsys.readouterr().err

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert main(["artifacts", "ls", "s3://bucket/exp"]) == EXIT_UNREACHABLE
    assert "cannot reach the S3 endpoint" in capsys.readouterr().err
