"""The acceptance logic of a STEeR round, without a model."""

from __future__ import annotations

import random

import pytest

from coe_runtime.data.dialogue import Example
from coe_runtime.data.labels import EMORYNLP, MELD, get_label_set
from coe_runtime.errors import DataError
from coe_runtime.prompts.builder import ANSWER_HEADER
from coe_runtime.steer import (
    STOP_FEW_ACCEPTED,
    STOP_MAX_ROUNDS,
    STOP_POOL_EMPTY,
    accept,
    extract_rationale,
    hint_prompt,
    needs_hint,
    stopping_rule,
)
from coe_runtime.step import SteerOptions


def TagOptions(**kw) -> SteerOptions:  # noqa: N802 - the old rule: a generated answer closing with its tag
    return SteerOptions(**{"answer_mode": "generate", "accept": "tag", **kw})


def pool_example(i: int, label: str, label_set=MELD) -> Example:
    prompt = f"Conversation {i} ...\nWhy does the speaker feel this way?\n{ANSWER_HEADER}"
    return Example(
        f"steer:u{i}", "steer", prompt, "", {"uid": f"u{i}", "label": label, "label_set": label_set.name}
    )


def test_correct_tagged_answers_join_memory_and_leave_the_pool():
    pool = [
        pool_example(0, "joy"),
        pool_example(1, "anger"),
        pool_example(2, "sadness"),
        pool_example(3, "fear"),
    ]
    texts = [
        "She laughs with her friends. <joy>",  # right, tagged: accepted
        "He is calm. <neutral>",  # wrong
        "sadness",  # right label word but no rationale/tag: counted correct, not stored
        "The dark room frightens him. <fear> more text <fear>",  # right; text after the tag dropped
    ]
    result = accept(pool, texts, MELD, TagOptions())
    assert [ex.id for ex in result.accepted] == ["steer:u0", "steer:u3"]
    assert [ex.id for ex in result.remaining] == ["steer:u1", "steer:u2"]
    assert result.accepted[0].target == "She laughs with her friends. <joy>"
    assert result.accepted[1].target == "The dark room frightens him. <fear>"
    assert result.accepted[0].prompt == pool[0].prompt
    assert result.counts["correct"] == 3 and result.counts["correct_untagged"] == 1
    assert result.per_class["joy"] == {"pool": 1, "correct": 1, "accepted": 1, "rationalized": 0, "capped": 0}
    assert [r["accepted"] for r in result.records] == [True, False, False, True]


def test_prompt_names_are_what_the_tag_uses():
    coe = get_label_set("meld", "coe")  # joy is spelled "joyful" in prompts
    pool = [pool_example(0, "joy", coe)]
    result = accept(pool, ["They cheer. <joyful>"], coe, TagOptions())
    assert result.accepted[0].target.endswith("<joyful>")
    assert result.accepted[0].meta["label"] == "joy"


def test_extract_rationale_rejects_contradictions_and_empty_reasoning():
    assert extract_rationale("Because of X. <anger>", MELD) == ("Because of X.", "anger")
    assert extract_rationale("<anger>", MELD) is None
    assert extract_rationale("Hmm <joy> no wait <anger>", MELD) is None
    assert extract_rationale("no tag at all anger", MELD) is None
    assert extract_rationale("  spaced \n out   text <sadness>", MELD) == ("spaced out text", "sadness")


def test_emorynlp_rationales_parse_against_emorynlp_labels_not_melds():
    """Reference bug 2: EmoryNLP generations were parsed against MELD's label list."""
    pool = [
        pool_example(0, "Mad", EMORYNLP),
        pool_example(1, "Mad", EMORYNLP),
        pool_example(2, "Joyful", EMORYNLP),
    ]
    texts = ["He shouts at them. <mad>", "He shouts at them. <anger>", "She is delighted. <joy>"]
    result = accept(pool, texts, EMORYNLP, TagOptions())
    assert [ex.id for ex in result.accepted] == ["steer:u0"]
    assert result.accepted[0].target == "He shouts at them. <mad>"
    assert result.records[0]["parsed"] == "Mad"  # the dataset's own spelling
    # A pool of EmoryNLP examples judged with MELD's labels is a clear error, not silent garbage.
    with pytest.raises(DataError, match="not in label set 'meld'"):
        accept(pool, texts, MELD, TagOptions())


def test_generations_record_how_each_answer_was_parsed_and_only_prompt_name_tags_are_stored():
    pool = [pool_example(i, "Mad", EMORYNLP) for i in range(4)]
    texts = [
        "He shouts at them. <mad>",
        "He shouts at them. <angry>",  # a synonym tag: right, but memory keeps the prompt's format
        "He is angry at Joey.",
        "Joey is talking to Ross about it.",  # a sentence: never edit-distance matched
    ]
    result = accept(pool, texts, EMORYNLP, TagOptions())
    assert [(r["parsed"], r["method"]) for r in result.records] == [
        ("Mad", "tag"),
        ("Mad", "tag"),
        ("Mad", "synonym"),
        (None, "none"),
    ]
    assert [ex.id for ex in result.accepted] == ["steer:u0"]
    assert result.counts["correct"] == 3 and result.counts["correct_untagged"] == 2


