"""Run the CoE ablation arms of one dataset through the local executor and write RESULTS.md.

    python -m bench.quality.run --dataset meld            (or: coe-ctl bench quality --dataset meld)
    python -m bench.quality.run --dataset meld --report-only

Every arm is one ``CoEExperiment`` spec in ``bench/quality/<dataset>/``; the arms run in
:data:`ARM_ORDER` (erc-only first; the clue arm before the arms that read its shared clue cache),
seed repeats (:data:`REPEAT_LABEL`) last. The report pairs every arm with erc-only on the same
test utterances (:func:`paired_comparisons`) and folds repeats into their arm (mean ± sd).
Resumable: each arm runs through :class:`coe_controller.local.LocalExecutor`, which skips every
step already published in the store and redoes an interrupted one, so the runner can be killed
and restarted at any point. RESULTS.md is rewritten from the store after every arm, so it always
shows what is finished (and, for an unfinished arm, which step is next). What is finished and
each step's result are read through :func:`coe_controller.state.observe` (the same experiment
state as ``coe-ctl status``); step outputs are found from the plan (``step.output``, i.e.
``<experiment>/<step>/<fingerprint>/``), never by step name alone.

Data files: a spec names its files by base name; the runner binds them to
``<data-dir>/<label set>/<base name>`` (``--data-dir``, default ``$COE_DATA_DIR`` or
``../shared/data`` beside the repository), so the same specs work wherever the data lives.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `python bench/quality/run.py` as well as `-m bench.quality.run`
    sys.path.insert(0, str(REPO))

from bench.quality import baselines as bl  # noqa: E402
from bench.quality.evidence import (  # noqa: E402
    ARM_FILE,
    rationale_samples,
    read_snapshot,
    snapshot_arm,
    snapshot_links,
    snapshot_matches,
)
from bench.quality.report import render_results  # noqa: E402
from bench.quality.stats import (  # noqa: E402
    bootstrap_intervals,
    dialogue_of,
    holm,
    mcnemar,
    mde_factor,
    paired_bootstrap,
    utterance_uid,
    with_seed_variation,
)
from coe_runtime.errors import CoEError, ConfigError, DataError  # noqa: E402

BENCH_DIR = REPO / "bench" / "quality"
RESULTS = BENCH_DIR / "RESULTS.md"
SNAPSHOT_DIR = "runs"  # evidence copied beside RESULTS.md: runs/<dataset>/<arm>/
DATASETS = ("meld", "emorynlp")
# The arms every dataset has (and the cluster specs in manifests/examples/quality-*.yaml).
CORE_ARMS = ("erc-only", "clues", "steer", "full-curriculum", "mixed-auxiliary")
# Run order and table order: erc-only first (the reference every arm is paired against), the clue
# arm before the other users of its cache (cache writer first), the controls after the curriculum
# arms. Seed repeats (REPEAT_LABEL) run after every other arm, whatever their name.
ARM_ORDER = (
    "erc-only",
    "clues",
    "clues-no-future",
    "steer",
    "full-curriculum",
    "mixed-auxiliary",
    "erc-only-matched",
)
REFERENCE_ARM = "erc-only"
# A spec may name its arm with this label (the cluster specs do); else the file name is the arm.
ARM_LABEL = "coe.ml/arm"
# A seed repeat names the arm it repeats; it may differ from that arm only in optimizer.seed, and
# the report folds it into that arm (mean +- sd over seeds, per-seed pairing).
REPEAT_LABEL = "coe.ml/arm-of"
# The compute-matched control names the arm whose stages before ERC it makes up for with extra
# ERC training: its ERC stage may differ from the reference arm's in epochs only, and only by the
# optimiser steps those stages cost (checked by check_same_budget, see compute_matched_steps).
MATCHED_LABEL = "coe.ml/compute-matched-to"
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
PAIRED_RESAMPLES = 10000  # the paired (dialogue) bootstrap: p-values down to 2/10001 for Holm
ALPHA = 0.05  # family-wise level of the paired comparisons (Holm)
POWER = 0.8  # power at which the minimum detectable effect is stated


@dataclass
class Arm:
    name: str  # the spec file's stem, e.g. "steer" (or its ARM_LABEL)
    spec_path: Path
    spec: Any  # coe_controller.spec.CoEExperiment (paths resolved, data files bound)
    repeat_of: str | None = None  # a seed repeat: the arm it repeats (REPEAT_LABEL)
    matched_to: str | None = None  # the compute-matched control: whose earlier stages it matches

    @property
    def seed(self) -> int:
        return int(self.spec.spec.optimizer.seed)

    @property
    def base(self) -> str:
        """The arm this run is a seed of (itself unless it is a repeat)."""
        return self.repeat_of or self.name


def default_data_dir() -> Path:
    env = os.environ.get("COE_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def bind_data_files(spec: Any, data_dir: Path) -> Any:
    """A copy of ``spec`` whose dataset files are ``<data_dir>/<label set>/<base name>``."""
    from coe_controller.spec import DatasetFiles

    folder = data_dir / spec.spec.dataset.label_set.name
    files = {k: str(folder / Path(v).name) for k, v in spec.spec.dataset.files.as_dict().items()}
    for split, path in files.items():
        if not Path(path).is_file():
            raise ConfigError(
                f"{spec.name}: dataset file for {split} not found at {path}; "
                f"pass --data-dir (a folder holding {spec.spec.dataset.label_set.name}/) or set $COE_DATA_DIR"
            )
    dataset = spec.spec.dataset.model_copy(update={"files": DatasetFiles(**files)})
    return spec.model_copy(update={"spec": spec.spec.model_copy(update={"dataset": dataset})})


def arm_sort_key(name: str) -> tuple[int, str]:
    return (ARM_ORDER.index(name) if name in ARM_ORDER else len(ARM_ORDER), name)


def _run_order(arm: Arm) -> tuple:
    """Every arm in ARM_ORDER, then seed repeats (in their arm's order, then by name)."""
    return (arm.repeat_of is not None, *arm_sort_key(arm.base), arm.name)


def load_arms(
    spec_dir: Path,
    data_dir: Path,
    store: str | None = None,
    only: Sequence[str] | None = None,
) -> list[Arm]:
    """The arm specs of one dataset folder, in run order; ``store`` replaces every spec's store."""
    from coe_controller.spec import load_spec

    paths = sorted(spec_dir.glob("*.yaml"), key=lambda p: arm_sort_key(p.stem))
    if not paths:
        raise ConfigError(f"{spec_dir}: no arm specs (*.yaml) here")
    arms = []
    for path in paths:
        spec = load_spec(path)
        if store:
            spec = spec.model_copy(update={"spec": spec.spec.model_copy(update={"store": store})})
            clues = spec.spec.clues
            if clues.cache:  # keep the shared clue cache inside the replaced store
                cache = clues.model_copy(
                    update={"cache": store.rstrip("/") + "/" + clues.cache.rstrip("/").rsplit("/", 1)[-1]}
                )
                spec = spec.model_copy(update={"spec": spec.spec.model_copy(update={"clues": cache})})
        labels = spec.metadata.labels
        name = labels.get(ARM_LABEL, path.stem)
        if not only or name in only:
            arms.append(
                Arm(
                    name,
                    path,
                    bind_data_files(spec, data_dir),
                    labels.get(REPEAT_LABEL),
                    labels.get(MATCHED_LABEL),
                )
            )
    arms.sort(key=_run_order)
    if only and sorted(set(only)) != sorted({a.name for a in arms}):
        raise ConfigError(
            f"--arms {sorted(only)}: some are not arms in {spec_dir} (found {[a.name for a in arms]})"
        )
    return arms


def _budget_key(a: Arm) -> dict:
    s = a.spec.spec
    return {
        "base_model": s.base_model.model_dump(),
        "dataset": s.dataset.model_dump(),
        "lora": s.lora.model_dump(),
        "optimizer": s.optimizer.model_dump(),
        "erc": s.training.erc.model_dump(),
        "evaluation": s.evaluation.model_dump(),
    }


def check_same_budget(arms: Sequence[Arm]) -> None:
    """Every arm must share base model, data subset and prompt settings (what makes the table fair).

    Two deliberate exceptions, each declared by a label and checked here: a seed repeat
    (REPEAT_LABEL) must equal the arm it repeats in everything but ``optimizer.seed``, and that seed
    must differ from the arm's and its other repeats'; the compute-matched control (MATCHED_LABEL)
    may differ from the first arm in the ERC stage's epochs only, by exactly the optimiser steps the
    named arm's stages before ERC cost (:func:`compute_matched_steps`). Any other difference is refused.
    """
    if not arms:
        return
    by_name = {a.name: a for a in arms}
    arms_proper = [a for a in arms if a.repeat_of is None]
    if not arms_proper:
        raise ConfigError(
            f"{arms[0].spec_path}: every arm here is a seed repeat ({REPEAT_LABEL}); none is the arm"
        )
    reference = arms_proper[0]
    first = _budget_key(reference)
    for a in arms_proper[1:]:
        k = _budget_key(a)
        diff = sorted(field for field in first if first[field] != k[field])
        if a.matched_to is not None:
            check_compute_matched(a, reference, by_name)
            diff = [d for d in diff if d != "erc"]
        if diff:
            raise ConfigError(
                f"{a.spec_path}: arm differs from {reference.spec_path.name} in {diff}; every arm must share the "
                "base model, data subset, prompt settings, LoRA, optimizer, ERC budget and evaluation"
            )
    seeds: dict[str, dict[int, str]] = {a.name: {a.seed: a.name} for a in arms_proper}
    for a in arms:
        if a.repeat_of is None:
            continue
        base = by_name.get(a.repeat_of)
        if base is None or base.repeat_of is not None:
            raise ConfigError(
                f"{a.spec_path}: a seed repeat of {a.repeat_of!r} ({REPEAT_LABEL}), which is not an arm here "
                f"(arms: {[b.name for b in arms_proper]})"
            )
        mine, theirs = a.spec.spec.model_dump(), base.spec.spec.model_dump()
        mine["optimizer"].pop("seed")
        theirs["optimizer"].pop("seed")
        diff = sorted(
            {f for f in mine if f != "optimizer" and mine[f] != theirs[f]}
            | {f"optimizer.{f}" for f in mine["optimizer"] if mine["optimizer"][f] != theirs["optimizer"][f]}
        )
        if diff:
            raise ConfigError(
                f"{a.spec_path}: a seed repeat of {base.name} may differ from it only in optimizer.seed; "
                f"it differs in {diff}"
            )
        taken = seeds[base.name]
        if a.seed in taken:
            raise ConfigError(
                f"{a.spec_path}: a seed repeat of {base.name} with optimizer.seed {a.seed}, the seed of "
                f"{taken[a.seed]}; a repeat needs a seed of its own"
            )
        taken[a.seed] = a.name


def steps_per_epoch(spec: Any, stage: str, examples: int) -> int:
    """Optimiser steps of one epoch of a training stage on ``examples`` examples, as the Trainer
    counts them: ``ceil(ceil(ceil(examples / processes) / batch) / accumulation)``, at least 1."""
    s = spec.spec
    st = getattr(s.training, stage)
    batch = st.per_device_batch_size or s.optimizer.per_device_batch_size
    accumulation = st.gradient_accumulation_steps or s.optimizer.gradient_accumulation_steps
    per_rank = math.ceil(examples / s.resources.procs_per_node)
    return max(1, math.ceil(math.ceil(per_rank / batch) / accumulation))


def planned_train_steps(spec: Any, stage: str, examples: int) -> int:
    """Optimiser steps a training stage takes: ``ceil(epochs * steps_per_epoch)`` (the Trainer's
    count), or the stage's ``maxSteps`` when set."""
    st = getattr(spec.spec.training, stage)
    if st.max_steps:
        return int(st.max_steps)
    return math.ceil(st.epochs * steps_per_epoch(spec, stage, examples))


def _seed_rationales(spec: Any) -> int:
    from coe_runtime.data.seeds import load_seeds

    return len(load_seeds(spec.spec.dataset.label_set.name, spec.spec.steer.seed_file))


def compute_matched_steps(spec: Any) -> list[tuple[str, int, int]]:
    """``(stage, examples, optimiser steps)`` of each training stage before ERC in ``spec``'s
    curriculum, from its settings alone: role-play and speaker-ID train on ``maxTrainExamples``
    examples each (every MELD / EmoryNLP training split has more utterances than that); STEeR
    counts its first round, which trains on the seed rationales (later rounds run only when a
    round accepts enough, and their memory is not known before the run); the mixed stage trains on
    role-play + speaker-ID + the seed memory. Generation (clues, STEeR pools) is not training and
    is not counted."""
    s = spec.spec
    n = s.dataset.max_train_examples
    if not n:
        raise ConfigError(
            f"{spec.name}: the compute-matched control needs dataset.maxTrainExamples (0 = all: the example "
            "count is then not known from the settings)"
        )
    out = []
    for stage in s.stage_order:
        if stage == "erc":
            break
        if stage in ("roleplay", "speaker_id"):
            examples = n
        elif stage == "steer":
            examples = _seed_rationales(spec)
        elif stage == "mixed":
            examples = 2 * n + _seed_rationales(spec)
        else:
            raise ConfigError(f"{spec.name}: no step count for stage {stage!r}")
        out.append((stage, examples, planned_train_steps(spec, stage, examples)))
    return out


def epochs_for_steps(steps: int, per_epoch: int) -> float:
    """The shortest decimal ``epochs`` with ``ceil(epochs * per_epoch) == steps`` (what to write in a spec)."""
    for digits in range(1, 9):
        scale = 10**digits
        epochs = math.floor(steps / per_epoch * scale) / scale
        if epochs > 0 and math.ceil(epochs * per_epoch) == steps:
            return epochs
    return steps / per_epoch


def check_compute_matched(arm: Arm, reference: Arm, by_name: dict[str, Arm]) -> None:
    """``arm`` (MATCHED_LABEL) must train ERC for ``reference``'s ERC steps plus what the named
    arm's stages before ERC cost, with every other ERC setting as ``reference``'s."""
    target = by_name.get(arm.matched_to or "")
    if target is None:
        raise ConfigError(
            f"{arm.spec_path}: compute-matched to {arm.matched_to!r} ({MATCHED_LABEL}), which is not an arm here"
        )
    mine = arm.spec.spec.training.erc.model_dump()
    theirs = reference.spec.spec.training.erc.model_dump()
    other = sorted(f for f in mine if f != "epochs" and mine[f] != theirs[f])
    if other:
        raise ConfigError(
            f"{arm.spec_path}: the compute-matched control may differ from {reference.spec_path.name} in "
            f"training.erc.epochs only; it differs in training.erc {other}"
        )
    n = reference.spec.spec.dataset.max_train_examples
    stages = compute_matched_steps(target.spec)
    extra = sum(steps for _, _, steps in stages)
    base = planned_train_steps(reference.spec, "erc", n)
    have = planned_train_steps(arm.spec, "erc", n)
    if have != base + extra:
        per_epoch = steps_per_epoch(arm.spec, "erc", n)
        detail = " + ".join(f"{stage} {steps}" for stage, _, steps in stages)
        raise ConfigError(
            f"{arm.spec_path}: compute-matched to {target.name}, so its ERC stage must take {base} + {extra} "
            f"({detail}) = {base + extra} optimiser steps; training.erc.epochs "
            f"{arm.spec.spec.training.erc.epochs:g} gives {have} (write epochs: "
            f"{epochs_for_steps(base + extra, per_epoch):g})"
        )


# -- running ---------------------------------------------------------------------------------


def run_arms(arms: Sequence[Arm], console: Any = None, after_each: Any = None) -> bool:
    """Run each arm to the end (published steps are skipped); False at the first failed arm."""
    from coe_controller.local import LocalExecutor
    from rich.console import Console

    console = console or Console()
    for arm in arms:
        console.rule(f"[bold]{arm.name}[/] ({arm.spec.name})")
        result = LocalExecutor(arm.spec, console=console).run()
        if after_each:
            after_each()
        if not result.ok:
            failed = result.failed
            what = f"step {failed.step} {failed.status}" if failed else "failed"
            reason = f": {failed.reason}" if failed and failed.reason else ""
            console.print(f"[red]arm {arm.name}: {what}{reason}[/]; rerun the same command to resume")
            if failed and failed.log_tail and not result.interrupted:  # the error, not on Ctrl-C / kill
                console.print("\n".join(failed.log_tail[-10:]), highlight=False, markup=False)
            return False
    return True


# -- collecting ------------------------------------------------------------------------------


def _local(uri: str) -> Path | None:
    from coe_runtime.store import FileStore

    return FileStore._path(uri) if uri.startswith("file://") else None


def _rel(uri: str | None, results_dir: Path) -> str | None:
    if not uri:
        return None
    path = _local(uri)
    if path is None:
        return uri
    return os.path.relpath(path, results_dir)


def shown_location(uri: str) -> str:
    """A store location as RESULTS.md names it: relative to the repository when the store is a
    folder inside it (the default ``coe-runs/quality``), so the page does not carry one machine's
    absolute path; any other store's URI as it is."""
    path = _local(uri)
    if path is None:
        return uri
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return uri


def observe_arm(arm: Arm) -> Any:
    """The arm's :class:`coe_controller.state.ExperimentState` (its current spec's steps and results)."""
    from coe_controller.state import observe

    return observe(arm.spec, earlier=False)


def _round_prompts(store: Any, round_step: Any) -> dict[str, str]:
    """id -> prompt of the pool a STEeR round generated for (to blank what a sample repeats)."""
    pool = getattr(round_step.config, "pool", None)
    if not pool or not store.exists(pool):
        return {}
    return {str(r.get("id")): str(r.get("prompt") or "") for r in store.read_jsonl(pool)}


def _published_file(store: Any, view: Any, name: str) -> Any:
    """A JSON file of a published step other than its result (``resolved-config.json``,
    ``clues-summary.json``), or None when the step's manifest does not list it."""
    from coe_runtime.store import join

    if name not in {f.get("path") for f in (view.manifest or {}).get("files") or []}:
        return None
    return store.read_json(join(view.step.output, name))


def count_answer_tokens(texts: Sequence[str], model_ref: Any) -> int:
    """Tokens of generated answers, re-tokenised with the base model's tokenizer (EOS not counted)."""
    from coe_runtime.models.loading import load_tokenizer

    if not texts:
        return 0
    tokenizer = load_tokenizer(model_ref)
    return sum(len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"])


def collect_arm(
    arm: Arm, results_dir: Path, snapshot_dir: Path | None = None, state: Any = None
) -> dict[str, Any]:
    """Everything RESULTS.md shows about one arm, read from the store; with ``snapshot_dir`` the
    files behind the numbers are copied to ``snapshot_dir/<arm>/`` and the links point there.

    What is done and each step's result come from ``state`` (:func:`observe_arm`: the one
    experiment-state reader); only attempts and wall times come from ``experiment_status``.
    When the store has not finished the arm but ``snapshot_dir/<arm>/`` holds the evidence of
    exactly its current steps (:func:`bench.quality.evidence.snapshot_matches`), the row is read
    from there and the snapshot is left as it is (a fresh clone's empty store, or a rerun under
    way, does not drop or overwrite a finished arm's committed evidence)."""
    from coe_controller.local import experiment_status, runs_prefix
    from coe_controller.planner import experiment_prefix
    from coe_controller.state import result_file

    from coe_runtime.store import get_store, join

    spec = arm.spec
    store = get_store(spec.spec.store)
    state = state if state is not None else observe_arm(arm)
    if snapshot_dir is not None and not state.finished:
        kept = collect_from_snapshot(arm, state, snapshot_dir / arm.name, results_dir)
        if kept is not None:
            return kept
    status_rows = experiment_status(spec, store)["steps"]
    spent = {r["name"]: r.get("attempts_s") for r in status_rows}
    done = [v for v in state.steps if v.done]
    pending = [v.name for v in state.steps if not v.done]
    out: dict[str, Any] = {
        "arm": arm.name,
        "seed": arm.seed,
        "repeat_of": arm.repeat_of,
        "matched_to": arm.matched_to,
        "experiment": spec.name,
        "strategy": spec.spec.strategy,
        "stages": list(spec.spec.stage_order),
        "complete": state.finished,
        "next_step": pending[0] if pending else None,
        "wall_s": round(sum(spent.get(v.name) or 0 for v in done), 1),
        "read_from": "store",
    }
    tokens_trained = 0
    tokens_generated = 0
    rounds = []
    last_round = None
    for v in done:
        s = v.step
        if s.kind == "train":
            resolved = _published_file(store, v, "resolved-config.json") or {}
            tokens_trained += int((resolved.get("summary") or {}).get("non_pad_tokens") or 0)
        elif s.kind == "steer_round":
            tokens_generated += int(v.result.get("tokens_generated") or 0)
            rounds.append(v.result)
            last_round = s
        elif s.kind == "clues":
            c = _published_file(store, v, "clues-summary.json") or {}
            tokens_generated += int(c.get("tokens_generated") or 0)
            out["clues"] = {
                k: c.get(k)
                for k in (
                    "requests",
                    "unique_requests",
                    "generated",
                    "from_cache",
                    "empty",
                    "tokens_generated",
                    "seconds",
                )
            }
    if last_round is not None:  # samples of the last published round only
        gens = join(last_round.output, "generations.jsonl")
        if store.exists(gens):
            out["rationale_samples"] = {
                "round": last_round.round,
                "samples": rationale_samples(
                    store.read_jsonl(gens), prompts=_round_prompts(store, last_round)
                ),
            }
    out["tokens_trained"] = tokens_trained
    out["steer_rounds"] = rounds
    links: dict[str, str | None] = {
        "run_dir": _rel(experiment_prefix(spec), results_dir),
        "spec": _rel(join(runs_prefix(spec), "spec.yaml"), results_dir),
        "bench_spec": os.path.relpath(arm.spec_path, results_dir),
    }
    erc = state.view("erc")
    if erc is not None and erc.done and erc.result:  # best.json: the best dev epoch
        out["dev"] = erc.result
        out["dev_n"] = _dev_n(state)
        links["best"] = _rel(join(erc.step.output, result_file(erc.step)), results_dir)
    test = state.view("test")
    if test is not None and test.done:
        metrics = test.result  # metrics.json
        preds = store.read_jsonl(join(test.step.output, "predictions.jsonl"))
        out["test"] = {
            k: metrics.get(k)
            for k in (
                "n",
                "weighted_f1",
                "macro_f1",
                "accuracy",
                "per_class",
                "fallback_share",
                "unparsed",
                "labels",
            )
        }
        out["test_ids"] = [p["id"] for p in preds]
        # For the paired comparisons (build_section drops it before the section is written).
        out["_predictions"] = {p["id"]: (p["gold"], p["parsed_label"]) for p in preds}
        ci = bootstrap_intervals(
            [p["gold"] for p in preds],
            [p["parsed_label"] for p in preds],
            metrics.get("labels") or sorted({p["gold"] for p in preds}),
            BOOTSTRAP_RESAMPLES,
            BOOTSTRAP_SEED,
        )
        out["test_ci"] = {k: v.as_dict() for k, v in ci.items()}
        tokens_generated += count_answer_tokens([p["output"] for p in preds], spec.spec.base_model)
        if result_file(test.step):
            links["metrics"] = _rel(join(test.step.output, result_file(test.step)), results_dir)
        links["predictions"] = _rel(join(test.step.output, "predictions.jsonl"), results_dir)
    out["tokens_generated"] = tokens_generated
    out["store_run_dir"] = shown_location(experiment_prefix(spec))
    if snapshot_dir is not None and done:
        dest = snapshot_dir / arm.name
        copied = snapshot_arm(store, dest, join(runs_prefix(spec), "spec.yaml"), state.steps, status_rows)
        links.update({k: os.path.relpath(dest / name, results_dir) for k, name in copied.items()})
        links["run_dir"] = os.path.relpath(dest, results_dir)
        row = {k: v for k, v in out.items() if k not in ("test_ids", "_predictions")}
        (dest / ARM_FILE).write_text(json.dumps(row, indent=2, default=str) + "\n", encoding="utf-8")
    elif snapshot_dir is not None:
        # Nothing to copy yet: no link into the store, which may be on a disk the reader lacks.
        links["run_dir"] = links["spec"] = None
    out["links"] = links
    return out


def collect_from_snapshot(arm: Arm, state: Any, snapshot: Path, results_dir: Path) -> dict[str, Any] | None:
    """The arm's row from its committed evidence (``arm.json`` and the slim predictions), linked
    to the snapshot's files; None unless the snapshot records exactly the current plan's steps
    and fingerprints as succeeded."""
    if not snapshot_matches(snapshot, state.steps):
        return None
    row, preds = read_snapshot(snapshot)
    out = {**row, "read_from": "snapshot"}
    links: dict[str, str | None] = {
        "run_dir": os.path.relpath(snapshot, results_dir),
        "bench_spec": os.path.relpath(arm.spec_path, results_dir),
    }
    links.update(
        {k: os.path.relpath(snapshot / name, results_dir) for k, name in snapshot_links(snapshot).items()}
    )
    out["links"] = links
    if preds:
        out["test_ids"] = [p["id"] for p in preds]
        out["_predictions"] = {p["id"]: (p["gold"], p["parsed_label"]) for p in preds}
    return out


def _prepared(state: Any, name: str) -> str | None:
    """URI of a file of the arm's published ``prepare`` step (its output from the plan), or None."""
    from coe_runtime.store import join

    prep = state.view("prepare")
    if prep is None or not prep.done:
        return None
    return join(prep.step.output, name)


def _source(spec: Any) -> Any:
    return spec.spec.dataset.to_source()


def test_utterances(
    arms: Sequence[Arm], states: Sequence[Any] | None = None
) -> tuple[list[str] | None, str | None]:
    """The test utterance ids the arms are scored on (from the first published prepare step);
    ``states``: the arms' experiment states, when already observed."""
    rows, source = prepared_rows(arms, "erc-test.jsonl", states)
    if rows is None:
        return None, None
    return [r["meta"]["uid"] for r in rows], source


def prepared_rows(
    arms: Sequence[Arm], name: str, states: Sequence[Any] | None = None
) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The rows of a prepared file (e.g. ``erc-test.jsonl``) of the first arm whose prepare step is
    published, and that arm's name; ``(None, None)`` when none is."""
    from coe_runtime.store import get_store

    for i, arm in enumerate(arms):
        state = states[i] if states is not None else observe_arm(arm)
        uri = _prepared(state, name)
        if uri is not None:
            return get_store(uri).read_jsonl(uri), arm.name
    return None, None


def test_dialogues(rows: Sequence[dict[str, Any]] | None) -> dict[str, str]:
    """Prediction id -> dialogue id, from the prepared test rows (``id`` is the prediction's id,
    ``meta.dialogue_id`` its dialogue); the paired bootstrap resamples these dialogues."""
    out: dict[str, str] = {}
    for r in rows or []:
        meta = r.get("meta") or {}
        ex_id = r.get("id") or f"erc:{meta.get('uid')}"
        out[ex_id] = meta.get("dialogue_id") or dialogue_of(ex_id)
    return out


def arms_training_uids(src: Any, train_dialogues: Sequence[Any]) -> list[str]:
    """The training utterances the arms' ERC stage trains on, chosen as prepare chooses them
    (dialogue subset, then the stratified ``maxTrainExamples`` subset by label, same seed) — for
    when no prepare step is published yet to read them from."""
    from types import SimpleNamespace

    from coe_runtime.prompts.tasks import subset_dialogues, subset_examples

    dialogues = subset_dialogues(train_dialogues, src.max_dialogues, src.subset_seed)
    stand_ins = [SimpleNamespace(uid=u.uid, meta={"label": u.label}) for d in dialogues for u in d.utterances]
    return [x.uid for x in subset_examples(stand_ins, src.max_train_examples, src.subset_seed)]


def compute_baselines(
    arm: Arm,
    test_uids: Sequence[str] | None,
    train: str = "full",
    cache_uri: str | None = None,
    train_uids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Majority class and TF-IDF+LR, scored on ``test_uids`` (None: the whole test split) and
    fitted on the full training split (``train="full"``) or on the arms' ERC training examples
    (``"arms"``: ``train_uids``, read from a published prepare step, else chosen as prepare would
    choose them; keys get an ``_arms`` suffix)."""
    from coe_runtime.data.labels import get_label_set
    from coe_runtime.data.readers import load_split
    from coe_runtime.metrics import compute_metrics
    from coe_runtime.prompts.tasks import subset_dialogues
    from coe_runtime.store import get_store

    src = _source(arm.spec)
    ls = src.label_set
    label_set = get_label_set(ls.name, ls.naming, ls.custom_prompt_names or None)
    settings = bl.tfidf_settings(ls.name)
    if train not in ("full", "arms"):
        raise ConfigError(f"baselines: train must be 'full' or 'arms', got {train!r}")
    arms = train == "arms"
    key_obj = {
        "files": {k: [Path(v).name, Path(v).stat().st_size] for k, v in src.files.items()},
        "train": train,
        "max_dialogues": src.max_dialogues if arms else 0,
        "max_train_examples": src.max_train_examples if arms else 0,
        "subset_seed": src.subset_seed,
        "train_uids": hashlib.sha256("\n".join(train_uids or []).encode()).hexdigest() if arms else None,
        "settings": settings,
        "test": hashlib.sha256("\n".join(test_uids or []).encode()).hexdigest(),
        "resamples": BOOTSTRAP_RESAMPLES,
        "seed": BOOTSTRAP_SEED,
        "version": 2,
    }
    key = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()[:16]
    if cache_uri:
        uri = f"{cache_uri.rstrip('/')}/{ls.name}-{key}.json"
        store = get_store(uri)
        if store.exists(uri):
            return store.read_json(uri)
    train_dialogues = load_split(src, "train")
    if arms:
        train_dialogues = subset_dialogues(train_dialogues, src.max_dialogues, src.subset_seed)
    train_texts = bl.utterances_of(train_dialogues)
    if arms and (train_uids is not None or src.max_train_examples):
        keep = set(train_uids if train_uids is not None else arms_training_uids(src, train_dialogues))
        pick = [i for i, uid in enumerate(train_texts.ids) if uid in keep]
        if len(pick) != len(keep):
            raise DataError(
                str(src.files.get("train")),
                None,
                f"{len(keep) - len(pick)} of the arms' training utterances are not in the training split",
            )
        train_texts = bl.LabelledTexts(
            [train_texts.texts[i] for i in pick],
            [train_texts.labels[i] for i in pick],
            [train_texts.ids[i] for i in pick],
        )
    test_all = bl.utterances_of(load_split(src, "test"))
    if test_uids is not None:
        where = {uid: i for i, uid in enumerate(test_all.ids)}
        missing = [u for u in test_uids if u not in where]
        if missing:
            raise DataError(
                str(src.files.get("test")),
                None,
                f"{len(missing)} test utterances of the arms are not in the test split (first: {missing[0]})",
            )
        pick = [where[u] for u in test_uids]
        test = bl.LabelledTexts(
            [test_all.texts[i] for i in pick], [test_all.labels[i] for i in pick], list(test_uids)
        )
    else:
        test = test_all
    results = []
    fitted_on = ", arms' training examples" if arms else ""
    suffix = "_arms" if arms else ""
    for name, key_name, predict in (
        (
            f"majority class{fitted_on}",
            f"majority{suffix}",
            lambda: bl.majority_predict(train_texts.labels, len(test.texts), label_set.labels),
        ),
        (
            f"TF-IDF (1-2-grams) + LR{' (class-balanced)' if settings['class_weight'] else ''}{fitted_on}",
            f"tfidf_lr{suffix}",
            lambda: bl.tfidf_lr_predict(train_texts, test.texts, settings),
        ),
    ):
        started = time.perf_counter()
        pred = predict()
        seconds = time.perf_counter() - started
        metrics = compute_metrics(test.labels, pred, label_set)
        ci = bootstrap_intervals(test.labels, pred, label_set.labels, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
        results.append(
            {
                "name": name,
                "key": key_name,
                "train": (
                    f"the arms' training examples ({len(train_texts.texts)} utterances)"
                    if arms
                    else f"full training split ({len(train_texts.texts)} utterances)"
                ),
                "test": {k: metrics[k] for k in ("n", "weighted_f1", "macro_f1", "accuracy", "per_class")},
                "test_ci": {k: v.as_dict() for k, v in ci.items()},
                "seconds": round(seconds, 2),
                "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
            }
        )
    if cache_uri:
        store.write_json(uri, results)
    return results


def settings_lines(arm: Arm) -> list[str]:
    s = arm.spec.spec
    d = s.dataset
    t = s.training
    erc_selection = (
        "best epoch on dev" if t.erc.epochs > 1 else "one epoch: dev is reported, there is no epoch to choose"
    )
    lines = [
        f"Base model `{s.base_model.name_or_path}`; LoRA r={s.lora.r}, alpha={s.lora.alpha} on "
        f"{', '.join(s.lora.target_modules)}; lr {s.optimizer.learning_rate:g}, effective batch "
        f"{s.optimizer.per_device_batch_size * s.optimizer.gradient_accumulation_steps}.",
        f"Data: `{d.format}`, {d.max_dialogues or 'all'} dialogues per split (seed {d.subset_seed}), "
        f"{d.max_train_examples or 'all'} training examples per task (stratified), dev "
        f"{d.max_dev_examples or 'all'}, test {d.max_test_examples or 'all'}; history window {d.history_window}, "
        f"max length {d.max_length} tokens.",
        f"Epochs: ERC {t.erc.epochs:g} ({erc_selection}), role-play {t.roleplay.epochs:g}, speaker-ID "
        f"{t.speaker_id.epochs:g}, STEeR {t.steer.epochs:g} per round, mixed {t.mixed.epochs:g}; STEeR up to "
        f"{s.steer.rounds} rounds, pool {s.steer.max_pool or 'all'}, rationale ≤ {s.steer.rationale_max_new_tokens} tokens.",
        "Budget arithmetic and what was cut versus the paper: [README.md](README.md).",
    ]
    return lines


@dataclass(frozen=True)
class PairedFrame:
    """The test utterances runs are compared on, in one order: prediction ids, gold labels, each
    utterance's dialogue (what the paired bootstrap resamples) and the label set scored."""

    ids: list[str]
    gold: list[str]
    groups: list[str]
    labels: list[str]

    @classmethod
    def of(
        cls, reference: dict[str, Any], dialogues: dict[str, str], runs: Sequence[dict[str, Any]]
    ) -> PairedFrame:
        """The frame of ``reference``'s predictions; ``dialogues`` maps prediction id to dialogue
        (ids it lacks fall back to :func:`bench.quality.stats.dialogue_of`); without the test
        step's label list, the labels are those in gold or predicted by any of ``runs``."""
        preds = reference["_predictions"]
        ids = list(preds)
        gold = [preds[i][0] for i in ids]
        labels = (reference.get("test") or {}).get("labels") or sorted(
            {*gold} | {p for r in runs for _, p in (r.get("_predictions") or {}).values() if p}
        )
        return cls(ids, gold, [dialogues.get(i) or dialogue_of(i) for i in ids], labels)

    def aligned(self, run: dict[str, Any]) -> bool:
        """Whether ``run`` was scored on exactly these utterances, with the same gold labels."""
        preds = run["_predictions"]
        return set(preds) == set(self.ids) and [preds[i][0] for i in self.ids] == self.gold

    def predicted(self, run: dict[str, Any]) -> list[str | None]:
        return [run["_predictions"][i][1] for i in self.ids]

    def compare(
        self,
        pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]],
        first: tuple[dict[str, Any], dict[str, Any]],
        resamples: int,
        seed: int,
    ) -> dict[str, Any]:
        """The dialogue bootstrap of A minus B averaged over ``pairs`` (one draw for all) and the
        exact McNemar test on the ``first`` pair."""
        preds = [(self.predicted(a), self.predicted(b)) for a, b in pairs]
        boot = paired_bootstrap(self.gold, preds, self.groups, self.labels, resamples, seed)
        return {
            **{m: v.as_dict() for m, v in boot.items()},
            "mcnemar": mcnemar(self.gold, self.predicted(first[0]), self.predicted(first[1])).as_dict(),
        }


def paired_comparisons(
    collected: Sequence[dict[str, Any]],
    dialogues: dict[str, str],
    reference: str = REFERENCE_ARM,
    resamples: int = PAIRED_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    alpha: float = ALPHA,
    power: float = POWER,
) -> dict[str, Any] | None:
    """Every arm against ``reference``, paired on the same test utterances (None without a scored
    ``reference`` run).

    Runs are grouped by arm (a seed repeat counts for the arm it repeats). Δ is the mean over the
    arm's runs minus the mean over the reference's runs: every (arm run, reference run) pair, one
    draw of dialogues shared by all pairs (:func:`bench.quality.stats.paired_bootstrap`), which
    averages to exactly that difference of means in the point estimate and in every resample.
    McNemar is the exact test on the arm's first run against the reference's run of the same
    ``optimizer.seed`` (else its first run): runs share utterances, so they are not independent
    strata to pool. Holm corrects the bootstrap p-values of weighted F1 across the arms compared.

    The bootstrap holds the trained models fixed. When the reference has two or more scored seeds,
    their sample sd of test weighted F1 stands for every arm's training-seed variation
    (:func:`bench.quality.stats.with_seed_variation`): each row gets the standard error and p-value
    with it, Holm-corrected as well, and a bootstrap verdict that this seed-aware test does not
    confirm reads "within seed variation". The minimum detectable effect is ``(z(1 - alpha/2) +
    z(power))`` times the median bootstrap standard error of the differences, and with the seed
    variation for an arm of one and of three runs. ``dialogues`` maps prediction id to dialogue
    (ids it lacks fall back to :func:`bench.quality.stats.dialogue_of`)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for c in collected:
        if c.get("_predictions"):
            runs.setdefault(c.get("repeat_of") or c["arm"], []).append(c)
    refs = runs.get(reference)
    if not refs:
        return None
    frame = PairedFrame.of(refs[0], dialogues, collected)
    rows, skipped = [], []
    for arm, mine in runs.items():
        if arm == reference:
            continue
        pairs = [(a, b) for a in mine for b in refs]
        first = (mine[0], next((e for e in refs if e["seed"] == mine[0]["seed"]), refs[0]))
        if not all(frame.aligned(x) for pair in pairs for x in pair):
            skipped.append(arm)
            continue
        stats = frame.compare(pairs, first, resamples, seed)
        stats["mcnemar"].update(run=first[0]["arm"], reference_run=first[1]["arm"])
        rows.append(
            {
                "arm": arm,
                "runs": [{"run": a["arm"], "seed": a["seed"]} for a in mine],
                "reference_runs": [{"run": b["arm"], "seed": b["seed"]} for b in refs],
                **stats,
            }
        )
    seed_sd = reference_seed_sd(refs)
    for row, adjusted in zip(rows, holm([r["weighted_f1"]["p_value"] for r in rows]), strict=True):
        row["holm_p"] = round(adjusted, 4)
        if seed_sd is not None:
            se, p = with_seed_variation(
                row["weighted_f1"]["delta"], row["weighted_f1"]["se"], seed_sd, len(row["runs"]), len(refs)
            )
            row["with_seeds"] = {"se": round(se, 3), "p_value": round(p, 4)}
    seeded = [r for r in rows if "with_seeds" in r]
    for row, adjusted in zip(seeded, holm([r["with_seeds"]["p_value"] for r in seeded]), strict=True):
        row["with_seeds"]["holm_p"] = round(adjusted, 4)
    for row in rows:
        row["verdict"] = paired_verdict(row, reference, alpha)
    mde = minimum_detectable_effect(rows, seed_sd, len(refs), alpha, power)
    scored = {c.get("repeat_of") or c["arm"] for c in collected if c.get("_predictions")}
    return {
        "reference": reference,
        "reference_runs": [{"run": r["arm"], "seed": r["seed"]} for r in refs],
        "reference_seed_sd": seed_sd,
        "n": len(frame.ids),
        "dialogues": len(set(frame.groups)),
        "resamples": resamples,
        "seed": seed,
        "rows": rows,
        "skipped": skipped,
        "pending": [c["arm"] for c in collected if not c.get("repeat_of") and c["arm"] not in scored],
        "mde": mde,
    }


def reference_seed_sd(refs: Sequence[dict[str, Any]]) -> float | None:
    """Sample sd of test weighted F1 over the reference's scored runs (None under two)."""
    values = [r["test_ci"]["weighted_f1"]["point"] for r in refs if r.get("test_ci")]
    return round(statistics.stdev(values), 3) if len(values) > 1 else None


def paired_verdict(row: dict[str, Any], reference: str, alpha: float) -> str:
    """The verdict of one paired row: the Holm-adjusted bootstrap p at ``alpha``, confirmed by the
    Holm-adjusted seed-aware p where the reference's seeds give one."""
    if row["holm_p"] >= alpha:
        return "no difference shown"
    seeds = row.get("with_seeds")
    if seeds is not None and seeds["holm_p"] >= alpha:
        return "within seed variation"
    return f"{'better' if row['weighted_f1']['delta'] > 0 else 'worse'} than {reference}"


def minimum_detectable_effect(
    rows: Sequence[dict[str, Any]], seed_sd: float | None, reference_runs: int, alpha: float, power: float
) -> dict[str, Any] | None:
    """The smallest difference in test weighted F1 the table detects with ``power`` at two-sided
    ``alpha`` (and at Holm's first step, alpha / comparisons): the MDE factor times the median
    bootstrap SE of the rows, and, with ``seed_sd``, times the seed-aware SE of an arm of one run
    and of three runs against ``reference_runs`` runs."""
    ses = sorted(r["weighted_f1"]["se"] for r in rows)
    if not ses:
        return None
    m = len(rows)
    median = float(statistics.median(ses))
    factor, factor_holm = mde_factor(alpha, power), mde_factor(alpha / m, power)
    out: dict[str, Any] = {
        "alpha": alpha,
        "power": power,
        "comparisons": m,
        "factor": round(factor, 2),
        "factor_first_holm_step": round(factor_holm, 2),
        "se_median": round(median, 3),
        "se_min": ses[0],
        "se_max": ses[-1],
        "weighted_f1": round(factor * median, 2),
        "weighted_f1_first_holm_step": round(factor_holm * median, 2),
    }
    if seed_sd is not None:
        out["seed_sd"] = seed_sd
        out["reference_runs"] = reference_runs
        for runs, key in ((1, "one_run"), (3, "three_runs")):
            se, _ = with_seed_variation(0.0, median, seed_sd, runs, reference_runs)
            out[f"weighted_f1_with_seeds_{key}"] = round(factor * se, 2)
    return out


def seed_against_first(
    first: dict[str, Any],
    other: dict[str, Any],
    dialogues: dict[str, str],
    resamples: int = PAIRED_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any] | None:
    """A seed repeat minus the arm's first run, paired on the same test utterances (dialogue
    bootstrap and McNemar, as :func:`paired_comparisons`): how far the training seed alone moves
    the score, in the test-sample test's own terms. None when the two were scored on other
    utterances."""
    frame = PairedFrame.of(first, dialogues, [first, other])
    if not frame.aligned(other):
        return None
    return {
        "run": other["arm"],
        "seed": other["seed"],
        "first_run": first["arm"],
        **frame.compare([(other, first)], (other, first), resamples, seed),
    }


def seed_summaries(
    collected: Sequence[dict[str, Any]], dialogues: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over the seeds of every arm that has seed repeats, and
    each scored repeat paired against the arm's first scored run (:func:`seed_against_first`)."""

    def stat(values: list[float]) -> dict[str, Any]:
        if not values:
            return {"mean": None, "sd": None, "n": 0}
        sd = statistics.stdev(values) if len(values) > 1 else None
        return {
            "mean": round(statistics.fmean(values), 2),
            "sd": None if sd is None else round(sd, 2),
            "n": len(values),
        }

    by_arm: dict[str, list[dict[str, Any]]] = {}
    for c in collected:
        by_arm.setdefault(c.get("repeat_of") or c["arm"], []).append(c)
    out = []
    for arm, runs in by_arm.items():
        if len(runs) < 2:
            continue
        done = [r for r in runs if r.get("test_ci")]
        paired = [r for r in done if r.get("_predictions")]
        against = [seed_against_first(paired[0], r, dialogues or {}) for r in paired[1:]]
        out.append(
            {
                "arm": arm,
                "runs": [
                    {"run": r["arm"], "seed": r["seed"], "scored": bool(r.get("test_ci"))} for r in runs
                ],
                "test_weighted_f1": stat([r["test_ci"]["weighted_f1"]["point"] for r in done]),
                "test_accuracy": stat([r["test_ci"]["accuracy"]["point"] for r in done]),
                "dev_weighted_f1": stat([r["dev"]["weighted_f1"] for r in done if r.get("dev")]),
                "against_first": [x for x in against if x is not None],
            }
        )
    return out


def section_baselines(
    arms: Sequence[Arm],
    states: Sequence[Any],
    test_uids: Sequence[str] | None,
    baseline_train: str,
    baseline_cache: str | None,
) -> list[dict[str, Any]]:
    """The reference baselines of a section: ``full`` (fitted on the full training split), ``arms``
    (on the first arm's ERC training examples) or ``both`` (both; the majority class only once,
    from the full split)."""
    if not arms:
        return []
    if baseline_train not in ("full", "arms", "both"):
        raise ConfigError(f"--baseline-train must be full, arms or both, got {baseline_train!r}")
    out = []
    if baseline_train in ("full", "both"):
        out += compute_baselines(arms[0], test_uids, "full", baseline_cache)
    if baseline_train in ("arms", "both"):
        rows, _ = prepared_rows(arms[:1], "erc-train.jsonl", states[:1])
        train_uids = [r["meta"]["uid"] for r in rows] if rows is not None else None
        subset = compute_baselines(arms[0], test_uids, "arms", baseline_cache, train_uids)
        out += subset if baseline_train == "arms" else [b for b in subset if b["key"] == "tfidf_lr_arms"]
    return out


def build_section(
    dataset: str,
    arms: Sequence[Arm],
    results_dir: Path,
    baseline_train: str = "both",
    baseline_cache: str | None = None,
    snapshot_dir: Path | None = None,
) -> dict[str, Any]:
    arm_dir = snapshot_dir / dataset if snapshot_dir is not None else None
    states = [observe_arm(a) for a in arms]
    collected = [collect_arm(a, results_dir, arm_dir, st) for a, st in zip(arms, states, strict=True)]
    test_rows, source_arm = prepared_rows(arms, "erc-test.jsonl", states)
    test_uids = [r["meta"]["uid"] for r in test_rows] if test_rows is not None else None
    source_note = f"`{source_arm}`'s prepare step" if source_arm else None
    if test_uids is None:  # no prepare step in this store: the test ids of an arm's committed predictions
        kept = next((c for c in collected if c.get("test_ids")), None)
        if kept is not None:
            test_uids = [utterance_uid(i) for i in kept["test_ids"]]
            source_note = f"`{kept['arm']}`'s test predictions"
    note = None
    ids = [tuple(c["test_ids"]) for c in collected if c.get("test_ids")]
    if ids and any(i != ids[0] for i in ids):
        note = "WARNING: the arms were scored on different test utterances; their rows are not comparable."
    baselines = section_baselines(arms, states, test_uids, baseline_train, baseline_cache)
    paired = paired_comparisons(collected, test_dialogues(test_rows))
    seeds = seed_summaries(collected, test_dialogues(test_rows))
    clue_lines = [
        f"clue writing in arm {c['arm']}: {c['clues']['generated']} generated, {c['clues']['from_cache']} from the "
        f"shared cache, {fmt(c['clues']['tokens_generated'])} tokens, {c['clues']['seconds']} s"
        for c in collected
        if c.get("clues")
    ]
    labels = next((c["test"]["labels"] for c in collected if c.get("test")), None)
    if labels is None and baselines:
        labels = list(baselines[0]["test"]["per_class"])
    dev_n = next((c["dev_n"] for c in collected if c.get("dev_n") is not None), None)
    for c in collected:
        c.pop("test_ids", None)
        c.pop("_predictions", None)
    return {
        "dataset": dataset,
        "title": {"meld": "MELD", "emorynlp": "EmoryNLP"}.get(dataset, dataset),
        "label_set": arms[0].spec.spec.dataset.label_set.name if arms else dataset,
        "labels": labels or [],
        "test_n": len(test_uids)
        if test_uids is not None
        else (baselines[0]["test"]["n"] if baselines else None),
        "dev_n": dev_n,
        "settings": settings_lines(arms[0]) if arms else [],
        "arms": collected,
        "baselines": baselines,
        "paired": paired,
        "seeds": seeds,
        "shared": clue_lines,
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED},
        "test_set_note": note
        or (f"Test utterances: those of {source_note} (every arm shares them)." if source_note else None),
    }


def fmt(n: Any) -> str:
    return f"{int(n or 0):,}"


def _dev_n(state: Any) -> int | None:
    """Dev examples of the arm's prepare step (what its dev wF1 is computed on)."""
    from coe_runtime.store import get_store

    uri = _prepared(state, "erc-dev.jsonl")
    if uri is None:
        return None
    store = get_store(uri)
    return len(store.read_jsonl(uri)) if store.exists(uri) else None


def write_results(path: Path, sections: Sequence[dict[str, Any]], command: str) -> Path:
    """RESULTS.md (temp file + rename) and RESULTS.json beside it (the same data, machine-readable)."""
    readme = os.path.relpath(Path(__file__).resolve().parent / "README.md", path.resolve().parent)
    header = [
        f"Produced by {command} (resumable; rerun to continue or refresh). Last written "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        f"What the table shows, in words, and the evidence behind it: [README.md#findings-and-status]({readme}#findings-and-status).",
    ]
    text = render_results(sections, header)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, data in (
        (path, text),
        (path.with_suffix(".json"), json.dumps(list(sections), indent=2, default=str) + "\n"),
    ):
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(data, encoding="utf-8")
        tmp.replace(target)
    return path


def has_started(arm: Arm) -> bool:
    """Whether any step of the arm has run (or is running) in its store: published, or an attempt
    of this spec's step recorded (``experiment_status``: a failed first step counts too)."""
    from coe_controller.local import experiment_status

    return any(r["state"] not in ("pending", "tentative") for r in experiment_status(arm.spec)["steps"])


def refresh_results(
    datasets: dict[str, list[Arm]],
    results: Path,
    command: str,
    baseline_train: str = "both",
    baseline_cache: str | None = None,
    snapshot_dir: Path | None = None,
) -> Path:
    sections = [
        build_section(ds, arms, results.parent, baseline_train, baseline_cache, snapshot_dir)
        for ds, arms in datasets.items()
        if arms
    ]
    return write_results(results, sections, command)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.quality.run", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return p.parse_args(argv)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset", choices=[*DATASETS, "all"], default="meld", help="which table to run (default meld)"
    )
    p.add_argument("--specs", type=Path, default=BENCH_DIR, help="folder holding <dataset>/*.yaml arm specs")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding meld/ and emorynlp/ (default $COE_DATA_DIR or ../shared/data)",
    )
    p.add_argument(
        "--store", default=None, help="replace the specs' store URI (e.g. file:///big/disk/coe-runs)"
    )
    p.add_argument(
        "--arms",
        nargs="+",
        default=None,
        help="run only these arms, in the table's order (the table still lists every finished arm)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where to write RESULTS.md (default bench/quality/RESULTS.md)",
    )
    p.add_argument(
        "--report-only", action="store_true", help="run nothing; rewrite RESULTS.md from the store"
    )
    p.add_argument(
        "--snapshot",
        type=Path,
        default=None,
        help="copy each arm's evidence (spec, step times, dev/test metrics, predictions, STEeR rounds) to "
        "DIR/<dataset>/<arm>/ and link RESULTS.md there (default: runs/ beside RESULTS.md)",
    )
    p.add_argument("--no-snapshot", action="store_true", help="link RESULTS.md to the store instead")
    p.add_argument(
        "--baseline-train", choices=["full", "arms", "both"], default="both",
        help="fit the baselines on the full training split (as the data README), on the arms' ERC training "
        "examples, or both (default: majority and TF-IDF on the full split, TF-IDF also on the arms' examples)",
    )  # fmt: skip


