"""The Kubernetes permissions the controller uses, declared once.

Every API call the controller makes goes through :mod:`coe_controller.kube`, which refuses a call
whose (apiGroup, resource, verb) is not declared here; a test checks that every declared verb is
used by some call and every call is declared. The Helm chart and the plain manifests render their
Role/ClusterRole from :func:`rules` (the packaging tests compare them), so the deployed RBAC is
exactly what the code needs: no more, no less.

``coe-ctl`` user commands (submit, delete, status with pod logs) run with the *user's* credentials,
not the controller's; their needs are declared separately in :data:`USER_PERMISSIONS` so the docs
can say what a user Role must allow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

GROUP = "coe.ml"
VERSION = "v1alpha1"
KIND = "CoEExperiment"
PLURAL = "coeexperiments"
SINGULAR = "coeexperiment"
SHORT_NAME = "coex"

PYTORCHJOB_GROUP = "kubeflow.org"
PYTORCHJOB_VERSION = "v1"
PYTORCHJOB_PLURAL = "pytorchjobs"
PYTORCHJOB_KIND = "PyTorchJob"


@dataclass(frozen=True)
class Permission:
    api_group: str  # "" is the core group
    resource: str  # plural, or "plural/subresource"
    verbs: tuple[str, ...]
    # True when no call of ours uses it but the API server demands it for something we write
    # (kube.py's calls are checked against the others; these are checked where they are implied).
    implied: bool = False


# What the controller does, and why each verb is needed:
CONTROLLER_PERMISSIONS: tuple[Permission, ...] = (
    # read experiments: list + watch for the loop, get to re-read one before acting
    Permission(GROUP, PLURAL, ("get", "list", "watch")),
    # the controller writes status only (never the spec): merge-patch on the status subresource
    Permission(GROUP, f"{PLURAL}/status", ("patch",)),
    # one PyTorchJob per step attempt, never updated; deleted only when its pods were recreated past
    # the restart limit (v1.9 never fails such a job, which would hold its GPUs forever). Another job
    # API (a TrainJob) gets the same verbs on its own resource instead: job_permission().
    Permission(PYTORCHJOB_GROUP, PYTORCHJOB_PLURAL, ("list", "watch", "create", "delete")),
    # the pods of a Failed job, by label: their exit code tells a permanent failure (1-127: bad
    # config or data, never retried) from a retryable one
    Permission("", "pods", ("list",)),
    # the frozen step config (and DeepSpeed config) of each step, created once with its first job;
    # get: a 409 is accepted only for a ConfigMap this experiment owns with the expected content
    Permission("", "configmaps", ("get", "create")),
    # an experiment's own S3 Secret (spec.resources.s3CredentialsSecret), read by credentials.py so the
    # controller reads the experiment's store with the credentials its pods get (never written)
    Permission("", "secrets", ("get",)),
    # Kubernetes Events for phase and step transitions
    Permission("", "events", ("create",)),
    # leader election: one Lease, read, created by the first replica, renewed by the holder
    Permission("coordination.k8s.io", "leases", ("get", "create", "update")),
    # Not a call: our children's ownerReferences set blockOwnerDeletion (see BLOCK_OWNER_DELETION),
    # and the OwnerReferencesPermissionEnforcement admission plugin (on in OpenShift) accepts that
    # only from a client that may update the owner's finalizers; without it every create is 403.
    Permission(GROUP, f"{PLURAL}/finalizers", ("update",), implied=True),
)

# Why blockOwnerDeletion stays on: a foreground delete of an experiment (`kubectl delete
# --cascade=foreground`) then waits until its PyTorchJobs (and their pods) are gone, so re-creating an
# experiment of the same name cannot meet the old one's jobs under the same deterministic names. It
# is also what Kubernetes' own controllers and the training operator set on their children.
BLOCK_OWNER_DELETION = True

# What a person running `coe-ctl submit|delete|status` against the cluster needs.
USER_PERMISSIONS: tuple[Permission, ...] = (
    Permission(GROUP, PLURAL, ("get", "list", "watch", "create", "delete")),
    Permission("", "pods", ("list",)),
    Permission("", "pods/log", ("get",)),
)


JOB_VERBS = ("list", "watch", "create", "delete")


def job_permission(api_group: str, plural: str) -> Permission:
    """What the controller needs on one training-job API (a renderer's group and plural)."""
    return Permission(api_group, plural, JOB_VERBS)


def controller_permissions(job_apis: Iterable[tuple[str, str]] | None = None) -> tuple[Permission, ...]:
    """The controller's permissions with the rule of each job API in ``job_apis`` ((group, plural)
    pairs, from the renderers: ``render.renderer(kind).group/.plural``) in place of the PyTorchJob
    one; None: :data:`CONTROLLER_PERMISSIONS` (PyTorchJob only)."""
    if job_apis is None:
        return CONTROLLER_PERMISSIONS
    pytorchjob = job_permission(PYTORCHJOB_GROUP, PYTORCHJOB_PLURAL)
    at = CONTROLLER_PERMISSIONS.index(pytorchjob)
    jobs = tuple(dict.fromkeys(job_permission(g, p) for g, p in job_apis))
    return CONTROLLER_PERMISSIONS[:at] + jobs + CONTROLLER_PERMISSIONS[at + 1 :]


def _as_rules(perms: tuple[Permission, ...]) -> list[dict]:
    return [{"apiGroups": [p.api_group], "resources": [p.resource], "verbs": list(p.verbs)} for p in perms]


def rules(job_apis: Iterable[tuple[str, str]] | None = None) -> list[dict]:
    """The controller's permissions as Kubernetes PolicyRules (for a Role or ClusterRole)."""
    return _as_rules(controller_permissions(job_apis))


def job_rules(api_group: str, plural: str) -> list[dict]:
    """The PolicyRules of one job API (the chart adds them for each entry of its ``jobApis`` value)."""
    return _as_rules((job_permission(api_group, plural),))


def base_rules() -> list[dict]:
    """The controller's PolicyRules without any job API's."""
    return _as_rules(controller_permissions(()))


def allowed(perms: tuple[Permission, ...], api_group: str, resource: str, verb: str) -> bool:
    return any(p.api_group == api_group and p.resource == resource and verb in p.verbs for p in perms)
