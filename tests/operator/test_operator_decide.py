"""decide() over a table of observed states: pure, no API, no clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from coe_controller import render
from coe_controller.reconcile import (
    CreateJob,
    DeleteJob,
    EmitEvent,
    Requeue,
    RetryPolicy,
    SetStatus,
    decide,
    iso,
)

NOW = 1_800_000_000.0


@dataclass(frozen=True)
class Step:
    name: str
    kind: str = "train"
    needs: tuple[str, ...] = ()
    tentative: bool = False

    @property
    def output(self) -> str:
        return f"s3://b/exp/{self.name}"


PLAN = [Step("prepare", "prepare"), Step("erc", needs=("prepare",)), Step("test", "generate", needs=("erc",))]


def job(
    step: str, attempt: int, *conds: tuple[str, str], finished_ago: float = 100.0, reason: str = ""
) -> dict:
    t = iso(NOW - finished_ago)
    return {
        "metadata": {
            "name": render.job_name("exp", step, attempt),
            "labels": {render.LABEL_STEP: step, render.LABEL_ATTEMPT: str(attempt)},
            "creationTimestamp": iso(NOW - 500),
        },
        "status": {
            "startTime": iso(NOW - 400),
            "completionTime": t
            if any(c[0] in ("Succeeded", "Failed") and c[1] == "True" for c in conds)
            else None,
            "conditions": [
                {"type": ty, "status": st, "reason": reason or f"PyTorchJob{ty}", "lastTransitionTime": t}
                for ty, st in conds
            ],
        },
    }


def experiment(status: dict | None = None) -> dict:
    return {
        "metadata": {"name": "exp", "namespace": "ns", "uid": "u1", "generation": 3},
        "status": status or {},
    }


def creates(actions) -> list[tuple[str, int]]:
    return [(a.step, a.attempt) for a in actions if isinstance(a, CreateJob)]


def status_of(actions) -> dict | None:
    return next((a.status for a in actions if isinstance(a, SetStatus)), None)


SUCCEEDED = ("Succeeded", "True")
FAILED = ("Failed", "True")
RUNNING = ("Running", "True")
CREATED = ("Created", "True")

# (case, published, jobs, expected creates, expected phase, expected state of each step)
TABLE = [
    ("fresh: first step starts", set(), [], [("prepare", 1)], "Running", ["Starting", "Waiting", "Waiting"]),
    (
        "running job: nothing new",
        set(),
        [job("prepare", 1, CREATED, RUNNING)],
        [],
        "Running",
        ["Running", "Waiting", "Waiting"],
    ),
    (
        "created, no pods yet",
        set(),
        [job("prepare", 1, CREATED)],
        [],
        "Running",
        ["Pending", "Waiting", "Waiting"],
    ),
    (
        "published: next step starts",
        {"prepare"},
        [job("prepare", 1, CREATED, SUCCEEDED)],
        [("erc", 1)],
        "Running",
        ["Succeeded", "Starting", "Waiting"],
    ),
    (
        # several conditions True at once, Succeeded not last: judged by type, never by position
        "Succeeded among several True conditions",
        {"prepare"},
        [job("prepare", 1, SUCCEEDED, CREATED, RUNNING)],
        [("erc", 1)],
        "Running",
        ["Succeeded", "Starting", "Waiting"],
    ),
    (
        "published without a job (local run): next step starts",
        {"prepare"},
        [],
        [("erc", 1)],
        "Running",
        ["Succeeded", "Starting", "Waiting"],
    ),
    (
        "failed once, backoff over: retry",
        {"prepare"},
        [job("erc", 1, CREATED, FAILED)],
        [("erc", 2)],
        "Running",
        ["Succeeded", "Starting", "Waiting"],
    ),
    (
        "failed just now: wait for backoff",
        {"prepare"},
        [job("erc", 1, CREATED, FAILED, finished_ago=1)],
        [],
        "Running",
        ["Succeeded", "Backoff", "Waiting"],
    ),
    (
        "out of attempts: experiment fails",
        {"prepare"},
        [job("erc", 1, FAILED), job("erc", 2, FAILED), job("erc", 3, FAILED, reason="OOMKilled")],
        [],
        "Failed",
        ["Succeeded", "Failed", "Waiting"],
    ),
    (
        "succeeded, outputs not visible yet: verify",
        {"prepare"},
        [job("erc", 1, SUCCEEDED, finished_ago=2)],
        [],
        "Running",
        ["Succeeded", "Verifying", "Waiting"],
    ),
    (
        "succeeded long ago, never published: retried",
        {"prepare"},
        [job("erc", 1, SUCCEEDED, finished_ago=600)],
        [("erc", 2)],
        "Running",
        ["Succeeded", "Starting", "Waiting"],
    ),
    ("everything published", {"prepare", "erc", "test"}, [], [], "Succeeded", ["Succeeded"] * 3),
    (
        "suspended by Kueue",
        set(),
        [job("prepare", 1, CREATED, ("Suspended", "True"))],
        [],
        "Running",
        ["Suspended", "Waiting", "Waiting"],
    ),
]


@pytest.mark.parametrize(
    "case,published,jobs,want_creates,want_phase,want_states", TABLE, ids=[t[0] for t in TABLE]
)
def test_decide_table(case, published, jobs, want_creates, want_phase, want_states):
    actions = decide(
        experiment(), PLAN, published, jobs, NOW, policy=RetryPolicy(max_retries=2, backoff_base_s=10)
    )
    assert creates(actions) == want_creates
    status = status_of(actions)
    assert status["phase"] == want_phase
    assert [s["state"] for s in status["steps"]] == want_states
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])


def test_failure_reason_and_message_come_from_the_job():
    jobs = [job("erc", 1, FAILED), job("erc", 2, FAILED), job("erc", 3, FAILED, reason="OOMKilled")]
    status = status_of(decide(experiment(), PLAN, {"prepare"}, jobs, NOW))
    assert status["reason"] == "OOMKilled"
    assert "step erc failed after 3 attempt(s)" in status["message"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Progressing": "False",
        "Succeeded": "False",
        "Failed": "True",
    }


def test_backoff_requeues_for_the_remaining_delay():
    actions = decide(
        experiment(),
        PLAN,
        {"prepare"},
        [job("erc", 1, FAILED, finished_ago=4)],
        NOW,
        policy=RetryPolicy(backoff_base_s=10),
    )
    assert [a.after_s for a in actions if isinstance(a, Requeue)] == [pytest.approx(6.0)]


def test_idempotent_status_is_not_patched_again_and_terminal_phases_stay():
    first = status_of(decide(experiment(), PLAN, {"prepare"}, [job("erc", 1, CREATED, RUNNING)], NOW))
    again = decide(experiment(first), PLAN, {"prepare"}, [job("erc", 1, CREATED, RUNNING)], NOW + 50)
    assert again == []  # same observation, later: no status patch, no event, no create
    done = status_of(decide(experiment(), PLAN, {"prepare", "erc", "test"}, [], NOW))
    assert decide(experiment(done), PLAN, set(), [], NOW + 10) == []


def test_tentative_steps_never_start_and_events_mark_transitions():
    plan = [Step("prepare", "prepare"), Step("steer-r2-train", needs=("prepare",), tentative=True)]
    actions = decide(experiment(), plan, {"prepare"}, [], NOW)
    assert creates(actions) == []
    events = [a.reason for a in decide(experiment(), PLAN, set(), [], NOW) if isinstance(a, EmitEvent)]
    assert events == ["StepStarted", "ExperimentRunning"]


def test_steer_rounds_and_best_metrics_in_status():
    plan = [Step("steer-r1", "steer_round"), Step("erc"), Step("test", "generate")]
    metrics = {
        "steer-r1": {"accepted": 4, "continue": False},
        "erc": {"weighted_f1": 0.5},
        "test": {"weighted_f1": 0.4},
    }
    status = status_of(decide(experiment(), plan, {"steer-r1", "erc", "test"}, [], NOW, metrics=metrics))
    assert status["steerRounds"] == [{"round": 1, "step": "steer-r1", "accepted": 4, "continue": False}]
    assert status["steerRound"] == 1
    assert status["bestMetrics"] == {"devWeightedF1": 0.5, "testWeightedF1": 0.4}
    assert status["artifacts"]["erc"] == "s3://b/exp/erc"


# -- exit codes: permanent failures end the experiment at once ---------------------------------------
@pytest.mark.parametrize(
    "code,want_creates,want_phase,want_state",
    [
        (2, [], "Failed", "Failed"),  # bad config / data (coe_runtime's EXIT_PERMANENT)
        (1, [], "Failed", "Failed"),  # an internal error: retrying the same input fails the same way
        (127, [], "Failed", "Failed"),
        (175, [("erc", 2)], "Running", "Starting"),  # storage / network outage (EXIT_RETRYABLE)
        (137, [("erc", 2)], "Running", "Starting"),  # OOM-killed (128 + SIGKILL)
        (None, [("erc", 2)], "Running", "Starting"),  # pods gone or unreadable: unknown, retried
    ],
)
def test_exit_code_of_a_failed_job_decides_retry_or_fail(code, want_creates, want_phase, want_state):
    failed = job("erc", 1, CREATED, FAILED)
    codes = {} if code is None else {failed["metadata"]["name"]: code}
    actions = decide(experiment(), PLAN, {"prepare"}, [failed], NOW, exit_codes=codes)
    assert creates(actions) == want_creates
    status = status_of(actions)
    assert status["phase"] == want_phase
    assert status["steps"][1]["state"] == want_state
    if want_phase == "Failed":
        assert status["reason"] == "PermanentExitCode"
        assert status["message"].startswith("step erc failed after 1 attempt(s): ")
        assert f"exit code {code} is permanent" in status["message"]
        assert status["steps"][1]["attempts"] == 1
        warnings = [a for a in actions if isinstance(a, EmitEvent) and a.reason == "ExperimentFailed"]
        assert warnings and f"exit code {code}" in warnings[0].message


def test_a_permanent_code_of_an_older_attempt_does_not_stop_the_retry_in_flight():
    """Only the latest attempt's code counts: attempt 1 failed for good, yet attempt 2 is running."""
    old, current = job("erc", 1, FAILED), job("erc", 2, CREATED, RUNNING)
    actions = decide(
        experiment(), PLAN, {"prepare"}, [old, current], NOW, exit_codes={old["metadata"]["name"]: 2}
    )
    assert status_of(actions)["phase"] == "Running"


