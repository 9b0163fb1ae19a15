"""The local executor: runs an experiment's plan on this machine, one subprocess per step.

Each step runs as ``python -m coe_runtime <kind> --config <step.json>`` (through ``torchrun``
when the step asks for more than one process), with exactly the step config a pod would get,
written into the run folder first. What to do next is decided from the store and the spec
alone, never from memory, so a rerun after a crash or Ctrl-C skips every published step and
redoes the interrupted one:

    loop: rounds = observe_rounds(store); steps = plan(spec, rounds)
          next = first step whose output has no MANIFEST.json  (plan order is a topological order)
          none left -> done;  run it;  exit 0 but no manifest -> failed

Run records live in ``<store>/<experiment>/_runs/<step>/``: ``step.json`` (the config),
``attempt-K.log`` (stdout + stderr) and ``attempts.jsonl`` (one ``start`` and one ``end`` line
per attempt). With a file:// store that folder *is* in the store; with s3:// it is kept in the
local cache and uploaded after every attempt.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coe_controller.planner import PlannedStep, experiment_prefix, plan
from coe_controller.spec import CoEExperiment
from coe_controller.state import observe

from coe_runtime import progress
from coe_runtime.errors import EXIT_RETRYABLE, CoEError, ConfigError, StoreError, is_retryable
from coe_runtime.record import published_manifest
from coe_runtime.step import dump_step
from coe_runtime.store import FileStore, Store, atomic_write, cache_dir, get_store, join

if TYPE_CHECKING:
    from rich.live import Live

RUNS_DIR = "_runs"
SPEC_FILE = "spec.yaml"
LOG_TAIL_LINES = 20
# Test hook: run another module in place of coe_runtime (e.g. a fake runtime in the tests).
RUNTIME_MODULE_ENV = "COE_RUNTIME_MODULE"


class AlreadyRunning(CoEError):
    """Another ``coe-ctl run`` is executing this experiment on this machine."""


# -- where things are ------------------------------------------------------------------------


def runs_prefix(spec: CoEExperiment) -> str:
    return join(experiment_prefix(spec), RUNS_DIR)


def local_run_dir(spec: CoEExperiment) -> Path:
    """The local folder of the run records: inside the store for file://, else in the cache."""
    prefix = runs_prefix(spec)
    if prefix.startswith("file://"):
        return FileStore._path(prefix)
    return cache_dir() / "runs" / prefix.split("://", 1)[1]


def find_experiment(store_uri: str, name: str) -> CoEExperiment:
    """The spec a local run saved in the store (``<store>/<name>/_runs/spec.yaml``)."""
    from coe_controller.spec import parse_spec

    uri = join(store_uri, name, RUNS_DIR, SPEC_FILE)
    store = get_store(store_uri)
    if not store.exists(uri):
        raise ConfigError(f"{uri}: no local run of experiment {name!r} in this store (no saved spec)")
    import yaml

    return parse_spec(yaml.safe_load(store.read_bytes(uri)), uri)


def list_experiments(store_uri: str) -> list[str]:
    """Names of the experiments with local run records in a store."""
    store = get_store(store_uri)
    suffix = f"/{RUNS_DIR}/{SPEC_FILE}"
    base = store_uri.rstrip("/") + "/"
    return sorted(
        u[len(base) : -len(suffix)]
        for u in store.list(store_uri)
        if u.endswith(suffix) and u.startswith(base)
    )


def read_attempts(spec: CoEExperiment, step: str, store: Store | None = None) -> list[dict]:
    """The ``attempts.jsonl`` records of one step (empty when it never ran)."""
    store = store or get_store(spec.spec.store)
    uri = join(runs_prefix(spec), step, "attempts.jsonl")
    if not store.exists(uri):
        return []
    return store.read_jsonl(uri)


def completed_executions(records: list[dict]) -> int:
    """How many attempts ran to a successful, published end."""
    return sum(1 for r in records if r.get("event") == "end" and r.get("status") == "succeeded")


