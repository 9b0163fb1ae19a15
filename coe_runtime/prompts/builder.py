"""Prompt builder: one dialogue + a target index + clues -> the prompt text of one task.

Every prompt has the same sections, in this order::

    <task instruction>
    ### Personas        (persona clue per speaker, when a clue file is given)
    ### Scene           (scene clue, when given)
    ### Dialogue so far (the k previous utterances, with speakers)
    ### Target utterance  (ERC, STEeR, speaker-ID; role-play asks for the next line instead)
    ### Question        (with the label options / candidate speakers and the answer format)
    ### Answer        (``### Answer:`` for ERC in the ``word`` label format: the answer follows on that line)

Token budget: prompt + target (+ the STaR hint for STEeR) must fit ``max_length`` tokens as
counted by ``count_tokens``. When it does not, the builder drops the OLDEST history utterance
first, one at a time; when no history is left it shortens the clues (every clue capped at the
same number of words, the largest cap that fits; cap 0 removes them). The instruction, the target
utterance, the question and the answer format are never cut: if they alone do not fit, it raises
:class:`PromptBudgetError` saying how many tokens they need. (The reference cut prompts from the
right, which could cut off the question.) ``max_length`` below :data:`coe_runtime.step.MIN_MAX_LENGTH` is refused.
Output is a pure function of the inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from coe_runtime.data.clue_file import Clues
from coe_runtime.data.dialogue import Dialogue, Utterance
from coe_runtime.data.labels import LabelSet
from coe_runtime.errors import ConfigError, DataError
from coe_runtime.step import HISTORY_WINDOW, MAX_LENGTH, MIN_MAX_LENGTH

PROMPT_TASKS = ("erc", "steer", "roleplay", "speaker_id")
# How the ERC answer is written (coe_runtime.step.LabelFormat): ``tag`` = ``<joy>``, ``word`` = `` joy``.
LABEL_FORMATS = ("tag", "word")
ANSWER_HEADER = "### Answer\n"
# The ERC answer header in the ``word`` label format: the answer follows on the same line, so its
# leading space is natural text ("Answer: joy"). After a newline a pretrained model puts almost no
# mass on a space-led word (SmolLM2: ~0 against ~0.2 after the colon), and without the space the
# labels split into pieces again.
WORD_ANSWER_HEADER = "### Answer:"
TRUNCATION_MARK = "…"

CountTokens = Callable[[str], int]
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """A cheap, deterministic token estimate: words and punctuation marks (close to BPE for English)."""
    return len(_TOKEN_RE.findall(text))


class PromptBudgetError(DataError):
    """The parts that must never be cut do not fit ``max_length``."""

    def __init__(self, path: str, line: int | None, message: str, required: int, uid: str = ""):
        self.required = required
        self.uid = uid
        super().__init__(path, line, message)


@dataclass(frozen=True)
class BuiltPrompt:
    text: str
    n_tokens: int  # prompt + target (+ reserved hint), as counted
    history_shown: int
    history_dropped: int  # dropped for the budget (not counting those outside the window)
    clue_word_cap: int | None  # None: clues in full; N: every clue cut to N words (0: clues removed)


def clean(text: str) -> str:
    """One line, single spaces: the form utterances and clues take in prompts and targets."""
    return " ".join(text.split())


def _instruction(task: str) -> str:
    if task == "roleplay":
        return "Continue the conversation in character, using the clues and the dialogue so far."
    if task == "speaker_id":
        return "Decide who said the target utterance, using the clues and the conversation."
    return "Name the emotion of the target utterance, using the clues and the conversation."


def _check_format(label_format: str) -> None:
    if label_format not in LABEL_FORMATS:
        raise ConfigError(f"unknown label format {label_format!r}; expected one of {list(LABEL_FORMATS)}")


def _question(
    task: str, speaker: str, label_set: LabelSet, candidates: list[str], label_format: str = "tag"
) -> str:
    options = ", ".join(label_set.prompt_names)
    if task == "erc":
        answer = (
            "Answer with one option in angle brackets, like <option>."
            if label_format == "tag"
            else "Answer with one option, as a single word."
        )
        return f"Which emotion does {speaker} express in the target utterance? Options: {options}.\n{answer}"
    if task == "steer":
        return (
            f"Which emotion does {speaker} express in the target utterance? Options: {options}.\n"
            "Explain briefly which clues (persona, scene, what was just said) show it, "
            "then end with the option in angle brackets, like <option>."
        )
    if task == "roleplay":
        return f"What does {speaker} say next? Write only {speaker}'s next line."
    if task == "speaker_id":
        return (
            f"Who said the target utterance? Candidates: {', '.join(candidates)}.\nAnswer with the name only."
        )
    raise ConfigError(f"unknown prompt task {task!r}; expected one of {list(PROMPT_TASKS)}")


def hint_line(prompt_name: str) -> str:
    return f"Hint: the correct emotion is <{prompt_name}>; explain why the clues show it.\n"


def with_hint(prompt: str, prompt_name: str) -> str:
    """The STaR rationalization variant of a STEeR prompt: the gold label given as a hint.

    Inserted just before the answer header, so a steer round can derive it from the hint-free
    prompt it stores (the budget already reserved room for the longest hint).
    """
    at = prompt.rfind(ANSWER_HEADER)
    if at < 0:
        raise ConfigError("with_hint: the prompt has no '### Answer' section; is it a STEeR prompt?")
    return prompt[:at] + hint_line(prompt_name) + prompt[at:]


def _cap_words(text: str, cap: int | None) -> str:
    if cap is None:
        return text
    words = text.split()
    return text if len(words) <= cap else " ".join(words[:cap]) + TRUNCATION_MARK


def _render(
    task: str,
    dialogue: Dialogue,
    index: int,
    history_start: int,
    label_set: LabelSet,
    clues: Clues | None,
    cap: int | None,
    candidates: list[str],
    label_format: str = "tag",
) -> str:
    target = dialogue.utterances[index]
    history = dialogue.utterances[history_start:index]
    parts = [_instruction(task) + "\n"]
    if clues is not None and cap != 0:
        parts += _clue_sections(task, dialogue, index, history, clues, cap, candidates)
    if history:
        parts.append("### Dialogue so far\n" + "".join(f"{u.speaker}: {clean(u.text)}\n" for u in history))
    if task in ("erc", "steer"):
        parts.append(f"### Target utterance\n{target.speaker}: {clean(target.text)}\n")
    elif task == "speaker_id":
        parts.append(f"### Target utterance\n{clean(target.text)}\n")
    parts.append(
        "### Question\n" + _question(task, target.speaker, label_set, candidates, label_format) + "\n"
    )
    parts.append(WORD_ANSWER_HEADER if task == "erc" and label_format == "word" else ANSWER_HEADER)
    return "\n".join(parts)


def _clue_sections(
    task: str,
    dialogue: Dialogue,
    index: int,
    history: list[Utterance],
    clues: Clues,
    cap: int | None,
    candidates: list[str],
) -> list[str]:
    """The Personas section (the people on stage) and the Scene section, clues cut to ``cap`` words."""
    target = dialogue.utterances[index]
    sections = []
    persona_lines = []
    for person in _people_on_stage(task, history, target, candidates):
        text = clues.persona(dialogue.dialogue_id, person, dialogue.split, uid=target.uid)
        if text:
            persona_lines.append(f"- {person}: {_cap_words(clean(text), cap)}\n")
    if persona_lines:
        sections.append("### Personas\n" + "".join(persona_lines))
    scene = clues.scene(dialogue.dialogue_id, dialogue.split)
    if scene:
        sections.append(f"### Scene\n{_cap_words(clean(scene), cap)}\n")
    return sections


def _people_on_stage(
    task: str, history: list[Utterance], target: Utterance, candidates: list[str]
) -> list[str]:
    """Shown speakers and the target's, in order of appearance (all candidates for speaker-ID)."""
    if task == "speaker_id":
        return candidates
    seen: dict[str, None] = {}
    for u in [*history, target]:
        for s in u.speakers:
            seen.setdefault(s, None)
    return list(seen)


