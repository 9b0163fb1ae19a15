"""STEeR (Self-Taught Emotion Reasoning): one round of the STaR-style loop.

A round runs after its own training step (planned separately, on ``memory-r(N-1)``). This step
loads the round's adapter, writes a rationale + label for every example still in the pool, and
accepts the rationales whose label is right: memory grows, the pool shrinks.

The decision is the pure function :func:`accept` (tested without a model); :func:`run_steer_round`
is the thin I/O layer around it: fetch inputs, generate, accept, publish (manifest last).

Answers are two-phase by default (``answer_mode: score``): a free rationale, then the label with
the highest log-likelihood after prompt + rationale, so every generation has a label. Acceptance
(``accept``): ``scored`` (that label is gold), ``tag`` (the generation closes its rationale in the
gold label tag, ``... <joyful>``) or ``anywhere`` (the gold label anywhere in the text, the
reference's rule); a non-empty rationale always, stored in the seed format ``<rationale> <label>``.
Rationalized rationales (gold hint) are kept only when the rationale alone, after the hint-free
prompt, scores the gold label. Each round also measures a held-out gate slice of the pool with vs
without the rationale and warns when rationales hurt.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coe_runtime.data.answers import SCORE_METHOD, TAG_RE, labels_named, parse_answer
from coe_runtime.data.dialogue import Example, gold_label, read_examples, write_examples
from coe_runtime.data.labels import LabelSet, get_label_set
from coe_runtime.errors import DataError
from coe_runtime.prompts.builder import hint_line, steer_target, with_hint
from coe_runtime.record import publish_step
from coe_runtime.step import GenerationSettings, SteerOptions, SteerRoundStep

# A rationalized answer that mentions the hint it was given.
HINT_LEAK_RE = re.compile(r"\bhint(?:ed|s)?\b|correct emotion is", re.IGNORECASE)
# ... or repeats its wording: this many consecutive words shared with the hint line. Real MELD
# round-2 rationales copied it ("The emotion is neutral; explain why the clues show it.").
HINT_ECHO_WORDS = 4
_WORDS_RE = re.compile(r"[a-z]+")

STOP_POOL_EMPTY = "pool_empty"
STOP_FEW_ACCEPTED = "few_accepted"
STOP_MAX_ROUNDS = "max_rounds"


# --------------------------------------------------------------------------------------------
# Pure logic
# --------------------------------------------------------------------------------------------
def steer_gold(example: Example, label_set: LabelSet, source: str = "pool", line: int | None = None) -> str:
    """A STEeR example's gold label (:func:`coe_runtime.data.dialogue.gold_label`): it must have one."""
    label = gold_label(example, label_set, source, line)
    if label is None:
        raise DataError(
            source,
            line,
            f"example {example.id!r} has no meta.label; expected a STEeR example with its gold label",
        )
    return label


def extract_rationale(text: str, label_set: LabelSet) -> tuple[str, str] | None:
    """``(rationale, label)`` from a generation that ends its reasoning in a label tag.

    The rationale is the text before the *first* tag naming a known label (generation stops at
    the tag; anything after it is dropped), whitespace-collapsed. None when there is no such tag,
    the rationale is empty, or a later tag names a different label (a self-contradicting answer).
    """
    names = {p.lower(): lab for p, lab in zip(label_set.prompt_names, label_set.labels, strict=True)}
    tags = [
        (m, names[m.group(1).strip().lower()])
        for m in TAG_RE.finditer(text)
        if m.group(1).strip().lower() in names
    ]
    if not tags:
        return None
    first, label = tags[0]
    if any(other != label for _, other in tags[1:]):
        return None
    rationale = " ".join(text[: first.start()].split())
    if not rationale:
        return None
    return rationale, label


def contradicts(rationale: str, gold: str, label_set: LabelSet) -> bool:
    """Whether a rationale names an emotion other than ``gold`` (:func:`labels_named`)."""
    return bool(labels_named(rationale, label_set) - {gold})


def memory_target(rationale: str, label: str, label_set: LabelSet) -> str:
    """The memory format the seeds use: ``<rationale> <prompt-name>``."""
    return steer_target(rationale, label, label_set)


def hint_prompt(prompt: str, label: str, label_set: LabelSet) -> str:
    """The prompt with the gold label given as a hint (STaR rationalization); only generation
    sees it, memory keeps the hint-free prompt. The prompt builder reserved room for it."""
    return with_hint(prompt, label_set.to_prompt(label))


