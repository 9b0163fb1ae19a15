"""Test harness: plays Kubeflow Trainer v2 (``TrainJob``) against the kmock API, as
:class:`tests.operator.harness.TrainingOperator` plays the v1 training operator.

For each TrainJob the controller creates, :class:`TrainerV2` plays, rule by rule after kubeflow/trainer
(``git show HEAD:<file>`` in the mirror of github.com/kubeflow/trainer; each rule names the file it mirrors):

* the **TrainJob controller** (``pkg/controller/trainjob_controller.go``): the ``Suspended`` condition
  (``setSuspendedCondition``: True "Suspended" / "TrainJob is suspended" while ``spec.suspend``, then
  False "Resumed"), ``activeDeadlineSeconds`` (``reconcileDeadline``: from creation or from the resume,
  Failed "DeadlineExceeded" / "TrainJob exceeded its active deadline", and the JobSet deleted), and the
  status the JobSet plugin derives (``pkg/runtime/framework/plugins/jobset/jobset.go`` ``Status``: the
  JobSet's ``Completed`` / ``Failed`` conditions copied as ``Complete`` / ``Failed``, ``jobsStatus`` from
  the JobSet's ``replicatedJobsStatus``). There is no ``Created`` or ``Running`` condition in v2;
* the **runtime** (``pkg/runtime/core/trainingruntime.go``): the ClusterTrainingRuntime named by
  ``spec.runtimeRef`` (read from the API; else the ``torch-distributed`` chart template in
  ../shared/k8s/trainer-v2/), its JobSet template with ``runtimePatches`` merged (``mergeRuntimePatches``, a
  strategic merge: lists by ``name``), and ``spec.trainer`` applied to the ``node`` container
  (``pkg/runtime/framework/plugins/jobset/builder.go`` Trainer: image, command, env, resourcesPerNode);
* the **kubelet** of node 0's pod: :class:`tests.support.kubelet.Kubelet`, shared with the v1 harness
  (volumes, env, the fake or real runtime call);
* the **torch plugin** (``pkg/runtime/framework/plugins/torch/torch.go`` ``EnforceMLPolicy``): env
  PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK (the Job completion index), PET_MASTER_ADDR
  ``<trainjob>-node-0-0.<trainjob>`` and PET_MASTER_PORT 29500 (``pkg/constants/constants.go``
  ContainerTrainerPort); no MASTER_ADDR / WORLD_SIZE / RANK (torchrun derives them). The address is
  recorded as v2 writes it (:attr:`TrainerV2.injected`) but the local process gets 127.0.0.1 and a free
  port: no DNS for the headless Service here;
* **JobSet + the Job controller** (not kubeflow/trainer code: kubernetes-sigs/jobset and kube-controller-
  manager, not in the sources here, so these rules are from their documented behaviour): the JobSet is
  named like the TrainJob (jobset.go Build) and owned by it; each replicated job ``node`` becomes an
  Indexed Job ``<trainjob>-node-0`` with parallelism = completions = numNodes (jobset.go
  syncParallelCount); its pods are ``<trainjob>-node-0-<index>-<5 random>`` with hostname
  ``<trainjob>-node-0-<index>`` in subdomain ``<trainjob>`` (jobset.go syncPodNetwork builds exactly these
  endpoints), labelled ``jobset.sigs.k8s.io/jobset-name``, ``jobset.sigs.k8s.io/replicatedjob-name``,
  ``jobset.sigs.k8s.io/job-index`` and ``batch.kubernetes.io/job-completion-index``. The pod's
  restartPolicy is the runtime's, and **OnFailure when it sets none** (JobSet's defaulting webhook;
  unverified here). Under ``Never`` a failed pod stays Failed (its exit code readable) and a new pod
  replaces it; under ``OnFailure`` the container restarts in place (restartCount, lastState). The Job
  fails when its failures exceed ``backoffLimit`` (the runtime's; Kubernetes' default 6), or at once
  when a ``podFailurePolicy`` rule ``FailJob`` matches the exit code; active pods of a failed Job are
  deleted. With maxRestarts 0 (no failurePolicy in the runtime) a failed Job fails the JobSet.

Not modelled (said so where it matters): pods other than index 0 (only node 0 runs here; the v1 harness
runs every replica), deleting a running pod (SIGTERM, the grace period: modelled for v1 only),
initializers, the headless Service, gang scheduling, Kueue admitting a suspended TrainJob, JobSet
failurePolicy restarts, TTL cleanup, and informer timing.
"""

