"""A 3-round STEeR run on the demo data with the tiny model (CPU), planned by the real planner.

prepare -> [steer-rN-train (on memory-r(N-1)) -> steer-rN] x 3, file:// store in tmp_path.
Also the regression test for the reference's bug 1: the memory training reads IS the grown
memory, and the LR schedule is sized for it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from coe_controller.planner import observe_rounds, plan
from coe_controller.spec import parse_spec

from coe_runtime.data.answers import parse_answer
from coe_runtime.data.dialogue import read_examples
from coe_runtime.data.labels import get_label_set
from coe_runtime.driver import run_step
from coe_runtime.prepare import run_prepare
from coe_runtime.steer import run_steer_round
from coe_runtime.store import MANIFEST, FileStore
from coe_runtime.train import run_train
from tests.support.layout import output_dir

pytestmark = pytest.mark.slow

ROUNDS = 3
EPOCHS = 1
BATCH = 4
LR = 0.003


def spec_for(store: str, **steer):
    return parse_spec(
        {
            "apiVersion": "coe.ml/v1alpha1",
            "kind": "CoEExperiment",
            "metadata": {"name": "steer-loop"},
            "spec": {
                "dataset": {
                    "format": "demo",
                    "labelSet": {"name": "demo"},
                    "historyWindow": 2,
                    "maxLength": 512,
                },
                "clues": {"source": "none"},
                "baseModel": {"nameOrPath": "tiny", "seed": 0},
                "lora": {"modulesToSave": ["embed_tokens", "lm_head"]},
                "optimizer": {
                    "learningRate": LR,
                    "perDeviceBatchSize": BATCH,
                    "gradientAccumulationSteps": 1,
                    "gradientCheckpointing": False,
                    "warmupRatio": 0.1,
                },
                "training": {"steer": {"epochs": EPOCHS}, "erc": {"epochs": 1}},
                "strategy": "steer_only",
                "steer": {"rounds": ROUNDS, "rationaleMaxNewTokens": 40, "maxPool": 16, **steer},
                "evaluation": {"devEachEpoch": False, "test": False, "generation": {"maxNewTokens": 8}},
                "resources": {"gpusPerPod": 0, "nprocPerNode": 1},
                "store": store,
            },
        },
        "test spec",
    )


def run_steer_part(spec, generator_for=None) -> list:
    """Run every definite step up to the last STEeR round, re-planning after each round.

    ``generator_for(step_config)``: a generator for the steer rounds (default: the real one)."""
    store = FileStore()
    ran = []
    while True:
        steps = plan(spec, observe_rounds(spec, store))
        todo = [s for s in steps if s.stage in ("prepare", "steer") and not store.is_published(s.output)]
        if not todo or todo[0].tentative:
            return steps
        step = todo[0]
        if step.kind == "steer_round" and generator_for is not None:
            run_steer_round(step.config, generator=generator_for(step.config))
        else:
            {"prepare": run_prepare, "train": run_train, "steer_round": run_steer_round}[step.kind](
                step.config
            )
        ran.append(step.name)


def check_rounds(root: Path, steps: list) -> list[int]:
    """Every invariant of the published rounds; returns memory sizes [after prepare, after r1, ...]."""
    label_set = get_label_set("demo")
    by_name = {s.name: s for s in steps}
    prepared = output_dir(by_name["prepare"])
    memory_sizes = [len(read_examples(prepared / "memory-r0.jsonl"))]
    pool_sizes = [len(read_examples(prepared / "pool-r0.jsonl"))]
    rounds_run = sorted(
        s.round for s in steps if s.kind == "steer_round" and (output_dir(s) / MANIFEST).is_file()
    )
    assert rounds_run == list(range(1, len(rounds_run) + 1)) and rounds_run
    for n in rounds_run:
        out = output_dir(by_name[f"steer-r{n}"])
        for name in (
            f"memory-r{n}.jsonl",
            f"pool-r{n}.jsonl",
            f"round-{n}.json",
            "memory.json",
            "train4infer.json",
            "generations.jsonl",
        ):
            assert (out / name).is_file(), name
        report = json.loads((out / f"round-{n}.json").read_text())
        memory = read_examples(out / f"memory-r{n}.jsonl")
        pool = read_examples(out / f"pool-r{n}.jsonl")
        assert len(memory) >= memory_sizes[-1] and len(pool) <= pool_sizes[-1]  # memory grows, pool shrinks
        assert [ex.id for ex in memory[: memory_sizes[-1]]] == [
            ex.id for ex in read_examples(by_name[f"steer-r{n}"].config.memory.removeprefix("file://"))
        ]
        assert len(memory) + len(pool) == memory_sizes[0] + pool_sizes[0]
        assert report["memory_size"] == len(memory) and report["pool_left"] == len(pool)
        for ex in memory[memory_sizes[-1] :]:
            assert parse_answer(ex.target, label_set).label == ex.meta["label"]
        assert len((out / "memory.json").read_text().splitlines()) == len(memory)
        assert len((out / "train4infer.json").read_text().splitlines()) == len(pool)
        memory_sizes.append(len(memory))
        pool_sizes.append(len(pool))

        # Bug 1 of the reference: round n trains on memory-r(n-1), all of it, with a schedule sized for it.
        train = by_name[f"steer-r{n}-train"].config
        expected_input = "memory-r0.jsonl" if n == 1 else f"memory-r{n - 1}.jsonl"
        assert [Path(f).name for f in train.train_files] == [expected_input]
        trained = output_dir(by_name[f"steer-r{n}-train"])
        resolved = json.loads((trained / "resolved-config.json").read_text())
        assert resolved["summary"]["examples"] == memory_sizes[-2]
        total = math.ceil(memory_sizes[-2] / BATCH) * EPOCHS
        assert resolved["summary"]["optimizer_steps"] == total
        log = [json.loads(line) for line in (trained / "train-log.jsonl").read_text().splitlines()]
        assert log[-1]["step"] == total
        # The LR used for optimizer step s follows linear warm-up (10 %) then linear decay over
        # exactly this round's steps: a schedule sized for the seeds alone would not match.
        warmup = math.ceil(0.1 * total)
        for row in log:
            k = row["step"] - 1
            factor = k / warmup if k < warmup else max(0.0, (total - k) / (total - warmup))
            assert row["learning_rate"] == pytest.approx(LR * factor), (n, row)

    last_dir = output_dir(by_name[f"steer-r{rounds_run[-1]}"])
    last = json.loads((last_dir / f"round-{rounds_run[-1]}.json").read_text())
    assert last["continue"] is False
    if len(rounds_run) < ROUNDS:
        assert last["stop_reason"] in ("pool_empty", "few_accepted")
    return memory_sizes


def test_three_rounds_with_the_tiny_model(tmp_path, capsys):
    """The real path: train on memory, generate with the round's adapter, accept, publish, x3."""
    spec = spec_for(f"file://{tmp_path}/store")
    steps = run_steer_part(spec)
    root = Path(tmp_path) / "store" / "steer-loop"
    sizes = check_rounds(root, steps)
    assert len(sizes) == ROUNDS + 1  # nothing stops a random model's run early (min_accepted 0)
    assert "STEeR rounds" in capsys.readouterr().out
    last = next(s for s in steps if s.name == f"steer-r{ROUNDS}")
    assert last.config.previous_rounds == [output_dir_uri(s) for s in steps if s.kind == "steer_round"][:-1]
    reports = [
        json.loads((output_dir(s) / f"round-{s.round}.json").read_text())
        for s in steps
        if s.kind == "steer_round"
    ]
    assert [r["round"] for r in reports] == list(range(1, ROUNDS + 1))
    assert [r["memory_size"] for r in reports] == sizes[1:]

    # A finished round is never redone (the step driver skips its fingerprint): its outputs stay
    # byte-identical and no generation runs.
    final = output_dir(last)
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    again = run_step(last.config, run=lambda cfg: run_steer_round(cfg, generator=object()))
    assert again["skipped"] is True
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before