def _pod(exit_code: int | None, finished: str, replica: str = "master", last_state: bool = False) -> dict:
    term = {"exitCode": exit_code, "finishedAt": finished, "reason": "Error"}
    key = "lastState" if last_state else "state"
    return {
        "metadata": {"labels": {"training.kubeflow.org/replica-type": replica}},
        "status": {"containerStatuses": [{"name": "pytorch", key: {"terminated": term}}]},
    }


def test_failed_exit_code_is_the_first_pod_to_fail():
    from coe_controller.reconcile import failed_exit_code, is_permanent_exit

    # the Worker failed first (bad data, 2); the Master was stopped after it (143): the cause is 2
    pods = [_pod(143, "2030-01-01T00:00:09Z"), _pod(2, "2030-01-01T00:00:05Z", "worker")]
    assert failed_exit_code(pods) == 2
    # a tie goes to the Master; a restarted container's previous state counts
    tie = [_pod(175, "2030-01-01T00:00:05Z", "worker"), _pod(2, "2030-01-01T00:00:05Z", last_state=True)]
    assert failed_exit_code(tie) == 2
    # exit code 0, a sidecar's code, or no terminated state at all: unknown
    sidecar = {
        "status": {"containerStatuses": [{"name": "istio-proxy", "state": {"terminated": {"exitCode": 2}}}]}
    }
    assert failed_exit_code([_pod(0, "2030-01-01T00:00:05Z"), sidecar, {"status": {}}]) is None
    assert [c for c in (0, 1, 2, 127, 128, 143, 175, 255) if is_permanent_exit(c)] == [1, 2, 127]


