"""Task builders: dialogues (+ clues, + seeds) -> uniform :class:`coe_runtime.data.dialogue.Example` lists.

=========== ==================================================== ===========================
task        prompt                                               target
=========== ==================================================== ===========================
erc         clues + history + target utterance + label options   ``<prompt_name>`` (label_format
                                                                 ``word``: `` prompt_name``)
roleplay    clues + history, "what does X say next?"             the speaker's actual line
speaker_id  clues + history + target text + candidate speakers   the speaker's name
steer       as erc, asking for a rationale first                 memory: rationale + `` <prompt_name>``;
                                                                 pool: empty (gold in ``meta.label``)
=========== ==================================================== ===========================

Every example's id is ``f"{task}:{uid}"``; ``meta`` carries uid, dialogue_id, split, speaker,
label (the dataset's own spelling), label_set, and the prompt's token count.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from coe_runtime.data.clue_file import Clues
from coe_runtime.data.dialogue import TASKS, Dialogue, Example
from coe_runtime.data.labels import LabelSet
from coe_runtime.data.seeds import Seed
from coe_runtime.errors import ConfigError, DataError
from coe_runtime.prompts.builder import (
    CountTokens,
    PromptBudgetError,
    build_prompt,
    clean,
    erc_target,
    steer_target,
)
from coe_runtime.step import HISTORY_WINDOW, MAX_LENGTH

MEMORY = "memory"
POOL = "pool"


def _meta(d: Dialogue, index: int, label_set: LabelSet, built) -> dict:
    u = d.utterances[index]
    return {
        "uid": u.uid,
        "dialogue_id": d.dialogue_id,
        "split": d.split,
        "index": index,
        "speaker": u.speaker,
        "label": u.label,
        "label_set": label_set.name,
        "n_tokens": built.n_tokens,
        "history_shown": built.history_shown,
        "history_dropped": built.history_dropped,
        "clue_word_cap": built.clue_word_cap,
    }


class _BudgetFailures:
    """Collects every utterance whose uncuttable prompt parts exceed max_length, so one error
    names them all and the max_length that would fit every one (not just the first)."""

    def __init__(self, task: str, max_length: int):
        self.task, self.max_length = task, max_length
        self.errors: list[PromptBudgetError] = []

    def build(self, *args, **kwargs):
        try:
            return build_prompt(*args, **kwargs)
        except PromptBudgetError as e:
            self.errors.append(e)
            return None

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        if len(self.errors) == 1:
            raise self.errors[0]
        worst = max(self.errors, key=lambda e: e.required)
        raise PromptBudgetError(
            worst.path,
            worst.line,
            f"{len(self.errors)} {self.task} prompts do not fit max_length {self.max_length} even without history "
            f"and clues (the instruction, target utterance, question and answer are never cut); the longest is "
            f"utterance {worst.uid} with {worst.required} tokens: raise dataset.max_length to at least {worst.required}",
            required=worst.required,
            uid=worst.uid,
        )


def _check_labels(dialogues: Sequence[Dialogue], label_set: LabelSet) -> None:
    for d in dialogues:
        for u in d.utterances:
            if u.label not in label_set.labels:
                raise DataError(
                    d.source or d.dialogue_id,
                    u.source_line,
                    f"utterance {u.uid}: label {u.label!r} is not in label set {label_set.name!r}; "
                    f"expected one of {list(label_set.labels)}",
                )


def build_examples(
    dialogues: Sequence[Dialogue],
    task: str,
    label_set: LabelSet,
    clues: Clues | None = None,
    count_tokens: CountTokens | None = None,
    history_window: int = HISTORY_WINDOW,
    max_length: int = MAX_LENGTH,
    seeds: Sequence[Seed] | None = None,
    label_format: str = "tag",
) -> list[Example]:
    """Examples of one task for every utterance of ``dialogues`` (in order).

    ``label_format`` shapes the ERC answer (prompt instruction and target); STEeR rationales always
    end in a tag (it marks where the rationale ends). For ``steer`` the result is the memory (one per seed, ``meta.steer_set == "memory"``) followed by
    the pool (every other utterance, ``"pool"``); see :func:`build_steer_sets`.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    _check_labels(dialogues, label_set)
    if task == "steer":
        if seeds is None:
            raise ConfigError("the steer task needs seed rationales (seeds=load_seeds(...))")
        memory, pool = build_steer_sets(
            dialogues, label_set, seeds, clues, count_tokens, history_window, max_length
        )
        return memory + pool
    out = []
    budget = _BudgetFailures(task, max_length)
    for d in dialogues:
        for i, u in enumerate(d.utterances):
            if task == "erc":
                target = erc_target(u.label, label_set, label_format)
            elif task == "roleplay":
                target = clean(u.text)
            else:
                target = u.speaker
            built = budget.build(
                d,
                i,
                task,
                label_set,
                clues,
                target=target,
                history_window=history_window,
                max_length=max_length,
                count_tokens=count_tokens,
                label_format=label_format if task == "erc" else "tag",
            )
            if built is not None:
                out.append(
                    Example(f"{task}:{u.uid}", task, built.text, target, _meta(d, i, label_set, built))
                )
    budget.raise_if_any()
    return out


