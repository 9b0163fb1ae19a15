"""Reconcile one CoEExperiment: a pure decision function plus the thin I/O that feeds and applies it.

Level-triggered: every pass starts from what is observable right now — the experiment object, the
artifact store (a step is done exactly when its output manifest is published) and the PyTorchJobs the
experiment owns — and never from remembered events or in-memory state. So a pass can be repeated,
interrupted or run by a freshly restarted controller with the same outcome, and job names are
deterministic (``<experiment>-<step>-a<attempt>``) so a create that already happened answers 409 and
counts as done.

:func:`decide` is pure (no I/O, no clock): it returns the actions to take, and :func:`reconcile`
performs them: create the ConfigMap + job of a step attempt, emit Events, patch the status (only
when it changed), and say when to look again.
"""

from __future__ import annotations

import calendar
import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from coe_controller import policy, render
from coe_controller.kube import Conflict, Kube, KubeError, NotFound
from coe_controller.spec import ResourcesSpec

log = logging.getLogger("coe_controller.reconcile")


class Phase(StrEnum):
    """The experiment's phase. Succeeded and Failed are terminal."""

    PENDING = "Pending"  # accepted, no step started yet
    RUNNING = "Running"  # at least one step started, none failed for good
    SUCCEEDED = "Succeeded"  # every planned step published its outputs
    FAILED = "Failed"  # a step failed more often than allowed, or the spec is invalid


# Allowed transitions (docs/operator.md draws its diagram from this table).
# Leaving a terminal phase needs a new generation of the spec (an edit is a new request: the steps
# whose fingerprints did not change are reused); decide() enforces this table (allowed_transition).
PHASE_TRANSITIONS: dict[Phase, tuple[Phase, ...]] = {
    Phase.PENDING: (Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED),
    Phase.RUNNING: (Phase.SUCCEEDED, Phase.FAILED),
    Phase.SUCCEEDED: (Phase.PENDING, Phase.RUNNING, Phase.FAILED),  # after an edit only
    Phase.FAILED: (Phase.PENDING, Phase.RUNNING, Phase.SUCCEEDED),  # after an edit (or a fixed spec) only
}


class StepState(StrEnum):
    WAITING = "Waiting"  # inputs not published yet
    STARTING = "Starting"  # job being created in this pass
    PENDING = "Pending"  # job exists, pods not running yet
    SUSPENDED = "Suspended"  # job waits for admission (Kueue)
    RUNNING = "Running"
    RESTARTING = "Restarting"  # pods restarted after a retryable exit code
    VERIFYING = "Verifying"  # job Succeeded, outputs not visible in the store yet
    BACKOFF = "Backoff"  # attempt failed; the next one starts after the backoff delay
    SUCCEEDED = "Succeeded"  # outputs published (MANIFEST.json in the store)
    FAILED = "Failed"  # out of attempts


ACTIVE_STATES = (
    StepState.STARTING,
    StepState.PENDING,
    StepState.SUSPENDED,
    StepState.RUNNING,
    StepState.RESTARTING,
)

# How long a job may report Succeeded before its outputs must be visible in the store.
VERIFY_GRACE_S = 30.0


def is_permanent_exit(code: int) -> bool:
    """The runtime's contract with ``restartPolicy: ExitCode`` (stated once, in coe_runtime.errors):
    1-127 is bad config or data, which a retry cannot fix; 128-255 is worth another attempt."""
    from coe_runtime.errors import is_permanent

    return is_permanent(code)


def _first_failure(pods: list[dict], container: str) -> tuple[dict, int] | None:
    """(pod, exit code) of the pod whose ``container`` terminated first with a non-zero code (its
    current state, else its last one): when one pod fails, its peers are stopped after it, and their
    codes describe that, not the cause. Ties go to the Master."""
    ended = []
    for pos, pod in enumerate(pods):
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        for cs in statuses:
            if cs.get("name") != container:
                continue
            for key in ("state", "lastState"):
                term = (cs.get(key) or {}).get("terminated")
                if term and term.get("exitCode"):
                    labels = (pod.get("metadata") or {}).get("labels") or {}
                    is_master = labels.get("training.kubeflow.org/replica-type", "").lower() == "master"
                    ended.append((term.get("finishedAt") or "~", not is_master, pos, int(term["exitCode"])))
                    break
    if not ended:
        return None
    *_, pos, code = min(ended)
    return pods[pos], code


def failed_exit_code(pods: list[dict], container: str = render.CONTAINER_NAME) -> int | None:
    """The exit code that ended a failed job, from its pods (as the API returns them), or None."""
    found = _first_failure(pods, container)
    return found[1] if found else None


def failing_pod(pods: list[dict], container: str = render.CONTAINER_NAME) -> dict | None:
    """The pod whose failure ended the job (see :func:`failed_exit_code`); else the first pod, or None."""
    found = _first_failure(pods, container)
    return found[0] if found else (pods[0] if pods else None)


# -- pod restarts within one job ------------------------------------------------------------------------
# Kubeflow Training Operator v1.9 (release-1.9) never bounds retryable exits under restartPolicy ExitCode:
# pkg/controller.v1/common/pod.go ReconcilePods deletes a pod that exited 128-255
# (pkg/util/train/train_util.go IsRetryableExitCode) and the next reconcile creates it anew, with the
# job condition Restarting (then Running again); pkg/core/job.go PastBackoffLimit sums the restartCount
# of Running pods, which stays 0 because such pods have restartPolicy Never (pkg/core/pod.go
# SetRestartPolicy), and common/job.go ReconcileJobs' other backoff test only fires for backoffLimit 0
# (its WorkQueue.NumRequeues is util.FakeWorkQueue's constant 0). So an OOM-killed step restarts
# forever (kubeflow/trainer#2045) unless the controller counts.
#
# Nothing in the API counts for us: the recreated pod has the same name (<job>-master-0) and
# restartCount 0, the job's replicaStatuses are recounted from the pods that exist on every reconcile
# (pkg/core/status.go InitializeReplicaStatuses), and Restarting and Running replace each other in
# status.conditions (pkg/util/status.go filterOutCondition), so a job shows only its latest restart.
# What does change is the pod's uid. So the controller records, in the step's status, the uid of each
# replica's pod it last saw (``podsSeen``) and the restarts counted so far (``restarts``): a replica
# whose pod has a new uid was restarted. Pods that come and go between two passes are missed (the count
# is a lower bound, at least one per pass that sees a change, and the first pod seen is taken for the
# first one), so the bound always ends the loop, possibly a few restarts late. The exit code is named
# only when a pass catches the Failed pod before the operator deletes it: the operator records it
# otherwise only in ExitedWithCode Events, which the controller may not list. The limit is the job's
# runPolicy.backoffLimit (render.py writes resources.backoffLimit there; cleanPodPolicy Running keeps a
# Failed job's pods for their exit codes; activeDeadlineSeconds only where the spec sets one).
_KUBEFLOW_REPLICA_TYPE = "training.kubeflow.org/replica-type"
_KUBEFLOW_REPLICA_INDEX = "training.kubeflow.org/replica-index"


