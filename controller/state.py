"""The experiment state: ``observe(spec, store) -> ExperimentState``, the one view of "where are we".

The local executor (what to run next), ``coe-ctl plan`` / ``run`` / ``status``, the reconcile
loop (what is published, each step's result) and the quality runner all read an experiment
through this module, so there is one answer to "is this step done", one reader of each step's
result, and one list of what a changed spec makes stale.

A planned step is

- ``done``      its result with *this* fingerprint is published: reused, never rerun;
- ``stale``     not done, but the store holds a result of the same step under another fingerprint
                (an earlier spec): it will run again; ``changes`` says which fields differ;
- ``ready``     not done, and every step it needs is done: it runs next;
- ``waiting``   not done, and some step it needs is not done yet;
- ``tentative`` planned past an undecided STEeR round: never started.

``stale`` is a *why*, not a separate schedule: a stale step is also ready or waiting
(``runnable``). Reading (:func:`read_store`) is the only I/O; :func:`derive` is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coe_controller.planner import PlannedStep, experiment_prefix, observe_rounds, plan, step_output

from coe_runtime.errors import StoreError
from coe_runtime.fingerprint import changed_fields
from coe_runtime.record import step_identity
from coe_runtime.step import GenerateStep, TrainStep
from coe_runtime.store import MANIFEST, get_store, join

if TYPE_CHECKING:
    from coe_controller.spec import CoEExperiment

    from coe_runtime.store import Store

DONE, STALE, READY, WAITING, TENTATIVE = "done", "stale", "ready", "waiting", "tentative"


@dataclass(frozen=True)
class EarlierResult:
    """A published result of the same step under another fingerprint (an earlier spec)."""

    fingerprint: str
    output: str
    published_at: float | None
    identity: dict | None  # None: published before steps had identities


@dataclass
class StepView:
    step: PlannedStep
    state: str
    manifest: dict | None = None  # of this fingerprint, when done
    result: dict[str, Any] = field(default_factory=dict)  # what the step's result file says
    earlier: list[EarlierResult] = field(default_factory=list)  # newest first
    changes: list[str] = field(default_factory=list)  # why stale: fields that differ from the newest earlier

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def done(self) -> bool:
        return self.state == DONE

    def summary_line(self) -> str | None:
        return result_line(self.step, self.result) if self.done else None


@dataclass
class ExperimentState:
    spec: Any
    rounds: dict[int, dict]
    steps: list[StepView]

    def view(self, name: str) -> StepView | None:
        return next((v for v in self.steps if v.name == name), None)

    @property
    def plan(self) -> list[PlannedStep]:
        return [v.step for v in self.steps]

    @property
    def published(self) -> set[str]:
        return {v.name for v in self.steps if v.done}

    @property
    def finished(self) -> bool:
        return bool(self.steps) and all(v.done for v in self.steps)

    def next_step(self) -> PlannedStep | None:
        """The first step that can run now (plan order is a topological order), or None."""
        done = self.published
        for v in self.steps:
            if v.done or v.state == TENTATIVE:
                continue
            if all(n in done for n in v.step.needs):
                return v.step
        return None

    @property
    def stale(self) -> list[StepView]:
        return [v for v in self.steps if v.earlier and not v.done]

    @property
    def holds_earlier_results(self) -> bool:
        """The store holds results of this experiment made with another spec."""
        return any(v.earlier for v in self.steps)

    def metrics(self) -> dict[str, Any]:
        """The headline numbers of the current spec's results (absent until published)."""
        out: dict[str, Any] = {}
        for v in self.steps:
            if not v.done:
                continue
            f1 = weighted_f1(v.result)
            if f1 is None:
                continue
            if isinstance(v.step.config, TrainStep) and v.step.config.eval_file:
                out["dev_weighted_f1"] = f1
                out["best"] = v.result
            if v.step.kind == "generate":
                out["test_weighted_f1"] = f1
                out["test_macro_f1"] = v.result.get("macro_f1")
                out["test_accuracy"] = v.result.get("accuracy")
        return out


