"""The controller as a real process against the kmock emulator with each job API: ``jobApi: PyTorchJob``
(harness: the v1.9 training operator) and ``jobApi: TrainJob`` (harness: Kubeflow Trainer v2 + JobSet,
tests/operator/harness_v2.py). The same experiment must end the same way under both: the same steps and
the same artifacts; retries and permanent failures as the exit-code contract says. Every TrainJob stored
is validated against the real v2 CRD with no unknown field."""

from __future__ import annotations

import time

import pytest
import yaml
from coe_controller.spec import parse_spec

from coe_runtime.store import get_store
from tests.operator.harness import TrainingOperator
from tests.operator.harness_v2 import TrainerV2
from tests.operator.test_operator_e2e import (
    NS,
    REPO,
    experiment,
    experiment_doc,
    phase,
    submit,
    validate_writes,
)
from tests.operator.test_operator_trainjob import check_trainjob, trainjob_schema
from tests.support.layout import without_fingerprint

pytestmark = pytest.mark.k8s

PLURAL = {"PyTorchJob": "pytorchjobs", "TrainJob": "trainjobs"}
COE_TORCH = yaml.safe_load((REPO / "manifests" / "trainer-v2" / "coe-torch.yaml").read_text())


def harness_for(job_api: str, api, tmp):
    if job_api == "PyTorchJob":
        return TrainingOperator(api, NS, tmp / "pods-v1", fake=True)
    h = TrainerV2(api, NS, tmp / "pods-v2", fake=True)
    h.runtimes["coe-torch"] = COE_TORCH
    return h


@pytest.fixture()
def cluster(api, tmp_path, emulated_cluster):
    harnesses = {k: harness_for(k, api, tmp_path) for k in PLURAL}
    # both job APIs watched, as the chart sets it for jobApis: [PyTorchJob, TrainJob]
    controller = emulated_cluster(harnesses.values(), env={"COE_JOB_APIS": "PyTorchJob,TrainJob"})
    return api, harnesses, controller, tmp_path


def validate_all(api) -> None:
    validate_writes(api)
    schema = trainjob_schema()
    for job in api.history("trainjobs"):
        check_trainjob(job, schema)


def drive(api, harnesses, names, timeout: float = 360) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(phase(api, n) in ("Succeeded", "Failed") for n in names):
            return
        for h in harnesses.values():
            h.step_all()
        time.sleep(0.2)
    raise AssertionError({n: experiment(api, n).get("status") for n in names})


def doc_for(job_api: str, name: str, tmp, stages=None, **resources) -> dict:
    doc = experiment_doc(stages, f"file://{tmp}/store-{name}", name=name)
    doc["spec"]["resources"].update(jobApi=job_api, **resources)
    return doc


def manifest_files(doc: dict) -> dict[str, list[str]]:
    from coe_controller.planner import plan

    spec = parse_spec(doc)
    store = get_store(spec.spec.store)
    out = {}
    for s in plan(spec):
        manifest = store.manifest(s.output)
        assert manifest and manifest["files"], s.name
        out[s.name] = sorted(f["path"] for f in manifest["files"])
    return out


def test_the_quickstart_runs_to_succeeded_with_either_job_api_with_the_same_steps_and_artifacts(cluster):
    api, harnesses, controller, tmp = cluster
    docs = {k: doc_for(k, f"qs-{k.lower()}", tmp) for k in PLURAL}
    for d in docs.values():
        submit(api, d)
    controller.start()
    drive(api, harnesses, [d["metadata"]["name"] for d in docs.values()])
    statuses = {k: experiment(api, d["metadata"]["name"])["status"] for k, d in docs.items()}
    assert {k: s["phase"] for k, s in statuses.items()} == {
        "PyTorchJob": "Succeeded",
        "TrainJob": "Succeeded",
    }
    steps = {k: [(x["name"], x["attempts"]) for x in s["steps"]] for k, s in statuses.items()}
    assert steps["TrainJob"] == steps["PyTorchJob"] and len(steps["TrainJob"]) >= 5, steps
    files = {k: manifest_files(d) for k, d in docs.items()}
    assert files["TrainJob"] == files["PyTorchJob"]
    # one TrainJob per step, nothing of the other API for the v2 experiment
    v2_jobs = api.created("trainjobs")
    assert len(v2_jobs) == len(steps["TrainJob"]) and all(j.startswith("qs-trainjob-") for j in v2_jobs)
    assert not [j for j in api.created("pytorchjobs") if j.startswith("qs-trainjob-")]
    # what v2 injects, and the JobSet pod naming behind PET_MASTER_ADDR
    h = harnesses["TrainJob"]
    for job in v2_jobs:
        assert h.injected[job]["PET_MASTER_ADDR"] == f"{job}-node-0-0.{job}"
        assert h.injected[job]["PET_MASTER_PORT"] == "29500" and h.injected[job]["PET_NNODES"] == "1"
    pods = api.history("pods")
    v2_pods = {p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith("qs-trainjob-")}
    assert v2_pods and all("-node-0-0-" in p for p in v2_pods)
    assert all(len(p) <= 63 for p in v2_pods)
    validate_all(api)


