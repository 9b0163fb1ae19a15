"""The quick-start experiment on the emulated cluster, end to end and real: real runtime steps under
torchrun, artifacts through SeaweedFS (S3), credentials only via the Secret named in the spec."""

from __future__ import annotations

import base64
import importlib.util
import time

import pytest
import yaml
from coe_controller.planner import plan
from coe_controller.spec import parse_spec

from coe_runtime.store import get_store
from tests.operator.harness import ControllerProcess, TrainingOperator
from tests.operator.test_operator_e2e import NS, REPO, experiment, phase, validate_writes
from tests.support.kmock_api import KubeAPI

pytestmark = [pytest.mark.k8s, pytest.mark.s3, pytest.mark.slow]


@pytest.mark.skipif(
    importlib.util.find_spec("coe_runtime.__main__") is None, reason="runtime entry point not built"
)
def test_quickstart_runs_to_succeeded_on_the_emulated_cluster(tmp_path, monkeypatch, capsys):
    from kubernetes import client

    from tests.support.seaweed import SeaweedServer

    s3 = SeaweedServer(tmp_path / "s3").start()
    api = KubeAPI().start()
    controller = None
    try:
        bucket = s3.make_bucket("coe-quickstart")
        for k, v in s3.env().items():
            monkeypatch.setenv(k, v)
        core = client.CoreV1Api(api.api_client())
        data = {k: base64.b64encode(v.encode()).decode() for k, v in s3.env().items()}
        core.create_namespaced_secret(NS, {"metadata": {"name": "coe-s3", "namespace": NS}, "data": data})
        doc = yaml.safe_load((REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
        doc["metadata"] = {"name": "exp", "namespace": NS}
        doc["spec"]["store"] = f"{bucket}/runs"
        doc["spec"]["resources"]["s3CredentialsSecret"] = "coe-s3"
        from coe_controller.kube import Kube

        Kube(api.api_client(), role="user").create_experiment(NS, doc)
        harness = TrainingOperator(api, NS, tmp_path / "pods", fake=False)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", NS)
        controller = ControllerProcess(kubeconfig, NS, env=s3.env(), log=tmp_path / "controller.log").start()
        deadline = time.time() + 900
        while phase(api) not in ("Succeeded", "Failed") and time.time() < deadline:
            harness.step_all()
            time.sleep(0.3)
        status = experiment(api)["status"]
        assert status["phase"] == "Succeeded", (status, {k: v[-2000:] for k, v in harness.logs.items()})

        # the same step sequence the local executor runs (the plan after the observed STEeR rounds)
        spec = parse_spec(doc)
        from coe_controller.planner import observe_rounds

        store = get_store(spec.spec.store)
        steps = plan(spec, observe_rounds(spec, store))
        assert [s["name"] for s in status["steps"]] == [s.name for s in steps]
        assert all(not s.tentative for s in steps)
        assert api.created("pytorchjobs") == [f"exp-{s.name}-a1" for s in steps]
        for s in steps:  # every step's artifacts published with a manifest, in S3
            manifest = store.manifest(s.output)
            assert manifest and manifest["files"], s.name
        assert store.exists(f"{bucket}/runs/exp/test/metrics.json")
        assert "testWeightedF1" in status["bestMetrics"]
        validate_writes(api)

        # and `coe-ctl status` shows it
        import argparse

        from coe_controller.cli_cluster import cluster_status

        capsys.readouterr()
        rc = cluster_status(
            argparse.Namespace(
                target="exp", namespace=NS, kubeconfig=str(kubeconfig), context=None, watch=False, output=None
            )
        )
        out = capsys.readouterr().out
        assert rc == 0 and "Succeeded" in out and "erc" in out and "test" in out
    finally:
        if controller is not None:
            controller.kill()
        api.stop()
        s3.stop()