def build_steer_sets(
    dialogues: Sequence[Dialogue],
    label_set: LabelSet,
    seeds: Sequence[Seed],
    clues: Clues | None = None,
    count_tokens: CountTokens | None = None,
    history_window: int = HISTORY_WINDOW,
    max_length: int = MAX_LENGTH,
) -> tuple[list[Example], list[Example]]:
    """STEeR round 0: (memory from the seeds, pool of every other utterance of ``dialogues``).

    Every seed must name an utterance of ``dialogues`` whose gold label equals the seed's label.
    """
    _check_labels(dialogues, label_set)
    where = {u.uid: (d, i) for d in dialogues for i, u in enumerate(d.utterances)}
    by_uid = {}
    for s in seeds:
        if s.uid not in where:
            raise DataError(
                s.source or "seed file",
                s.line or None,
                f"seed uid {s.uid!r} is not an utterance of the {len(where)} training utterances given; "
                "seeds must name training utterances (check the dataset format and split)",
            )
        d, i = where[s.uid]
        if d.utterances[i].label != s.label:
            raise DataError(
                s.source or "seed file",
                s.line or None,
                f"seed uid {s.uid!r} says label {s.label!r} but the data says {d.utterances[i].label!r}",
            )
        by_uid[s.uid] = s
    memory: list[Example] = []
    pool: list[Example] = []
    budget = _BudgetFailures("steer", max_length)
    for d in dialogues:
        for i, u in enumerate(d.utterances):
            seed = by_uid.get(u.uid)
            target = steer_target(seed.rationale, u.label, label_set) if seed else ""
            built = budget.build(
                d,
                i,
                "steer",
                label_set,
                clues,
                target=target,
                history_window=history_window,
                max_length=max_length,
                count_tokens=count_tokens,
            )
            if built is None:
                continue
            meta = _meta(d, i, label_set, built) | {"steer_set": MEMORY if seed else POOL}
            (memory if seed else pool).append(Example(f"steer:{u.uid}", "steer", built.text, target, meta))
    budget.raise_if_any()
    return memory, pool


def _allocate(counts: dict[str, int], n: int) -> dict[str, int]:
    """Split ``n`` over groups in proportion to their sizes (largest remainder), at least one per
    group when ``n`` allows it, never more than a group holds."""
    total = sum(counts.values())
    keys = sorted(counts)
    raw = {k: n * counts[k] / total for k in keys}
    quota = {k: min(counts[k], int(raw[k])) for k in keys}
    if n >= len(keys):
        for k in keys:
            quota[k] = max(quota[k], 1)
    # Hand out what is left by largest remainder; take back from the biggest quotas if over.
    by_remainder = sorted(keys, key=lambda k: (-(raw[k] - int(raw[k])), k))
    while sum(quota.values()) < n:
        progressed = False
        for k in by_remainder:
            if sum(quota.values()) >= n:
                break
            if quota[k] < counts[k]:
                quota[k] += 1
                progressed = True
        if not progressed:
            break
    while sum(quota.values()) > n:
        k = max(keys, key=lambda k: (quota[k], k))
        quota[k] -= 1
    return quota


def subset_examples(examples: Sequence[Example], n: int, seed: int = 0, key: str = "label") -> list[Example]:
    """A stratified (by ``meta[key]``), fixed-seed subset of ``n`` examples, in the original order.

    ``n`` <= 0 or ``n`` >= len(examples) returns every example.
    """
    if n <= 0 or n >= len(examples):
        return list(examples)
    groups: dict[str, list[int]] = defaultdict(list)
    for pos, ex in enumerate(examples):
        groups[str(ex.meta.get(key))].append(pos)
    quota = _allocate({k: len(v) for k, v in groups.items()}, n)
    rng = random.Random(seed)
    chosen: list[int] = []
    for k in sorted(groups):
        chosen += rng.sample(groups[k], quota[k])
    return [examples[pos] for pos in sorted(chosen)]


def subset_dialogues(
    dialogues: Sequence[Dialogue], n: int, seed: int = 0, keep_uids: set[str] | frozenset[str] = frozenset()
) -> list[Dialogue]:
    """``n`` dialogues chosen with a fixed seed, in the original order; dialogues holding one of
    ``keep_uids`` (seed rationales) are always kept. ``n`` <= 0 keeps all."""
    if n <= 0 or n >= len(dialogues):
        return list(dialogues)
    must = [pos for pos, d in enumerate(dialogues) if any(u.uid in keep_uids for u in d.utterances)]
    rest = [pos for pos in range(len(dialogues)) if pos not in set(must)]
    rng = random.Random(seed)
    extra = rng.sample(rest, max(0, n - len(must)))
    return [dialogues[pos] for pos in sorted(must + extra)]
