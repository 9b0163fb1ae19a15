"""Test harness: plays the Kubeflow training operator (v1.9) against the kmock API, and runs the controller.

For each PyTorchJob the controller creates, :class:`TrainingOperator` plays two parts:

* the **training operator's reconcile** of the job (:meth:`TrainingOperator.reconcile`), rule by rule
  after kubeflow/training-operator branch release-1.9 (each rule cites the file and function it
  mirrors): the job defaulted as ``Reconcile`` does it in memory (the ``pytorch`` container's port
  ``pytorchjob-port`` 23456, ``pkg/apis/kubeflow.org/v1/pytorch_defaults.go``); one pod per replica type
  and index, ``<job>-master-0`` and ``<job>-worker-<i>`` (``common/pod.go`` ``ReconcilePods`` /
  ``createNewPod``), each with the env the operator injects (``pytorch/envvar.go`` ``setPodEnv``,
  ``pytorch/master.go``: MASTER_ADDR/PET_MASTER_ADDR ``<job>-master-0``, MASTER_PORT/PET_MASTER_PORT,
  WORLD_SIZE = replicas x nprocPerNode, RANK = PET_NODE_RANK = the index (+1 for a Worker), PET_NNODES,
  PET_NPROC_PER_NODE, PYTHONUNBUFFERED); one headless Service per pod, of the same name
  (``common/service.go`` ``ReconcileServices`` / ``CreateNewService``), so that MASTER_ADDR names the
  Master's Service; a pod exiting 128-255 under ``restartPolicy: ExitCode`` deleted and recreated (job
  condition Restarting, then Running again; never Failed, and never counted against
  ``runPolicy.backoffLimit``: kubeflow/trainer#2045), 1-127 failing the job; ``backoffLimit`` /
  ``activeDeadlineSeconds`` as ``ReconcileJobs`` applies them; the conditions, ``replicaStatuses``,
  ``startTime`` and ``completionTime`` ``UpdateJobStatus`` writes (a job with a Master succeeds when its
  Master succeeded: "when master is succeed, the job is finished");
* the **kubelet** of those pods (:class:`tests.support.kubelet.Kubelet`, shared with the Trainer v2
  harness): each pass runs every pod of a job at the same time as a local process with what a pod gets
  (mounted ConfigMap files, env and envFrom, the injected variables; the Master's Service name resolved
  to 127.0.0.1 only if that Service exists and selects a running pod, its port mapped to a free local
  one); records each pod's phase, its container's exit code and its log; deletes a pod as the kubelet does
  (:meth:`~tests.support.kubelet.Kubelet.delete_pod`: SIGTERM, SIGKILL after the grace period).

Not modelled (and said so where it matters): the Worker's init container that waits for the Master's DNS
name (``pytorch/initcontainer.go``), elastic policy, gang scheduling, TTL cleanup, Kueue admitting a
suspended job, ownership adoption, Go's random order over replica types (here always Master, then
Worker) and the timing of the real informers.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.kmock_api import KubeAPI, free_port
from tests.support.kubelet import DEFAULT_TERMINATION_GRACE_S, NODE_NAME, Kubelet
from tests.support.kubelet import now as _now
from tests.support.pythonpath import child_pythonpath

REPO = Path(__file__).resolve().parents[2]
NS = "coe-test"  # the namespace of the operator tests

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
PORT_NAME = "pytorchjob-port"  # pkg/apis/kubeflow.org/v1/pytorch_types.go PyTorchJobDefaultPortName
DEFAULT_PORT = 23456  # pytorch_types.go PyTorchJobDefaultPort
REPLICA_TYPES = ("Master", "Worker")  # the order this harness reconciles them in (Go: a map, any order)


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


def defaulted(job: dict) -> dict:
    """The job as ``Reconcile`` sees it after ``r.Scheme.Default(pytorchjob)`` (in memory, never written
    back): pkg/apis/kubeflow.org/v1/pytorch_defaults.go SetDefaults_PyTorchJob: cleanPodPolicy None;
    per replica ``replicas`` 1, ``restartPolicy`` OnFailure and the ``pytorch`` container's port
    ``pytorchjob-port`` 23456 when it has none of that name (setPyTorchDefaultPort); nprocPerNode "auto"."""
    job = copy.deepcopy(job)
    spec = job["spec"]
    spec.setdefault("runPolicy", {}).setdefault("cleanPodPolicy", "None")
    for rspec in spec["pytorchReplicaSpecs"].values():
        rspec.setdefault("replicas", 1)
        rspec.setdefault("restartPolicy", "OnFailure")
        for c in rspec["template"]["spec"]["containers"]:
            if c["name"] == CONTAINER and not any(p.get("name") == PORT_NAME for p in c.get("ports") or []):
                c.setdefault("ports", []).append({"name": PORT_NAME, "containerPort": DEFAULT_PORT})
    spec.setdefault("nprocPerNode", "auto")
    return job


def replica_name(job_name: str, rtype: str, index: int) -> str:
    """pkg/core/utils.go GenGeneralName (pytorch/envvar.go replicaName): ``<job>-<type lowercased>-<i>``."""
    return f"{job_name}-{rtype.lower()}-{index}".replace("/", "-")


def _master_port(job: dict) -> int:
    """pytorch/envvar.go getPortFromPyTorchJob: the Master's ``pytorch`` container port ``pytorchjob-port``."""
    for c in job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]:
        if c["name"] == CONTAINER:
            for p in c.get("ports") or []:
                if p.get("name") == PORT_NAME:
                    return int(p["containerPort"])
    raise AssertionError("port not found")  # the real one fails the reconcile the same way