def test_rationalization_accepts_hinted_answers_but_stores_the_hint_free_prompt():
    pool = [pool_example(0, "anger"), pool_example(1, "fear"), pool_example(2, "joy")]
    texts = ["He is fine. <neutral>", "She is calm. <neutral>", "Friends cheer. <joy>"]
    retry = [ex for ex, t in zip(pool, texts, strict=True) if needs_hint(ex, t, MELD)]
    assert [ex.id for ex in retry] == ["steer:u0", "steer:u1"]
    hinted = {"steer:u0": "He slams the door after the insult. <anger>", "steer:u1": "Still calm. <neutral>"}

    off = accept(pool, texts, MELD, TagOptions(rationalization=False), hint_generations=hinted)
    on = accept(pool, texts, MELD, TagOptions(rationalization=True), hint_generations=hinted)
    assert [ex.id for ex in off.accepted] == ["steer:u2"]
    assert [ex.id for ex in on.accepted] == ["steer:u0", "steer:u2"]
    rationalized = on.accepted[0]
    assert rationalized.prompt == pool[0].prompt and "Hint" not in rationalized.prompt
    assert rationalized.target == "He slams the door after the insult. <anger>"
    assert rationalized.meta["steer_via"] == "rationalized"
    assert on.counts["rationalized"] == 1 and on.per_class["anger"]["rationalized"] == 1
    assert on.counts["correct"] == 1  # accuracy on the pool counts only the unhinted answers
    assert [ex.id for ex in on.remaining] == ["steer:u1"]


def test_rationalized_answers_that_lean_on_the_hint_are_rejected():
    pool = [pool_example(0, "anger"), pool_example(1, "anger")]
    texts = ["Calm. <neutral>", "Calm. <neutral>"]
    hinted = {
        "steer:u0": "As the hint says, the correct emotion is anger. <anger>",
        "steer:u1": "He was mocked in front of his boss. <anger>",
    }
    result = accept(pool, texts, MELD, TagOptions(rationalization=True), hint_generations=hinted)
    assert [ex.id for ex in result.accepted] == ["steer:u1"]


def test_hint_prompt_puts_the_gold_label_before_the_answer_header():
    coe = get_label_set("meld", "coe")
    prompt = hint_prompt(pool_example(0, "anger").prompt, "anger", coe)
    assert "<angry>" in prompt and prompt.endswith(ANSWER_HEADER)


def test_per_class_cap_limits_each_class_deterministically():
    pool = [pool_example(i, "neutral") for i in range(6)] + [pool_example(10 + i, "joy") for i in range(2)]
    texts = ["It is a plain remark. <neutral>"] * 6 + ["They laugh. <joy>"] * 2
    capped = accept(pool, texts, MELD, TagOptions(max_accept_per_class=2), round_no=3)
    uncapped = accept(pool, texts, MELD, TagOptions(), round_no=3)
    assert len(uncapped.accepted) == 8
    assert sum(ex.meta["label"] == "neutral" for ex in capped.accepted) == 2
    assert sum(ex.meta["label"] == "joy" for ex in capped.accepted) == 2
    assert capped.per_class["neutral"]["capped"] == 4
    assert len(capped.remaining) == 4 and all(ex.meta["label"] == "neutral" for ex in capped.remaining)
    # The choice does not depend on the order the pool arrives in (rank sharding, file order).
    order = list(range(8))
    random.Random(1).shuffle(order)
    shuffled = accept(
        [pool[i] for i in order],
        [texts[i] for i in order],
        MELD,
        TagOptions(max_accept_per_class=2),
        round_no=3,
    )
    assert {ex.id for ex in shuffled.accepted} == {ex.id for ex in capped.accepted}


def test_cap_prefers_direct_answers_over_rationalized_ones():
    pool = [pool_example(0, "anger"), pool_example(1, "anger")]
    texts = ["Calm. <neutral>", "He yells. <anger>"]
    hinted = {"steer:u0": "Insulted, he snaps. <anger>"}
    result = accept(
        pool, texts, MELD, TagOptions(rationalization=True, max_accept_per_class=1), hint_generations=hinted
    )
    assert [ex.id for ex in result.accepted] == ["steer:u1"]


def test_stopping_rule():
    opts = TagOptions(rounds=3, min_accepted=2)
    assert stopping_rule(1, pool_left=5, accepted=3, options=opts) == (True, None)
    assert stopping_rule(1, pool_left=0, accepted=3, options=opts) == (False, STOP_POOL_EMPTY)
    assert stopping_rule(1, pool_left=5, accepted=1, options=opts) == (False, STOP_FEW_ACCEPTED)
    assert stopping_rule(3, pool_left=5, accepted=3, options=opts) == (False, STOP_MAX_ROUNDS)


