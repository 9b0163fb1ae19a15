"""Clue generation: what is asked (no peeking), cleaning, and a real run with the tiny model + cache."""

from __future__ import annotations

import json

import pytest

from coe_runtime.clues import PERSONA, SCENE, assemble_clues, clean_clue, llm_prompt, plan_requests, run_clues
from coe_runtime.data.clue_file import load_clues
from coe_runtime.data.dialogue import Dialogue, Utterance
from coe_runtime.step import CluesStep, DatasetSource, GenerationSettings, LabelSetRef
from coe_runtime.store import MANIFEST


def dialogue() -> Dialogue:
    lines = [("A", "first thing A says"), ("B", "B answers"), ("A", "A again"), ("C", "C arrives late")]
    return Dialogue(
        "d1", "demo", "train", [Utterance(f"d1-u{i}", (s,), t, "neutral") for i, (s, t) in enumerate(lines)]
    )


def test_no_peeking_personas_use_only_earlier_lines():
    reqs = plan_requests([dialogue()], future_turns=False)
    scenes = [r for r in reqs if r.kind == SCENE]
    assert [r.lines for r in scenes] == [("A: first thing A says",)]  # the opening line only
    personas = {(r.uid, r.speaker): r.lines for r in reqs if r.kind == PERSONA}
    assert ("d1-u0", "A") not in personas  # nobody has spoken before the first line
    assert personas[("d1-u1", "A")] == ("first thing A says",)
    assert personas[("d1-u2", "A")] == ("first thing A says",)  # A's own target line is not used
    assert personas[("d1-u3", "A")] == ("first thing A says", "A again")
    assert ("d1-u3", "C") not in personas and ("d1-u2", "B") in personas
    # No request ever sees a line at or after its target.
    order = {u.uid: i for i, u in enumerate(dialogue().utterances)}
    texts = [u.text for u in dialogue().utterances]
    for (uid, _speaker), lines in personas.items():
        assert all(texts.index(line) < order[uid] for line in lines)


def test_future_turns_gives_one_persona_per_speaker_from_the_whole_dialogue():
    reqs = plan_requests([dialogue()], future_turns=True)
    personas = {r.speaker: r.lines for r in reqs if r.kind == PERSONA}
    assert personas == {"A": ("first thing A says", "A again"), "B": ("B answers",), "C": ("C arrives late",)}
    assert all(r.uid is None for r in reqs)
    assert len([r for r in reqs if r.kind == SCENE][0].lines) == 4


def test_prompt_keeps_the_instruction_last():
    req = plan_requests([dialogue()], future_turns=True)[1]
    prompt = llm_prompt(req)
    assert prompt.rstrip().endswith("Write only the description.")
    assert '- "first thing A says"' in prompt


def test_clean_clue():
    assert clean_clue("  Persona: A kind man.\nLikes tea.\n\nSecond paragraph") == "A kind man. Likes tea."
    long = "He is calm. " * 60
    cut = clean_clue(long, max_chars=100)
    assert len(cut) <= 100 and cut.endswith(".")
    assert clean_clue("word " * 200, max_chars=50).endswith("…")
    assert clean_clue("   \n ") == ""
    # Cut by max_new_tokens mid-sentence: only complete sentences are kept.
    assert clean_clue("She is kind. She likes to help and often") == "She is kind."
    assert clean_clue("no sentence end at all") == "no sentence end at all"


def test_assemble_leaves_out_empty_texts():
    reqs = plan_requests([dialogue()], future_turns=False)
    texts = ["" if r.kind == SCENE else "someone" for r in reqs]
    clues, empty = assemble_clues(reqs, texts, {})
    assert empty == 1 and clues.scenes == {}
    assert clues.persona("d1", "A", "train", uid="d1-u3") == "someone"


@pytest.mark.slow
def test_clue_step_writes_a_valid_clue_file_and_a_rerun_hits_the_cache(tmp_path):
    source = DatasetSource(format="demo", label_set=LabelSetRef(name="demo"), max_dialogues=2)
    gen = GenerationSettings(max_new_tokens=8, batch_size=32)
    cache = f"file://{tmp_path}/shared-cache"
    first = CluesStep(
        name="clues", output=f"file://{tmp_path}/exp1/clues", dataset=source, generation=gen, cache=cache
    )
    summary = run_clues(first)
    assert summary["generated"] > 0 and summary["from_cache"] == 0
    clues = load_clues(f"file://{tmp_path}/exp1/clues/clues.json")  # validates the format
    assert (tmp_path / "exp1" / "clues" / MANIFEST).is_file()
    assert summary["scenes"] + summary["utterance_personas"] + summary["empty"] == summary["requests"]
    assert clues.meta["model"] == "tiny" and clues.meta["future_turns"] is False
    assert all("\n" not in t for t in clues.scenes.values())

    # Another experiment, same model / data / prompt version: nothing is generated.
    second = first.model_copy(update={"output": f"file://{tmp_path}/exp2/clues"})
    again = run_clues(second, generator=_NoGeneration())
    assert again["generated"] == 0 and again["from_cache"] == summary["unique_requests"]
    a = json.loads((tmp_path / "exp1" / "clues" / "clues.json").read_text())
    b = json.loads((tmp_path / "exp2" / "clues" / "clues.json").read_text())
    assert a == b

    # A new prompt version is a different cache entry.
    v2 = first.model_copy(update={"output": f"file://{tmp_path}/exp3/clues", "prompt_version": "v2"})
    with pytest.raises(AssertionError, match="must not generate"):
        run_clues(v2, generator=_NoGeneration())


class _NoGeneration:
    tokenizer = None

    def generate(self, prompts, settings):
        raise AssertionError("must not generate: everything is cached")