def speaker_candidates(dialogue: Dialogue) -> list[str]:
    """Speaker-ID options: each distinct speaker string of the dialogue, in order of appearance."""
    seen: dict[str, None] = {}
    for u in dialogue.utterances:
        seen.setdefault(u.speaker, None)
    return list(seen)


def build_prompt(
    dialogue: Dialogue,
    index: int,
    task: str,
    label_set: LabelSet,
    clues: Clues | None = None,
    *,
    target: str = "",
    history_window: int = HISTORY_WINDOW,
    max_length: int = MAX_LENGTH,
    count_tokens: CountTokens | None = None,
    hint_label: str | None = None,
    label_format: str = "tag",
) -> BuiltPrompt:
    """The prompt for utterance ``index`` of ``dialogue``; ``target`` is counted in the budget.

    ``hint_label`` (dataset's own label, STEeR only) adds the STaR rationalization hint.
    ``label_format`` (ERC only) picks the answer instruction: ``tag`` (``<option>``) or ``word``.
    """
    _check_prompt_request(dialogue, index, task, history_window, max_length, hint_label, label_format)
    count = count_tokens or estimate_tokens
    candidates = speaker_candidates(dialogue) if task == "speaker_id" else []
    extra = _reserved_tokens(task, target, label_set, count)

    def finish(text: str, n: int, start: int, cap: int | None) -> BuiltPrompt:
        if hint_label is not None:
            text = with_hint(text, label_set.to_prompt(hint_label))
        window_start = max(0, index - history_window)
        return BuiltPrompt(text, n, index - start, start - window_start, cap)

    def size(start: int, cap: int | None) -> tuple[str, int]:
        text = _render(task, dialogue, index, start, label_set, clues, cap, candidates, label_format)
        return text, count(text) + extra

    # 1. Drop the oldest history utterances first: the earliest start that fits (binary search;
    #    fewer utterances never need more tokens). Most prompts fit whole: one count.
    window_start = max(0, index - history_window)
    text, n = size(window_start, None)
    if n <= max_length:
        return finish(text, n, window_start, None)
    fit = _earliest_fitting_start(lambda start: size(start, None), window_start + 1, index, max_length)
    if fit is not None:
        return finish(fit[0], fit[1], fit[2], None)
    # 2. No history left: shorten clues, the largest common word cap that fits (binary search).
    if clues is not None:
        longest = _longest_clue_words(dialogue, index, clues, candidates, task)
        best = _largest_fitting_cap(lambda cap: size(index, cap), longest, max_length)
        if best is not None:
            return finish(best[0], best[1], index, best[2])
    # 3. The uncuttable parts alone do not fit.
    needed = size(index, 0)[1]
    u = dialogue.utterances[index]
    raise PromptBudgetError(
        dialogue.source or dialogue.dialogue_id,
        u.source_line,
        f"utterance {u.uid} ({task}): the instruction, target utterance, question and answer need {needed} tokens "
        f"but max_length is {max_length}; raise dataset.max_length to at least {needed}",
        required=needed,
        uid=u.uid,
    )


