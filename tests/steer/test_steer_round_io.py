"""run_steer_round as a step: artifacts, never redone, nothing half-published; with a scripted generator."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from coe_runtime.data.dialogue import Example, read_examples, write_examples
from coe_runtime.data.labels import get_label_set
from coe_runtime.driver import run_step
from coe_runtime.errors import DataError
from coe_runtime.prompts.builder import ANSWER_HEADER
from coe_runtime.steer import cut_at_limit, format_rounds_table, rationale_budget_warning, run_steer_round
from coe_runtime.step import LabelSetRef, SteerOptions, SteerRoundStep
from coe_runtime.store import MANIFEST


@dataclass
class Out:
    text: str
    n_new_tokens: int
    n_prompt_tokens: int = 0


class ScriptedGenerator:
    """Answers each prompt from a script keyed by a marker inside the prompt."""

    def __init__(self, script: dict[str, str], fail_after: int | None = None):
        self.script = script
        self.calls: list[list[str]] = []
        self.fail_after = fail_after

    def generate(self, prompts, settings, on_progress=None):
        assert settings.stop_at_label
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated crash (preempted pod)")
        self.calls.append(list(prompts))
        outs = []
        for p in prompts:
            key = p.split("|", 2)[1] + ("+hint" if "Hint:" in p else "")
            text = self.script.get(key, "No idea. <neutral>")
            outs.append(Out(text, len(text.split())))
        if on_progress is not None:
            on_progress(len(prompts), len(prompts))
        return outs


def example(uid: str, label: str, target: str = "") -> Example:
    prompt = f"Dialogue |{uid}| ...\nExplain, then answer.\n{ANSWER_HEADER}"
    return Example(f"steer:{uid}", "steer", prompt, target, {"uid": uid, "label": label, "label_set": "meld"})


@pytest.fixture
def round_inputs(tmp_path):
    memory = [
        example("s1", "joy", "Seed reasoning. <joy>"),
        example("s2", "anger", "Seed reasoning. <anger>"),
    ]
    pool = [example(f"p{i}", lab) for i, lab in enumerate(["joy", "anger", "sadness", "fear", "neutral"])]
    write_examples(tmp_path / "in" / "memory-r0.jsonl", memory)
    write_examples(tmp_path / "in" / "pool-r0.jsonl", pool)
    step = SteerRoundStep(
        name="steer-r1",
        output=f"file://{tmp_path}/store/exp/steer-r1",
        round=1,
        memory=f"file://{tmp_path}/in/memory-r0.jsonl",
        pool=f"file://{tmp_path}/in/pool-r0.jsonl",
        adapter=f"file://{tmp_path}/store/exp/steer-r1-train/adapter",
        label_set=LabelSetRef(name="meld"),
        steer=SteerOptions(
            rounds=3,
            rationalization=True,
            answer_mode="generate",
            accept="tag",
            gate_examples=0,
            rationalization_check=False,
        ),
    )
    script = {
        "p0": "They laugh together. <joy>",
        "p1": "He is fine. <neutral>",
        "p1+hint": "He was insulted in front of everyone. <anger>",
        "p2": "She smiles. <joy>",
        "p2+hint": "Still unsure. <neutral>",
        "p3": "Nothing to fear here. <neutral>",
        "p3+hint": "The noise in the dark scares her. <fear>",
        "p4": "A plain question. <neutral>",
    }
    return step, script, tmp_path


def test_round_publishes_every_artifact_and_is_never_redone(round_inputs, capsys):
    step, script, tmp_path = round_inputs
    gen = ScriptedGenerator(script)
    report = run_steer_round(step, generator=gen)
    out_dir = tmp_path / "store" / "exp" / "steer-r1"
    names = {p.name for p in out_dir.iterdir()}
    assert {
        "memory-r1.jsonl",
        "pool-r1.jsonl",
        "round-1.json",
        "generations.jsonl",
        "memory.json",
        "train4infer.json",
        MANIFEST,
    } <= names
    memory = read_examples(out_dir / "memory-r1.jsonl")
    pool = read_examples(out_dir / "pool-r1.jsonl")
    assert [ex.id for ex in memory] == [
        "steer:s1",
        "steer:s2",
        "steer:p0",
        "steer:p1",
        "steer:p3",
        "steer:p4",
    ]
    assert [ex.id for ex in pool] == ["steer:p2"]
    assert all("Hint:" not in ex.prompt for ex in memory)
    assert report["accepted"] == 4 and report["rationalized"] == 2 and report["pool_size"] == 5
    assert report["accuracy"] == pytest.approx(2 / 5)  # p0 and p4 right on their own
    assert report["memory_size"] == 6 and report["pool_left"] == 1
    assert report["continue"] is True and report["stop_reason"] is None
    assert report["tokens_generated"] > 0
    saved = json.loads((out_dir / "round-1.json").read_text())
    assert saved["per_class"]["anger"]["rationalized"] == 1
    reference = [json.loads(line) for line in (out_dir / "memory.json").read_text().splitlines()]
    assert len(reference) == 6 and set(reference[0]) == {"input", "target"}
    assert len((out_dir / "train4infer.json").read_text().splitlines()) == 1
    assert len((out_dir / "generations.jsonl").read_text().splitlines()) == 5
    assert len(gen.calls) == 2 and len(gen.calls[1]) == 3  # hints only for the three still wrong
    printed = capsys.readouterr().out
    assert "STEeR rounds" in printed
    assert '"phase": "steer", "done": 5, "total": 5' in printed  # generation progress of the pool

    before = (out_dir / MANIFEST).read_bytes()
    again = ScriptedGenerator({})
    rerun = run_step(step, run=lambda cfg: run_steer_round(cfg, generator=again))  # the step driver skips it
    assert again.calls == [] and rerun["skipped"] is True and rerun["accepted"] == 4
    assert (out_dir / MANIFEST).read_bytes() == before


def test_a_round_that_dies_half_way_publishes_nothing_and_is_redone(round_inputs):
    step, script, tmp_path = round_inputs
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_steer_round(step, generator=ScriptedGenerator(script, fail_after=1))  # dies before the hint pass
    assert not (tmp_path / "store" / "exp" / "steer-r1").exists()
    report = run_steer_round(step, generator=ScriptedGenerator(script))
    assert report["accepted"] == 4 and (tmp_path / "store" / "exp" / "steer-r1" / MANIFEST).is_file()


def test_last_round_and_empty_pool_say_stop(round_inputs):
    step, script, _ = round_inputs
    last = step.model_copy(update={"round": 3})
    last = last.model_copy(update={"output": step.output.replace("steer-r1", "steer-r3")})
    report = run_steer_round(last, generator=ScriptedGenerator(script))
    assert report["continue"] is False and report["stop_reason"] == "max_rounds"


def test_pool_judged_with_another_datasets_labels_is_a_clear_error(round_inputs):
    step, script, _ = round_inputs
    wrong = step.model_copy(update={"label_set": LabelSetRef(name="emorynlp")})
    with pytest.raises(DataError, match=r"memory-r0.jsonl:1: .*not in label set 'emorynlp'"):
        run_steer_round(wrong, generator=ScriptedGenerator(script))


def test_rounds_table_lists_every_round():
    from rich.console import Console

    rows = [
        {"round": 1, "pool_size": 10, "accepted": 4, "accuracy": 0.3, "rationalized": 1, "capped": 0,
         "memory_size": 14, "tokens_generated": 300, "seconds": 2.0, "continue": True, "stop_reason": None},
        {"round": 2, "pool_size": 6, "accepted": 0, "accuracy": 0.0, "rationalized": 0, "capped": 0,
         "memory_size": 14, "tokens_generated": 200, "seconds": 1.0, "continue": False, "stop_reason": "few_accepted"},
    ]  # fmt: skip
    console = Console(record=True, width=170)
    console.print(format_rounds_table(rows))
    text = console.export_text()
    assert "30.0%" in text and "stop (few_accepted)" in text and "continue" in text


class WordTokenizer:
    """One token per whitespace-separated word: enough to measure rationale lengths."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": text.split()}


