"""Test harness: plays the Kubeflow training operator (v1.9) against the kmock API, and runs the controller.

For each PyTorchJob the controller creates, :class:`TrainingOperator` plays two parts:

* the **kubelet** of the Master pod: it runs the Master's container command locally as a subprocess with
  what a pod would get — the ConfigMap files written to temp folders that stand in for the mount paths
  (``/etc/coe/...``), the container's env, the Secret's variables (envFrom), and the variables the
  training operator injects (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, PET_*) — and records the pod's
  phase and the container's exit code, its output served as the pod log;
* the **training operator's reconcile** of the job (:meth:`TrainingOperator.reconcile`), rule by rule
  after kubeflow/training-operator branch release-1.9 (each rule cites the file and function it
  mirrors): it creates the Master pod, deletes and recreates it when it exits 128-255 under
  ``restartPolicy: ExitCode`` (job condition Restarting, then Running again; never Failed, and never
  counted against ``runPolicy.backoffLimit``: kubeflow/trainer#2045), fails the job on 1-127, applies
  ``backoffLimit`` / ``activeDeadlineSeconds`` as ``ReconcileJobs`` does, and writes the conditions,
  ``replicaStatuses``, ``startTime`` and ``completionTime`` the real one writes.

Not modelled (and said so where it matters): Worker pods (only the Master runs here), Services, gang
scheduling, TTL cleanup, Kueue admitting a suspended job, and the timing of the real informers.
"""

from __future__ import annotations

import base64
import collections
import copy
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.kmock_api import KubeAPI, free_port
from tests.support.pythonpath import child_pythonpath

REPO = Path(__file__).resolve().parents[2]

KIND = "PyTorchJob"
CONTAINER = "pytorch"  # PyTorchJobReconciler.GetDefaultContainerName (pytorchjob_controller.go)
CONTROLLER_NAME = "pytorchjob-controller"  # pkg/controller.v1/pytorch/pytorchjob_controller.go controllerName
# Pod labels: pkg/apis/kubeflow.org/v1/common_types.go (ReplicaTypeLabel, ...), set by
# pkg/controller.v1/common/job_controller.go GenLabels and common/pod.go createNewPod.
LABEL_OPERATOR = "training.kubeflow.org/operator-name"
LABEL_JOB_NAME = "training.kubeflow.org/job-name"
LABEL_REPLICA_TYPE = "training.kubeflow.org/replica-type"
LABEL_REPLICA_INDEX = "training.kubeflow.org/replica-index"
LABEL_JOB_ROLE = "training.kubeflow.org/job-role"
NO_EXIT_CODE = 0xBEEF  # common/pod.go ReconcilePods: "magic number" when the container has not terminated


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _parse(ts: str) -> float:
    import calendar

    return float(calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")))


def finished(job: dict) -> bool:
    conds = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] in ("Succeeded", "Failed") and c["status"] == "True" for c in conds)


def is_retryable_exit_code(code: int) -> bool:
    """pkg/util/train/train_util.go IsRetryableExitCode: ``exitCode >= 128``."""
    return code >= 128


def _is_true(status: dict, type_: str) -> bool:
    """pkg/util/status.go isStatusConditionTrue."""
    return any(c["type"] == type_ and c["status"] == "True" for c in status.get("conditions") or [])


def update_job_conditions(status: dict, type_: str, value: str, reason: str, message: str) -> None:
    """pkg/util/status.go UpdateJobConditions -> setCondition / filterOutCondition, rule by rule."""
    if _is_true(status, "Failed"):
        return  # "Do nothing if JobStatus have failed condition"
    conds = status.get("conditions") or []
    current = next((c for c in conds if c["type"] == type_), None)
    if current and current["status"] == value and current.get("reason") == reason:
        return  # "Do nothing if condition doesn't change" (the message is not updated either)
    now = _now()
    new = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        # "Do not update lastTransitionTime if the status of the condition doesn't change."
        "lastTransitionTime": current["lastTransitionTime"]
        if current and current["status"] == value
        else now,
    }
    kept = []
    for c in conds:
        # Restarting and Running replace each other: at most one of them is in the list.
        if (type_, c["type"]) in (("Restarting", "Running"), ("Running", "Restarting")) or c["type"] == type_:
            continue
        if type_ in ("Failed", "Succeeded") and c["type"] == "Running":
            c = {**c, "status": "False"}
        kept.append(c)
    status["conditions"] = [*kept, new]