def _check_prompt_request(
    dialogue: Dialogue,
    index: int,
    task: str,
    history_window: int,
    max_length: int,
    hint_label: str | None,
    label_format: str,
) -> None:
    _check_format(label_format)
    if task not in PROMPT_TASKS:
        raise ConfigError(f"unknown prompt task {task!r}; expected one of {list(PROMPT_TASKS)}")
    if max_length < MIN_MAX_LENGTH:
        raise ConfigError(
            f"max_length {max_length} is below the minimum {MIN_MAX_LENGTH} tokens a prompt needs"
        )
    if history_window < 0:
        raise ConfigError(f"history_window must be >= 0, got {history_window}")
    if not 0 <= index < len(dialogue.utterances):
        raise ConfigError(f"dialogue {dialogue.dialogue_id}: no utterance at index {index}")
    if hint_label is not None and task != "steer":
        raise ConfigError("hint_label is only for STEeR prompts (STaR rationalization)")


def _reserved_tokens(task: str, target: str, label_set: LabelSet, count: CountTokens) -> int:
    """Room for the target, and for STEeR the longest possible hint, so the hinted prompt fits too."""
    extra = count(target) if target else 0
    if task == "steer":
        extra += max(count(hint_line(p)) for p in label_set.prompt_names)
    return extra


