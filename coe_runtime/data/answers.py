"""Extract the label from generated text, and say how it was found.

Always against the dataset's own label set (the reference parsed EmoryNLP against MELD's), in
this order; the first rule that finds something decides, and its name is the parse method:

1. ``tag``: the last ``<word>`` tag naming a label (prompt name, dataset spelling or synonym);
2. ``label``: the first whole-word prompt name anywhere in the text (``... so she is joyful``);
3. ``synonym``: the first whole-word synonym (``joy``, ``happy``, EmoryNLP's ``angry`` for Mad);
4. ``fuzzy``: a *short* answer only (at most :data:`FUZZY_MAX_WORDS` words, say ``joyfull``, or
   the last tag's content, ``... <joyfull>``) whose word is within one or two edits of one
   label's words, starting with the same letter (ties between labels: unparsed);
5. ``none``: unparsed, ``label`` None (scored as wrong; a rationale is never fuzzy-matched).

Words are matched case-insensitively and whole (``unhappy`` is not ``happy``, ``madness`` not
``mad``). ``fuzzy`` and ``none`` are the fallbacks metrics count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from rapidfuzz.distance import Levenshtein

from coe_runtime.data.labels import LabelSet

TAG_RE = re.compile(r"<\s*([A-Za-z][A-Za-z _-]*?)\s*>")
PARSE_METHODS = ("tag", "label", "synonym", "fuzzy", "none")
# Not a parse: score decoding (coe_runtime.evaluate) picks the label by likelihood, nothing to parse.
SCORE_METHOD = "score"
FALLBACK_METHODS = ("fuzzy", "none")
FUZZY_MAX_WORDS = 3  # longer answers are sentences: never edit-distance matched
FUZZY_MIN_CHARS = 3  # "ok", "no" are not misspelt labels
WORD_RE = re.compile(r"[a-z]+(?:[-'][a-z]+)*")


@dataclass(frozen=True)
class ParsedAnswer:
    label: str | None  # dataset's own spelling; None when unparsed (method "none")
    method: str  # one of PARSE_METHODS


@lru_cache(maxsize=64)
def _vocabulary(
    label_set: LabelSet,
) -> tuple[dict[str, str], dict[str, str], re.Pattern | None, re.Pattern | None]:
    names, synonyms = label_set.vocabulary()
    return names, synonyms, _word_re(names), _word_re(synonyms)


def _word_re(vocab: dict[str, str]) -> re.Pattern | None:
    """Any of the words, whole (no letter on either side); longest first where two start together."""
    if not vocab:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(vocab, key=lambda w: (-len(w), w)))
    return re.compile(rf"(?<![a-z])(?:{alternatives})(?![a-z])")


def _first_word(lowered: str, vocab: dict[str, str], pattern: re.Pattern | None) -> str | None:
    m = pattern.search(lowered) if pattern is not None else None
    return vocab[m.group(0)] if m else None


def _fuzzy_budget(word: str) -> int:
    """Edits allowed between an answer word and a label word: 1, or 2 from 7 letters on."""
    return 1 if len(word) < 7 else 2


def _fuzzy(lowered: str, vocab: dict[str, str]) -> str | None:
    """The label whose word is nearest to a word of a short answer; None when the answer is long,
    nothing is near enough, or two labels are equally near."""
    words = WORD_RE.findall(lowered)
    if not words or len(words) > FUZZY_MAX_WORDS:
        return None
    candidates = [w for w in words if len(w) >= FUZZY_MIN_CHARS]
    if len(words) > 1:
        candidates.append(" ".join(words))
    best_distance: int | None = None
    best_labels: set[str] = set()
    for cand in candidates:
        for word, lab in vocab.items():
            if word[0] != cand[0]:  # "madness" is no misspelt "sadness"
                continue
            budget = _fuzzy_budget(max(cand, word, key=len))
            d = Levenshtein.distance(cand, word, score_cutoff=budget)
            if d > budget:
                continue
            if best_distance is None or d < best_distance:
                best_distance, best_labels = d, {lab}
            elif d == best_distance:
                best_labels.add(lab)
    return next(iter(best_labels)) if len(best_labels) == 1 else None


def labels_named(text: str, label_set: LabelSet) -> frozenset[str]:
    """Every label the text names: in a tag, or as a whole word (prompt name, dataset spelling or
    synonym). What a rationale says the emotion is, wherever it says it; no fuzzy matching."""
    names, synonyms, names_re, synonyms_re = _vocabulary(label_set)
    every = {**synonyms, **names}
    found = {every[n] for m in TAG_RE.finditer(text) if (n := " ".join(m.group(1).split()).lower()) in every}
    lowered = text.lower()
    for vocab, pattern in ((names, names_re), (synonyms, synonyms_re)):
        if pattern is not None:
            found.update(vocab[m.group(0)] for m in pattern.finditer(lowered))
    return frozenset(found)


def parse_answer(text: str, label_set: LabelSet) -> ParsedAnswer:
    names, synonyms, names_re, synonyms_re = _vocabulary(label_set)
    every = {**synonyms, **names}
    tags = list(TAG_RE.finditer(text))
    for m in reversed(tags):
        name = " ".join(m.group(1).split()).lower()
        if name in every:
            return ParsedAnswer(every[name], "tag")
    lowered = text.lower()
    for vocab, pattern, method in ((names, names_re, "label"), (synonyms, synonyms_re, "synonym")):
        found = _first_word(lowered, vocab, pattern)
        if found is not None:
            return ParsedAnswer(found, method)
    found = _fuzzy(lowered, every)
    if found is None and tags:
        found = _fuzzy(tags[-1].group(1).lower(), every)
    if found is not None:
        return ParsedAnswer(found, "fuzzy")
    return ParsedAnswer(None, "none")
