"""A synthetic paired test set for the quality runner's statistics: gold labels, two arms'
predictions (each right with its own rate, otherwise a random label or unparsed) and each
utterance's dialogue."""

from __future__ import annotations

import random

LABELS = ["neutral", "joy", "anger", "sadness"]


def paired_sample(
    n_dialogues: int = 60, size: int = 8, seed: int = 1, right_a: float = 0.6, right_b: float = 0.6
) -> tuple[list[str], list[str | None], list[str | None], list[str]]:
    rng = random.Random(seed)
    groups = [f"meld-test-d{d}" for d in range(n_dialogues) for _ in range(size)]
    gold = [rng.choice(LABELS) for _ in groups]
    a = [g if rng.random() < right_a else rng.choice([*LABELS, None]) for g in gold]
    b = [g if rng.random() < right_b else rng.choice([*LABELS, None]) for g in gold]
    return gold, a, b, groups
