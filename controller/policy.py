"""What an experiment may make the controller run: allowed images, ServiceAccounts and Secrets.

The controller creates the step pods on the experiment author's behalf, with the controller's own
permissions. Whoever may create a ``CoEExperiment`` in a namespace can therefore run any image, as any
ServiceAccount of that namespace, with any of its Secrets in the environment or mounted as a volume
(docs/cluster.md, "Who may run what"). A cluster admin narrows that with the chart's ``policy`` values,
passed to the controller as environment variables:

==============================  ======================================================================
``COE_ALLOWED_IMAGES``          container images, e.g. ``ghcr.io/coe-k8s/*,registry.example.com/ml/*``
``COE_ALLOWED_SERVICE_ACCOUNTS``  pod ServiceAccounts (a pod that names none runs as ``default``)
``COE_ALLOWED_SECRETS``         Secrets referenced by env ``valueFrom``, ``envFrom`` or a volume
==============================  ======================================================================

Each is a comma- (or newline-) separated list of shell-style patterns (``fnmatch``: ``*``, ``?``,
``[...]``; a pattern without them matches exactly). Unset or empty: no restriction. The installation's
own defaults (``COE_RUNTIME_IMAGE``, ``COE_S3_SECRET``) are always allowed.

:func:`check` is pure: it takes rendered objects (a PyTorchJob, a pod template, a Pod, or a list of
them) and returns one message per violation; the reconcile loop fails the experiment with reason
``PolicyViolation`` before it creates anything (:func:`check_steps` renders every planned step).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from coe_runtime.errors import ConfigError

REASON = "PolicyViolation"


class PolicyViolation(ConfigError):
    """An experiment asks for what the installation's policy does not allow (``violations``: one line each)."""

    def __init__(self, violations: list[str]):
        self.violations = list(violations)
        super().__init__("; ".join(self.violations))


ENV_IMAGES = "COE_ALLOWED_IMAGES"
ENV_SERVICE_ACCOUNTS = "COE_ALLOWED_SERVICE_ACCOUNTS"
ENV_SECRETS = "COE_ALLOWED_SECRETS"
DEFAULT_SERVICE_ACCOUNT = "default"


@dataclass(frozen=True)
class Policy:
    """Allowed patterns; an empty tuple allows everything of that kind."""

    images: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()

    @property
    def restricts(self) -> bool:
        return bool(self.images or self.service_accounts or self.secrets)

    def allows_image(self, image: str) -> bool:
        return _allowed(image, self.images)

    def allows_service_account(self, name: str) -> bool:
        return _allowed(name, self.service_accounts)

    def allows_secret(self, name: str) -> bool:
        return _allowed(name, self.secrets)


def _allowed(value: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _patterns(text: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in re.split(r"[,\n]", text or "") if p.strip())


def from_env(env: Mapping[str, str] | None = None) -> Policy | None:
    """The policy the chart passes (``COE_ALLOWED_*``), None when nothing is restricted; the
    installation's runtime image and S3 Secret (``COE_RUNTIME_IMAGE`` / ``COE_S3_SECRET``) are added to
    a list that restricts."""
    env = os.environ if env is None else env
    images = _patterns(env.get(ENV_IMAGES))
    secrets = _patterns(env.get(ENV_SECRETS))
    if images and env.get("COE_RUNTIME_IMAGE"):
        images += (env["COE_RUNTIME_IMAGE"],)
    if secrets and env.get("COE_S3_SECRET"):
        secrets += (env["COE_S3_SECRET"],)
    found = Policy(images=images, service_accounts=_patterns(env.get(ENV_SERVICE_ACCOUNTS)), secrets=secrets)
    return found if found.restricts else None


# -- what a pod uses ---------------------------------------------------------------------------------
def pod_specs(obj: Any) -> Iterator[tuple[str, dict]]:
    """(where, pod spec) for every pod spec inside ``obj``: a Pod, a pod template, a PyTorchJob (one per
    replica type), a TrainJob (its pod patch, with ``spec.trainer``'s image and env as one more container),
    any object that holds pod specs, or a list of these."""
    if isinstance(obj, list | tuple):
        for o in obj:
            yield from pod_specs(o)
        return
    if not isinstance(obj, dict):
        return
    name = (obj.get("metadata") or {}).get("name")
    kind = obj.get("kind")
    label = f"{kind or 'object'} {name}" if name else kind or "pod template"
    if kind == "TrainJob":
        yield from _trainjob_pods(label, obj.get("spec") or {})
        return
    if kind == "PyTorchJob":
        for rtype, replica in ((obj.get("spec") or {}).get("pytorchReplicaSpecs") or {}).items():
            for _, pod in pod_specs((replica or {}).get("template") or {}):
                yield f"{label} ({rtype})", pod
        return
    for _, pod in _find_pods(obj):
        yield label, pod


def _find_pods(node: Any) -> Iterator[tuple[str, dict]]:
    """Every mapping with a ``containers`` list below ``node`` (the pod specs of any workload kind)."""
    if isinstance(node, list):
        for n in node:
            yield from _find_pods(n)
    elif isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield "", node
            return
        for value in node.values():
            yield from _find_pods(value)


def _trainjob_pods(label: str, spec: dict) -> Iterator[tuple[str, dict]]:
    """A TrainJob's pods: the runtime patches' pod specs, with the trainer (image, env) added as a
    container; a trainer without a pod patch is checked alone (the runtime's ServiceAccount unknown)."""
    trainer = spec.get("trainer") or {}
    trainer_container = {
        "name": "trainer",
        "image": trainer.get("image", ""),
        "env": trainer.get("env") or [],
    }
    pods = [pod for _, pod in _find_pods(spec.get("runtimePatches") or [])]
    if not pods:
        pods = [{"containers": []}]
    for pod in pods:
        containers = [c for c in pod.get("containers") or [] if c.get("image")]
        merged = {**pod, "containers": [*containers, trainer_container] if trainer else containers}
        yield label, merged


def _containers(pod: dict) -> list[dict]:
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]


