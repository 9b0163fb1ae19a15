"""Planned step -> Kubernetes objects. Pure functions: no API calls, no clock, no randomness.

One small interface, :class:`JobRenderer`, hides which training-job kind runs a step: it renders the
objects of one step attempt and reads a job's state back, and names its API (group, version, plural:
what kube.py calls and rbac.py grants), the container whose exit code counts and the selector of one job's
pods. :class:`PyTorchJobRenderer` (Kubeflow Training Operator v1, ``kubeflow.org/v1``, the default) and
:class:`TrainJobRenderer` (Kubeflow Trainer v2, ``trainer.kubeflow.org/v1alpha1``) are the two; an
experiment picks one with ``spec.resources.jobApi`` (:data:`RENDERERS`).

Every step attempt becomes:

* a ConfigMap ``<experiment>-<step>-config`` holding the step's frozen ``step.json`` (and the
  DeepSpeed ``ds.json``), created once with the step's first job and never updated, so editing the
  experiment later cannot change a step that has started (retries reuse it);
* a PyTorchJob ``<experiment>-<step>-a<attempt>``: Master (exactly one replica) plus Workers when the
  step asks for more than one node, each pod running torchrun (through :mod:`coe_runtime.launch`,
  which keeps the worker's exit code) ``... -m coe_runtime <kind> --config /etc/coe/step/step.json``
  in the runtime image.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, Protocol

from coe_controller import rbac

from coe_runtime.step import dump_step
from coe_runtime.store.base import S3_CREDENTIAL_KEYS, S3_SETTING_KEYS

DEFAULT_IMAGE = "ghcr.io/coe-k8s/coe-runtime:0.1.0"
STEP_CONFIG_DIR = "/etc/coe/step"
STEP_CONFIG_PATH = f"{STEP_CONFIG_DIR}/step.json"
DEEPSPEED_DIR = "/etc/coe/deepspeed"
DEEPSPEED_PATH = f"{DEEPSPEED_DIR}/ds.json"
WORK_DIR = "/var/coe/work"
HF_HOME = f"{WORK_DIR}/hf"  # the image's HF_HOME (/tmp/hf) moved to the sized work dir
TMP_DIR = "/tmp"  # an emptyDir: the image keeps TORCH_EXTENSIONS_DIR / TRITON_CACHE_DIR there
TMP_SIZE = "8Gi"
# Requests of a pod whose spec sets no cpu / memory (a pod without requests is BestEffort: first evicted).
DEFAULT_CPU_REQUEST = "1"
DEFAULT_MEMORY_REQUEST = "2Gi"
# When a step's job ends, delete its pods that still run (a failed multi-node job's other workers hold GPUs);
# finished pods stay, for their exit codes and logs. v1.9 values: None | Running | All.
CLEAN_POD_POLICY = "Running"
CONTAINER_NAME = "pytorch"  # the training operator finds the container by this name
RUNTIME_UID = 10001  # the runtime image's USER (images/runtime/Dockerfile; a packaging test checks)

LABEL_EXPERIMENT = "coe.ml/experiment"
LABEL_STEP = "coe.ml/step"
LABEL_ATTEMPT = "coe.ml/attempt"
LABEL_JOB = "coe.ml/job"
LABEL_FINGERPRINT = "coe.ml/fingerprint"  # the step identity a job runs (coe_runtime.fingerprint)
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
MANAGED_BY = "coe-controller"

_DNS1035_MAX = 63


def dns1035(text: str, max_len: int = _DNS1035_MAX) -> str:
    """A DNS-1035 label from ``text``: lower case, [a-z0-9-], starts with a letter, ends alnum.

    When the cleaned text is longer than ``max_len`` it is cut and given a hash suffix of the *whole*
    input, so two long names that share a prefix still differ.
    """
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    clean = re.sub(r"-{2,}", "-", clean)
    if not clean or not clean[0].isalpha():
        clean = "x-" + clean
    if len(clean) <= max_len:
        return clean.rstrip("-")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return clean[: max_len - 9].rstrip("-") + "-" + digest


def label_value(text: str) -> str:
    """A valid label value (<= 63 chars, alnum at both ends), hash-suffixed when cut."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    if len(clean) <= 63:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return clean[:54].rstrip("-_.") + "-" + digest


