"""Label sets per dataset, with the names used in prompts mapped back to the dataset's own labels.

Metrics are always computed on the dataset's own label set (stated in ``metrics.json``);
prompt names are only what the model reads and writes. Each set also lists, per label, the
common synonyms and inflections an answer may use instead (``joy`` / ``happy`` for MELD's joy,
``angry`` for EmoryNLP's Mad): :mod:`coe_runtime.data.answers` reads them, as whole words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coe_runtime.errors import ConfigError


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: tuple[str, ...]  # the dataset's own spelling, in a fixed order
    prompt_names: tuple[str, ...]  # same order: what prompts and rationales use
    # Same order again: other words an answer may name each label by (lower case); may be empty.
    synonyms: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.prompt_names):
            raise ConfigError(f"label set {self.name}: labels and prompt names differ in length")
        if len({p.lower() for p in self.prompt_names}) != len(self.prompt_names):
            raise ConfigError(f"label set {self.name}: prompt names must be unique (case-insensitive)")
        if self.synonyms and len(self.synonyms) != len(self.labels):
            raise ConfigError(f"label set {self.name}: labels and synonyms differ in length")
        owner: dict[str, str] = {}
        for lab, words in zip(self.labels, self.synonyms or [()] * len(self.labels), strict=True):
            for word in (lab, *words):
                if owner.setdefault(word.lower(), lab) != lab:
                    raise ConfigError(
                        f"label set {self.name}: {word!r} names both {owner[word.lower()]!r} and {lab!r}"
                    )

    def vocabulary(self) -> tuple[dict[str, str], dict[str, str]]:
        """``(names, synonyms)``, each lower-cased word -> label (dataset spelling). ``names`` are
        the prompt names; ``synonyms`` the dataset's own spelling where it differs and the listed
        synonyms, less any word that is some label's prompt name (prompt names win)."""
        names = {p.lower(): lab for p, lab in zip(self.prompt_names, self.labels, strict=True)}
        synonyms: dict[str, str] = {}
        for lab, words in zip(self.labels, self.synonyms or [()] * len(self.labels), strict=True):
            for word in (lab, *words):
                if word.lower() not in names:
                    synonyms[word.lower()] = lab
        return names, synonyms

    def to_prompt(self, label: str) -> str:
        return self.prompt_names[self.labels.index(label)]

    def with_prompt_names(self, names: dict[str, str]) -> LabelSet:
        """Rename some labels for prompts: ``{"joy": "joyful"}``."""
        unknown = sorted(set(names) - set(self.labels))
        if unknown:
            raise ConfigError(f"label set {self.name}: unknown labels {unknown}; known: {list(self.labels)}")
        return LabelSet(
            self.name,
            self.labels,
            tuple(names.get(lab, p) for lab, p in zip(self.labels, self.prompt_names, strict=True)),
            self.synonyms,
        )

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "name": self.name,
            "labels": list(self.labels),
            "prompt_names": list(self.prompt_names),
        }
        if self.synonyms:
            d["synonyms"] = {lab: list(words) for lab, words in zip(self.labels, self.synonyms, strict=True)}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LabelSet:
        labels = tuple(d["labels"])
        if "synonyms" in d:
            synonyms = synonyms_table(labels, d["synonyms"], d["name"])
        elif d["name"] in BUILTIN and BUILTIN[d["name"]].labels == labels:
            synonyms = BUILTIN[d["name"]].synonyms
        else:
            synonyms = ()
        return cls(d["name"], labels, tuple(d["prompt_names"]), synonyms)


def synonyms_table(
    labels: tuple[str, ...], table: Mapping[str, tuple[str, ...] | list[str]], name: str
) -> tuple[tuple[str, ...], ...]:
    """``{label: words}`` -> :attr:`LabelSet.synonyms` (label order; a label left out has none)."""
    unknown = sorted(set(table) - set(labels))
    if unknown:
        raise ConfigError(f"label set {name}: synonyms for unknown labels {unknown}; known: {list(labels)}")
    return tuple(tuple(w.lower() for w in table.get(lab, ())) for lab in labels)