def step_log(spec: CoEExperiment, step: str, store: Store | None = None) -> tuple[str, str] | None:
    """(URI, text) of the latest attempt's log of ``step``, or None when it never ran."""
    store = store or get_store(spec.spec.store)
    records = read_attempts(spec, step, store)
    starts = [r for r in records if r.get("event") == "start"]
    if not starts:
        return None
    uri = join(runs_prefix(spec), step, f"attempt-{starts[-1]['attempt']}.log")
    if not store.exists(uri):
        return uri, ""
    return uri, store.read_bytes(uri).decode(errors="replace")


# -- state of an experiment, from the store ----------------------------------------------------


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json_or_none(store: Store, uri: str) -> Any:
    try:
        return store.read_json(uri) if store.exists(uri) else None
    except (ValueError, StoreError):
        return None


def experiment_status(spec: CoEExperiment, store: Store | None = None) -> dict[str, Any]:
    """Where a local experiment stands: every planned step with its state, attempts and result.

    Step states: succeeded (published with this fingerprint), running, failed, interrupted,
    pending, tentative; ``stale`` and ``changes`` say when the store holds a result of the same
    step made with another spec, and which fields differ.
    """
    store = store or get_store(spec.spec.store)
    state = observe(spec, store)
    lock = _read_json_or_none(store, join(runs_prefix(spec), "executor.json"))
    executor_alive = bool(lock) and lock.get("host") == socket.gethostname() and _pid_alive(lock.get("pid"))
    rows = []
    for v in state.steps:
        s = v.step
        # Attempts of this step's identity only: an earlier spec's attempts are not this step's.
        records = [
            r
            for r in read_attempts(spec, s.name, store)
            if r.get("fingerprint") in (None, s.config.fingerprint)
        ]
        starts = [r for r in records if r.get("event") == "start"]
        ends = {r["attempt"]: r for r in records if r.get("event") == "end"}
        last_end = ends.get(starts[-1]["attempt"]) if starts else None
        if v.done:
            st = "succeeded"
        elif starts and last_end is None:
            st = "running" if executor_alive and lock.get("step") == s.name else "interrupted"
        elif last_end is not None:
            st = last_end.get("status", "failed")
        else:
            st = "tentative" if s.tentative else "pending"
        ok = [e for e in ends.values() if e.get("status") == "succeeded"]
        duration = ok[-1].get("duration_s") if ok else (last_end or {}).get("duration_s")
        # What the result cost: a resumed step's earlier attempts did part of its work.
        spent = sum(e.get("duration_s") or 0.0 for e in ends.values())
        rows.append(
            {
                "name": s.name,
                "kind": s.kind,
                "state": st,
                "attempts": len(starts),
                "duration_s": duration,
                "attempts_s": round(spent, 2),
                "exit_code": (last_end or {}).get("rc"),
                "fingerprint": s.config.fingerprint,
                "output": s.output,
                "metric": v.summary_line(),
                "stale": bool(v.earlier) and not v.done,
                "changes": v.changes,
            }
        )
    phase = "Succeeded" if all(r["state"] == "succeeded" for r in rows) else "Pending"
    if any(r["state"] == "running" for r in rows):
        phase = "Running"
    elif any(r["state"] in ("failed", "interrupted") for r in rows):
        phase = "Failed" if any(r["state"] == "failed" for r in rows) else "Interrupted"
    elif any(r["state"] == "succeeded" for r in rows) and phase != "Succeeded":
        phase = "Incomplete"
    return {
        "experiment": spec.name,
        "store": experiment_prefix(spec),
        "phase": phase,
        "steps": rows,
        "rounds": {str(k): v for k, v in state.rounds.items()},
        "holds_earlier_results": state.holds_earlier_results,
    }


def _labels(store: Store, uri: str) -> list[str]:
    return [
        row["meta"]["label"] for row in store.read_jsonl(uri) if row.get("meta", {}).get("label") is not None
    ]


