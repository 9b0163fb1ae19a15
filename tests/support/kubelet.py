"""The kubelet's part of the operator test harnesses: a pod's main container as a local process.

Both harnesses (``tests/operator/harness.py``: Kubeflow Training Operator v1.9; ``harness_v2.py``: Kubeflow
Trainer v2 + JobSet) subclass :class:`Kubelet` and run their pods through :meth:`Kubelet.run_pods`. Per pod:

* **volumes**: every ``volumeMount`` becomes a fresh local folder under the pod's own root (an emptyDir is
  empty for every new pod, so a recreated pod starts with nothing on its disks); a ConfigMap volume gets its
  items written there; container paths in the command, in literal env values and in mounted ConfigMap
  files are rewritten to those folders, longest mount path first. The test's own folder (its ``file://``
  store) stands for storage shared by every pod, as a PVC or S3 would be, and is never rewritten;
* **environment** (``pkg/kubelet/kubelet_pods.go`` ``makeEnvironmentVariables``): ``envFrom`` first
  (ConfigMaps and Secrets, each key with the source's prefix), then ``env`` in order, replacing what
  envFrom set (a later duplicate wins); ``value`` literally (``$(VAR)`` references are not expanded here),
  ``valueFrom`` from a Secret key, a ConfigMap key or a pod field (:func:`pod_field`). On top of the image's
  own variables (``PATH``, ``PYTHONPATH``, one torch thread). Then the harness maps the cluster's names to
  this machine (:meth:`Kubelet.network`: a Service or pod hostname to 127.0.0.1, its port to a free one);
* **the runtime call**: the container command must start with the renderer's launcher
  (``coe_controller.render.LAUNCHER``); it runs as is (``fake=False``: the real launcher, torchrun and
  ``coe_runtime``), or, with ``fake=True``, ``coe_runtime``'s arguments go to the fast stand-in
  ``tests/operator/fake_runtime.py``. Output goes to files: the last 4000 characters of stdout, then of
  stderr, are the pod's log. A process killed by signal N reports exit code 128+N, as the container
  runtime does;
* **deletion** (:meth:`Kubelet.delete_pod`), as kube-apiserver and the kubelet do it: the grace period of
  ``pkg/registry/core/pod/strategy.go`` ``CheckGracefulDelete`` (the request's, else the pod's
  ``terminationGracePeriodSeconds``, which ``pkg/apis/core/v1/defaults.go`` ``SetDefaults_PodSpec``
  defaults to 30; 0 for a pod never scheduled or already terminated), recorded with
  ``metadata.deletionTimestamp`` / ``deletionGracePeriodSeconds``; then
  ``pkg/kubelet/kuberuntime/kuberuntime_container.go`` ``killContainer``: SIGTERM to the container's main
  process, SIGKILL to all of its processes when it is still running after the grace period (never less
  than ``minimumGracePeriodInSeconds``, 2 s); then the terminal status, and only then the object removed
  (``pkg/kubelet/status/status_manager.go``: ``canBeDeleted`` waits for a terminal phase, then a delete
  with grace 0). Every deletion of a running pod is recorded in :attr:`Kubelet.terminations`. (kmock
  removes an object with a deletionTimestamp at once unless a finalizer holds it: the harness adds one
  of its own, ``harness.coe.ml/terminating``, and removes it as that final delete.)

Not modelled: init containers, sidecars, probes, preStop hooks, ``$(VAR)`` expansion, resource limits (no
OOM kill: tests inject 137 as an exit code), and a pod deleted by anyone but :meth:`delete_pod` (garbage
collection, ``kubectl``) while its process runs: the process runs on to its end.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.pythonpath import REPO, child_pythonpath

DEFAULT_TERMINATION_GRACE_S = (
    30  # pkg/apis/core/v1/defaults.go SetDefaults_PodSpec (DefaultTerminationGracePeriodSeconds)
)
MIN_KILL_GRACE_S = 2  # pkg/kubelet/kuberuntime/kuberuntime_container.go minimumGracePeriodInSeconds
LOG_TAIL = 4000  # characters of stdout, then of stderr, kept as the pod's log
RUN_LIMIT_S = 900  # a container running longer is a hung test: killed, and the test fails
NODE_NAME = "harness-node"  # spec.nodeName of a pod the harness started (the scheduler's binding)
HOLD_FINALIZER = "harness.coe.ml/terminating"  # keeps a terminating pod in kmock until the final delete


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- kube-apiserver: graceful deletion --------------------------------------------------------------------
def deletion_grace_period(pod: dict, requested: int | None = None) -> int:
    """pkg/registry/core/pod/strategy.go CheckGracefulDelete: the grace period a DELETE of ``pod`` gets."""
    spec, phase = pod.get("spec") or {}, (pod.get("status") or {}).get("phase")
    # "user has specified a value", else "use the default value if set, or deletes the pod immediately (0)"
    period = int(requested) if requested is not None else int(spec.get("terminationGracePeriodSeconds") or 0)
    if not spec.get("nodeName"):
        period = 0  # "if the pod is not scheduled, delete immediately"
    if phase in ("Failed", "Succeeded"):
        period = 0  # "if the pod is already terminated, delete immediately"
    return 1 if period < 0 else period


def kill_grace_period(deletion_grace: int) -> int:
    """kuberuntime_container.go killContainer: "always give containers a minimal shutdown window"."""
    return max(int(deletion_grace), MIN_KILL_GRACE_S)


# -- the kubelet: environment -----------------------------------------------------------------------------
_FIELD = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def pod_field(pod: dict, path: str) -> str:
    """kubelet_pods.go podFieldSelectorRuntimeValue for the fieldRef paths the downward API allows."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": "127.0.0.1",  # every pod of the harness lives on this machine
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    m = _FIELD.match(path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    raise AssertionError(f"fieldRef {path!r} is not modelled by the harness")


def _secret_data(secret: dict) -> dict[str, str]:
    """A Secret's values. The apiserver folds ``stringData`` into base64 ``data`` on write; kmock does not,
    so both are read here."""
    out = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    out.update(secret.get("stringData") or {})
    return out


def container_env(
    pod: dict,
    container: dict,
    config_maps: dict[str, dict],
    secrets: dict[str, dict],
    literal: Callable[[str], str] = lambda v: v,
) -> dict[str, str]:
    """pkg/kubelet/kubelet_pods.go makeEnvironmentVariables: "Env will override EnvFrom variables. Process
    EnvFrom first then allow Env to replace existing values." ``literal`` maps a literal value (the
    harness's container-path rewrite)."""

    def source(kind: str, ref: dict) -> dict[str, str] | None:
        found = (config_maps if kind == "configMap" else secrets).get(ref["name"])
        if found is None:
            assert ref.get("optional"), (
                f"{kind} {ref['name']!r} not found"
            )  # "ignore error when marked optional"
            return None
        return dict(found.get("data") or {}) if kind == "configMap" else _secret_data(found)

    env: dict[str, str] = {}
    for e in container.get("envFrom") or []:
        ref, kind = (e["configMapRef"], "configMap") if "configMapRef" in e else (e["secretRef"], "secret")
        for k, v in (source(kind, ref) or {}).items():
            env[e.get("prefix", "") + k] = v
    for e in container.get("env") or []:
        value_from = e.get("valueFrom")
        if not value_from:
            env[e["name"]] = literal(e.get("value", ""))
        elif "fieldRef" in value_from:
            env[e["name"]] = pod_field(pod, value_from["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
            kind = "secret" if "secretKeyRef" in value_from else "configMap"
            ref = value_from[f"{kind}KeyRef"]
            data = source(kind, ref)
            if data is None:
                continue
            if ref["key"] not in data:
                assert ref.get("optional"), f"{kind} {ref['name']} has no key {ref['key']}"
                continue
            env[e["name"]] = data[ref["key"]]
        else:
            raise AssertionError(f"env {e['name']}: {sorted(value_from)} is not modelled by the harness")
    return env


def image_env() -> dict[str, str]:
    """What the runtime image provides, in this checkout's terms (its python on PATH, the code
    importable), and one torch thread (shared 2-core machines)."""
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": child_pythonpath(),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


# -- the kubelet: volumes and the command -----------------------------------------------------------------
def mount_volumes(
    pod: dict, container: dict, root: Path, shared: str, config_maps: dict[str, dict]
) -> Callable[[str], str]:
    """Every volumeMount of ``container`` as a folder under ``root`` (the pod's own); ConfigMap volumes get
    their items written. Returns the rewrite of container paths in a string to those folders: one pass,
    longest mount path first (a replacement is never rewritten by a shorter mount); ``shared`` is kept."""
    mounts: dict[str, Path] = {}
    for m in container.get("volumeMounts") or []:
        local = root / "mnt" / m["name"]
        local.mkdir(parents=True, exist_ok=True)
        mounts[m["mountPath"]] = local
    pattern = re.compile("|".join(re.escape(p) for p in [shared, *sorted(mounts, key=len, reverse=True)]))

    def sub(text: str) -> str:
        return pattern.sub(lambda m: m.group(0) if m.group(0) == shared else str(mounts[m.group(0)]), text)

    volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
    for m in container.get("volumeMounts") or []:
        vol = volumes[m["name"]]
        if "configMap" in vol:
            cm = config_maps[vol["configMap"]["name"]]
            for item in vol["configMap"].get("items") or [{"key": k, "path": k} for k in cm["data"]]:
                (mounts[m["mountPath"]] / item["path"]).write_text(sub(cm["data"][item["key"]]))
    return sub


def local_command(cmd: list[str], fake: bool) -> list[str]:
    """The container command as this machine runs it: our launcher under this venv's python, or (fake)
    ``coe_runtime``'s arguments handed to the fast stand-in runtime."""
    from coe_controller.render import LAUNCHER

    assert cmd[: len(LAUNCHER)] == LAUNCHER, cmd
    if fake:
        module_at = cmd.index("coe_runtime") - 1
        assert cmd[module_at] == "-m", cmd
        return [sys.executable, "-m", "tests.operator.fake_runtime", *cmd[module_at + 2 :]]
    return [sys.executable, *cmd[1:]]


# -- the kubelet: processes ---------------------------------------------------------------------------------
def _descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (torchrun starts its workers in sessions of their own, so a process group
    does not hold them all; a container's cgroup does)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children[ppid].append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


@dataclass
class Container:
    """One run of a pod's main container as a local process."""

    pod: str
    job: str
    proc: subprocess.Popen
    logs: Path
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    exit_code: int | None = None
    signals: list[str] = field(default_factory=list)  # what the kubelet sent, in order
    term_at: float | None = None  # when SIGTERM was sent
    kill_at: float | None = None  # SIGKILL then, if the process still runs (end of the grace period)

    @classmethod
    def start(cls, pod: str, job: str, cmd: list[str], env: dict[str, str], root: Path) -> Container:
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "stdout", "w") as out, open(root / "stderr", "w") as err:
            proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=err, start_new_session=True)
        return cls(pod, job, proc, root)

    def poll(self) -> int | None:
        """The exit code once the process ended (128+N when signal N killed it), else None; sends the
        pending SIGKILL when the grace period is over."""
        if self.exit_code is not None:
            return self.exit_code
        code = self.proc.poll()
        if code is None and self.kill_at is not None and time.monotonic() >= self.kill_at:
            self.kill()
            code = self.proc.wait(30)
        if code is None and time.monotonic() - self.started > RUN_LIMIT_S:
            self.kill()
            raise AssertionError(f"pod {self.pod}: still running after {RUN_LIMIT_S}s")
        if code is None:
            return None
        self.ended = time.monotonic()
        self.exit_code = 128 + (-code) if code < 0 else code
        return self.exit_code

    def terminate(self, grace_s: int) -> None:
        """The CRI StopContainer of killContainer: SIGTERM to the main process (the container's PID 1),
        SIGKILL after ``grace_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.signals.append("SIGTERM")
            self.term_at = time.monotonic()
            self.kill_at = self.term_at + grace_s

    def kill(self) -> None:
        """SIGKILL to every process of the container."""
        for pid in [*_descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.signals.append("SIGKILL")

    def output(self) -> str:
        out = (self.logs / "stdout").read_text(errors="replace")
        err = (self.logs / "stderr").read_text(errors="replace")
        return out[-LOG_TAIL:] + err[-LOG_TAIL:]


class Kubelet:
    """The kubelet of the harness's pods (and its record of them). A harness subclass provides
    ``container`` (the main container's name), :meth:`network`, :meth:`record_end` and what it needs to
    reach the API (``self.api``, ``self.core``, ``self.namespace``)."""

    container = ""

    def step_all(self) -> int:
        """One pass over every unfinished job (``unfinished``), each by the harness's ``_step_job``;
        returns how many pods ran. A job deleted while the pass looks at it (the controller deletes a job
        past its restart limit) is skipped, as the real reconcilers end on NotFound
        (``client.IgnoreNotFound`` in training-operator release-1.9
        pkg/controller.v1/pytorch/pytorchjob_controller.go and in kubeflow/trainer
        pkg/controller/trainjob_controller.go, Reconcile); on a real cluster its pods go with it, through their
        ownerReferences. The PyTorchJob harness documents its pass on ``_step_job``."""
        from kubernetes.client.exceptions import ApiException

        n = 0
        for job in self.unfinished():
            try:
                n += self._step_job(job)
            except ApiException as e:
                if e.status != 404:
                    raise
        return n

    def unfinished(self) -> list[dict]:
        raise NotImplementedError

    def _step_job(self, job: dict) -> int:
        raise NotImplementedError

    def __init__(self, api, namespace: str, workdir: Path, *, fake: bool = True):
        from kubernetes import client

        self.api, self.namespace, self.workdir, self.fake = api, namespace, Path(workdir), fake
        self.custom = client.CustomObjectsApi(api.api_client())
        self.core = client.CoreV1Api(api.api_client())
        # Injected failures: the pods exit ``fail_code`` instead of running the step (what the operator then
        # does depends on the code, as on a real cluster).
        self.fail_attempts: dict[str, int] = {}  # step -> every pod of its first N job attempts fails
        self.fail_runs: dict[str, int] = {}  # step -> its first N runs (over all its jobs) fail
        self.fail_code = 175  # their exit code: retryable (coe_runtime's EXIT_RETRYABLE) unless changed
        self.logs: dict[str, str] = {}  # job name -> output of the latest run of its first pod
        self.pod_logs: dict[str, str] = {}  # pod name -> output of its latest run
        self.ran: list[str] = []  # job name of every run of a job's pods, in order
        self.pod_runs: collections.Counter[str] = collections.Counter()  # step -> runs of its pods so far
        self.pods_created: collections.Counter[str] = collections.Counter()  # job name -> pods created
        self.containers: list[Container] = []  # every container run, in start order
        self.terminations: list[dict] = []  # every deletion of a running pod: grace, signals, exit code
        # Called about every 50 ms while a job's pods run, with the harness and the running Containers
        # (a test's hook: e.g. delete a pod once a checkpoint is published).
        self.while_running: Callable[[Kubelet, list[Container]], None] | None = None
        self._running: dict[str, tuple[Container, dict]] = {}  # pod name -> (container, job)

    # -- for the harness subclass ---------------------------------------------------------------------
    def network(self, job: dict, pod: dict, env: dict[str, str]) -> dict[str, str]:
        """The env with the cluster's names mapped to this machine (default: unchanged)."""
        return env

    def record_end(self, job: dict, pod: dict, exit_code: int, reason: str, log: str) -> None:
        raise NotImplementedError(f"{type(self).__name__}: ending a deleted pod is not modelled")

    # -- running pods -----------------------------------------------------------------------------------
    def _injected(self, job: dict) -> bool:
        step = job["metadata"]["labels"]["coe.ml/step"]
        attempt = int(job["metadata"]["labels"]["coe.ml/attempt"])
        self.pod_runs[step] += 1
        return attempt <= self.fail_attempts.get(step, 0) or self.pod_runs[step] <= self.fail_runs.get(
            step, 0
        )

    def start_container(self, job: dict, pod: dict) -> Container:
        """Start ``pod``'s main container: its volumes, its environment, the runtime call."""
        name = pod["metadata"]["name"]
        root = self.workdir / job["metadata"]["name"] / f"{name}-{pod['metadata'].get('uid', '')[:8]}"
        spec = pod["spec"]
        main = next(c for c in spec["containers"] if c["name"] == self.container)
        config_maps = {c["metadata"]["name"]: c for c in self.api.objects("configmaps", self.namespace)}
        secrets = {s["metadata"]["name"]: s for s in self.api.objects("secrets", self.namespace)}
        sub = mount_volumes(pod, main, root, str(self.workdir.parent), config_maps)
        env = {**image_env(), **container_env(pod, main, config_maps, secrets, sub)}
        env = self.network(job, pod, env)
        for d in ("HOME", "TMPDIR", "COE_CACHE_DIR"):
            if d in env:
                Path(env[d]).mkdir(parents=True, exist_ok=True)
        cmd = local_command([sub(a) for a in main["command"]], self.fake)
        c = Container.start(name, job["metadata"]["name"], cmd, env, root / "logs")
        self.containers.append(c)
        return c

    def run_pods(self, job: dict, pods: list[dict], *, record: bool = True) -> dict[str, int]:
        """Run the main container of each of ``pods`` (one job's) once, all at the same time, to their ends;
        returns pod name -> exit code. With ``record``, each end is recorded as it happens
        (:meth:`record_end`); a pod deleted meanwhile (:meth:`delete_pod`) is recorded either way."""
        name = job["metadata"]["name"]
        self.ran.append(name)
        if self._injected(job):
            step = job["metadata"]["labels"]["coe.ml/step"]
            text = f"step {step}: injected failure\nerror (injected, exit {self.fail_code})\n"
            self.logs[name] = text
            codes = {}
            for pod in pods:
                self.pod_logs[pod["metadata"]["name"]] = text
                codes[pod["metadata"]["name"]] = self.fail_code
                if record:
                    self.record_end(job, pod, self.fail_code, "", text)
            return codes
        for pod in pods:
            self._running[pod["metadata"]["name"]] = (self.start_container(job, pod), job)
        codes: dict[str, int] = {}
        first = pods[0]["metadata"]["name"] if pods else ""
        by_name = {p["metadata"]["name"]: p for p in pods}
        while any(n in self._running for n in by_name):
            for n in [n for n in by_name if n in self._running]:
                c = self._running[n][0]
                code = c.poll()
                if code is None:
                    continue
                del self._running[n]
                codes[n] = code
                log = c.output()
                self.pod_logs[n] = log
                if n == first:
                    self.logs[name] = log
                if c.signals:
                    self._terminated(job, by_name[n], c)
                elif record:
                    self.record_end(job, by_name[n], code, "", log)
            running = [self._running[n][0] for n in by_name if n in self._running]
            if running and self.while_running:
                self.while_running(self, running)
            time.sleep(0.05)
        return codes

    # -- deleting pods ----------------------------------------------------------------------------------
    def delete_pod(self, pod_name: str, grace_period_seconds: int | None = None) -> int:
        """DELETE of a pod (a preemption, a drain, the operator): returns the grace period it got. A pod
        whose container runs here is terminated as the kubelet does it (see the module docstring); any
        other goes at once."""
        from kubernetes.client.exceptions import ApiException

        pod = next(
            (p for p in self.api.objects("pods", self.namespace) if p["metadata"]["name"] == pod_name), None
        )
        if pod is None:
            return 0
        grace = deletion_grace_period(pod, grace_period_seconds)
        if pod_name not in self._running or grace == 0:
            try:
                self.core.delete_namespaced_pod(pod_name, self.namespace)
            except ApiException as e:
                if e.status != 404:
                    raise
            return 0
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            return int(pod["metadata"].get("deletionGracePeriodSeconds") or 0)  # already terminating
        # kmock removes an object with a deletionTimestamp and no finalizers at once; the apiserver keeps a
        # pod deleted with a grace period until the kubelet's final delete. The harness's finalizer holds it.
        meta = {
            "deletionTimestamp": now(),
            "deletionGracePeriodSeconds": grace,
            "finalizers": [HOLD_FINALIZER],
        }
        self.core.patch_namespaced_pod(pod_name, self.namespace, {"metadata": meta})
        container, job = self._running[pod_name]
        container.terminate(kill_grace_period(grace))
        self.terminations.append(
            {"pod": pod_name, "job": job["metadata"]["name"], "grace_period_seconds": grace}
        )
        self.after_deletion_mark(job)
        return grace

    def after_deletion_mark(self, job: dict) -> None:
        """The pod's update event (deletionTimestamp set) reaches the operator: default nothing."""

    def _terminated(self, job: dict, pod: dict, c: Container) -> None:
        """A deleted pod's container ended: record it, then (the kubelet's status manager) the terminal
        status, and only then the object removed with grace 0."""
        from kubernetes.client.exceptions import ApiException

        rec = next(t for t in reversed(self.terminations) if t["pod"] == c.pod)
        rec.update(
            signals=list(c.signals), exit_code=c.exit_code, seconds=round((c.ended or 0) - c.started, 1)
        )
        name = pod["metadata"]["name"]
        # as the API holds it now (deletionTimestamp set), if it is still the pod that ran
        pod = next(
            (p for p in self.api.objects("pods", self.namespace)
             if p["metadata"]["name"] == name and p["metadata"].get("uid") == pod["metadata"].get("uid")),
            pod,
        )  # fmt: skip
        killed = "SIGKILL" in c.signals
        self.record_end(job, pod, c.exit_code or 0, "Error" if killed else "", self.pod_logs.get(name, ""))
        try:  # the final delete: the harness's finalizer goes, and kmock removes the pod
            self.core.patch_namespaced_pod(name, self.namespace, {"metadata": {"finalizers": []}})
        except ApiException as e:
            if e.status != 404:
                raise