def test_status_shows_the_log_of_the_pod_whose_failure_ended_the_job():
    """coe-ctl status reads the log of the first pod to fail, not the first pod listed."""
    from coe_controller.cli_cluster import failing_logs
    from coe_controller.reconcile import failing_pod

    master = _pod(143, "2030-01-01T00:00:09Z")
    worker = _pod(2, "2030-01-01T00:00:05Z", "worker")
    master["metadata"]["name"], worker["metadata"]["name"] = "erc-master-0", "erc-worker-0"
    assert failing_pod([master, worker]) is worker
    running = {"metadata": {"name": "p"}, "status": {}}
    assert failing_pod([running]) is running and failing_pod([]) is None

    class Pods:
        def list_pods(self, ns, selector):
            return [master, worker]

        def read_pod_log(self, ns, name, tail_lines):
            return f"log of {name}"

    status = {"steps": [{"name": "erc", "state": "Failed", "jobName": "x-erc-1"}, {"name": "test"}]}
    assert failing_logs(Pods(), "ns", status) == {"erc": "(pod erc-worker-0)\nlog of erc-worker-0"}


# -- pod restarts within one job: bounded by resources.backoffLimit ------------------------------------
def _live_pod(
    uid: str, phase: str = "Running", exit_code: int | None = None, replica: str = "master"
) -> dict:
    state = {"terminated": {"exitCode": exit_code}} if exit_code is not None else {"running": {}}
    return {
        "metadata": {
            "name": f"j-{replica}-0",
            "uid": uid,
            "labels": {
                "training.kubeflow.org/replica-type": replica,
                "training.kubeflow.org/replica-index": "0",
            },
        },
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "pytorch", "restartCount": 0, "state": state}],
        },
    }


