"""What a dataset holds, before any training: the analysis behind ``coe-ctl data check`` and
``coe-ctl data preview``.

It reads every split with the same readers a pod uses and summarises counts per split, labels,
speakers, dialogue lengths, prompt-length percentiles for a tokenizer and history window, and the
problems it finds; and it builds one utterance's task example for a preview. The CLI
(``coe_controller.cli_data``) only parses arguments and prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from coe_runtime.data.dialogue import SPLITS, Dialogue
from coe_runtime.data.labels import BUILTIN, LabelSet, get_label_set
from coe_runtime.data.readers import (
    DEFAULT_LABEL_SET,
    ReadNotes,
    bundled_demo_path,
    find_split_files,
    normalize_split,
    read_file,
)
from coe_runtime.errors import ConfigError, DataError, require_training_stack
from coe_runtime.prepare import length_percentiles
from coe_runtime.step import HISTORY_WINDOW, MAX_LENGTH

CountTokens = Callable[[str], int]
NO_TOKENIZER = "estimate"  # words + punctuation marks, when no --tokenizer is given


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def resolve_files(path: str | None, fmt: str) -> dict[str, Path]:
    """split -> file for a path (file or folder); the bundled demo file when ``path`` is omitted."""
    if path is None:
        if fmt != "demo":
            raise ConfigError(
                f"format {fmt!r} needs a PATH (a data file or a folder holding the split files)"
            )
        return find_split_files(bundled_demo_path(), "demo")
    return find_split_files(path, fmt)


def load_dataset(
    files: dict[str, Path], fmt: str, label_set: LabelSet, notes: ReadNotes | None = None
) -> dict[str, list[Dialogue]]:
    """Every split's dialogues, in SPLITS order."""
    return {
        split: read_file(files[split], fmt, split, label_set, notes) for split in SPLITS if split in files
    }


def resolve_label_set(name: str | None, fmt: str, naming: str = "dataset") -> LabelSet:
    name = name or DEFAULT_LABEL_SET.get(fmt)
    if name is None:
        raise ConfigError(f"format {fmt!r} needs --label-set (one of {sorted(BUILTIN)})")
    return get_label_set(name, naming)


class TokenCounter:
    """Counts tokens one text at a time (what the prompt builder calls) or many at once (fast path:
    one batched call into the Rust tokenizer instead of one Python round trip per prompt)."""

    def __init__(self, name: str, count: CountTokens | None = None, backend=None):
        self.name = name
        self._count = count
        self._backend = backend  # a ``tokenizers.Tokenizer`` when the tokenizer has one

    @property
    def count(self) -> CountTokens | None:
        """None means the prompt builder's own estimate."""
        return self._count

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if self._backend is not None:
            return [len(e.ids) for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]
        if self._count is not None:
            return [self._count(t) for t in texts]
        from coe_runtime.prompts.builder import estimate_tokens

        return [estimate_tokens(t) for t in texts]


def token_counter(tokenizer: str | None) -> TokenCounter:
    if tokenizer is None:
        return TokenCounter(NO_TOKENIZER)
    require_training_stack(f"--tokenizer {tokenizer}")
    from coe_runtime.models.loading import load_tokenizer  # transformers only when asked for
    from coe_runtime.step import ModelRef

    tok = load_tokenizer(ModelRef(name_or_path=tokenizer))

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    return TokenCounter(tokenizer, count, getattr(tok, "backend_tokenizer", None))


def load_clues_for(path: str | None, fmt: str):
    """The clue file named, or for the bundled demo data its bundled clues; None otherwise."""
    from coe_runtime.data.clue_file import DEMO_CLUES, load_clues

    if path is not None:
        return load_clues(path), str(path)
    if fmt == "demo" and DEMO_CLUES.is_file():
        return load_clues(DEMO_CLUES), "bundled demo clues"
    return None, None


# --------------------------------------------------------------------------------------------
# Pure summaries
# --------------------------------------------------------------------------------------------


def length_summary(values: Sequence[int]) -> dict[str, float]:  # an even count's median is a half
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"min": ordered[0], "median": median, "max": ordered[-1]}


def split_summary(dialogues: Sequence[Dialogue], label_set: LabelSet) -> dict[str, Any]:
    utterances = [u for d in dialogues for u in d.utterances]
    labels = Counter(u.label for u in utterances)
    speakers = Counter(s for u in utterances for s in u.speakers)
    return {
        "files": sorted({d.source for d in dialogues}),
        "dialogues": len(dialogues),
        "utterances": len(utterances),
        "labels": {label: labels.get(label, 0) for label in label_set.labels},
        "speakers": len(speakers),
        "top_speakers": [name for name, _ in speakers.most_common(5)],
        "multi_speaker_utterances": sum(len(u.speakers) > 1 for u in utterances),
        "dialogue_length": length_summary([len(d.utterances) for d in dialogues]),
    }


