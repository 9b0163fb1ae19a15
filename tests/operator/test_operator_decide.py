"""decide() over a table of observed states: pure, no API, no clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from coe_controller import render
from coe_controller.reconcile import (
    CreateJob,
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