@dataclass(frozen=True)
class Restarts:
    """Pod restarts of one job as far as the controller has seen them (recorded in the step's status)."""

    count: int = 0
    pods_seen: str = ""  # "<replica>-<index>=<pod uid> ..." of each replica's last seen pod
    exit_code: int | None = None  # the last retryable exit code a pod showed, when a pass caught it


def _parse_seen(text: str) -> dict[str, str]:
    out = {}
    for item in (text or "").split():
        key, _, uid = item.partition("=")
        if key and uid:
            out[key] = uid
    return out


def _retryable_failure(pod: dict, container: str) -> int | None:
    """The exit code of a Failed pod whose ``container`` ended 128-255 (about to be recreated), else None."""
    if (pod.get("status") or {}).get("phase") != "Failed":
        return None
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if cs.get("name") == container and term and term.get("exitCode") is not None:
            code = int(term["exitCode"])
            return code if code >= 128 else None
    return None


def count_restarts(
    previous: Restarts | None, pods: list[dict], container: str = render.CONTAINER_NAME
) -> Restarts:
    """The restarts of one job after looking at its pods now, given what was recorded before (pure).

    A restart is a replica whose pod has another uid than the one seen before (the operator deleted
    and recreated it). A Failed pod with a retryable code is not counted yet, only its code noted: with
    backoffLimit 0 the operator fails the job instead of recreating the pod.
    """
    prev = previous or Restarts()
    seen = _parse_seen(prev.pods_seen)
    count, code = prev.count, prev.exit_code
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        rtype = str(labels.get(_KUBEFLOW_REPLICA_TYPE, "")).lower()
        key = f"{rtype}-{labels.get(_KUBEFLOW_REPLICA_INDEX, '')}" if rtype else str(meta.get("name", ""))
        uid = str(meta.get("uid") or f"{meta.get('name')}@{meta.get('creationTimestamp')}")
        if key in seen and seen[key] != uid:
            count += 1
        seen[key] = uid
        failed = _retryable_failure(pod, container)
        if failed is not None:
            code = failed
    return Restarts(count, " ".join(f"{k}={uid}" for k, uid in sorted(seen.items())), code)


def exit_code_meaning(code: int | None) -> str:
    """A few words on a retryable exit code (the runtime's contract: coe_runtime.errors)."""
    if code is None:
        return "not seen: the training operator deletes such a pod at once"
    if code == 137:
        return "137: SIGKILL, most often the OOM killer (raise resources.memory or cut the batch size)"
    if code == 143:
        return "143: SIGTERM (preemption, node drain or eviction)"
    if code == 175:
        return "175: transient storage or network trouble, or a failed rendezvous"
    if code == 176:
        return "176: a peer rank or pod was lost"
    if 128 < code < 160:
        return f"{code}: killed by signal {code - 128}"
    return str(code)


def restart_limit(job: dict, policy: RetryPolicy) -> int:
    """The job's own runPolicy.backoffLimit (rendered from resources.backoffLimit when it was created),
    else the policy's."""
    limit = ((job.get("spec") or {}).get("runPolicy") or {}).get("backoffLimit")
    return int(limit) if isinstance(limit, int) and not isinstance(limit, bool) else policy.restart_limit


@dataclass(frozen=True)
class RetryPolicy:
    # New jobs for a step after a failed one (resources.maxRetries; its default when none is given).
    max_retries: int = ResourcesSpec.model_fields["max_retries"].default
    backoff_base_s: float = 10.0  # delay before retry k is base * 2**(k-1), capped
    backoff_max_s: float = 300.0
    # Pod restarts allowed within one job (resources.backoffLimit) when the job does not say its own.
    restart_limit: int = ResourcesSpec.model_fields["backoff_limit"].default

    def delay(self, failed_attempt: int) -> float:
        return min(self.backoff_base_s * 2 ** max(failed_attempt - 1, 0), self.backoff_max_s)


# -- actions -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CreateJob:
    step: str
    attempt: int


@dataclass(frozen=True)
class EmitEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class SetStatus:
    status: dict


@dataclass(frozen=True)
class Requeue:
    after_s: float


@dataclass(frozen=True)
class DeleteJob:
    """Stop a job that will never end by itself (pods recreated past the restart limit) and free its
    GPUs; its pods go with it (foreground propagation)."""

    job: str


Action = CreateJob | EmitEvent | SetStatus | Requeue | DeleteJob


# -- helpers -----------------------------------------------------------------------------------------
def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


def job_attempt(job: dict) -> int:
    try:
        return int(job.get("metadata", {}).get("labels", {}).get(render.LABEL_ATTEMPT, "0"))
    except ValueError:
        return 0


def jobs_by_step(jobs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for job in jobs:
        step = job.get("metadata", {}).get("labels", {}).get(render.LABEL_STEP)
        if step:
            out.setdefault(step, []).append(job)
    for v in out.values():
        v.sort(key=job_attempt)
    return out


def _find_number(obj: Any, key_part: str) -> float | None:
    """The first numeric value whose key contains ``key_part`` (depth-first, dicts only)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if key_part in str(k).lower() and isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
        for v in obj.values():
            found = _find_number(v, key_part)
            if found is not None:
                return found
    return None


def summarize_metrics(doc: dict | None) -> dict:
    """A small flat summary of a step's metrics file for the status (scalars only)."""
    if not isinstance(doc, dict):
        return {}
    out = {}
    for k, v in doc.items():
        if isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) <= 80):
            out[str(k)] = round(v, 4) if isinstance(v, float) else v
        if len(out) >= 12:
            break
    return out


# Failures that judge the spec, not a run: looked at again every pass (a fixed spec, a relaxed policy
# or a newer controller lets the experiment start), unlike a finished run.
SPEC_VERDICTS = ("InvalidSpec", policy.REASON)


def is_final(status: dict, generation: int) -> bool:
    """Whether a status is a finished record for this generation of the spec (nothing more to do)."""
    phase = status.get("phase")
    if phase not in (Phase.SUCCEEDED.value, Phase.FAILED.value) or status.get("reason") in SPEC_VERDICTS:
        return False
    return int(status.get("observedGeneration") or generation) >= generation