# The Training Operator names each replica's pod and Service ``<job>-<replica type>-<index>``
# (kubeflow/training-operator release-1.9, pkg/core GenGeneralName: jobName-lower(rtype)-index), and
# both must be DNS-1035 labels of at most 63 characters. Leave room for "-worker-" + 3 digits.
REPLICA_SUFFIX_MAX = len("-worker-999")
JOB_NAME_MAX = _DNS1035_MAX - REPLICA_SUFFIX_MAX


def _name_with_suffix(base: str, suffix: str, max_len: int) -> str:
    """``<base><suffix>`` as a DNS-1035 label of at most ``max_len``; a long base is cut and hashed,
    the suffix (fingerprint, attempt) is always kept whole."""
    return dns1035(base, max_len - len(suffix)) + suffix


def job_name(experiment: str, step: str, attempt: int, fingerprint: str = "") -> str:
    """``<experiment>-<step>-<fp8>-a<attempt>``: a new spec's step never meets an old spec's job."""
    fp = f"-{fingerprint[:8]}" if fingerprint else ""
    return _name_with_suffix(f"{experiment}-{step}", f"{fp}-a{attempt}", JOB_NAME_MAX)


def config_map_name(experiment: str, step: str, fingerprint: str = "") -> str:
    fp = f"-{fingerprint[:8]}" if fingerprint else ""
    return _name_with_suffix(f"{experiment}-{step}", f"{fp}-config", _DNS1035_MAX)


ImagePullPolicy = Literal["Always", "IfNotPresent", "Never"]


@dataclass(frozen=True)
class JobSettings:
    """Cluster settings of an experiment that shape its pods (from the spec's ``resources``)."""

    image: str = DEFAULT_IMAGE
    image_pull_policy: ImagePullPolicy = "IfNotPresent"
    gpus_per_pod: int = 0
    cpu: str | None = None
    memory: str | None = None
    shm_size: str = "16Gi"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict] = field(default_factory=list)
    priority_class_name: str | None = None
    service_account_name: str | None = None
    kueue_queue: str | None = None
    s3_secret: str | None = None  # envFrom: AWS_* variables; never inlined in a manifest
    backoff_limit: int = 3  # pod restarts within one job (retryable exit codes 128-255)
    active_deadline_seconds: int | None = None
    # Pod customisation (spec.resources, the step's override merged in; owned names already refused)
    extra_env: tuple[dict, ...] = ()
    env_from: tuple[dict, ...] = ()
    volumes: tuple[dict, ...] = ()
    volume_mounts: tuple[dict, ...] = ()
    pod_labels: dict[str, str] = field(default_factory=dict)
    pod_annotations: dict[str, str] = field(default_factory=dict)
    affinity: dict | None = None
    extra_limits: dict[str, str] = field(default_factory=dict)
    runtime_class_name: str | None = None
    work_dir_size: str = "100Gi"
    ttl_seconds_after_finished: int | None = 86400


@dataclass(frozen=True)
class ClusterDefaults:
    """What the controller's installation supplies to experiments that leave a setting out.

    The Helm chart passes them to the controller as ``COE_RUNTIME_IMAGE`` and ``COE_S3_SECRET``, so a
    cluster admin picks the runtime image (a mirror, a pinned digest) and the S3 Secret once for
    every experiment. An experiment's own ``spec.resources.image`` / ``s3CredentialsSecret`` wins.
    """

    image: str | None = None
    s3_secret: str | None = None
    # What experiments may use (images, ServiceAccounts, Secrets): a coe_controller.policy.Policy
    policy: Any = None