@pytest.mark.parametrize("job_api", list(PLURAL))
def test_a_retryable_failure_is_retried_as_a_new_attempt(cluster, job_api):
    api, harnesses, controller, tmp = cluster
    harnesses[job_api].fail_attempts = {"erc": 1}
    # v1: backoffLimit 0 fails the job on a retryable exit (else the pod is recreated in the same job);
    # v2: the runtime's Job backoffLimit bounds restarts, then the TrainJob is Failed.
    submit(api, doc_for(job_api, "exp", tmp, ["erc"], backoffLimit=0))
    controller.start()
    drive(api, harnesses, ["exp"])
    status = experiment(api)["status"]
    assert status["phase"] == "Succeeded", status
    erc = next(s for s in status["steps"] if s["name"] == "erc")
    assert erc["attempts"] == 2 and without_fingerprint(erc["jobName"]) == "exp-erc-a2"
    created = [without_fingerprint(j) for j in api.created(PLURAL[job_api]) if "-erc-" in j]
    assert created == ["exp-erc-a1", "exp-erc-a2"]
    validate_all(api)


@pytest.mark.parametrize("job_api", list(PLURAL))
def test_a_step_that_always_fails_retryably_ends_failed_after_max_retries(cluster, job_api):
    api, harnesses, controller, tmp = cluster
    harnesses[job_api].fail_attempts = {"erc": 99}
    doc = doc_for(job_api, "bad", tmp, ["erc"], backoffLimit=0)
    doc["spec"]["resources"]["maxRetries"] = 1
    submit(api, doc)
    controller.start()
    drive(api, harnesses, ["bad"])
    status = experiment(api, "bad")["status"]
    assert status["phase"] == "Failed" and "step erc failed after 2 attempt(s)" in status["message"], status
    created = [without_fingerprint(j) for j in api.created(PLURAL[job_api]) if "-erc-" in j]
    assert created == ["bad-erc-a1", "bad-erc-a2"]
    validate_all(api)


@pytest.mark.parametrize("job_api", list(PLURAL))
def test_a_permanent_exit_code_fails_at_once(cluster, job_api):
    """Exit 2 (bad config or data): no new attempt although retries are left. Under v2 this needs a
    runtime that keeps failed pods (restartPolicy Never) and fails the Job on 1-127 (the coe-torch
    runtime, manifests/trainer-v2/coe-torch.yaml): the Job fails on the first exit, and its pod's code is read."""
    api, harnesses, controller, tmp = cluster
    h = harnesses[job_api]
    h.fail_attempts, h.fail_code = {"erc": 99}, 2
    extra = {"trainingRuntime": "coe-torch"} if job_api == "TrainJob" else {}
    doc = doc_for(job_api, "exp", tmp, ["erc"], **extra)
    doc["spec"]["resources"]["maxRetries"] = 3
    submit(api, doc)
    controller.start()
    drive(api, harnesses, ["exp"])
    status = experiment(api)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "PermanentExitCode", status
    assert "exit code 2" in status["message"]
    assert [without_fingerprint(j) for j in api.created(PLURAL[job_api]) if "-erc-" in j] == ["exp-erc-a1"]
    assert h.pod_runs["erc"] == 1  # the Job failed on the first exit (podFailurePolicy FailJob under v2)
    validate_all(api)


def test_controller_restarts_create_each_trainjob_exactly_once(cluster):
    """The restart test of test_operator_e2e.py under jobApi: TrainJob: the controller killed and
    restarted again and again mid-run; every TrainJob is created once, the experiment succeeds."""
    api, harnesses, controller, tmp = cluster
    submit(api, doc_for("TrainJob", "restarts", tmp, stages=["erc"]))
    controller.start()
    deadline = time.time() + 360
    restarts = 0
    while phase(api, "restarts") not in ("Succeeded", "Failed"):
        assert time.time() < deadline, experiment(api, "restarts").get("status")
        harnesses["TrainJob"].step_all()
        time.sleep(0.3)
        if restarts < 4:
            controller.kill()
            controller.start()
            restarts += 1
    status = experiment(api, "restarts")["status"]
    assert status["phase"] == "Succeeded", status
    created = api.created("trainjobs")
    assert len(created) == len(set(created)) == 3, created  # prepare, erc, test: once each
    assert not api.created("pytorchjobs")
    validate_all(api)