def _fingerprint(step: Any) -> str:
    config = getattr(step, "config", None)
    return getattr(config, "fingerprint", "") or ""


def jobs_of_step(by_step: dict[str, list[dict]], step: Any) -> list[dict]:
    """The jobs that ran *this* step identity: a job of an earlier spec's version of the step (another
    fingerprint) says nothing about this one."""
    fp = _fingerprint(step)
    jobs = by_step.get(render.label_value(step.name), [])
    return [
        j for j in jobs if (j.get("metadata", {}).get("labels") or {}).get(render.LABEL_FINGERPRINT, "") == fp
    ]


# -- the decision ------------------------------------------------------------------------------------
@dataclass
class _StepView:
    name: str
    kind: str
    output: str
    state: StepState
    fingerprint: str = ""
    attempts: int = 0
    job_name: str | None = None
    start: str | None = None
    finish: str | None = None
    reason: str = ""
    message: str = ""
    metrics: dict = field(default_factory=dict)
    restarts: Restarts | None = None  # pod restarts of the job named by job_name

    def record(self) -> dict:
        rec: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "state": self.state.value,
            "attempts": self.attempts,
        }
        for key, val in (
            ("jobName", self.job_name),
            ("startTime", self.start),
            ("finishTime", self.finish),
            ("reason", self.reason),
            ("message", self.message),
        ):
            if val:
                rec[key] = val
        if self.metrics:
            rec["metrics"] = self.metrics
        if self.fingerprint:
            rec["fingerprint"] = self.fingerprint
        r = self.restarts
        if r is not None and (r.count or r.pods_seen):
            rec["restarts"] = r.count
            rec["podsSeen"] = r.pods_seen
            if r.exit_code is not None:
                rec["lastExitCode"] = r.exit_code
        rec["output"] = self.output
        return rec


def _recorded_restarts(record: dict | None, job_name: str | None) -> Restarts | None:
    """What the status recorded of a job's restarts (only for that same job)."""
    if not record or not job_name or record.get("jobName") != job_name or "restarts" not in record:
        return None
    code = record.get("lastExitCode")
    return Restarts(int(record.get("restarts") or 0), str(record.get("podsSeen") or ""), code)


def _condition(
    old: list[dict], type_: str, status: bool, reason: str, message: str, gen: int, now: float
) -> dict:
    prev = next((c for c in old if c.get("type") == type_), None)
    value = "True" if status else "False"
    # lastTransitionTime moves only when the status flips: an unchanged condition patches nothing.
    since = (
        prev["lastTransitionTime"]
        if prev and prev.get("status") == value and prev.get("lastTransitionTime")
        else iso(now)
    )
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": gen,
    }


@dataclass
class _Pass:
    """What one decide() pass has concluded so far (the pieces below add to it)."""

    experiment: str
    now: float
    policy: RetryPolicy
    creates: list[CreateJob] = field(default_factory=list)
    deletes: list[DeleteJob] = field(default_factory=list)
    requeue: float | None = None
    failed: _StepView | None = None

    def want(self, after: float) -> None:
        self.requeue = after if self.requeue is None else min(self.requeue, after)

    def start(self, v: _StepView, step: Any, attempt: int, attempts_so_far: int) -> None:
        self.creates.append(CreateJob(step.name, attempt))
        v.state = StepState.STARTING
        v.attempts = attempts_so_far + 1
        v.job_name = render.job_name(self.experiment, step.name, attempt, _fingerprint(step))
        v.finish = None
        v.restarts = None  # counted per job: a new one starts from none


def _observed_view(step: Any, jobs: list[dict], state_of, restarts: dict, old_step: dict | None) -> _StepView:
    """A step as its latest job shows it (state decided later)."""
    v = _StepView(
        step.name, step.kind, step.output, StepState.WAITING, _fingerprint(step), attempts=len(jobs)
    )
    if jobs:
        last = jobs[-1]
        st = state_of(last)
        v.job_name = last["metadata"]["name"]
        v.start = st.start_time or (jobs[0].get("metadata", {}).get("creationTimestamp"))
        v.finish = st.finish_time
        v.reason, v.message = st.reason, st.message
        v.restarts = restarts.get(v.job_name) or _recorded_restarts(old_step, v.job_name)
    return v


def _judge_job(
    v: _StepView, step: Any, job: dict, st: Any, exit_codes: dict, p: _Pass
) -> tuple[tuple | None, bool]:
    """(failure (reason, message) or None, permanent?) of a step's latest job; sets the live states."""
    if st.phase == "Succeeded":
        finished_at = parse_iso(st.finish_time) or p.now
        if p.now - finished_at < VERIFY_GRACE_S:
            v.state = StepState.VERIFYING
            p.want(max(1.0, VERIFY_GRACE_S - (p.now - finished_at)))
            return None, False
        return ("OutputsNotPublished", f"job {v.job_name} succeeded but {step.output} has no manifest"), False
    if st.phase == "Failed":
        code = exit_codes.get(v.job_name or "")
        if code is not None and is_permanent_exit(code):
            return (
                "PermanentExitCode",
                f"exit code {code} is permanent (1-127: bad config or data), not retried; "
                f"job {v.job_name}: {st.message or st.reason or 'failed'}",
            ), True
        return (st.reason or "JobFailed", st.message or f"job {v.job_name} failed"), False
    v.state = StepState(st.phase)
    limit = restart_limit(job, p.policy)
    if v.restarts is not None and v.restarts.count > limit:
        p.deletes.append(DeleteJob(v.job_name or ""))
        return (
            "RestartLimitExceeded",
            f"the pods of job {v.job_name} restarted {v.restarts.count} time(s), more than "
            f"resources.backoffLimit ({limit}); last exit code "
            f"{exit_code_meaning(v.restarts.exit_code)}. The training operator recreates a "
            "pod that exits 128-255 without counting it against runPolicy.backoffLimit "
            "(kubeflow/trainer#2045); the controller deleted the job to free its GPUs",
        ), True
    return None, False


def _retry_or_fail(v: _StepView, step: Any, jobs: list[dict], st: Any, permanent: bool, p: _Pass) -> None:
    """After a failed attempt: a new one after the backoff delay, or the step fails for good."""
    attempt = job_attempt(jobs[-1])
    if attempt > p.policy.max_retries or permanent:
        v.state = StepState.FAILED
        p.failed = p.failed or v
        return
    due = (parse_iso(st.finish_time) or p.now) + p.policy.delay(attempt)
    if p.now >= due:
        p.start(v, step, attempt + 1, len(jobs))
    else:
        v.state = StepState.BACKOFF
        p.want(due - p.now)