def _reason(what: str) -> str:
    """pkg/util/status.go NewReason(kind, reason): "PyTorchJob" + Created|Running|Restarting|..."""
    return f"{KIND}{what}"


class TrainingOperator:
    def __init__(self, api: KubeAPI, namespace: str, workdir: Path, *, fake: bool = True):
        from kubernetes import client

        self.api, self.namespace, self.workdir, self.fake = api, namespace, Path(workdir), fake
        self.custom = client.CustomObjectsApi(api.api_client())
        self.core = client.CoreV1Api(api.api_client())
        # Injected failures: the Master container exits ``fail_code`` instead of running the step
        # (what the training operator then does depends on the code, as on a real cluster).
        self.fail_attempts: dict[str, int] = {}  # step -> every pod of its first N job attempts fails
        self.fail_runs: dict[str, int] = {}  # step -> its first N pod runs (over all its jobs) fail
        self.fail_code = 175  # their exit code: retryable (coe_runtime's EXIT_RETRYABLE) unless changed
        self.logs: dict[str, str] = {}  # job name -> output of its latest pod run
        self.ran: list[str] = []  # job name of every pod run, in order
        self.pod_runs: collections.Counter[str] = collections.Counter()  # step -> pod runs so far
        self.pods_created: collections.Counter[str] = collections.Counter()  # job name -> pods created

    # -- reading ---------------------------------------------------------------------------------------
    def jobs(self) -> list[dict]:
        return sorted(
            self.api.objects("pytorchjobs", self.namespace), key=lambda j: j["metadata"]["creationTimestamp"]
        )

    def unfinished(self) -> list[dict]:
        return [j for j in self.jobs() if not finished(j)]

    def _job(self, name: str) -> dict | None:
        return next(
            (j for j in self.api.objects("pytorchjobs", self.namespace) if j["metadata"]["name"] == name),
            None,
        )

    def pods_of(self, job: dict) -> list[dict]:
        """The job's pods: common/pod.go GetPodsForJob (by the job-name label; ownership adoption is
        not modelled)."""
        name = job["metadata"]["name"]
        return [
            p
            for p in self.api.objects("pods", self.namespace)
            if (p["metadata"].get("labels") or {}).get(LABEL_JOB_NAME) == name
        ]

    def _master_pod(self, job: dict) -> dict | None:
        return next(
            (p for p in self.pods_of(job) if p["metadata"]["labels"].get(LABEL_REPLICA_TYPE) == "master"),
            None,
        )

    def _write_status(self, job: dict, status: dict) -> None:
        """UpdateJobStatusInApiServer (pytorchjob_controller.go): the status subresource."""
        self.custom.patch_namespaced_custom_object_status(
            "kubeflow.org", "v1", self.namespace, "pytorchjobs", job["metadata"]["name"], {"status": status}
        )

    # -- the training operator's reconcile ---------------------------------------------------------------
    def reconcile(self, job: dict) -> dict:
        """One reconcile of one job; returns the status written. Mirrors
        pkg/controller.v1/common/job.go ReconcileJobs, then common/pod.go ReconcilePods for the Master,
        then pytorch/pytorchjob_controller.go UpdateJobStatus. Only the Master replica is modelled."""
        job = self._job(job["metadata"]["name"]) or job
        name = job["metadata"]["name"]
        spec = job["spec"]
        run_policy = spec.get("runPolicy") or {}
        master = spec["pytorchReplicaSpecs"]["Master"]
        status = copy.deepcopy(job.get("status") or {})
        old = copy.deepcopy(status)
        # pytorchjob_controller.go onOwnerCreateFunc: the Created condition, when the job is first seen.
        update_job_conditions(status, "Created", "True", _reason("Created"), f"PyTorchJob {name} is created.")
        pods = self.pods_of(job)

        if finished(status):
            # ReconcileJobs: a finished job only has its resources cleaned up; with cleanPodPolicy None
            # (what we render) DeletePodsAndServices deletes nothing. TTL cleanup is not modelled.
            if run_policy.get("cleanPodPolicy", "None") != "None":
                self._delete_pods(pods)
            if _is_true(status, "Succeeded"):
                for rs in (status.get("replicaStatuses") or {}).values():
                    rs["succeeded"] = rs.get("succeeded", 0) + rs.pop("active", 0)
            return self._maybe_write(job, old, status)

        if run_policy.get("suspend"):
            # ReconcileJobs, IsJobSuspended: pods removed, Running False, Suspended True. Kueue admitting
            # (unsuspending) the job is not modelled here.
            self._delete_pods(pods)
            for rs in (status.get("replicaStatuses") or {}).values():
                rs.pop("active", None)
            msg = f"{KIND} {name} is suspended."
            if _is_true(status, "Running"):
                update_job_conditions(status, "Running", "False", _reason("Suspended"), msg)
            if not _is_true(status, "Suspended"):
                update_job_conditions(status, "Suspended", "True", _reason("Suspended"), msg)
            return self._maybe_write(job, old, status)
        if _is_true(status, "Suspended"):
            update_job_conditions(
                status, "Suspended", "False", _reason("Resumed"), f"{KIND} {name} is resumed."
            )
            status["startTime"] = _now()

        # ReconcileJobs: backoffLimit and activeDeadlineSeconds.
        active = [
            p for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed")
        ]  # FilterActivePods
        failed = sum(1 for p in pods if p["status"].get("phase") == "Failed")  # FilterPodCount(PodFailed)
        total_replicas = int(master.get("replicas", 1))  # GetTotalReplicas (Master only, here)
        prev_failed = sum(rs.get("failed", 0) for rs in (status.get("replicaStatuses") or {}).values())
        exceeds_backoff = past_backoff = False
        if run_policy.get("backoffLimit") is not None:
            limit = int(run_policy["backoffLimit"])
            new_failure = failed > prev_failed
            # previousRetry := jc.WorkQueue.NumRequeues(jobKey) is always 0: the reconciler's WorkQueue
            # is util.FakeWorkQueue (pytorchjob_controller.go NewReconciler; pkg/common/util/
            # fake_workqueue.go NumRequeues returns 0). So this fires only for backoffLimit 0.
            previous_retry = 0
            exceeds_backoff = new_failure and len(active) != total_replicas and previous_retry + 1 > limit
            past_backoff = self._past_backoff_limit(job, pods, limit)
        failure = None
        if exceeds_backoff or past_backoff:
            failure = f"Job {name} has failed because it has reached the specified backoff limit"
        elif self._past_active_deadline(run_policy, status):
            failure = f"Job {name} has failed because it was active longer than specified deadline"
        if failure:
            status.setdefault("completionTime", _now())
            # DeletePodsAndServices runs before the Failed condition is set: the job is not finished yet,
            # so cleanPodPolicy does not apply and every pod goes (their exit codes with them).
            self._delete_pods(pods)
            update_job_conditions(status, "Failed", "True", _reason("Failed"), failure)
            return self._maybe_write(job, old, status)

        self._reconcile_master_pod(job, status, pods)
        self._update_job_status(job, status)
        return self._maybe_write(job, old, status)

    def _maybe_write(self, job: dict, old: dict, status: dict) -> dict:
        if status != old:  # "No need to update the job status if the status hasn't changed"
            self._write_status(job, status)
        return status

    @staticmethod
    def _past_backoff_limit(job: dict, pods: list[dict], limit: int) -> bool:
        """pkg/core/job.go PastBackoffLimit: the sum of restartCount over the *Running* pods of replicas
        whose policy is OnFailure, Always or ExitCode. Under ExitCode the pods themselves have
        restartPolicy Never (pkg/core/pod.go SetRestartPolicy) and are replaced, not restarted, so their
        restartCount stays 0: retryable exits never count (kubeflow/trainer#2045)."""
        total = 0
        for rtype, rspec in job["spec"]["pytorchReplicaSpecs"].items():
            if rspec.get("restartPolicy") not in ("OnFailure", "Always", "ExitCode"):
                continue
            for p in pods:
                if p["metadata"]["labels"].get(LABEL_REPLICA_TYPE) != rtype.lower():
                    continue
                if p["status"].get("phase") != "Running":
                    continue
                total += sum(
                    cs.get("restartCount", 0) for cs in p["status"].get("initContainerStatuses") or []
                )
                total += sum(cs.get("restartCount", 0) for cs in p["status"].get("containerStatuses") or [])
        return total > 0 if limit == 0 else total >= limit

    @staticmethod
    def _past_active_deadline(run_policy: dict, status: dict) -> bool:
        """pkg/core/job.go PastActiveDeadline: now - status.startTime >= activeDeadlineSeconds."""
        deadline, start = run_policy.get("activeDeadlineSeconds"), status.get("startTime")
        if deadline is None or not start:
            return False
        return time.time() - _parse(start) >= int(deadline)

    def _reconcile_master_pod(self, job: dict, status: dict, pods: list[dict]) -> None:
        """pkg/controller.v1/common/pod.go ReconcilePods for the Master replica (index 0)."""
        name = job["metadata"]["name"]
        rspec = job["spec"]["pytorchReplicaSpecs"]["Master"]
        # initializeReplicaStatuses: counted afresh from the pods that exist now, on every reconcile.
        statuses = status.setdefault("replicaStatuses", {})
        statuses["Master"] = {}
        pod = next((p for p in pods if p["metadata"]["labels"].get(LABEL_REPLICA_TYPE) == "master"), None)
        if pod is None:
            self._create_pod(job)  # "Need to create new pod"
            return
        exit_code = NO_EXIT_CODE
        for cs in pod["status"].get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if cs.get("name") == CONTAINER and term:
                exit_code = int(term["exitCode"])  # also an ExitedWithCode Event on the job (not modelled)
        if pod["status"].get("phase") == "Failed":
            policy = rspec.get("restartPolicy")
            if (policy == "ExitCode" and is_retryable_exit_code(exit_code)) or policy in (
                "OnFailure",
                "Always",
            ):
                # "Need to restart the pod": the pod is deleted; the next reconcile creates it anew.
                self._delete_pods([pod])
                update_job_conditions(
                    status,
                    "Restarting",
                    "True",
                    _reason("Restarting"),
                    f"job {name} is restarting because Master replica(s) failed.",
                )
            elif policy == "ExitCode":
                # "Pod has a non-retryable exit code. Failing job." (no completionTime on this path)
                update_job_conditions(
                    status,
                    "Failed",
                    "True",
                    _reason("Failed"),
                    f'job "{name}" is failing because "Master" replica(s) failed.',
                )
        # updateJobReplicaStatuses -> pkg/core/status.go UpdateJobReplicaStatuses (a pod just deleted
        # above still counts as failed in this pass)
        phase = pod["status"].get("phase")
        key = {"Running": "active", "Succeeded": "succeeded", "Failed": "failed"}.get(phase)
        if key:
            statuses["Master"][key] = statuses["Master"].get(key, 0) + 1

    def _update_job_status(self, job: dict, status: dict) -> None:
        """pkg/controller.v1/pytorch/pytorchjob_controller.go UpdateJobStatus (a job with a Master)."""
        name = job["metadata"]["name"]
        rspec = job["spec"]["pytorchReplicaSpecs"]["Master"]
        status.setdefault("startTime", _now())  # "Set StartTime."
        rs = status.setdefault("replicaStatuses", {}).setdefault("Master", {})
        rs["selector"] = (
            f"{LABEL_JOB_NAME}={name},{LABEL_OPERATOR}={CONTROLLER_NAME},{LABEL_REPLICA_TYPE}=master"
        )
        replicas = int(rspec.get("replicas", 1))
        succeeded, running, failed = rs.get("succeeded", 0), rs.get("active", 0), rs.get("failed", 0)
        expected = replicas - succeeded
        if running > 0:
            update_job_conditions(status, "Running", "True", _reason("Running"), f"{KIND} {name} is running.")
        if expected == 0:  # "when master is succeed, the job is finished."
            status.setdefault("completionTime", _now())
            update_job_conditions(
                status, "Succeeded", "True", _reason("Succeeded"), f"{KIND} {name} is successfully completed."
            )
            return
        if failed > 0 and replicas > succeeded + running:
            if rspec.get("restartPolicy") != "Never":  # ExitCode included: Restarting, never Failed here
                update_job_conditions(
                    status,
                    "Restarting",
                    "True",
                    _reason("Restarting"),
                    f"{KIND} {name} is restarting because {failed} Master replica(s) failed.",
                )
            else:
                status.setdefault("completionTime", _now())
                update_job_conditions(
                    status,
                    "Failed",
                    "True",
                    _reason("Failed"),
                    f"{KIND} {name} is failed because {failed} Master replica(s) failed.",
                )

    def _create_pod(self, job: dict) -> dict:
        """common/pod.go createNewPod: ``<job>-master-0`` (pkg/core/utils.go GenGeneralName) from the
        replica's template, with the operator's labels, the pod's restartPolicy Never for ExitCode
        (pkg/core/pod.go SetRestartPolicy) and the job as controller owner. Phase Pending."""
        name = job["metadata"]["name"]
        rspec = job["spec"]["pytorchReplicaSpecs"]["Master"]
        template = rspec["template"]
        labels = {
            **(template.get("metadata") or {}).get("labels", {}),
            LABEL_OPERATOR: CONTROLLER_NAME,
            LABEL_JOB_NAME: name,
            LABEL_REPLICA_TYPE: "master",
            LABEL_REPLICA_INDEX: "0",
            LABEL_JOB_ROLE: "master",
        }
        policy = rspec.get("restartPolicy", "Never")
        pod_spec = {**template["spec"], "restartPolicy": "Never" if policy == "ExitCode" else policy}
        meta: dict = {"name": f"{name}-master-0", "namespace": self.namespace, "labels": labels}
        if job["metadata"].get("uid"):
            meta["ownerReferences"] = [
                {
                    "apiVersion": "kubeflow.org/v1",
                    "kind": KIND,
                    "name": name,
                    "uid": job["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": pod_spec,
            "status": {"phase": "Pending"},
        }
        self.core.create_namespaced_pod(self.namespace, pod)
        self.pods_created[name] += 1
        return pod

    def _delete_pods(self, pods: list[dict]) -> None:
        from kubernetes.client.exceptions import ApiException

        for p in pods:
            try:
                self.core.delete_namespaced_pod(p["metadata"]["name"], self.namespace)
            except ApiException as e:
                if e.status != 404:
                    raise

    # -- the kubelet of the Master pod -------------------------------------------------------------------
    def _set_pod_status(self, pod_name: str, status: dict) -> None:
        self.core.patch_namespaced_pod_status(pod_name, self.namespace, {"status": status})

    def _start_pod(self, job: dict) -> str:
        """The Master pod as the kubelet starts it (created first by a reconcile if there is none)."""
        pod = self._master_pod(job)
        if pod is None:
            self.reconcile(job)
            pod = self._master_pod(job)
        if pod is None:  # the job is finished, suspended or past a limit: nothing to start
            return ""
        if pod["status"].get("phase") == "Pending":
            container = pod["spec"]["containers"][0]
            self._set_pod_status(
                pod["metadata"]["name"],
                {
                    "phase": "Running",
                    "startTime": _now(),
                    "containerStatuses": [
                        {
                            "name": container["name"],
                            "image": container["image"],
                            "imageID": "",
                            "ready": True,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": _now()}},
                        }
                    ],
                },
            )
        return pod["metadata"]["name"]

    def mark_running(self, job: dict) -> None:
        """The Master pod is running and the operator has seen it: the job's condition is Running."""
        if self._start_pod(job):
            self.reconcile(job)

    def run(self, job: dict) -> int:
        """Run the Master container of a job once to completion; returns its exit code."""
        name = job["metadata"]["name"]
        step = job["metadata"]["labels"]["coe.ml/step"]
        attempt = int(job["metadata"]["labels"]["coe.ml/attempt"])
        self.ran.append(name)
        self.pod_runs[step] += 1
        if attempt <= self.fail_attempts.get(step, 0) or self.pod_runs[step] <= self.fail_runs.get(step, 0):
            self.logs[name] = f"step {step}: injected failure\nerror (injected, exit {self.fail_code})\n"
            return self.fail_code
        pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == "pytorch")
        root = self.workdir / name
        mounts: dict[str, Path] = {}
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for m in container.get("volumeMounts") or []:
            local = root / "mnt" / m["name"]
            local.mkdir(parents=True, exist_ok=True)
            mounts[m["mountPath"]] = local

        # The test's own folder (its file:// store) stands for storage shared with every pod, as a
        # PVC or S3 would be: never remapped, even where a pod mounts an emptyDir at /tmp.
        shared = str(self.workdir.parent)

        # One pass, longest mount path first, so a replacement is never rewritten by a shorter mount.
        pattern = re.compile("|".join(re.escape(p) for p in [shared, *sorted(mounts, key=len, reverse=True)]))

        def sub(text: str) -> str:
            return pattern.sub(
                lambda m: m.group(0) if m.group(0) == shared else str(mounts[m.group(0)]), text
            )

        config_maps = {c["metadata"]["name"]: c for c in self.api.objects("configmaps", self.namespace)}
        for m in container.get("volumeMounts") or []:
            vol = volumes[m["name"]]
            if "configMap" in vol:
                cm = config_maps[vol["configMap"]["name"]]
                for item in vol["configMap"].get("items") or [{"key": k, "path": k} for k in cm["data"]]:
                    (mounts[m["mountPath"]] / item["path"]).write_text(sub(cm["data"][item["key"]]))
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "PYTHONPATH": child_pythonpath(),
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        for e in container.get("env") or []:
            env[e["name"]] = sub(e["value"])
        secrets = {s["metadata"]["name"]: s for s in self.api.objects("secrets", self.namespace)}
        for source in container.get("envFrom") or []:
            secret = secrets[source["secretRef"]["name"]]
            for k, v in (secret.get("data") or {}).items():
                env[k] = base64.b64decode(v).decode()
        port = free_port()
        nnodes = 1 + (job["spec"]["pytorchReplicaSpecs"].get("Worker") or {}).get("replicas", 0)
        env.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            WORLD_SIZE=str(nnodes),
            RANK="0",
            PET_MASTER_ADDR="127.0.0.1",
            PET_MASTER_PORT=str(port),
            PET_NNODES=str(nnodes),
            PET_NODE_RANK="0",
            PET_NPROC_PER_NODE=job["spec"].get("nprocPerNode", "1"),
        )
        for d in ("HOME", "TMPDIR", "COE_CACHE_DIR"):
            if d in env:
                Path(env[d]).mkdir(parents=True, exist_ok=True)
        cmd = [sub(a) for a in container["command"]]
        assert cmd[:3] == ["python", "-m", "coe_runtime.launch"], cmd
        if self.fake:
            module_at = cmd.index("coe_runtime") - 1
            assert cmd[module_at] == "-m", cmd
            cmd = [sys.executable, "-m", "tests.operator.fake_runtime", *cmd[module_at + 2 :]]
        else:
            cmd[0] = sys.executable
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        self.logs[name] = proc.stdout[-4000:] + proc.stderr[-4000:]
        return proc.returncode

    def record_pod(self, job: dict, exit_code: int) -> dict:
        """The kubelet's record of the Master pod's end: phase Succeeded/Failed, the container's
        terminated state with its exit code, and its output served as the pod log."""
        name = job["metadata"]["name"]
        pod_name = self._start_pod(job) or f"{name}-master-0"
        pod = next(p for p in self.api.objects("pods", self.namespace) if p["metadata"]["name"] == pod_name)
        now = _now()
        container = pod["spec"]["containers"][0]
        started = (
            ((pod["status"].get("containerStatuses") or [{}])[0].get("state") or {}).get("running") or {}
        ).get("startedAt", now)
        terminated = {
            "exitCode": exit_code,
            # the kubelet says OOMKilled when the kernel's OOM killer ended the container; a test's
            # injected 137 stands for that
            "reason": "Completed" if exit_code == 0 else "OOMKilled" if exit_code == 137 else "Error",
            "startedAt": started,
            "finishedAt": now,
        }
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }
        self._set_pod_status(pod_name, status)
        self.api.set_pod_log(self.namespace, pod_name, self.logs.get(name, ""))
        return {**pod, "status": status}

    def finish(self, job: dict, exit_code: int) -> None:
        """The Master pod ended with ``exit_code`` and the operator reconciled the job: Succeeded on 0;
        on 128-255 the pod is deleted and the job is Restarting (the next :meth:`step_all` runs a new
        pod); on 1-127 the job is Failed."""
        self.record_pod(job, exit_code)
        self.reconcile(job)

    def step_all(self) -> int:
        """One pass of the operator and the kubelet over every unfinished job; returns how many pods ran.

        Per job: the operator reconciles what the last pass left (a pod that ended: Succeeded, or
        deleted and Restarting on 128-255, or Failed on 1-127); a missing Master pod is created (the
        deletion's event wakes the real operator at once, so a second reconcile follows), started, run
        to its end and recorded by the kubelet. The operator sees that end on the next pass: how long
        a real cluster shows a Failed pod before the operator deletes it depends on informer latency
        and is not knowable here (usually well under a second).
        """
        from kubernetes.client.exceptions import ApiException

        n = 0
        for job in self.unfinished():
            try:
                n += self._step_job(job)
            except ApiException as e:
                # Deleted while this pass looked at it (the controller deletes a job past its restart
                # limit): the real operator's informer drops it, and the garbage collector its pods.
                if e.status != 404:
                    raise
        return n

    def _step_job(self, job: dict) -> int:
        """One operator + kubelet pass over one job; returns 1 when a pod ran."""
        status = self.reconcile(job)
        if _is_true(status, "Succeeded") or _is_true(status, "Failed"):
            return 0
        if (job["spec"].get("runPolicy") or {}).get("suspend"):
            return 0  # Kueue would admit it; nobody does here
        if self._master_pod(job) is None:
            self.reconcile(job)  # createNewPod
        pod = self._master_pod(job)
        if pod is None or pod["status"].get("phase") in ("Succeeded", "Failed"):
            return 0
        self.mark_running(job)
        self.record_pod(job, self.run(job))
        return 1


class ControllerProcess:
    """``coe-ctl operator`` as a real process against the emulator (killable, restartable)."""

    def __init__(self, kubeconfig: Path, namespace: str, env: dict | None = None, log: Path | None = None):
        self.kubeconfig, self.namespace = kubeconfig, namespace
        self.env = {**os.environ, **(env or {}), "PYTHONPATH": child_pythonpath()}
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> ControllerProcess:
        cmd = [
            sys.executable,
            "-m",
            "coe_controller.cli",
            "operator",
            "-n",
            self.namespace,
            "--kubeconfig",
            str(self.kubeconfig),
            "--health-port",
            "0",
            "--resync",
            "2",
            "--retry-backoff",
            "0.5",
        ]
        out = open(self.log, "a") if self.log else subprocess.DEVNULL  # noqa: SIM115 (lives with the process)
        self.proc = subprocess.Popen(
            cmd, env=self.env, cwd=REPO, stdout=out, stderr=out, start_new_session=True
        )
        self.starts += 1
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
