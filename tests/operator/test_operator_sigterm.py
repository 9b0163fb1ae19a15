"""The controller stops on SIGTERM (a rollout, a node drain): it finishes the experiment in hand, releases
its leader-election Lease so another replica takes over at once, and exits 0 — it used to ignore the
signal as PID 1 (or die with it elsewhere), holding the Lease until it expired."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from coe_controller import operator as op_module
from coe_controller.kube import Kube
from coe_controller.operator import LEASE_NAME, LeaderElector, Operator

from tests.operator.harness import REPO, wait_for
from tests.support.kmock_api import KubeAPI
from tests.support.pythonpath import child_pythonpath

pytestmark = pytest.mark.k8s

NS = "coe-test"


def _lease(api: KubeAPI) -> dict | None:
    leases = [o for o in api.objects("leases", NS) if o["metadata"]["name"] == LEASE_NAME]
    return leases[0] if leases else None


def _holder(api: KubeAPI) -> str | None:
    lease = _lease(api)
    return (lease.get("spec") or {}).get("holderIdentity") if lease else None


def _assert_released(api: KubeAPI) -> None:
    spec = _lease(api)["spec"]
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1, spec  # client-go's release()


def test_sigterm_releases_the_lease_and_exits_0(api, tmp_path):
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", NS)
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "POD_NAME": "controller-a", "POD_NAMESPACE": NS}
    cmd = [
        sys.executable, "-m", "coe_controller.cli", "operator", "-n", NS, "--kubeconfig", str(kubeconfig),
        "--leader-elect", "--health-port", "0", "--resync", "30",
    ]  # fmt: skip
    log = tmp_path / "controller.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_for(lambda: _holder(api) == "controller-a", timeout=60, what="the controller to take the lease")
        time.sleep(0.5)  # into the wait between passes (resync 30 s): a SIGTERM must cut it short
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert code == 0, (code, log.read_text()[-3000:])
    assert took < 5, took
    _assert_released(api)
    # Another replica takes over at once, not after the 15 s lease duration.
    other = LeaderElector(Kube(api.api_client()), NS, "controller-b", lease_s=15)
    assert other.ensure(time.time())
    assert _holder(api) == "controller-b"


def test_request_stop_ends_the_loop_and_releases_the_lease(api):
    # resync 1 s: the watch streams (1 s server timeout) end soon after the stop, so the emulator can stop
    op = Operator(Kube(api.api_client()), NS, leader_elect=True, identity="controller-a", resync_s=1)
    thread = threading.Thread(target=op.run, daemon=True)
    thread.start()
    wait_for(lambda: _holder(api) == "controller-a", timeout=30, what="the controller to take the lease")
    op.request_stop()
    thread.join(5)
    assert not thread.is_alive()
    _assert_released(api)
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("watch-")],
        timeout=15,
        what="the watch threads to end",
    )


def test_release_leaves_a_lease_held_by_another_replica_alone(api):
    kube = Kube(api.api_client())
    a = LeaderElector(kube, NS, "controller-a", lease_s=2)
    assert a.ensure(time.time())
    b = LeaderElector(kube, NS, "controller-b", lease_s=15)
    assert b.ensure(time.time() + 5)  # a's lease expired; b took it over
    assert a.release()  # a still believes it leads: its release must not touch b's lease
    assert _holder(api) == "controller-b"


def test_a_stop_during_a_pass_skips_the_remaining_experiments(monkeypatch):
    class FakeKube:
        def list_experiments(self, namespace):
            return [{"metadata": {"namespace": "ns", "name": n}} for n in ("a", "b", "c")]

    op = Operator(FakeKube(), "ns")
    seen = []

    def reconcile(kube, obj, **_):
        seen.append(obj["metadata"]["name"])
        op.request_stop()  # SIGTERM arrives while "a" is reconciled
        return None

    monkeypatch.setattr(op_module.reconcile, "reconcile", reconcile)
    op.run_once()
    assert seen == ["a"]  # "a" finished, "b" and "c" left for the next leader