# -- results ------------------------------------------------------------------------------------
def result_file(step: PlannedStep) -> str | None:
    """The file in a published step that holds its result, by step kind."""
    if step.kind == "steer_round":
        return f"round-{step.round}.json"
    if isinstance(step.config, TrainStep) and step.config.eval_file:
        return "best.json"  # the ERC stage's best dev epoch
    if isinstance(step.config, GenerateStep) and step.config.with_metrics:
        return "metrics.json"
    return None


def weighted_f1(doc: Any) -> float | None:
    """The weighted F1 in a result document (top level or one level under metrics/dev/best)."""
    if not isinstance(doc, dict):
        return None
    value = doc.get("weighted_f1")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    for key in ("metrics", "dev", "best", "dev_metrics"):
        found = weighted_f1(doc.get(key))
        if found is not None:
            return found
    return None


def result_line(step: PlannedStep, result: dict[str, Any]) -> str | None:
    """A one-line result of a published step for tables."""
    if step.kind == "steer_round":
        parts = [f"{k}={result[k]}" for k in ("accepted", "memory_size", "pool_size") if k in result]
        gate = result.get("gate")
        if isinstance(gate, dict) and gate.get("n"):
            # Accuracy on the round's held-out slice with its rationale / answering directly.
            parts.append(
                f"gate {100 * gate['with_rationale']:.0f}%/{100 * gate['without_rationale']:.0f}% of {gate['n']}"
            )
            if gate.get("correct_with", 0) < gate.get("correct_without", 0):
                parts.append("(rationales hurt)")
        if "continue" in result:
            parts.append("continue" if result["continue"] else f"stop ({result.get('stop_reason', '')})")
        return " ".join(parts) or None
    f1 = weighted_f1(result)
    if f1 is None:
        return None
    return f"{'test' if step.kind == 'generate' else 'dev'} wF1 {f1:.2f}"