def prompt_lengths(
    dialogues: Sequence[Dialogue],
    label_set: LabelSet,
    counter: TokenCounter,
    window: int,
    max_length: int,
    clues=None,
) -> dict[str, Any]:
    """ERC prompt + target tokens per utterance with the full history window (nothing dropped),
    and how many prompts the budget would shorten (history dropped) or could not fit at all."""
    from coe_runtime.prompts.builder import build_prompt, erc_target

    # With an unbounded budget the builder keeps the whole window whatever the counts, so the
    # texts are rendered first and counted in one batch.
    unbounded = 1 << 30
    where, prompts, targets = [], [], []
    for d in dialogues:
        for i, u in enumerate(d.utterances):
            target = erc_target(u.label, label_set)
            built = build_prompt(
                d,
                i,
                "erc",
                label_set,
                clues,
                target=target,
                history_window=window,
                max_length=unbounded,
                count_tokens=_no_count,
            )
            where.append((d, i, target))
            prompts.append(built.text)
            targets.append(target)
    distinct_targets = sorted(set(targets))
    target_tokens = dict(zip(distinct_targets, counter.count_many(distinct_targets), strict=True))
    lengths = [n + target_tokens[t] for n, t in zip(counter.count_many(prompts), targets, strict=True)]
    # Over budget: the builder drops history, then clues; what is left (window 0, no clues) is what
    # can never be cut. Rendered and counted in one batch too.
    over = [(d, i, target) for (d, i, target), n in zip(where, lengths, strict=True) if n > max_length]
    fixed = [
        build_prompt(
            d,
            i,
            "erc",
            label_set,
            None,
            target=target,
            history_window=0,
            max_length=unbounded,
            count_tokens=_no_count,
        ).text
        for d, i, target in over
    ]
    needs = [n + target_tokens[t] for n, (_, _, t) in zip(counter.count_many(fixed), over, strict=True)]
    cannot_fit = [
        (d.utterances[i].uid, need) for (d, i, _), need in zip(over, needs, strict=True) if need > max_length
    ]
    shortened = len(over) - len(cannot_fit)
    out: dict[str, Any] = length_percentiles(lengths)
    out["over_max_length"] = shortened + len(cannot_fit)
    out["cannot_fit"] = len(cannot_fit)
    out["cannot_fit_examples"] = [{"uid": uid, "needs": need} for uid, need in cannot_fit[:5]]
    return out


def _no_count(text: str) -> int:
    return 0


def find_problems(
    splits: dict[str, list[Dialogue]],
    summaries: dict[str, dict[str, Any]],
    label_set: LabelSet,
    max_length: int,
) -> list[str]:
    """Things that are readable but probably wrong, one sentence each."""
    problems = []
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        problems.append(
            f"no {' / '.join(missing)} split: training needs train, model selection dev, evaluation test"
        )
    for split, summary in summaries.items():
        problems += _split_problems(split, summary, label_set, max_length)
    problems += _ids_in_several_splits(splits)
    problems += _speaker_spellings(splits)
    return problems


def _split_problems(split: str, summary: dict[str, Any], label_set: LabelSet, max_length: int) -> list[str]:
    """A split's labels that never occur, and its utterances no prompt budget can fit."""
    problems = []
    absent = [label for label, n in summary["labels"].items() if n == 0]
    if absent:
        problems.append(f"{split}: no utterances labelled {absent} (label set {label_set.name})")
    prompts = summary.get("prompt_tokens")
    if prompts and prompts["cannot_fit"]:
        worst = max(e["needs"] for e in prompts["cannot_fit_examples"])
        problems.append(
            f"{split}: {prompts['cannot_fit']} utterance(s) do not fit --max-length {max_length} even with no "
            f"history or clues (e.g. {prompts['cannot_fit_examples'][0]['uid']} needs {worst} tokens)"
        )
    return problems


def _ids_in_several_splits(splits: dict[str, list[Dialogue]]) -> list[str]:
    """Dialogue and utterance ids that occur in more than one split."""
    problems = []
    owner: dict[str, str] = {}
    shared_dialogues: set[str] = set()
    shared_uids = 0
    seen_uid: dict[str, str] = {}
    for split, dialogues in splits.items():
        for d in dialogues:
            if d.dialogue_id in owner and owner[d.dialogue_id] != split:
                shared_dialogues.add(d.dialogue_id)
            owner.setdefault(d.dialogue_id, split)
            for u in d.utterances:
                if seen_uid.setdefault(u.uid, split) != split:
                    shared_uids += 1
    if shared_dialogues:
        example = sorted(shared_dialogues)[0]
        problems.append(
            f"{len(shared_dialogues)} dialogue id(s) occur in more than one split (e.g. {example!r}): "
            "train/test leakage, or clue files keyed by bare ids will mix them up"
        )
    if shared_uids:
        problems.append(
            f"{shared_uids} utterance id(s) occur in more than one split: seed and clue files key on them"
        )
    return problems