from __future__ import annotations

import copy
import secrets
import time
from pathlib import Path

import yaml

from tests.operator.harness import _now, _parse
from tests.support.kmock_api import KubeAPI, free_port
from tests.support.kubelet import Kubelet
from tests.support.shared import SHARED

KIND = "TrainJob"
GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
RUNTIME_PLURAL = "clustertrainingruntimes"
JOBSET_GROUP, JOBSET_VERSION, JOBSET_PLURAL = "jobset.x-k8s.io", "v1alpha2", "jobsets"
TORCH_DISTRIBUTED = SHARED / "k8s" / "trainer-v2" / "torch-distributed.yaml"
NODE = "node"  # pkg/constants/constants.go Node: the trainer's replicated job and container
TRAINER_PORT = 29500  # pkg/constants/constants.go ContainerTrainerPort
DEFAULT_BACKOFF_LIMIT = 6  # batch/v1 Job spec.backoffLimit default
# JobSet / Job pod labels (kubernetes-sigs/jobset api keys; batch/v1 JobCompletionIndexAnnotation)
LABEL_JOBSET = "jobset.sigs.k8s.io/jobset-name"
LABEL_RJOB = "jobset.sigs.k8s.io/replicatedjob-name"
LABEL_JOB_INDEX = "jobset.sigs.k8s.io/job-index"
LABEL_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# TrainJob conditions and reasons: pkg/apis/trainer/v1alpha1/trainjob_types.go; messages: constants.go
SUSPENDED_MESSAGE = "TrainJob is suspended"
RESUMED_MESSAGE = "TrainJob is resumed"
DEADLINE_MESSAGE = "TrainJob exceeded its active deadline"


def finished(job: dict) -> bool:
    """pkg/util/trainjob/trainjob.go IsTrainJobFinished: Complete or Failed is True."""
    conds = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conds)


def _true(conds: list[dict], type_: str) -> bool:
    return any(c["type"] == type_ and c["status"] == "True" for c in conds)


