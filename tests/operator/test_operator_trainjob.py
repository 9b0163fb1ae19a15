"""Kubeflow Trainer v2: ``resources.jobApi: TrainJob`` renders one TrainJob per step attempt that the real
v2 CRD (../shared/k8s/trainer-v2/, Apache-2.0) accepts with no unknown field, carrying the same frozen
ConfigMap, env, Secret, mounts and coe.ml/* labels as the PyTorchJob of the same step."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest
import yaml
from coe_controller import crd, rbac, render
from coe_controller.cli_cluster import render_spec
from coe_controller.planner import plan
from coe_controller.spec import parse_spec

from coe_runtime.errors import ConfigError
from tests.operator.test_operator_render import REPO
from tests.support.apiserver_crd import unknown_fields
from tests.support.shared import SHARED, need_shared

TRAINJOB_CRD = SHARED / "k8s" / "trainer-v2" / "trainer.kubeflow.org_trainjobs.yaml"
RUNTIME = SHARED / "k8s" / "trainer-v2" / "torch-distributed.yaml"


def trainjob_schema() -> dict:
    doc = yaml.safe_load(need_shared(TRAINJOB_CRD).read_text())
    (version,) = doc["spec"]["versions"]
    assert (doc["spec"]["group"], version["name"]) == (render.TRAINJOB_GROUP, render.TRAINJOB_VERSION)
    assert doc["spec"]["names"]["plural"] == render.TRAINJOB_PLURAL
    return version["schema"]["openAPIV3Schema"]


def check_trainjob(job: dict, schema: dict | None = None) -> None:
    """The real CRD's schema, strict: nothing the apiserver would prune, and its CEL name rules."""
    schema = schema or trainjob_schema()
    jsonschema.Draft4Validator(crd.to_jsonschema(schema)).validate(job)
    assert unknown_fields(job, schema) == [], unknown_fields(job, schema)
    name = job["metadata"]["name"]
    # x-kubernetes-validations at the root: an RFC 1035 label of at most 63 characters
    assert len(name) <= 63 and render.dns1035(name) == name, name
    # ... and numProcPerNode >= 1 (CEL on spec.trainer.numProcPerNode)
    assert job["spec"]["trainer"]["numProcPerNode"] >= 1


