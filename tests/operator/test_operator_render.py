"""CRD generation, PyTorchJob rendering and the declared RBAC, without a cluster."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from coe_controller import crd, rbac, render
from coe_controller.cli_cluster import render_spec

from tests.support.layout import without_fingerprint
from tests.support.shared import SHARED, need_shared

REPO = Path(__file__).resolve().parents[2]
PYTORCHJOB_CRD = SHARED / "k8s" / "kubeflow.org_pytorchjobs.yaml"
EXAMPLES = sorted((REPO / "manifests" / "examples").glob("*.yaml"))


def test_committed_crd_equals_generated():
    committed = (REPO / crd.CRD_FILE).read_text()
    assert committed == crd.crd_yaml(), (
        "manifests/crd/ is stale: run `python -m coe_controller.crd > " + crd.CRD_FILE + "`"
    )


def test_crd_schema_is_structural():
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = json.dumps(schema)
    assert "$ref" not in text and "anyOf" not in text and '"default"' not in text

    def walk(node, path):
        if isinstance(node, dict):
            if path and not any(k in node for k in ("type", "x-kubernetes-preserve-unknown-fields")):
                raise AssertionError(f"{path}: no type")
            for key in ("properties",):
                for k, v in (node.get(key) or {}).items():
                    walk(v, f"{path}.{k}")
            for key in ("items", "additionalProperties"):
                if isinstance(node.get(key), dict):
                    walk(node[key], f"{path}[]")

    walk(schema, "")
    names = crd.crd()["spec"]["names"]
    assert (names["plural"], names["kind"], names["shortNames"]) == (
        "coeexperiments",
        "CoEExperiment",
        ["coex"],
    )
    cols = [c["jsonPath"] for c in crd.crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert cols == [
        ".status.phase",
        ".status.currentStep",
        ".status.steerRound",
        ".status.bestDevWeightedF1",
        ".metadata.creationTimestamp",
    ]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_validate_against_crd(example):
    schema = crd.to_jsonschema(crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    jsonschema.Draft4Validator(schema).validate(yaml.safe_load(example.read_text()))
    bad = yaml.safe_load(example.read_text())
    bad["spec"]["steer"] = {"rounds": 0}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema).validate(bad)


def test_names_are_dns1035_and_hashed_when_long():
    long = "x" * 40
    a, b = render.job_name(long, "steer-r12-train", 1), render.job_name(long, "steer-r12-train", 2)
    assert a != b and len(a) <= 63 and len(b) <= 63
    assert render.dns1035("9Bad_Name") == "x-9bad-name"
    assert render.job_name("exp", "speaker-id", 3) == "exp-speaker-id-a3"


def test_rendered_jobs_validate_and_carry_the_cluster_settings(tmp_path):
    doc = yaml.safe_load((REPO / "manifests" / "examples" / "meld-mistral7b.yaml").read_text())
    res = doc["spec"].setdefault("resources", {})
    res.update(
        nodes=2,
        gpusPerPod=4,
        queueName="gpu-queue",
        s3CredentialsSecret="coe-s3",
        nodeSelector={"gpu": "a100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        priorityClassName="high",
        serviceAccountName="coe-runner",
        activeDeadlineSeconds=7200,
        deepspeed="zero2",
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    objs = render_spec(str(path), "ml")
    upstream = yaml.safe_load(need_shared(PYTORCHJOB_CRD).read_text())
    validator = jsonschema.Draft4Validator(
        crd.to_jsonschema(upstream["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    )
    jobs = [o for o in objs if o["kind"] == "PyTorchJob"]
    assert jobs and len(objs) == 2 * len(jobs)
    for obj in objs:
        if obj["kind"] == "ConfigMap":
            kubernetes_validate.validate(obj, "1.30", strict=True)
            json.loads(obj["data"]["step.json"])
        else:
            validator.validate(obj)
    train = next(j for j in jobs if j["metadata"]["labels"]["coe.ml/step"] == "erc")
    specs = train["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 1
    assert train["spec"]["runPolicy"]["suspend"] is True
    assert train["spec"]["runPolicy"]["activeDeadlineSeconds"] == 7200
    assert train["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    pod = specs["Master"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["name"] == "pytorch" and c["command"][:3] == ["python", "-m", "coe_runtime.launch"]
    assert c["command"][-2:] == ["--config", "/etc/coe/step/step.json"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert c["envFrom"] == [{"secretRef": {"name": "coe-s3"}}]
    assert not any("SECRET" in e["name"] for e in c["env"])
    assert pod["nodeSelector"] == {"gpu": "a100"} and pod["priorityClassName"] == "high"
    assert pod["serviceAccountName"] == "coe-runner" and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["tolerations"][0]["operator"] == "Exists"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/etc/coe/step", "/dev/shm"} <= mounts
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])
    cm = next(
        o
        for o in objs
        if o["kind"] == "ConfigMap"
        and without_fingerprint(o["metadata"]["name"]) == "meld-mistral7b-erc-config"
    )
    if "ds.json" in cm["data"]:  # a bundled DeepSpeed config is frozen into the ConfigMap and mounted
        assert "/etc/coe/deepspeed" in mounts
        assert json.loads(cm["data"]["step.json"])["distributed"]["deepspeed"] == "/etc/coe/deepspeed/ds.json"


def test_multi_condition_job_state_is_read_by_type():
    r = render.renderer()
    job = {
        "status": {
            "conditions": [
                {"type": "Succeeded", "status": "True", "reason": "Done"},
                {"type": "Running", "status": "True"},
                {"type": "Created", "status": "True"},
            ]
        }
    }
    assert r.state(job).phase == "Succeeded"
    assert (
        r.state(
            {
                "status": {
                    "conditions": [
                        {"type": "Failed", "status": "False"},
                        {"type": "Running", "status": "True"},
                    ]
                }
            }
        ).phase
        == "Running"
    )


def test_every_api_call_is_declared_and_every_declared_verb_is_used():
    # kube.py makes the calls; credentials.py reads an experiment's S3 Secret through the same checks
    sources = [REPO / "controller" / name for name in ("kube.py", "credentials.py")]
    tree = ast.Module(body=[n for p in sources for n in ast.parse(p.read_text()).body], type_ignores=[])
    consts = {
        "GROUP": rbac.GROUP,
        "PLURAL": rbac.PLURAL,
        "PYTORCHJOB_GROUP": rbac.PYTORCHJOB_GROUP,
        "PYTORCHJOB_PLURAL": rbac.PYTORCHJOB_PLURAL,
    }
    used = set()
    job_api_verbs = set()  # _require(api.group, api.plural, verb): the job API comes from the renderer
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "_require":
            if [ast.unparse(a) for a in node.args[:2]] == ["api.group", "api.plural"]:
                job_api_verbs.add(node.args[2].value)
                continue
            parts = []
            for arg in node.args:
                if isinstance(arg, ast.Constant):
                    parts.append(arg.value)
                elif isinstance(arg, ast.Name):
                    parts.append(consts[arg.id])
                elif isinstance(arg, ast.JoinedStr):  # f"{PLURAL}/status"
                    parts.append(
                        "".join(
                            consts[v.value.id] if isinstance(v, ast.FormattedValue) else v.value
                            for v in arg.values
                        )
                    )
            used.add(tuple(parts))
    job = rbac.job_permission(rbac.PYTORCHJOB_GROUP, rbac.PYTORCHJOB_PLURAL)
    declared = {
        (p.api_group, p.resource, v)
        for p in rbac.CONTROLLER_PERMISSIONS + rbac.USER_PERMISSIONS
        if not p.implied and p != job
        for v in p.verbs
    }
    assert used == declared, f"undeclared: {used - declared}; unused: {declared - used}"
    # every job API's rule grants exactly the verbs kube.py's job calls use, on the renderer's resource
    assert job_api_verbs == set(rbac.JOB_VERBS)
    for kind, r in render.RENDERERS.items():
        (rule,) = rbac.job_rules(r.group, r.plural)
        assert rule == {"apiGroups": [r.group], "resources": [r.plural], "verbs": list(rbac.JOB_VERBS)}, kind
        assert rule in rbac.rules([(r.group, r.plural)])
    rules = rbac.rules()
    assert {
        "apiGroups": ["kubeflow.org"],
        "resources": ["pytorchjobs"],
        "verbs": ["list", "watch", "create", "delete"],
    } in rules
    # Nothing else is ever updated or deleted (a job only when its pods were recreated past the limit).
    assert not any(
        "delete" in r["verbs"] or "update" in r["verbs"]
        for r in rules
        if r["resources"] not in (["leases"], ["coeexperiments/finalizers"], ["pytorchjobs"])
    )


def test_owner_references_that_block_deletion_come_with_the_finalizers_permission():
    """OwnerReferencesPermissionEnforcement (OpenShift) refuses blockOwnerDeletion: true on a child
    unless its creator may update the owner's finalizers: the rule must ship whenever render sets it."""
    (ref,) = render.Owner("exp", "ns", uid="u-1").reference()
    assert ref["controller"] is True
    finalizers = {"apiGroups": ["coe.ml"], "resources": ["coeexperiments/finalizers"], "verbs": ["update"]}
    if ref.get("blockOwnerDeletion"):
        assert finalizers in rbac.rules()
    implied = [p for p in rbac.CONTROLLER_PERMISSIONS if p.implied]
    assert [(p.resource, p.verbs) for p in implied] == [("coeexperiments/finalizers", ("update",))]


