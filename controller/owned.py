"""What the controller and the training operator own in a step pod: a spec may not set these.

``spec.resources`` (and its per-step ``overrides``) lets an experiment add environment variables,
volumes and mounts, pod labels and annotations and extra resource limits to its step pods. Each
function here returns the refusals for one kind of field, each naming the field, the value, and who
owns it, so the spec's validator can report them all (:mod:`coe_controller.spec`), and the renderer
never has to decide which of two values wins.

The lists are checked against what :mod:`coe_controller.render` actually emits (tests render a job
and ask :func:`env_owner` / :func:`mount_owner` / :func:`volume_owner` / :func:`label_owner` about
every name in it), so a new variable or mount in the renderer cannot silently become overridable.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable

from coe_controller.render import DEEPSPEED_DIR, HF_HOME, STEP_CONFIG_DIR, TMP_DIR, WORK_DIR

CONTROLLER = "the coe controller"
OPERATOR = "the Kubeflow training operator (torchrun reads them)"

# Exact environment variable names, with who sets them.
OWNED_ENV: dict[str, str] = {
    "MASTER_ADDR": OPERATOR,
    "MASTER_PORT": OPERATOR,
    "WORLD_SIZE": OPERATOR,
    "RANK": OPERATOR,
    "LOCAL_RANK": "torchrun",
    "LOCAL_WORLD_SIZE": "torchrun",
    "HOME": f"{CONTROLLER} (the work dir)",
    "TMPDIR": f"{CONTROLLER} (the work dir)",
    "HF_HOME": f"{CONTROLLER} (the work dir)",
    "HF_HUB_OFFLINE": f"{CONTROLLER} (only the model step may reach the Hub)",
    "HF_TOKEN": f"{CONTROLLER}, from spec.baseModel.hfTokenSecret",
}
# Name prefixes, with who sets them.
OWNED_ENV_PREFIXES: dict[str, str] = {
    "PET_": OPERATOR,
    "COE_": CONTROLLER,
    "AWS_": f"{CONTROLLER}, from the S3 Secret (spec.resources.s3CredentialsSecret)",
}

OWNED_VOLUMES: dict[str, str] = {
    "step-config": f"{CONTROLLER} (the frozen step config)",
    "deepspeed-config": f"{CONTROLLER} (the frozen DeepSpeed config)",
    "dshm": f"{CONTROLLER} (/dev/shm, sized by spec.resources.shmSize)",
    "work": f"{CONTROLLER} (the work dir, sized by spec.resources.workDirSize)",
    "tmp": f"{CONTROLLER} (/tmp; the root filesystem is read-only)",
}
# Mount paths the controller uses: a user mount may not be one of them (nor inside the read-only
# config mounts); a mount *below* the work dir (e.g. a node-local cache at <work>/cache) is allowed.
OWNED_MOUNTS: dict[str, str] = {
    STEP_CONFIG_DIR: f"{CONTROLLER} (the frozen step config)",
    DEEPSPEED_DIR: f"{CONTROLLER} (the frozen DeepSpeed config)",
    WORK_DIR: f"{CONTROLLER} (the work dir: HOME, TMPDIR, HF_HOME, $COE_CACHE_DIR)",
    "/dev/shm": f"{CONTROLLER} (spec.resources.shmSize)",
    TMP_DIR: f"{CONTROLLER} (/tmp; the root filesystem is read-only)",
    "/": "the container image (the root filesystem)",
}
_SEALED_MOUNTS = (STEP_CONFIG_DIR, DEEPSPEED_DIR)

OWNED_LABEL_PREFIXES: dict[str, str] = {
    "coe.ml/": CONTROLLER,
    "training.kubeflow.org/": "the Kubeflow training operator",
    "app.kubernetes.io/": CONTROLLER,
}
OWNED_LABELS: dict[str, str] = {
    "kueue.x-k8s.io/queue-name": f"{CONTROLLER}, from spec.resources.queueName",
}
OWNED_ANNOTATION_PREFIXES: dict[str, str] = {"coe.ml/": CONTROLLER}

# Resource names that have their own spec field.
OWNED_LIMITS: dict[str, str] = {
    "nvidia.com/gpu": "spec.resources.gpusPerPod",
    "cpu": "spec.resources.cpu",
    "memory": "spec.resources.memory",
}

assert HF_HOME.startswith(WORK_DIR + "/")


def env_owner(name: str) -> str | None:
    """Who owns environment variable ``name``, or None when an experiment may set it."""
    if name in OWNED_ENV:
        return OWNED_ENV[name]
    return next((who for prefix, who in OWNED_ENV_PREFIXES.items() if name.startswith(prefix)), None)


def volume_owner(name: str) -> str | None:
    return OWNED_VOLUMES.get(name)


def mount_owner(path: str) -> str | None:
    """Who owns mount path ``path`` (a path inside a config mount belongs to that mount's owner)."""
    clean = posixpath.normpath(path) if path else path
    if clean in OWNED_MOUNTS:
        return OWNED_MOUNTS[clean]
    for sealed in _SEALED_MOUNTS:
        if clean.startswith(sealed + "/"):
            return OWNED_MOUNTS[sealed]
    return None


def label_owner(key: str) -> str | None:
    if key in OWNED_LABELS:
        return OWNED_LABELS[key]
    return next((who for prefix, who in OWNED_LABEL_PREFIXES.items() if key.startswith(prefix)), None)


def annotation_owner(key: str) -> str | None:
    return next((who for prefix, who in OWNED_ANNOTATION_PREFIXES.items() if key.startswith(prefix)), None)


def limit_owner(name: str) -> str | None:
    return OWNED_LIMITS.get(name)


def env_from_prefix_owner(prefix: str) -> str | None:
    """Who owns every key an ``envFrom`` with this prefix would set (e.g. prefix AWS_), if anyone."""
    if not prefix:
        return None
    return next((who for pre, who in OWNED_ENV_PREFIXES.items() if prefix.startswith(pre)), None)


def refusals(
    where: str,
    *,
    env: Iterable[str] = (),
    env_from_prefixes: Iterable[str] = (),
    volumes: Iterable[str] = (),
    mounts: Iterable[str] = (),
    labels: Iterable[str] = (),
    annotations: Iterable[str] = (),
    limits: Iterable[str] = (),
) -> list[str]:
    """One message per owned name an experiment tried to set; ``where`` is an optional field path
    prefix (``resources.overrides.erc``)."""
    checks: tuple[tuple[str, Iterable[str], Callable[[str], str | None]], ...] = (
        ("env", env, env_owner),
        ("envFrom.prefix", env_from_prefixes, env_from_prefix_owner),
        ("volumes", volumes, volume_owner),
        ("volumeMounts.mountPath", mounts, mount_owner),
        ("podLabels", labels, label_owner),
        ("podAnnotations", annotations, annotation_owner),
        ("extraLimits", limits, limit_owner),
    )
    out: list[str] = []
    for field, names, owner_of in checks:
        path = f"{where}.{field}" if where else field
        for name in names:
            owner = owner_of(name)
            if owner:
                out.append(f"{path}: {name!r} is owned by {owner}; it cannot be set or overridden")
    return out