def _read_result(store: Store, step: PlannedStep, manifest: dict) -> dict[str, Any]:
    name = result_file(step)
    if name is None or name not in {f.get("path") for f in manifest.get("files") or []}:
        return {}
    try:
        doc = store.read_json(join(step.output, name))
    except (ValueError, StoreError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _earlier_results(store: Store, spec: CoEExperiment, step: PlannedStep) -> list[EarlierResult]:
    """Published results of ``step`` under other fingerprints, newest first."""
    base = step_output(spec, step.name)
    found = []
    for uri in store.list(base):
        rel = uri[len(base) + 1 :]
        parts = rel.split("/")
        if len(parts) != 2 or parts[1] != MANIFEST or parts[0] == step.config.fingerprint:
            continue
        try:
            manifest = store.read_json(uri)
        except (ValueError, StoreError):
            continue
        meta = manifest.get("meta") or {}
        found.append(
            EarlierResult(parts[0], join(base, parts[0]), manifest.get("published_at"), meta.get("identity"))
        )
    return sorted(found, key=lambda e: -(e.published_at or 0))


# -- observe --------------------------------------------------------------------------------------
@dataclass
class StoreFacts:
    """What the store says about one plan: manifests of the planned outputs, results, earlier results."""

    rounds: dict[int, dict]
    plan: list[PlannedStep]
    manifests: dict[str, dict]  # step name -> manifest, for the published steps of this plan
    results: dict[str, dict]
    earlier: dict[str, list[EarlierResult]]


def read_store(
    spec: CoEExperiment,
    store: Store | None = None,
    *,
    earlier: bool = True,
    known: dict | None = None,
    known_fingerprints: dict[str, str] | None = None,
) -> StoreFacts:
    """Everything :func:`derive` needs, from the store (the only I/O of this module).

    ``known``: step name -> result already known for a published step (the reconcile loop keeps
    them in the status, with ``known_fingerprints``), so a published step is not read again every
    pass; a known result counts only for the same fingerprint. ``earlier=False``
    skips looking for other fingerprints' results (one listing per step).
    """
    store = store or get_store(spec.spec.store)
    rounds = observe_rounds(spec, store)
    steps = plan(spec, rounds)
    manifests: dict[str, dict] = {}
    results: dict[str, dict] = {}
    earlier_found: dict[str, list[EarlierResult]] = {}
    for s in steps:
        manifest = store.manifest(s.output)
        fp = (manifest or {}).get("meta", {}).get("fingerprint")
        if manifest is not None and fp in (None, s.config.fingerprint):
            manifests[s.name] = manifest
            if known and s.name in known and (known_fingerprints or {}).get(s.name) == s.config.fingerprint:
                results[s.name] = known[s.name]
            else:
                results[s.name] = _read_result(store, s, manifest)
        if earlier:
            earlier_found[s.name] = _earlier_results(store, spec, s)
    return StoreFacts(rounds, steps, manifests, results, earlier_found)


def derive(spec: CoEExperiment, facts: StoreFacts) -> ExperimentState:
    """The experiment state from what the store holds (pure)."""
    views = []
    done = set(facts.manifests)
    for s in facts.plan:
        earlier = facts.earlier.get(s.name, [])
        if s.name in done:
            state = DONE
        elif s.tentative:
            state = TENTATIVE
        elif all(n in done for n in s.needs):
            state = READY
        else:
            state = WAITING
        view = StepView(s, state, facts.manifests.get(s.name), facts.results.get(s.name, {}), earlier)
        if state != DONE and earlier:
            view.changes = explain_changes(earlier[0].identity, step_identity(s.config))
        views.append(view)
    return ExperimentState(spec, facts.rounds, views)


def observe(spec: CoEExperiment, store: Store | None = None, **kw: Any) -> ExperimentState:
    return derive(spec, read_store(spec, store, **kw))


def explain_changes(old: dict | None, new: dict) -> list[str]:
    """Why a step is stale, one entry per changed field path, inputs named by their producer.

    ``optim.epochs: 2 -> 3``; an input that moved because an upstream step changed reads
    ``train_files[0]: from a new prepare``.
    """
    if old is None:
        return ["(results published before steps had fingerprints)"]
    out = []
    for path in changed_fields(old, new):
        a, b = _at(old, path), _at(new, path)
        label = path[len("step.") :] if path.startswith("step.") else path
        if isinstance(a, str) and isinstance(b, str) and a.startswith("@/") and b.startswith("@/"):
            out.append(f"{label}: from a new {b.split('/')[1]}")
        else:
            out.append(f"{label}: {_short(a)} -> {_short(b)}")
    return out


_MISSING = object()


def _at(doc: Any, path: str) -> Any:
    cur = doc
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("["):
            idx = int(part[1:-1])
            cur = cur[idx] if isinstance(cur, list) and idx < len(cur) else _MISSING
        else:
            cur = cur.get(part, _MISSING) if isinstance(cur, dict) else _MISSING
        if cur is _MISSING:
            return _MISSING
    return cur


def _short(value: Any) -> str:
    if value is _MISSING:
        return "(absent)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def state_as_dict(state: ExperimentState) -> dict[str, Any]:
    """JSON view for ``--output json`` (plan, run, status)."""
    return {
        "experiment": state.spec.name,
        "store": experiment_prefix(state.spec),
        "finished": state.finished,
        "holds_earlier_results": state.holds_earlier_results,
        "steps": [
            {
                "name": v.name,
                "state": v.state,
                "fingerprint": v.step.config.fingerprint,
                "output": v.step.output,
                "stale": bool(v.earlier) and not v.done,
                "changes": v.changes,
                "earlier": [e.fingerprint for e in v.earlier],
            }
            for v in state.steps
        ],
        "metrics": {k: v for k, v in state.metrics().items() if k != "best"},
    }
