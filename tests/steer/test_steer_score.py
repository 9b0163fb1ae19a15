"""Two-phase STEeR answers (free rationale, then the scored label), the rationalization check,
the acceptance rules and the per-round gate (accuracy with vs without the rationale)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from coe_controller.state import result_line

from coe_runtime.data.dialogue import Example, read_examples, write_examples
from coe_runtime.data.labels import MELD
from coe_runtime.prompts.builder import ANSWER_HEADER
from coe_runtime.steer import (
    accept,
    direct_rationale,
    format_rounds_table,
    gate_figures,
    gate_warning,
    run_steer_round,
    select_gate,
    split_rationale,
)
from coe_runtime.step import LabelSetRef, SteerOptions, SteerRoundStep


@dataclass
class Out:
    text: str
    n_new_tokens: int
    n_prompt_tokens: int = 0


@dataclass
class Scored:
    best: int
    logprobs: tuple[float, ...] = ()
    n_prompt_tokens: int = 0


def key(prompt: str) -> str:
    return prompt.split("|", 2)[1]


class TwoPhaseGenerator:
    """Generates a scripted text per prompt marker (no tags: a small model that never closes its
    rationale) and scores labels by script: after a rationale ``scored_with[uid]``, right after
    the prompt ``scored_without[uid]`` (default: neutral)."""

    def __init__(self, texts: dict[str, str], with_r: dict[str, str], without: dict[str, str]):
        self.texts, self.with_r, self.without = texts, with_r, without
        self.generated: list[list[str]] = []
        self.scored: list[tuple[list[str], list[str]]] = []

    def generate(self, prompts, settings, on_progress=None):
        self.generated.append(list(prompts))
        outs = []
        for p in prompts:
            text = self.texts.get(key(p) + ("+hint" if "Hint:" in p else ""), "Hard to say what")
            outs.append(Out(text, len(text.split())))
        return outs

    def score(self, prompts, answers, batch_size=16, shard=True, on_progress=None):
        self.scored.append((list(prompts), list(answers)))
        outs = []
        for p in prompts:
            after_rationale = not p.endswith(ANSWER_HEADER)
            assert all(a.startswith(" <") for a in answers) == after_rationale
            assert "Hint:" not in p  # the check and the answers score hint-free prompts
            label = (self.with_r if after_rationale else self.without).get(key(p), "neutral")
            outs.append(Scored(MELD.labels.index(label)))
        return outs


def example(uid: str, label: str, target: str = "") -> Example:
    prompt = f"Dialogue |{uid}| ...\nExplain, then answer.\n{ANSWER_HEADER}"
    return Example(f"steer:{uid}", "steer", prompt, target, {"uid": uid, "label": label, "label_set": "meld"})


def make_step(tmp_path, pool: list[Example], **steer) -> SteerRoundStep:
    write_examples(tmp_path / "in" / "memory-r0.jsonl", [example("s1", "joy", "Seed reasoning. <joy>")])
    write_examples(tmp_path / "in" / "pool-r0.jsonl", pool)
    return SteerRoundStep(
        name="steer-r1",
        output=f"file://{tmp_path}/store/exp/steer-r1",
        round=1,
        memory=f"file://{tmp_path}/in/memory-r0.jsonl",
        pool=f"file://{tmp_path}/in/pool-r0.jsonl",
        adapter="file:///unused",
        label_set=LabelSetRef(name="meld"),
        steer=SteerOptions(rounds=3, **steer),
    )


def test_defaults_are_two_phase_scored_and_rationalized():
    opts = SteerOptions()
    assert (opts.answer_mode, opts.accept, opts.rationalization, opts.rationalization_check) == (
        "score",
        "scored",
        True,
        True,
    )
    assert opts.gate_examples == 32
    with pytest.raises(ValueError, match="needs steer.answerMode 'score'"):
        SteerOptions(answer_mode="generate")  # accept 'scored' has nothing to read
    assert SteerOptions(answer_mode="generate", accept="tag").accept == "tag"


def test_two_phase_scoring_gives_every_example_a_label(tmp_path):
    labels = ["joy", "anger", "sadness", "fear"]
    pool = [example(f"p{i}", lab) for i, lab in enumerate(labels)]
    texts = {"p0": "They laugh together", "p1": "He is yelling at", "p2": "", "p3": "Unclear"}
    gen = TwoPhaseGenerator(texts, {"p0": "joy", "p1": "anger", "p3": "neutral"}, {"p2": "sadness"})
    step = make_step(tmp_path, pool, gate_examples=0, rationalization=False)
    report = run_steer_round(step, generator=gen)
    records = [
        json.loads(line)
        for line in (tmp_path / "store" / "exp" / "steer-r1" / "generations.jsonl").read_text().splitlines()
    ]
    # No tag anywhere, yet every generation has a label, and says how it was obtained.
    assert all(r["method"] == "none" for r in records)
    assert [(r["answer"], r["answer_method"]) for r in records] == [
        ("joy", "score"),
        ("anger", "score"),
        ("sadness", "score"),  # an empty rationale: scored right after the prompt
        ("neutral", "score"),
    ]
    assert report["correct"] == 3 and report["accepted"] == 2  # p2 is right but has no rationale
    memory = read_examples(tmp_path / "store" / "exp" / "steer-r1" / "memory-r1.jsonl")
    assert [ex.target for ex in memory[1:]] == ["They laugh together <joy>", "He is yelling at <anger>"]


def test_two_phase_scoring_with_the_tiny_model_labels_every_example(tmp_path):
    from coe_runtime.models.generate import Generator
    from coe_runtime.step import ModelRef

    gen = Generator.load(ModelRef(name_or_path="tiny", seed=0), None, label_names=MELD.prompt_names)
    labels = list(MELD.labels) * 2
    pool = [example(f"p{i}", lab) for i, lab in enumerate(labels)]
    step = make_step(tmp_path, pool, gate_examples=4)
    step = step.model_copy(update={"generation": step.generation.model_copy(update={"max_new_tokens": 8})})
    report = run_steer_round(step, generator=gen)
    out = tmp_path / "store" / "exp" / "steer-r1"
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(records) == len(pool)
    assert all(r["answer"] in MELD.labels and r["answer_method"] == "score" for r in records)
    assert report["gate"]["n"] == 4 and 0 <= report["gate"]["with_rationale"] <= 1


def test_rationalization_check_rejects_a_rationale_that_does_not_lead_to_gold(tmp_path):
    pool = [example("p0", "anger"), example("p1", "fear"), example("p2", "joy")]
    texts = {
        "p0": "He is calm",
        "p0+hint": "He was mocked in front of his boss",
        "p1": "Nothing here",
        "p1+hint": "She hears a noise",
        "p2": "They cheer",
    }
    # Without the hint, p0's hinted rationale leads to anger (kept); p1's leads to neutral (rejected).
    with_r = {"p0": "neutral", "p1": "neutral", "p2": "joy"}
    gen = TwoPhaseGenerator(texts, with_r, {})
    original_score = gen.score

    def score(prompts, answers, batch_size=16, shard=True, on_progress=None):
        outs = original_score(prompts, answers, batch_size)
        return [
            Scored(MELD.labels.index("anger")) if "mocked" in p else o
            for p, o in zip(prompts, outs, strict=True)
        ]

    gen.score = score
    report = run_steer_round(make_step(tmp_path, pool, gate_examples=0), generator=gen)
    assert report["accepted"] == 2 and report["rationalized"] == 1
    assert report["check_rejected"] == 1 and report["hint_attempts"] == 2
    memory = read_examples(tmp_path / "store" / "exp" / "steer-r1" / "memory-r1.jsonl")
    rationalized = next(ex for ex in memory if ex.id == "steer:p0")
    assert rationalized.target == "He was mocked in front of his boss <anger>"
    assert "Hint" not in rationalized.prompt
    # Switched off, the same rationale is kept.
    off = accept(
        pool,
        ["He is calm", "Nothing here", "They cheer"],
        MELD,
        SteerOptions(rationalization_check=False),
        scored=["neutral", "neutral", "joy"],
        hint_generations={"steer:p1": "She hears a noise"},
        hint_checked={"steer:p1": "neutral"},
    )
    assert [ex.id for ex in off.accepted] == ["steer:p1", "steer:p2"]


def test_acceptance_rules():
    gold = "joy"
    tagged, anywhere, plain = "They laugh. <joy>", "They laugh, so joy it is", "They laugh"
    assert direct_rationale(tagged, gold, None, MELD, "tag") == "They laugh."
    assert direct_rationale(anywhere, gold, None, MELD, "tag") is None
    assert direct_rationale(anywhere, gold, None, MELD, "anywhere") == anywhere
    assert direct_rationale(plain, gold, None, MELD, "anywhere") is None
    assert direct_rationale(plain, gold, "joy", MELD, "scored") == plain
    assert direct_rationale(plain, gold, "anger", MELD, "scored") is None
    assert direct_rationale("<joy>", gold, "joy", MELD, "scored") is None  # no rationale
    assert split_rationale("Smiles. <joy> more", MELD) == "Smiles."
    pool = [example(f"p{i}", "joy") for i in range(3)]
    texts = [tagged, anywhere, plain]
    scored = ["joy", "anger", "joy"]
    for rule, mode, ids in (
        ("tag", "generate", ["steer:p0"]),
        ("anywhere", "generate", ["steer:p0", "steer:p1"]),
        ("scored", "score", ["steer:p0", "steer:p2"]),
        ("tag", "score", ["steer:p0"]),
    ):
        opts = SteerOptions(answer_mode=mode, accept=rule)
        result = accept(pool, texts, MELD, opts, scored=scored if mode == "score" else None)
        assert [ex.id for ex in result.accepted] == ids, rule
        assert all(ex.target.endswith("<joy>") for ex in result.accepted)


def test_gate_examples_are_held_out_and_never_enter_memory(tmp_path):
    pool = [example(f"p{i}", "joy") for i in range(10)]
    gate = select_gate(pool, 32, 1)
    assert len(gate) == 5  # at most half the pool
    assert select_gate(list(reversed(pool)), 32, 1) == gate  # not the pool's order
    assert select_gate(pool, 3, 1) <= set(ex.id for ex in pool) and len(select_gate(pool, 3, 1)) == 3
    # Every example is answered right with a tagged rationale: only the gate stays out.
    texts = {f"p{i}": "They laugh" for i in range(10)}
    gen = TwoPhaseGenerator(texts, {f"p{i}": "joy" for i in range(10)}, {})
    report = run_steer_round(make_step(tmp_path, pool, gate_examples=3), generator=gen)
    out = tmp_path / "store" / "exp" / "steer-r1"
    memory_ids = {ex.id for ex in read_examples(out / "memory-r1.jsonl")}
    gate_ids = select_gate(pool, 3, 1)
    assert not memory_ids & gate_ids
    assert {ex.id for ex in read_examples(out / "pool-r1.jsonl")} == gate_ids
    assert report["accepted"] == 7 and report["gate"]["n"] == 3
    assert report["gate"]["with_rationale"] == 1.0 and report["gate"]["without_rationale"] == 0.0
    assert report["warnings"] == []
    # Gate examples are not rationalized either.
    assert all(
        "Hint:" not in p or key(p) not in {g.split(":")[1] for g in gate_ids} for p in sum(gen.generated, [])
    )


def test_a_warning_when_rationales_hurt(tmp_path, capsys):
    pool = [example(f"p{i}", "anger") for i in range(8)]
    texts = {f"p{i}": "Hmm, hard to tell" for i in range(8)}
    # With its rationale the model says neutral; answering directly it says anger.
    gen = TwoPhaseGenerator(texts, {}, {f"p{i}": "anger" for i in range(8)})
    report = run_steer_round(make_step(tmp_path, pool, gate_examples=4, rationalization=False), generator=gen)
    gate = report["gate"]
    assert (gate["n"], gate["correct_with"], gate["correct_without"]) == (4, 0, 4)
    (warning,) = report["warnings"]
    assert warning.startswith("rationales hurt") and "0 times with its own rationale but 4" in warning
    saved = json.loads((tmp_path / "store" / "exp" / "steer-r1" / "round-1.json").read_text())
    assert saved["gate"]["without_rationale"] == 1.0 and saved["warnings"] == [warning]
    assert "warning: rationales hurt" in capsys.readouterr().out
    gate_column = next(c for c in format_rounds_table([report]).columns if c.header == "gate w/wo")
    assert list(gate_column.cells) == ["0/4 of 4 (hurt)"]
    assert gate_warning(gate_figures(["joy"], ["joy"], ["joy"])) is None
    assert gate_warning(None) is None


def test_status_line_shows_the_gate_and_the_hurt():
    from types import SimpleNamespace

    step = SimpleNamespace(kind="steer_round", round=1)
    gate = {
        "n": 4,
        "with_rationale": 0.25,
        "without_rationale": 0.75,
        "correct_with": 1,
        "correct_without": 3,
    }
    doc = {"accepted": 3, "memory_size": 14, "pool_size": 30, "continue": True, "gate": gate}
    line = result_line(step, {**doc, "warnings": ["rationales hurt: ..."]})
    assert "gate 25%/75% of 4" in line and "rationales hurt" in line
    fine = result_line(step, {**doc, "gate": {**gate, "correct_with": 3, "with_rationale": 0.75}})
    assert "gate 75%/75% of 4" in fine and "hurt" not in fine