def set_condition(conds: list[dict], type_: str, status: str, reason: str, message: str) -> None:
    """apimachinery meta.SetStatusCondition: one entry per type; lastTransitionTime moves only when the
    status changes."""
    now = _now()
    for c in conds:
        if c["type"] == type_:
            if c["status"] != status:
                c["lastTransitionTime"] = now
            c.update(status=status, reason=reason, message=message)
            return
    conds.append(
        {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": now}
    )


def strategic_merge(base, patch):
    """A strategic merge patch as mergeRuntimePatches applies it to the JobSet spec: maps merge, lists
    of named objects merge by ``name`` (replicatedJobs, containers, volumes, env, volumeMounts), other
    lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        out = [copy.deepcopy(x) for x in base]
        for p in patch:
            at = next((i for i, x in enumerate(out) if x["name"] == p["name"]), None)
            if at is None:
                out.append(copy.deepcopy(p))
            else:
                out[at] = strategic_merge(out[at], p)
        return out
    return copy.deepcopy(patch)


def _upsert_env(env: list[dict], extra: list[dict]) -> list[dict]:
    """pkg/apply UpsertEnvVars: replace by name, else append."""
    out = [dict(e) for e in env]
    for e in extra:
        at = next((i for i, x in enumerate(out) if x["name"] == e["name"]), None)
        if at is None:
            out.append(dict(e))
        else:
            out[at] = dict(e)
    return out


def load_torch_distributed() -> dict:
    text = TORCH_DISTRIBUTED.read_text()
    return yaml.safe_load("\n".join(line for line in text.splitlines() if "{{" not in line))


class TrainerV2(Kubelet):
    container = NODE

    def __init__(self, api: KubeAPI, namespace: str, workdir: Path, *, fake: bool = True):
        super().__init__(api, namespace, workdir, fake=fake)
        self.injected: dict[str, dict[str, str]] = {}  # job -> the PET_* env as v2 injects it
        self.hostnames: dict[str, str] = {}  # pod name -> hostname.subdomain
        self.runtimes: dict[str, dict] = {}  # ClusterTrainingRuntimes installed (else the API's)

    # -- reading ---------------------------------------------------------------------------------------
    def jobs(self) -> list[dict]:
        return sorted(
            self.api.objects(PLURAL, self.namespace), key=lambda j: j["metadata"]["creationTimestamp"]
        )

    def unfinished(self) -> list[dict]:
        return [j for j in self.jobs() if not finished(j)]

    def _job(self, name: str) -> dict | None:
        return next(
            (j for j in self.api.objects(PLURAL, self.namespace) if j["metadata"]["name"] == name), None
        )

    def _jobset(self, name: str) -> dict | None:
        return next(
            (j for j in self.api.objects(JOBSET_PLURAL, self.namespace) if j["metadata"]["name"] == name),
            None,
        )

    def pods_of(self, job: dict) -> list[dict]:
        name = job["metadata"]["name"]
        return [
            p
            for p in self.api.objects("pods", self.namespace)
            if (p["metadata"].get("labels") or {}).get(LABEL_JOBSET) == name
        ]

    def _node0(self, job: dict) -> dict | None:
        return next(
            (p for p in self.pods_of(job) if p["metadata"]["labels"].get(LABEL_COMPLETION_INDEX) == "0"
             and p["status"].get("phase") not in ("Failed",)),
            None,
        )  # fmt: skip

    def runtime(self, job: dict) -> dict:
        """The ClusterTrainingRuntime of ``spec.runtimeRef`` (the API's, else torch-distributed)."""
        ref = job["spec"]["runtimeRef"]
        found = self.runtimes.get(ref["name"]) or next(
            (r for r in self.api.objects(RUNTIME_PLURAL) if r["metadata"]["name"] == ref["name"]), None
        )
        if found is None and ref["name"] == "torch-distributed":
            found = load_torch_distributed()
        assert found is not None, f"ClusterTrainingRuntime {ref['name']!r} not found"
        return found

    def pod_template(self, job: dict) -> dict:
        """The trainer node's pod template as the JobSet gets it: runtime template + runtimePatches
        (trainingruntime.go mergeRuntimePatches) + spec.trainer (builder.go Trainer) + PET_* env
        (torch.go EnforceMLPolicy)."""
        spec = copy.deepcopy(self.runtime(job)["spec"]["template"]["spec"])
        for patch in job["spec"].get("runtimePatches") or []:
            tspec = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec")
            if tspec:
                spec = strategic_merge(spec, tspec)
        rjob = next(r for r in spec["replicatedJobs"] if r["name"] == NODE)
        template = rjob["template"]["spec"]["template"]
        container = next(c for c in template["spec"]["containers"] if c["name"] == NODE)
        trainer = job["spec"].get("trainer") or {}
        for key in ("image", "command", "args"):
            if trainer.get(key):
                container[key] = trainer[key]
        if trainer.get("resourcesPerNode"):
            container["resources"] = trainer["resourcesPerNode"]
        name = job["metadata"]["name"]
        nnodes = int(trainer.get("numNodes") or 1)
        pet = [
            {"name": "PET_NNODES", "value": str(nnodes)},
            {"name": "PET_NPROC_PER_NODE", "value": str(trainer.get("numProcPerNode", 1))},
            {
                "name": "PET_NODE_RANK",
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                    }
                },
            },
            {"name": "PET_MASTER_ADDR", "value": f"{name}-{NODE}-0-0.{name}"},
            {"name": "PET_MASTER_PORT", "value": str(TRAINER_PORT)},
        ]
        container["env"] = _upsert_env(_upsert_env(container.get("env") or [], trainer.get("env") or []), pet)
        container.setdefault("ports", []).append({"containerPort": TRAINER_PORT})
        # JobSet's webhook defaults an unset restartPolicy to OnFailure (kubernetes-sigs/jobset; unverified)
        template["spec"].setdefault("restartPolicy", "OnFailure")
        return {"template": template, "job_spec": rjob["template"]["spec"], "nnodes": nnodes}

    # -- the TrainJob controller -------------------------------------------------------------------------
    def _write_status(self, job: dict, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, job["metadata"]["name"], {"status": status}
        )

    def reconcile(self, job: dict) -> dict:
        """trainjob_controller.go Reconcile: build the JobSet when missing or suspended (jobset.go Build),
        setSuspendedCondition, reconcileDeadline, then the status from the JobSet (jobset.go Status)."""
        job = self._job(job["metadata"]["name"]) or job
        name = job["metadata"]["name"]
        status = copy.deepcopy(job.get("status") or {})
        old = copy.deepcopy(status)
        conds = status.setdefault("conditions", [])
        if finished(job):
            return status
        jobset = self._jobset(name)
        suspend = bool(job["spec"].get("suspend"))
        if jobset is None:
            jobset = self._create_jobset(job, suspend)
        elif jobset["spec"].get("suspend") and not suspend:
            jobset["spec"]["suspend"] = False  # "Do not update the JobSet if it ... is not suspended"
            self.custom.patch_namespaced_custom_object(
                JOBSET_GROUP,
                JOBSET_VERSION,
                self.namespace,
                JOBSET_PLURAL,
                name,
                {"spec": {"suspend": False}},
            )
        # setSuspendedCondition
        if suspend:
            set_condition(conds, "Suspended", "True", "Suspended", SUSPENDED_MESSAGE)
            self._delete_pods(self.pods_of(job))
        elif _true(conds, "Suspended"):
            set_condition(conds, "Suspended", "False", "Resumed", RESUMED_MESSAGE)
        # reconcileDeadline
        deadline = job["spec"].get("activeDeadlineSeconds")
        if deadline and not suspend:
            start = job["metadata"]["creationTimestamp"]
            resumed = next((c for c in conds if c["type"] == "Suspended" and c["status"] == "False"), None)
            if resumed:
                start = resumed["lastTransitionTime"]
            if time.time() - _parse(start) > int(deadline):
                set_condition(conds, "Failed", "True", "DeadlineExceeded", DEADLINE_MESSAGE)
                self._delete_jobset(name)
                return self._maybe_write(job, old, status)
        # jobset.go Status
        js = (self._jobset(name) or {}).get("status") or {}
        for c in js.get("conditions") or []:
            if c["type"] in ("Completed", "Failed") and c["status"] == "True":
                set_condition(
                    conds,
                    "Complete" if c["type"] == "Completed" else "Failed",
                    "True",
                    c["reason"],
                    c["message"],
                )
        if js.get("replicatedJobsStatus"):
            status["jobsStatus"] = copy.deepcopy(js["replicatedJobsStatus"])
        if not conds:
            status.pop("conditions")
        return self._maybe_write(job, old, status)

    def _maybe_write(self, job: dict, old: dict, status: dict) -> dict:
        if status != old:
            self._write_status(job, status)
        return status

    def _create_jobset(self, job: dict, suspend: bool) -> dict:
        name = job["metadata"]["name"]
        tpl = self.pod_template(job)
        jobset = {
            "apiVersion": f"{JOBSET_GROUP}/{JOBSET_VERSION}",
            "kind": "JobSet",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": dict(job["metadata"].get("labels") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": KIND,
                        "name": name,
                        "uid": job["metadata"].get("uid", ""),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "suspend": suspend,
                "network": {"subdomain": name},
                "replicatedJobs": [
                    {
                        "name": NODE,
                        "replicas": 1,
                        "template": {
                            "spec": {
                                **tpl["job_spec"],
                                "parallelism": tpl["nnodes"],
                                "completions": tpl["nnodes"],
                                "completionMode": "Indexed",
                                "template": tpl["template"],
                            }
                        },
                    }
                ],
            },
        }
        self.custom.create_namespaced_custom_object(
            JOBSET_GROUP, JOBSET_VERSION, self.namespace, JOBSET_PLURAL, jobset
        )
        return jobset

    def _delete_jobset(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        self._delete_pods([p for p in self.api.objects("pods", self.namespace)
                           if p["metadata"].get("labels", {}).get(LABEL_JOBSET) == name])  # fmt: skip
        try:
            self.custom.delete_namespaced_custom_object(
                JOBSET_GROUP, JOBSET_VERSION, self.namespace, JOBSET_PLURAL, name
            )
        except ApiException as e:
            if e.status != 404:
                raise

    def _delete_pods(self, pods: list[dict]) -> None:
        from kubernetes.client.exceptions import ApiException

        for p in pods:
            try:
                self.core.delete_namespaced_pod(p["metadata"]["name"], self.namespace)
            except ApiException as e:
                if e.status != 404:
                    raise

    # -- JobSet + the Job controller (index 0 only) ----------------------------------------------------------
    def _jobset_spec(self, job: dict) -> dict:
        js = self._jobset(job["metadata"]["name"])
        return js["spec"]["replicatedJobs"][0]["template"]["spec"] if js else {}

    def _create_pod(self, job: dict) -> dict:
        name = job["metadata"]["name"]
        jspec = self._jobset_spec(job)
        template = jspec["template"]
        labels = {
            **(template.get("metadata") or {}).get("labels", {}),
            LABEL_JOBSET: name,
            LABEL_RJOB: NODE,
            LABEL_JOB_INDEX: "0",
            LABEL_COMPLETION_INDEX: "0",
        }
        pod_name = f"{name}-{NODE}-0-0-{secrets.token_hex(3)[:5]}"
        meta = {
            "name": pod_name,
            "namespace": self.namespace,
            "labels": labels,
            "annotations": {
                **(template.get("metadata") or {}).get("annotations", {}),
                LABEL_COMPLETION_INDEX: "0",
            },
        }
        spec = {**copy.deepcopy(template["spec"]), "hostname": f"{name}-{NODE}-0-0", "subdomain": name}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": {"phase": "Pending"},
        }
        self.core.create_namespaced_pod(self.namespace, pod)
        self.pods_created[name] += 1
        self.hostnames[pod_name] = f"{spec['hostname']}.{spec['subdomain']}"
        return pod

    def _failures(self, pods: list[dict]) -> int:
        """Job failures: failed pods plus in-place container restarts (the Job controller's count)."""
        n = 0
        for p in pods:
            if p["status"].get("phase") == "Failed":
                n += 1
            n += sum(cs.get("restartCount", 0) for cs in p["status"].get("containerStatuses") or [])
        return n

    def _fail_job_rule(self, jspec: dict, code: int) -> bool:
        """batch/v1 podFailurePolicy: a FailJob rule whose onExitCodes (In / NotIn) matches ``code``."""
        for rule in (jspec.get("podFailurePolicy") or {}).get("rules") or []:
            on = rule.get("onExitCodes")
            if rule.get("action") != "FailJob" or not on:
                continue
            if on.get("containerName") not in (None, NODE):
                continue
            values = set(on.get("values") or [])
            if (on["operator"] == "In" and code in values) or (
                on["operator"] == "NotIn" and code not in values
            ):
                return True
        return False

    def _set_jobset_status(self, job: dict, *, active: int, succeeded: int, failed: int, cond=None) -> None:
        name = job["metadata"]["name"]
        js = self._jobset(name)
        if js is None:
            return
        status = copy.deepcopy(js.get("status") or {})
        status["replicatedJobsStatus"] = [
            {"name": NODE, "active": active, "ready": active, "succeeded": succeeded, "failed": failed,
             "suspended": 1 if js["spec"].get("suspend") else 0}
        ]  # fmt: skip
        if cond:
            set_condition(status.setdefault("conditions", []), *cond)
        self.custom.patch_namespaced_custom_object_status(
            JOBSET_GROUP, JOBSET_VERSION, self.namespace, JOBSET_PLURAL, name, {"status": status}
        )

    def _job_after_exit(self, job: dict, code: int) -> None:
        """The Job controller and JobSet after node 0's container exited with ``code``."""
        jspec = self._jobset_spec(job)
        pods = self.pods_of(job)
        if code == 0:
            self._set_jobset_status(job, active=0, succeeded=1, failed=0,
                                    cond=("Completed", "True", "AllJobsCompleted", "jobset completed successfully"))  # fmt: skip
            return
        limit = int(jspec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT))
        if self._fail_job_rule(jspec, code) or self._failures(pods) > limit:
            # Job Failed (PodFailurePolicy / BackoffLimitExceeded): its active pods are deleted; with
            # maxRestarts 0 the JobSet fails (reason FailedJobs).
            self._delete_pods([p for p in pods if p["status"].get("phase") not in ("Failed", "Succeeded")])
            self._set_jobset_status(job, active=0, succeeded=0, failed=1,
                                    cond=("Failed", "True", "FailedJobs", f"jobset failed: job {job['metadata']['name']}-node-0 failed"))  # fmt: skip

    # -- the kubelet of node 0 ----------------------------------------------------------------------------
    def _start_pod(self, job: dict) -> str:
        status = self.reconcile(job)
        if (
            finished({"status": status})
            or job["spec"].get("suspend")
            or self._jobset(job["metadata"]["name"]) is None
        ):
            return ""
        pod = self._node0(job)
        if pod is None:
            pod = self._create_pod(job)
        if pod["status"].get("phase") == "Pending" or not pod["status"].get("containerStatuses"):
            self._patch_pod(pod, {"phase": "Running", "startTime": _now(), "containerStatuses": [
                self._cs(pod, {"running": {"startedAt": _now()}}, 0, ready=True)]})  # fmt: skip
        self._set_jobset_status(job, active=1, succeeded=0, failed=0)
        return pod["metadata"]["name"]

    def _cs(self, pod: dict, state: dict, restarts: int, ready: bool, last: dict | None = None) -> dict:
        c = next(c for c in pod["spec"]["containers"] if c["name"] == NODE)
        out = {
            "name": NODE,
            "image": c["image"],
            "imageID": "",
            "ready": ready,
            "restartCount": restarts,
            "state": state,
        }
        if last:
            out["lastState"] = last
        return out

    def _patch_pod(self, pod: dict, status: dict) -> None:
        self.core.patch_namespaced_pod_status(pod["metadata"]["name"], self.namespace, {"status": status})

    def mark_running(self, job: dict) -> None:
        if self._start_pod(job):
            self.reconcile(job)

    def run(self, job: dict) -> int:
        """Run node 0's trainer container once to completion (tests/support/kubelet.py); returns its
        exit code."""
        pod = self._node0(job)
        assert pod is not None, f"{job['metadata']['name']}: no pod of node 0 to run"
        return self.run_pods(job, [pod], record=False)[pod["metadata"]["name"]]

    def network(self, job: dict, pod: dict, env: dict[str, str]) -> dict[str, str]:
        """The PET_* env recorded as v2 injects it (:attr:`injected`); then PET_MASTER_ADDR, the pod
        hostname behind JobSet's headless Service, becomes 127.0.0.1 and PET_MASTER_PORT a free port: no
        DNS for that Service here."""
        self.injected[job["metadata"]["name"]] = {k: v for k, v in env.items() if k.startswith("PET_")}
        return dict(env, PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(free_port()))

    def record_pod(self, job: dict, exit_code: int) -> None:
        """The kubelet's record of node 0's container end, by the pod's restartPolicy: Succeeded; or
        Failed (Never); or restarted in place with lastState terminated (OnFailure)."""
        name = job["metadata"]["name"]
        pod_name = self._start_pod(job)
        if not pod_name:
            return
        pod = next(p for p in self.api.objects("pods", self.namespace) if p["metadata"]["name"] == pod_name)
        now = _now()
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "OOMKilled" if exit_code == 137 else "Error",
            "startedAt": now,
            "finishedAt": now,
        }
        restarts = sum(cs.get("restartCount", 0) for cs in pod["status"].get("containerStatuses") or [])
        if exit_code == 0:
            status = {
                "phase": "Succeeded",
                "containerStatuses": [self._cs(pod, {"terminated": terminated}, restarts, False)],
            }
        elif pod["spec"].get("restartPolicy") == "Never":
            status = {
                "phase": "Failed",
                "containerStatuses": [self._cs(pod, {"terminated": terminated}, restarts, False)],
            }
        else:  # OnFailure: the kubelet restarts the container in the same pod
            status = {"phase": "Running", "containerStatuses": [
                self._cs(pod, {"running": {"startedAt": now}}, restarts + 1, True, {"terminated": terminated})]}  # fmt: skip
        self._patch_pod(pod, status)
        self.api.set_pod_log(self.namespace, pod_name, self.logs.get(name, ""))
        self._job_after_exit(job, exit_code)

    def finish(self, job: dict, exit_code: int) -> None:
        self.record_pod(job, exit_code)
        self.reconcile(job)

    def _step_job(self, job: dict) -> int:
        status = self.reconcile(job)
        if finished({"status": status}) or job["spec"].get("suspend"):
            return 0  # Kueue would admit a suspended one; nobody does here
        if not self._start_pod(job):
            return 0
        self.record_pod(job, self.run(job))
        self.reconcile(job)
        return 1
