"""Shared helpers for the runtime benchmarks: synthetic ERC-shaped data and a child-process runner
(each variant runs in its own process so its peak memory is its own)."""

from __future__ import annotations

import json
import platform
import random
import resource
import subprocess
import sys
from pathlib import Path

import torch

from coe_runtime.data.dialogue import Example

REPO = Path(__file__).resolve().parent.parent
CUES = {"joy": "great", "anger": "mad", "sadness": "sad", "neutral": "okay"}
WORDS = ["well", "so", "you", "know", "think", "really", "now", "then", "here", "there", "just", "like"]


def synthetic(n: int, seed: int, min_words: int = 4, max_words: int = 200) -> list[Example]:
    """Prompts whose lengths spread widely, like dialogue histories of different depth."""
    rng = random.Random(seed)
    labels = list(CUES)
    out = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))]
        words.insert(rng.randint(0, len(words)), CUES[label])
        prompt = f"Speaker A: {' '.join(words)}. What is the emotion of A? The answer is"
        out.append(Example(f"b{i}", "erc", prompt, f" <{label}>", {"label": label}))
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    """A one-line description of where the numbers come from."""
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.system()} {cpu}, {torch.get_num_threads()} torch thread(s), {gpu}, torch {torch.__version__}"


def run_child(script: str, args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, env=None, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{script} {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
