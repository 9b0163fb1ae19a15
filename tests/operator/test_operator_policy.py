"""controller/policy.py: what an experiment may make the controller run (images, ServiceAccounts, Secrets)."""

from __future__ import annotations

import yaml
from coe_controller import policy, render
from coe_controller.cli_cluster import render_spec
from coe_controller.operator import defaults_from_env
from coe_controller.planner import plan
from coe_controller.spec import load_spec

from tests.operator.test_operator_render import REPO

POLICY = policy.Policy(
    images=("registry.example/ml/*",),
    service_accounts=("coe-runner",),
    secrets=("coe-s3", "hf-*"),
)


def _spec(tmp_path, **resources) -> str:
    doc = yaml.safe_load((REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
    doc["spec"]["resources"] = {"gpusPerPod": 0, **resources}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


ALLOWED = {
    "image": "registry.example/ml/coe-runtime:1",
    "serviceAccountName": "coe-runner",
    "s3CredentialsSecret": "coe-s3",
    "env": [{"name": "HFX", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "t"}}}],
}


def test_an_allowed_experiment_has_no_violations(tmp_path):
    objs = render_spec(_spec(tmp_path, **ALLOWED), "ml")
    assert objs and policy.check(objs, POLICY) == []
    assert policy.check(objs, None) == [] and policy.check(objs, policy.Policy()) == []


def test_image_service_account_and_secrets_are_checked_everywhere_a_pod_names_them(tmp_path):
    bad = {
        **ALLOWED,
        "image": "docker.io/evil/miner:latest",
        "serviceAccountName": "cluster-admin-sa",
        "s3CredentialsSecret": "other-team-s3",
        "env": [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "pw"}}}],
        "envFrom": [{"secretRef": {"name": "prod-env"}}, {"configMapRef": {"name": "fine"}}],
        "volumes": [
            {"name": "keys", "secret": {"secretName": "tls-keys"}},
            {"name": "mix", "projected": {"sources": [{"secret": {"name": "projected-one"}}]}},
            {"name": "csi", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-creds"}}},
        ],
        "volumeMounts": [{"name": "keys", "mountPath": "/keys"}],
    }
    v = policy.check(render_spec(_spec(tmp_path, **bad), "ml"), POLICY)
    text = "\n".join(v)
    assert "image 'docker.io/evil/miner:latest' is not allowed" in text
    assert "serviceAccountName 'cluster-admin-sa' is not allowed" in text
    for secret, where in [
        ("other-team-s3", "envFrom"),
        ("db-password", "env DB"),
        ("prod-env", "envFrom"),
        ("tls-keys", "volume keys"),
        ("projected-one", "volume mix"),
        ("csi-creds", "volume csi"),
    ]:
        assert (
            f"Secret {secret!r} (container pytorch {where}" in text or f"Secret {secret!r} ({where}" in text
        ), (
            secret,
            text,
        )
    assert "fine" not in text  # ConfigMaps are not Secrets
    assert len(v) == len(set(v))


def test_a_pod_without_a_service_account_runs_as_default():
    pod = {"containers": [{"name": "c", "image": "registry.example/ml/x"}]}
    assert policy.check(pod, POLICY) == [
        "pod template: serviceAccountName 'default' is not allowed (allowed: coe-runner)"
    ]
    assert policy.check(pod, policy.Policy(service_accounts=("default",))) == []


def test_check_steps_renders_every_planned_step_with_the_installation_defaults(tmp_path):
    spec = load_spec(_spec(tmp_path, serviceAccountName="coe-runner"))
    steps = plan(spec)
    owner = render.Owner(spec.name, "ml")
    defaults = render.ClusterDefaults(
        image="registry.example/ml/coe-runtime:2", s3_secret="coe-s3", policy=POLICY
    )
    assert policy.check_steps(steps, defaults, owner) == []
    strict = render.ClusterDefaults(image="ghcr.io/coe-k8s/coe-runtime:0.1.0", policy=POLICY)
    v = policy.check_steps(steps, strict, owner)
    assert len(v) == len(steps) and all(
        "image 'ghcr.io/coe-k8s/coe-runtime:0.1.0' is not allowed" in m for m in v
    )
    assert v[0].startswith(f"step {steps[0].name}: ")
    assert policy.check_steps(steps, render.ClusterDefaults(), owner) == []


def test_policy_from_the_charts_environment():
    env = {
        "COE_ALLOWED_IMAGES": "registry.example/ml/*, ghcr.io/coe-k8s/*",
        "COE_ALLOWED_SERVICE_ACCOUNTS": "coe-runner\ndefault",
        "COE_ALLOWED_SECRETS": "team-*",
        "COE_RUNTIME_IMAGE": "mirror.example/coe-runtime:1",
        "COE_S3_SECRET": "coe-s3",
    }
    p = defaults_from_env(env).policy
    assert p.images == ("registry.example/ml/*", "ghcr.io/coe-k8s/*", "mirror.example/coe-runtime:1")
    assert p.service_accounts == ("coe-runner", "default")
    assert p.secrets == ("team-*", "coe-s3")  # the installation's own S3 Secret is always allowed
    assert p.allows_image("ghcr.io/coe-k8s/coe-runtime:0.1.0") and not p.allows_image("ghcr.io/other/x")
    assert policy.from_env({"COE_RUNTIME_IMAGE": "x"}) is None  # nothing restricted


def test_the_chart_passes_the_policy_values():
    chart = (REPO / "charts" / "coe-controller" / "templates" / "deployment.yaml").read_text()
    for var in (policy.ENV_IMAGES, policy.ENV_SERVICE_ACCOUNTS, policy.ENV_SECRETS):
        assert var in chart


def test_as_violation_turns_an_invalid_spec_status_into_a_policy_violation():
    from coe_controller.reconcile import invalid_spec_status

    obj = {"metadata": {"name": "e", "generation": 2}, "status": {"phase": "Running"}}
    status = policy.as_violation(invalid_spec_status(obj, "step erc: image 'x' is not allowed", 100.0))
    assert status["phase"] == "Failed" and status["reason"] == "PolicyViolation"
    assert {c["type"]: c["reason"] for c in status["conditions"]} == {
        "Progressing": "PolicyViolation",
        "Succeeded": "PolicyViolation",
        "Failed": "PolicyViolation",
    }
    assert status["message"] == "step erc: image 'x' is not allowed" and status["observedGeneration"] == 2


def test_trainjobs_are_checked_too(tmp_path):
    """Kubeflow Trainer v2: the image and env live in spec.trainer, the pod settings in runtimePatches."""
    bad = {
        "jobApi": "TrainJob",
        "image": "docker.io/evil/miner:latest",
        "serviceAccountName": "cluster-admin-sa",
        "s3CredentialsSecret": "other-team-s3",
        "env": [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "pw"}}}],
        "volumes": [{"name": "keys", "secret": {"secretName": "tls-keys"}}],
        "volumeMounts": [{"name": "keys", "mountPath": "/keys"}],
    }
    objs = render_spec(_spec(tmp_path, **bad), "ml")
    assert any(o["kind"] == "TrainJob" for o in objs)
    text = "\n".join(policy.check(objs, POLICY))
    assert "image 'docker.io/evil/miner:latest' is not allowed" in text
    assert "serviceAccountName 'cluster-admin-sa' is not allowed" in text
    for secret in ("other-team-s3", "db-password", "tls-keys"):
        assert f"Secret {secret!r}" in text, (secret, text)
    good = render_spec(_spec(tmp_path, **{**ALLOWED, "jobApi": "TrainJob"}), "ml")
    assert policy.check(good, POLICY) == []
