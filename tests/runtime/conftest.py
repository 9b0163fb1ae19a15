"""Runtime test fixtures: synthetic example files and one small trained adapter per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.runtime_fixtures import write_synthetic


def train_config(out: Path, train: Path, **overrides) -> dict:
    optim = {
        "epochs": 3,
        "learning_rate": 3e-3,
        "per_device_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "gradient_checkpointing": False,
        "max_length": 128,
    }
    optim.update(overrides.pop("optim", {}))
    cfg = {
        "kind": "train",
        "name": "runtime-test",
        "output": str(out),
        "train_files": [str(train)],
        "label_set": {"name": "meld"},
        "lora": {"modules_to_save": ["embed_tokens", "lm_head"]},
        "optim": optim,
        "generation": {"max_new_tokens": 6, "batch_size": 8},
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def synthetic_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("synthetic")
    return {
        "train": write_synthetic(d / "train.jsonl", 64, seed=0, prefix="tr"),
        "dev": write_synthetic(d / "dev.jsonl", 12, seed=1, prefix="dev"),
        "test": write_synthetic(d / "test.jsonl", 13, seed=2, prefix="te"),
    }


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synthetic_files) -> dict:
    """One short LoRA run (with dev evaluation) shared by the tests that need an adapter."""
    from coe_runtime.step import parse_step
    from coe_runtime.train import run_train

    out = tmp_path_factory.mktemp("trained") / "out"
    cfg = train_config(out, synthetic_files["train"], eval_file=str(synthetic_files["dev"]))
    summary = run_train(parse_step(cfg))
    return {"out": out, "summary": summary, "config": cfg}
