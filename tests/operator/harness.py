"""Test harness: plays the Kubeflow training operator against the kmock API, and runs the controller.

For each PyTorchJob the controller creates, :class:`TrainingOperator` runs the Master's container
command locally as a subprocess with what a pod would get — the ConfigMap files written to temp
folders that stand in for the mount paths (``/etc/coe/...``), the container's env, the Secret's
variables (envFrom), and the variables the training operator injects (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT, PET_*) — then records the Master pod (labels from the template, the container's exit
code, its output as the pod log) and writes the job's status conditions as the training operator does.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.kmock_api import KubeAPI, free_port
from tests.support.pythonpath import child_pythonpath

REPO = Path(__file__).resolve().parents[2]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def finished(job: dict) -> bool:
    conds = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] in ("Succeeded", "Failed") and c["status"] == "True" for c in conds)


class TrainingOperator:
    def __init__(self, api: KubeAPI, namespace: str, workdir: Path, *, fake: bool = True):
        from kubernetes import client

        self.api, self.namespace, self.workdir, self.fake = api, namespace, Path(workdir), fake
        self.custom = client.CustomObjectsApi(api.api_client())
        self.fail_attempts: dict[str, int] = {}  # step -> how many first attempts fail
        self.fail_code = 175  # their exit code: retryable (coe_runtime's EXIT_RETRYABLE) unless changed
        self.logs: dict[str, str] = {}
        self.ran: list[str] = []

    def jobs(self) -> list[dict]:
        return sorted(
            self.api.objects("pytorchjobs", self.namespace), key=lambda j: j["metadata"]["creationTimestamp"]
        )

    def unfinished(self) -> list[dict]:
        return [j for j in self.jobs() if not finished(j)]

    def _set_status(self, job: dict, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(
            "kubeflow.org", "v1", self.namespace, "pytorchjobs", job["metadata"]["name"], {"status": status}
        )

    def mark_running(self, job: dict) -> None:
        now = _now()
        self._set_status(
            job,
            {
                "startTime": now,
                "conditions": [
                    {
                        "type": "Created",
                        "status": "True",
                        "reason": "PyTorchJobCreated",
                        "lastTransitionTime": now,
                    },
                    {
                        "type": "Running",
                        "status": "True",
                        "reason": "PyTorchJobRunning",
                        "lastTransitionTime": now,
                    },
                ],
            },
        )

    def finish(self, job: dict, exit_code: int) -> None:
        now, name = _now(), job["metadata"]["name"]
        start = (job.get("status") or {}).get("startTime") or now
        ok = exit_code == 0
        final = {
            "type": "Succeeded" if ok else "Failed",
            "status": "True",
            "reason": "PyTorchJobSucceeded" if ok else "PyTorchJobFailed",
            "message": f"PyTorchJob {name} is successfully completed."
            if ok
            else f"PyTorchJob {name} is failed because 1 Master replica(s) failed (exit code {exit_code}).",
            "lastTransitionTime": now,
        }
        # Several conditions stay True at once (Created with Succeeded), as the real operator leaves them.
        self._set_status(
            job,
            {
                "startTime": start,
                "completionTime": now,
                "conditions": [
                    {
                        "type": "Created",
                        "status": "True",
                        "reason": "PyTorchJobCreated",
                        "lastTransitionTime": start,
                    },
                    {
                        "type": "Running",
                        "status": "False",
                        "reason": "PyTorchJobRunning",
                        "lastTransitionTime": now,
                    },
                    final,
                ],
            },
        )

    def run(self, job: dict) -> int:
        """Run the Master pod of a job to completion; returns its exit code."""
        name = job["metadata"]["name"]
        step = job["metadata"]["labels"]["coe.ml/step"]
        failing = self.fail_attempts.get(step, 0)
        attempt = int(job["metadata"]["labels"]["coe.ml/attempt"])
        self.ran.append(name)
        if attempt <= failing:
            self.logs[name] = f"step {step}: injected failure\nerror (injected, exit {self.fail_code})\n"
            return self.fail_code
        pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == "pytorch")
        root = self.workdir / name
        mounts: dict[str, Path] = {}
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for m in container.get("volumeMounts") or []:
            local = root / "mnt" / m["name"]
            local.mkdir(parents=True, exist_ok=True)
            mounts[m["mountPath"]] = local

        def sub(text: str) -> str:
            for path in sorted(mounts, key=len, reverse=True):
                text = text.replace(path, str(mounts[path]))
            return text

        config_maps = {c["metadata"]["name"]: c for c in self.api.objects("configmaps", self.namespace)}
        for m in container.get("volumeMounts") or []:
            vol = volumes[m["name"]]
            if "configMap" in vol:
                cm = config_maps[vol["configMap"]["name"]]
                for item in vol["configMap"].get("items") or [{"key": k, "path": k} for k in cm["data"]]:
                    (mounts[m["mountPath"]] / item["path"]).write_text(sub(cm["data"][item["key"]]))
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "PYTHONPATH": child_pythonpath(),
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        for e in container.get("env") or []:
            env[e["name"]] = sub(e["value"])
        secrets = {s["metadata"]["name"]: s for s in self.api.objects("secrets", self.namespace)}
        for source in container.get("envFrom") or []:
            secret = secrets[source["secretRef"]["name"]]
            for k, v in (secret.get("data") or {}).items():
                env[k] = base64.b64decode(v).decode()
        port = free_port()
        nnodes = 1 + (job["spec"]["pytorchReplicaSpecs"].get("Worker") or {}).get("replicas", 0)
        env.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            WORLD_SIZE=str(nnodes),
            RANK="0",
            PET_MASTER_ADDR="127.0.0.1",
            PET_MASTER_PORT=str(port),
            PET_NNODES=str(nnodes),
            PET_NODE_RANK="0",
            PET_NPROC_PER_NODE=job["spec"].get("nprocPerNode", "1"),
        )
        for d in ("HOME", "TMPDIR", "COE_CACHE_DIR"):
            if d in env:
                Path(env[d]).mkdir(parents=True, exist_ok=True)
        cmd = [sub(a) for a in container["command"]]
        assert cmd[:3] == ["python", "-m", "coe_controller.launch"], cmd
        if self.fake:
            module_at = cmd.index("coe_runtime") - 1
            assert cmd[module_at] == "-m", cmd
            cmd = [sys.executable, "-m", "tests.operator.fake_runtime", *cmd[module_at + 2 :]]
        else:
            cmd[0] = sys.executable
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        self.logs[name] = proc.stdout[-4000:] + proc.stderr[-4000:]
        return proc.returncode

    def step_all(self) -> int:
        """Run every unfinished job once (Running, then Succeeded/Failed); returns how many ran."""
        n = 0
        for job in self.unfinished():
            if (job["spec"].get("runPolicy") or {}).get("suspend"):
                continue  # Kueue would admit it; nobody does here
            self.mark_running(job)
            code = self.run(job)
            self.record_pod(job, code)
            self.finish(job, code)
            n += 1
        return n

    def record_pod(self, job: dict, exit_code: int) -> dict:
        """The job's Master pod as the training operator leaves it (cleanPodPolicy None), with the
        container's exit code and its output served as the pod log."""
        from kubernetes import client

        name, now = job["metadata"]["name"], _now()
        template = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
        pod_name = f"{name}-master-0"
        labels = {
            **template["metadata"]["labels"],
            "training.kubeflow.org/job-name": name,
            "training.kubeflow.org/replica-type": "master",
            "training.kubeflow.org/replica-index": "0",
        }
        container = template["spec"]["containers"][0]
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": now,
            "finishedAt": now,
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": self.namespace, "labels": labels},
            "spec": template["spec"],
            "status": {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": terminated},
                    }
                ],
            },
        }
        client.CoreV1Api(self.api.api_client()).create_namespaced_pod(self.namespace, pod)
        self.api.set_pod_log(self.namespace, pod_name, self.logs.get(name, ""))
        return pod


class ControllerProcess:
    """``coe-ctl operator`` as a real process against the emulator (killable, restartable)."""

    def __init__(self, kubeconfig: Path, namespace: str, env: dict | None = None, log: Path | None = None):
        self.kubeconfig, self.namespace = kubeconfig, namespace
        self.env = {**os.environ, **(env or {}), "PYTHONPATH": child_pythonpath()}
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> ControllerProcess:
        cmd = [
            sys.executable,
            "-m",
            "coe_controller.cli",
            "operator",
            "-n",
            self.namespace,
            "--kubeconfig",
            str(self.kubeconfig),
            "--health-port",
            "0",
            "--resync",
            "2",
            "--retry-backoff",
            "0.5",
        ]
        out = open(self.log, "a") if self.log else subprocess.DEVNULL  # noqa: SIM115 (lives with the process)
        self.proc = subprocess.Popen(
            cmd, env=self.env, cwd=REPO, stdout=out, stderr=out, start_new_session=True
        )
        self.starts += 1
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
