"""The ``prepare`` step: raw data (+ clue file, + seed rationales) -> the example files of every later step.

Writes, into a temporary folder, then publishes under ``step.output`` (manifest last):

- ``erc-{train,dev,test}.jsonl`` — for each split the dataset has (task ``erc``)
- ``roleplay-train.jsonl``, ``speaker_id-train.jsonl`` — the auxiliary tasks, from train
- ``memory-r0.jsonl`` (the seeds as STEeR examples), ``pool-r0.jsonl`` (every other train utterance)
- ``reference/*.json`` — the same in the reference implementation's ``{"input","target"}`` lines
  (``trainbegin.json`` = memory, ``train4infer.json`` = pool)
- ``summary.json`` — counts, label distributions, prompt-length percentiles, what the budget cut

Only the files of ``step.tasks`` are written. Under torchrun only rank 0 prepares.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from coe_runtime.data.clue_file import DEMO_CLUES, Clues, check_coverage, load_clues
from coe_runtime.data.dialogue import SPLITS, Dialogue, Example, write_examples
from coe_runtime.data.labels import LabelSet, get_label_set
from coe_runtime.data.seeds import load_seeds
from coe_runtime.errors import ConfigError
from coe_runtime.progress import is_rank_zero, report
from coe_runtime.prompts.builder import CountTokens
from coe_runtime.prompts.tasks import build_examples, build_steer_sets, subset_dialogues, subset_examples
from coe_runtime.record import publish_step
from coe_runtime.step import PrepareStep
from coe_runtime.store import normalize_uri


def tokenizer_counter(step: PrepareStep) -> tuple[CountTokens, str]:
    """Count tokens with the base model's tokenizer (+1 per text: BOS on the prompt, EOS on the target)."""
    from coe_runtime.models.loading import load_tokenizer

    tokenizer = load_tokenizer(step.base_model)

    # Cached: targets ("<joy>"), hints and clue sections repeat across thousands of prompts.
    @functools.lru_cache(maxsize=65536)
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1

    return count, f"tokenizer:{step.base_model.name_or_path}"


def present_splits(step: PrepareStep) -> list[str]:
    if step.dataset.format == "demo" and not step.dataset.files:
        return list(SPLITS)
    return [s for s in SPLITS if s in step.dataset.files]


def resolve_clues(step: PrepareStep) -> Clues | None:
    if step.clues is not None:
        return load_clues(step.clues)
    if step.dataset.format == "demo" and not step.dataset.files and step.use_bundled_clues:
        return load_clues(str(DEMO_CLUES))
    return None


# The prompt-length percentiles that summary.json and ``coe-ctl data check`` (data_report) report.
PERCENTILES = (50, 90, 99)
_T = TypeVar("_T")


