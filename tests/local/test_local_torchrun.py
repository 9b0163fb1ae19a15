"""A step with ``nprocPerNode: 2`` runs under torchrun locally (through the pods' launcher) and
publishes once, from rank 0, with the same outputs as a single process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from coe_controller.local import completed_executions, read_attempts, step_command
from coe_controller.planner import plan
from coe_controller.spec import load_spec, parse_spec

from tests.local.local_support import run_coe_ctl
from tests.support.layout import result_dir

pytestmark = pytest.mark.slow


def _doc(store: Path, nproc: int) -> dict:
    return {
        "apiVersion": "coe.ml/v1alpha1",
        "kind": "CoEExperiment",
        "metadata": {"name": f"torchrun-{nproc}"},
        "spec": {
            "dataset": {"format": "demo", "historyWindow": 1, "maxLength": 512, "maxTestExamples": 12},
            "baseModel": {"nameOrPath": "tiny"},
            "lora": {"modulesToSave": ["embed_tokens", "lm_head"]},
            "optimizer": {
                "perDeviceBatchSize": 4,
                "gradientAccumulationSteps": 1,
                "gradientCheckpointing": False,
            },
            "training": {"erc": {"epochs": 1, "maxSteps": 2}},
            "stages": ["erc"],
            "evaluation": {"devEachEpoch": False, "generation": {"maxNewTokens": 6, "batchSize": 8}},
            "resources": {"gpusPerPod": 0, "nprocPerNode": nproc},
            "store": f"file://{store}",
        },
    }


def test_two_processes_use_the_launcher():
    spec = parse_spec(_doc(Path("/tmp/unused"), 2), "inline")
    erc = next(s for s in plan(spec) if s.name == "erc")
    cmd = step_command(erc, Path("step.json"))
    assert cmd[1:3] == ["-m", "coe_runtime.launch"]
    assert "--nproc-per-node=2" in cmd


def test_a_two_process_run_publishes_every_test_prediction_once(tmp_path):
    spec_path = tmp_path / "torchrun.yaml"
    spec_path.write_text(yaml.safe_dump(_doc(tmp_path / "runs", 2)))
    run_coe_ctl(spec_path)
    spec = load_spec(spec_path)
    for step in ("prepare", "erc", "test"):
        assert completed_executions(read_attempts(spec, step)) == 1
    out = tmp_path / "runs" / "torchrun-2"
    test_ids = [
        json.loads(line)["id"]
        for line in (result_dir(out, "prepare") / "erc-test.jsonl").read_text().splitlines()
    ]
    predicted = [
        json.loads(line)["id"]
        for line in (result_dir(out, "test") / "predictions.jsonl").read_text().splitlines()
    ]
    assert predicted == test_ids  # every id once, in the original order, gathered from both ranks
    manifest = json.loads((result_dir(out, "erc") / "MANIFEST.json").read_text())
    assert manifest["meta"]["world_size"] == 2  # really two processes, one publication