def _decide_step(step: Any, v: _StepView, jobs: list[dict], published: set, ctx: dict, p: _Pass) -> None:
    if step.name in published:
        v.state = StepState.SUCCEEDED
        v.metrics = ctx["metrics"].get(step.name, {})
        v.finish = v.finish or ctx["old_steps"].get(step.name, {}).get("finishTime") or iso(p.now)
        v.reason, v.message = "", ""
        return
    if not jobs:
        # A tentative step (past an undecided STEeR round) may change or vanish: never start it.
        if not getattr(step, "tentative", False) and all(n in published for n in step.needs):
            p.start(v, step, 1, 0)
            v.start = iso(p.now)
        return
    st = ctx["state_of"](jobs[-1])
    failure, permanent = _judge_job(v, step, jobs[-1], st, ctx["exit_codes"], p)
    if failure:
        v.reason, v.message = failure
        _retry_or_fail(v, step, jobs, st, permanent, p)
    elif v.state in ACTIVE_STATES and (problem := ctx["pod_problems"].get(v.job_name or "")):
        v.reason, v.message = problem  # the job waits on something a person must fix


def _phase_of(views: list[_StepView], plan: list, p: _Pass) -> tuple[Phase, str, str]:
    if p.failed is not None:
        p.creates = []  # no new work once the experiment has failed
        for v in views:
            if v.state == StepState.STARTING:
                v.state, v.attempts = StepState.WAITING, v.attempts - 1
        message = f"step {p.failed.name} failed after {p.failed.attempts} attempt(s): {p.failed.message}"
        return Phase.FAILED, p.failed.reason or "StepFailed", message
    if plan and all(v.state == StepState.SUCCEEDED for v in views):
        return Phase.SUCCEEDED, "AllStepsSucceeded", f"{len(views)} steps succeeded"
    if any(v.state != StepState.WAITING for v in views):
        current = [v.name for v in views if v.state not in (StepState.WAITING, StepState.SUCCEEDED)]
        return Phase.RUNNING, "StepsRunning", "running: " + ", ".join(current) if current else "between steps"
    return Phase.PENDING, "Waiting", "no step can start yet"


def allowed_transition(old: str | None, new: Phase, new_generation: bool) -> bool:
    """PHASE_TRANSITIONS, enforced: staying put is always allowed; leaving a terminal phase only
    for a new generation of the spec (an edit is a new request)."""
    if old is None or old == new.value:
        return True
    before = Phase(old)
    if before in (Phase.SUCCEEDED, Phase.FAILED) and not new_generation:
        return False
    return new in PHASE_TRANSITIONS[before]


def _step_events(views: list[_StepView], old_steps: dict) -> list[EmitEvent]:
    """Events for the step transitions since the recorded status."""
    events: list[EmitEvent] = []
    for v in views:
        before = old_steps.get(v.name, {})
        if (
            v.restarts is not None
            and v.state in ACTIVE_STATES
            and v.job_name == before.get("jobName")
            and v.restarts.count > int(before.get("restarts") or 0)
        ):
            events.append(
                EmitEvent(
                    "Warning",
                    "StepPodRestarted",
                    f"step {v.name}: the pods of job {v.job_name} restarted {v.restarts.count} time(s) "
                    f"(last exit code {exit_code_meaning(v.restarts.exit_code)})",
                )
            )
        if v.reason in STUCK_REASONS and v.reason != before.get("reason"):
            events.append(EmitEvent("Warning", "StepPodStuck", f"step {v.name}: {v.message}"))
        if v.state.value == before.get("state") and v.attempts == before.get("attempts", 0):
            continue
        if v.state == StepState.STARTING:
            first = v.attempts == 1
            what = (
                "started"
                if first
                else f"retried (attempt {v.attempts}) after {before.get('reason') or v.reason}"
            )
            events.append(
                EmitEvent(
                    "Normal" if first else "Warning",
                    "StepStarted" if first else "StepRetried",
                    f"step {v.name} {what}: job {v.job_name}",
                )
            )
        elif v.state == StepState.SUCCEEDED:
            events.append(EmitEvent("Normal", "StepSucceeded", f"step {v.name} published {v.output}"))
        elif v.state == StepState.BACKOFF and before.get("state") != StepState.BACKOFF.value:
            events.append(
                EmitEvent(
                    "Warning",
                    "StepAttemptFailed",
                    f"step {v.name} attempt {v.attempts} failed: {v.reason}: {v.message}",
                )
            )
    return events


