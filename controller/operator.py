"""The controller process: watches + periodic resync driving level-triggered passes, leader election,
and the /healthz and /readyz endpoints.

Why the plain ``kubernetes`` client and not kopf: the reconcile is one pure decision over the
whole observable state (see reconcile.py), so the loop needs no per-handler machinery, no
annotations on our objects for handler progress, and no finalizers. Watches are used only as
*wake-up signals* (an event of any type on an experiment or a PyTorchJob sets a flag; the event's
type and content are never looked at), and a periodic resync bounds the delay when a watch is
down. Each pass re-reads experiments, jobs and the store, so a missed or repeated event cannot
cause a wrong action, and a restarted controller simply continues.

Leader election uses a ``coordination.k8s.io/v1`` Lease updated with optimistic concurrency (the
``resourceVersion`` of what we read): a replica acts only while it holds an unexpired lease, and
renews it before every pass, so two replicas never both act.

SIGTERM (a rollout, a node drain; the controller is its container's PID 1, which without a handler
ignores it until the SIGKILL at the end of the grace period) and SIGINT stop the loop: the experiment
being reconciled is finished, the rest of the pass is skipped, the lease is released so that another
replica takes over at once, and the process exits 0. A second signal abandons the pass at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from coe_controller import policy, reconcile, render
from coe_controller.kube import Conflict, Kube, KubeError, NotFound

log = logging.getLogger("coe_controller.operator")

LEASE_NAME = "coe-controller-leader"


def _micro(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.timestamp()
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def defaults_from_env(env: Mapping[str, str] | None = None) -> render.ClusterDefaults:
    """The installation's defaults for experiments that leave them out: ``COE_RUNTIME_IMAGE`` and
    ``COE_S3_SECRET`` (the Helm chart sets both from ``runtime.image`` and its S3 Secret), and
    what experiments may use: ``COE_ALLOWED_IMAGES`` / ``_SERVICE_ACCOUNTS`` / ``_SECRETS`` (policy.py)."""
    env = os.environ if env is None else env
    return render.ClusterDefaults(
        image=env.get("COE_RUNTIME_IMAGE") or None,
        s3_secret=env.get("COE_S3_SECRET") or None,
        policy=policy.from_env(env),
    )


class LeaderElector:
    """Holds a Lease; ``ensure(now)`` acquires or renews it and says whether we may act."""

    def __init__(self, kube: Kube, namespace: str, identity: str, lease_s: int = 15, name: str = LEASE_NAME):
        self.kube, self.namespace, self.identity = kube, namespace, identity
        self.lease_s, self.name = lease_s, name
        self.valid_until = 0.0  # we may act until this time (our renewTime + lease duration)

    def is_leader(self, now: float) -> bool:
        # A safety margin: stop acting a little before another replica may take over.
        return now < self.valid_until - 2.0

    def ensure(self, now: float) -> bool:
        try:
            lease = self.kube.get_lease(self.namespace, self.name)
        except NotFound:
            body = self._lease(self._spec(now, transitions=0, acquired=now))
            try:
                self.kube.create_lease(self.namespace, body)
            except Conflict:
                return self._lost()  # another replica created it first
            return self._won(now)
        except KubeError as e:
            log.warning("leader election: cannot read lease: %s", e)
            return self.is_leader(now)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse_time(spec.get("renewTime")) or 0.0
        duration = int(spec.get("leaseDurationSeconds") or self.lease_s)
        if holder not in (None, "", self.identity) and now < renewed + duration:
            return self._lost()
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        acquired = _parse_time(spec.get("acquireTime")) if holder == self.identity else now
        body = self._lease(self._spec(now, transitions, acquired or now), read=lease)
        try:
            self.kube.replace_lease(self.namespace, self.name, body)
        except Conflict:
            return self._lost()
        except KubeError as e:
            log.warning("leader election: cannot renew lease: %s", e)
            return self.is_leader(now)
        return self._won(now)

    def _lease(self, spec: dict, read: dict | None = None) -> dict:
        """Our Lease object with ``spec``; with the lease ``read``, its resourceVersion, which makes
        the update conditional (409 if someone wrote since we read it)."""
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if read is not None:
            metadata["resourceVersion"] = (read.get("metadata") or {}).get("resourceVersion")
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def _spec(self, now: float, transitions: int, acquired: float) -> dict:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_s,
            "acquireTime": _micro(acquired),
            "renewTime": _micro(now),
            "leaseTransitions": transitions,
        }

    def _won(self, now: float) -> bool:
        if not self.is_leader(now):
            log.info("leader election: %s is the leader", self.identity)
        self.valid_until = now + self.lease_s
        return True

    def _lost(self) -> bool:
        if self.valid_until:
            log.info("leader election: %s is not the leader", self.identity)
        self.valid_until = 0.0
        return False

    def release(self, now: float | None = None) -> bool:
        """Give the lease up so that another replica can take over at once instead of waiting for it
        to expire, as client-go's ``ReleaseOnCancel`` does (k8s.io/client-go/tools/leaderelection/
        leaderelection.go, ``release()``: it writes the record with an empty holderIdentity,
        leaseDurationSeconds 1, acquire/renew time now, and the transition count kept). Only while we
        hold it; the caller must have stopped acting first. True when nothing of ours is left held."""
        if not self.valid_until:
            return True  # we never held it, or lost it already
        self.valid_until = 0.0  # from here on we do not act
        now = time.time() if now is None else now
        for _attempt in range(2):  # a 409: our read was stale; read again once
            try:
                lease = self.kube.get_lease(self.namespace, self.name)
            except NotFound:
                return True
            except KubeError as e:
                log.warning("leader election: cannot read lease to release it: %s", e)
                return False
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return True  # another replica holds it already
            released = {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": _micro(now),
                "renewTime": _micro(now),
                "leaseTransitions": int(spec.get("leaseTransitions") or 0),
            }
            body = self._lease(released, read=lease)
            try:
                self.kube.replace_lease(self.namespace, self.name, body)
            except Conflict:
                continue
            except KubeError as e:
                log.warning("leader election: cannot release lease: %s", e)
                return False
            log.info("leader election: %s released the lease", self.identity)
            return True
        return False


class Health:
    """Liveness: the loop made progress recently. Readiness: the last pass reached the API server."""

    def __init__(self, stale_after_s: float):
        self.stale_after_s = stale_after_s
        self.heartbeat = time.monotonic()
        self.ready = False

    def beat(self, reached_api: bool) -> None:
        self.heartbeat = time.monotonic()
        self.ready = reached_api

    def alive(self) -> bool:
        return time.monotonic() - self.heartbeat < self.stale_after_s

    def serve(self, port: int) -> ThreadingHTTPServer:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                ok = {"/healthz": health.alive, "/readyz": lambda: health.ready and health.alive()}.get(
                    self.path
                )
                if ok is None:
                    self.send_error(404)
                    return
                good = ok()
                body = b"ok\n" if good else b"not ok\n"
                self.send_response(200 if good else 503)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep probe noise out of the controller log
                pass

        server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
        return server


class Operator:
    def __init__(
        self,
        kube: Kube,
        namespace: str | None,
        *,
        leader_elect: bool = False,
        lease_namespace: str | None = None,
        identity: str | None = None,
        resync_s: float = 30.0,
        lease_s: int = 15,
        retry_backoff_s: float = 10.0,
        defaults: render.ClusterDefaults | None = None,
    ):
        self.retry_backoff_s = retry_backoff_s
        self.defaults = defaults or render.ClusterDefaults()
        self.kube = kube
        self.namespace = namespace
        self.resync_s = resync_s
        self.identity = identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        lease_ns = lease_namespace or os.environ.get("POD_NAMESPACE") or namespace or "default"
        self.elector = LeaderElector(kube, lease_ns, self.identity, lease_s) if leader_elect else None
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.health = Health(stale_after_s=max(3 * resync_s, 60.0))
        # A work queue in all but name: each experiment is reconciled when it is due (the time its
        # last pass asked for, or a resync) or when a watch event named it, not on every pass.
        self.due_at: dict[str, float] = {}
        self.dirty: set[str] = set()
        self.dirty_lock = threading.Lock()
        self.reconciles = 0  # passes over one experiment (for the benchmark and tests)
        self.renewing = False  # a thread renews the lease (run() starts it)
        self.renewer: threading.Thread | None = None

    # -- one pass -------------------------------------------------------------------------------------
    def run_once(self, now: float | None = None) -> float:
        """Reconcile every experiment once; returns seconds until the next pass is due."""
        now = time.time() if now is None else now
        if self.elector is not None:
            # With the renewal thread running (run()), the lease is kept apart from the pass, so a
            # slow pass cannot let it lapse; a pass only checks it (and before every experiment).
            leader = self.elector.is_leader(now) if self.renewing else self.elector.ensure(now)
            if not leader:
                self.health.beat(reached_api=True)
                return min(self.resync_s, self.elector.lease_s / 3)
        try:
            experiments = self.kube.list_experiments(self.namespace)
        except KubeError as e:
            log.warning("cannot list experiments: %s", e)
            self.health.beat(reached_api=False)
            return 2.0
        next_in = self.resync_s
        with self.dirty_lock:
            dirty, self.dirty = self.dirty, set()
        seen = set()
        for obj in experiments:
            if self._must_stop_acting():
                break
            key = f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
            seen.add(key)
            wait = self._visit(key, obj, now, key in dirty)
            if wait is not None:
                next_in = min(next_in, wait)
        for gone in set(self.due_at) - seen:
            self.due_at.pop(gone, None)
        self.health.beat(reached_api=True)
        if self.elector is not None:
            next_in = min(next_in, self.elector.lease_s / 3)
        return max(next_in, 0.2)

    def _must_stop_acting(self) -> bool:
        """Shutting down (the rest of the pass is the next leader's, or the next start's), or the
        lease about to lapse: stop acting before another replica may start."""
        if self.stop.is_set():
            return True
        return self.elector is not None and not self.elector.is_leader(time.time())

    def _visit(self, key: str, obj: dict, now: float, dirty: bool) -> float | None:
        """One experiment of a pass: reconciled when it is due or a watch event named it; returns
        seconds until it wants another look (None: finished, it costs nothing until edited)."""
        gen = int(obj["metadata"].get("generation") or 1)
        if reconcile.is_final(obj.get("status") or {}, gen) and not obj["metadata"].get("deletionTimestamp"):
            self.due_at.pop(key, None)
            return None  # finished: costs nothing until it is edited (a new generation)
        due = self.due_at.get(key, 0.0)
        if not dirty and now < due:
            return due - now
        after = self._reconcile(key, obj)
        wait = self.resync_s if after is None else min(after, self.resync_s)
        self.due_at[key] = now + wait
        return wait

    def _reconcile(self, key: str, obj: dict) -> float | None:
        try:
            self.reconciles += 1
            return reconcile.reconcile(
                self.kube, obj, backoff_base_s=self.retry_backoff_s, defaults=self.defaults
            )
        except KubeError as e:
            log.warning("%s: %s (will retry)", key, e)
            return 2.0
        except Exception:  # a controller bug must not stop the other experiments
            log.exception("%s: reconcile failed", key)
            return 10.0

    # -- the loop ---------------------------------------------------------------------------------------
    def _watch(self, what: str) -> None:
        delay = 1.0
        while not self.stop.is_set():
            try:
                kind, _, job_api = what.partition(":")  # "jobs:<job API>" or "experiments"
                selector = f"app.kubernetes.io/managed-by={render.MANAGED_BY}" if kind == "jobs" else None
                for event in self.kube.watch(
                    kind,
                    self.namespace,
                    timeout_s=int(self.resync_s) or 30,
                    label_selector=selector,
                    api=render.renderer(job_api) if job_api else None,
                ):
                    self.mark_dirty(event)  # whatever its type: look at the experiment it names again
                    delay = 1.0
                    if self.stop.is_set():
                        return
            except KubeError as e:
                log.debug("watch %s ended: %s", what, e)
                self.stop.wait(delay)
                delay = min(delay * 2, 30.0)
            self.wake.set()

    def mark_dirty(self, event: dict) -> None:
        """Queue the experiment a watch event names (an experiment, or a job by its label)."""
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {} if isinstance(obj, dict) else {}
        labels = meta.get("labels") or {}
        name = meta.get("name") if obj.get("kind") == "CoEExperiment" else labels.get(render.LABEL_EXPERIMENT)
        if name:
            with self.dirty_lock:
                self.dirty.add(f"{meta.get('namespace')}/{name}")
        self.wake.set()

    def _renew(self) -> None:
        """Acquire or renew the lease every lease/3 seconds, whatever the reconcile pass is doing."""
        assert self.elector is not None
        while not self.stop.is_set():
            was = self.elector.is_leader(time.time())
            if self.elector.ensure(time.time()) and not was:
                self.wake.set()  # just became the leader: start a pass now
            self.stop.wait(self.elector.lease_s / 3)

    # -- stopping ---------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Leave the loop after the experiment being reconciled (no new pass starts)."""
        self.stop.set()
        self.wake.set()

    def _on_signal(self, signum, frame) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt  # a second signal: abandon the pass now (run() still releases)
        log.info("controller %s: %s, stopping", self.identity, signal.Signals(signum).name)
        # Event.set() takes the lock that the interrupted main thread may be holding inside
        # Event.wait(): set the events from another thread, never from the handler itself.
        threading.Thread(target=self.request_stop, name="stop", daemon=True).start()

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal handlers live in the main thread; the caller stops us (request_stop)
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _release(self, timeout_s: float = 5.0) -> None:
        """Release the lease (leader election on), with a short API timeout: we are on our way out."""
        if self.elector is None:
            return
        if self.renewer is not None:
            self.renewer.join(timeout_s)  # no renewal may land after the release
        old = getattr(self.kube, "timeout", None)
        if old is not None:
            self.kube.timeout = min(old, timeout_s)
        try:
            self.elector.release()
        finally:
            if old is not None:
                self.kube.timeout = old

    def run(self, health_port: int | None = None) -> None:
        previous = self._install_signal_handlers()
        server = self.health.serve(health_port) if health_port else None
        # one job watch per job API this installation uses (chart value jobApis -> COE_JOB_APIS); a watch
        # of an API whose CRD is not installed would only fail and back off
        job_apis = [
            k for k in os.environ.get("COE_JOB_APIS", "PyTorchJob").split(",") if k in render.RENDERERS
        ]
        for what in ["experiments", *(f"jobs:{k}" for k in job_apis or ["PyTorchJob"])]:
            threading.Thread(target=self._watch, args=(what,), name=f"watch-{what}", daemon=True).start()
        if self.elector is not None:
            self.elector.ensure(time.time())
            self.renewing = True
            self.renewer = threading.Thread(target=self._renew, name="lease", daemon=True)
            self.renewer.start()
        log.info(
            "controller %s watching %s%s",
            self.identity,
            f"namespace {self.namespace}" if self.namespace else "all namespaces",
            " (leader election on)" if self.elector else "",
        )
        try:
            while not self.stop.is_set():
                self.wake.clear()
                wait = self.run_once()
                # Coalesce bursts of events: a pass covers everything that happened before it.
                self.wake.wait(wait)
                self.stop.wait(0.2)
        finally:
            self.stop.set()  # the watch threads end too
            try:
                self._release()  # no pass runs any more: another replica may act at once
            finally:
                if server is not None:
                    server.shutdown()
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            log.info("controller %s stopped", self.identity)
