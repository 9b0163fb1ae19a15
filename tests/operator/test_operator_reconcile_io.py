"""reconcile()'s I/O rules against a recording stand-in for the API: deletion, 409s, frozen retries,
stuck pods and API errors (the kmock end-to-end tests cover the same loop against an emulator)."""

from __future__ import annotations

import copy

import yaml
from coe_controller import render
from coe_controller.kube import Conflict, KubeError
from coe_controller.reconcile import (
    CreateJob,
    EmitEvent,
    decide,
    frozen_retry,
    pod_problem,
    reconcile,
)

from tests.operator.test_operator_e2e import REPO

UID = "uid-new"


class RecordingKube:
    """Answers like the API for what reconcile() asks; records every write."""

    def __init__(self, jobs=(), configmaps=None, create_job_error=None):
        self.jobs = list(jobs)
        self.configmaps = dict(configmaps or {})
        self.create_job_error = create_job_error
        self.calls: list[tuple] = []

    def list_jobs(self, ns, selector, api=None):
        return copy.deepcopy(self.jobs)

    def list_pods(self, ns, selector):
        return []

    def create_configmap(self, ns, body):
        self.calls.append(("create_configmap", body["metadata"]["name"]))
        if body["metadata"]["name"] in self.configmaps:
            raise Conflict("exists")
        self.configmaps[body["metadata"]["name"]] = body

    def get_configmap(self, ns, name):
        return copy.deepcopy(self.configmaps[name])

    def create_job(self, ns, body, api=None):
        self.calls.append(("create_job", body["metadata"]["name"]))
        if self.create_job_error:
            raise self.create_job_error
        self.jobs.append(body)

    def delete_job(self, ns, name, api=None):
        self.calls.append(("delete_job", name))

    def create_event(self, ns, body):
        self.calls.append(("event", body["reason"], body["message"]))

    def patch_experiment_status(self, ns, name, status):
        self.calls.append(("status", status))

    def writes(self, kind):
        return [c for c in self.calls if c[0] == kind]


def experiment(tmp_path, **meta) -> dict:
    doc = yaml.safe_load((REPO / "manifests" / "examples" / "quickstart.yaml").read_text())
    doc["spec"]["store"] = f"file://{tmp_path}/store"
    doc["spec"].pop("strategy", None)
    doc["spec"]["stages"] = ["erc"]
    doc["metadata"] = {"name": "exp", "namespace": "ns", "uid": UID, "generation": 1, **meta}
    return doc


def test_an_experiment_being_deleted_gets_nothing_created(tmp_path):
    kube = RecordingKube()
    obj = experiment(tmp_path, deletionTimestamp="2026-12-01T00:00:00Z")
    assert reconcile(kube, obj, now=1_800_000_000.0) is None
    assert kube.calls == []


def test_a_conflicting_configmap_of_an_earlier_experiment_is_not_trusted(tmp_path):
    obj = experiment(tmp_path)
    first = RecordingKube()
    reconcile(first, obj, now=1_800_000_000.0)
    cm_name = first.writes("create_configmap")[0][1]
    old = copy.deepcopy(first.configmaps[cm_name])
    old["metadata"]["ownerReferences"] = [{"uid": "uid-of-the-deleted-one"}]  # same name, other owner
    kube = RecordingKube(configmaps={cm_name: old})
    reconcile(kube, obj, now=1_800_000_000.0)
    assert kube.writes("create_job") == []  # never runs the old experiment's frozen step.json
    status = kube.writes("status")[-1][1]
    assert status["reason"] == "StepNotCreated" and "earlier experiment" in status["message"]
    assert any(e[1] == "StepNotCreated" for e in kube.writes("event"))


def test_our_own_configmap_on_409_is_accepted(tmp_path):
    obj = experiment(tmp_path)
    first = RecordingKube()
    reconcile(first, obj, now=1_800_000_000.0)
    cm_name = first.writes("create_configmap")[0][1]
    kube = RecordingKube(configmaps={cm_name: first.configmaps[cm_name]})
    reconcile(kube, obj, now=1_800_000_000.0)
    assert len(kube.writes("create_job")) == 1


def test_an_api_error_on_create_is_shown_not_swallowed(tmp_path):
    kube = RecordingKube(create_job_error=KubeError("403 Forbidden: exceeded quota: gpu"))
    reconcile(kube, experiment(tmp_path), now=1_800_000_000.0)
    status = kube.writes("status")[-1][1]
    assert status["reason"] == "StepNotCreated" and "exceeded quota" in status["message"]
    assert any("exceeded quota" in e[2] for e in kube.writes("event"))