def decide(
    experiment: dict,
    plan: list,
    published_steps: set[str] | frozenset[str],
    observed_jobs: list[dict],
    now: float,
    *,
    policy: RetryPolicy | None = None,
    metrics: dict[str, dict] | None = None,
    job_state=None,
    exit_codes: dict[str, int] | None = None,
    restarts: dict[str, Restarts] | None = None,
    pod_problems: dict[str, tuple[str, str]] | None = None,
) -> list[Action]:
    """What to do next for one experiment, from what is observable now.

    ``plan``: PlannedStep list (name, kind, output, needs); ``published_steps``: names of steps whose
    output manifest is in the store; ``observed_jobs``: the PyTorchJobs the experiment owns;
    ``metrics``: step name -> metrics summary of published steps; ``exit_codes``: job name -> the exit
    code that ended a Failed job, where its pods tell it (a permanent one ends the experiment at once;
    a retryable or unknown one is retried); ``restarts``: job name -> the pod restarts counted for an
    unfinished job (:func:`count_restarts`; a job missing here keeps what the status recorded). A job
    whose pods restarted more often than its ``runPolicy.backoffLimit`` ends its step Failed, reason
    ``RestartLimitExceeded``, without a retry, and the job is deleted (:class:`DeleteJob`): it would
    otherwise restart forever holding its GPUs. ``pod_problems``: job name -> (reason, message) of
    pods that are stuck (:func:`pod_problem`: image pull, config error, unschedulable): shown as the
    step's reason and message, with a Warning Event when it appears. Never looks at event types or
    order.

    In named parts: each step is viewed (:func:`_observed_view`) and decided (:func:`_decide_step`:
    published, ready to start, or judged by its latest job and retried or failed), then the phase
    (:func:`_phase_of`, checked against PHASE_TRANSITIONS), the status and the events.
    """
    meta = experiment.get("metadata", {})
    gen = int(meta.get("generation") or 1)
    old = experiment.get("status") or {}
    # Terminal phases stay terminal for the generation that reached them: a finished experiment is a
    # record, not a request. An edited spec (a new generation) is a new request: it is planned again,
    # and the steps whose fingerprints did not change are reused from the store.
    if is_final(old, gen):
        return []
    p = _Pass(meta.get("name", ""), now, policy or RetryPolicy())
    old_steps = {s.get("name"): s for s in old.get("steps") or []}
    ctx = {
        "metrics": metrics or {},
        "exit_codes": exit_codes or {},
        "state_of": job_state or render.renderer().state,
        "old_steps": old_steps,
        "pod_problems": pod_problems or {},
    }
    by_step = jobs_by_step(observed_jobs)
    views: list[_StepView] = []
    for step in plan:
        jobs = jobs_of_step(by_step, step)
        v = _observed_view(step, jobs, ctx["state_of"], restarts or {}, old_steps.get(step.name))
        _decide_step(step, v, jobs, set(published_steps), ctx, p)
        views.append(v)

    phase, reason, message = _phase_of(views, plan, p)
    # An InvalidSpec failure is a verdict on the spec, not a finished run: a spec that now parses
    # (fixed, or a newer controller) starts it, like an edit would.
    new_generation = int(old.get("observedGeneration") or gen) < gen or old.get("reason") in SPEC_VERDICTS
    if not allowed_transition(old.get("phase"), phase, new_generation):
        log.error(
            "%s: phase %s -> %s is not allowed; keeping %s",
            p.experiment,
            old.get("phase"),
            phase,
            old.get("phase"),
        )
        return []
    status = _status(old, views, phase, reason, message, gen, now, old.get("conditions") or [])
    actions: list[Action] = [*p.deletes, *p.creates, *_step_events(views, old_steps)]
    if phase.value != old.get("phase"):
        actions.append(
            EmitEvent("Warning" if phase == Phase.FAILED else "Normal", f"Experiment{phase.value}", message)
        )
    if status != old:
        actions.append(SetStatus(status))
    if p.requeue is not None:
        actions.append(Requeue(p.requeue))
    return actions


def _status(
    old: dict,
    views: list[_StepView],
    phase: Phase,
    reason: str,
    message: str,
    gen: int,
    now: float,
    old_conditions,
) -> dict:
    running = [v.name for v in views if v.state in (*ACTIVE_STATES, StepState.VERIFYING, StepState.BACKOFF)]
    rounds = []
    for v in views:
        if v.kind == "steer_round" and v.state == StepState.SUCCEEDED:
            rounds.append({"round": _round_of(v.name), "step": v.name, **v.metrics})
    best: dict[str, float] = {}
    for v in views:
        f1 = _find_number(v.metrics, "weighted_f1") if v.metrics else None
        if f1 is None:
            continue
        if v.kind == "generate":
            best["testWeightedF1"] = f1
        else:
            best["devWeightedF1"] = max(best.get("devWeightedF1", f1), f1)
    artifacts = {v.name: v.output for v in views if v.state == StepState.SUCCEEDED}
    status: dict[str, Any] = {
        "phase": phase.value,
        "reason": reason,
        "message": message,
        "observedGeneration": gen,
        "currentStep": ",".join(running),
        "steps": [v.record() for v in views],
        "steerRounds": rounds,
        "bestMetrics": best,
        "artifacts": artifacts,
        "conditions": [
            _condition(old_conditions, "Progressing", phase == Phase.RUNNING, reason, message, gen, now),
            _condition(old_conditions, "Succeeded", phase == Phase.SUCCEEDED, reason, message, gen, now),
            _condition(old_conditions, "Failed", phase == Phase.FAILED, reason, message, gen, now),
        ],
    }
    if rounds:
        status["steerRound"] = max(r["round"] for r in rounds)
    if "devWeightedF1" in best:
        status["bestDevWeightedF1"] = best["devWeightedF1"]
    start = old.get("startTime") or (iso(now) if phase != Phase.PENDING else None)
    if start:
        status["startTime"] = start
    if phase in (Phase.SUCCEEDED, Phase.FAILED):
        status["completionTime"] = old.get("completionTime") or iso(now)
    return status


def _round_of(step_name: str) -> int:
    digits = "".join(ch for ch in step_name.split("-r", 1)[-1] if ch.isdigit())
    return int(digits) if digits else 0


def invalid_spec_status(experiment: dict, message: str, now: float) -> dict:
    old = experiment.get("status") or {}
    gen = int(experiment.get("metadata", {}).get("generation") or 1)
    conds = old.get("conditions") or []
    return {
        **{k: v for k, v in old.items() if k not in ("conditions",)},
        "phase": Phase.FAILED.value,
        "reason": "InvalidSpec",
        "message": message,
        "observedGeneration": gen,
        "conditions": [
            _condition(conds, "Progressing", False, "InvalidSpec", message, gen, now),
            _condition(conds, "Succeeded", False, "InvalidSpec", message, gen, now),
            _condition(conds, "Failed", True, "InvalidSpec", message, gen, now),
        ],
    }


# -- I/O: observe, decide, act ------------------------------------------------------------------------
def owned_by(obj: dict, uid: str | None) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return uid is None or any(r.get("uid") == uid for r in refs)


def parse_experiment(obj: dict):
    """The validated spec of a CoEExperiment object read from the API (status and server fields dropped)."""
    from coe_controller.spec import parse_spec

    meta = obj.get("metadata", {})
    body = {k: obj[k] for k in ("apiVersion", "kind", "spec") if k in obj}
    body["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels") if k in meta}
    return parse_spec(body, f"coeexperiment {meta.get('namespace')}/{meta.get('name')}")


