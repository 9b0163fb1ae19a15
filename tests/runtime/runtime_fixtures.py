"""Synthetic ERC-shaped examples for the runtime tests (no dataset text: generated words only)."""

from __future__ import annotations

import random
from pathlib import Path

from coe_runtime.data.dialogue import Example, write_examples

# A cue word per emotion: the tiny model can learn the mapping in a few dozen steps.
CUES = {"joy": "great", "anger": "mad", "sadness": "sad", "neutral": "okay"}
FILLER = ["well", "so", "you", "know", "think", "really", "now", "then", "here", "there", "just", "like"]


def synthetic_examples(n: int, seed: int = 0, task: str = "erc", prefix: str = "ex") -> list[Example]:
    rng = random.Random(seed)
    labels = list(CUES)
    out = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 30))]
        words.insert(rng.randint(0, len(words)), CUES[label])
        prompt = f"Speaker A: {' '.join(words)}. What is the emotion of A? The answer is"
        out.append(
            Example(
                f"{prefix}-{i}",
                task,
                prompt,
                f" <{label}>",
                {"uid": f"u{i}", "dialogue_id": f"d{i}", "label": label},
            )
        )
    return out


def write_synthetic(path: Path, n: int, seed: int = 0, prefix: str = "ex") -> Path:
    write_examples(path, synthetic_examples(n, seed, prefix=prefix))
    return path
