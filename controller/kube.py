"""The thin Kubernetes API layer: every call the controller and ``coe-ctl`` make goes through here.

Each method names the (apiGroup, resource, verb) it needs and refuses to run when that permission is
not declared in :mod:`coe_controller.rbac` for the role this client plays, so the RBAC we ship and
the calls we make cannot drift apart. API errors are translated into three classes the loop acts on:
:class:`Conflict` (409: "already done" for creates), :class:`NotFound`, and :class:`Unreachable`
(connection trouble and 5xx: retry later). Bodies and results are plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from coe_controller import rbac
from coe_controller.rbac import GROUP, PLURAL, VERSION


def _default_api():
    """The PyTorchJob renderer: the job API of a call that names none."""
    from coe_controller import render

    return render.renderer()


def _job_apis() -> list[tuple[str, str]]:
    """(group, plural) of every job API a renderer exists for: what a client may call (the Role the
    chart renders grants only the chosen ones, value ``jobApis``)."""
    from coe_controller import render

    return [(r.group, r.plural) for r in render.RENDERERS.values()]


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, message: str, status: int = 0, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason


class Conflict(KubeError):
    """409: the object already exists (create) or changed under us (update with resourceVersion)."""


class NotFound(KubeError):
    """404."""


class Unreachable(KubeError):
    """The API server could not be reached or answered 5xx: retry later."""


class PermissionNotDeclared(RuntimeError):
    """A programming error: a call uses a permission that rbac.py does not declare."""


def _translate(exc: Exception, what: str) -> KubeError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = f"{what}: HTTP {status} {exc.reason or ''}".strip()
        cls = (
            Conflict
            if status == 409
            else NotFound
            if status == 404
            else Unreachable
            if status >= 500 or status == 0
            else KubeError
        )
        return cls(message, status, exc.reason or "")
    return Unreachable(f"{what}: API server unreachable ({type(exc).__name__}: {exc})", 0, "Unreachable")


def load_api_client(kubeconfig: str | None = None, context: str | None = None):
    """An ApiClient from in-cluster service-account config, else the kubeconfig ($KUBECONFIG or given)."""
    from kubernetes import client, config

    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            pass
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError) as e:
        raise KubeError(f"no usable Kubernetes configuration (in-cluster or kubeconfig): {e}") from None


class Kube:
    """Typed-by-purpose API calls; ``role`` picks which declared permission set applies."""

    def __init__(self, api_client, role: str = "controller", request_timeout: float = 30.0):
        from kubernetes import client

        self.api_client = api_client
        self.permissions = (
            rbac.controller_permissions(_job_apis()) if role == "controller" else rbac.USER_PERMISSIONS
        )
        self.role = role
        self.timeout = request_timeout
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._coordination = client.CoordinationV1Api(api_client)

    def _require(self, api_group: str, resource: str, verb: str) -> None:
        if not rbac.allowed(self.permissions, api_group, resource, verb):
            raise PermissionNotDeclared(
                f"{verb} {api_group or 'core'}/{resource} is not declared in rbac.py for role {self.role!r}"
            )

    def _call(self, what: str, fn, *args, **kwargs):
        kwargs.setdefault("_request_timeout", self.timeout)
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # translated: callers handle KubeError subclasses only
            if isinstance(e, KubeError):
                raise
            raise _translate(e, what) from None

    def _to_dict(self, obj: Any) -> dict:
        return obj if isinstance(obj, dict) else self.api_client.sanitize_for_serialization(obj)

    # -- CoEExperiments ------------------------------------------------------------------------------
    def list_experiments(self, namespace: str | None) -> list[dict]:
        self._require(GROUP, PLURAL, "list")
        if namespace:
            res = self._call(
                "list coeexperiments",
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
            )
        else:
            res = self._call(
                "list coeexperiments", self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL
            )
        return list(res.get("items") or [])

    def get_experiment(self, namespace: str, name: str) -> dict:
        self._require(GROUP, PLURAL, "get")
        return self._call(
            f"get coeexperiment {namespace}/{name}",
            self._custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
        )

    def patch_experiment_status(self, namespace: str, name: str, status: dict) -> dict:
        self._require(GROUP, f"{PLURAL}/status", "patch")
        return self._call(
            f"patch coeexperiment {namespace}/{name} status",
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
        )

    def create_experiment(self, namespace: str, body: dict) -> dict:
        self._require(GROUP, PLURAL, "create")
        return self._call(
            f"create coeexperiment {namespace}/{body.get('metadata', {}).get('name')}",
            self._custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            body,
        )

    def delete_experiment(self, namespace: str, name: str) -> None:
        self._require(GROUP, PLURAL, "delete")
        self._call(
            f"delete coeexperiment {namespace}/{name}",
            self._custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            propagation_policy="Background",
        )

    # -- training jobs (PyTorchJob, TrainJob: the API is the renderer's) ------------------------------
    def list_jobs(self, namespace: str, label_selector: str, api: Any = None) -> list[dict]:
        api = api or _default_api()
        self._require(api.group, api.plural, "list")
        res = self._call(
            f"list {api.plural}",
            self._custom.list_namespaced_custom_object,
            api.group,
            api.version,
            namespace,
            api.plural,
            label_selector=label_selector,
        )
        return list(res.get("items") or [])

    def create_job(self, namespace: str, body: dict, api: Any = None) -> dict:
        api = api or _default_api()
        self._require(api.group, api.plural, "create")
        return self._call(
            f"create {api.kind.lower()} {namespace}/{body['metadata']['name']}",
            self._custom.create_namespaced_custom_object,
            api.group,
            api.version,
            namespace,
            api.plural,
            body,
        )

    def delete_job(self, namespace: str, name: str, api: Any = None) -> None:
        api = api or _default_api()
        self._require(api.group, api.plural, "delete")
        self._call(
            f"delete {api.kind.lower()} {namespace}/{name}",
            self._custom.delete_namespaced_custom_object,
            api.group,
            api.version,
            namespace,
            api.plural,
            name,
            propagation_policy="Foreground",
        )

    # -- core objects --------------------------------------------------------------------------------
    def create_configmap(self, namespace: str, body: dict) -> dict:
        self._require("", "configmaps", "create")
        return self._to_dict(
            self._call(
                f"create configmap {namespace}/{body['metadata']['name']}",
                self._core.create_namespaced_config_map,
                namespace,
                body,
            )
        )

    def get_configmap(self, namespace: str, name: str) -> dict:
        self._require("", "configmaps", "get")
        return self._to_dict(
            self._call(
                f"get configmap {namespace}/{name}", self._core.read_namespaced_config_map, name, namespace
            )
        )

    def create_event(self, namespace: str, body: dict) -> None:
        self._require("", "events", "create")
        self._call("create event", self._core.create_namespaced_event, namespace, body)

    def list_pods(self, namespace: str, label_selector: str) -> list[dict]:
        self._require("", "pods", "list")
        res = self._call(
            "list pods", self._core.list_namespaced_pod, namespace, label_selector=label_selector
        )
        return list(self._to_dict(res).get("items") or [])

    def read_pod_log(self, namespace: str, name: str, tail_lines: int = 20) -> str:
        self._require("", "pods/log", "get")
        return self._call(
            f"read log of pod {namespace}/{name}",
            self._core.read_namespaced_pod_log,
            name,
            namespace,
            tail_lines=tail_lines,
        )

    # -- leases (leader election) --------------------------------------------------------------------
    def get_lease(self, namespace: str, name: str) -> dict:
        self._require("coordination.k8s.io", "leases", "get")
        return self._to_dict(
            self._call(
                f"get lease {namespace}/{name}", self._coordination.read_namespaced_lease, name, namespace
            )
        )

    def create_lease(self, namespace: str, body: dict) -> dict:
        self._require("coordination.k8s.io", "leases", "create")
        return self._to_dict(
            self._call(
                f"create lease {namespace}/{body['metadata']['name']}",
                self._coordination.create_namespaced_lease,
                namespace,
                body,
            )
        )

    def replace_lease(self, namespace: str, name: str, body: dict) -> dict:
        """PUT with the resourceVersion we read: a 409 means another replica changed it first."""
        self._require("coordination.k8s.io", "leases", "update")
        return self._to_dict(
            self._call(
                f"update lease {namespace}/{name}",
                self._coordination.replace_namespaced_lease,
                name,
                namespace,
                body,
            )
        )

    # -- watches -------------------------------------------------------------------------------------
    def watch(
        self,
        what: str,
        namespace: str | None,
        timeout_s: int = 60,
        label_selector: str | None = None,
        api: Any = None,
    ) -> Iterator[dict]:
        """Stream raw watch events of ``experiments`` or ``jobs`` until the server closes the stream.

        Callers use an event only as a wake-up signal for the object it names (the loop is
        level-triggered). ``label_selector``: only objects with these labels (our jobs, not every
        PyTorchJob of the cluster). ``api``: the job API of ``jobs`` (a renderer; PyTorchJob when None).
        """
        from kubernetes import watch

        if what == "experiments":
            self._require(GROUP, PLURAL, "watch")
            group, version, plural = GROUP, VERSION, PLURAL
        elif what == "jobs":
            api = api or _default_api()
            self._require(api.group, api.plural, "watch")
            group, version, plural = api.group, api.version, api.plural
        else:
            raise ValueError(what)
        w = watch.Watch()
        args: tuple[str, ...]
        if namespace:
            fn, args = self._custom.list_namespaced_custom_object, (group, version, namespace, plural)
        else:
            fn, args = self._custom.list_cluster_custom_object, (group, version, plural)
        from urllib3.exceptions import ReadTimeoutError

        try:
            # The client-side read timeout ends a stream even if a server ignores timeout_seconds.
            extra = {"label_selector": label_selector} if label_selector else {}
            yield from w.stream(fn, *args, timeout_seconds=timeout_s, _request_timeout=timeout_s + 5, **extra)
        except ReadTimeoutError:
            return  # a quiet stream that timed out: the normal end of a watch
        except Exception as e:
            raise _translate(e, f"watch {plural}") from None
        finally:
            w.stop()