def images(pod: dict) -> list[str]:
    return [c.get("image", "") for c in _containers(pod)]


def secrets(pod: dict) -> list[tuple[str, str]]:
    """(secret name, where it is referenced) for every Secret a pod spec uses."""
    out: list[tuple[str, str]] = []
    for c in _containers(pod):
        cname = c.get("name", "?")
        for e in c.get("env") or []:
            ref = ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
            if ref:
                out.append((ref, f"container {cname} env {e.get('name')}"))
        for e in c.get("envFrom") or []:
            ref = (e.get("secretRef") or {}).get("name")
            if ref:
                out.append((ref, f"container {cname} envFrom"))
    for v in pod.get("volumes") or []:
        out += [(name, f"volume {v.get('name')}") for name in _volume_secrets(v)]
    out += [(s.get("name"), "imagePullSecrets") for s in pod.get("imagePullSecrets") or [] if s.get("name")]
    return out


def _volume_secrets(node: Any) -> Iterable[str]:
    """Secret names anywhere in a volume: ``secret.secretName``, projected ``sources[].secret.name``,
    and the ``secretRef`` / ``nodePublishSecretRef`` / ``secretName`` of CSI, CephFS, RBD, Azure ..."""
    if isinstance(node, list):
        for n in node:
            yield from _volume_secrets(n)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "secretName" and isinstance(value, str):
            yield value
        elif key == "secret" and isinstance(value, dict) and isinstance(value.get("name"), str):
            yield value["name"]  # a projected volume's source
            yield from _volume_secrets({k: v for k, v in value.items() if k != "name"})
        elif key.endswith(("secretRef", "SecretRef")) and isinstance(value, dict) and value.get("name"):
            yield value["name"]
        else:
            yield from _volume_secrets(value)


def check(obj: Any, policy: Policy | None) -> list[str]:
    """One message per image, ServiceAccount or Secret in ``obj``'s pods that ``policy`` does not allow
    (``obj``: rendered objects, see :func:`pod_specs`). Empty when allowed, or without a policy."""
    if policy is None or not policy.restricts:
        return []
    out: list[str] = []
    for where, pod in pod_specs(obj):
        for image in images(pod):
            if not policy.allows_image(image):
                out.append(f"{where}: image {image!r} is not allowed (allowed: {', '.join(policy.images)})")
        sa = pod.get("serviceAccountName") or pod.get("serviceAccount") or DEFAULT_SERVICE_ACCOUNT
        if not policy.allows_service_account(sa):
            out.append(
                f"{where}: serviceAccountName {sa!r} is not allowed "
                f"(allowed: {', '.join(policy.service_accounts)})"
            )
        for name, ref in secrets(pod):
            if not policy.allows_secret(name):
                out.append(
                    f"{where}: Secret {name!r} ({ref}) is not allowed (allowed: {', '.join(policy.secrets)})"
                )
    return list(dict.fromkeys(out))


def check_steps(steps: Iterable[Any], defaults: Any, owner: Any, job_renderer: Any = None) -> list[str]:
    """:func:`check` over every planned step, rendered as the controller would create it (attempt 1),
    with ``defaults`` (a ``render.ClusterDefaults`` whose ``policy`` is checked). Pure."""
    from coe_controller import render

    policy = getattr(defaults, "policy", None)
    if policy is None or not policy.restricts:
        return []
    job_renderer = job_renderer or render.renderer()
    out: list[str] = []
    for step in steps:
        objs = job_renderer.render(owner, step, 1, render.settings_from(step.resources, defaults))
        out += [f"step {step.name}: {m.split(': ', 1)[1]}" for m in check(objs, policy)]
    return list(dict.fromkeys(out))


def as_violation(status: dict) -> dict:
    """A failed-spec status (``reconcile.invalid_spec_status``) with reason :data:`REASON` instead of
    ``InvalidSpec``, in the status and in its conditions."""

    def swap(d: dict) -> dict:
        return {**d, "reason": REASON} if d.get("reason") == "InvalidSpec" else d

    out = swap(status)
    if "conditions" in out:
        out["conditions"] = [swap(c) for c in out["conditions"]]
    return out