def percentile(sorted_values: Sequence[_T], p: float) -> _T:
    """Nearest-rank percentile ``p`` (0-100) of ascending values: always one of the observed values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def length_percentiles(values: Sequence[int]) -> dict[str, int]:
    """``p50``, ``p90``, ``p99`` (nearest rank) and ``max`` of token counts."""
    ordered = sorted(values)
    return {**{f"p{p}": percentile(ordered, p) for p in PERCENTILES}, "max": ordered[-1]}


def describe_examples(examples: Sequence[Example]) -> dict[str, Any]:
    counts = [ex.meta["n_tokens"] for ex in examples if "n_tokens" in ex.meta]
    return {
        "examples": len(examples),
        "labels": dict(sorted(Counter(ex.meta.get("label") for ex in examples).items())),
        "prompt_tokens": length_percentiles(counts) if counts else None,
        "history_cut": sum(1 for ex in examples if ex.meta.get("history_dropped")),
        "clues_cut": sum(1 for ex in examples if ex.meta.get("clue_word_cap") is not None),
    }


def _describe_split(dialogues: Sequence[Dialogue]) -> dict[str, Any]:
    labels = Counter(u.label for d in dialogues for u in d.utterances)
    return {
        "dialogues": len(dialogues),
        "utterances": sum(labels.values()),
        "labels": dict(sorted(labels.items())),
    }


def build_prepared_files(
    step: PrepareStep,
    dialogues: dict[str, list[Dialogue]],
    label_set: LabelSet,
    clues: Clues | None,
    count_tokens: CountTokens | None,
) -> dict[str, list[Example]]:
    """The example lists of every output file, keyed by file name (pure: no I/O)."""
    src = step.dataset
    opts: dict[str, Any] = {
        "history_window": src.history_window,
        "max_length": src.max_length,
        "count_tokens": count_tokens,
    }
    limits = {"train": src.max_train_examples, "dev": src.max_dev_examples, "test": src.max_test_examples}
    files: dict[str, list[Example]] = {}
    if "erc" in step.tasks:
        for split, ds in dialogues.items():
            examples = build_examples(ds, "erc", label_set, clues, label_format=step.label_format, **opts)
            files[f"erc-{split}.jsonl"] = subset_examples(examples, limits[split], src.subset_seed)
    train = dialogues.get("train")
    for task in ("roleplay", "speaker_id"):
        if task in step.tasks:
            if train is None:
                raise _missing_train(task)
            examples = build_examples(train, task, label_set, clues, **opts)
            files[f"{task}-train.jsonl"] = subset_examples(examples, src.max_train_examples, src.subset_seed)
    if "steer" in step.tasks:
        if train is None:
            raise _missing_train("steer")
        seeds = load_seeds(label_set.name, step.steer.seed_file)
        memory, pool = build_steer_sets(train, label_set, seeds, clues, **opts)
        files["memory-r0.jsonl"] = memory
        files["pool-r0.jsonl"] = subset_examples(pool, step.steer.max_pool, src.subset_seed)
    return files


def _missing_train(task: str) -> ConfigError:
    return ConfigError(
        f"task {task!r} is built from the training split, but dataset.files has no 'train' entry"
    )


REFERENCE_NAMES = {"memory-r0.jsonl": "trainbegin.json", "pool-r0.jsonl": "train4infer.json"}


def write_prepared(out_dir: Path, files: dict[str, list[Example]], summary: dict[str, Any]) -> None:
    for name, examples in files.items():
        write_examples(out_dir / name, examples)
        ref_name = REFERENCE_NAMES.get(name, name.removesuffix(".jsonl") + ".json")
        ref = out_dir / "reference" / ref_name
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text("".join(ex.to_reference() + "\n" for ex in examples), encoding="utf-8")
    (out_dir / "summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def run_prepare(
    step: PrepareStep,
    load_split: Callable[[Any, str], list[Dialogue]] | None = None,
    count_tokens: CountTokens | None = None,
) -> dict[str, Any]:
    """Build and publish every prepared file; returns the summary (also saved as ``summary.json``).

    ``load_split`` and ``count_tokens`` default to the dataset readers and the base model's tokenizer.
    """
    if not is_rank_zero():
        return {"skipped": "only rank 0 prepares"}
    if load_split is None:
        from coe_runtime.data.readers import load_split as read_split

        load_split = read_split
    ref = step.dataset.label_set
    label_set = get_label_set(ref.name, ref.naming, ref.custom_prompt_names or None)
    splits = present_splits(step)
    if not splits:
        raise ConfigError("dataset.files is empty; give a path or URI for at least one of train, dev, test")
    report(step=step.name, phase="prepare", message=f"reading {step.dataset.format} splits {splits}")
    dialogues = {split: load_split(step.dataset, split) for split in splits}
    keep = set()
    if "steer" in step.tasks and step.dataset.max_dialogues:
        keep = {s.uid for s in load_seeds(label_set.name, step.steer.seed_file)}
    dialogues = {
        split: subset_dialogues(
            ds, step.dataset.max_dialogues, step.dataset.subset_seed, keep if split == "train" else set()
        )
        for split, ds in dialogues.items()
    }
    clues = resolve_clues(step)
    counter_name = "given"
    if count_tokens is None:
        count_tokens, counter_name = tokenizer_counter(step)
    report(step=step.name, phase="prepare", message=f"building tasks {step.tasks}")
    files = build_prepared_files(step, dialogues, label_set, clues, count_tokens)
    summary = {
        "step": step.name,
        "label_set": label_set.to_dict(),
        "dataset": {"format": step.dataset.format, "files": dict(step.dataset.files)},
        "history_window": step.dataset.history_window,
        "max_length": step.dataset.max_length,
        "label_format": step.label_format,
        "token_counter": counter_name,
        "clues": None
        if clues is None
        else {"source": clues.source} | {split: check_coverage(clues, ds) for split, ds in dialogues.items()},
        "splits": {split: _describe_split(ds) for split, ds in dialogues.items()},
        "files": {name: describe_examples(examples) for name, examples in files.items()},
    }
    output = normalize_uri(step.output)
    with tempfile.TemporaryDirectory(prefix="coe-prepare-") as tmp:
        write_prepared(Path(tmp), files, summary)
        publish_step(
            step.model_copy(update={"output": output}), tmp, meta={"kind": "prepare", "step": step.name}
        )
    report(step=step.name, phase="prepare", message=f"published {len(files)} files to {output}")
    return summary
