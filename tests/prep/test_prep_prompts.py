"""Prompt builder: the question and the target survive every budget; history goes oldest-first."""

from __future__ import annotations

import pytest

from coe_runtime.data.clue_file import Clues
from coe_runtime.data.dialogue import Dialogue, Utterance
from coe_runtime.data.labels import get_label_set
from coe_runtime.errors import ConfigError
from coe_runtime.prompts.builder import (
    MIN_MAX_LENGTH,
    PromptBudgetError,
    build_prompt,
    estimate_tokens,
    hint_line,
    required_length,
    with_hint,
)

LABELS = get_label_set("demo", "coe")
TARGET_TEXT = "Wait, the kettle is singing a tune I have never heard before?!"


def make_dialogue(n: int = 10) -> Dialogue:
    speakers = ["Ada", "Bo", "Cy"]
    utterances = [
        Utterance(
            f"t-d1-u{i}", (speakers[i % 3],), f"history line number {i} about the harbour lamps", "neutral"
        )
        for i in range(n - 1)
    ]
    utterances.append(Utterance(f"t-d1-u{n - 1}", ("Bo",), TARGET_TEXT, "surprise"))
    return Dialogue("d1", "demo", "train", utterances, source="synthetic.jsonl")


def make_clues() -> Clues:
    long = " ".join(f"word{i}" for i in range(60))
    return Clues(
        personas={
            "d1": {"Ada": "Ada persona " + long, "Bo": "Bo persona " + long, "Cy": "Cy persona " + long}
        },
        scenes={"train/d1": "Scene text " + long},
    )


def history_indices(text: str) -> list[int]:
    return [
        int(line.split("number ")[1].split()[0])
        for line in text.splitlines()
        if "history line number" in line
    ]


def char_counter(text: str) -> int:  # a second, differently shaped counter
    return len(text) // 4 + 1


@pytest.mark.parametrize("task", ["erc", "steer", "speaker_id", "roleplay"])
@pytest.mark.parametrize("count", [estimate_tokens, char_counter])
def test_question_and_target_survive_down_to_the_minimum(task, count):
    d, clues = make_dialogue(), make_clues()
    index = len(d.utterances) - 1
    target = {"erc": "<surprise>", "steer": "", "speaker_id": "Bo", "roleplay": TARGET_TEXT}[task]
    full = build_prompt(d, index, task, LABELS, clues, target=target, count_tokens=count, max_length=100_000)
    minimum = required_length(d, index, task, LABELS, target=target, count_tokens=count)
    assert minimum < full.n_tokens
    question = full.text[full.text.index("### Question") :]
    prev_shown, prev_cap, saw_clue_cut = full.history_shown, None, False
    for max_length in range(full.n_tokens, max(minimum, MIN_MAX_LENGTH) - 1, -1):
        p = build_prompt(
            d, index, task, LABELS, clues, target=target, count_tokens=count, max_length=max_length
        )
        assert p.n_tokens <= max_length
        assert p.text.endswith(question), "the question and answer format must never be cut"
        if task != "roleplay":
            assert TARGET_TEXT in p.text, "the target utterance must never be cut"
        # History: always the newest utterances before the target (the oldest go first).
        shown = history_indices(p.text)
        assert shown == list(range(index - len(shown), index))
        assert p.history_shown == len(shown) <= prev_shown
        # Clues are shortened only once the history is gone, and only get shorter.
        if p.clue_word_cap is not None:
            saw_clue_cut = True
            assert p.history_shown == 0
            assert prev_cap is None or p.clue_word_cap <= prev_cap
            prev_cap = p.clue_word_cap
        prev_shown = p.history_shown
    assert saw_clue_cut
    if minimum - 1 >= MIN_MAX_LENGTH:
        with pytest.raises(PromptBudgetError) as err:
            build_prompt(
                d, index, task, LABELS, clues, target=target, count_tokens=count, max_length=minimum - 1
            )
        assert err.value.required == minimum
        assert f"at least {minimum}" in str(err.value) and "t-d1-u9" in str(err.value)


def test_history_window_and_no_budget_pressure():
    d = make_dialogue()
    p = build_prompt(d, 9, "erc", LABELS, history_window=3)
    assert history_indices(p.text) == [6, 7, 8]
    assert p.history_dropped == 0 and p.clue_word_cap is None
    assert build_prompt(d, 0, "erc", LABELS).history_shown == 0


def test_output_is_deterministic_and_answer_format_is_stated():
    d, clues = make_dialogue(), make_clues()
    a = build_prompt(d, 9, "erc", LABELS, clues, max_length=200)
    b = build_prompt(d, 9, "erc", LABELS, clues, max_length=200)
    assert a == b
    assert "Options: neutral, surprise, fear, sad, joyful, disgust, angry." in a.text
    assert "angle brackets" in a.text


def test_minimum_max_length_is_enforced():
    with pytest.raises(ConfigError, match=f"minimum {MIN_MAX_LENGTH}"):
        build_prompt(make_dialogue(), 9, "erc", LABELS, max_length=MIN_MAX_LENGTH - 1)


def test_steer_hint_is_inserted_before_the_answer_and_fits_the_budget():
    d, clues = make_dialogue(), make_clues()
    plain = build_prompt(d, 9, "steer", LABELS, clues, max_length=150)
    hinted = build_prompt(d, 9, "steer", LABELS, clues, max_length=150, hint_label="surprise")
    assert hinted.text == with_hint(plain.text, "surprise")
    assert hint_line("surprise") in hinted.text and hinted.text.endswith("### Answer\n")
    longest = max(LABELS.prompt_names, key=lambda p: estimate_tokens(hint_line(p)))
    assert estimate_tokens(with_hint(plain.text, longest)) <= 150
    with pytest.raises(ConfigError):
        build_prompt(d, 9, "erc", LABELS, hint_label="surprise")


def test_speaker_id_lists_candidates_and_hides_the_speaker():
    d = make_dialogue()
    p = build_prompt(d, 9, "speaker_id", LABELS, target="Bo")
    assert "Candidates: Ada, Bo, Cy." in p.text
    assert f"\n{TARGET_TEXT}\n" in p.text and f"Bo: {TARGET_TEXT}" not in p.text


def test_roleplay_asks_for_the_next_line_without_showing_it():
    p = build_prompt(make_dialogue(), 9, "roleplay", LABELS, target=TARGET_TEXT)
    assert TARGET_TEXT not in p.text and "What does Bo say next?" in p.text


def test_clue_lookup_split_key_and_per_utterance_persona():
    d, clues = make_dialogue(), make_clues()
    clues.utterance_personas["t-d1-u9"] = {"Bo": "Bo as known up to this line"}
    text = build_prompt(d, 9, "erc", LABELS, clues, history_window=0).text
    assert "- Bo: Bo as known up to this line" in text and "Scene text" in text
    other = build_prompt(d, 8, "erc", LABELS, clues, history_window=0).text
    assert "Bo persona" in other or "Bo" not in other.split("### Scene")[0]