def test_docs_diagram_is_the_code_state_machine():
    from coe_controller.reconcile import StepState, state_diagram

    doc = (REPO / "docs" / "operator.md").read_text()
    assert state_diagram() in doc
    for state in StepState:
        assert f"`{state.value}`" in doc, state


def _container(objs: list[dict], step: str) -> dict:
    job = next(
        o for o in objs if o["kind"] == "PyTorchJob" and o["metadata"]["labels"]["coe.ml/step"] == step
    )
    return job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]


def _spec_file(tmp_path, name: str, **resources) -> str:
    doc = yaml.safe_load((REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
    doc["spec"]["resources"] = {"gpusPerPod": 0, **resources}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_installation_defaults_fill_in_only_what_the_experiment_leaves_out(tmp_path):
    """COE_RUNTIME_IMAGE / COE_S3_SECRET (set by the Helm chart) apply to experiments without their own."""
    defaults = render.ClusterDefaults(image="registry.example/coe-runtime@sha256:abc", s3_secret="team-s3")
    left_out = _container(render_spec(_spec_file(tmp_path, "a"), "ml", defaults), "erc")
    assert left_out["image"] == "registry.example/coe-runtime@sha256:abc"
    assert left_out["envFrom"] == [{"secretRef": {"name": "team-s3"}}]

    # Set explicitly, even to the model's own default value: the experiment's choice wins.
    own = _spec_file(tmp_path, "b", image=render.DEFAULT_IMAGE, s3CredentialsSecret="mine")
    c = _container(render_spec(own, "ml", defaults), "erc")
    assert c["image"] == render.DEFAULT_IMAGE and c["envFrom"] == [{"secretRef": {"name": "mine"}}]

    # "" means no Secret at all (pod identity), whatever the installation default.
    assert "envFrom" not in _container(
        render_spec(_spec_file(tmp_path, "c", s3CredentialsSecret=""), "ml", defaults), "erc"
    )

    # No installation defaults: the model default image and no Secret, as before.
    plain = _container(render_spec(_spec_file(tmp_path, "d"), "ml"), "erc")
    assert plain["image"] == render.DEFAULT_IMAGE and "envFrom" not in plain


def test_operator_reads_the_helm_charts_environment_variables():
    from coe_controller.operator import defaults_from_env

    chart = (REPO / "charts" / "coe-controller" / "templates" / "deployment.yaml").read_text()
    assert "COE_RUNTIME_IMAGE" in chart and "COE_S3_SECRET" in chart
    d = defaults_from_env({"COE_RUNTIME_IMAGE": "img:1", "COE_S3_SECRET": "s3"})
    assert (d.image, d.s3_secret) == ("img:1", "s3")
    assert defaults_from_env({"COE_S3_SECRET": ""}) == render.ClusterDefaults()


def test_every_derived_name_fits_63_characters_for_the_longest_accepted_names():
    """Issue 16: the operator names pods and Services <job>-master-0 / <job>-worker-N (pkg/core
    GenGeneralName); a 40-character experiment with 2 nodes and 10 STEeR rounds used to give 67-68."""
    import re

    from coe_controller.planner import plan
    from coe_controller.spec import parse_spec

    dns1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    for name in ("e" * 40, ("x" + "-long-experiment-name" * 3)[:40].rstrip("-")):  # names: at most 40
        spec = parse_spec(
            {
                "apiVersion": "coe.ml/v1alpha1",
                "kind": "CoEExperiment",
                "metadata": {"name": name},
                "spec": {
                    "steer": {"rounds": 10},
                    "resources": {"nodes": 2, "gpusPerPod": 1},
                    "store": "s3://b/r",
                },
            }
        )
        rounds = {n: {"continue": True} for n in range(1, 11)}
        for step in plan(spec, rounds):
            cm, job = render.renderer().render(
                render.Owner(name, "ns", "uid"), step, 99, render.JobSettings()
            )
            derived = [cm["metadata"]["name"], job["metadata"]["name"]]
            derived += [f"{job['metadata']['name']}-master-0", f"{job['metadata']['name']}-worker-999"]
            for d in derived:
                assert len(d) <= 63 and dns1035.match(d), d