def leans_on_hint(rationale: str, prompt_name: str) -> bool:
    """Whether a rationalized rationale mentions its hint or repeats :data:`HINT_ECHO_WORDS`
    consecutive words of the hint line: memory stores the hint-free prompt, so such a rationale
    would teach the model to expect a hint that is never there."""
    if HINT_LEAK_RE.search(rationale):
        return True
    n = HINT_ECHO_WORDS

    def words_of(text: str) -> list[str]:  # a plural "s" dropped: "the clue shows" echoes "the clues show"
        return [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in _WORDS_RE.findall(text.lower())]

    hint = words_of(hint_line(prompt_name))
    grams = {tuple(hint[i : i + n]) for i in range(len(hint) - n + 1)}
    words = words_of(rationale)
    return any(tuple(words[i : i + n]) in grams for i in range(len(words) - n + 1))


def selection_key(round_no: int, example_id: str) -> str:
    """Deterministic, order- and rank-independent tie-break for the per-class cap (a seeded shuffle)."""
    return hashlib.sha256(f"steer-r{round_no}:{example_id}".encode()).hexdigest()


def split_rationale(text: str, label_set: LabelSet) -> str:
    """The rationale of a free generation: the text before its first tag naming a known label
    (generation stops there), or the whole text when it has none; whitespace-collapsed."""
    names = {p.lower() for p in label_set.prompt_names}
    for m in TAG_RE.finditer(text):
        if m.group(1).strip().lower() in names:
            return " ".join(text[: m.start()].split())
    return " ".join(text.split())


def direct_rationale(text: str, gold: str, answer: str | None, label_set: LabelSet, rule: str) -> str | None:
    """The rationale an answer would store under acceptance rule ``rule``, None when not accepted.

    ``tag``: the generation closes its rationale with the gold label's tag; ``anywhere``: the gold
    label is found anywhere in the text (the reference's rule); ``scored``: ``answer`` (the label
    scored after prompt + rationale) is gold. Every rule needs a non-empty rationale.
    """
    if rule == "tag":
        found = extract_rationale(text, label_set)
        return found[0] if found is not None and found[1] == gold else None
    if rule == "anywhere":
        ok = parse_answer(text, label_set).label == gold
    elif rule == "scored":
        ok = answer == gold
    else:
        raise ValueError(f"unknown acceptance rule {rule!r}; expected tag, anywhere or scored")
    rationale = split_rationale(text, label_set)
    return rationale if ok and rationale else None