def settings_from(resources: Any | None, defaults: ClusterDefaults | None = None) -> JobSettings:
    """JobSettings from a step's resources (``coe_controller.spec.ResourcesSpec`` with the step's
    override applied, as the planner attaches it to each PlannedStep); None gives the defaults.

    ``spec.resources.image`` has a non-null model default, so "left out" is told from "set to the
    default" by pydantic's ``model_fields_set`` (kept through the planner's ``model_copy``); an
    ``s3CredentialsSecret`` of ``""`` means "no Secret" (pod identity) even when a default exists.
    """
    defaults = defaults or ClusterDefaults()
    if resources is None:
        return JobSettings(image=defaults.image or DEFAULT_IMAGE, s3_secret=defaults.s3_secret)
    image = resources.image
    if "image" not in resources.model_fields_set and defaults.image:
        image = defaults.image
    s3_secret = resources.s3_credentials_secret
    if s3_secret is None:
        s3_secret = defaults.s3_secret
    return JobSettings(
        image=image,
        image_pull_policy=resources.image_pull_policy,
        gpus_per_pod=resources.gpus_per_pod,
        cpu=resources.cpu,
        memory=resources.memory,
        shm_size=resources.shm_size,
        node_selector=dict(resources.node_selector),
        tolerations=[
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in resources.tolerations
        ],
        priority_class_name=resources.priority_class_name,
        service_account_name=resources.service_account_name,
        kueue_queue=resources.queue_name,
        s3_secret=s3_secret,
        backoff_limit=resources.backoff_limit,
        active_deadline_seconds=resources.active_deadline_seconds,
        **_customisation(resources),
    )


def _customisation(resources: Any) -> dict[str, Any]:
    """The pod-customisation fields of ``resources`` as JobSettings keywords (Kubernetes camelCase)."""

    def dump(items) -> tuple[dict, ...]:
        return tuple(i.model_dump(mode="json", by_alias=True, exclude_none=True) for i in items or [])

    return {
        "extra_env": dump(resources.env),
        "env_from": dump(resources.env_from),
        "volumes": tuple(dict(v) for v in resources.volumes or []),
        "volume_mounts": dump(resources.volume_mounts),
        "pod_labels": dict(resources.pod_labels or {}),
        "pod_annotations": dict(resources.pod_annotations or {}),
        "affinity": dict(resources.affinity) if resources.affinity else None,
        "extra_limits": dict(resources.extra_limits or {}),
        "runtime_class_name": resources.runtime_class_name,
        "work_dir_size": resources.work_dir_size,
        "ttl_seconds_after_finished": resources.ttl_seconds_after_finished,
    }


@dataclass(frozen=True)
class Owner:
    """The experiment that owns the rendered objects (uid is unknown when rendering offline)."""

    name: str
    namespace: str = "default"
    uid: str | None = None

    def reference(self) -> list[dict]:
        if not self.uid:
            return []
        return [
            {
                "apiVersion": f"{rbac.GROUP}/{rbac.VERSION}",
                "kind": rbac.KIND,
                "name": self.name,
                "uid": self.uid,
                "controller": True,
                # needs update on coeexperiments/finalizers where admission enforces it (rbac.py)
                "blockOwnerDeletion": rbac.BLOCK_OWNER_DELETION,
            }
        ]


@dataclass(frozen=True)
class JobState:
    """What a training job says about itself, reduced to what the reconcile loop needs."""

    phase: str  # Pending | Suspended | Running | Restarting | Succeeded | Failed
    reason: str = ""
    message: str = ""
    start_time: str | None = None
    finish_time: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


class JobRenderer(Protocol):
    """What a training-job kind must provide: its API (group, version, plural: what kube.py lists,
    creates, deletes and watches, and what rbac.py grants), the name of the container whose exit code
    is read, the label selector of one job's pods, and render/state."""

    group: str
    version: str
    api_version: str
    kind: str
    plural: str
    container: str

    def pod_selector(self, job: str) -> str:
        """The label selector of the pods of job ``job``."""

    def render(self, owner: Owner, step: Any, attempt: int, settings: JobSettings) -> list[dict]:
        """The objects of one attempt: the frozen-config ConfigMap first, then the job."""

    def state(self, job: dict) -> JobState:
        """The job's state from its status."""


def _bundled_deepspeed(name: str) -> dict | None:
    try:
        path = resources.files("coe_runtime") / "deepspeed" / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return None


