"""Pods as the v1.9 training operator and the kubelet handle them, with the controller as a real process:
a step on two nodes (a Master and a Worker pod, a headless Service each, the env the operator injects) and
a pod deleted mid-run (a preemption: SIGTERM, exit 143, the pod recreated in the same job). The rules are
the harness's (tests/operator/harness.py, tests/support/kubelet.py), each citing its upstream source; the
fast tests run the stand-in runtime, the ``slow`` ones real training under real torchrun."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import kubernetes_validate
import pytest
from coe_controller.planner import plan
from coe_controller.spec import parse_spec

from tests.operator.harness import NS, TrainingOperator
from tests.operator.test_operator_e2e import (
    _conditions_over_time,
    drive,
    experiment_doc,
    submit,
    validate_writes,
)
from tests.support.kubelet import DEFAULT_TERMINATION_GRACE_S, MIN_KILL_GRACE_S, Container

pytestmark = pytest.mark.k8s


@pytest.fixture()
def cluster(api, tmp_path, emulated_cluster):
    harness = TrainingOperator(api, NS, tmp_path / "pods", fake=True)
    return api, harness, emulated_cluster([harness]), tmp_path


def erc_only(tmp: Path, *, nodes: int = 1, env: dict[str, str] | None = None, **erc) -> dict:
    """prepare + erc (no test step, no dev evaluation): ``erc`` training settings, ``nodes`` pods and
    ``env`` (pod env, for the stand-in runtime's knobs) for the erc step only."""
    doc = experiment_doc(["erc"], f"file://{tmp}/store")
    spec = doc["spec"]
    spec["evaluation"].update(test=False, devEachEpoch=False)
    spec["training"]["erc"].update(erc)
    override: dict = {"nodes": nodes}
    if env:
        override["env"] = [{"name": k, "value": v} for k, v in env.items()]
    spec["resources"]["overrides"] = {"erc": override}
    return doc


def erc_output(doc: dict) -> Path:
    step = next(s for s in plan(parse_spec(doc)) if s.name == "erc")
    assert step.output.startswith("file://"), step.output
    return Path(step.output.removeprefix("file://"))


def erc_job(api) -> str:
    jobs = [j for j in api.created("pytorchjobs") if "-erc-" in j]
    assert len(jobs) == 1, jobs  # one job: a pod restart is not a new attempt
    return jobs[0]


def pod_versions(api, name: str) -> list[dict]:
    return [p for p in api.history("pods") if p["metadata"]["name"] == name]


def env_of(pod: dict) -> dict[str, str]:
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "pytorch")
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def delete_once(step: str, when, grace: int | None = None):
    """A kubelet hook: delete the running Master pod of ``step``'s job once ``when(container)`` holds (a
    preemption, a node drain); returns the hook and the list of what it deleted."""
    deleted: list[str] = []

    def hook(kubelet, running: list[Container]) -> None:
        for c in running:
            if not deleted and f"-{step}-" in c.job and c.pod.endswith("-master-0") and when(c):
                deleted.append(c.pod)
                kubelet.delete_pod(c.pod, grace)

    return hook, deleted