def experiment_summary(spec: CoEExperiment, store: Store | None = None) -> dict[str, Any]:
    """Final numbers of the current spec: dev/test weighted F1 beside the majority-class baseline,
    and artifact URIs."""
    from coe_runtime.data.labels import get_label_set
    from coe_runtime.metrics import majority_baseline

    store = store or get_store(spec.spec.store)
    state = observe(spec, store, earlier=False)
    ls = spec.spec.dataset.label_set
    label_set = get_label_set(ls.name, ls.naming, ls.custom_prompt_names)
    out: dict[str, Any] = {"experiment": spec.name, "store": experiment_prefix(spec)}
    prep = state.view("prepare")
    if prep is not None and prep.done:
        train = _labels(store, join(prep.step.output, "erc-train.jsonl"))
        for split in ("dev", "test"):
            uri = join(prep.step.output, f"erc-{split}.jsonl")
            gold = _labels(store, uri) if store.exists(uri) else []
            if train and gold:
                out[f"{split}_baseline"] = majority_baseline(train, gold, label_set)
    out.update(state.metrics())
    erc, test = state.view("erc"), state.view("test")
    if erc is not None and erc.done:
        out["adapter"] = join(erc.step.output, "adapter")
    if test is not None and test.done:
        out["predictions"] = join(test.step.output, "predictions.jsonl")
        out["metrics"] = join(test.step.output, "metrics.json")
    out["steer_rounds"] = {str(k): v for k, v in state.rounds.items()}
    return out


# -- running -------------------------------------------------------------------------------------


@dataclass
class StepOutcome:
    step: str
    status: str  # succeeded | failed | interrupted | skipped
    rc: int | None = None
    duration_s: float = 0.0
    attempts: int = 0
    log_uri: str | None = None
    log_tail: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class RunResult:
    ok: bool
    outcomes: list[StepOutcome]
    failed: StepOutcome | None = None
    interrupted: bool = False


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved once in the parent: the forked child must not dlopen (unsafe beside other threads).
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal() -> None:
    """Linux: the step dies with the executor even on SIGKILL (no orphan keeps publishing)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _kill_group(pgid: int, grace_s: float = 10.0, leader: subprocess.Popen | None = None) -> None:
    """Stop a step's process group: SIGINT (lets torchrun stop its workers), then SIGKILL.

    ``leader`` (our child) is reaped while waiting: a zombie would keep the group alive."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if leader is not None:
                leader.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def step_command(step: PlannedStep, config_path: Path, python: str = sys.executable) -> list[str]:
    """The command a pod's container would run for this step (torchrun when nproc > 1).

    Several processes go through :mod:`coe_runtime.launch`, the same torchrun wrapper the pods
    use, so a worker's exit code (permanent 1-127, retryable 128-255) survives torchrun here too.
    """
    module = os.environ.get(RUNTIME_MODULE_ENV, "coe_runtime")
    nproc = step.config.distributed.nproc_per_node
    args = [module, step.kind, "--config", str(config_path)]
    if nproc > 1:
        return [
            python,
            "-m",
            "coe_runtime.launch",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            *args,
        ]
    return [python, "-m", *args]


