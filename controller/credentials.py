"""Which credentials the controller reads an experiment's store with: the experiment's own.

A step pod gets its S3 credentials from the Secret ``spec.resources.s3CredentialsSecret`` names (or the
installation's default, ``COE_S3_SECRET``), in the experiment's namespace. The controller reads the same
store (manifests, metrics, STEeR decisions), so it must use the same credentials: otherwise an
experiment whose bucket only its own key may read would look unpublished forever, and an experiment
could make the controller read a bucket with the controller's key that its own Secret cannot reach.

:func:`store_for` therefore

* uses the controller's own environment (``get_store``) for a ``file://`` store, for an experiment that
  names no Secret (``s3CredentialsSecret: ""``: pod identity), and for one that uses the installation's
  default Secret in the controller's own namespace (the chart loads that Secret into the controller with
  ``envFrom``, so there is nothing to read);
* otherwise gets the Secret (RBAC: ``get`` on ``secrets``, rbac.py) from the experiment's namespace, and
  builds an S3 store from its ``AWS_*`` keys, on top of the controller's non-secret S3 settings (the
  endpoint, region and retry settings of the chart's ``s3.*`` values, unless the Secret has its own
  ``AWS_ENDPOINT_URL`` / ``AWS_REGION``).

A Secret that the installation's policy does not allow is never read (:class:`policy.PolicyViolation`).
A missing or unreadable Secret is a :class:`StoreError`: the reconcile loop looks again later, so creating
the Secret afterwards is enough.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Mapping
from typing import Any

from coe_controller import policy

from coe_runtime.errors import StoreError
from coe_runtime.store import get_store
from coe_runtime.store.base import S3_SETTING_KEYS

# Settings of the controller's environment that are not credentials: kept under a Secret's keys.
_SETTINGS = S3_SETTING_KEYS
# What the controller takes from an experiment's Secret (the keys the pods' envFrom gives boto3).
SECRET_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "COE_S3_ADDRESSING_STYLE",
)

_cache: dict[str, Any] = {}  # digest of the store's configuration -> S3Store (one boto3 client each)
_lock = threading.Lock()


def secret_name(spec: Any, defaults: Any = None) -> str | None:
    """The Secret whose credentials an experiment's pods get (None: none, the pod identity)."""
    own = spec.spec.resources.s3_credentials_secret
    name = own if own is not None else getattr(defaults, "s3_secret", None)
    return name or None


def read_secret(kube: Any, namespace: str, name: str) -> dict[str, str]:
    """The decoded ``data`` of Secret ``namespace/name`` (``get secrets``, declared in rbac.py)."""
    reader = getattr(kube, "read_secret", None)
    if reader is not None:  # a Kube with its own call (or a test double)
        return dict(reader(namespace, name))
    kube._require("", "secrets", "get")
    obj = kube._to_dict(
        kube._call(f"get secret {namespace}/{name}", kube._core.read_namespaced_secret, name, namespace)
    )
    data = obj.get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items() if v is not None}


def store_for(
    kube: Any,
    namespace: str,
    spec: Any,
    defaults: Any = None,
    *,
    controller_namespace: str | None = None,
    environ: Mapping[str, str] | None = None,
):
    """The store of ``spec`` (a CoEExperiment in ``namespace``), read with the experiment's credentials.

    ``defaults``: the installation's ``render.ClusterDefaults`` (its ``s3_secret`` and ``policy``);
    ``controller_namespace``: where the controller's own Secret lives (default ``$POD_NAMESPACE``);
    ``environ``: the controller's environment (default ``os.environ``)."""
    from coe_controller.kube import KubeError, NotFound

    uri = spec.spec.store
    env = os.environ if environ is None else environ
    name = secret_name(spec, defaults)
    if not uri.startswith("s3://") or name is None:
        return get_store(uri)
    home = controller_namespace if controller_namespace is not None else env.get("POD_NAMESPACE")
    if name == getattr(defaults, "s3_secret", None) and (home is None or home == namespace):
        return get_store(uri)  # the controller's own Secret, loaded into its environment
    rules = getattr(defaults, "policy", None)
    if rules is not None and not rules.allows_secret(name):
        raise policy.PolicyViolation(
            [
                f"spec.resources.s3CredentialsSecret: Secret {name!r} is not allowed "
                f"(allowed: {', '.join(rules.secrets)})"
            ]
        )
    try:
        data = read_secret(kube, namespace, name)
    except NotFound:
        raise StoreError(
            f"Secret {namespace}/{name} (spec.resources.s3CredentialsSecret) not found: create it with "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ) from None
    except KubeError as e:
        raise StoreError(f"cannot read Secret {namespace}/{name} for the experiment's store: {e}") from None
    if not data.get("AWS_ACCESS_KEY_ID"):
        raise StoreError(
            f"Secret {namespace}/{name} (spec.resources.s3CredentialsSecret) has no AWS_ACCESS_KEY_ID"
        )
    config = {k: env[k] for k in _SETTINGS if env.get(k)}
    config.update({k: data[k] for k in SECRET_KEYS if data.get(k)})
    if data.get("AWS_ENDPOINT_URL") and not data.get("AWS_ENDPOINT_URL_S3"):
        config.pop("AWS_ENDPOINT_URL_S3", None)  # the Secret's endpoint, not the controller's
    digest = hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()
    with _lock:
        store = _cache.get(digest)
        if store is None:
            from coe_runtime.store.s3 import S3Store

            store = _cache[digest] = S3Store.from_mapping(config)
    return store