def output_dir_uri(step) -> str:
    return step.output


@dataclass
class _Out:
    text: str
    n_new_tokens: int


class OracleGenerator:
    """Knows the pool's gold labels; answers right for a deterministic third of the examples each
    round (different ones each round), wrong for the rest. Makes memory really grow."""

    def __init__(self, config):
        label_set = get_label_set("demo")
        self.answers = {}
        for ex in read_examples(config.pool.removeprefix("file://")):
            gold = ex.meta["label"]
            right = int(hashlib.sha256(f"{config.round}:{ex.id}".encode()).hexdigest(), 16) % 3 == 0
            wrong = "joy" if gold != "joy" else "anger"
            label = gold if right else wrong
            self.answers[ex.prompt] = (
                f"The clues about {ex.meta['uid']} point this way. <{label_set.to_prompt(label)}>"
            )

    def generate(self, prompts, settings, on_progress=None):
        return [_Out(self.answers[p], 9) for p in prompts]


def test_training_reads_the_grown_memory(tmp_path):
    """Reference bug 1: the grown memory was never given to the data loader (seeds only)."""
    # The oracle only generates (no score decoding, no hinted prompts): the generate/tag rule.
    spec = spec_for(
        f"file://{tmp_path}/store", answerMode="generate", accept="tag", gateExamples=0, rationalization=False
    )
    steps = run_steer_part(spec, generator_for=OracleGenerator)
    sizes = check_rounds(Path(tmp_path) / "store" / "steer-loop", steps)
    assert sizes[1] > sizes[0] and sizes[2] > sizes[1], sizes  # the memory really grew between trainings
