"""``coe-ctl data check`` and ``coe-ctl data preview``: look at a dataset before any training.

``check`` reads every split with the same readers a pod uses and reports counts per split, labels,
speakers, dialogue lengths, prompt-length percentiles for a tokenizer and history window, and the
problems it finds. ``preview`` renders one example's prompt and target with its token count.
A file that cannot be read raises ``DataError`` (one ``file:line: what was expected`` line, exit 2).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from coe_runtime.data import SPLITS, TASKS, Dialogue
from coe_runtime.errors import ConfigError, DataError
from coe_runtime.labels import BUILTIN, LabelSet, get_label_set
from coe_runtime.readers import (
    DEFAULT_LABEL_SET,
    FORMATS,
    ReadNotes,
    bundled_demo_path,
    find_split_files,
    normalize_split,
    read_file,
)

CountTokens = Callable[[str], int]
NO_TOKENIZER = "estimate"  # words + punctuation marks, when no --tokenizer is given
PERCENTILES = (50, 90, 99)
EXIT_PROBLEMS = 2


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data",
        help="check a dataset's files or preview a rendered prompt",
        description="Read benchmark files the way a training pod does, and report what is in them.",
    )
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    check = actions.add_parser(
        "check",
        help="counts, labels, speakers, dialogue and prompt lengths, and problems",
        description="Counts per split, labels, speakers, dialogue lengths, prompt-length percentiles for a "
        "tokenizer and history window, and any problems found. Exit 2 when a file cannot be read "
        "(or, with --strict, when any problem is found).",
    )
    _common_arguments(check)
    check.add_argument(
        "--output", choices=("table", "json"), default="table", help="output form (default: table)"
    )
    check.add_argument("--strict", action="store_true", help="exit 2 when any problem is found")
    check.set_defaults(func=run_check)

    preview = actions.add_parser(
        "preview",
        help="print one rendered prompt + target and its token count",
        description="Render the prompt and target of one utterance for a task, with its token count.",
    )
    _common_arguments(preview)
    which = preview.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, default=0, help="utterance number within --split (default 0)")
    which.add_argument("--uid", help="utterance id, e.g. meld-train-d0-u3 or s01_e15_c01_u001")
    preview.add_argument("--split", default=None, help="train|dev|test (default: the first split found)")
    preview.add_argument(
        "--task", choices=TASKS, default="erc", help="task whose example to render (default erc)"
    )
    preview.add_argument(
        "--output", choices=("text", "json"), default="text", help="output form (default: text)"
    )
    preview.set_defaults(func=run_preview)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        nargs="?",
        default=None,
        help="a data file, or a folder holding the split files (omit for --format demo: the bundled data)",
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="how to read the files")
    parser.add_argument(
        "--label-set",
        choices=sorted(BUILTIN),
        default=None,
        help="labels the data must use (default: the format's own; required for jsonl)",
    )
    parser.add_argument(
        "--label-naming",
        choices=("dataset", "coe"),
        default="dataset",
        help="label names in prompts: the dataset's own or the CoE/InstructERC spelling",
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="count prompt tokens with this model's tokenizer: 'tiny', 'smollm2-135m-gguf', a local "
        "path or a model id (default: a words+punctuation estimate)",
    )
    parser.add_argument(
        "--window", type=int, default=12, help="history window: previous utterances shown (default 12)"
    )
    parser.add_argument(
        "--max-length", type=int, default=1400, help="prompt + target token budget (default 1400)"
    )
    parser.add_argument("--clues", default=None, help="clue file (personas, scenes) to include in prompts")


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
        from coe_runtime.prompts import estimate_tokens

        return [estimate_tokens(t) for t in texts]


def token_counter(tokenizer: str | None) -> TokenCounter:
    if tokenizer is None:
        return TokenCounter(NO_TOKENIZER)
    from coe_runtime.models import load_tokenizer  # transformers only when asked for
    from coe_runtime.step import ModelRef

    tok = load_tokenizer(ModelRef(name_or_path=tokenizer))

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    return TokenCounter(tokenizer, count, getattr(tok, "backend_tokenizer", None))


def load_clues_for(path: str | None, fmt: str):
    """The clue file named, or for the bundled demo data its bundled clues; None otherwise."""
    from coe_runtime.clue_file import DEMO_CLUES, load_clues

    if path is not None:
        return load_clues(path), str(path)
    if fmt == "demo" and DEMO_CLUES.is_file():
        return load_clues(DEMO_CLUES), "bundled demo clues"
    return None, None


# --------------------------------------------------------------------------------------------
# Pure summaries
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile: always one of the observed values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def length_summary(values: Sequence[int]) -> dict[str, int]:
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
    from coe_runtime.prompts import build_prompt, erc_target

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
    ordered = sorted(lengths)
    out: dict[str, Any] = {f"p{p}": percentile(ordered, p) for p in PERCENTILES}
    out["max"] = ordered[-1]
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
    names: dict[str, set[str]] = {}
    for dialogues in splits.values():
        for d in dialogues:
            for u in d.utterances:
                for s in u.speakers:
                    names.setdefault(" ".join(s.split()).lower(), set()).add(s)
    variants = sorted(sorted(v) for v in names.values() if len(v) > 1)
    if variants:
        problems.append(
            f"{len(variants)} speaker name(s) are spelled several ways (case/spacing), e.g. {variants[0]}: "
            "personas and speaker-ID candidates treat them as different people"
        )
    return problems


def summarize(
    splits: dict[str, list[Dialogue]],
    label_set: LabelSet,
    *,
    counter: TokenCounter | None = None,
    window: int = 12,
    max_length: int = 1400,
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


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _check_budget(args: argparse.Namespace) -> None:
    if args.window < 0:
        raise ConfigError(f"--window must be >= 0, got {args.window}")
    from coe_runtime.prompts import MIN_MAX_LENGTH

    if args.max_length < MIN_MAX_LENGTH:
        raise ConfigError(f"--max-length must be at least {MIN_MAX_LENGTH}, got {args.max_length}")


def run_check(args: argparse.Namespace) -> int:
    _check_budget(args)
    label_set = resolve_label_set(args.label_set, args.format, args.label_naming)
    files = resolve_files(args.path, args.format)
    notes = ReadNotes()
    splits = load_dataset(files, args.format, label_set, notes)
    clues, clue_source = load_clues_for(args.clues, args.format)
    report = summarize(
        splits,
        label_set,
        counter=token_counter(args.tokenizer),
        window=args.window,
        max_length=args.max_length,
        clues=clues,
        notes=notes,
    )
    report = {"path": str(args.path or bundled_demo_path()), "format": args.format, **report}
    report["prompt"]["clues"] = clue_source
    if args.output == "json":
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(report)
    return EXIT_PROBLEMS if args.strict and report["problems"] else 0


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    splits = report["splits"]
    prompt = report["prompt"]
    console.print(
        f"[bold]{report['path']}[/bold]  format {report['format']}, label set {report['label_set']}"
    )

    for split, s in splits.items():
        console.print(f"  {split}: {', '.join(s['files'])}", markup=False)
    overview = Table(title="Splits")
    columns = ("split", "dialogues", "utterances", "speakers", "multi-speaker", "turns min", "median", "max")
    for column in columns:
        overview.add_column(column, justify="left" if column == "split" else "right")
    for split, s in splits.items():
        turns = s["dialogue_length"]
        overview.add_row(
            split,
            str(s["dialogues"]),
            str(s["utterances"]),
            str(s["speakers"]),
            str(s["multi_speaker_utterances"]),
            str(turns["min"]),
            _num(turns["median"]),
            str(turns["max"]),
        )
    console.print(overview)

    labels = Table(title="Labels")
    labels.add_column("label")
    for split in splits:
        labels.add_column(split, justify="right")
    for label in report["labels"]:
        cells = []
        for s in splits.values():
            n = s["labels"][label]
            cells.append(f"{n} ({100 * n / s['utterances']:.1f}%)" if s["utterances"] else "0")
        labels.add_row(label, *cells)
    console.print(labels)

    clue_text = f", clues: {prompt['clues']}" if prompt.get("clues") else ""
    tokens = Table(
        title=f"ERC prompt + target tokens ({prompt['tokenizer']}, window {prompt['window']}{clue_text})",
    )
    for column in (
        "split",
        *(f"p{p}" for p in PERCENTILES),
        "max",
        f"> {prompt['max_length']}",
        "cannot fit",
    ):
        tokens.add_column(column, justify="left" if column == "split" else "right")
    for split, s in splits.items():
        t = s["prompt_tokens"]
        tokens.add_row(
            split,
            *(str(t[f"p{p}"]) for p in PERCENTILES),
            str(t["max"]),
            str(t["over_max_length"]),
            str(t["cannot_fit"]),
        )
    console.print(tokens)
    if prompt["tokenizer"] == NO_TOKENIZER:
        console.print("token counts are estimates (words + punctuation); pass --tokenizer for exact counts")

    for note in report["notes"]:
        console.print(f"note: {note}")
    if report["problems"]:
        console.print(f"[bold]{len(report['problems'])} problem(s):[/bold]")
        for problem in report["problems"]:
            console.print(f"  - {problem}")
    else:
        console.print("no problems found")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


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
    window: int = 12,
    max_length: int = 1400,
    clues=None,
):
    """The task example of utterance ``index`` (tasks.build_examples on its dialogue)."""
    from coe_runtime.tasks import build_examples

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
    from coe_runtime.seeds import load_seeds

    try:
        seeds = load_seeds(label_set.name)
    except (ConfigError, DataError):
        return []
    gold = {u.uid: u.label for u in dialogue.utterances}
    return [s for s in seeds if gold.get(s.uid) == s.label]


def run_preview(args: argparse.Namespace) -> int:
    _check_budget(args)
    label_set = resolve_label_set(args.label_set, args.format, args.label_naming)
    files = resolve_files(args.path, args.format)
    if args.split is not None and args.uid is None:
        split = normalize_split(args.split)
        if split not in files:
            raise ConfigError(f"no {split} split here; found {list(files)}")
        files = {split: files[split]}
    splits = load_dataset(files, args.format, label_set)
    dialogue, index = select_utterance(splits, args.split, args.index, args.uid)
    clues, _ = load_clues_for(args.clues, args.format)
    counter = token_counter(args.tokenizer)
    example = build_preview(
        dialogue,
        index,
        args.task,
        label_set,
        count_tokens=counter.count,
        window=args.window,
        max_length=args.max_length,
        clues=clues,
    )
    if args.output == "json":
        print(json.dumps({"tokenizer": counter.name, **example.__dict__}, indent=2, ensure_ascii=False))
        return 0
    from rich.console import Console
    from rich.rule import Rule

    console = Console(highlight=False)
    meta = example.meta
    console.print(Rule(f"{example.id}  ({dialogue.split}, dialogue {dialogue.dialogue_id})"))
    console.print(example.prompt, markup=False)
    console.print(Rule("target"))
    console.print(example.target or "(empty: a STEeR pool example, answered by the model)", markup=False)
    console.print(Rule())
    dropped = meta.get("history_dropped", 0)
    console.print(
        f"{meta.get('n_tokens')} tokens (prompt + target, {counter.name}); max length {args.max_length}; "
        f"history shown {meta.get('history_shown')}, dropped for the budget {dropped}",
        markup=False,
    )
    return 0
