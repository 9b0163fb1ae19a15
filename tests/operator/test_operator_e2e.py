"""The controller as a real process against the kmock API emulator, with a harness playing the
training operator. Every object the controller writes is validated against the real schemas."""

from __future__ import annotations

import collections
import copy
import json
import time
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from coe_controller import crd

from tests.operator.harness import NS, TrainingOperator, wait_for
from tests.support.kmock_api import KubeAPI
from tests.support.layout import without_fingerprint
from tests.support.shared import SHARED, need_shared

pytestmark = pytest.mark.k8s

REPO = Path(__file__).resolve().parents[2]
PYTORCHJOB_CRD = SHARED / "k8s" / "kubeflow.org_pytorchjobs.yaml"


def pytorchjob_schema() -> dict:
    doc = yaml.safe_load(need_shared(PYTORCHJOB_CRD).read_text())
    return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def validate_writes(api: KubeAPI) -> None:
    """Every version the controller stored of every kind it writes, against the real schemas."""
    job_validator = jsonschema.Draft4Validator(crd.to_jsonschema(pytorchjob_schema()))
    for job in api.history("pytorchjobs"):
        job_validator.validate(job)
        name = job["metadata"]["name"]
        assert len(name) <= 63 and name[0].isalpha(), name
        assert job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    exp_validator = jsonschema.Draft4Validator(
        crd.to_jsonschema(crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    )
    seen = set()
    for exp in api.history("coeexperiments"):
        key = json.dumps(exp, sort_keys=True)
        if key not in seen:
            seen.add(key)
            exp_validator.validate(exp)
    for plural in ("configmaps", "events"):
        for obj in api.objects(plural, NS):
            clean = copy.deepcopy(obj)
            # server-populated fields as kmock writes them (generation is not in core kinds' schema)
            clean["metadata"].pop("generation", None)
            kubernetes_validate.validate(clean, "1.30", strict=True)


def experiment_doc(
    stages: list[str] | None, store: str, name: str = "exp", max_retries: int = 2, **steer
) -> dict:
    doc = yaml.safe_load((REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": NS}
    spec = doc["spec"]
    spec["store"] = store
    if stages is not None:
        spec.pop("strategy", None)
        spec["stages"] = stages
    spec["steer"].update(steer)
    spec["resources"].update(maxRetries=max_retries, s3CredentialsSecret="coe-s3")
    return doc


@pytest.fixture()
def cluster(api, tmp_path, emulated_cluster):
    """The emulator with a namespace's S3 Secret, a kubeconfig, a harness and a controller (not started)."""
    harness = TrainingOperator(api, NS, tmp_path / "pods", fake=True)
    return api, harness, emulated_cluster([harness]), tmp_path


def submit(api: KubeAPI, doc: dict) -> None:
    from coe_controller.kube import Kube

    Kube(api.api_client(), role="user").create_experiment(NS, doc)


def experiment(api: KubeAPI, name: str = "exp") -> dict:
    return next(o for o in api.objects("coeexperiments", NS) if o["metadata"]["name"] == name)


def phase(api: KubeAPI, name: str = "exp") -> str:
    return (experiment(api, name).get("status") or {}).get("phase", "")


def drive(
    api: KubeAPI, harness: TrainingOperator, until=("Succeeded", "Failed"), timeout: float = 120
) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if phase(api) in until:
            return experiment(api)
        harness.step_all()
        time.sleep(0.2)
    raise AssertionError(
        f"experiment still {phase(api)!r} after {timeout}s; status: {experiment(api).get('status')}"
    )


def job_posts(api: KubeAPI) -> collections.Counter:
    return collections.Counter(
        (r.data or {}).get("metadata", {}).get("name")
        for r in api.handler._requests
        if r.method == "POST" and r.resource is not None and r.resource.plural == "pytorchjobs"
    )


def test_restarts_at_every_point_create_each_job_exactly_once(cluster):
    api, harness, controller, tmp = cluster
    submit(api, experiment_doc(["steer", "erc"], f"file://{tmp}/store", rounds=2))
    controller.start()
    first = wait_for(lambda: harness.jobs(), what="the first job")[0]
    controller.kill()  # killed right after a create
    controller.start()
    harness.mark_running(first)
    time.sleep(1.0)
    controller.kill()  # killed mid-step
    controller.start()
    harness.finish(first, harness.run(first))
    controller.kill()  # killed between steps (outputs published, next job not necessarily created)
    time.sleep(0.5)
    controller.start()
    for _ in range(2):  # two more restarts somewhere in the middle of the run
        wait_for(lambda: harness.step_all() or True, timeout=5)
        time.sleep(0.8)
        controller.kill()
        controller.start()
    done = drive(api, harness)
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    names = [s["name"] for s in status["steps"]]
    assert names == ["prepare", "steer-r1-train", "steer-r1", "steer-r2-train", "steer-r2", "erc", "test"]
    created = api.created("pytorchjobs")
    assert len(created) == len(set(created)) == len(names), created
    assert all(n == 1 for n in job_posts(api).values()), job_posts(api)
    assert controller.starts >= 6
    assert status["steerRound"] == 2 and [r["round"] for r in status["steerRounds"]] == [1, 2]
    assert status["bestDevWeightedF1"] == pytest.approx(0.61)
    assert status["bestMetrics"]["testWeightedF1"] == pytest.approx(0.55)
    cond = {c["type"]: c for c in status["conditions"]}
    assert cond["Succeeded"]["status"] == "True" and cond["Succeeded"]["observedGeneration"] == 1
    validate_writes(api)


def test_failed_once_is_retried_and_always_failing_ends_failed(cluster):
    api, harness, controller, tmp = cluster
    harness.fail_attempts = {"erc": 1}
    # A retryable exit (175) fails a job only where runPolicy.backoffLimit is 0 (the training operator's
    # ReconcileJobs; with a higher limit the pod is recreated instead: see the restart-limit tests).
    doc = experiment_doc(["erc"], f"file://{tmp}/store")
    doc["spec"]["resources"]["backoffLimit"] = 0
    submit(api, doc)
    controller.start()
    status = drive(api, harness)["status"]
    assert status["phase"] == "Succeeded", status
    erc = next(s for s in status["steps"] if s["name"] == "erc")
    assert erc["attempts"] == 2 and without_fingerprint(erc["jobName"]) == "exp-erc-a2"
    reasons = [e["reason"] for e in api.objects("events", NS)]
    assert "StepAttemptFailed" in reasons or "StepRetried" in reasons, reasons

    # a step that always fails: max_retries=1 -> two attempts, then the experiment fails with the reason
    harness.fail_attempts = {"erc": 99}
    bad_doc = experiment_doc(["erc"], f"file://{tmp}/store2", name="bad", max_retries=1)
    bad_doc["spec"]["resources"]["backoffLimit"] = 0
    submit(api, bad_doc)
    deadline = time.time() + 60
    while phase(api, "bad") not in ("Succeeded", "Failed") and time.time() < deadline:
        harness.step_all()
        time.sleep(0.2)
    bad = experiment(api, "bad")["status"]
    assert bad["phase"] == "Failed", bad
    assert bad["reason"] == "PyTorchJobFailed"
    assert "step erc failed after 2 attempt(s)" in bad["message"]
    assert [without_fingerprint(j) for j in api.created("pytorchjobs") if j.startswith("bad-erc")] == [
        "bad-erc-a1",
        "bad-erc-a2",
    ]
    assert "test" not in [j.split("-")[1] for j in api.created("pytorchjobs") if j.startswith("bad-")]
    validate_writes(api)


def test_permanent_exit_code_fails_at_once_and_status_watch_shows_the_log_tail(cluster, monkeypatch, capsys):
    """Exit code 2 (bad config/data) is not retried although retries are left; `coe-ctl status --watch`
    follows the experiment to Failed and ends with the failing pod's last log lines."""
    import argparse
    import types

    from coe_controller import cli_cluster

    api, harness, controller, tmp = cluster
    harness.fail_attempts, harness.fail_code = {"erc": 99}, 2
    submit(api, experiment_doc(["erc"], f"file://{tmp}/store", max_retries=3))
    controller.start()
    wait_for(lambda: harness.jobs(), what="the first job")
    polls = []

    def poll_sleep(_seconds):  # each poll of the watch lets the "training operator" move on
        polls.append(harness.step_all())
        time.sleep(0.3)
        assert len(polls) < 300, "watch never ended"

    monkeypatch.setattr(cli_cluster, "time", types.SimpleNamespace(time=time.time, sleep=poll_sleep))
    capsys.readouterr()
    args = argparse.Namespace(
        target="exp", namespace=NS, kubeconfig=str(tmp / "kubeconfig"), context=None, watch=True, output=None
    )
    rc = cli_cluster.cluster_status(args)
    out = capsys.readouterr().out
    assert rc == cli_cluster.EXIT_FAILED and len(polls) >= 2
    status = experiment(api)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "PermanentExitCode", status
    assert "step erc failed after 1 attempt(s)" in status["message"] and "exit code 2" in status["message"]
    assert [without_fingerprint(j) for j in api.created("pytorchjobs") if "-erc-" in j] == ["exp-erc-a1"]
    assert "Failed" in out and "--- last log lines of erc ---" in out
    assert "error (injected, exit 2)" in out
    validate_writes(api)


def test_conflict_on_create_and_api_outage_are_survived(cluster):
    api, harness, controller, tmp = cluster
    # The first job create "happens" but its answer is lost (409 on the retry path is "done").
    api.inject("POST", r"/pytorchjobs$", 409, apply=True)
    submit(api, experiment_doc(["erc"], f"file://{tmp}/store"))
    controller.start()
    first = wait_for(lambda: harness.jobs(), what="the first job")[0]
    harness.finish(first, harness.run(first))
    api.outage(3.0)  # connections refused, watches cut
    status = drive(api, harness)["status"]
    assert status["phase"] == "Succeeded", status
    created = api.created("pytorchjobs")
    assert [without_fingerprint(c) for c in created] == ["exp-prepare-a1", "exp-erc-a1", "exp-test-a1"], (
        created
    )
    assert controller.alive(), "the controller must survive an unreachable API server"
    validate_writes(api)


def test_submitted_experiment_gets_the_installation_defaults_and_deleting_it_removes_its_jobs(cluster):
    import argparse

    from coe_controller.cli_cluster import cmd_submit

    api, harness, controller, tmp = cluster
    # `coe-ctl submit` of a spec that names neither image nor Secret: the stored object leaves them out
    # (a default written in would look "set"), and the controller fills in the chart's defaults.
    doc = experiment_doc(["erc"], f"file://{tmp}/store")
    del doc["spec"]["resources"]["s3CredentialsSecret"]
    spec_file = tmp / "exp.yaml"
    spec_file.write_text(yaml.safe_dump(doc))
    args = argparse.Namespace(
        spec=str(spec_file), namespace=NS, kubeconfig=str(tmp / "kubeconfig"), context=None
    )
    assert cmd_submit(args) == 0
    stored = experiment(api)["spec"]["resources"]
    assert "image" not in stored and "s3CredentialsSecret" not in stored, stored
    controller.env.update(COE_RUNTIME_IMAGE="registry.example/coe-runtime:7", COE_S3_SECRET="coe-s3")
    controller.start()
    job = wait_for(lambda: harness.jobs(), what="the first job")[0]
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/coe-runtime:7"
    assert container["envFrom"] == [{"secretRef": {"name": "coe-s3"}}]
    from coe_controller.kube import Kube

    Kube(api.api_client(), role="user").delete_experiment(NS, "exp")
    assert api.objects("pytorchjobs", NS) == []
    assert api.objects("configmaps", NS) == []


def test_an_edited_finished_experiment_reruns_exactly_the_changed_steps(cluster):
    """Issue 15 on the cluster: a published step counts as done only for its own fingerprint."""
    from kubernetes import client

    api, harness, controller, tmp = cluster
    doc = experiment_doc(["erc"], f"file://{tmp}/store")
    submit(api, doc)
    controller.start()
    first = drive(api, harness)["status"]
    assert first["phase"] == "Succeeded", first
    before = {s["name"]: s["fingerprint"] for s in first["steps"]}
    jobs_before = set(api.created("pytorchjobs"))

    spec = copy.deepcopy(doc["spec"])
    spec["training"]["erc"]["epochs"] = spec["training"]["erc"]["epochs"] + 1
    client.CustomObjectsApi(api.api_client()).patch_namespaced_custom_object(
        "coe.ml", "v1alpha1", NS, "coeexperiments", "exp", {"spec": spec}
    )
    wait_for(
        lambda: (experiment(api).get("status") or {}).get("observedGeneration") == 2,
        what="the edit to be observed",
    )
    second = drive(api, harness)["status"]
    assert second["phase"] == "Succeeded" and second["observedGeneration"] == 2, second
    after = {s["name"]: s["fingerprint"] for s in second["steps"]}
    assert [n for n in after if after[n] != before[n]] == ["erc", "test"]
    new_jobs = set(api.created("pytorchjobs")) - jobs_before
    assert sorted(without_fingerprint(j) for j in new_jobs) == ["exp-erc-a1", "exp-test-a1"]
    # The earlier results are still in the store, under their own fingerprints.
    for name in ("erc", "test"):
        old = tmp / "store" / "exp" / name / before[name] / "MANIFEST.json"
        assert old.is_file(), old
    validate_writes(api)


def _conditions_over_time(api: KubeAPI, job_name: str) -> list[dict[str, str]]:
    """The True conditions of every stored version of one job, in order (repeats dropped)."""
    out: list[dict[str, str]] = []
    for version in api.history("pytorchjobs"):
        if version["metadata"]["name"] != job_name:
            continue
        true = {
            c["type"]: c["reason"]
            for c in (version.get("status") or {}).get("conditions") or []
            if c["status"] == "True"
        }
        if not out or out[-1] != true:
            out.append(true)
    return out


def test_a_step_oom_killed_on_every_run_ends_failed_after_the_restart_limit(cluster):
    """Issue 16: exit 137 under restartPolicy ExitCode makes the training operator recreate the pod,
    never fail the job, never count it against runPolicy.backoffLimit (kubeflow/trainer#2045). The
    controller counts the recreated pods and ends the experiment after resources.backoffLimit (3)."""
    import re

    api, harness, controller, tmp = cluster
    harness.fail_attempts, harness.fail_code = {"erc": 99}, 137
    submit(api, experiment_doc(["erc"], f"file://{tmp}/store", max_retries=2))
    controller.start()
    started = time.monotonic()
    status = drive(api, harness, timeout=90)["status"]
    assert time.monotonic() - started < 90
    assert status["phase"] == "Failed" and status["reason"] == "RestartLimitExceeded", status
    assert "step erc failed after 1 attempt(s)" in status["message"]
    assert "more than resources.backoffLimit (3)" in status["message"]
    assert re.search(r"last exit code (137: SIGKILL, most often the OOM killer|not seen)", status["message"])
    erc = next(s for s in status["steps"] if s["name"] == "erc")
    assert erc["state"] == "Failed" and erc["restarts"] >= 4 and erc.get("lastExitCode", 137) == 137
    # one job, never retried beside itself; its pod was recreated each time, more often than counted
    erc_jobs = [j for j in api.created("pytorchjobs") if "-erc-" in j]
    assert [without_fingerprint(j) for j in erc_jobs] == ["exp-erc-a1"]
    assert harness.pods_created[erc_jobs[0]] >= erc["restarts"] + 1
    assert not any("-test-" in j for j in api.created("pytorchjobs"))
    # what the operator wrote: Restarting and Running by turns, never Failed
    seen = _conditions_over_time(api, erc_jobs[0])
    assert {"Created": "PyTorchJobCreated", "Restarting": "PyTorchJobRestarting"} in seen, seen
    assert {"Created": "PyTorchJobCreated", "Running": "PyTorchJobRunning"} in seen, seen
    assert not any("Failed" in s or "Restarting" in s and "Running" in s for s in seen), seen
    events = [e for e in api.objects("events", NS) if e["reason"] in ("StepPodRestarted", "ExperimentFailed")]
    assert {e["reason"] for e in events} == {"StepPodRestarted", "ExperimentFailed"}, events
    # the job, which would restart forever holding its GPUs, is deleted; then the controller leaves
    # the finished experiment alone (no status churn, no new job)
    wait_for(
        lambda: not any(j["metadata"]["name"] == erc_jobs[0] for j in harness.jobs()), what="job deleted"
    )
    before = experiment(api)["status"]
    for _ in range(5):
        harness.step_all()
        time.sleep(0.3)
    assert experiment(api)["status"] == before
    assert [j for j in api.created("pytorchjobs") if "-erc-" in j] == erc_jobs
    validate_writes(api)


def test_a_step_that_fails_retryably_once_restarts_its_pod_not_its_job(cluster):
    """Exit 137 once, then success: the operator recreates the pod in the same job, which succeeds."""
    api, harness, controller, tmp = cluster
    harness.fail_runs, harness.fail_code = {"erc": 1}, 137
    submit(api, experiment_doc(["erc"], f"file://{tmp}/store"))
    controller.start()
    status = drive(api, harness)["status"]
    assert status["phase"] == "Succeeded", status
    erc = next(s for s in status["steps"] if s["name"] == "erc")
    assert erc["attempts"] == 1 and without_fingerprint(erc["jobName"]) == "exp-erc-a1"
    assert erc.get("restarts", 0) <= 1  # at most the one restart (a pass may miss a quick one)
    erc_jobs = [j for j in api.created("pytorchjobs") if "-erc-" in j]
    assert erc_jobs == [erc["jobName"]]
    assert all(n == 1 for n in job_posts(api).values()), job_posts(api)
    assert harness.pods_created[erc["jobName"]] == 2 and harness.pod_runs["erc"] == 2
    seen = _conditions_over_time(api, erc["jobName"])
    assert seen.index({"Created": "PyTorchJobCreated", "Restarting": "PyTorchJobRestarting"}) < seen.index(
        {"Created": "PyTorchJobCreated", "Succeeded": "PyTorchJobSucceeded"}
    ), seen
    validate_writes(api)