def _speaker_spellings(splits: dict[str, list[Dialogue]]) -> list[str]:
    """Speaker names spelled several ways (case or spacing)."""
    names: dict[str, set[str]] = {}
    for dialogues in splits.values():
        for d in dialogues:
            for u in d.utterances:
                for s in u.speakers:
                    names.setdefault(" ".join(s.split()).lower(), set()).add(s)
    variants = sorted(sorted(v) for v in names.values() if len(v) > 1)
    if not variants:
        return []
    return [
        f"{len(variants)} speaker name(s) are spelled several ways (case/spacing), e.g. {variants[0]}: "
        "personas and speaker-ID candidates treat them as different people"
    ]


def summarize(
    splits: dict[str, list[Dialogue]],
    label_set: LabelSet,
    *,
    counter: TokenCounter | None = None,
    window: int = HISTORY_WINDOW,
    max_length: int = MAX_LENGTH,
    clues=None,
    notes: ReadNotes | None = None,
) -> dict[str, Any]:
    """The whole ``data check`` report as a JSON-ready dict (pure: no I/O)."""
    counter = counter or TokenCounter(NO_TOKENIZER)
    summaries = {}
    for split, dialogues in splits.items():
        summary = split_summary(dialogues, label_set)
        summary["prompt_tokens"] = prompt_lengths(dialogues, label_set, counter, window, max_length, clues)
        summaries[split] = summary
    report: dict[str, Any] = {
        "label_set": label_set.name,
        "labels": list(label_set.labels),
        "prompt": {"task": "erc", "tokenizer": counter.name, "window": window, "max_length": max_length},
        "splits": summaries,
        "problems": find_problems(splits, summaries, label_set, max_length),
        "notes": [],
    }
    if notes is not None and notes.repaired_fields:
        report["notes"].append(
            f"repaired {notes.repaired_fields} field(s) holding cp1252 punctuation decoded as Latin-1 "
            f"(first at line {notes.first_repair_line})"
        )
    if notes is not None:
        report["notes"].extend(notes.messages)
    return report


def select_utterance(
    splits: dict[str, list[Dialogue]], split: str | None, index: int | None, uid: str | None
) -> tuple[Dialogue, int]:
    """(dialogue, index in it) for ``--uid`` (any split) or ``--index`` within ``--split``."""
    if uid is not None:
        for dialogues in splits.values():
            for d in dialogues:
                for i, u in enumerate(d.utterances):
                    if u.uid == uid:
                        return d, i
        raise ConfigError(f"no utterance with id {uid!r} in splits {list(splits)}")
    chosen = normalize_split(split) if split is not None else next(iter(splits))
    if chosen not in splits:
        raise ConfigError(f"no {chosen} split here; found {list(splits)}")
    total = sum(len(d.utterances) for d in splits[chosen])
    n = index or 0
    if not 0 <= n < total:
        raise ConfigError(
            f"--index {n} is out of range: the {chosen} split has {total} utterances (0..{total - 1})"
        )
    for d in splits[chosen]:
        if n < len(d.utterances):
            return d, n
        n -= len(d.utterances)
    raise AssertionError("unreachable")


def build_preview(
    dialogue: Dialogue,
    index: int,
    task: str,
    label_set: LabelSet,
    *,
    count_tokens: CountTokens | None = None,
    window: int = HISTORY_WINDOW,
    max_length: int = MAX_LENGTH,
    clues=None,
):
    """The task example of utterance ``index`` (tasks.build_examples on its dialogue)."""
    from coe_runtime.prompts.tasks import build_examples

    uid = dialogue.utterances[index].uid
    seeds = None
    if task == "steer":
        seeds = _seeds_in(dialogue, label_set)
    examples = build_examples(
        [dialogue],
        task,
        label_set,
        clues=clues,
        count_tokens=count_tokens,
        history_window=window,
        max_length=max_length,
        seeds=seeds,
    )
    for example in examples:
        if example.meta.get("uid") == uid:
            return example
    raise AssertionError(f"build_examples made no example for {uid}")


def _seeds_in(dialogue: Dialogue, label_set: LabelSet) -> list:
    """Bundled seed rationales that name this dialogue's utterances (a STEeR memory example)."""
    from coe_runtime.data.seeds import load_seeds

    try:
        seeds = load_seeds(label_set.name)
    except (ConfigError, DataError):
        return []
    gold = {u.uid: u.label for u in dialogue.utterances}
    return [s for s in seeds if gold.get(s.uid) == s.label]