class Display:
    """Live progress: a rich panel on a terminal, plain lines otherwise (logs, CI, tests)."""

    # Plain output repeats a progress line at most this often within one phase, so a log of a
    # 30-minute generation pass still shows it moving (and its ETA) without a line per batch.
    PLAIN_PROGRESS_EVERY_S = 60.0

    def __init__(self, console: Any = None, clock: Any = time.monotonic):
        from rich.console import Console

        self.console = console or Console()
        self.live: Live | None = None
        self.state: dict[str, Any] = {}
        self.last_plain_epoch: Any = None
        self.clock = clock
        self.last_plain_at = 0.0

    def __enter__(self) -> Display:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.live.__exit__(*exc)
            self.live = None

    def _render(self) -> Any:
        from rich.table import Table

        s = self.state
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold cyan")
        t.add_column()
        if not s:
            t.add_row("coe", "planning…")
            return t
        t.add_row("step", f"{s['name']} ({s['index']}/{s['total']}, {s['kind']}, attempt {s['attempt']})")
        ev = s.get("event") or {}
        if ev.get("phase"):
            t.add_row("phase", str(ev["phase"]) + (f" — {ev['message']}" if ev.get("message") else ""))
        if ev.get("epoch") is not None:
            t.add_row("epoch", f"{float(ev['epoch']):.2f}")
        if ev.get("round") is not None:
            t.add_row("round", str(ev["round"]))
        if ev.get("loss") is not None:
            t.add_row("loss", f"{float(ev['loss']):.4f}")
        if ev.get("done") is not None and ev.get("total"):
            t.add_row("progress", f"{ev['done']}/{ev['total']} ({100 * ev['done'] / ev['total']:.0f}%)")
        if ev.get("eta_s") is not None:
            t.add_row("ETA", f"{float(ev['eta_s']):.0f}s")
        t.add_row("elapsed", f"{time.monotonic() - s['started']:.0f}s")
        return t

    def _refresh(self) -> None:
        if self.live:
            self.live.update(self._render())

    def step_started(self, step: PlannedStep, index: int, total: int, attempt: int) -> None:
        self.state = {
            "name": step.name,
            "kind": step.kind,
            "index": index,
            "total": total,
            "attempt": attempt,
            "started": time.monotonic(),
            "event": {},
        }
        self.last_plain_epoch = None
        self.console.print(
            f"[bold]▶ {step.name}[/] ({index}/{total}, {step.kind}, attempt {attempt})", highlight=False
        )
        self._refresh()

    def event(self, ev: dict[str, Any]) -> None:
        self.state["event"] = {**self.state.get("event", {}), **ev}
        if self.live:
            self._refresh()
            return
        # Plain output: one line per phase change / whole epoch, and while a phase runs on, one
        # progress line a minute at most — not every event.
        key = (ev.get("phase"), int(float(ev["epoch"])) if ev.get("epoch") is not None else None)
        now = self.clock()
        moving = ev.get("done") is not None and now - self.last_plain_at >= self.PLAIN_PROGRESS_EVERY_S
        if key != self.last_plain_epoch or moving:
            self.last_plain_epoch = key
            self.last_plain_at = now
            bits = [
                f"{k}={ev[k]}"
                for k in ("phase", "epoch", "round", "loss", "done", "total", "eta_s")
                if ev.get(k) is not None
            ]
            self.console.print("   " + " ".join(bits), highlight=False)

    def step_skipped(self, step: PlannedStep) -> None:
        self.console.print(f"[green]✔[/] {step.name} [dim](published earlier, skipped)[/]", highlight=False)

    def step_finished(self, outcome: StepOutcome) -> None:
        mark = "[green]✔[/]" if outcome.status == "succeeded" else "[red]✘[/]"
        self.console.print(
            f"{mark} {outcome.step} {outcome.status} in {outcome.duration_s:.1f}s", highlight=False
        )