def frozen_step_files(step_config: Any) -> dict[str, str]:
    """The ConfigMap data of a step: ``step.json`` as the pod reads it, and ``ds.json`` when used.

    An inline or bundled DeepSpeed config is moved into ``ds.json`` and the step config points at the
    mounted file, so what the pod runs is fully visible in the ConfigMap.
    """
    files: dict[str, str] = {}
    ds = step_config.distributed.deepspeed
    ds_dict = ds if isinstance(ds, dict) else _bundled_deepspeed(ds) if isinstance(ds, str) else None
    if ds_dict is not None:
        files["ds.json"] = json.dumps(ds_dict, indent=2, sort_keys=True)
        distributed = step_config.distributed.model_copy(update={"deepspeed": DEEPSPEED_PATH})
        step_config = step_config.model_copy(update={"distributed": distributed})
    files["step.json"] = dump_step(step_config)
    return dict(sorted(files.items()))


def _reads_the_hub(config: Any) -> bool:
    """The step downloads from the Hugging Face Hub: a ``model`` step, or a hand-written step whose
    base model is a Hub id (planned steps read a Hub model from its snapshot in the store)."""
    from coe_runtime.models.hub import is_hub_id

    return config.kind == "model" or is_hub_id(config.base_model.name_or_path)


def common_labels(owner: Owner, step_name: str, kind: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "coe",
        "app.kubernetes.io/instance": label_value(owner.name),
        "app.kubernetes.io/component": label_value(kind),
        "app.kubernetes.io/part-of": "coe",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_EXPERIMENT: label_value(owner.name),
        LABEL_STEP: label_value(step_name),
    }


# torchrun, run by a wrapper that exits with the failed worker's code (a bare torchrun exits 1 for
# every failure, which restartPolicy ExitCode and the controller would read as "permanent").
LAUNCHER = ["python", "-m", "coe_runtime.launch"]


def torchrun_command(kind: str, nnodes: int, nproc_per_node: int) -> list[str]:
    # torchrun without rendezvous arguments: the training operator injects PET_NNODES/PET_NODE_RANK/
    # PET_MASTER_ADDR/PORT (torchrun reads PET_* as its defaults), so one command serves Master and Workers.
    return [
        *LAUNCHER,
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc_per_node}",
        "-m",
        "coe_runtime",
        kind,
        "--config",
        STEP_CONFIG_PATH,
    ]


def _container_resources(s: JobSettings) -> dict[str, dict[str, str]]:
    """The step container's limits and requests (extended resources: requests default to the limits)."""
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if s.gpus_per_pod:
        limits["nvidia.com/gpu"] = str(s.gpus_per_pod)
    limits.update(s.extra_limits)  # extended resources (rdma/hca): requests default to the limits
    requests["cpu"] = s.cpu or DEFAULT_CPU_REQUEST
    requests["memory"] = s.memory or DEFAULT_MEMORY_REQUEST
    if s.memory:
        limits["memory"] = s.memory
    return {k: v for k, v in (("limits", limits), ("requests", requests)) if v}


def _pod_env(config: Any, step: Any, attempt: int, s: JobSettings) -> list[dict]:
    """The step container's environment: the controller's variables, then the experiment's own."""
    env: list[dict] = [
        {"name": "COE_STEP", "value": step.name},
        {"name": "COE_ATTEMPT", "value": str(attempt)},
        {"name": "COE_CACHE_DIR", "value": f"{WORK_DIR}/cache"},
        {"name": "HOME", "value": WORK_DIR},
        {"name": "TMPDIR", "value": f"{WORK_DIR}/tmp"},
        {"name": "HF_HOME", "value": HF_HOME},
    ]
    if not _reads_the_hub(config):
        # Steps read their model from the store or a local path: never let transformers reach out.
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    token = getattr(step, "hf_token_secret", None)
    if token:
        # The Hub token, from the Secret the spec names (baseModel.hfTokenSecret); never inlined.
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": token[0], "key": token[1]}}})
    if s.gpus_per_pod:
        # The runtime fails at once (exit 3, permanent) when CUDA cannot supply these GPUs, instead of
        # training on CPU without a word (coe_runtime.errors.check_expected_gpus).
        env.append({"name": "COE_EXPECT_GPUS", "value": str(s.gpus_per_pod)})
    return env + [dict(e) for e in s.extra_env]


