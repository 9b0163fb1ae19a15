"""``--output json`` prints only JSON on stdout, whatever the cache holds.

With an empty ``$COE_CACHE_DIR`` the tiny tokenizer's model is built and saved on the spot, and
saving it makes transformers import DeepSpeed, whose logger writes a warning to stdout. coe-ctl
sends every write that is not its own to stderr while a JSON command runs
(``coe_controller.cli._OwnWritesOnly``); these tests run the real console entry point in a fresh
process with an empty cache and parse the whole of stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from coe_controller import cli

from tests.support.pythonpath import child_pythonpath

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "manifests" / "examples" / "quickstart.yaml"


def coe_ctl_fresh(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """``coe-ctl ARGV`` in a new process whose artifact cache is an empty folder."""
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    env = {
        **os.environ,
        "COE_CACHE_DIR": str(cache),
        "PYTHONPATH": child_pythonpath(),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, "-c", "import sys; from coe_controller.cli import main; sys.exit(main())", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("data", "preview", "--format", "demo", "--tokenizer", "tiny", "--output", "json"),
        ("validate", str(QUICKSTART), "--output", "json"),
        ("plan", "--no-store", str(QUICKSTART), "--output", "json"),
    ],
    ids=["data-preview", "validate", "plan"],
)
def test_json_output_is_only_json_with_an_empty_cache(tmp_path, argv):
    proc = coe_ctl_fresh(tmp_path, *argv)
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)  # the whole of stdout: nothing before or after the document


def test_data_check_json_with_an_empty_cache(tmp_path):
    """The reported case: the tiny model is built on the spot; its library noise goes to stderr."""
    proc = coe_ctl_fresh(
        tmp_path, "data", "check", "--format", "demo", "--tokenizer", "tiny", "--output", "json"
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # the whole of stdout
    assert report["prompt"]["tokenizer"] == "tiny"
    assert list((tmp_path / "empty-cache" / "models").iterdir()), (
        "the tiny model was built in the empty cache"
    )


def test_only_coe_controller_writes_reach_stdout_in_json_mode(capsys):
    """Library prints and logging handlers made during the command (DeepSpeed's is one) go to stderr."""
    with cli._stdout_for(argparse.Namespace(output="json")):
        handler = logging.StreamHandler(sys.stdout)  # as DeepSpeed's logger does when imported
        log = logging.getLogger("tests.library")
        log.addHandler(handler)
        try:
            log.warning("library warning")
        finally:
            log.removeHandler(handler)
        print("library print")
        exec("print('{\"ok\": true}')", {"__name__": "coe_controller.some_command"})
    out, err = capsys.readouterr()
    assert json.loads(out) == {"ok": True}
    assert "library warning" in err and "library print" in err


def test_table_output_leaves_stdout_alone(capsys):
    with cli._stdout_for(argparse.Namespace(output="table")):
        print("a table")
    assert capsys.readouterr().out == "a table\n"
