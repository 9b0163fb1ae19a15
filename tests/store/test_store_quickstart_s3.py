"""The quick-start plan runs end to end against SeaweedFS (s3://) through the local executor.

Same spec, same steps (prepare, role-play, speaker-ID, two STEeR rounds, ERC, test); only the
store is s3:// and each stage stops after two optimiser steps, so the test exercises every
store path of the runtime (publish, materialize, fetch of checkpoints) in CI time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from coe_controller.cli import main as coe_ctl
from coe_controller.local import experiment_status
from coe_controller.planner import plan
from coe_controller.spec import load_spec

from coe_runtime.store import get_store, join

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.s3, pytest.mark.slow]


def test_quickstart_plan_runs_on_an_s3_store(s3_env, s3_root, tmp_path, capsys):
    quickstart = REPO / "manifests" / "examples" / "quickstart.yaml"
    doc = yaml.safe_load(quickstart.read_text())
    doc["spec"]["store"] = s3_root
    for stage in doc["spec"]["training"].values():
        stage.update(epochs=1, maxSteps=2)
    doc["spec"]["steer"]["maxPool"] = 8
    spec_path = tmp_path / "quickstart-s3.yaml"
    spec_path.write_text(yaml.safe_dump(doc))

    assert coe_ctl(["run", str(spec_path)]) == 0, capsys.readouterr()

    spec = load_spec(spec_path)
    assert [s.name for s in plan(spec, {})] == [s.name for s in plan(load_spec(quickstart), {})]
    status = experiment_status(spec)
    assert status["phase"] == "Succeeded", status
    store = get_store(s3_root)
    outputs = {}
    for step in status["steps"]:
        # <store>/<experiment>/<step>/<fingerprint>
        assert step["output"] == join(s3_root, spec.name, step["name"], step["fingerprint"])
        assert store.is_published(step["output"]), step["name"]
        outputs[step["name"]] = step["output"]
    metrics = store.read_json(join(outputs["test"], "metrics.json"))
    assert 0.0 <= metrics["weighted_f1"] <= 100.0
    # Every published step verifies against its manifest when fetched back.
    store.fetch(outputs["erc"], tmp_path / "erc")
    assert (tmp_path / "erc" / "adapter").is_dir()
