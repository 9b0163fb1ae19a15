"""The loop as a work queue: finished experiments cost nothing, others run when due or named by a watch event."""

from __future__ import annotations

import copy

from coe_controller import operator as op
from coe_controller import reconcile as rec


class ListingKube:
    def __init__(self, experiments):
        self.experiments = experiments

    def list_experiments(self, namespace):
        return copy.deepcopy(self.experiments)


def _exp(name, phase=None, generation=1, observed=1):
    status = {"phase": phase, "observedGeneration": observed} if phase else {}
    return {
        "kind": "CoEExperiment",
        "metadata": {"name": name, "namespace": "ns", "generation": generation},
        "status": status,
    }


def test_finished_experiments_are_never_reconciled_and_live_ones_only_when_due(monkeypatch):
    calls = []

    def fake_reconcile(kube, obj, **kw):
        calls.append(obj["metadata"]["name"])
        return 5.0  # "look at me again in 5 s"

    monkeypatch.setattr(rec, "reconcile", fake_reconcile)
    experiments = (
        [_exp("live")] + [_exp(f"done-{i}", "Succeeded") for i in range(40)] + [_exp("failed", "Failed")]
    )
    controller = op.Operator(ListingKube(experiments), "ns", resync_s=30)
    controller.run_once(now=1000.0)
    assert calls == ["live"]  # 41 finished experiments: no reconcile, so no store read
    controller.run_once(now=1001.0)
    assert calls == ["live"]  # not due yet
    controller.mark_dirty(
        {
            "type": "MODIFIED",
            "object": {
                "kind": "PyTorchJob",
                "metadata": {"namespace": "ns", "labels": {"coe.ml/experiment": "live"}},
            },
        }
    )
    controller.run_once(now=1001.5)
    assert calls == ["live", "live"]  # a job event names its experiment: looked at at once
    controller.run_once(now=1007.0)
    assert calls == ["live", "live", "live"]  # due again


def test_an_edited_finished_experiment_is_reconciled_again(monkeypatch):
    calls = []
    monkeypatch.setattr(rec, "reconcile", lambda kube, obj, **kw: calls.append(obj["metadata"]["name"]))
    controller = op.Operator(ListingKube([_exp("edited", "Succeeded", generation=2, observed=1)]), "ns")
    controller.run_once(now=1000.0)
    assert calls == ["edited"]


def test_reconcile_of_a_finished_experiment_reads_nothing():
    class NoCalls:
        def __getattr__(self, name):
            raise AssertionError(f"unexpected API call {name}")

    obj = _exp("done", "Succeeded")
    obj["spec"] = {"store": "s3://unreachable-bucket/x"}  # a store read would fail loudly
    assert rec.reconcile(NoCalls(), obj, now=1000.0) is None


def test_the_lease_is_renewed_while_a_pass_is_slow():
    import threading
    import time

    from coe_controller.kube import NotFound

    class LeaseKube(ListingKube):
        def __init__(self):
            super().__init__([])
            self.lease = None
            self.writes = 0
            self.lock = threading.Lock()

        def get_lease(self, ns, name):
            with self.lock:
                if self.lease is None:
                    raise NotFound("no lease")
                return copy.deepcopy(self.lease)

        def create_lease(self, ns, body):
            with self.lock:
                self.lease, self.writes = body, self.writes + 1

        def replace_lease(self, ns, name, body):
            with self.lock:
                self.lease, self.writes = body, self.writes + 1

    kube = LeaseKube()
    controller = op.Operator(kube, "ns", leader_elect=True, lease_s=3, identity="me")
    controller.elector.ensure(time.time())
    controller.renewing = True
    renewer = threading.Thread(target=controller._renew, daemon=True)
    renewer.start()
    time.sleep(3.5)  # a pass stuck this long (a hung store call) used to let the lease lapse
    assert kube.writes >= 3 and controller.elector.is_leader(time.time())
    controller.stop.set()
    renewer.join(5)
    assert kube.lease["spec"]["holderIdentity"] == "me"


def test_the_controllers_store_calls_end_inside_the_liveness_window():
    from coe_controller.cli_cluster import controller_store_timeouts

    from coe_runtime.store.s3 import S3Settings

    env: dict[str, str] = {}
    controller_store_timeouts(env)
    settings = S3Settings.from_env(env)
    worst = int(env["AWS_MAX_ATTEMPTS"]) * (
        float(env["COE_S3_CONNECT_TIMEOUT_S"]) + float(env["COE_S3_READ_TIMEOUT_S"])
    )
    assert worst < 60  # Health.stale_after_s is at least 60 s: a hung call no longer crash-loops the pod
    assert settings is not None
    kept = {"COE_S3_READ_TIMEOUT_S": "30"}
    controller_store_timeouts(kept)
    assert kept["COE_S3_READ_TIMEOUT_S"] == "30"  # an installation's own setting wins