def assert_two_node_pods_and_services(api, harness: TrainingOperator, job: str) -> None:
    """What the v1.9 operator makes of a job with a Master and one Worker (harness.py, each rule cited
    there): pods and Services ``<job>-master-0`` / ``<job>-worker-0``, the operator's env, both pods run
    at the same time, MASTER_ADDR resolved through the Master's Service."""
    master, worker = f"{job}-master-0", f"{job}-worker-0"
    spec = next(j for j in api.history("pytorchjobs") if j["metadata"]["name"] == job)["spec"]
    assert spec["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    created = {p["metadata"]["name"]: p for p in api.history("pods") if p["metadata"]["name"].startswith(job)}
    assert set(created) == {master, worker}, sorted(created)
    envs = {n: env_of(p) for n, p in created.items()}
    for n, rank in ((master, "0"), (worker, "1")):
        env = envs[n]
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == master, env
        assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == "23456", env
        assert env["WORLD_SIZE"] == "2" and env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "1"
        assert env["RANK"] == env["PET_NODE_RANK"] == rank, env
    labels = {n: p["metadata"]["labels"] for n, p in created.items()}
    assert labels[master]["training.kubeflow.org/job-role"] == "master"
    assert "training.kubeflow.org/job-role" not in labels[worker]
    assert labels[worker]["training.kubeflow.org/replica-type"] == "worker"
    services = {
        s["metadata"]["name"]: s for s in api.history("services") if s["metadata"]["name"].startswith(job)
    }
    assert set(services) == {master, worker}, sorted(services)
    for n, svc in services.items():
        assert svc["spec"]["clusterIP"] == "None"  # headless: the name resolves to the pod itself
        assert svc["spec"]["ports"] == [{"name": "pytorchjob-port", "port": 23456}]
        assert all(labels[n][k] == v for k, v in svc["spec"]["selector"].items()), (svc, labels[n])
        clean = copy.deepcopy(svc)
        clean["metadata"].pop("generation", None)  # kmock's, not in core kinds' schema
        kubernetes_validate.validate(clean, "1.30", strict=True)
    assert harness.resolved[master]["MASTER_ADDR"] == harness.resolved[worker]["MASTER_ADDR"] == master
    runs = {c.pod: c for c in harness.containers if c.job == job}
    assert set(runs) == {master, worker} and all(c.exit_code == 0 for c in runs.values())
    assert max(c.started for c in runs.values()) < min(c.ended for c in runs.values())  # at the same time


def test_a_two_node_step_gets_a_pod_and_a_headless_service_per_replica(cluster):
    api, harness, controller, tmp = cluster
    submit(api, erc_only(tmp, nodes=2))
    controller.start()
    status = drive(api, harness)["status"]
    assert status["phase"] == "Succeeded", status
    job = erc_job(api)
    assert_two_node_pods_and_services(api, harness, job)
    assert harness.pods_created[job] == 2
    validate_writes(api)


def test_a_pod_deleted_mid_run_gets_sigterm_exits_143_and_is_recreated_in_the_same_job(cluster):
    """A preemption: the pod is deleted with its grace period (the default 30 s); the container gets
    SIGTERM and exits 143 (retryable); the operator recreates the pod (same name, same job), which
    finishes the step."""
    api, harness, controller, tmp = cluster
    hook, deleted = delete_once("erc", lambda c: time.monotonic() - c.started > 0.5)
    harness.while_running = hook
    submit(api, erc_only(tmp, env={"FAKE_RUNTIME_HOLD_S": "3"}))
    controller.start()
    status = drive(api, harness)["status"]
    assert status["phase"] == "Succeeded", status
    job = erc_job(api)
    pod = f"{job}-master-0"
    assert deleted == [pod]
    [t] = harness.terminations
    assert t["pod"] == pod and t["grace_period_seconds"] == DEFAULT_TERMINATION_GRACE_S
    assert t["signals"] == ["SIGTERM"] and t["exit_code"] == 143 and t["seconds"] < MIN_KILL_GRACE_S, t
    versions = pod_versions(api, pod)
    terminating = [v for v in versions if v["metadata"].get("deletionTimestamp")]
    assert terminating and terminating[0]["metadata"]["deletionGracePeriodSeconds"] == 30
    ended = [v["status"]["containerStatuses"][0]["state"]["terminated"] for v in terminating
             if v["status"].get("phase") == "Failed"]  # fmt: skip
    assert ended and ended[-1]["exitCode"] == 143, terminating[-1]["status"]
    assert harness.pods_created[job] == 2 and len({v["metadata"]["uid"] for v in versions}) == 2
    seen = _conditions_over_time(api, job)
    restarting = {"Created": "PyTorchJobCreated", "Restarting": "PyTorchJobRestarting"}
    assert seen.index(restarting) < seen.index(
        {"Created": "PyTorchJobCreated", "Succeeded": "PyTorchJobSucceeded"}
    )
    erc = next(s for s in status["steps"] if s["name"] == "erc")
    assert erc["attempts"] == 1 and erc.get("lastExitCode", 143) == 143, erc
    validate_writes(api)


def test_a_runtime_that_ignores_sigterm_is_killed_after_the_grace_period(cluster):
    """Deleted with a 1 s grace period (``kubectl delete --grace-period=1``): SIGTERM is ignored, so the
    kubelet sends SIGKILL at the end of the grace period, never sooner than its 2 s minimum: exit 137
    (reason Error, not OOMKilled), retryable, and the recreated pod finishes the step."""
    api, harness, controller, tmp = cluster
    hook, deleted = delete_once("erc", lambda c: time.monotonic() - c.started > 0.5, grace=1)
    harness.while_running = hook
    submit(api, erc_only(tmp, env={"FAKE_RUNTIME_HOLD_S": "5", "FAKE_RUNTIME_IGNORE_SIGTERM": "1"}))
    controller.start()
    status = drive(api, harness)["status"]
    assert status["phase"] == "Succeeded", status
    job = erc_job(api)
    [t] = harness.terminations
    assert t["grace_period_seconds"] == 1 and t["signals"] == ["SIGTERM", "SIGKILL"] and t["exit_code"] == 137
    assert MIN_KILL_GRACE_S <= t["seconds"] < 4, t  # SIGKILL at the kubelet's minimum, before the hold ends
    ended = [v["status"]["containerStatuses"][0]["state"]["terminated"] for v in pod_versions(api, deleted[0])
             if v["status"].get("phase") == "Failed"]  # fmt: skip
    assert ended[-1]["exitCode"] == 137 and ended[-1]["reason"] == "Error", ended
    assert harness.pods_created[job] == 2
    validate_writes(api)


# -- real training under real torchrun --------------------------------------------------------------------
def _train_log_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "train-log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_two_node_step_trains_with_both_pods_under_real_torchrun(cluster):
    """The real launcher, torchrun and runtime in both pods: node 1 reaches node 0's rendezvous through
    MASTER_ADDR (the Master's Service) and the step trains with world size 2; both pods succeed, and only
    then is the job Succeeded."""
    api, harness, controller, tmp = cluster
    harness.fake = False
    doc = erc_only(tmp, nodes=2, epochs=1, maxSteps=2)
    submit(api, doc)
    controller.start()
    status = drive(api, harness, timeout=400)["status"]
    assert status["phase"] == "Succeeded", status
    job = erc_job(api)
    assert_two_node_pods_and_services(api, harness, job)
    resolved = json.loads((erc_output(doc) / "resolved-config.json").read_text())
    assert resolved["world_size"] == 2 and resolved["summary"]["optimizer_steps"] == 2, resolved
    assert _train_log_steps(erc_output(doc)) == [1, 2]
    # The controller moves on as soon as the step's outputs are published; the operator's reconcile of
    # the pods' ends is still due: then the job's first Succeeded version comes after both pods' Succeeded
    # records (kmock's resourceVersion is one counter over all kinds).
    harness.step_all()
    rv: dict[str, int] = {}
    for o in api.history("pods") + api.history("pytorchjobs"):
        name, st = o["metadata"]["name"], o.get("status") or {}
        done = st.get("phase") == "Succeeded" or any(
            c["type"] == "Succeeded" and c["status"] == "True" for c in st.get("conditions") or []
        )
        if name.startswith(job) and done:
            rv[name] = min(rv.get(name, 1 << 60), int(o["metadata"]["resourceVersion"]))
    assert set(rv) == {job, f"{job}-master-0", f"{job}-worker-0"}, (rv, _conditions_over_time(api, job))
    assert rv[job] > max(rv[f"{job}-master-0"], rv[f"{job}-worker-0"]), rv
    validate_writes(api)


@pytest.mark.slow
def test_a_preempted_training_pod_resumes_from_its_checkpoint(cluster):
    """Real training, preempted once its first checkpoint is published: the pod is deleted (grace 30 s),
    the launcher turns the SIGTERM into exit 143, the operator recreates the pod, and the new pod (fresh
    disks) resumes from the checkpoint in the store instead of starting over: every optimiser step
    appears once in the train log."""
    api, harness, controller, tmp = cluster
    harness.fake = False
    doc = erc_only(tmp, epochs=1, maxSteps=6)
    doc["spec"]["optimizer"]["checkpointEverySteps"] = 2
    out = erc_output(doc)
    hook, deleted = delete_once(
        "erc", lambda c: bool(list(out.glob("_checkpoints/checkpoint-*/node-0/MANIFEST.json")))
    )
    harness.while_running = hook
    submit(api, doc)
    controller.start()
    status = drive(api, harness, timeout=400)["status"]
    assert status["phase"] == "Succeeded", status
    job = erc_job(api)
    assert deleted == [f"{job}-master-0"], "the step finished before it could be preempted"
    [t] = harness.terminations
    assert t["grace_period_seconds"] == 30 and t["signals"] == ["SIGTERM"] and t["exit_code"] == 143, t
    first = next(c for c in harness.containers if c.pod == deleted[0])
    assert "pod exits 143 (retryable)" in first.output(), first.output()  # the launcher's own word
    assert harness.pods_created[job] == 2
    resolved = json.loads((out / "resolved-config.json").read_text())
    assert (resolved["resumed_from"] or "").startswith("checkpoint-"), resolved
    total = resolved["summary"]["optimizer_steps"]
    assert total == 6 and _train_log_steps(out) == list(range(1, total + 1))  # none twice, none missing
    validate_writes(api)