# Synonyms: words a model answering in plain English uses for the label. Whole words only, so
# "unhappy" never reads as "happy"; a word may name one label of a set, never two.
_MELD_LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
MELD_SYNONYMS = {
    "surprise": ("surprised", "surprising", "shocked", "astonished", "amazed"),
    "fear": ("fearful", "scared", "afraid", "frightened", "terrified"),
    "sadness": ("sad", "unhappy", "sorrow", "sorrowful", "depressed", "heartbroken"),
    "joy": ("joyful", "joyous", "happy", "happiness", "glad", "delighted", "cheerful", "excited"),
    "disgust": ("disgusted", "disgusting", "revolted"),
    "anger": ("angry", "mad", "furious", "rage", "enraged", "annoyed", "irritated"),
}
MELD = LabelSet("meld", _MELD_LABELS, _MELD_LABELS, synonyms_table(_MELD_LABELS, MELD_SYNONYMS, "meld"))
# The spelling InstructERC / CoE use in prompts for MELD.
MELD_COE_NAMES = {"sadness": "sad", "joy": "joyful", "anger": "angry"}

# Willcox's feeling wheel: Scared also covers anxious / nervous, Mad frustrated.
_EMORYNLP_LABELS = ("Joyful", "Mad", "Neutral", "Peaceful", "Powerful", "Sad", "Scared")
EMORYNLP_SYNONYMS = {
    "Joyful": ("joy", "joyous", "happy", "happiness", "glad", "delighted", "cheerful", "excited"),
    "Mad": ("angry", "anger", "furious", "rage", "annoyed", "irritated", "frustrated"),
    "Peaceful": ("peace", "calm", "relaxed", "serene"),
    "Powerful": ("power", "confident", "confidence", "proud", "pride", "empowered"),
    "Sad": ("sadness", "unhappy", "sorrow", "sorrowful", "depressed", "heartbroken"),
    "Scared": ("scare", "fear", "fearful", "afraid", "frightened", "terrified", "anxious", "nervous"),
}
EMORYNLP = LabelSet(
    "emorynlp",
    _EMORYNLP_LABELS,
    ("joyful", "mad", "neutral", "peaceful", "powerful", "sad", "scared"),
    synonyms_table(_EMORYNLP_LABELS, EMORYNLP_SYNONYMS, "emorynlp"),
)

_IEMOCAP_LABELS = ("happy", "sad", "neutral", "angry", "excited", "frustrated")
IEMOCAP_SYNONYMS = {
    "happy": ("happiness", "joy", "joyful", "joyous", "glad", "delighted", "cheerful"),
    "sad": ("sadness", "unhappy", "sorrow", "sorrowful", "depressed", "heartbroken"),
    "angry": ("anger", "mad", "furious", "rage", "enraged"),
    "excited": ("excitement", "exciting", "thrilled", "enthusiastic"),
    "frustrated": ("frustration", "frustrating", "annoyed", "irritated"),
}
IEMOCAP = LabelSet(
    "iemocap",
    _IEMOCAP_LABELS,
    _IEMOCAP_LABELS,
    synonyms_table(_IEMOCAP_LABELS, IEMOCAP_SYNONYMS, "iemocap"),
)

# The bundled demo data uses MELD's seven emotions.
DEMO = LabelSet("demo", MELD.labels, MELD.prompt_names, MELD.synonyms)

BUILTIN: dict[str, LabelSet] = {ls.name: ls for ls in (MELD, EMORYNLP, IEMOCAP, DEMO)}


def get_label_set(name: str, naming: str = "dataset", custom: dict[str, str] | None = None) -> LabelSet:
    """``naming``: ``dataset`` (own spelling, lower-cased for prompts) or ``coe`` (InstructERC/CoE spelling)."""
    if name not in BUILTIN:
        raise ConfigError(f"unknown label set {name!r}; expected one of {sorted(BUILTIN)}")
    ls = BUILTIN[name]
    if naming == "coe" and name in ("meld", "demo"):
        ls = ls.with_prompt_names(MELD_COE_NAMES)
    elif naming not in ("dataset", "coe"):
        raise ConfigError(f"unknown label naming {naming!r}; expected 'dataset' or 'coe'")
    if custom:
        ls = ls.with_prompt_names(custom)
    return ls