def operator_env(job: dict, rtype: str, index: int) -> list[dict]:
    """pkg/controller.v1/pytorch/envvar.go setPodEnv (and master.go MasterEnvVarGenerator): what the
    operator appends to each container's env of the pod ``rtype``/``index`` of a defaulted job."""
    replicas = job["spec"]["pytorchReplicaSpecs"]
    total = sum(int(r.get("replicas", 1)) for r in replicas.values())  # getTotalReplicas
    nproc_value = job["spec"].get("nprocPerNode")
    try:
        nproc = int(nproc_value) if nproc_value is not None else 1  # getNprocPerNodeInt ("auto": 1)
    except ValueError:
        nproc = 1
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    if "Master" in replicas:
        port, addr = str(_master_port(job)), replica_name(job["metadata"]["name"], "Master", 0)
        env += [
            {"name": "MASTER_PORT", "value": port},
            {"name": "PET_MASTER_PORT", "value": port},
            {"name": "MASTER_ADDR", "value": addr},
            {"name": "PET_MASTER_ADDR", "value": addr},
        ]
        rank = index + 1 if rtype == "Worker" else index
        env += [
            {"name": "WORLD_SIZE", "value": str(total * nproc)},
            {"name": "RANK", "value": str(rank)},
            {"name": "PET_NODE_RANK", "value": str(rank)},
        ]
    if nproc_value is not None:
        env.append({"name": "PET_NPROC_PER_NODE", "value": str(nproc_value)})
    env.append({"name": "PET_NNODES", "value": str(total)})  # no elasticPolicy: nnodes as an int
    return env


