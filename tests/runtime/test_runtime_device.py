"""A step whose pod asked for GPUs never trains on CPU in silence: COE_EXPECT_GPUS (set by the renderer on
pods that request nvidia.com/gpu) makes the runtime check CUDA at step start and fail at once, permanently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coe_runtime import __main__ as entry
from coe_runtime import driver
from coe_runtime.errors import EXIT_NO_GPU, ConfigError, DeviceError, check_expected_gpus, expected_gpus
from tests.support.pythonpath import child_pythonpath

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path) -> Path:
    p = tmp_path / "step.json"
    p.write_text(
        json.dumps({"kind": "generate", "name": "g", "output": str(tmp_path / "o"), "input_file": "x"})
    )
    return p


def _fake_cuda(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA is unavailable")
def test_expecting_gpus_without_cuda_is_a_clear_permanent_error():
    env = {"COE_EXPECT_GPUS": "2", "CUDA_VISIBLE_DEVICES": "0,1"}
    with pytest.raises(DeviceError) as err:
        check_expected_gpus(env)
    assert err.value.exit_code == EXIT_NO_GPU and 1 <= EXIT_NO_GPU <= 127  # permanent: never retried
    text = str(err.value)
    assert "expected 2 GPU(s)" in text
    assert "CUDA is unavailable" in text
    assert "CUDA_VISIBLE_DEVICES='0,1'" in text
    assert f"torch.version.cuda={torch.version.cuda or 'None'}" in text
    assert "refusing to run on CPU" in text


def test_too_few_visible_devices_or_a_rank_without_one(monkeypatch):
    _fake_cuda(monkeypatch, 1)
    with pytest.raises(DeviceError, match=r"expected 2 GPU\(s\).*only 1 CUDA device\(s\) are visible"):
        check_expected_gpus({"COE_EXPECT_GPUS": "2"})
    _fake_cuda(monkeypatch, 2)
    check_expected_gpus({"COE_EXPECT_GPUS": "2", "LOCAL_RANK": "1"})  # enough: no error
    with pytest.raises(DeviceError, match="LOCAL_RANK 2 has no device"):
        check_expected_gpus({"COE_EXPECT_GPUS": "2", "LOCAL_RANK": "2"})


def test_not_expecting_gpus_runs_anywhere(monkeypatch):
    _fake_cuda(monkeypatch, 0)
    for env in ({}, {"COE_EXPECT_GPUS": ""}, {"COE_EXPECT_GPUS": "0"}):
        check_expected_gpus(env)
    with pytest.raises(ConfigError, match="COE_EXPECT_GPUS='two'"):
        expected_gpus({"COE_EXPECT_GPUS": "two"})


def test_the_entry_point_checks_before_the_step_runs(tmp_path, monkeypatch, capsys):
    _fake_cuda(monkeypatch, 0)
    ran = []
    monkeypatch.setattr(driver, "run_step", lambda step: ran.append(step.name) or {"ok": True})
    monkeypatch.delenv("COE_EXPECT_GPUS", raising=False)
    assert entry.main(["generate", "--config", str(_config(tmp_path))]) == 0
    assert ran == ["g"]  # not expecting GPUs: the step runs (on CPU)
    monkeypatch.setenv("COE_EXPECT_GPUS", "1")
    assert entry.main(["generate", "--config", str(_config(tmp_path))]) == EXIT_NO_GPU
    assert ran == ["g"]  # the step never started
    err = capsys.readouterr().err
    assert f"error (permanent, exit {EXIT_NO_GPU}): expected 1 GPU(s)" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA is unavailable")
def test_a_pod_that_expects_gpus_fails_at_once_with_the_real_entry_point(tmp_path):
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "COE_EXPECT_GPUS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "coe_runtime", "generate", "--config", str(_config(tmp_path))]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_NO_GPU, proc.stderr[-2000:]
    assert "expected 1 GPU(s)" in proc.stderr and "CUDA_VISIBLE_DEVICES=''" in proc.stderr


def test_the_renderer_tells_gpu_pods_how_many_to_expect():
    from coe_controller.cli_cluster import render_spec

    objs = render_spec(
        str(REPO / "manifests" / "examples" / "meld-mistral7b.yaml")
    )  # gpusPerPod 2, prepare 0
    expect = {}
    for job in (o for o in objs if o["kind"] == "PyTorchJob"):
        (container,) = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        gpus = (container.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu")
        assert env.get("COE_EXPECT_GPUS") == gpus, job["metadata"]["name"]
        expect[job["metadata"]["labels"]["coe.ml/step"]] = env.get("COE_EXPECT_GPUS")
    assert expect["prepare"] is None  # a CPU step: no check
    assert set(expect.values()) == {None, "2"}