def test_generations_must_match_the_pool():
    with pytest.raises(ValueError, match="1 generations for 2 pool examples"):
        accept([pool_example(0, "joy"), pool_example(1, "joy")], ["x <joy>"], MELD, TagOptions())


def test_a_rationale_that_names_another_emotion_is_never_accepted():
    # The scored rule accepts when the label scored after the rationale is gold, whatever the
    # rationale says; real round-1 generations on MELD include "The emotion shown is joy." scored
    # as anger. Stored, that pair would teach the model a contradiction.
    pool = [pool_example(i, lab) for i, lab in enumerate(["anger", "anger", "joy", "neutral", "neutral"])]
    texts = [
        "The emotion shown is joy.",  # scored anger: names joy
        "He shouts at his brother. <angry>",  # names anger only (a tag)
        "Phoebe is glad to see them.",  # a synonym of joy, gold joy
        "She is not angry, only tired.",  # names anger, gold neutral: rejected (no negation handling)
        "The cooking teacher explains the recipe.",  # names nothing: accepted
    ]
    scored = ["anger", "anger", "joy", "neutral", "neutral"]
    opts = SteerOptions(rationalization=False)
    result = accept(pool, texts, MELD, opts, scored=scored)
    assert [ex.id for ex in result.accepted] == ["steer:u1", "steer:u2", "steer:u4"]
    assert [bool(r.get("contradicts")) for r in result.records] == [True, False, False, True, False]
    assert result.counts["contradicting"] == 2 and result.counts["correct"] == 5
    lax = accept(pool, texts, MELD, opts, scored=scored, consistent=False)
    assert len(lax.accepted) == 5 and lax.counts["contradicting"] == 0


def test_a_contradicting_answer_goes_to_rationalization_and_a_contradicting_hint_is_rejected():
    pool = [pool_example(0, "anger"), pool_example(1, "fear")]
    texts = ["Monica expresses joy.", "Monica expresses joy."]
    scored = ["anger", "joy"]
    opts = SteerOptions()
    # the first is scored right but names joy: with the consistency rule it needs a hint too
    assert [needs_hint(ex, t, MELD, opts, a, consistent=True) for ex, t, a in zip(pool, texts, scored, strict=True)] == [True, True]  # fmt: skip
    assert not needs_hint(pool[0], texts[0], MELD, opts, "anger", consistent=False)
    hinted = {"steer:u0": "Her brother broke her phone again.", "steer:u1": "She is surprised by the noise."}
    checked = {"steer:u0": "anger", "steer:u1": "fear"}
    result = accept(pool, texts, MELD, opts, scored=scored, hint_generations=hinted, hint_checked=checked)
    assert [ex.id for ex in result.accepted] == ["steer:u0"]
    assert result.accepted[0].meta["steer_via"] == "rationalized"
    assert result.records[1].get("hint_contradicts") and result.counts["contradicting"] == 2


def test_labels_named_finds_every_label_a_text_names():
    from coe_runtime.data.answers import labels_named

    assert labels_named("She is glad, then <angry>, then sad.", MELD) == {"joy", "anger", "sadness"}
    assert labels_named("Nothing here; unhappy is a synonym, madness is not.", MELD) == {"sadness"}
    assert labels_named("Chandler is mad at Joey.", EMORYNLP) == {"Mad"}
    assert labels_named("", MELD) == frozenset()


def test_a_hinted_rationale_that_repeats_the_hint_is_rejected():
    from coe_runtime.steer import leans_on_hint

    # real MELD round-2 rationalizations copied the hint line's wording
    assert leans_on_hint("The emotion is neutral; explain why the clues show it. <neutral>", "neutral")
    assert leans_on_hint("As the hint says, it is anger.", "angry")
    assert leans_on_hint("so the emotion is confidence; explain why the clue shows it", "neutral")
    assert not leans_on_hint("The emotion is neutral.", "neutral")  # a restatement, not the hint's words
    assert not leans_on_hint("Ross explains why he left.", "neutral")
    pool = [pool_example(0, "neutral"), pool_example(1, "neutral")]
    texts = ["She is happy.", "She is happy."]
    hinted = {
        "steer:u0": "The emotion is neutral; explain why the clues show it.",
        "steer:u1": "She only asks the time.",
    }
    checked = {"steer:u0": "neutral", "steer:u1": "neutral"}
    result = accept(
        pool,
        texts,
        MELD,
        SteerOptions(),
        scored=["joy", "joy"],
        hint_generations=hinted,
        hint_checked=checked,
    )
    assert [ex.id for ex in result.accepted] == ["steer:u1"]
    assert result.records[0].get("hint_leaned") and result.counts["hint_leaned"] == 1


def test_only_listed_step_kinds_carry_a_kind_version():
    from coe_runtime.fingerprint import identity
    from coe_runtime.step import STEP_KIND_VERSIONS

    assert (
        identity({"kind": "steer_round", "output": "x"}, "p")["kind_version"]
        == STEP_KIND_VERSIONS["steer_round"]
    )
    assert "kind_version" not in identity({"kind": "train", "output": "x"}, "p")