def test_an_unreachable_store_is_said_in_the_status(tmp_path, monkeypatch):
    from coe_runtime.errors import StoreError

    def unreachable(obj, *args, **kw):
        raise StoreError("s3://b/exp: endpoint unreachable")

    monkeypatch.setattr("coe_controller.reconcile.observe", unreachable)
    kube = RecordingKube()
    assert reconcile(kube, experiment(tmp_path), now=1_800_000_000.0) == 15.0
    assert kube.writes("status")[-1][1]["reason"] == "StoreUnavailable"
    assert [e[1] for e in kube.writes("event")] == ["StoreUnavailable"]


def test_a_retry_is_made_from_the_frozen_previous_attempt():
    previous = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": "exp-erc-0123abcd-a1",
            "namespace": "ns",
            "uid": "server-set",
            "resourceVersion": "7",
            "labels": {render.LABEL_STEP: "erc", render.LABEL_ATTEMPT: "1"},
            "ownerReferences": [{"uid": UID}],
        },
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {
                    "template": {
                        "metadata": {
                            "labels": {render.LABEL_ATTEMPT: "1", render.LABEL_JOB: "exp-erc-0123abcd-a1"}
                        },
                        "spec": {"containers": [{"name": "pytorch", "image": "registry/coe-runtime:OLD"}]},
                    }
                }
            }
        },
        "status": {"conditions": [{"type": "Failed", "status": "True"}]},
    }
    job = frozen_retry(previous, 2, "exp-erc-0123abcd-a2")
    assert job["metadata"]["name"] == "exp-erc-0123abcd-a2"
    assert job["metadata"]["labels"][render.LABEL_ATTEMPT] == "2"
    assert "uid" not in job["metadata"] and "resourceVersion" not in job["metadata"] and "status" not in job
    tmpl = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    assert tmpl["metadata"]["labels"][render.LABEL_JOB] == "exp-erc-0123abcd-a2"
    assert tmpl["spec"]["containers"][0]["image"] == "registry/coe-runtime:OLD"  # not the edited spec's
    assert job["metadata"]["ownerReferences"] == [{"uid": UID}]


def test_stuck_pods_are_named():
    pull = {
        "metadata": {"name": "p"},
        "status": {
            "containerStatuses": [
                {
                    "name": "pytorch",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}},
                }
            ]
        },
    }
    assert pod_problem([pull]) == (
        "ImagePullBackOff",
        "pod p container pytorch: ImagePullBackOff no such image",
    )
    unschedulable = {
        "metadata": {"name": "q"},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes: gpu",
                }
            ]
        },
    }
    assert pod_problem([unschedulable]) == ("Unschedulable", "pod q cannot be scheduled: 0/3 nodes: gpu")
    starting = {
        "metadata": {"name": "r"},
        "status": {"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]},
    }
    assert pod_problem([starting]) is None


def test_decide_shows_a_stuck_pod_as_the_steps_reason_with_an_event(tmp_path):
    from coe_controller.planner import plan
    from coe_controller.reconcile import parse_experiment

    obj = experiment(tmp_path)
    steps = plan(parse_experiment(obj))
    job_name = render.job_name("exp", "prepare", 1, steps[0].config.fingerprint)
    job = {
        "metadata": {
            "name": job_name,
            "labels": {
                render.LABEL_STEP: "prepare",
                render.LABEL_ATTEMPT: "1",
                render.LABEL_FINGERPRINT: steps[0].config.fingerprint,
            },
            "creationTimestamp": "2026-12-01T00:00:00Z",
        },
        "status": {"conditions": [{"type": "Created", "status": "True"}]},
    }
    actions = decide(
        obj,
        steps,
        set(),
        [job],
        1_800_000_000.0,
        pod_problems={job_name: ("ImagePullBackOff", "pod x: no image")},
    )
    status = next(a.status for a in actions if hasattr(a, "status"))
    prepare = next(s for s in status["steps"] if s["name"] == "prepare")
    assert prepare["reason"] == "ImagePullBackOff" and prepare["message"] == "pod x: no image"
    assert any(isinstance(a, EmitEvent) and a.reason == "StepPodStuck" for a in actions)
    assert not any(isinstance(a, CreateJob) for a in actions)


def test_coe_ctl_status_shows_why_a_step_waits():
    import io

    from coe_controller.cli_cluster import render_status
    from rich.console import Console

    obj = {
        "metadata": {"name": "exp", "namespace": "ns"},
        "status": {
            "phase": "Running",
            "steps": [
                {
                    "name": "erc",
                    "state": "Pending",
                    "attempts": 1,
                    "reason": "ImagePullBackOff",
                    "message": "pod exp-erc-master-0 container pytorch: ImagePullBackOff",
                }
            ],
        },
    }
    out = io.StringIO()
    Console(file=out, width=200).print(render_status(obj, {}))
    assert "erc: ImagePullBackOff: pod exp-erc-master-0 container pytorch" in out.getvalue()