def _owner(job: dict) -> list[dict]:
    """common/job_controller.go GenOwnerReference."""
    if not job["metadata"].get("uid"):
        return []
    return [
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": KIND,
            "name": job["metadata"]["name"],
            "uid": job["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _index(obj: dict) -> int:
    """pkg/util/labels ReplicaIndex: the replica-index label."""
    return int(obj["metadata"]["labels"][LABEL_REPLICA_INDEX])


def _slices(objs: list[dict], replicas: int) -> list[list[dict]]:
    """pkg/core/pod.go GetPodSlices / pkg/core/service.go GetServiceSlices: by replica index, at least
    ``replicas`` long (longer when an object has a higher index)."""
    size = max([replicas, *[_index(o) + 1 for o in objs]])
    out: list[list[dict]] = [[] for _ in range(size)]
    for o in objs:
        out[_index(o)].append(o)
    return out


def _terminating(pod: dict) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


class TrainingOperator(Kubelet):
    container = CONTAINER

    def __init__(self, api: KubeAPI, namespace: str, workdir: Path, *, fake: bool = True):
        super().__init__(api, namespace, workdir, fake=fake)
        self.resolved: dict[str, dict[str, str]] = {}  # pod name -> the names its env named, as resolved
        self._ports: dict[tuple, int] = {}  # (job, run, Service port) -> the local port standing for it

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

    def _owned(self, plural: str, job: dict) -> list[dict]:
        """By the labels of common/job_controller.go GenLabels (ownership adoption is not modelled)."""
        name = job["metadata"]["name"].replace("/", "-")
        return [
            o
            for o in self.api.objects(plural, self.namespace)
            if (o["metadata"].get("labels") or {}).get(LABEL_JOB_NAME) == name
            and o["metadata"]["labels"].get(LABEL_OPERATOR) == CONTROLLER_NAME
        ]

    def pods_of(self, job: dict) -> list[dict]:
        """The job's pods: pytorchjob_controller.go GetPodsForJob."""
        return self._owned("pods", job)

    def services_of(self, job: dict) -> list[dict]:
        """The job's Services: pytorchjob_controller.go GetServicesForJob."""
        return self._owned("services", job)

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
        """One reconcile of one job; returns the status written. Mirrors pytorchjob_controller.go
        Reconcile (the job defaulted in memory), then pkg/controller.v1/common/job.go ReconcileJobs:
        common/pod.go ReconcilePods and common/service.go ReconcileServices per replica type, then
        pytorch/pytorchjob_controller.go UpdateJobStatus."""
        job = defaulted(self._job(job["metadata"]["name"]) or job)
        name = job["metadata"]["name"]
        spec = job["spec"]
        run_policy = spec["runPolicy"]
        replicas = spec["pytorchReplicaSpecs"]
        status = copy.deepcopy(job.get("status") or {})
        old = copy.deepcopy(status)
        # pytorchjob_controller.go onOwnerCreateFunc: the Created condition, when the job is first seen.
        update_job_conditions(status, "Created", "True", _reason("Created"), f"PyTorchJob {name} is created.")
        pods = self.pods_of(job)
        services = self.services_of(job)

        if finished(status):
            # ReconcileJobs: a finished job only has its resources cleaned up (CleanUpResources); with
            # cleanPodPolicy None (what we render) DeletePodsAndServices deletes nothing. TTL: not modelled.
            self._delete_pods_and_services(pods, run_policy, status)
            if _is_true(status, "Succeeded"):
                for rs in (status.get("replicaStatuses") or {}).values():
                    rs["succeeded"] = rs.get("succeeded", 0) + rs.pop("active", 0)
            return self._maybe_write(job, old, status)

        if run_policy.get("suspend"):
            # ReconcileJobs, IsJobSuspended: pods and Services removed, Running False, Suspended True.
            # Kueue admitting (unsuspending) the job is not modelled here.
            self._delete_pods_and_services(pods, run_policy, status)
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
        # k8sutil.FilterActivePods (IsPodActive): neither Succeeded nor Failed, and not being deleted.
        active = [
            p for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed") and not _terminating(p)
        ]
        failed = sum(1 for p in pods if p["status"].get("phase") == "Failed")  # FilterPodCount(PodFailed)
        total_replicas = sum(int(r.get("replicas", 1)) for r in replicas.values())  # GetTotalReplicas
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
            self._delete_pods_and_services(pods, run_policy, status)
            update_job_conditions(status, "Failed", "True", _reason("Failed"), failure)
            return self._maybe_write(job, old, status)

        for rtype in (t for t in REPLICA_TYPES if t in replicas):
            self._reconcile_pods(job, status, pods, rtype)
            self._reconcile_services(job, services, rtype)
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

    def _reconcile_pods(self, job: dict, status: dict, pods: list[dict], rtype: str) -> None:
        """pkg/controller.v1/common/pod.go ReconcilePods for one replica type."""
        name = job["metadata"]["name"]
        rspec = job["spec"]["pytorchReplicaSpecs"][rtype]
        rt = rtype.lower()
        replicas = int(rspec.get("replicas", 1))
        # initializeReplicaStatuses: counted afresh from the pods that exist now, on every reconcile.
        counts = status.setdefault("replicaStatuses", {})
        counts[rtype] = {}
        mine = [p for p in pods if p["metadata"]["labels"].get(LABEL_REPLICA_TYPE) == rt]
        for index, slice_ in enumerate(_slices(mine, replicas)):
            if len(slice_) > 1:
                continue  # "We have too many pods for %s %d": only a warning
            if not slice_:
                self._create_pod(job, rtype, index)  # "Need to create new pod"
                continue
            pod = slice_[0]
            if index >= replicas:
                self._delete_pods([pod])  # out of range: "we should kill the pod"
            exit_code = NO_EXIT_CODE
            for cs in pod["status"].get("containerStatuses") or []:
                term = (cs.get("state") or {}).get("terminated")
                if cs.get("name") == CONTAINER and term:
                    exit_code = int(
                        term["exitCode"]
                    )  # also an ExitedWithCode Event on the job (not modelled)
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
                        f"job {name} is restarting because {rtype} replica(s) failed.",
                    )
                elif policy == "ExitCode":
                    # "Pod has a non-retryable exit code. Failing job." (no completionTime on this path)
                    update_job_conditions(
                        status,
                        "Failed",
                        "True",
                        _reason("Failed"),
                        f'job "{name}" is failing because "{rtype}" replica(s) failed.',
                    )
            # updateJobReplicaStatuses -> pkg/core/status.go UpdateJobReplicaStatuses (a pod just deleted
            # above still counts as failed in this pass; a Running pod being deleted counts as failed)
            phase = pod["status"].get("phase")
            key = {"Running": "active", "Succeeded": "succeeded", "Failed": "failed"}.get(phase)
            if phase == "Running" and _terminating(pod):
                key = "failed"
            if key:
                counts[rtype][key] = counts[rtype].get(key, 0) + 1

    def _reconcile_services(self, job: dict, services: list[dict], rtype: str) -> None:
        """pkg/controller.v1/common/service.go ReconcileServices: one Service per replica index."""
        rt = rtype.lower()
        replicas = int(job["spec"]["pytorchReplicaSpecs"][rtype].get("replicas", 1))
        mine = [s for s in services if s["metadata"]["labels"].get(LABEL_REPLICA_TYPE) == rt]
        for index, slice_ in enumerate(_slices(mine, replicas)):
            if not slice_:
                self._create_service(job, rtype, index)  # "need to create new service"
            elif len(slice_) == 1 and index >= replicas:
                self._delete_service(slice_[0]["metadata"]["name"])

    def _create_service(self, job: dict, rtype: str, index: int) -> dict:
        """common/service.go CreateNewService: a headless Service (clusterIP None) named like the pod,
        selecting it by GenLabels + replica type + index, with the ports of the replica's ``pytorch``
        container (core/service.go GetPortsFromJob; none: no ports)."""
        name = job["metadata"]["name"]
        labels = {
            LABEL_OPERATOR: CONTROLLER_NAME,
            LABEL_JOB_NAME: name.replace("/", "-"),
            LABEL_REPLICA_TYPE: rtype.lower(),
            LABEL_REPLICA_INDEX: str(index),
        }
        template = job["spec"]["pytorchReplicaSpecs"][rtype]["template"]
        container = next(c for c in template["spec"]["containers"] if c["name"] == CONTAINER)
        ports = [{"name": p["name"], "port": int(p["containerPort"])} for p in container.get("ports") or []]
        meta: dict = {"name": replica_name(name, rtype, index), "namespace": self.namespace, "labels": labels}
        if _owner(job):
            meta["ownerReferences"] = _owner(job)
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"clusterIP": "None", "selector": dict(labels), "ports": ports},
        }
        self.core.create_namespaced_service(self.namespace, service)
        return service

    def _delete_service(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespaced_service(name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise

    def _update_job_status(self, job: dict, status: dict) -> None:
        """pkg/controller.v1/pytorch/pytorchjob_controller.go UpdateJobStatus (a job with a Master)."""
        name = job["metadata"]["name"]
        status.setdefault("startTime", _now())  # "Set StartTime."
        for rtype in (t for t in REPLICA_TYPES if t in job["spec"]["pytorchReplicaSpecs"]):
            rspec = job["spec"]["pytorchReplicaSpecs"][rtype]
            rs = status.setdefault("replicaStatuses", {}).setdefault(rtype, {})
            rs["selector"] = (
                f"{LABEL_JOB_NAME}={name},{LABEL_OPERATOR}={CONTROLLER_NAME},{LABEL_REPLICA_TYPE}={rtype.lower()}"
            )
            replicas = int(rspec.get("replicas", 1))
            succeeded, running, failed = rs.get("succeeded", 0), rs.get("active", 0), rs.get("failed", 0)
            expected = replicas - succeeded
            if rtype == "Master":  # ContainsMasterSpec: only the Master decides Running and Succeeded
                if running > 0:
                    msg = f"{KIND} {name} is running."
                    update_job_conditions(status, "Running", "True", _reason("Running"), msg)
                if expected == 0:  # "when master is succeed, the job is finished."
                    status.setdefault("completionTime", _now())
                    update_job_conditions(
                        status,
                        "Succeeded",
                        "True",
                        _reason("Succeeded"),
                        f"{KIND} {name} is successfully completed.",
                    )
                    return
            if failed > 0 and replicas > succeeded + running:
                if rspec.get("restartPolicy") != "Never":  # ExitCode included: Restarting, never Failed here
                    update_job_conditions(
                        status,
                        "Restarting",
                        "True",
                        _reason("Restarting"),
                        f"{KIND} {name} is restarting because {failed} {rtype} replica(s) failed.",
                    )
                else:
                    status.setdefault("completionTime", _now())
                    update_job_conditions(
                        status,
                        "Failed",
                        "True",
                        _reason("Failed"),
                        f"{KIND} {name} is failed because {failed} {rtype} replica(s) failed.",
                    )

    def _create_pod(self, job: dict, rtype: str, index: int) -> dict:
        """common/pod.go createNewPod: ``<job>-<type>-<index>`` (pkg/core/utils.go GenGeneralName) from the
        replica's template, with the operator's labels (job-role master for the Master: IsMasterRole),
        the env of SetClusterSpec (pytorch/envvar.go setPodEnv, appended to every container's env), the
        pod's restartPolicy Never for ExitCode (pkg/core/pod.go SetRestartPolicy) and the job as
        controller owner. kube-apiserver defaults terminationGracePeriodSeconds to 30 (pkg/apis/core/v1/
        defaults.go SetDefaults_PodSpec). Phase Pending."""
        name = job["metadata"]["name"]
        rspec = job["spec"]["pytorchReplicaSpecs"][rtype]
        template = copy.deepcopy(rspec["template"])
        labels = {
            **(template.get("metadata") or {}).get("labels", {}),
            LABEL_OPERATOR: CONTROLLER_NAME,
            LABEL_JOB_NAME: name.replace("/", "-"),
            LABEL_REPLICA_TYPE: rtype.lower(),
            LABEL_REPLICA_INDEX: str(index),
        }
        if rtype == "Master":
            labels[LABEL_JOB_ROLE] = "master"
        injected = operator_env(job, rtype, index)
        for c in template["spec"]["containers"]:
            c["env"] = [*(c.get("env") or []), *copy.deepcopy(injected)]
        policy = rspec.get("restartPolicy", "Never")
        pod_spec = {**template["spec"], "restartPolicy": "Never" if policy == "ExitCode" else policy}
        pod_spec.setdefault("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_S)
        meta: dict = {"name": replica_name(name, rtype, index), "namespace": self.namespace, "labels": labels}
        if (template.get("metadata") or {}).get("annotations"):
            meta["annotations"] = dict(template["metadata"]["annotations"])
        if _owner(job):
            meta["ownerReferences"] = _owner(job)
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
        """PodControl.DeletePod: a DELETE with default options (graceful where the pod runs here)."""
        for p in pods:
            self.delete_pod(p["metadata"]["name"])

    def _delete_pods_and_services(self, pods: list[dict], run_policy: dict, status: dict) -> None:
        """common/job.go DeletePodsAndServices: nothing without pods; nothing for a finished job under
        cleanPodPolicy None; for Running, only Running and Pending pods; each pod with its Service (same name)."""
        if not pods:
            return
        policy = run_policy.get("cleanPodPolicy", "None")
        if finished(status) and policy == "None":
            return
        for p in pods:
            if (
                finished(status)
                and policy == "Running"
                and p["status"].get("phase") not in ("Running", "Pending")
            ):
                continue
            self._delete_pods([p])
            self._delete_service(p["metadata"]["name"])

    # -- the kubelet of the job's pods -------------------------------------------------------------------
    def _set_pod_status(self, pod_name: str, status: dict) -> None:
        self.core.patch_namespaced_pod_status(pod_name, self.namespace, {"status": status})

    def _start_pods(self, job: dict) -> list[dict]:
        """The job's pods as the scheduler and kubelet start them (created first by a reconcile if some are
        missing): bound to a node (spec.nodeName) and Running. Returns the pods to run; none when the job
        is finished, suspended or past a limit."""
        replicas = defaulted(job)["spec"]["pytorchReplicaSpecs"]
        if len(self.pods_of(job)) < sum(int(r["replicas"]) for r in replicas.values()):
            self.reconcile(job)  # createNewPod (the deletion's event wakes the real operator at once)
        pods = sorted(
            (
                p
                for p in self.pods_of(job)
                if p["status"].get("phase") in ("Pending", "Running") and not _terminating(p)
            ),
            key=lambda p: (p["metadata"]["labels"][LABEL_REPLICA_TYPE] != "master", _index(p)),
        )  # the Master first
        for pod in pods:
            if pod["status"].get("phase") != "Pending":
                continue
            name = pod["metadata"]["name"]
            self.core.patch_namespaced_pod(name, self.namespace, {"spec": {"nodeName": NODE_NAME}})
            container = next(c for c in pod["spec"]["containers"] if c["name"] == CONTAINER)
            status = {
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
            }
            self._set_pod_status(name, status)
            pod["spec"]["nodeName"], pod["status"] = NODE_NAME, status
        return pods

    def mark_running(self, job: dict) -> None:
        """The job's pods are running and the operator has seen them: the job's condition is Running."""
        if self._start_pods(job):
            self.reconcile(job)

    def run(self, job: dict) -> int:
        """Run the job's pods once to their ends (nothing recorded); returns the Master's exit code."""
        pods = self._start_pods(job)
        codes = self.run_pods(job, pods, record=False)
        master = replica_name(job["metadata"]["name"], "Master", 0)
        return codes.get(master, next(iter(codes.values()), 0))

    def network(self, job: dict, pod: dict, env: dict[str, str]) -> dict[str, str]:
        """Cluster DNS for MASTER_ADDR / PET_MASTER_ADDR: the name resolves only to a Service of that name
        that selects a running pod (a headless Service's records are its ready pods; ours have no readiness
        probe), here 127.0.0.1; MASTER_PORT / PET_MASTER_PORT, one of that Service's ports, become a free
        local port shared by the job's pods in this run (on a cluster each pod has an address of its own)."""
        addr = env.get("MASTER_ADDR")
        if not addr:
            return env
        service = next(
            (s for s in self.api.objects("services", self.namespace) if s["metadata"]["name"] == addr), None
        )
        assert service is not None, (
            f"{pod['metadata']['name']}: MASTER_ADDR {addr} does not resolve: no such Service"
        )
        selector = service["spec"].get("selector") or {}
        endpoints = [
            p
            for p in self.api.objects("pods", self.namespace)
            if selector
            and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            and p["status"].get("phase") == "Running"
        ]
        assert endpoints, f"{pod['metadata']['name']}: MASTER_ADDR {addr}: the Service selects no running pod"
        ports = {str(p["port"]) for p in service["spec"].get("ports") or []}
        assert env.get("MASTER_PORT") in ports, (env.get("MASTER_PORT"), ports)
        local = self._ports.setdefault(
            (job["metadata"]["name"], len(self.ran), env["MASTER_PORT"]), free_port()
        )
        self.resolved[pod["metadata"]["name"]] = {"MASTER_ADDR": addr, "MASTER_PORT": env["MASTER_PORT"]}
        out = dict(env, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(local))
        if env.get("PET_MASTER_ADDR") == addr:
            out["PET_MASTER_ADDR"] = "127.0.0.1"
        if env.get("PET_MASTER_PORT") == env["MASTER_PORT"]:
            out["PET_MASTER_PORT"] = str(local)
        return out

    def record_end(self, job: dict, pod: dict, exit_code: int, reason: str, log: str) -> None:
        """The kubelet's record of a pod's end; for a pod being deleted, the operator then reconciles on
        that status update (before the kubelet removes the pod: status_manager.go canBeDeleted)."""
        self._record_container_end(
            pod["metadata"]["name"], exit_code, reason, log, uid=pod["metadata"].get("uid")
        )
        if _terminating(pod):
            self.reconcile(job)

    def after_deletion_mark(self, job: dict) -> None:
        """The pod's update (deletionTimestamp set) wakes the operator: the pod counts as failed, the job
        is Restarting while it terminates (pkg/core/status.go UpdateJobReplicaStatuses)."""
        self.reconcile(job)

    def _record_container_end(
        self, pod_name: str, exit_code: int, reason: str = "", log: str = "", uid: str | None = None
    ) -> dict:
        """Phase Succeeded/Failed, the container's terminated state with its exit code, its output served
        as the pod log (on the pod of ``uid`` when given: never on a new pod of the same name)."""
        pod = next(
            (p for p in self.api.objects("pods", self.namespace) if p["metadata"]["name"] == pod_name), None
        )
        if pod is None or (uid and pod["metadata"].get("uid") != uid):
            return {}  # deleted meanwhile: nothing left to record on
        now = _now()
        container = next(c for c in pod["spec"]["containers"] if c["name"] == CONTAINER)
        started = (
            ((pod["status"].get("containerStatuses") or [{}])[0].get("state") or {}).get("running") or {}
        ).get("startedAt", now)
        terminated = {
            "exitCode": exit_code,
            # the kubelet says OOMKilled when the kernel's OOM killer ended the container; a test's
            # injected 137 stands for that (a SIGKILL at the end of a grace period passes reason Error)
            "reason": reason
            or ("Completed" if exit_code == 0 else "OOMKilled" if exit_code == 137 else "Error"),
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
        self.api.set_pod_log(self.namespace, pod_name, log)
        return {**pod, "status": status}

    def record_pod(self, job: dict, exit_code: int) -> dict:
        """The kubelet's record of the Master pod's end with ``exit_code`` (started first if need be)."""
        name = job["metadata"]["name"]
        self._start_pods(job)
        pod_name = replica_name(name, "Master", 0)
        log = self.pod_logs.get(pod_name, self.logs.get(name, ""))
        return self._record_container_end(pod_name, exit_code, "", log)

    def finish(self, job: dict, exit_code: int) -> None:
        """The Master pod ended with ``exit_code`` and the operator reconciled the job: Succeeded on 0;
        on 128-255 the pod is deleted and the job is Restarting (the next :meth:`step_all` runs a new
        pod); on 1-127 the job is Failed."""
        self.record_pod(job, exit_code)
        self.reconcile(job)

    def _step_job(self, job: dict) -> int:
        """One operator + kubelet pass over one job; returns how many of its pods ran.

        Per job: the operator reconciles what the last pass left (a pod that ended: Succeeded, or
        deleted and Restarting on 128-255, or Failed on 1-127); missing pods are created (the
        deletion's event wakes the real operator at once, so a second reconcile follows), started
        together, run to their ends and recorded by the kubelet as each ends. The operator sees those
        ends on the next pass (a pod being deleted excepted: its updates reach it at once): how long a
        real cluster shows a Failed pod before the operator deletes it depends on informer latency and is
        not knowable here (usually well under a second).
        """
        status = self.reconcile(job)
        if _is_true(status, "Succeeded") or _is_true(status, "Failed"):
            return 0
        if (job["spec"].get("runPolicy") or {}).get("suspend"):
            return 0  # Kueue would admit it; nobody does here
        pods = self._start_pods(job)
        if not pods:
            return 0
        self.reconcile(job)  # the operator sees them Running
        self.run_pods(job, pods)
        return len(pods)


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