def test_restarts_are_counted_from_recreated_pods():
    """Under restartPolicy ExitCode the operator deletes a pod that exits 128-255 and creates a new one
    of the same name: the uid tells it, restartCount stays 0."""
    from coe_controller.reconcile import Restarts, count_restarts

    first = count_restarts(None, [_live_pod("a")])
    assert first == Restarts(0, "master-0=a", None)  # the first pod seen is the first one
    # caught Failed with 137 before the operator deleted it: the code is noted, not counted yet
    # (with backoffLimit 0 the operator fails the job instead of recreating the pod)
    caught = count_restarts(first, [_live_pod("a", "Failed", 137)])
    assert (caught.count, caught.exit_code) == (0, 137)
    assert count_restarts(caught, []) == caught  # deleted, not recreated yet: nothing new
    second = count_restarts(caught, [_live_pod("b", "Pending")])
    assert (second.count, second.pods_seen, second.exit_code) == (1, "master-0=b", 137)
    assert count_restarts(second, [_live_pod("b")]) == second  # the same pod again: no change
    # a pod that came and went between two looks is missed: one restart per change seen (a lower bound)
    third = count_restarts(second, [_live_pod("d"), _live_pod("w1", replica="worker")])
    assert (third.count, third.pods_seen) == (2, "master-0=d worker-0=w1")
    # a permanent code is not a restart's code
    assert count_restarts(third, [_live_pod("d", "Failed", 2)]).exit_code == 137


def _restarting_job(attempt: int = 1, backoff_limit: int | None = 3) -> dict:
    j = job("erc", attempt, CREATED, ("Restarting", "True"))
    if backoff_limit is not None:
        j["spec"] = {"runPolicy": {"backoffLimit": backoff_limit}}
    return j


def test_restarts_within_the_limit_are_recorded_and_reported():
    from coe_controller.reconcile import Restarts

    j = _restarting_job()
    name = j["metadata"]["name"]
    actions = decide(
        experiment(), PLAN, {"prepare"}, [j], NOW, restarts={name: Restarts(3, "master-0=x", 137)}
    )
    assert creates(actions) == []
    status = status_of(actions)
    assert status["phase"] == "Running"
    erc = status["steps"][1]
    assert erc["state"] == "Restarting"
    assert (erc["restarts"], erc["podsSeen"], erc["lastExitCode"]) == (3, "master-0=x", 137)
    events = [a for a in actions if isinstance(a, EmitEvent) and a.reason == "StepPodRestarted"]
    assert events == []  # no earlier record of this job in the status: nothing to compare with
    before = {**status, "steps": [*status["steps"][:1], {**erc, "restarts": 2}, *status["steps"][2:]]}
    again = decide(
        experiment(before), PLAN, {"prepare"}, [j], NOW, restarts={name: Restarts(3, "master-0=x", 137)}
    )
    events = [a for a in again if isinstance(a, EmitEvent) and a.reason == "StepPodRestarted"]
    assert len(events) == 1 and "restarted 3 time(s)" in events[0].message and "OOM" in events[0].message