def select_gate(pool_examples: Sequence[Example], n: int, round_no: int) -> set[str]:
    """The ids of the round's held-out gate slice: ``n`` pool examples (at most half the pool),
    chosen by :func:`selection_key` (independent of pool order and ranks)."""
    size = min(n, len(pool_examples) // 2)
    ranked = sorted(pool_examples, key=lambda ex: selection_key(round_no, f"gate:{ex.id}"))
    return {ex.id for ex in ranked[:size]}


def gate_figures(golds: Sequence[str], with_rationale: Sequence[str | None], without: Sequence[str | None]):
    """Accuracy on the gate slice with the model's rationale vs answering directly."""
    n = len(golds)
    right_with = sum(a == g for a, g in zip(with_rationale, golds, strict=True))
    right_without = sum(a == g for a, g in zip(without, golds, strict=True))
    return {
        "n": n,
        "with_rationale": right_with / n if n else None,
        "without_rationale": right_without / n if n else None,
        "correct_with": right_with,
        "correct_without": right_without,
    }


def gate_warning(gate: Mapping[str, Any] | None) -> str | None:
    """A warning when the round's rationales hurt: fewer right with them than without."""
    if not gate or not gate.get("n") or gate["correct_with"] >= gate["correct_without"]:
        return None
    return (
        f"rationales hurt: on {gate['n']} held-out pool examples the model was right "
        f"{gate['correct_with']} times with its own rationale but {gate['correct_without']} times "
        "answering directly; this round's memory teaches reasoning that does not help yet "
        "(more seeds, more STEeR epochs or a larger model)"
    )


@dataclass
class RoundResult:
    accepted: list[Example]  # new memory entries (hint-free prompts), in pool order
    remaining: list[Example]  # the next pool, in pool order
    records: list[dict[str, Any]]  # one per pool example: what was generated and decided
    per_class: dict[str, dict[str, int]]
    counts: dict[str, int] = field(default_factory=dict)


def accept(
    pool_examples: Sequence[Example],
    generations: Sequence[str],
    label_set: LabelSet,
    options: SteerOptions,
    *,
    round_no: int = 1,
    hint_generations: Mapping[str, str] | None = None,
    scored: Sequence[str | None] | None = None,
    hint_checked: Mapping[str, str | None] | None = None,
    gate_ids: Set[str] = frozenset(),
    consistent: bool = True,
) -> RoundResult:
    """Decide which pool examples join the memory this round.

    ``generations[i]`` is the text generated for ``pool_examples[i]``; with ``options.answer_mode``
    ``score``, ``scored[i]`` is the label scored after its prompt + rationale (the answer; without
    it the label parsed from the text is). ``hint_generations`` maps example id -> text generated
    with the gold label as a hint (only used when ``options.rationalization``); ``hint_checked``
    maps id -> the label scored after the HINT-FREE prompt + that rationale: with
    ``options.rationalization_check`` a rationale whose checked label is not gold is rejected.
    Examples in ``gate_ids`` (the held-out gate slice) are never accepted. With ``consistent``, a
    rationale (direct or rationalized) that names an emotion other than the gold label
    (:func:`contradicts`) is not accepted. Accepted examples keep
    the hint-free prompt. With ``options.max_accept_per_class`` > 0, each class keeps at most that
    many: direct answers before rationalized ones, then by :func:`selection_key`; the rest stay in
    the pool.
    """
    if len(generations) != len(pool_examples):
        raise ValueError(f"{len(generations)} generations for {len(pool_examples)} pool examples")
    if options.answer_mode == "score" and (scored is None or len(scored) != len(pool_examples)):
        raise ValueError("answer_mode 'score' needs one scored label per pool example")
    hint_generations = hint_generations or {}
    hint_checked = hint_checked or {}
    per_class = {
        lab: {"pool": 0, "correct": 0, "accepted": 0, "rationalized": 0, "capped": 0}
        for lab in label_set.labels
    }
    records: list[dict[str, Any]] = []
    candidates: list[tuple[int, int, Example, str]] = []  # (priority, index, example, target)
    for i, (ex, text) in enumerate(zip(pool_examples, generations, strict=True)):
        gold = steer_gold(ex, label_set)
        per_class[gold]["pool"] += 1
        scored_label = scored[i] if scored is not None and options.answer_mode == "score" else None
        rec = _pool_record(ex, text, gold, label_set, options.answer_mode, scored_label)
        per_class[gold]["correct"] += rec["correct"]
        records.append(rec)
        if ex.id in gate_ids:
            rec["gate"] = True
            continue
        candidate = _memory_candidate(
            ex, rec, gold, label_set, options, hint_generations, hint_checked, consistent
        )
        if candidate is not None:
            candidates.append((candidate[0], i, ex, candidate[1]))
    chosen = _capped_per_class(candidates, round_no, options, per_class, records)
    accepted, remaining = _take_chosen(pool_examples, chosen, records, per_class, round_no)
    counts = _round_counts(pool_examples, records, accepted)
    return RoundResult(accepted, remaining, records, per_class, counts)


def _pool_record(
    ex: Example, text: str, gold: str, label_set: LabelSet, answer_mode: str, scored_label: str | None
) -> dict[str, Any]:
    """What was generated for one pool example and what it answers (the scored label in
    ``score`` mode, else the label parsed from the text); the decision fields start unset."""
    parsed = parse_answer(text, label_set)
    if answer_mode == "score":
        answer, answer_method = scored_label, SCORE_METHOD
    else:
        answer, answer_method = parsed.label, parsed.method
    return {
        "id": ex.id,
        "uid": ex.meta.get("uid"),
        "gold": gold,
        "text": text,
        "parsed": parsed.label,
        "method": parsed.method,
        "answer": answer,
        "answer_method": answer_method,
        "correct": answer == gold,
        "accepted": False,
        "via": None,
    }


def _memory_candidate(
    ex: Example,
    rec: dict[str, Any],
    gold: str,
    label_set: LabelSet,
    options: SteerOptions,
    hint_generations: Mapping[str, str],
    hint_checked: Mapping[str, str | None],
    consistent: bool,
) -> tuple[int, str] | None:
    """(priority, memory target) when the example may join the memory: its own rationale reached
    the gold answer (priority 0), or, with rationalization, the hinted one did (priority 1)."""
    rationale = direct_rationale(rec["text"], gold, rec["answer"], label_set, options.accept)
    if rationale is not None and consistent and contradicts(rationale, gold, label_set):
        rec["contradicts"] = True
        rationale = None
    if rationale is not None:
        rec["via"] = "direct"
        return 0, memory_target(rationale, gold, label_set)
    if not (options.rationalization and ex.id in hint_generations):
        return None
    hint_text = hint_generations[ex.id]
    hint_parsed = parse_answer(hint_text, label_set)
    rec.update(hint_text=hint_text, hint_parsed=hint_parsed.label, hint_method=hint_parsed.method)
    # With the hint the scored label is the hint's: the scored rule asks only for a rationale
    # here, and the check (without the hint) decides.
    found = direct_rationale(hint_text, gold, gold, label_set, options.accept)
    if found is None:
        return None
    if leans_on_hint(found, label_set.to_prompt(gold)):
        rec["hint_leaned"] = True
        return None
    if consistent and contradicts(found, gold, label_set):
        rec["hint_contradicts"] = True
        return None
    if ex.id in hint_checked:
        rec["hint_check"] = hint_checked[ex.id]
    if options.rationalization_check and ex.id in hint_checked and hint_checked[ex.id] != gold:
        rec["check_rejected"] = True
        return None
    rec["via"] = "rationalized"
    return 1, memory_target(found, gold, label_set)


def _capped_per_class(
    candidates: list[tuple[int, int, Example, str]],
    round_no: int,
    options: SteerOptions,
    per_class: dict[str, dict[str, int]],
    records: list[dict[str, Any]],
) -> dict[int, str]:
    """Pool index -> memory target of the candidates kept: with ``max_accept_per_class``, each
    class's first ones (direct before rationalized, then by :func:`selection_key`)."""
    chosen: dict[int, str] = {}
    taken: Counter[str] = Counter()
    for _prio, i, ex, target in sorted(candidates, key=lambda c: (c[0], selection_key(round_no, c[2].id))):
        gold = ex.meta["label"]
        if options.max_accept_per_class and taken[gold] >= options.max_accept_per_class:
            per_class[gold]["capped"] += 1
            records[i]["capped"] = True
            continue
        taken[gold] += 1
        chosen[i] = target
    return chosen


def _take_chosen(
    pool_examples: Sequence[Example],
    chosen: dict[int, str],
    records: list[dict[str, Any]],
    per_class: dict[str, dict[str, int]],
    round_no: int,
) -> tuple[list[Example], list[Example]]:
    """(new memory entries, the next pool), both in pool order."""
    accepted: list[Example] = []
    remaining: list[Example] = []
    for i, ex in enumerate(pool_examples):
        if i not in chosen:
            remaining.append(ex)
            continue
        via = records[i]["via"]
        records[i]["accepted"] = True
        records[i]["target"] = chosen[i]
        gold = ex.meta["label"]
        per_class[gold]["accepted"] += 1
        per_class[gold]["rationalized"] += via == "rationalized"
        accepted.append(
            Example(
                ex.id, ex.task, ex.prompt, chosen[i], {**ex.meta, "steer_round": round_no, "steer_via": via}
            )
        )
    return accepted, remaining


def _round_counts(
    pool_examples: Sequence[Example], records: list[dict[str, Any]], accepted: list[Example]
) -> dict[str, int]:
    return {
        "pool_size": len(pool_examples),
        "correct": sum(r["correct"] for r in records),
        "correct_untagged": sum(r["correct"] and r["via"] != "direct" and not r.get("gate") for r in records),
        "accepted": len(accepted),
        "rationalized": sum(r["via"] == "rationalized" for r in records if r["accepted"]),
        "capped": sum(bool(r.get("capped")) for r in records),
        "hint_attempts": sum("hint_text" in r for r in records),
        "check_rejected": sum(bool(r.get("check_rejected")) for r in records),
        # rationales the acceptance rule passed but that name another emotion than the gold one
        "contradicting": sum(bool(r.get("contradicts") or r.get("hint_contradicts")) for r in records),
        # hinted rationales that mention the hint or repeat its wording
        "hint_leaned": sum(bool(r.get("hint_leaned")) for r in records),
        "gate_held_out": sum(bool(r.get("gate")) for r in records),
    }


def rationale_budget_warning(target_lengths: Sequence[int], max_new_tokens: int) -> str | None:
    """A warning when the memory's rationales (the seeds the model was just trained to imitate)
    are longer than the generation limit: a rationale written like them is cut off before its
    answer tag, and an untagged rationale is never accepted. A warning, not an error: a model may
    well write shorter ones (and the quick start keeps the limit short on purpose)."""
    if not target_lengths:
        return None
    lengths = sorted(target_lengths)
    median = lengths[len(lengths) // 2]
    if median <= max_new_tokens:
        return None
    return (
        f"steer.rationaleMaxNewTokens is {max_new_tokens}, but the STEeR memory's rationales are "
        f"{lengths[0]}-{lengths[-1]} tokens long (median {median}) with this model's tokenizer: a "
        "rationale written like them is cut off before its answer tag and cannot be accepted "
        f"(raise steer.rationaleMaxNewTokens to at least {lengths[-1]} if rounds accept nothing)."
    )


def cut_at_limit(
    texts: Sequence[str], new_tokens: Sequence[int], max_new_tokens: int, label_set: LabelSet
) -> int:
    """How many generations stopped at the token limit without reaching an answer tag."""
    return sum(
        1
        for text, n in zip(texts, new_tokens, strict=True)
        if n >= max_new_tokens and extract_rationale(text, label_set) is None
    )


def needs_hint(
    example: Example,
    text: str,
    label_set: LabelSet,
    options: SteerOptions | None = None,
    answer: str | None = None,
    consistent: bool = True,
) -> bool:
    """Whether an example goes to rationalization: its own answer would not be accepted (under
    ``options.accept``, the ``tag`` rule when no options are given; with ``consistent``, a
    rationale that names another emotion is not accepted either)."""
    gold = example.meta["label"]
    rule = options.accept if options is not None else "tag"
    found = direct_rationale(text, gold, answer, label_set, rule)
    return found is None or (consistent and contradicts(found, gold, label_set))


def stopping_rule(
    round_no: int, pool_left: int, accepted: int, options: SteerOptions
) -> tuple[bool, str | None]:
    """``(continue, stop_reason)``: the planner plans round N+1 only when ``continue``."""
    if pool_left == 0:
        return False, STOP_POOL_EMPTY
    if accepted < options.min_accepted:
        return False, STOP_FEW_ACCEPTED
    if round_no >= options.rounds:
        return False, STOP_MAX_ROUNDS
    return True, None


def round_report(
    round_no: int,
    result: RoundResult,
    memory_size: int,
    options: SteerOptions,
    label_set: LabelSet,
    tokens_generated: int = 0,
    seconds: float = 0.0,
    cut_count: int = 0,
    gate: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The figures saved as ``round-N.json``."""
    n = result.counts["pool_size"]
    cont, reason = stopping_rule(round_no, len(result.remaining), len(result.accepted), options)
    return {
        "round": round_no,
        "label_set": label_set.name,
        "pool_size": n,
        "accepted": len(result.accepted),
        "accuracy": (result.counts["correct"] / n) if n else 0.0,
        "correct": result.counts["correct"],
        "correct_untagged": result.counts["correct_untagged"],
        "rationalized": result.counts["rationalized"],
        "hint_attempts": result.counts["hint_attempts"],
        "check_rejected": result.counts.get("check_rejected", 0),
        "contradicting": result.counts.get("contradicting", 0),
        "hint_leaned": result.counts.get("hint_leaned", 0),
        "answer_mode": options.answer_mode,
        "accept_rule": options.accept,
        "gate": dict(gate) if gate else None,
        "capped": result.counts["capped"],
        "cut_at_limit": cut_count,
        "per_class": result.per_class,
        "memory_before": memory_size,
        "memory_size": memory_size + len(result.accepted),
        "pool_left": len(result.remaining),
        "tokens_generated": tokens_generated,
        "seconds": round(seconds, 3),
        "continue": cont,
        "stop_reason": reason,
    }


def format_rounds_table(round_reports: Sequence[Mapping[str, Any]]):
    """A small rich table of per-round figures (one row per ``round-N.json``)."""
    from rich.table import Table

    table = Table(title="STEeR rounds")
    for col in (
        "round",
        "pool",
        "accepted",
        "acc. on pool",
        "rationalized",
        "rej.",
        "contra.",
        "gate w/wo",
        "capped",
        "cut",
        "memory",
        "tokens",
        "time",
        "next",
    ):
        table.add_column(col, justify="right" if col not in ("next",) else "left")
    for r in round_reports:
        nxt = "continue" if r.get("continue") else f"stop ({r.get('stop_reason')})"
        table.add_row(
            str(r["round"]),
            str(r["pool_size"]),
            str(r["accepted"]),
            f"{100 * r['accuracy']:.1f}%",
            str(r["rationalized"]),
            str(r.get("check_rejected", "-")),
            str(r.get("contradicting", "-")),
            _gate_cell(r.get("gate")),
            str(r["capped"]),
            str(r.get("cut_at_limit", "-")),
            str(r["memory_size"]),
            str(r["tokens_generated"]),
            f"{r['seconds']:.1f}s",
            nxt,
        )
    return table


def _gate_cell(gate: Mapping[str, Any] | None) -> str:
    if not gate or not gate.get("n"):
        return "-"
    cell = f"{gate['correct_with']}/{gate['correct_without']} of {gate['n']}"
    return cell + (" (hurt)" if gate_warning(gate) else "")


def per_class_table(report: Mapping[str, Any]):
    """Acceptance per class for one round."""
    from rich.table import Table

    table = Table(title=f"STEeR round {report['round']}: acceptance per class")
    for col in ("label", "pool", "correct", "accepted", "rationalized", "capped"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for label, c in report["per_class"].items():
        table.add_row(label, *(str(c[k]) for k in ("pool", "correct", "accepted", "rationalized", "capped")))
    return table


# --------------------------------------------------------------------------------------------
# I/O: one round as a step
# --------------------------------------------------------------------------------------------
def _load_examples(uri: str, label_set: LabelSet, what: str) -> list[Example]:
    from coe_runtime.store import materialize

    path = materialize(uri)
    if not Path(path).is_file():
        raise DataError(uri, None, f"{what} file not found; expected a published JSONL of STEeR examples")
    examples = read_examples(path)
    for lineno, ex in enumerate(examples, 1):
        steer_gold(ex, label_set, uri, lineno)
    return examples


def _generate(
    generator: Any, prompts: list[str], settings: GenerationSettings, progress_step: str = "steer"
) -> tuple[list[str], list[int]]:
    """The texts and the new-token count of each (done/total/ETA reported while generating)."""
    from coe_runtime import progress

    if not prompts:
        return [], []
    outputs = generator.generate(prompts, settings, on_progress=progress.throttled(progress_step, "steer"))
    if len(outputs) != len(prompts):
        raise RuntimeError(f"generator returned {len(outputs)} outputs for {len(prompts)} prompts")
    return [o.text for o in outputs], [int(o.n_new_tokens) for o in outputs]


def score_labels(
    generator: Any, items: Sequence[tuple[str, str]], label_set: LabelSet, batch_size: int
) -> list[str]:
    """The label scored for each ``(prompt, rationale)``: the highest log-likelihood label tag
    after the prompt and the rationale, as memory targets write it (``<rationale> <joyful>``); an
    empty rationale scores the tag right after the prompt (a direct answer)."""
    from coe_runtime.prompts.builder import answer_texts

    tags = answer_texts(label_set, "tag")
    labels: list[str | None] = [None] * len(items)
    for with_rationale in (True, False):
        idx = [i for i, (_p, r) in enumerate(items) if bool(r) == with_rationale]
        if not idx:
            continue
        prompts = [items[i][0] + items[i][1] if with_rationale else items[i][0] for i in idx]
        answers = [f" {t}" for t in tags] if with_rationale else tags
        outs = generator.score(prompts, answers, batch_size)
        for i, out in zip(idx, outs, strict=True):
            labels[i] = label_set.labels[out.best]
    return labels  # type: ignore[return-value]


def round_settings(step: SteerRoundStep) -> GenerationSettings:
    """The step's generation settings, stopping at the label tag (a rationale ends there)."""
    return step.generation.model_copy(update={"stop_at_label": True})


def write_round_outputs(
    out_dir: Path, round_no: int, memory: list[Example], result: RoundResult, report: dict
) -> None:
    """Every file of a round into ``out_dir`` (published together afterwards, manifest last)."""
    import json

    new_memory = memory + result.accepted
    write_examples(out_dir / f"memory-r{round_no}.jsonl", new_memory)
    write_examples(out_dir / f"pool-r{round_no}.jsonl", result.remaining)
    (out_dir / "generations.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records), encoding="utf-8"
    )
    # The reference implementation's files, {"input", "target"} per line.
    (out_dir / "memory.json").write_text(
        "".join(ex.to_reference() + "\n" for ex in new_memory), encoding="utf-8"
    )
    (out_dir / "train4infer.json").write_text(
        "".join(ex.to_reference() + "\n" for ex in result.remaining), encoding="utf-8"
    )
    (out_dir / f"round-{round_no}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _make_generator(step: SteerRoundStep, label_set: LabelSet) -> Any:
    from coe_runtime.models.generate import Generator

    # label_names: generation stops at a tag naming one of THIS dataset's labels.
    return Generator.load(step.base_model, step.adapter, label_names=label_set.prompt_names)


def run_steer_round(step: SteerRoundStep, generator: Any = None, console: Any = None) -> dict[str, Any]:
    """Run one STEeR round; returns the round report (``round-N.json``).

    A round whose manifest is published is never redone (the stored report comes back with
    ``"skipped": true``). Nothing is published until the end, so a round that died half-way is
    redone from its inputs. Under torchrun every rank generates its shard (inside the
    generator) and rank 0 decides and publishes. Every generator call is collective: each rank
    makes the same calls in the same order.
    """
    from coe_runtime.distributed import init_distributed
    from coe_runtime.progress import is_rank_zero, report
    from coe_runtime.store import get_store

    store = get_store(step.output)
    n = step.round
    init_distributed()
    label_set = get_label_set(
        step.label_set.name, step.label_set.naming, step.label_set.custom_prompt_names or None
    )
    memory = _load_examples(step.memory, label_set, "memory")
    pool = _load_examples(step.pool, label_set, "pool")
    generator = generator if generator is not None else _make_generator(step, label_set)
    settings = round_settings(step)
    warnings: list[str] = []

    def warn(warning: str | None) -> None:
        if warning:
            warnings.append(warning)
            report(step=step.name, phase="steer", message=f"warning: {warning}")

    warn(_memory_budget_warning(generator, memory, settings.max_new_tokens))
    started = time.monotonic()

    report(
        step=step.name,
        phase="steer",
        message=f"round {n}: generating rationales for {len(pool)} pool examples",
    )
    texts, new_tokens = _generate(generator, [ex.prompt for ex in pool], settings, step.name)
    tokens = sum(new_tokens)
    cut = cut_at_limit(texts, new_tokens, settings.max_new_tokens, label_set)
    opts = step.steer
    batch = settings.batch_size
    rationales = [split_rationale(text, label_set) for text in texts]
    scored: list[str | None] | None = None
    if opts.answer_mode == "score":
        # Phase two: every generation gets a label, scored after prompt + its rationale.
        scored = list(
            score_labels(
                generator, [(ex.prompt, r) for ex, r in zip(pool, rationales, strict=True)], label_set, batch
            )
        )
    gate_ids = select_gate(pool, opts.gate_examples, n)
    gate = _gate(generator, pool, gate_ids, rationales, scored, label_set, batch) if gate_ids else None
    warn(gate_warning(gate))
    hint_texts: dict[str, str] = {}
    hint_checked: dict[str, str | None] = {}
    if opts.rationalization:
        hint_texts, hint_checked, hint_tokens = _rationalize(
            step, generator, pool, texts, gate_ids, scored, label_set, settings
        )
        tokens += hint_tokens

    result = accept(
        pool,
        texts,
        label_set,
        opts,
        round_no=n,
        hint_generations=hint_texts,
        scored=scored,
        hint_checked=hint_checked,
        gate_ids=gate_ids,
        consistent=step.consistent,
    )
    summary = round_report(
        n, result, len(memory), opts, label_set, tokens, time.monotonic() - started, cut_count=cut, gate=gate
    )
    summary["step"] = step.name
    summary["consistent"] = step.consistent
    summary["warnings"] = warnings
    if not is_rank_zero():
        return summary
    with tempfile.TemporaryDirectory(prefix=f"steer-r{n}-") as tmp:
        write_round_outputs(Path(tmp), n, memory, result, summary)
        scalars = {k: v for k, v in summary.items() if v is None or isinstance(v, bool | int | float | str)}
        publish_step(step, tmp, meta={**scalars, "kind": "steer_round", "round": n})
    _print_round(step, store, summary, console)
    report(
        step=step.name, phase="steer", message=f"round {n}: accepted {summary['accepted']}", done=1, total=1
    )
    return summary


def _memory_budget_warning(generator: Any, memory: list[Example], max_new_tokens: int) -> str | None:
    """:func:`rationale_budget_warning` on the memory's targets, counted with the generator's
    tokenizer (none: no warning)."""
    tokenizer = getattr(generator, "tokenizer", None)
    if tokenizer is None:
        return None
    lengths = [len(tokenizer(ex.target, add_special_tokens=False)["input_ids"]) for ex in memory if ex.target]
    return rationale_budget_warning(lengths, max_new_tokens)


def _gate(
    generator: Any,
    pool: list[Example],
    gate_ids: set[str],
    rationales: list[str],
    scored: list[str | None] | None,
    label_set: LabelSet,
    batch: int,
) -> dict[str, Any]:
    """The gate's figures: on the held-out slice, the label scored with each example's own
    rationale (already scored in ``score`` mode) against the one scored answering directly."""
    at = [i for i, ex in enumerate(pool) if ex.id in gate_ids]
    with_r = (
        [scored[i] for i in at]
        if scored is not None
        else score_labels(generator, [(pool[i].prompt, rationales[i]) for i in at], label_set, batch)
    )
    without = score_labels(generator, [(pool[i].prompt, "") for i in at], label_set, batch)
    return gate_figures([pool[i].meta["label"] for i in at], with_r, without)


def _rationalize(
    step: SteerRoundStep,
    generator: Any,
    pool: list[Example],
    texts: list[str],
    gate_ids: set[str],
    scored: list[str | None] | None,
    label_set: LabelSet,
    settings: GenerationSettings,
) -> tuple[dict[str, str], dict[str, str | None], int]:
    """STaR rationalization: the examples that need a hint, generated again with the gold label as
    one; returns (id -> hinted text, id -> label the check scored, tokens generated).

    Every rank holds every output (the generator gathers them), so every rank picks the same
    examples to retry and the hinted generation stays a collective call."""
    from coe_runtime.progress import report

    opts = step.steer
    retry = [
        ex
        for i, (ex, text) in enumerate(zip(pool, texts, strict=True))
        if ex.id not in gate_ids
        and needs_hint(ex, text, label_set, opts, scored[i] if scored else None, step.consistent)
    ]
    report(step=step.name, phase="steer", message=f"round {step.round}: rationalizing {len(retry)} examples")
    hinted, hint_tokens = _generate(
        generator,
        [hint_prompt(ex.prompt, ex.meta["label"], label_set) for ex in retry],
        settings,
        step.name,
    )
    hint_texts = {ex.id: text for ex, text in zip(retry, hinted, strict=True)}
    hint_checked: dict[str, str | None] = {}
    if opts.rationalization_check:
        # The check: does the rationale alone (the hint-free prompt, as memory stores it) lead
        # the model to the gold label?
        check = [(ex, split_rationale(text, label_set)) for ex, text in zip(retry, hinted, strict=True)]
        check = [(ex, r) for ex, r in check if r]
        labels = score_labels(generator, [(ex.prompt, r) for ex, r in check], label_set, settings.batch_size)
        hint_checked = {ex.id: lab for (ex, _r), lab in zip(check, labels, strict=True)}
    return hint_texts, hint_checked, sum(hint_tokens)


def _print_round(step: SteerRoundStep, store: Any, summary: dict[str, Any], console: Any) -> None:
    """The run so far (earlier rounds published beside this one, steps named steer-rK, then this
    one) and this round's per-class table."""
    from coe_runtime.store import join

    if console is None:
        from rich.console import Console

        console = Console()
    earlier = [
        store.read_json(join(prefix, f"round-{k}.json")) for k, prefix in enumerate(step.previous_rounds, 1)
    ]
    console.print(format_rounds_table([*earlier, summary]))
    console.print(per_class_table(summary))