class LocalExecutor:
    """Runs one experiment's plan to the end (or to the first failed step) on this machine."""

    def __init__(
        self,
        spec: CoEExperiment,
        console: Any = None,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        on_event: Callable[[str, dict], None] | None = None,
    ):
        if spec.spec.resources.nodes > 1 and any(s.config.distributed.nnodes > 1 for s in plan(spec, {})):
            raise ConfigError(
                f"{spec.name}: spec.resources.nodes is {spec.spec.resources.nodes}; a local run uses one machine "
                "(set nodes: 1, or run it on a cluster with coe-ctl submit)"
            )
        self.spec = spec
        self.store = get_store(spec.spec.store)
        self.run_dir = local_run_dir(spec)
        self.mirror = not isinstance(self.store, FileStore)  # upload run records after each attempt
        self.python = python
        self.env = env
        self.display = Display(console)
        self.on_event = on_event

    # -- run records ------------------------------------------------------------------------
    def _record(self, step: str, entry: dict) -> None:
        path = self.run_dir / step / "attempts.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _next_attempt(self, step: str) -> int:
        path = self.run_dir / step / "attempts.jsonl"
        if not path.exists():
            return 1
        starts = [json.loads(line) for line in path.read_text().splitlines() if '"start"' in line]
        return max((s["attempt"] for s in starts), default=0) + 1

    def _upload_records(self, step: str) -> None:
        if not self.mirror:
            return
        local = self.run_dir / step
        for path in sorted(local.iterdir()):
            self.store.put_file(path, join(runs_prefix(self.spec), step, path.name))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One executor per experiment; clean up a step orphaned by a SIGKILLed executor."""
        path = self.run_dir / "executor.json"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except ValueError:
                old = {}
            if (
                old.get("host") == socket.gethostname()
                and old.get("pid") != os.getpid()
                and _pid_alive(old.get("pid"))
            ):
                raise AlreadyRunning(
                    f"experiment {self.spec.name} is already running here (coe-ctl pid {old['pid']}, step "
                    f"{old.get('step')}); wait for it or stop it first"
                )
            child = old.get("child_pgid")
            if old.get("host") == socket.gethostname() and child and _is_runtime_group(child):
                _kill_group(child, grace_s=2.0)
        self._write_lock(None, None)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            if self.mirror:
                with contextlib.suppress(CoEError):
                    self.store.delete_prefix(join(runs_prefix(self.spec), "executor.json"))

    def _write_lock(self, step: str | None, child_pgid: int | None) -> None:
        lock = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "step": step,
            "child_pgid": child_pgid,
            "since": time.time(),
        }
        path = self.run_dir / "executor.json"
        with atomic_write(path) as f:
            f.write(json.dumps(lock))
        if self.mirror:
            self.store.put_file(path, join(runs_prefix(self.spec), "executor.json"))

    def _save_spec(self) -> None:
        """The resolved spec beside the run records: ``status NAME --store URI`` plans from it."""
        path = self.run_dir / SPEC_FILE
        path.write_text(self.spec.to_yaml())
        if self.mirror:
            self.store.put_file(path, join(runs_prefix(self.spec), SPEC_FILE))

    # -- the loop ----------------------------------------------------------------------------
    def next_step(self) -> tuple[PlannedStep | None, list[PlannedStep], list[PlannedStep]]:
        """(next step to run or None when finished, the current plan, steps already published)."""
        state = observe(self.spec, self.store, earlier=False)
        done = [v.step for v in state.steps if v.done]
        step = state.next_step()
        if step is None and not state.finished:
            waiting = [v.name for v in state.steps if not v.done]
            raise CoEError(f"{self.spec.name}: no step can run, yet {waiting} are not published")
        return step, state.plan, done

    def run(self) -> RunResult:
        outcomes: list[StepOutcome] = []
        previous_sigterm = None
        with contextlib.suppress(ValueError):  # not in the main thread: leave signals alone
            previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            with self._lock(), self.display:
                self._save_spec()
                announced: set[str] = set()
                while True:
                    step, steps, done = self.next_step()
                    for s in done:
                        if s.name not in announced:
                            announced.add(s.name)
                            if not any(o.step == s.name for o in outcomes):
                                self.display.step_skipped(s)
                                outcomes.append(StepOutcome(s.name, "skipped"))
                    if step is None:
                        return RunResult(True, outcomes)
                    index = [s.name for s in steps].index(step.name) + 1
                    outcome = self.run_step(step, index, len(steps))
                    outcomes.append(outcome)
                    announced.add(step.name)
                    if outcome.status == "interrupted":
                        return RunResult(False, outcomes, outcome, interrupted=True)
                    if outcome.status != "succeeded":
                        return RunResult(False, outcomes, outcome)
        finally:
            if previous_sigterm is not None:
                signal.signal(signal.SIGTERM, previous_sigterm)

    def run_step(self, step: PlannedStep, index: int, total: int) -> StepOutcome:
        """Run one step, retrying transient failures (exit 128-255) up to resources.maxRetries."""
        step_dir = self.run_dir / step.name
        step_dir.mkdir(parents=True, exist_ok=True)
        config_path = step_dir / "step.json"
        config_path.write_text(dump_step(step.config) + "\n")
        retries = step.resources.max_retries if step.resources else 0
        outcome = StepOutcome(step.name, "failed")
        for _ in range(retries + 1):
            outcome = self._attempt(step, config_path, index, total)
            if outcome.status != "failed" or not is_retryable(outcome.rc):
                break
        return outcome

    def _attempt(self, step: PlannedStep, config_path: Path, index: int, total: int) -> StepOutcome:
        attempt = self._next_attempt(step.name)
        log_path = self.run_dir / step.name / f"attempt-{attempt}.log"
        cmd = step_command(step, config_path, self.python)
        env = dict(self.env if self.env is not None else os.environ)
        env.update({"PYTHONUNBUFFERED": "1", "COE_EXPERIMENT": self.spec.name, "COE_STEP": step.name})
        fp = step.config.fingerprint
        self._record(
            step.name,
            {"event": "start", "attempt": attempt, "fingerprint": fp, "time": time.time(), "command": cmd},
        )
        self.display.step_started(step, index, total, attempt)
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        started = time.monotonic()
        status, rc = "failed", None
        with log_path.open("w", encoding="utf-8") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
                env=env,
                start_new_session=True,  # its own process group: we stop it (and torchrun's workers) as one
                preexec_fn=_set_parent_death_signal,
            )
            self._write_lock(step.name, proc.pid)
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line)
                    log.flush()
                    event = progress.parse(line)
                    if event is None:
                        # The tail shown when a step fails is its own output (the error); progress
                        # lines went to the display already and stay in the log file.
                        tail.append(line.rstrip("\n"))
                    else:
                        self.display.event(event)
                        if self.on_event:
                            self.on_event(step.name, event)
                rc = proc.wait()
            except KeyboardInterrupt:
                _kill_group(proc.pid, leader=proc)
                proc.wait()
                status = "interrupted"
                rc = proc.returncode
        duration = time.monotonic() - started
        reason = ""
        if status != "interrupted":
            if rc == 0 and published_manifest(step.config, self.store) is not None:
                status = "succeeded"
            elif rc == 0:
                reason = f"exited 0 but published no MANIFEST.json under {step.output}"
            else:
                kind = "transient, retried" if is_retryable(rc) else "permanent"
                reason = f"exit code {rc} ({kind})"
        self._record(
            step.name,
            {
                "event": "end",
                "attempt": attempt,
                "fingerprint": fp,
                "time": time.time(),
                "rc": rc,
                "status": status,
                "duration_s": round(duration, 2),
                "reason": reason,
            },
        )
        self._write_lock(None, None)
        self._upload_records(step.name)
        outcome = StepOutcome(
            step.name,
            status,
            rc,
            duration,
            attempt,
            join(runs_prefix(self.spec), step.name, log_path.name),
            list(tail),
            reason,
        )
        self.display.step_finished(outcome)
        return outcome


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _is_runtime_group(pgid: int) -> bool:
    """Whether ``pgid`` still leads a step process we started (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return os.environ.get(RUNTIME_MODULE_ENV, "coe_runtime") in cmdline or "coe_runtime" in cmdline


__all__ = [
    "EXIT_RETRYABLE",
    "LocalExecutor",
    "RunResult",
    "StepOutcome",
    "completed_executions",
    "experiment_status",
    "experiment_summary",
    "local_run_dir",
    "read_attempts",
    "runs_prefix",
    "step_command",
    "step_log",
]