@pytest.mark.parametrize("max_retries", [0, 2])
def test_more_restarts_than_the_limit_fail_the_step_without_a_new_job(max_retries):
    """The operator never counts these restarts (kubeflow/trainer#2045); the controller does, and a job
    over its runPolicy.backoffLimit ends the experiment with RestartLimitExceeded. No retry, even with
    retries left: the job cannot be deleted by the controller and a second one beside it doubles GPUs."""
    from coe_controller.reconcile import Restarts

    j = _restarting_job(backoff_limit=3)
    name = j["metadata"]["name"]
    actions = decide(
        experiment(),
        PLAN,
        {"prepare"},
        [j],
        NOW,
        policy=RetryPolicy(max_retries=max_retries),
        restarts={name: Restarts(4, "master-0=x", 137)},
    )
    assert creates(actions) == []
    status = status_of(actions)
    assert status["phase"] == "Failed" and status["reason"] == "RestartLimitExceeded"
    assert status["message"].startswith("step erc failed after 1 attempt(s): ")
    assert "restarted 4 time(s), more than resources.backoffLimit (3)" in status["message"]
    assert "last exit code 137: SIGKILL, most often the OOM killer" in status["message"]
    assert "the controller deleted the job to free its GPUs" in status["message"]
    assert [a for a in actions if isinstance(a, DeleteJob)] == [DeleteJob(name)]
    assert status["steps"][1]["state"] == "Failed" and status["steps"][1]["restarts"] == 4
    assert status["steps"][2]["state"] == "Waiting"
    # exactly at the limit is still allowed
    ok = decide(experiment(), PLAN, {"prepare"}, [j], NOW, restarts={name: Restarts(3, "master-0=x")})
    assert status_of(ok)["phase"] == "Running"


def test_the_limit_is_the_jobs_own_and_the_count_survives_in_the_status():
    from coe_controller.reconcile import Restarts

    # no runPolicy on the job: the policy's limit (resources.backoffLimit of the spec)
    j = _restarting_job(backoff_limit=None)
    name = j["metadata"]["name"]
    over = decide(
        experiment(),
        PLAN,
        {"prepare"},
        [j],
        NOW,
        policy=RetryPolicy(restart_limit=1),
        restarts={name: Restarts(2)},
    )
    assert status_of(over)["reason"] == "RestartLimitExceeded"
    assert "exit code not seen" in status_of(over)["message"]
    # the job's own runPolicy.backoffLimit (frozen when it was created) wins over the policy's
    j0 = _restarting_job(backoff_limit=0)
    status = status_of(
        decide(
            experiment(),
            PLAN,
            {"prepare"},
            [j0],
            NOW,
            policy=RetryPolicy(restart_limit=5),
            restarts={name: Restarts(1)},
        )
    )
    assert status["reason"] == "RestartLimitExceeded" and "resources.backoffLimit (0)" in status["message"]
    # pods unreadable this pass (no observation for the job): what the status recorded still counts
    recorded = status_of(
        decide(experiment(), PLAN, {"prepare"}, [j], NOW, restarts={name: Restarts(3, "master-0=x")})
    )
    assert recorded["phase"] == "Running"
    later = decide(experiment(recorded), PLAN, {"prepare"}, [j], NOW + 5, policy=RetryPolicy(restart_limit=2))
    assert status_of(later)["reason"] == "RestartLimitExceeded"
    # a record of another job of the step (an earlier attempt) says nothing about this one
    other = {**recorded, "steps": [{**s, "jobName": "someone-else"} for s in recorded["steps"]]}
    fresh = decide(experiment(other), PLAN, {"prepare"}, [j], NOW + 5, policy=RetryPolicy(restart_limit=2))
    assert status_of(fresh)["phase"] == "Running"
