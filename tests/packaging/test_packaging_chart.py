"""The Helm chart: lint, render, validate offline against the Kubernetes schemas, and check the
properties an MLOps reviewer looks for (security context, probes, RBAC = the controller's list)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.packaging import packaging_support as ps
from tests.packaging.packaging_sync import helm_template, run_helm


@pytest.fixture(scope="module")
def helm() -> str:
    return ps.require_helm()


@pytest.fixture(scope="module")
def default_text(helm) -> str:
    return helm_template(release="coe", namespace="ml", include_crds=True)


@pytest.fixture(scope="module")
def all_options_text(helm) -> str:
    # the CRD does not depend on values: validated once, with the defaults
    return helm_template(ps.ALL_OPTIONS_VALUES, release="coe", namespace="ml")


def _deployment(text: str) -> dict:
    (dep,) = ps.by_kind(ps.documents(text), "Deployment")
    return dep


def _container(text: str) -> dict:
    (container,) = _deployment(text)["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("values", [None, ps.ALL_OPTIONS_VALUES], ids=["defaults", "all-options"])
def test_helm_lint_strict_is_clean(helm, values):
    args = ["lint", "--strict", str(ps.CHART)] + (["--values", str(values)] if values else [])
    result = run_helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_all_options_file_sets_every_top_level_value():
    """The 'every option on' values file really covers every option the chart has."""
    defaults = yaml.safe_load((ps.CHART / "values.yaml").read_text())
    all_options = yaml.safe_load(ps.ALL_OPTIONS_VALUES.read_text())
    unset = sorted(k for k in defaults if k not in all_options and k != "nameOverride")
    assert not unset, f"ci/all-options-values.yaml leaves these at their defaults: {unset}"
    assert all_options["rbac"]["clusterWide"] and all_options["replicaCount"] > 1


@pytest.mark.parametrize("which", ["default_text", "all_options_text"])
def test_rendered_objects_validate_strictly_offline(which, request):
    text = request.getfixturevalue(which)
    kinds = {d["kind"] for d in ps.documents(text)}
    assert {"ServiceAccount", "Deployment"} <= kinds
    assert ("CustomResourceDefinition" in kinds) is (which == "default_text")
    ps.assert_valid_core_kinds(text)


def test_validation_catches_a_misspelt_field(default_text):
    """Guard against a validator that passes everything: one wrong key must fail."""
    broken = default_text.replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:")
    result = ps.kubernetes_validate(broken, ps.K8S_VERSIONS[-1])
    assert result.returncode != 0 and "readOnlyRootFileSystem" in result.stdout


def test_controller_pod_is_locked_down(default_text):
    pod = _deployment(default_text)["spec"]["template"]["spec"]
    container = _container(default_text)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(
        container["resources"]["limits"]
    )
    # a read-only root still needs somewhere to write temp files
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_probes_hit_the_health_port(default_text, all_options_text):
    for text, port in ((default_text, 8081), (all_options_text, 9443)):
        container = _container(text)
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert {"name": "health", "containerPort": port, "protocol": "TCP"} in container["ports"]
        assert f"--health-port={port}" in container["args"]


def test_operator_command_line(default_text, all_options_text):
    args = _container(default_text)["args"]
    assert _container(default_text)["command"] == ["coe-ctl"]
    assert args[0] == "operator"
    assert "--namespace=$(POD_NAMESPACE)" in args and "--all-namespaces" not in args
    assert "--leader-elect" not in args
    assert _deployment(default_text)["spec"]["strategy"] == {"type": "Recreate"}
    args = _container(all_options_text)["args"]
    assert "--all-namespaces" in args and not any(a.startswith("--namespace") for a in args)
    assert "--leader-elect" in args and "--log-level=debug" in args
    assert _deployment(all_options_text)["spec"]["strategy"]["type"] == "RollingUpdate"


@pytest.mark.parametrize(
    ("settings", "leader_elect"),
    [
        ((), False),
        (("replicaCount=2",), True),
        (("leaderElection.enabled=true",), True),
        (("replicaCount=3",), True),
    ],
)
def test_leader_election_follows_replicas(helm, settings, leader_elect):
    text = helm_template(release="coe", namespace="ml", set_values=settings)
    assert ("--leader-elect" in _container(text)["args"]) is leader_elect


def test_runtime_image_and_s3_settings_reach_the_controller(all_options_text):
    container = _container(all_options_text)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["COE_RUNTIME_IMAGE"] == "registry.example.com/ml/coe-runtime:0.1.0-rc1-cu130"
    assert env["AWS_ENDPOINT_URL"] == "http://minio.storage.svc.cluster.local:9000"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["COE_S3_SECRET"] == "minio-coe"
    assert container["envFrom"] == [{"secretRef": {"name": "minio-coe", "optional": True}}]
    assert env["HTTPS_PROXY"] == "http://proxy.example.com:3128"  # extraEnv
    assert container["image"] == "registry.example.com/ml/coe-controller:0.1.0-rc1"


def test_no_secret_values_anywhere(all_options_text, default_text):
    """By default the chart names a credentials Secret but never carries or renders secret material."""
    for text in (default_text, all_options_text):
        docs = ps.documents(text)
        assert not ps.by_kind(docs, "Secret")
        env_names = {e["name"] for e in _container(text)["env"]}
        assert not env_names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    s3 = yaml.safe_load((ps.CHART / "values.yaml").read_text())["s3"]
    assert s3["create"] is False and s3["accessKeyId"] == s3["secretAccessKey"] == ""


def test_without_credentials_secret_there_is_no_env_from(helm):
    text = helm_template(release="coe", namespace="ml", set_values=("s3.existingSecret=",))
    assert "envFrom" not in _container(text)
    env = {e["name"]: e.get("value") for e in _container(text)["env"]}
    assert env["COE_S3_SECRET"] == ""


def _rbac_objects(text: str) -> dict[str, dict]:
    return {
        d["kind"]: d for d in ps.documents(text) if d["apiVersion"].startswith("rbac.authorization.k8s.io/")
    }


def test_rbac_is_exactly_the_controllers_declared_rules(default_text, all_options_text):
    from coe_controller import rbac

    declared = ps.rule_grants(rbac.rules())
    assert declared, "coe_controller.rbac.rules() is empty"
    namespaced = _rbac_objects(default_text)
    assert set(namespaced) == {"Role", "RoleBinding"}
    assert namespaced["Role"]["metadata"]["namespace"] == "ml"
    assert ps.rule_grants(namespaced["Role"]["rules"]) == declared
    cluster = _rbac_objects(all_options_text)
    assert set(cluster) == {"ClusterRole", "ClusterRoleBinding"}
    both = ps.rule_grants(rbac.rules([(r.group, r.plural) for r in _renderers().values()]))
    assert ps.rule_grants(cluster["ClusterRole"]["rules"]) == both  # all-options: jobApis both
    for binding, role in (
        (namespaced["RoleBinding"], "Role"),
        (cluster["ClusterRoleBinding"], "ClusterRole"),
    ):
        assert binding["roleRef"]["kind"] == role
        (subject,) = binding["subjects"]
        assert subject["kind"] == "ServiceAccount" and subject["namespace"] == "ml"
    assert cluster["ClusterRoleBinding"]["subjects"][0]["name"] == "coe-controller-sa"


def _renderers() -> dict:
    from coe_controller import render

    return render.RENDERERS


@pytest.mark.parametrize("job_apis", [["TrainJob"], ["PyTorchJob"], ["TrainJob", "PyTorchJob"]])
def test_the_role_grants_only_the_chosen_job_apis_and_the_controller_watches_those(helm, job_apis):
    from coe_controller import rbac

    setting = "jobApis={" + ",".join(job_apis) + "}"
    text = helm_template(release="coe", namespace="ml", set_values=(setting,))
    role = _rbac_objects(text)["Role"]
    chosen = [(_renderers()[k].group, _renderers()[k].plural) for k in job_apis]
    assert ps.rule_grants(role["rules"]) == ps.rule_grants(rbac.rules(chosen))
    for kind, r in _renderers().items():
        granted = any(r.plural in rule["resources"] for rule in role["rules"])
        assert granted == (kind in job_apis), kind
    env = {e["name"]: e.get("value") for e in _container(text)["env"]}
    assert env["COE_JOB_APIS"] == ",".join(job_apis)


def test_rbac_can_be_left_to_the_cluster_admin(helm):
    text = helm_template(release="coe", namespace="ml", set_values=("rbac.create=false",))
    assert not _rbac_objects(text)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("replicaCount=two", "replicaCount"),
        ("s3.bucket=x", "bucket"),
        ("s3.endpoint=minio:9000", "endpoint"),
        ("rbac.clusterWide=maybe", "clusterWide"),
        ("s3.existingSecret=Not_A_Name", "existingSecret"),
        ("s3.create=true", "accessKeyId"),
        ("policy.allowedImages=notalist", "allowedImages"),
        ("jobApis={MPIJob}", "jobApis"),
    ],
)
def test_values_schema_rejects_bad_values_by_name(helm, setting, expected):
    result = run_helm("template", "coe", str(ps.CHART), "--set", setting)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert expected in result.stderr


def test_values_schema_is_valid_json_schema():
    import jsonschema

    schema = json.loads((ps.CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((ps.CHART / "values.yaml").read_text()))


def _render_notes(tmp_path: Path, *set_values: str) -> str:
    """NOTES.txt as `helm install` would print it (helm template skips NOTES, and a dry-run install
    needs a cluster): render it through a throwaway copy of the chart as a YAML string."""
    chart = tmp_path / "chart"
    shutil.copytree(ps.CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "notes-preview.yaml").write_text(
        '{{- define "notes-preview" -}}\n'
        + notes
        + '{{- end }}\nnotes: {{ include "notes-preview" . | toJson }}\n'
    )
    args = ["template", "coe", str(chart), "-n", "ml", "--show-only", "templates/notes-preview.yaml"]
    for s in set_values:
        args += ["--set", s]
    result = run_helm(*args)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["notes"]


def test_notes_tell_the_next_commands(helm, tmp_path):
    notes = _render_notes(tmp_path)
    assert "kubectl -n ml rollout status deployment/coe-coe-controller" in notes
    assert "create secret generic coe-s3" in notes
    assert "coe-ctl status meld-mistral7b -n ml" in notes
    assert "in that namespace only" in notes
    assert "policy.* values" in notes
    notes = _render_notes(tmp_path / "b", "rbac.clusterWide=true", "replicaCount=2", "s3.existingSecret=")
    assert "every namespace" in notes and "Leader election is on" in notes
    assert "create secret" not in notes