def _pod_volumes(cm_name: str, has_ds: bool, s: JobSettings) -> tuple[list[dict], list[dict]]:
    """(volume mounts, volumes): the step config, shared memory, the two writable folders, the
    DeepSpeed config when there is one, then the experiment's own."""
    mounts: list[dict] = [
        {"name": "step-config", "mountPath": STEP_CONFIG_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "work", "mountPath": WORK_DIR},
        {"name": "tmp", "mountPath": TMP_DIR},
    ]
    volumes: list[dict] = [
        {
            "name": "step-config",
            "configMap": {"name": cm_name, "items": [{"key": "step.json", "path": "step.json"}]},
        },
        # NCCL and DataLoader workers need more shared memory than the container default (64 MiB).
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": s.shm_size}},
        # The root filesystem is read-only: these two are all the pod writes (besides user volumes).
        {"name": "work", "emptyDir": {"sizeLimit": s.work_dir_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
    ]
    if has_ds:
        mounts.append({"name": "deepspeed-config", "mountPath": DEEPSPEED_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "deepspeed-config",
                "configMap": {"name": cm_name, "items": [{"key": "ds.json", "path": "ds.json"}]},
            }
        )
    return mounts + [dict(m) for m in s.volume_mounts], volumes + [dict(v) for v in s.volumes]


def _pod_placement(s: JobSettings) -> dict[str, Any]:
    """The pod spec fields an experiment may set for where and as whom its pods run (only those set)."""
    fields: dict[str, Any] = {}
    if s.node_selector:
        fields["nodeSelector"] = dict(s.node_selector)
    if s.tolerations:
        fields["tolerations"] = [dict(t) for t in s.tolerations]
    if s.priority_class_name:
        fields["priorityClassName"] = s.priority_class_name
    if s.service_account_name:
        fields["serviceAccountName"] = s.service_account_name
    if s.runtime_class_name:
        fields["runtimeClassName"] = s.runtime_class_name
    if s.affinity:
        fields["affinity"] = dict(s.affinity)
    return fields


class PyTorchJobRenderer:
    group = rbac.PYTORCHJOB_GROUP
    version = rbac.PYTORCHJOB_VERSION
    api_version = f"{rbac.PYTORCHJOB_GROUP}/{rbac.PYTORCHJOB_VERSION}"
    kind = rbac.PYTORCHJOB_KIND
    plural = rbac.PYTORCHJOB_PLURAL
    container = CONTAINER_NAME

    def pod_selector(self, job: str) -> str:
        """The pods of one job: our coe.ml/job label, set on every replica's pod template."""
        return f"{LABEL_JOB}={label_value(job)}"

    def render(self, owner: Owner, step: Any, attempt: int, settings: JobSettings) -> list[dict]:
        config = step.config
        files = frozen_step_files(config)
        fp = config.fingerprint
        cm_name = config_map_name(owner.name, step.name, fp)
        labels = {**common_labels(owner, step.name, step.kind), **({LABEL_FINGERPRINT: fp} if fp else {})}
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": cm_name,
                "namespace": owner.namespace,
                "labels": labels,
                **({"ownerReferences": owner.reference()} if owner.uid else {}),
            },
            "data": files,
        }
        name = job_name(owner.name, step.name, attempt, fp)
        job_labels = {**labels, LABEL_ATTEMPT: str(attempt)}
        if settings.kueue_queue:
            job_labels[LABEL_KUEUE_QUEUE] = settings.kueue_queue
        pod_labels = {**labels, LABEL_ATTEMPT: str(attempt), LABEL_JOB: name}
        nnodes = config.distributed.nnodes
        nproc = config.distributed.nproc_per_node
        template = self._pod_template(
            config, cm_name, "ds.json" in files, pod_labels, settings, step, attempt
        )
        replica_specs: dict[str, dict] = {
            "Master": {"replicas": 1, "restartPolicy": "ExitCode", "template": template}
        }
        if nnodes > 1:
            replica_specs["Worker"] = {
                "replicas": nnodes - 1,
                "restartPolicy": "ExitCode",
                "template": template,
            }
        run_policy: dict[str, Any] = {
            "backoffLimit": settings.backoff_limit,
            "cleanPodPolicy": CLEAN_POD_POLICY,
        }
        if settings.ttl_seconds_after_finished is not None:
            run_policy["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
        if settings.active_deadline_seconds:
            run_policy["activeDeadlineSeconds"] = settings.active_deadline_seconds
        if settings.kueue_queue:
            run_policy["suspend"] = True  # Kueue admits (unsuspends) the job when quota allows
        job = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {
                "name": name,
                "namespace": owner.namespace,
                "labels": job_labels,
                "annotations": {"coe.ml/config-map": cm_name},
                **({"ownerReferences": owner.reference()} if owner.uid else {}),
            },
            "spec": {
                "nprocPerNode": str(nproc),
                "runPolicy": run_policy,
                "pytorchReplicaSpecs": replica_specs,
            },
        }
        return [config_map, job]

    def _pod_template(
        self, config: Any, cm_name: str, has_ds: bool, labels: dict, s: JobSettings, step: Any, attempt: int
    ) -> dict:
        mounts, volumes = _pod_volumes(cm_name, has_ds, s)
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": s.image,
            "imagePullPolicy": s.image_pull_policy,
            "command": torchrun_command(
                config.kind, config.distributed.nnodes, config.distributed.nproc_per_node
            ),
            "env": _pod_env(config, step, attempt, s),
            "volumeMounts": mounts,
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "runAsNonRoot": True,
                "readOnlyRootFilesystem": True,
            },
        }
        # The S3 Secret last: of two envFrom sources with the same key the later wins, so an experiment's
        # own envFrom cannot replace the AWS_* credentials (and env, the controller's, beats both).
        env_from = [dict(e) for e in s.env_from]
        env_from += [{"secretRef": {"name": s.s3_secret}}] if s.s3_secret else []
        if env_from:
            container["envFrom"] = env_from
        container["resources"] = _container_resources(s)
        pod_spec: dict[str, Any] = {
            "containers": [container],
            "volumes": volumes,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUNTIME_UID,
                "runAsGroup": RUNTIME_UID,
                "fsGroup": RUNTIME_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            **_pod_placement(s),
        }
        metadata: dict[str, Any] = {"labels": {**s.pod_labels, **labels}}
        if s.pod_annotations:
            metadata["annotations"] = dict(s.pod_annotations)
        return {"metadata": metadata, "spec": pod_spec}

    def state(self, job: dict) -> JobState:
        status = job.get("status") or {}
        # Each condition type appears at most once, but several can be True at once
        # (kubeflow/trainer#1650): look conditions up by type, never by list position.
        true = {c.get("type"): c for c in status.get("conditions") or [] if str(c.get("status")) == "True"}
        start = status.get("startTime")
        for phase in ("Succeeded", "Failed"):
            if phase in true:
                c = true[phase]
                finish = status.get("completionTime") or c.get("lastTransitionTime")
                return JobState(phase, c.get("reason", ""), c.get("message", ""), start, finish)
        for phase in ("Suspended", "Restarting", "Running"):
            if phase in true:
                c = true[phase]
                return JobState(phase, c.get("reason", ""), c.get("message", ""), start)
        return JobState("Pending", start_time=start)