def observe(obj: dict, kube: Kube | None = None, defaults: render.ClusterDefaults | None = None):
    """Read the spec, plan and store state of one experiment: (spec, plan, published, metrics).

    With ``kube``, the store is read with the experiment's own S3 Secret (credentials.store_for: the
    credentials its pods get), not the controller's; a Secret the installation's policy does not
    allow is a PolicyViolation.

    Through coe_controller.state, as every other view: a step is published when its fingerprint's
    manifest is in the store. STEeR decisions are read before the published set: a plan is built from
    decisions at least as old as the manifests seen, and the steps after an undecided round stay
    tentative (never started), so a round published between the two reads cannot make the
    experiment look finished early. Results already in the status are not read again.
    """
    from coe_controller.state import derive, read_store

    spec = parse_experiment(obj)
    old_steps = {s.get("name"): s for s in (obj.get("status") or {}).get("steps") or []}
    known = {  # only for the same identity: an edited step's old figures are not the new step's
        name: s["metrics"]
        for name, s in old_steps.items()
        if s.get("state") == StepState.SUCCEEDED.value and "metrics" in s and s.get("fingerprint")
    }
    store = None
    if kube is not None:
        from coe_controller import credentials

        ns = obj.get("metadata", {}).get("namespace") or "default"
        store = credentials.store_for(kube, ns, spec, defaults)
    facts = read_store(
        spec,
        store,
        earlier=False,
        known=known,
        known_fingerprints={n: old_steps[n]["fingerprint"] for n in known},
    )
    state = derive(spec, facts)
    metrics = {v.name: summarize_metrics(v.result) for v in state.steps if v.done}
    return spec, state.plan, state.published, metrics


def event_body(obj: dict, ev: EmitEvent, now: float, component: str = "coe-controller") -> dict:
    import hashlib

    meta = obj["metadata"]
    digest = hashlib.sha256(f"{meta.get('uid')}{ev.reason}{ev.message}{now}".encode()).hexdigest()[:12]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{digest}", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "reason": ev.reason,
        "message": ev.message[:1000],
        "type": ev.type,
        "source": {"component": component},
        "firstTimestamp": iso(now),
        "lastTimestamp": iso(now),
        "count": 1,
    }


def status_patch(old: dict, new: dict) -> dict:
    """A merge-patch body that turns ``old`` status into ``new`` (keys that vanished become null)."""
    patch = dict(new)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def frozen_retry(previous: dict, attempt: int, name: str) -> dict:
    """Attempt N of a step, made from attempt N-1 as it was created: the same pod template (image,
    GPUs, mounts, env) and the same frozen ConfigMap, whatever the spec says now. Only the name and
    the attempt labels change: an edit reaches a step only through a new fingerprint."""
    job = copy.deepcopy(previous)
    meta = job["metadata"]
    labels = {**(meta.get("labels") or {}), render.LABEL_ATTEMPT: str(attempt)}
    job["metadata"] = {
        k: v for k, v in {**meta, "name": name, "labels": labels}.items() if k in _CREATE_META_FIELDS
    }
    job.pop("status", None)
    for spec in (job["spec"].get("pytorchReplicaSpecs") or {}).values():
        tmeta = spec["template"].setdefault("metadata", {})
        tmeta["labels"] = {
            **(tmeta.get("labels") or {}),
            render.LABEL_ATTEMPT: str(attempt),
            render.LABEL_JOB: name,
        }
    return job


_CREATE_META_FIELDS = ("name", "namespace", "labels", "annotations", "ownerReferences")


def _store_unavailable(kube: Kube, obj: dict, message: str, now: float) -> None:
    """Say it in the status (and once as an Event): the store is where "done" lives."""
    meta = obj["metadata"]
    old = obj.get("status") or {}
    if old.get("reason") == "StoreUnavailable" and old.get("message") == message:
        return
    if old.get("reason") != "StoreUnavailable":
        _emit(kube, obj, EmitEvent("Warning", "StoreUnavailable", message), now)
    patch = {"reason": "StoreUnavailable", "message": message}
    if not old.get("phase"):
        patch["phase"] = Phase.PENDING.value
    kube.patch_experiment_status(meta.get("namespace") or "default", meta["name"], patch)


def reconcile(
    kube: Kube,
    obj: dict,
    now: float | None = None,
    job_renderer: render.JobRenderer | None = None,
    backoff_base_s: float = 10.0,
    defaults: render.ClusterDefaults | None = None,
) -> float | None:
    """One level-triggered pass over one experiment; returns seconds until it wants another look.

    ``defaults``: the installation's runtime image / S3 Secret for experiments that name none.
    The pass, in its parts: skip what is being deleted or already final; observe the store and
    check the policy (a bad spec or an unreachable store is reported and ends the pass); list the
    experiment's jobs; decide; apply the actions."""
    from coe_runtime.errors import ConfigError, StoreError

    now = time.time() if now is None else now
    meta = obj["metadata"]
    ns, name = meta.get("namespace") or "default", meta["name"]
    if meta.get("deletionTimestamp"):
        # Being deleted (foreground: the garbage collector is removing the children): create nothing,
        # or the controller would recreate what the collector just removed.
        return None
    if is_final(obj.get("status") or {}, int(meta.get("generation") or 1)):
        return None  # a finished record of this generation: no store or API call at all
    try:
        spec, steps, published, metrics = _observe_within_policy(kube, obj, job_renderer, defaults)
    except ConfigError as e:
        _report_invalid_spec(kube, obj, e, now)
        return None
    except StoreError as e:
        # The store is where "done" lives: without it nothing can be decided. Say so, look again soon.
        log.warning("%s/%s: artifact store unavailable: %s", ns, name, e)
        _store_unavailable(kube, obj, f"artifact store unavailable: {e}", now)
        return 15.0

    # The job API of this experiment (spec.resources.jobApi): what is listed, created, read and deleted.
    job_renderer = job_renderer or render.renderer(spec.spec.resources.job_api)
    jobs, foreign = _list_own_jobs(kube, obj, job_renderer)
    retry_policy = RetryPolicy(
        max_retries=spec.spec.resources.max_retries,
        backoff_base_s=backoff_base_s,
        restart_limit=spec.spec.resources.backoff_limit,
    )
    actions = _decide_from_cluster(
        kube, obj, steps, published, metrics, jobs, job_renderer, retry_policy, now
    )  # fmt: skip
    return _apply_actions(kube, obj, actions, steps, jobs, foreign, job_renderer, defaults, now)


def _observe_within_policy(
    kube: Kube, obj: dict, job_renderer: render.JobRenderer | None, defaults: render.ClusterDefaults | None
) -> tuple[Any, list, set[str] | frozenset[str], dict[str, dict]]:
    """What the store holds for this experiment (see ``observe``), once the installation's policy
    (allowed images, ServiceAccounts, Secrets) accepts its jobs as they would be created: the
    controller creates pods on the author's behalf. Raises ConfigError (PolicyViolation included)
    or StoreError."""
    meta = obj["metadata"]
    spec, steps, published, metrics = observe(obj, kube, defaults)
    violations = policy.check_steps(
        steps,
        defaults,
        Owner(meta["name"], meta.get("namespace") or "default", meta.get("uid")),
        job_renderer or render.renderer(spec.spec.resources.job_api),
    )
    if violations:
        raise policy.PolicyViolation(violations)
    return spec, steps, published, metrics


