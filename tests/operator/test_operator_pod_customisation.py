"""Pod customisation (spec.resources env/envFrom/volumes/mounts/labels/annotations/affinity/extraLimits/
runtimeClassName, globally and per step), the fields the controller owns, and pod hygiene."""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest
import yaml
from coe_controller import crd, owned, render
from coe_controller.cli_cluster import render_spec
from coe_controller.spec import parse_spec

from coe_runtime.errors import ConfigError
from tests.operator.test_operator_render import PYTORCHJOB_CRD, REPO
from tests.support.shared import need_shared

CUSTOM = {
    "gpusPerPod": 0,
    "env": [
        {"name": "NCCL_DEBUG", "value": "INFO"},
        {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "key"}}},
        {"name": "SITE", "valueFrom": {"configMapKeyRef": {"name": "site", "key": "name", "optional": True}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ],
    "envFrom": [{"configMapRef": {"name": "nccl-tuning"}}, {"secretRef": {"name": "extra"}, "prefix": "X_"}],
    "volumes": [
        {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
        {"name": "cache", "hostPath": {"path": "/mnt/coe-cache", "type": "DirectoryOrCreate"}},
    ],
    "volumeMounts": [
        {"name": "models", "mountPath": "/models", "readOnly": True},
        {"name": "cache", "mountPath": "/var/coe/work/cache"},
    ],
    "podLabels": {"team": "nlp"},
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    },
    "extraLimits": {"rdma/hca": 1},
    "runtimeClassName": "nvidia",
    "s3CredentialsSecret": "coe-s3",
    "overrides": {
        "erc": {
            "env": [{"name": "NCCL_DEBUG", "value": "WARN"}],
            "podLabels": {"stage": "erc"},
            "extraLimits": {"example.com/fpga": "2"},
            "runtimeClassName": "kata",
            "priorityClassName": "high",
        }
    },
}


def _spec_doc(**resources) -> dict:
    doc = yaml.safe_load((REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
    doc["spec"]["resources"] = resources
    return doc


def _render(tmp_path, **resources) -> list[dict]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec_doc(**resources)))
    return render_spec(str(path), "ml")


def _pod(objs: list[dict], step: str) -> dict:
    job = next(
        o for o in objs if o["kind"] == "PyTorchJob" and o["metadata"]["labels"]["coe.ml/step"] == step
    )
    return job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]