def _earliest_fitting_start(
    size: Callable[[int], tuple[str, int]], lo: int, hi: int, max_length: int
) -> tuple[str, int, int] | None:
    """(text, tokens, start) of the earliest history start in ``lo..hi`` whose prompt fits, by
    binary search (a later start never needs more tokens); None when none fits."""
    fit = None
    while lo <= hi:
        mid = (lo + hi) // 2
        text, n = size(mid)
        if n <= max_length:
            fit, hi = (text, n, mid), mid - 1
        else:
            lo = mid + 1
    return fit


def _largest_fitting_cap(
    size: Callable[[int], tuple[str, int]], hi: int, max_length: int
) -> tuple[str, int, int] | None:
    """(text, tokens, cap) of the largest clue word cap in ``0..hi`` whose prompt fits, by binary
    search; None when even cap 0 (no clues) does not fit."""
    lo = 0
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        text, n = size(mid)
        if n <= max_length:
            best = (text, n, mid)
            lo = mid + 1
        else:
            hi = mid - 1
    return best


def _longest_clue_words(
    dialogue: Dialogue, index: int, clues: Clues, candidates: list[str], task: str
) -> int:
    target = dialogue.utterances[index]
    texts = [clues.scene(dialogue.dialogue_id, dialogue.split) or ""]
    people = candidates if task == "speaker_id" else list(target.speakers)
    texts += [clues.persona(dialogue.dialogue_id, p, dialogue.split, uid=target.uid) or "" for p in people]
    return max(len(t.split()) for t in texts)


def required_length(
    dialogue: Dialogue,
    index: int,
    task: str,
    label_set: LabelSet,
    *,
    target: str = "",
    count_tokens: CountTokens | None = None,
    label_format: str = "tag",
) -> int:
    """Tokens the never-cut parts of this prompt (+ target) need: the smallest workable max_length."""
    _check_format(label_format)
    count = count_tokens or estimate_tokens
    candidates = speaker_candidates(dialogue) if task == "speaker_id" else []
    text = _render(task, dialogue, index, index, label_set, None, 0, candidates, label_format)
    extra = count(target) if target else 0
    if task == "steer":
        extra += max(count(hint_line(p)) for p in label_set.prompt_names)
    return count(text) + extra


def erc_target(label: str, label_set: LabelSet, label_format: str = "tag") -> str:
    """The ERC answer in ``label_format``: the label's prompt name in angle brackets (``tag``,
    ``<joyful>``) or as a plain word after a space (``word``, `` joyful``: the space makes it one
    whole word for BPE tokenizers, which split the tag into meaningless pieces; the prompt then
    ends in :data:`WORD_ANSWER_HEADER`, so the answer reads ``### Answer: joyful``)."""
    _check_format(label_format)
    name = label_set.to_prompt(label)
    return f"<{name}>" if label_format == "tag" else f" {name}"


def answer_texts(label_set: LabelSet, label_format: str = "tag") -> list[str]:
    """The ERC answer of every label of the set, in the set's order (what score decoding compares)."""
    return [erc_target(label, label_set, label_format) for label in label_set.labels]


def steer_target(rationale: str, label: str, label_set: LabelSet) -> str:
    """A STEeR answer: the rationale, then the label tag (``... <joyful>``)."""
    return f"{clean(rationale)} {erc_target(label, label_set)}"
