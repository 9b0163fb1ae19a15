"""Label sets per dataset, with the names used in prompts mapped back to the dataset's own labels.

Metrics are always computed on the dataset's own label set (stated in ``metrics.json``);
prompt names are only what the model reads and writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from coe_runtime.errors import ConfigError


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: tuple[str, ...]  # the dataset's own spelling, in a fixed order
    prompt_names: tuple[str, ...]  # same order: what prompts and rationales use

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.prompt_names):
            raise ConfigError(f"label set {self.name}: labels and prompt names differ in length")
        if len({p.lower() for p in self.prompt_names}) != len(self.prompt_names):
            raise ConfigError(f"label set {self.name}: prompt names must be unique (case-insensitive)")

    def to_prompt(self, label: str) -> str:
        return self.prompt_names[self.labels.index(label)]

    def from_prompt(self, name: str) -> str:
        lowered = [p.lower() for p in self.prompt_names]
        return self.labels[lowered.index(name.lower())]

    def with_prompt_names(self, names: dict[str, str]) -> LabelSet:
        """Rename some labels for prompts: ``{"joy": "joyful"}``."""
        unknown = sorted(set(names) - set(self.labels))
        if unknown:
            raise ConfigError(f"label set {self.name}: unknown labels {unknown}; known: {list(self.labels)}")
        return LabelSet(
            self.name,
            self.labels,
            tuple(names.get(lab, p) for lab, p in zip(self.labels, self.prompt_names, strict=True)),
        )

    def to_dict(self) -> dict:
        return {"name": self.name, "labels": list(self.labels), "prompt_names": list(self.prompt_names)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelSet:
        return cls(d["name"], tuple(d["labels"]), tuple(d["prompt_names"]))


MELD = LabelSet(
    "meld",
    ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"),
    ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"),
)
# The spelling InstructERC / CoE use in prompts for MELD.
MELD_COE_NAMES = {"sadness": "sad", "joy": "joyful", "anger": "angry"}

EMORYNLP = LabelSet(
    "emorynlp",
    ("Joyful", "Mad", "Neutral", "Peaceful", "Powerful", "Sad", "Scared"),
    ("joyful", "mad", "neutral", "peaceful", "powerful", "sad", "scared"),
)

IEMOCAP = LabelSet(
    "iemocap",
    ("happy", "sad", "neutral", "angry", "excited", "frustrated"),
    ("happy", "sad", "neutral", "angry", "excited", "frustrated"),
)

# The bundled demo data uses MELD's seven emotions.
DEMO = LabelSet("demo", MELD.labels, MELD.prompt_names)

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
