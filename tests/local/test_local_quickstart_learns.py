"""The README's first command: the quick start runs the whole curriculum and learns.

Runs ``coe-ctl run manifests/examples/quickstart.yaml`` exactly as shipped (only the store moved
to a temporary folder) and checks that every step of the full curriculum completed once and that
the test weighted F1 beats the majority-class baseline printed beside it. About 2.5 minutes on
2 idle CPU cores.
"""

from __future__ import annotations

import pytest
import yaml

from tests.local.local_support import QUICKSTART_STEPS, REPO, run_coe_ctl

QUICKSTART = REPO / "manifests" / "examples" / "quickstart.yaml"

pytestmark = pytest.mark.slow


def test_quickstart_runs_the_full_curriculum_and_beats_the_majority_baseline(tmp_path):
    doc = yaml.safe_load(QUICKSTART.read_text())
    doc["spec"]["store"] = f"file://{tmp_path / 'runs'}"
    spec_path = tmp_path / "quickstart.yaml"
    spec_path.write_text(yaml.safe_dump(doc))

    summary = run_coe_ctl(spec_path)
    assert summary["ok"]

    from coe_controller.local import completed_executions, read_attempts
    from coe_controller.spec import load_spec

    spec = load_spec(spec_path)
    for step in QUICKSTART_STEPS:
        assert completed_executions(read_attempts(spec, step)) == 1, step

    baseline = summary["test_baseline"]["weighted_f1"]
    assert summary["test_weighted_f1"] > baseline + 20, (summary["test_weighted_f1"], baseline)
    assert summary["dev_weighted_f1"] > summary["dev_baseline"]["weighted_f1"]