def test_a_generation_limit_shorter_than_the_seed_rationales_is_reported(round_inputs, capsys):
    step, script, tmp_path = round_inputs
    seeds = [
        example(f"s{i}", "joy", "She hugs him and laughs at the news, clearly delighted by it. <joy>")
        for i in range(3)
    ]
    write_examples(tmp_path / "in" / "memory-r0.jsonl", seeds)
    gen = ScriptedGenerator(script)
    gen.tokenizer = WordTokenizer()
    short = step.model_copy(update={"generation": step.generation.model_copy(update={"max_new_tokens": 8})})
    report = run_steer_round(short, generator=gen)
    (warning,) = report["warnings"]
    assert (
        "steer.rationaleMaxNewTokens is 8" in warning and "median 13" in warning and "at least 13" in warning
    )
    assert "warning: steer.rationaleMaxNewTokens is 8" in capsys.readouterr().out
    saved = json.loads((tmp_path / "store" / "exp" / "steer-r1" / "round-1.json").read_text())
    assert saved["warnings"] == [warning]


def test_a_limit_that_fits_the_seed_rationales_warns_nothing(round_inputs):
    step, script, _ = round_inputs
    gen = ScriptedGenerator(script)
    gen.tokenizer = WordTokenizer()  # the fixture's seeds are 3 words long
    limit = step.generation.model_copy(update={"max_new_tokens": 3})
    assert run_steer_round(step.model_copy(update={"generation": limit}), generator=gen)["warnings"] == []


def test_rationales_cut_at_the_token_limit_are_counted(round_inputs):
    step, script, _ = round_inputs
    script = {**script, "p1": "He is going to be very busy and very", "p2": "She smiles. <joy>"}
    limit = step.generation.model_copy(update={"max_new_tokens": 8})
    report = run_steer_round(
        step.model_copy(update={"generation": limit}), generator=ScriptedGenerator(script)
    )
    # p1 ran into the 8-token limit with no tag; p2 is short and tagged (wrong, not cut).
    assert report["cut_at_limit"] == 1
    cut_column = next(c for c in format_rounds_table([report]).columns if c.header == "cut")
    assert list(cut_column.cells) == ["1"]


def test_budget_check_and_cut_count_are_pure():
    assert rationale_budget_warning([], 4) is None  # no memory: nothing to compare
    assert rationale_budget_warning([3, 5, 9], 5) is None  # the median fits
    assert "median 9" in rationale_budget_warning([3, 9, 12], 8)
    labels = get_label_set("meld")
    texts = ["so very long and going on", "short. <joy>", "long but tagged in the end <anger>"]
    assert cut_at_limit(texts, [6, 2, 6], 6, labels) == 1