def _report_invalid_spec(kube: Kube, obj: dict, error: Exception, now: float) -> None:
    """A spec the controller rejects (or the policy refuses): say so in the status and one Event.

    A finished experiment stays what it was: an edit the CRD accepts but the spec rejects is
    reported (once per generation), never turned into a failure of the finished run."""
    meta = obj["metadata"]
    ns, name = meta.get("namespace") or "default", meta["name"]
    old_status = obj.get("status") or {}
    gen = int(meta.get("generation") or 1)
    if old_status.get("phase") in (Phase.SUCCEEDED.value, Phase.FAILED.value) and (
        old_status.get("reason") not in SPEC_VERDICTS
    ):
        if int(old_status.get("observedGeneration") or 0) < gen:
            _emit(kube, obj, EmitEvent("Warning", "InvalidSpecIgnored", f"edit not applied: {error}"), now)
            kube.patch_experiment_status(ns, name, {"observedGeneration": gen})
        return
    status = invalid_spec_status(obj, str(error), now)
    event_reason = "InvalidSpec"
    if isinstance(error, policy.PolicyViolation):
        status, event_reason = policy.as_violation(status), policy.REASON
    if status != old_status:
        if old_status.get("reason") != status.get("reason"):
            _emit(kube, obj, EmitEvent("Warning", event_reason, str(error)), now)
        kube.patch_experiment_status(ns, name, status_patch(old_status, status))


def _list_own_jobs(kube: Kube, obj: dict, job_renderer: render.JobRenderer) -> tuple[list[dict], set[str]]:
    """The experiment's own jobs, and the names of jobs with its labels that another object owns:
    an earlier experiment of the same name whose children the garbage collector has not removed
    yet. Those are never adopted, never trusted."""
    meta = obj["metadata"]
    uid = meta.get("uid")
    selector = f"{render.LABEL_EXPERIMENT}={render.label_value(meta['name'])}"
    listed = kube.list_jobs(meta.get("namespace") or "default", selector, api=job_renderer)
    jobs = [j for j in listed if owned_by(j, uid)]
    foreign = {j["metadata"]["name"] for j in listed if not owned_by(j, uid)}
    return jobs, foreign


def _decide_from_cluster(
    kube: Kube, obj: dict, steps: list, published: set[str] | frozenset[str], metrics: dict[str, dict],
    jobs: list[dict],
    job_renderer: render.JobRenderer, retry_policy: RetryPolicy, now: float,
) -> list:  # fmt: skip
    """``decide`` on what the cluster shows of the jobs: exit codes, restarts, stuck pods."""
    ns = obj["metadata"].get("namespace") or "default"
    exit_codes = observe_exit_codes(kube, ns, obj, jobs, job_renderer)
    pods_by_job = unfinished_job_pods(kube, ns, obj, jobs, job_renderer)
    restarts = observe_restarts(kube, ns, obj, jobs, job_renderer, pods_by_job)
    problems = {job: problem for job, pods in pods_by_job.items() if (problem := pod_problem(pods))}
    return decide(
        obj,
        steps,
        published,
        jobs,
        now,
        policy=retry_policy,
        metrics=metrics,
        job_state=job_renderer.state,
        exit_codes=exit_codes,
        restarts=restarts,
        pod_problems=problems,
    )


def _apply_actions(
    kube: Kube, obj: dict, actions: list, steps: list, jobs: list[dict], foreign: set[str],
    job_renderer: render.JobRenderer, defaults: render.ClusterDefaults | None, now: float,
) -> float | None:  # fmt: skip
    """Carry out ``decide``'s actions in order; returns when to look again. A job that cannot be
    created blocks: its reason goes into the status and an Event, and the pass looks again soon."""
    meta = obj["metadata"]
    ns, name, uid = meta.get("namespace") or "default", meta["name"], meta.get("uid")
    old_status = obj.get("status") or {}
    by_name = {s.name: s for s in steps}
    requeue: float | None = None
    blocked: list[str] = []
    for action in actions:
        if isinstance(action, CreateJob):
            problem = _create_attempt(
                kube, ns, Owner(name, ns, uid), by_name[action.step], action.attempt, jobs, foreign,
                job_renderer, render.settings_from(by_name[action.step].resources, defaults),
            )  # fmt: skip
            if problem:
                blocked.append(problem)
        elif isinstance(action, Requeue):
            requeue = action.after_s
        else:
            _apply_action(kube, obj, action, old_status, blocked, job_renderer, now)
    for problem in blocked:
        _emit(kube, obj, EmitEvent("Warning", "StepNotCreated", problem), now)
    if blocked:
        requeue = min(requeue or 10.0, 10.0)
    return requeue


def _apply_action(
    kube: Kube, obj: dict, action: Action, old_status: dict, blocked: list[str],
    job_renderer: render.JobRenderer, now: float,
) -> None:  # fmt: skip
    """One DeleteJob, EmitEvent or SetStatus action (a status says why jobs were not created)."""
    meta = obj["metadata"]
    ns, name = meta.get("namespace") or "default", meta["name"]
    if isinstance(action, DeleteJob):
        with contextlib.suppress(NotFound):
            kube.delete_job(ns, action.job, api=job_renderer)
        log.info("%s/%s: deleted %s (restart limit exceeded)", ns, name, action.job)
    elif isinstance(action, EmitEvent):
        _emit(kube, obj, action, now)
    elif isinstance(action, SetStatus):
        status = action.status
        if blocked:
            status = {**status, "reason": "StepNotCreated", "message": "; ".join(blocked)}
        kube.patch_experiment_status(ns, name, status_patch(old_status, status))


