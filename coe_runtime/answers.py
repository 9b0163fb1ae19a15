"""Extract the label from generated text, and say how it was found.

Order: the last ``<label>`` tag naming a known label; else the first whole-word label
name in the text; else the label nearest by edit distance (a *fallback*, counted in metrics).
Always against the dataset's own label set (the reference parsed EmoryNLP against MELD's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from coe_runtime.labels import LabelSet

TAG_RE = re.compile(r"<\s*([A-Za-z][A-Za-z _-]*?)\s*>")
FALLBACK_METHODS = ("fuzzy", "none")


@dataclass(frozen=True)
class ParsedAnswer:
    label: str | None  # dataset's own spelling; None only when the output is empty
    method: str  # tag | word | fuzzy | none

    @property
    def is_fallback(self) -> bool:
        return self.method in FALLBACK_METHODS


def parse_answer(text: str, label_set: LabelSet) -> ParsedAnswer:
    names = {p.lower(): lab for p, lab in zip(label_set.prompt_names, label_set.labels, strict=True)}
    for m in reversed(list(TAG_RE.finditer(text))):
        name = m.group(1).strip().lower()
        if name in names:
            return ParsedAnswer(names[name], "tag")
    lowered = text.lower()
    best: tuple[int, str] | None = None
    for name, lab in names.items():
        m = re.search(rf"(?<![a-z]){re.escape(name)}(?![a-z])", lowered)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), lab)
    if best is not None:
        return ParsedAnswer(best[1], "word")
    candidate = lowered.strip().strip("<>").strip()
    if not candidate:
        return ParsedAnswer(None, "none")
    # Nearest label by edit distance to the whole answer (ties: label-set order).
    nearest = min(names, key=lambda n: (Levenshtein.distance(candidate, n), list(names).index(n)))
    return ParsedAnswer(names[nearest], "fuzzy")