# -- Kubeflow Trainer v2 ------------------------------------------------------------------------------
# TrainJob (trainer.kubeflow.org/v1alpha1, kubeflow/trainer pkg/apis/trainer/v1alpha1/trainjob_types.go)
# names a ClusterTrainingRuntime; the trainer controller renders a JobSet from it. What a TrainJob may
# change is restricted: ``spec.trainer`` sets image, command, env, numNodes, numProcPerNode and
# resourcesPerNode of the runtime's trainer container, and ``spec.runtimePatches[].trainingRuntimeSpec``
# patches the runtime's pod template (labels, annotations, volumes, nodeSelector, tolerations, affinity,
# serviceAccountName, pod securityContext; per container only env, volumeMounts and securityContext).
TRAINJOB_GROUP = "trainer.kubeflow.org"
TRAINJOB_VERSION = "v1alpha1"
TRAINJOB_PLURAL = "trainjobs"
TRAINJOB_KIND = "TrainJob"
DEFAULT_TRAINING_RUNTIME = "torch-distributed"
# The torch-distributed runtime's replicated job and trainer container are both named "node"
# (pkg/constants/constants.go Node; the runtime in ../shared/k8s/trainer-v2/torch-distributed.yaml).
TRAINJOB_REPLICATED_JOB = "node"
TRAINJOB_CONTAINER = "node"
RUNTIME_PATCH_MANAGER = "coe.ml/coe-controller"  # runtimePatches[].manager: who owns the patch
# AWS_* / COE_S3_* keys an S3 Secret may hold. A TrainJob has no envFrom (neither spec.trainer nor a
# container patch carries one), so the Secret reaches the pod key by key, each optional.
S3_SECRET_KEYS = (*S3_CREDENTIAL_KEYS, *S3_SETTING_KEYS)
# What the pod-spec patch (PodSpecPatch) can carry; anything else a step's pod needs cannot be expressed.
_TRAINJOB_POD_FIELDS = (
    "affinity",
    "imagePullSecrets",
    "nodeSelector",
    "securityContext",
    "serviceAccountName",
    "terminationGracePeriodSeconds",
    "tolerations",
    "volumes",
)