def main_with_args(args: argparse.Namespace, command: str = "python -m bench.quality.run") -> int:
    from rich.console import Console

    console = Console()
    data_dir = args.data_dir or default_data_dir()
    names = list(DATASETS) if args.dataset == "all" else [args.dataset]
    datasets: dict[str, list[Arm]] = {}
    for ds in names:
        datasets[ds] = load_arms(args.specs / ds, data_dir, args.store)
        check_same_budget(datasets[ds])
    # Only the chosen datasets run, but RESULTS.md keeps every dataset that has run in this store
    # or has committed evidence: `--dataset emorynlp` after `--dataset meld` must not drop the MELD table.
    snapshot = None if args.no_snapshot else (args.snapshot or args.results.parent / SNAPSHOT_DIR)
    shown: dict[str, list[Arm]] = {}
    for ds in DATASETS:
        if ds in datasets:
            shown[ds] = datasets[ds]
            continue
        try:
            others = load_arms(args.specs / ds, data_dir, args.store)
        except CoEError:  # no specs or data for it here: it cannot have run from this checkout
            continue
        if any(
            has_started(a) or (snapshot is not None and (snapshot / ds / a.name / ARM_FILE).is_file())
            for a in others
        ):
            shown[ds] = others
    full_command = " and ".join(f"`{command} --dataset {ds}`" for ds in shown) or f"`{command}`"
    baseline_cache = None
    first = next((a for arms in datasets.values() for a in arms), None)
    if first is not None:
        baseline_cache = first.spec.spec.store.rstrip("/") + "/quality-baselines"

    def refresh() -> None:
        refresh_results(shown, args.results, full_command, args.baseline_train, baseline_cache, snapshot)
        console.print(f"wrote {args.results}")

    if not args.report_only:
        for ds in names:
            run = [a for a in datasets[ds] if not args.arms or a.name in args.arms]
            if args.arms:
                unknown = sorted(set(args.arms) - {a.name for a in datasets[ds]})
                if unknown:
                    raise ConfigError(
                        f"--arms {unknown}: no such arm for {ds}; expected some of {[a.name for a in datasets[ds]]}"
                    )
            if not run_arms(run, console, after_each=refresh):
                return 1
    refresh()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return main_with_args(args)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except CoEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
