"""``coe-ctl data check`` and ``coe-ctl data preview``: look at a dataset before any training.

``check`` reads every split with the same readers a pod uses and reports counts per split, labels,
speakers, dialogue lengths, prompt-length percentiles for a tokenizer and history window, and the
problems it finds. ``preview`` renders one example's prompt and target with its token count.
A file that cannot be read raises ``DataError`` (one ``file:line: what was expected`` line, exit 2).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from coe_runtime.data.dialogue import TASKS
from coe_runtime.data.labels import BUILTIN
from coe_runtime.data.readers import FORMATS, ReadNotes, bundled_demo_path, normalize_split
from coe_runtime.data_report import (
    NO_TOKENIZER,
    build_preview,
    load_clues_for,
    load_dataset,
    resolve_files,
    resolve_label_set,
    select_utterance,
    summarize,
    token_counter,
)
from coe_runtime.errors import ConfigError
from coe_runtime.prepare import PERCENTILES
from coe_runtime.step import HISTORY_WINDOW, MAX_LENGTH, MIN_MAX_LENGTH

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
        "--window",
        type=int,
        default=HISTORY_WINDOW,
        help=f"history window: previous utterances shown (default {HISTORY_WINDOW})",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=MAX_LENGTH,
        help=f"prompt + target token budget (default {MAX_LENGTH})",
    )
    parser.add_argument("--clues", default=None, help="clue file (personas, scenes) to include in prompts")


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _check_budget(args: argparse.Namespace) -> None:
    if args.window < 0:
        raise ConfigError(f"--window must be >= 0, got {args.window}")
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

    console = Console(highlight=False)
    splits = report["splits"]
    prompt = report["prompt"]
    console.print(
        f"[bold]{report['path']}[/bold]  format {report['format']}, label set {report['label_set']}"
    )

    for split, s in splits.items():
        console.print(f"  {split}: {', '.join(s['files'])}", markup=False)
    console.print(_splits_table(splits))
    console.print(_labels_table(report["labels"], splits))
    console.print(_prompt_tokens_table(prompt, splits))
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


def _splits_table(splits: dict[str, Any]) -> Any:
    from rich.table import Table

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
    return overview


def _labels_table(label_names: list[str], splits: dict[str, Any]) -> Any:
    """Each label's count and share per split."""
    from rich.table import Table

    labels = Table(title="Labels")
    labels.add_column("label")
    for split in splits:
        labels.add_column(split, justify="right")
    for label in label_names:
        cells = []
        for s in splits.values():
            n = s["labels"][label]
            cells.append(f"{n} ({100 * n / s['utterances']:.1f}%)" if s["utterances"] else "0")
        labels.add_row(label, *cells)
    return labels


def _prompt_tokens_table(prompt: dict[str, Any], splits: dict[str, Any]) -> Any:
    """Percentiles of the ERC prompt + target length per split, and how many exceed the budget."""
    from rich.table import Table

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
    return tokens


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


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