class UnsupportedByJobApi(ValueError):
    """A step needs a pod setting the chosen job API cannot carry (refused, never silently dropped)."""


class TrainJobRenderer:
    """Kubeflow Trainer v2: one TrainJob per step attempt, with the same frozen ConfigMap, env, Secret,
    mounts and coe.ml/* labels as :class:`PyTorchJobRenderer` (the pod template is built by it, then
    carried over into ``spec.trainer`` and one ``runtimePatches`` entry)."""

    group = TRAINJOB_GROUP
    version = TRAINJOB_VERSION
    api_version = f"{TRAINJOB_GROUP}/{TRAINJOB_VERSION}"
    kind = TRAINJOB_KIND
    plural = TRAINJOB_PLURAL
    container = TRAINJOB_CONTAINER

    def __init__(self, runtime: str | None = None):
        self.runtime = runtime  # None: the step's resources.trainingRuntime

    def pod_selector(self, job: str) -> str:
        return f"{LABEL_JOB}={label_value(job)}"

    def render(self, owner: Owner, step: Any, attempt: int, settings: JobSettings) -> list[dict]:
        if settings.priority_class_name or settings.runtime_class_name:
            raise UnsupportedByJobApi(
                "a TrainJob cannot set priorityClassName or runtimeClassName (set them in the training runtime)"
            )
        if settings.env_from:
            raise UnsupportedByJobApi("a TrainJob has no envFrom: use env with valueFrom instead")
        config_map, v1 = PyTorchJobRenderer().render(owner, step, attempt, settings)
        meta = v1["metadata"]
        template = v1["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
        pod = dict(template["spec"])
        (container,) = pod.pop("containers")
        pod.pop("restartPolicy", None)
        unsupported = sorted(set(pod) - set(_TRAINJOB_POD_FIELDS))
        if unsupported:
            raise UnsupportedByJobApi(f"a TrainJob's pod patch cannot carry {unsupported}")
        container = dict(container)
        container.pop("name")
        env = list(container.pop("env", []))
        for source in container.pop("envFrom", []):
            secret = (source.get("secretRef") or {}).get("name")
            if secret != settings.s3_secret:
                raise UnsupportedByJobApi(f"a TrainJob has no envFrom (cannot carry {source})")
            env += [
                {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k, "optional": True}}}
                for k in S3_SECRET_KEYS
            ]
        container.pop("imagePullPolicy", None)  # the runtime's (a TrainJob cannot set it)
        trainer = {
            "image": container.pop("image"),
            "command": container.pop("command"),
            "env": env,
            "numNodes": step.config.distributed.nnodes,
            "numProcPerNode": step.config.distributed.nproc_per_node,
            "resourcesPerNode": container.pop("resources"),
        }
        patch_container = {"name": TRAINJOB_CONTAINER, **container}  # volumeMounts, securityContext
        unsupported = sorted(set(patch_container) - {"name", "volumeMounts", "securityContext"})
        if unsupported:
            raise UnsupportedByJobApi(f"a TrainJob's container patch cannot carry {unsupported}")
        pod["containers"] = [patch_container]
        runtime = (
            self.runtime or getattr(step.resources, "training_runtime", None) or DEFAULT_TRAINING_RUNTIME
        )
        spec: dict[str, Any] = {
            "runtimeRef": {"apiGroup": TRAINJOB_GROUP, "kind": "ClusterTrainingRuntime", "name": runtime},
            "trainer": trainer,
            "runtimePatches": [
                {
                    "manager": RUNTIME_PATCH_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            # Trainer v2 labels the JobSet from this patch (and the runtime's
                            # template) only, so `kubectl get jobsets -l coe.ml/experiment=...` works.
                            "metadata": {"labels": dict(meta.get("labels") or {})},
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": TRAINJOB_REPLICATED_JOB,
                                        "template": {
                                            "spec": {
                                                "template": {"metadata": template["metadata"], "spec": pod}
                                            }
                                        },
                                    }
                                ]
                            },
                        }
                    },
                }
            ],
        }
        if settings.active_deadline_seconds:
            spec["activeDeadlineSeconds"] = settings.active_deadline_seconds
        if settings.kueue_queue:
            spec["suspend"] = True  # Kueue admits (unsuspends) the TrainJob when quota allows
        job = {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta, "spec": spec}
        return [config_map, job]

    @staticmethod
    def _pod_templates(job: dict) -> list[dict]:
        out = []
        for patch in job["spec"].get("runtimePatches") or []:
            rjobs = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}
            for rj in rjobs.get("replicatedJobs") or []:
                out.append(rj["template"]["spec"]["template"])
        return out

    def retry(self, previous: dict, attempt: int, name: str) -> dict:
        """Attempt N made from attempt N-1 as it was created (see ``reconcile.frozen_retry``)."""
        import copy

        job = copy.deepcopy(previous)
        meta = job["metadata"]
        labels = {**(meta.get("labels") or {}), LABEL_ATTEMPT: str(attempt)}
        keep = ("name", "namespace", "labels", "annotations", "ownerReferences")
        job["metadata"] = {k: v for k, v in {**meta, "name": name, "labels": labels}.items() if k in keep}
        job.pop("status", None)
        for template in self._pod_templates(job):
            tmeta = template.setdefault("metadata", {})
            tmeta["labels"] = {**(tmeta.get("labels") or {}), LABEL_ATTEMPT: str(attempt), LABEL_JOB: name}
        for patch in job["spec"].get("runtimePatches") or []:
            jobset = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("metadata")
            if jobset is not None:
                jobset["labels"] = {**(jobset.get("labels") or {}), LABEL_ATTEMPT: str(attempt)}
        return job

    def state(self, job: dict) -> JobState:
        """Conditions Complete / Failed / Suspended (trainjob_types.go; the JobSet plugin copies the
        JobSet's Completed / Failed: pkg/runtime/framework/plugins/jobset/jobset.go Status), looked up
        by type; Running when a child Job is active (status.jobsStatus)."""
        status = job.get("status") or {}
        true = {c.get("type"): c for c in status.get("conditions") or [] if str(c.get("status")) == "True"}
        for cond, phase in (("Complete", "Succeeded"), ("Failed", "Failed")):
            if cond in true:
                c = true[cond]
                return JobState(
                    phase, c.get("reason", ""), c.get("message", ""), None, c.get("lastTransitionTime")
                )
        if "Suspended" in true:
            c = true["Suspended"]
            return JobState("Suspended", c.get("reason", ""), c.get("message", ""))
        if any(int(j.get("active") or 0) > 0 for j in status.get("jobsStatus") or []):
            return JobState("Running")
        return JobState("Pending")


RENDERERS: dict[str, JobRenderer] = {"PyTorchJob": PyTorchJobRenderer(), "TrainJob": TrainJobRenderer()}


JOB_APIS = tuple(RENDERERS)  # the job APIs a spec's resources.jobApi may name


def renderer(kind: str = "PyTorchJob") -> JobRenderer:
    """The renderer of job API ``kind`` (spec.resources.jobApi)."""
    return RENDERERS[kind]
