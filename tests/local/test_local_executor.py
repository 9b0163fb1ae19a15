"""The local executor and coe-ctl's local commands, with a fake runtime (no model training).

Resuming after Ctrl-C or SIGKILL, failures naming the step, run records, status and logs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from coe_controller.cli import main as coe_ctl
from coe_controller.local import completed_executions, experiment_status, read_attempts
from coe_controller.planner import plan
from coe_controller.spec import load_spec

from tests.local.local_support import QUICKSTART_STEPS
from tests.support.pythonpath import child_pythonpath

REPO = Path(__file__).resolve().parents[2]
ALL_STEPS = QUICKSTART_STEPS


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("COE_RUNTIME_MODULE", "tests.local.fake_runtime")
    monkeypatch.setenv("PYTHONPATH", child_pythonpath())
    monkeypatch.setenv("FAKE_MARK_DIR", str(marks))
    monkeypatch.delenv("FAKE_SLEEP", raising=False)
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    return marks


def _write_spec(tmp_path: Path, **spec) -> Path:
    doc = {
        "apiVersion": "coe.ml/v1alpha1",
        "kind": "CoEExperiment",
        "metadata": {"name": "fake"},
        "spec": {
            "steer": {"rounds": 2},
            "resources": {"gpusPerPod": 0, "maxRetries": 1},
            "store": "file://./runs",
            **spec,
        },
    }
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _sigint_as_at_a_terminal() -> None:
    # A suite started in the background (`make test &`, nohup) hands its children SIGINT ignored,
    # and Python then never raises KeyboardInterrupt; the Ctrl-C case needs the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _coe_ctl_proc(spec: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "coe_controller.cli", "run", str(spec), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        preexec_fn=_sigint_as_at_a_terminal,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; read its state.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_local_executor_runs_the_plan_and_records_each_step(tmp_path, fake_env, capsys):
    spec_path = _write_spec(tmp_path)
    assert coe_ctl(["run", str(spec_path)]) == 0
    out = capsys.readouterr().out
    assert "55.25" in out and "61.50" in out  # test and dev weighted F1 from the published metrics
    assert "majority-class baseline" in out and "(neutral)" in out
    spec = load_spec(spec_path)
    for name in ALL_STEPS:
        records = read_attempts(spec, name)
        assert completed_executions(records) == 1, name
        run_dir = tmp_path / "runs" / "fake" / "_runs" / name
        assert json.loads((run_dir / "step.json").read_text())["name"] == name
        assert (run_dir / "attempt-1.log").read_text()
    # Running again does nothing: every step is published.
    assert coe_ctl(["run", str(spec_path)]) == 0
    assert all(completed_executions(read_attempts(spec, n)) == 1 for n in ALL_STEPS)
    status = experiment_status(spec)
    assert status["phase"] == "Succeeded" and [r["name"] for r in status["steps"]] == ALL_STEPS
    # Each subprocess got exactly the config the planner made (what a pod would get).
    planned = {s.name: s.config.model_dump(mode="json") for s in plan(spec, {1: {"continue": True}})}
    for name, config in planned.items():
        written = json.loads((tmp_path / "runs" / "fake" / "_runs" / name / "step.json").read_text())
        assert written == config


KILL_CASES = {
    # Ctrl-C in the first STEeR round (the plan grows as rounds report), SIGKILL in role-play.
    "sigint": (
        signal.SIGINT,
        "steer_only",
        None,
        "steer-r1-train",
        ["prepare", "steer-r1-train", "steer-r1", "steer-r2-train", "steer-r2", "erc", "test"],
    ),
    "sigkill": (
        signal.SIGKILL,
        "custom",
        ["roleplay", "erc"],
        "roleplay",
        ["prepare", "roleplay", "erc", "test"],
    ),
}


@pytest.mark.parametrize("case", sorted(KILL_CASES))
def test_local_executor_killed_mid_step_resumes_and_runs_each_step_once(
    tmp_path, fake_env, monkeypatch, case
):
    sig, strategy, stages, victim, expected = KILL_CASES[case]
    spec_path = _write_spec(tmp_path, strategy=strategy, **({"stages": stages} if stages else {}))
    monkeypatch.setenv("FAKE_SLEEP", f"{victim}:60")
    proc = _coe_ctl_proc(spec_path)
    _wait_for(fake_env / f"{victim}.pid", proc)
    child = int((fake_env / f"{victim}.pid").read_text())
    time.sleep(0.3)
    proc.send_signal(sig)
    rc = proc.wait(timeout=60)
    output = proc.stdout.read()
    if sig == signal.SIGINT:
        assert rc == 130, output
        assert "run the same command again" in output
    else:
        assert rc == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pid_alive(child), "the interrupted step outlived the executor"

    spec = load_spec(spec_path)
    states = {r["name"]: r["state"] for r in experiment_status(spec)["steps"]}
    assert states[victim] == "interrupted" and states["prepare"] == "succeeded"
    monkeypatch.delenv("FAKE_SLEEP")
    again = _coe_ctl_proc(spec_path)
    output = again.communicate(timeout=120)[0]
    assert again.returncode == 0, output
    assert "published earlier, skipped" in output
    assert [r["name"] for r in experiment_status(spec)["steps"]] == expected
    for name in expected:
        records = read_attempts(spec, name)
        assert completed_executions(records) == 1, (name, records)
        starts = [r for r in records if r["event"] == "start"]
        # The interrupted step: its killed attempt and the one that finished; the others ran once.
        assert len(starts) == (2 if name == victim else 1), (name, records)


def test_local_executor_failed_step_is_named_with_its_log(tmp_path, fake_env, monkeypatch, capsys):
    spec_path = _write_spec(tmp_path, stages=["speaker_id", "erc"])
    monkeypatch.setenv("FAKE_FAIL", "speaker-id:2")
    assert coe_ctl(["run", str(spec_path)]) == 1
    out = capsys.readouterr().out
    assert "step speaker-id failed" in out and "exit code 2 (permanent)" in out
    assert "fake failure in speaker-id" in out  # the last log lines
    tail = out[out.index("last log lines:") :]
    assert "COE_PROGRESS" not in tail  # the step's own output, not its 30 progress lines
    spec = load_spec(spec_path)
    assert len(read_attempts(spec, "speaker-id")) == 2  # permanent: not retried
    assert read_attempts(spec, "erc") == []
    assert coe_ctl(["status", str(spec_path)]) == 1
    assert "failed" in capsys.readouterr().out
    assert coe_ctl(["logs", "speaker-id", "--spec", str(spec_path)]) == 0
    assert "fake failure in speaker-id" in capsys.readouterr().out


def test_local_executor_retries_transient_failures(tmp_path, fake_env, monkeypatch, capsys):
    spec_path = _write_spec(tmp_path, stages=["erc"])
    monkeypatch.setenv("FAKE_FAIL", "erc:175")
    assert coe_ctl(["run", str(spec_path)]) == 1
    starts = [r for r in read_attempts(load_spec(spec_path), "erc") if r["event"] == "start"]
    assert len(starts) == 2  # maxRetries 1: one retry of a transient (128-255) failure
    assert "transient" in capsys.readouterr().out


def test_local_cli_plan_validate_and_status_outputs(tmp_path, fake_env, capsys):
    spec_path = _write_spec(tmp_path)
    assert coe_ctl(["validate", str(spec_path)]) == 0
    assert "valid: fake" in capsys.readouterr().out
    assert coe_ctl(["plan", str(spec_path), "--output", "json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in planned["steps"]] == ALL_STEPS
    assert [s["tentative"] for s in planned["steps"]][5:] == [True] * 4
    assert coe_ctl(["plan", str(spec_path)]) == 0
    assert "tentative" in capsys.readouterr().out
    spec_path = _write_spec(tmp_path, stages=["erc"])
    assert coe_ctl(["run", str(spec_path), "-o", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["test_weighted_f1"] == 55.25
    assert result["test_baseline"]["label"] == "neutral"
    assert coe_ctl(["status", "fake", "--store", str(tmp_path / "runs"), "-o", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["phase"] == "Succeeded" and status["steps"][-1]["metric"] == "test wF1 55.25"


def test_local_cli_bad_spec_exits_2_listing_problems(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "coe.ml/v1alpha1",
                "kind": "CoEExperiment",
                "metadata": {"name": "x"},
                "spec": {"lora": {"r": 0}, "strategy": "nope"},
            }
        )
    )
    assert coe_ctl(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "spec.lora.r" in err and "spec.strategy" in err
    assert coe_ctl(["run", str(bad)]) == 2
    assert coe_ctl(["validate", str(tmp_path / "missing.yaml")]) == 2


def test_plain_progress_repeats_within_a_phase_at_most_once_a_minute():
    """A log (not a terminal) of a long generation pass shows it moving, without a line per batch."""
    import io

    from coe_controller.local import Display
    from rich.console import Console

    out = io.StringIO()
    now = [1000.0]
    display = Display(Console(file=out, force_terminal=False, width=200), clock=lambda: now[0])
    display.state = {"event": {}}
    for done in range(16, 2610, 16):  # one event per batch, a second apart
        display.event({"step": "test", "phase": "generate", "done": done, "total": 2610})
        now[0] += 1.0
    display.event({"step": "test", "phase": "done"})
    lines = [line.strip() for line in out.getvalue().splitlines()]
    progress = [line for line in lines if line.startswith("phase=generate")]
    # 162 events over 162 s: the first, then one at 60 s and 120 s — not 162 lines.
    assert progress == [
        "phase=generate done=16 total=2610",
        "phase=generate done=976 total=2610",
        "phase=generate done=1936 total=2610",
    ]
    assert lines[-1] == "phase=done"


def test_an_edited_setting_reruns_exactly_that_step_and_its_descendants(tmp_path, fake_env, capsys):
    """Issue 15: a published step counts as done only for its own fingerprint."""
    spec_path = _write_spec(tmp_path)
    assert coe_ctl(["run", str(spec_path)]) == 0
    spec = load_spec(spec_path)
    first = {s["name"]: s for s in experiment_status(spec)["steps"]}
    capsys.readouterr()

    _write_spec(tmp_path, training={"erc": {"epochs": 3}})  # one field of the finished run
    edited = load_spec(spec_path)
    assert coe_ctl(["plan", str(spec_path), "--output", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["steps"]}
    assert {n: r["action"] for n, r in rows.items() if r["action"] != "reuse"} == {
        "erc": "rerun (stale)",
        "test": "rerun (stale)",
    }
    assert rows["erc"]["changes"] == ["optim.epochs: 20.0 -> 3.0"]
    assert rows["test"]["changes"] == ["adapter: from a new erc"]  # why a downstream step runs again
    assert coe_ctl(["run", str(spec_path)]) == 0
    capsys.readouterr()
    after = {s["name"]: s for s in experiment_status(edited)["steps"]}
    rerun = [n for n in QUICKSTART_STEPS if completed_executions(read_attempts(edited, n)) == 2]
    assert rerun == ["erc", "test"]  # every other step reused from the first run
    assert all(after[n]["fingerprint"] == first[n]["fingerprint"] for n in QUICKSTART_STEPS if n not in rerun)
    for n in rerun:  # the old results are still there, under their own fingerprints
        assert after[n]["fingerprint"] != first[n]["fingerprint"]
        assert (Path(first[n]["output"].removeprefix("file://")) / "MANIFEST.json").is_file()
    status = experiment_status(edited)
    assert status["phase"] == "Succeeded" and status["holds_earlier_results"]
    assert coe_ctl(["status", str(spec_path)]) == 0
    assert "earlier spec" in capsys.readouterr().out