def _create_attempt(
    kube: Kube, ns: str, owner: Any, step: Any, attempt: int, jobs: list[dict], foreign: set[str],
    job_renderer: Any, settings: Any,
) -> str | None:  # fmt: skip
    """Create one attempt of a step (its frozen ConfigMap first, for attempt 1); returns what
    stopped it, or None. A 409 counts as done only for an object this experiment owns; an API
    error (403 quota, 422 invalid, 404 no PyTorchJob CRD) is returned to be shown, not swallowed."""
    fp = _fingerprint(step)
    previous = [
        j for j in jobs if j["metadata"]["labels"].get(render.LABEL_STEP) == render.label_value(step.name)
    ]
    previous = [j for j in previous if j["metadata"]["labels"].get(render.LABEL_FINGERPRINT, "") == fp]
    name = render.job_name(owner.name, step.name, attempt, fp)
    if name in foreign:
        return f"job {name} exists but belongs to an earlier experiment of this name; waiting for it to be removed"
    try:
        if attempt > 1 and previous:
            retry = getattr(job_renderer, "retry", None) or frozen_retry  # the job API's own, if it has one
            job = retry(previous[-1], attempt, name)
        else:
            config_map, job = job_renderer.render(owner, step, attempt, settings)
            try:
                kube.create_configmap(ns, config_map)
            except Conflict:
                existing = kube.get_configmap(ns, config_map["metadata"]["name"])
                if not owned_by(existing, owner.uid) or existing.get("data") != config_map["data"]:
                    return (
                        f"configmap {config_map['metadata']['name']} exists but is not this experiment's "
                        "frozen step config (an earlier experiment of this name?); waiting for it to be removed"
                    )
        kube.create_job(ns, job, api=job_renderer)
        log.info("%s/%s: created %s %s", ns, owner.name, job["kind"], name)
    except Conflict:
        log.info("%s/%s: %s exists already (created before a restart)", ns, owner.name, name)
    except KubeError as e:
        log.warning("%s/%s: cannot create %s: %s", ns, owner.name, name, e)
        return f"cannot create job {name} for step {step.name}: {e}"
    except render.UnsupportedByJobApi as e:  # a pod setting the chosen job API cannot carry
        return f"cannot create job {name} for step {step.name}: {e}"
    return None


Owner = render.Owner


def observe_exit_codes(kube: Kube, ns: str, obj: dict, jobs: list[dict], job_renderer) -> dict[str, int]:
    """job name -> exit code, for the latest job of each step when it has Failed (pods by label).

    Only while the experiment is live: a finished one is a record. Pods that cannot be read leave the
    code unknown, which retries as before.
    """
    status = obj.get("status") or {}
    if is_final(status, int(obj.get("metadata", {}).get("generation") or 1)):
        return {}
    codes: dict[str, int] = {}
    for step_jobs in jobs_by_step(jobs).values():
        last = step_jobs[-1]
        if job_renderer.state(last).phase != "Failed":
            continue
        name = last["metadata"]["name"]
        try:
            pods = kube.list_pods(ns, _pod_selector(job_renderer, name))
        except KubeError as e:
            log.warning("%s/%s: cannot read the pods of %s: %s", ns, obj["metadata"]["name"], name, e)
            continue
        code = failed_exit_code(pods, getattr(job_renderer, "container", render.CONTAINER_NAME))
        if code is not None:
            codes[name] = code
    return codes


def unfinished_job_pods(
    kube: Kube, ns: str, obj: dict, jobs: list[dict], job_renderer
) -> dict[str, list[dict]]:
    """job name -> its pods (by label), for the latest job of each step while it is unfinished.

    Only while the experiment is live. A job whose pods cannot be read is left out (what the status
    recorded for it stays)."""
    status = obj.get("status") or {}
    if is_final(status, int(obj.get("metadata", {}).get("generation") or 1)):
        return {}
    out: dict[str, list[dict]] = {}
    for step_jobs in jobs_by_step(jobs).values():
        last = step_jobs[-1]
        if job_renderer.state(last).finished:
            continue
        name = last["metadata"]["name"]
        try:
            out[name] = kube.list_pods(ns, _pod_selector(job_renderer, name))
        except KubeError as e:
            log.warning("%s/%s: cannot read the pods of %s: %s", ns, obj["metadata"]["name"], name, e)
    return out


def observe_restarts(
    kube: Kube, ns: str, obj: dict, jobs: list[dict], job_renderer, pods_by_job: dict | None = None
) -> dict[str, Restarts]:
    """job name -> its pod restarts so far, for the latest job of each step while it is unfinished
    (pods by label, counted with what the step's status recorded: :func:`count_restarts`).

    Pods that cannot be read leave the recorded count as it was (decide() keeps it).
    """
    if pods_by_job is None:
        pods_by_job = unfinished_job_pods(kube, ns, obj, jobs, job_renderer)
    status = obj.get("status") or {}
    recorded = {s.get("jobName"): s for s in status.get("steps") or [] if s.get("jobName")}
    container = getattr(job_renderer, "container", render.CONTAINER_NAME)
    return {
        name: count_restarts(_recorded_restarts(recorded.get(name), name), pods, container)
        for name, pods in pods_by_job.items()
    }


def _pod_selector(job_renderer: Any, job: str) -> str:
    """The label selector of one job's pods, as the job API's renderer defines it."""
    select = getattr(job_renderer, "pod_selector", None)
    return select(job) if select else f"{render.LABEL_JOB}={render.label_value(job)}"


# Waiting reasons of a container that will not go away by waiting (kubelet's image and config
# errors; pkg/kubelet/images/types.go, pkg/kubelet/kuberuntime): a user must act on them.
STUCK_WAITING_REASONS = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
)
STUCK_REASONS = (*STUCK_WAITING_REASONS, "Unschedulable")


def pod_problem(pods: list[dict]) -> tuple[str, str] | None:
    """(reason, message) when a job's pods are stuck: a container waiting for a reason in
    STUCK_WAITING_REASONS, or a pod the scheduler cannot place (condition PodScheduled False,
    reason Unschedulable). None when nothing is stuck."""
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        status = pod.get("status") or {}
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_WAITING_REASONS:
                detail = waiting.get("message") or ""
                return waiting[
                    "reason"
                ], f"pod {name} container {cs.get('name')}: {waiting['reason']} {detail}".strip()
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                reason = cond.get("reason") or "Unschedulable"
                return reason, f"pod {name} cannot be scheduled: {cond.get('message') or reason}"
    return None


def _emit(kube: Kube, obj: dict, ev: EmitEvent, now: float) -> None:
    try:
        kube.create_event(obj["metadata"].get("namespace") or "default", event_body(obj, ev, now))
    except KubeError as e:  # an Event is a courtesy: never let it stop the reconcile
        log.warning("could not record event %s: %s", ev.reason, e)


def state_diagram() -> str:
    """The phase machine as a Mermaid diagram (docs/operator.md embeds it; a test keeps them equal)."""
    terminal = (Phase.SUCCEEDED, Phase.FAILED)
    lines = ["stateDiagram-v2", f"    [*] --> {Phase.PENDING.value}"]
    for src, targets in PHASE_TRANSITIONS.items():
        label = " : edited spec" if src in terminal else ""
        lines += [f"    {src.value} --> {dst.value}{label}" for dst in targets]
    lines += [f"    {p.value} --> [*]" for p in terminal]
    return "\n".join(lines)