def quickstart(**resources) -> dict:
    doc = yaml.safe_load((REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
    doc["metadata"] = {"name": "exp", "namespace": "ns"}
    doc["spec"]["resources"].update(resources)
    return doc


def rendered(doc: dict, uid: str | None = "u-1") -> list[dict]:
    spec = parse_spec(doc)
    r = render.renderer(spec.spec.resources.job_api)
    owner = render.Owner(spec.name, "ns", uid)
    return [o for s in plan(spec) for o in r.render(owner, s, 1, render.settings_from(s.resources))]


VARIANTS = {
    "quickstart": {},
    "multi-node deepspeed gpus": {
        "nodes": 2,
        "nprocPerNode": 4,
        "gpusPerPod": 4,
        "deepspeed": "zero2",
        "cpu": "8",
        "memory": "64Gi",
        "extraLimits": {"rdma/hca": "1"},
    },
    "kueue, deadline, pod customisation": {
        "queueName": "team-a",
        "activeDeadlineSeconds": 3600,
        "serviceAccountName": "trainer",
        "nodeSelector": {"gpu": "h100"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "env": [{"name": "NCCL_DEBUG", "value": "INFO"}],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}],
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
        "podLabels": {"team": "nlp"},
        "podAnnotations": {"sidecar.istio.io/inject": "false"},
    },
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_rendered_trainjob_validates_against_the_real_v2_crd_with_no_unknown_field(variant):
    schema = trainjob_schema()
    objs = rendered(quickstart(jobApi="TrainJob", s3CredentialsSecret="coe-s3", **VARIANTS[variant]))
    jobs = [o for o in objs if o["kind"] == "TrainJob"]
    assert jobs and len(jobs) == len([o for o in objs if o["kind"] == "ConfigMap"])
    for job in jobs:
        assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
        check_trainjob(job, schema)
    for cm in (o for o in objs if o["kind"] == "ConfigMap"):
        kubernetes_validate.validate(copy.deepcopy(cm), "1.30", strict=True)


def _patched_pod(job: dict) -> dict:
    (patch,) = job["spec"]["runtimePatches"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == render.TRAINJOB_REPLICATED_JOB
    return rjob["template"]["spec"]["template"]


def test_a_trainjob_carries_what_the_pytorchjob_of_the_same_step_carries():
    variant = VARIANTS["kueue, deadline, pod customisation"]
    v1 = rendered(quickstart(s3CredentialsSecret="coe-s3", nodes=2, **variant))
    v2 = rendered(quickstart(jobApi="TrainJob", s3CredentialsSecret="coe-s3", nodes=2, **variant))
    assert [o["kind"] for o in v1][::2] == ["ConfigMap"] * (len(v1) // 2)
    for (cm1, pj), (cm2, tj) in zip(
        zip(v1[::2], v1[1::2], strict=True), zip(v2[::2], v2[1::2], strict=True), strict=True
    ):
        assert cm1 == cm2  # the same frozen step config, under the same name
        assert tj["metadata"] == pj["metadata"]  # name, coe.ml/* labels (fingerprint, attempt), owner
        assert tj["metadata"]["labels"][render.LABEL_KUEUE_QUEUE] == "team-a"
        assert tj["spec"]["suspend"] is True and pj["spec"]["runPolicy"]["suspend"] is True
        assert tj["spec"]["activeDeadlineSeconds"] == 3600
        assert tj["spec"]["runtimeRef"] == {
            "apiGroup": "trainer.kubeflow.org",
            "kind": "ClusterTrainingRuntime",
            "name": "torch-distributed",
        }
        master = pj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
        (c1,) = master["spec"]["containers"]
        trainer = tj["spec"]["trainer"]
        assert trainer["image"] == c1["image"] and trainer["command"] == c1["command"]
        workers = pj["spec"]["pytorchReplicaSpecs"].get("Worker", {}).get("replicas", 0)
        assert trainer["numNodes"] == 1 + workers
        assert str(trainer["numProcPerNode"]) == pj["spec"]["nprocPerNode"]
        assert trainer["resourcesPerNode"] == c1["resources"]
        # env: the same, plus the S3 Secret key by key (a TrainJob has no envFrom)
        assert trainer["env"][: len(c1["env"])] == c1["env"]
        assert c1["envFrom"] == [{"secretRef": {"name": "coe-s3"}}]
        s3 = trainer["env"][len(c1["env"]) :]
        assert {e["name"] for e in s3} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}
        assert all(e["valueFrom"]["secretKeyRef"]["name"] == "coe-s3" for e in s3)
        # the JobSet's labels come from the runtime patch: the TrainJob's own
        (patch,) = tj["spec"]["runtimePatches"]
        assert patch["trainingRuntimeSpec"]["template"]["metadata"] == {"labels": tj["metadata"]["labels"]}
        pod = _patched_pod(tj)
        assert pod["metadata"] == master["metadata"]  # coe.ml/job, attempt, fingerprint, podLabels
        assert pod["metadata"]["labels"][render.LABEL_JOB] == tj["metadata"]["name"]
        (c2,) = pod["spec"]["containers"]
        assert c2 == {
            "name": "node",
            "volumeMounts": c1["volumeMounts"],
            "securityContext": c1["securityContext"],
        }
        for key in ("volumes", "nodeSelector", "tolerations", "serviceAccountName", "securityContext"):
            assert pod["spec"][key] == master["spec"][key], key


def test_the_runtime_names_the_replicated_job_and_container_a_trainjob_patches():
    text = need_shared(RUNTIME).read_text()
    # the chart template of torch-distributed: drop the Helm lines to read it as YAML
    doc = yaml.safe_load("\n".join(line for line in text.splitlines() if "{{" not in line))
    assert doc["kind"] == "ClusterTrainingRuntime" and doc["metadata"]["name"] == "torch-distributed"
    (rjob,) = doc["spec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == render.TRAINJOB_REPLICATED_JOB
    (container,) = rjob["template"]["spec"]["template"]["spec"]["containers"]
    assert container["name"] == render.TRAINJOB_CONTAINER == render.renderer("TrainJob").container


def test_the_training_runtime_is_configurable_and_defaults_to_torch_distributed():
    objs = rendered(quickstart(jobApi="TrainJob", trainingRuntime="coe-torch"))
    assert {o["spec"]["runtimeRef"]["name"] for o in objs if o["kind"] == "TrainJob"} == {"coe-torch"}
    assert parse_spec(quickstart()).spec.resources.job_api == "PyTorchJob"


@pytest.mark.parametrize(
    "resources",
    [
        {"priorityClassName": "high"},
        {"runtimeClassName": "nvidia"},
        {"envFrom": [{"configMapRef": {"name": "nccl"}}]},
        {"overrides": {"erc": {"priorityClassName": "high"}}},
    ],
)
def test_what_a_trainjob_cannot_carry_is_refused_in_the_spec(resources):
    with pytest.raises(ConfigError, match="TrainJob"):
        parse_spec(quickstart(jobApi="TrainJob", **resources))
    parse_spec(quickstart(**resources))  # a PyTorchJob carries it


def test_coe_ctl_render_prints_trainjobs_for_a_v2_spec(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(quickstart(jobApi="TrainJob")))
    objs = render_spec(str(path), "ns")
    kinds = [o["kind"] for o in objs]
    assert set(kinds) == {"ConfigMap", "TrainJob"} and kinds.count("TrainJob") == len(
        plan(parse_spec(quickstart()))
    )
    for job in (o for o in objs if o["kind"] == "TrainJob"):
        check_trainjob(job)


def _cond(type_: str, status: str = "True", reason: str = "R") -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": "", "lastTransitionTime": "t"}


def test_trainjob_state_reads_complete_failed_suspended_by_type_never_by_position():
    st = render.renderer("TrainJob").state
    assert st({}).phase == "Pending"
    assert st({"status": {"conditions": [_cond("Suspended")]}}).phase == "Suspended"
    assert st({"status": {"conditions": [_cond("Suspended", "False", "Resumed")]}}).phase == "Pending"
    running = {
        "jobsStatus": [{"name": "node", "active": 1, "ready": 1, "succeeded": 0, "failed": 0, "suspended": 0}]
    }
    assert st({"status": running}).phase == "Running"
    done = st(
        {
            "status": {
                "conditions": [_cond("Suspended", "False"), _cond("Complete", reason="AllJobsCompleted")]
            }
        }
    )
    assert (done.phase, done.reason, done.finished, done.finish_time) == (
        "Succeeded",
        "AllJobsCompleted",
        True,
        "t",
    )
    failed = st(
        {"status": {"conditions": [_cond("Failed", reason="FailedJobs"), _cond("Suspended", "False")]}}
    )
    assert (failed.phase, failed.reason) == ("Failed", "FailedJobs")


def test_each_job_api_brings_its_own_api_rule_and_the_retry_keeps_the_frozen_pod():
    tj = render.renderer("TrainJob")
    assert rbac.job_rules(tj.group, tj.plural) == [
        {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": list(rbac.JOB_VERBS)}
    ]
    assert rbac.rules() == rbac.rules([(render.renderer().group, render.renderer().plural)])
    both = rbac.rules([(r.group, r.plural) for r in render.RENDERERS.values()])
    assert len(both) == len(rbac.rules()) + 1
    objs = rendered(quickstart(jobApi="TrainJob"))
    first = {**objs[1], "status": {"conditions": [_cond("Failed")]}}
    again = tj.retry(first, 2, "exp-x-a2")
    check_trainjob(again)
    assert "status" not in again and again["metadata"]["labels"][render.LABEL_ATTEMPT] == "2"
    labels = _patched_pod(again)["metadata"]["labels"]
    assert (labels[render.LABEL_ATTEMPT], labels[render.LABEL_JOB]) == ("2", "exp-x-a2")
    (patch,) = again["spec"]["runtimePatches"]
    assert patch["trainingRuntimeSpec"]["template"]["metadata"]["labels"][render.LABEL_ATTEMPT] == "2"
    assert again["spec"]["trainer"] == first["spec"]["trainer"]


def test_the_coe_torch_runtime_validates_against_the_real_clustertrainingruntime_crd():
    doc = yaml.safe_load(
        need_shared(
            SHARED / "k8s" / "trainer-v2" / "trainer.kubeflow.org_clustertrainingruntimes.yaml"
        ).read_text()
    )
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    runtime = yaml.safe_load((REPO / "manifests" / "trainer-v2" / "coe-torch.yaml").read_text())
    jsonschema.Draft4Validator(crd.to_jsonschema(schema)).validate(runtime)
    assert unknown_fields(runtime, schema) == []
    (rjob,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == render.TRAINJOB_REPLICATED_JOB
    job = rjob["template"]["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it; pods stay
    (fail, _ignore) = job["podFailurePolicy"]["rules"]
    assert fail["onExitCodes"]["values"] == list(range(1, 128))  # the permanent codes (coe_runtime.errors)
    assert fail["onExitCodes"]["containerName"] == render.TRAINJOB_CONTAINER
