from __future__ import annotations

import json

import pytest

from coe_runtime import __main__ as entry
from coe_runtime import driver
from coe_runtime.errors import DataError, TransientStoreError


def _config(tmp_path, **over):
    cfg = {
        "kind": "generate",
        "name": "g",
        "output": str(tmp_path / "o"),
        "input_file": str(tmp_path / "in.jsonl"),
    }
    cfg.update(over)
    p = tmp_path / "step.json"
    p.write_text(json.dumps(cfg))
    return p


def test_kind_mismatch_is_permanent_with_one_message(tmp_path, capsys):
    assert entry.main(["train", "--config", str(_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "is a 'generate' step, but 'train' was asked for" in err and "Traceback" not in err


def test_invalid_config_names_the_field(tmp_path, capsys):
    p = _config(tmp_path, generation={"max_new_tokens": 0})
    assert entry.main(["generate", "--config", str(p)]) == 2
    assert "generation.max_new_tokens" in capsys.readouterr().err


def test_missing_input_is_permanent(tmp_path, capsys):
    assert entry.main(["generate", "--config", str(_config(tmp_path))]) == 2
    assert "input_file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (TransientStoreError("s3://b/k: endpoint unreachable"), 175),
        (ConnectionResetError("peer reset"), 175),
        (DataError("f.jsonl", 3, "bad"), 2),
        (KeyboardInterrupt(), 143),
        (ZeroDivisionError("bug"), 1),
    ],
)
def test_exit_codes_follow_the_retry_contract(tmp_path, monkeypatch, capsys, exc, code):
    def boom(step):
        raise exc

    monkeypatch.setattr(driver, "runner", lambda kind: boom)
    assert entry.main(["generate", "--config", str(_config(tmp_path))]) == code
    err = capsys.readouterr().err
    assert ("retryable" if code >= 128 else "permanent") in err
    assert ("Traceback" in err) == (code == 1)  # only defects show a traceback
