"""The quick-start experiment on the emulated cluster, end to end and real: real runtime steps under
torchrun, artifacts through SeaweedFS (S3), credentials only via the Secret named in the spec.

The quick start's *sequence* of steps is kept (prepare, role-play, speaker-ID, two STEeR rounds, ERC,
test); only its budgets are cut in the test (two optimiser steps per stage, a small STEeR pool, few
dev/test examples), so the test measures the operator, not CPU training. The same reduced spec runs
through the local executor at the same time (the two paths use the machine's two cores), and the two
runs must end with the same steps and the same files in every step's manifest.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import threading
import time

import pytest
import yaml
from coe_controller.planner import plan
from coe_controller.spec import parse_spec

from coe_runtime.store import get_store
from tests.operator.harness import ControllerProcess, TrainingOperator
from tests.operator.test_operator_e2e import NS, REPO, experiment, phase, validate_writes
from tests.support.kmock_api import KubeAPI
from tests.support.layout import without_fingerprint

pytestmark = [pytest.mark.k8s, pytest.mark.s3, pytest.mark.slow]

# Wall-clock limit of the whole run: about 2 minutes on an idle 2-core machine, so this leaves room
# for a busy CI runner while still failing a run that hangs.
DEADLINE_S = 600


def quickstart_with_small_budgets() -> dict:
    """manifests/examples/quickstart.yaml with its budgets cut, and nothing else changed."""
    doc = yaml.safe_load((REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
    spec = doc["spec"]
    for stage in spec["training"].values():
        stage.update(epochs=1, maxSteps=2)
    # minAccepted 0: an untrained model accepts few rationales, and round 2 must still run, as in
    # the quick start.
    spec["steer"].update(maxPool=8, minAccepted=0, rationaleMaxNewTokens=12)
    spec["dataset"].update(maxDevExamples=8, maxTestExamples=8)
    doc["metadata"] = {"name": "exp", "namespace": NS}
    return doc


def manifest_files(store, steps) -> dict[str, list[str]]:
    out = {}
    for s in steps:
        manifest = store.manifest(s.output)
        assert manifest and manifest["files"], f"{s.name}: nothing published at {s.output}"
        out[s.name] = sorted(f["path"] for f in manifest["files"])
    return out


@pytest.mark.skipif(
    importlib.util.find_spec("coe_runtime.__main__") is None, reason="runtime entry point not built"
)
def test_quickstart_runs_to_succeeded_on_the_emulated_cluster_like_the_local_executor(
    tmp_path, monkeypatch, capsys
):
    from coe_controller.kube import Kube
    from coe_controller.local import LocalExecutor
    from coe_controller.planner import observe_rounds
    from kubernetes import client
    from rich.console import Console

    from tests.support.seaweed import SeaweedServer

    started = time.monotonic()
    s3 = SeaweedServer(tmp_path / "s3").start()
    api = KubeAPI().start()
    controller = None
    local_thread = None
    try:
        bucket = s3.make_bucket("coe-quickstart")
        for k, v in s3.env().items():
            monkeypatch.setenv(k, v)  # for this process's reads of the store; pods get the Secret
        core = client.CoreV1Api(api.api_client())
        data = {k: base64.b64encode(v.encode()).decode() for k, v in s3.env().items()}
        core.create_namespaced_secret(NS, {"metadata": {"name": "coe-s3", "namespace": NS}, "data": data})

        doc = quickstart_with_small_budgets()
        doc["spec"]["store"] = f"{bucket}/runs"
        doc["spec"]["resources"]["s3CredentialsSecret"] = "coe-s3"

        # The local executor on the same reduced spec (a file:// store), in a thread beside the cluster run.
        local_doc = yaml.safe_load(yaml.safe_dump(doc))
        local_doc["spec"]["store"] = f"file://{tmp_path / 'local-store'}"
        local_spec = parse_spec(local_doc)
        local_result: dict = {}
        local_console = io.StringIO()

        def run_locally():
            try:
                local_result["run"] = LocalExecutor(local_spec, console=Console(file=local_console)).run()
            except BaseException as e:  # reported by the assertion below
                local_result["error"] = e

        local_thread = threading.Thread(target=run_locally, name="local-executor", daemon=True)
        local_thread.start()

        Kube(api.api_client(), role="user").create_experiment(NS, doc)
        harness = TrainingOperator(api, NS, tmp_path / "pods", fake=False)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", NS)
        controller = ControllerProcess(kubeconfig, NS, env=s3.env(), log=tmp_path / "controller.log").start()
        deadline = started + DEADLINE_S
        while phase(api) not in ("Succeeded", "Failed") and time.monotonic() < deadline:
            harness.step_all()
            time.sleep(0.3)
        status = experiment(api)["status"]
        assert status["phase"] == "Succeeded", (status, {k: v[-2000:] for k, v in harness.logs.items()})

        # the step sequence of the plan after the observed STEeR rounds: the quick start's, in full
        spec = parse_spec(doc)
        store = get_store(spec.spec.store)
        steps = plan(spec, observe_rounds(spec, store))
        assert all(not s.tentative for s in steps)
        names = [s.name for s in steps]
        quickstart = parse_spec(
            yaml.safe_load((REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
        )
        assert names == [s.name for s in plan(quickstart, {})]
        assert [s["name"] for s in status["steps"]] == names
        assert [without_fingerprint(j) for j in api.created("pytorchjobs")] == [f"exp-{n}-a1" for n in names]
        cluster_files = manifest_files(store, steps)  # every step's artifacts published, in S3
        test_step = next(s for s in steps if s.name == "test")
        assert test_step.output.startswith(f"{bucket}/runs/exp/test/")  # <experiment>/<step>/<fingerprint>
        assert store.exists(f"{test_step.output}/metrics.json")
        assert "testWeightedF1" in status["bestMetrics"]
        validate_writes(api)

        # the local executor's run of the same spec: same steps, same files in each step's manifest
        local_thread.join(max(deadline - time.monotonic(), 1.0))
        assert not local_thread.is_alive(), "the local executor did not finish in time"
        assert "error" not in local_result, local_result.get("error")
        assert local_result["run"].ok, local_console.getvalue()[-3000:]
        local_store = get_store(local_spec.spec.store)
        local_steps = plan(local_spec, observe_rounds(local_spec, local_store))
        assert [s.name for s in local_steps] == names
        # The cluster and the laptop give every step the same identity for the same spec.
        assert [s.config.fingerprint for s in local_steps] == [s.config.fingerprint for s in steps]
        assert manifest_files(local_store, local_steps) == cluster_files

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
        print(f"quick start on the emulated cluster + local executor: {time.monotonic() - started:.0f}s")
    finally:
        if controller is not None:
            controller.kill()
        api.stop()
        s3.stop()
