"""``coe-ctl run`` end to end on real MELD dialogues (a few of them) with the tiny model."""

from __future__ import annotations

import json

import pytest
import yaml
from coe_controller.local import completed_executions, read_attempts
from coe_controller.spec import load_spec

from tests.local.local_support import run_coe_ctl
from tests.support.layout import result_dir
from tests.support.shared import need_shared

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_local_run_on_a_few_meld_dialogues(tmp_path, data_dir):
    meld = need_shared(data_dir / "meld" / "train_sent_emo.csv").parent
    doc = {
        "apiVersion": "coe.ml/v1alpha1",
        "kind": "CoEExperiment",
        "metadata": {"name": "meld-tiny"},
        "spec": {
            "dataset": {
                "format": "meld",
                "files": {s: str(meld / f"{s}_sent_emo.csv") for s in ("train", "dev", "test")},
                "labelSet": {"name": "meld", "naming": "coe"},
                "historyWindow": 2,
                "maxLength": 384,
                "maxDialogues": 3,
            },
            "baseModel": {"nameOrPath": "tiny"},
            "lora": {"modulesToSave": ["embed_tokens", "lm_head"]},
            "optimizer": {
                "perDeviceBatchSize": 8,
                "gradientAccumulationSteps": 1,
                "gradientCheckpointing": False,
            },
            "training": {"erc": {"epochs": 1}},
            "stages": ["erc"],
            "evaluation": {"generation": {"maxNewTokens": 6, "batchSize": 32}},
            "resources": {"gpusPerPod": 0},
            "store": "file://./runs",
        },
    }
    spec_path = tmp_path / "meld-tiny.yaml"
    spec_path.write_text(yaml.safe_dump(doc))
    summary = run_coe_ctl(spec_path, timeout=600)
    assert summary["ok"]
    assert 0 <= summary["test_weighted_f1"] <= 100
    assert summary["test_baseline"]["label_set"] == "meld"
    spec = load_spec(spec_path)
    for step in ("prepare", "erc", "test"):
        assert completed_executions(read_attempts(spec, step)) == 1
    prepared = result_dir(tmp_path / "runs" / "meld-tiny", "prepare")
    test_rows = (prepared / "erc-test.jsonl").read_text().splitlines()
    dialogues = {json.loads(r)["meta"]["dialogue_id"] for r in test_rows}
    assert 1 <= len(dialogues) <= 3  # maxDialogues reached the reader
    metrics = json.loads((result_dir(tmp_path / "runs" / "meld-tiny", "test") / "metrics.json").read_text())
    assert metrics["n"] == len(test_rows)