def _validate_all(objs: list[dict]) -> None:
    """Every job against the real PyTorchJob CRD, and every pod template as a core Pod (strict)."""
    upstream = yaml.safe_load(need_shared(PYTORCHJOB_CRD).read_text())
    validator = jsonschema.Draft4Validator(
        crd.to_jsonschema(upstream["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    )
    for obj in objs:
        if obj["kind"] == "ConfigMap":
            kubernetes_validate.validate(obj, "1.30", strict=True)
            continue
        validator.validate(obj)
        for replica in obj["spec"]["pytorchReplicaSpecs"].values():
            t = replica["template"]
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "ml", **t["metadata"]},
                "spec": t["spec"],
            }
            kubernetes_validate.validate(pod, "1.30", strict=True)


def test_customisation_is_rendered_globally_and_per_step(tmp_path):
    objs = _render(tmp_path, **CUSTOM)
    _validate_all(objs)
    prepare, erc = _pod(objs, "prepare"), _pod(objs, "erc")
    c = prepare["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["NCCL_DEBUG"]["value"] == "INFO"
    assert env["WANDB_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "wandb", "key": "key"}}
    assert env["SITE"]["valueFrom"]["configMapKeyRef"]["optional"] is True
    assert env["NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    # the S3 Secret last: a later envFrom source wins, so no ConfigMap or Secret of the spec replaces AWS_*
    assert c["envFrom"] == [
        {"configMapRef": {"name": "nccl-tuning"}},
        {"prefix": "X_", "secretRef": {"name": "extra"}},
        {"secretRef": {"name": "coe-s3"}},
    ]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in c["volumeMounts"]
    assert {v["name"] for v in prepare["spec"]["volumes"]} >= {
        "models",
        "cache",
        "work",
        "tmp",
        "step-config",
    }
    assert c["resources"]["limits"]["rdma/hca"] == "1"
    assert prepare["metadata"]["labels"]["team"] == "nlp" and "coe.ml/step" in prepare["metadata"]["labels"]
    assert prepare["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert prepare["spec"]["affinity"] == CUSTOM["affinity"]
    assert prepare["spec"]["runtimeClassName"] == "nvidia" and "priorityClassName" not in prepare["spec"]

    ce = erc["spec"]["containers"][0]
    erc_env = [e for e in ce["env"] if e["name"] == "NCCL_DEBUG"]
    assert erc_env == [{"name": "NCCL_DEBUG", "value": "WARN"}]  # merged by name: the step wins
    assert {"WANDB_API_KEY", "SITE"} <= {e["name"] for e in ce["env"]}
    assert ce["resources"]["limits"] == {"rdma/hca": "1", "example.com/fpga": "2"}
    assert erc["metadata"]["labels"]["team"] == "nlp" and erc["metadata"]["labels"]["stage"] == "erc"
    assert erc["spec"]["runtimeClassName"] == "kata" and erc["spec"]["priorityClassName"] == "high"


def test_pod_hygiene_read_only_root_requests_sized_emptydirs_ttl_and_clean_pod_policy(tmp_path):
    objs = _render(tmp_path, gpusPerPod=0, nodes=2)
    _validate_all(objs)
    for job in (o for o in objs if o["kind"] == "PyTorchJob"):
        run = job["spec"]["runPolicy"]
        assert run["cleanPodPolicy"] == "Running"  # a failed multi-node job's running pods free their GPUs
        assert run["ttlSecondsAfterFinished"] == 86400
        pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}  # the quick start has requests too
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["work"]["emptyDir"]["sizeLimit"] == "100Gi"
        assert volumes["tmp"]["emptyDir"]["sizeLimit"]
        # Everything the runtime writes is on a writable mount: HOME, TMPDIR, HF_HOME and the cache are
        # under the work dir; the image keeps torch extensions and triton caches in /tmp.
        writable = [m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")]
        env = {e["name"]: e.get("value") for e in c["env"]}
        for var in ("HOME", "TMPDIR", "HF_HOME", "COE_CACHE_DIR"):
            assert any(env[var] == w or env[var].startswith(w + "/") for w in writable), var
        assert render.TMP_DIR in writable
    dockerfile = (REPO / "images" / "runtime" / "Dockerfile").read_text()
    for var in ("TORCH_EXTENSIONS_DIR=/tmp/", "TRITON_CACHE_DIR=/tmp/"):
        assert var in dockerfile

    own = _render(
        tmp_path, gpusPerPod=0, cpu="4", memory="16Gi", workDirSize="300Gi", ttlSecondsAfterFinished=None
    )
    job = next(o for o in own if o["kind"] == "PyTorchJob")
    assert "ttlSecondsAfterFinished" not in job["spec"]["runPolicy"]
    c = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert c["resources"] == {"limits": {"memory": "16Gi"}, "requests": {"cpu": "4", "memory": "16Gi"}}


@pytest.mark.parametrize(
    ("resources", "owned_field", "owner"),
    [
        ({"env": [{"name": "MASTER_ADDR", "value": "x"}]}, "MASTER_ADDR", "training operator"),
        ({"env": [{"name": "WORLD_SIZE", "value": "8"}]}, "WORLD_SIZE", "training operator"),
        ({"env": [{"name": "PET_NNODES", "value": "2"}]}, "PET_NNODES", "training operator"),
        ({"env": [{"name": "COE_STEP", "value": "x"}]}, "COE_STEP", "coe controller"),
        ({"env": [{"name": "HF_HUB_OFFLINE", "value": "0"}]}, "HF_HUB_OFFLINE", "coe controller"),
        ({"env": [{"name": "AWS_ACCESS_KEY_ID", "value": "k"}]}, "AWS_ACCESS_KEY_ID", "S3 Secret"),
        ({"envFrom": [{"secretRef": {"name": "s"}, "prefix": "AWS_"}]}, "AWS_", "S3 Secret"),
        ({"volumes": [{"name": "work", "emptyDir": {}}]}, "work", "work dir"),
        (
            {
                "volumes": [{"name": "v", "emptyDir": {}}],
                "volumeMounts": [{"name": "v", "mountPath": "/etc/coe/step"}],
            },
            "/etc/coe/step",
            "step config",
        ),
        (
            {
                "volumes": [{"name": "v", "emptyDir": {}}],
                "volumeMounts": [{"name": "v", "mountPath": "/dev/shm"}],
            },
            "/dev/shm",
            "shmSize",
        ),
        (
            {
                "volumes": [{"name": "v", "emptyDir": {}}],
                "volumeMounts": [{"name": "v", "mountPath": "/var/coe/work"}],
            },
            "/var/coe/work",
            "work dir",
        ),
        (
            {
                "volumes": [{"name": "v", "emptyDir": {}}],
                "volumeMounts": [{"name": "v", "mountPath": "/etc/coe/deepspeed/x"}],
            },
            "/etc/coe/deepspeed/x",
            "DeepSpeed",
        ),
        ({"podLabels": {"coe.ml/step": "x"}}, "coe.ml/step", "coe controller"),
        (
            {"podLabels": {"training.kubeflow.org/job-name": "x"}},
            "training.kubeflow.org/job-name",
            "training operator",
        ),
        ({"podAnnotations": {"coe.ml/x": "y"}}, "coe.ml/x", "coe controller"),
        ({"extraLimits": {"nvidia.com/gpu": 2}}, "nvidia.com/gpu", "gpusPerPod"),
        ({"overrides": {"erc": {"env": [{"name": "RANK", "value": "0"}]}}}, "RANK", "training operator"),
    ],
)
def test_owned_fields_are_refused_with_who_owns_them(resources, owned_field, owner):
    with pytest.raises(ConfigError) as e:
        parse_spec(_spec_doc(**resources))
    msg = str(e.value)
    assert repr(owned_field) in msg and owner in msg and "cannot be set or overridden" in msg, msg
    if "overrides" in resources:
        assert "spec.resources.overrides.erc" in msg


@pytest.mark.parametrize(
    ("resources", "needle"),
    [
        ({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, "names volume 'nope'"),
        ({"volumes": [{"name": "a"}]}, "exactly one source"),
        ({"volumes": [{"name": "Bad_Name", "emptyDir": {}}]}, "DNS-1123"),
        ({"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}, "not both"),
        ({"env": [{"name": "A", "valueFrom": {}}]}, "exactly one of secretKeyRef"),
        ({"envFrom": [{"prefix": "P"}]}, "exactly one of secretRef"),
        ({"affinity": {"nodeAfinity": {}}}, "nodeAfinity"),
        ({"extraLimits": {"rdma/hca": ""}}, "quantity"),
    ],
)
def test_malformed_customisation_is_refused_clearly(resources, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_spec(_spec_doc(**resources))


def test_every_name_the_renderer_sets_is_owned(tmp_path):
    """A variable, volume, mount or label the renderer emits must be refused in a spec, or an experiment
    could override it."""
    doc = _spec_doc(gpusPerPod=1, s3CredentialsSecret="coe-s3", queueName="q", deepspeed="zero2", nodes=2)
    doc["spec"]["baseModel"] = {"nameOrPath": "org/model", "hfTokenSecret": {"name": "hf"}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    objs = render_spec(str(path), "ml")
    seen_ds = False
    for job in (o for o in objs if o["kind"] == "PyTorchJob"):
        t = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
        c = t["spec"]["containers"][0]
        for e in c["env"]:
            assert owned.env_owner(e["name"]), e["name"]
        for v in t["spec"]["volumes"]:
            assert owned.volume_owner(v["name"]), v["name"]
            seen_ds |= v["name"] == "deepspeed-config"
        for m in c["volumeMounts"]:
            assert owned.mount_owner(m["mountPath"]), m["mountPath"]
        for k in t["metadata"]["labels"]:
            assert owned.label_owner(k), k
        for k in job["metadata"]["labels"]:
            assert owned.label_owner(k), k
        for k in c["resources"].get("limits", {}):
            assert owned.limit_owner(k), k
    assert seen_ds
    # what the training operator puts on its pods
    for k in ("training.kubeflow.org/job-name", "training.kubeflow.org/replica-type"):
        assert owned.label_owner(k)
    for k in (
        "MASTER_ADDR",
        "MASTER_PORT",
        "WORLD_SIZE",
        "RANK",
        "PET_NNODES",
        "PET_NODE_RANK",
        "PET_MASTER_ADDR",
    ):
        assert owned.env_owner(k)
