"""An in-memory Kubernetes API for tests: kmock's KubernetesEmulator, patched, on a real TCP port.

    api = KubeAPI().start()
    api.write_kubeconfig(tmp_path / "kubeconfig")      # for the python client / a controller process
    api.created("pytorchjobs")                          # names of successful creates, in order
    api.inject(method="POST", path=r"/pytorchjobs$", status=409, apply=True)   # a fault
    api.outage(2.0)                                     # the server is unreachable for 2 s
    api.stop()

kmock 0.8 needs these patches to stand in for a kube-apiserver (see ../shared/DESIGN.md):

* the python client sends ``?watch=True``; kmock only recognises ``watch=true``;
* ``GET /api/v1/namespaces`` fails in kmock's path parser;
* kmock sets no ``uid``/``resourceVersion``/``creationTimestamp``/``generation``: we set them, bump
  ``resourceVersion`` on every write and ``generation`` on spec changes;
* kmock does not implement PUT (replace): we do, with ``resourceVersion`` preconditions (409 on a
  stale one — what leader election relies on);
* the ``/status`` subresource: a status patch changes only ``.status``; a main-resource patch never
  changes ``.status`` (as with ``subresources: {status: {}}``);
* ``labelSelector`` on lists (equality terms);
* garbage collection: deleting an object deletes the objects whose ownerReferences name its uid;
* pod logs (``GET .../pods/NAME/log`` with ``tailLines``) from :meth:`KubeAPI.set_pod_log`, as text.

kmock validates nothing: tests validate what the controller writes against the real schemas.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import json
import re
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp.web
from kmock import KubernetesEmulator, Server
from kmock._internal import enums, parsing

# -- module-level patches of kmock's request parsing -------------------------------------------------
_orig_guess = parsing.guess_k8s
_orig_parse_path = parsing.parse_path


def _guess_k8s(k8s, method, query):
    if method == enums.method.GET and str(query.get("watch", "")).lower() in ("true", "1"):
        query = {**query, "watch": "true"}
    return _orig_guess(k8s, method, query)


def _parse_path(path: str):
    parts = path.strip("/").split("/")
    # /api/v1/namespaces[/NAME]: the namespaces resource itself, which kmock's parser trips over
    if len(parts) in (3, 4) and parts[:3] == ["api", "v1", "namespaces"]:
        return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None, None)
    return _orig_parse_path(path)


if getattr(parsing.guess_k8s, "__name__", "") != "_guess_k8s":
    parsing.guess_k8s = _guess_k8s
    parsing.parse_path = _parse_path


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    return aiohttp.web.json_response(body, status=code)


def _matches(labels: dict, selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class Fault:
    method: str
    path: str  # regex searched in the request path
    status: int
    times: int = 1
    apply: bool = False  # perform the request, then answer the error (the response was "lost")


class PatchedEmulator(KubernetesEmulator):
    """kmock's emulator with the behaviour of a real API server that the controller relies on."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.rv = itertools.count(1)
        self.faults: list[Fault] = []
        self.create_log: list[tuple[str, str, str]] = []  # (plural, namespace, name) of successful creates
        self.pod_logs: dict[tuple[str, str], str] = {}  # (namespace, pod) -> the container's output

    def _key(self, request, name=None):
        return (request.resource, request.namespace, name or request.name)

    def _fault(self, request) -> Fault | None:
        for f in self.faults:
            if f.times > 0 and f.method == request.method and re.search(f.path, request.url.path):
                f.times -= 1
                return f
        return None

    async def _handle(self, request):  # noqa: C901 (one switch over request kinds)
        fault = self._fault(request) if request.resource is not None else None
        if fault is not None and not fault.apply:
            return _status(fault.status, "Injected", f"injected fault {fault.status}")
        response = await self._handle_patched(request)
        if fault is not None:
            return _status(
                fault.status, "AlreadyExists" if fault.status == 409 else "Injected", "injected after apply"
            )
        return response

    async def _handle_patched(self, request):
        if request.resource is None:
            return await super()._handle(request)
        action = request.action
        data = request.data if isinstance(request.data, dict) else None
        if request.resource.plural == "pods" and request.subresource == "log" and request.method == "GET":
            return self._pod_log(request)
        if action == enums.action.LIST:
            return self._list(request)
        if request.method == "PUT" and request.name:
            return await self._replace(request, data or {})
        if action == enums.action.CREATE and data is not None:
            meta = data.setdefault("metadata", {})
            if request.namespace:
                meta["namespace"] = request.namespace
            key = self._key(request, meta.get("name"))
            if key in self._objects and not self._objects[key].deleted:
                return _status(
                    409, "AlreadyExists", f"{request.resource.plural} {meta.get('name')!r} already exists"
                )
            meta.update(
                uid=str(uuid.uuid4()),
                resourceVersion=str(next(self.rv)),
                creationTimestamp=_now(),
                generation=1,
            )
            response = await super()._handle(request)
            if response.status == 200:
                response.set_status(201)  # what the API server answers to a create (clients expect it)
            if response.status < 300:
                self.create_log.append((request.resource.plural, request.namespace, meta.get("name")))
            return response
        if action == enums.action.UPDATE and data is not None:
            key = self._key(request)
            if key not in self._objects or self._objects[key].deleted:
                return _status(404, "NotFound", f"{request.name} not found")
            old = self._objects[key].raw
            if request.subresource == "status":
                for k in [k for k in data if k != "status"]:
                    del data[k]
            else:
                data.pop("status", None)
            meta = data.setdefault("metadata", {})
            meta["resourceVersion"] = str(next(self.rv))
            if "spec" in data and request.subresource is None:
                merged = copy.deepcopy(old.get("spec") or {})
                merged.update(data["spec"])
                if merged != old.get("spec"):
                    meta["generation"] = int(old.get("metadata", {}).get("generation") or 1) + 1
            return await super()._handle(request)
        if action == enums.action.DELETE and request.name:
            key = self._key(request)
            uid = (
                self._objects[key].raw.get("metadata", {}).get("uid")
                if key in self._objects and not self._objects[key].deleted
                else None
            )
            response = await super()._handle(request)
            if uid:
                await self._collect_garbage(uid)
            return response
        return await super()._handle(request)

    def _pod_log(self, request) -> aiohttp.web.Response:
        key = self._key(request)
        if key not in self._objects or self._objects[key].deleted:
            return _status(404, "NotFound", f"pods {request.name!r} not found")
        text = self.pod_logs.get((request.namespace, request.name), "")
        tail = request.params.get("tailLines")
        if tail:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail) :]) if int(tail) > 0 else ""
        return aiohttp.web.Response(text=text, content_type="text/plain")

    def _list(self, request) -> aiohttp.web.Response:
        selector = request.params.get("labelSelector", "")
        items = []
        for (resource, namespace, _name), obj in list(self._objects.items()):
            if resource != request.resource or obj.deleted:
                continue
            if request.namespace and namespace != request.namespace:
                continue
            raw = obj.raw
            if selector and not _matches(raw.get("metadata", {}).get("labels") or {}, selector):
                continue
            items.append(raw)
        return aiohttp.web.json_response(
            {
                "apiVersion": "v1",
                "kind": "List",
                "metadata": {"resourceVersion": str(next(self.rv))},
                "items": items,
            }
        )

    async def _replace(self, request, data: dict) -> aiohttp.web.Response:
        key = self._key(request)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                return _status(404, "NotFound", f"{request.name} not found")
            obj = self._objects[key]
            old = obj.raw
            sent_rv = (data.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != old["metadata"].get("resourceVersion"):
                return _status(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version",
                )
            new = copy.deepcopy(data)
            if request.subresource == "status":
                new = {**copy.deepcopy(old), "status": data.get("status")}
            else:
                new["status"] = old.get("status")
                if new["status"] is None:
                    new.pop("status")
            meta = new.setdefault("metadata", {})
            for field in ("uid", "creationTimestamp", "namespace", "name", "generation"):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
            if request.subresource is None and new.get("spec") != old.get("spec"):
                meta["generation"] = int(old["metadata"].get("generation") or 1) + 1
            meta["resourceVersion"] = str(next(self.rv))
            obj.create(new)
            await self._buses[request.resource].put({"type": "MODIFIED", "object": obj.raw})
            return aiohttp.web.json_response(obj.raw)

    async def _collect_garbage(self, owner_uid: str) -> None:
        dependents = []
        async with self._lock:
            for key, obj in list(self._objects.items()):
                if obj.deleted:
                    continue
                refs = obj.raw.get("metadata", {}).get("ownerReferences") or []
                if any(r.get("uid") == owner_uid for r in refs):
                    raw = obj.raw
                    obj.delete()
                    await self._buses[key[0]].put({"type": "DELETED", "object": raw})
                    dependents.append(raw.get("metadata", {}).get("uid"))
        for uid in dependents:
            if uid:
                await self._collect_garbage(uid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KubeAPI:
    """The patched emulator served on 127.0.0.1 from a background thread (sync tests, subprocesses)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self.handler: PatchedEmulator | None = None
        self._server: Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> KubeAPI:
        self._thread.start()

        async def boot():
            self.handler = PatchedEmulator()
            await self.handler.__aenter__()
            await self._serve()

        self._run(boot())
        return self

    async def _serve(self) -> None:
        self._server = Server(self.handler, port=self.port)
        await self._server.__aenter__()

    async def _unserve(self) -> None:
        if self._server is not None:
            await self._server.__aexit__(None, None, None)
            self._server = None

    def stop(self) -> None:
        async def down():
            await self._unserve()
            await self.handler.__aexit__(None, None, None)

        try:
            self._run(down())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    def outage(self, seconds: float) -> None:
        """Close the listening socket (connections refused, watches cut), then serve again."""

        async def blip():
            await self._unserve()
            await asyncio.sleep(seconds)
            await self._serve()

        self._run(blip(), timeout=seconds + 30)

    def inject(self, method: str, path: str, status: int, times: int = 1, apply: bool = False) -> None:
        self.handler.faults.append(Fault(method.upper(), path, status, times, apply))

    def set_pod_log(self, namespace: str, pod: str, text: str) -> None:
        """What ``GET .../pods/POD/log`` answers (the pod object itself must exist)."""
        self.handler.pod_logs[(namespace, pod)] = text

    def created(self, plural: str) -> list[str]:
        return [name for p, _ns, name in list(self.handler.create_log) if p == plural]

    def objects(self, plural: str, namespace: str | None = None) -> list[dict]:
        async def snap():
            out = []
            async with self.handler._lock:
                for (res, ns, _name), obj in self.handler.objects.items():
                    if res.plural == plural and not obj.deleted and (namespace is None or ns == namespace):
                        out.append(copy.deepcopy(obj.raw))
            return out

        return self._run(snap())

    def history(self, plural: str) -> list[dict]:
        """Every version of every object of ``plural`` ever stored (deleted ones included)."""

        async def snap():
            out = []
            async with self.handler._lock:
                for (res, _ns, _name), obj in self.handler.objects.items():
                    if res.plural == plural:
                        out.extend(copy.deepcopy(dict(v.raw)) for v in obj.history if v is not None)
            return out

        return self._run(snap())

    def kubeconfig(self, namespace: str = "default") -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "test"}}],
            "contexts": [
                {"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": namespace}}
            ],
            "current-context": "kmock",
        }

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.kubeconfig(namespace)))
        return path

    def api_client(self):
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.ApiClient(cfg)
