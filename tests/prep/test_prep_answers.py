"""Answer parsing: tag, label word, synonym, fuzzy (short answers only), none — per dataset."""

from __future__ import annotations

import pytest

from coe_runtime.data.answers import FALLBACK_METHODS, PARSE_METHODS, parse_answer
from coe_runtime.data.labels import BUILTIN, EMORYNLP, IEMOCAP, MELD, LabelSet, get_label_set
from coe_runtime.errors import ConfigError
from coe_runtime.metrics import compute_metrics

MELD_COE = get_label_set("meld", "coe")  # joy/anger/sadness spelt joyful/angry/sad in prompts


def parsed(text: str, label_set: LabelSet) -> tuple[str | None, str]:
    p = parse_answer(text, label_set)
    return p.label, p.method


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("joy", "joy"),
        ("joyful", "joy"),
        ("happy", "joy"),
        ("Happiness", "joy"),
        ("anger", "anger"),
        ("ANGRY", "anger"),
        ("mad", "anger"),
        ("sadness", "sadness"),
        ("sad", "sadness"),
        ("unhappy", "sadness"),
        ("scared", "fear"),
        ("afraid", "fear"),
        ("fearful", "fear"),
        ("disgusted", "disgust"),
        ("surprised", "surprise"),
        ("shocked", "surprise"),
        ("neutral", "neutral"),
    ],
)
def test_meld_names_and_synonyms_map_to_melds_labels_under_both_namings(text, label):
    assert parse_answer(text, MELD).label == label
    assert parse_answer(text, MELD_COE).label == label


def test_meld_coe_prompt_names_are_labels_the_dataset_spelling_a_synonym():
    assert parsed("She is joyful.", MELD_COE) == ("joy", "label")
    assert parsed("She feels joy.", MELD_COE) == ("joy", "synonym")
    assert parsed("She feels joy.", MELD) == ("joy", "label")
    assert parsed("He is angry.", MELD) == ("anger", "synonym")


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("angry", "Mad"),
        ("anger", "Mad"),
        ("Mad", "Mad"),
        ("scared", "Scared"),
        ("fear", "Scared"),
        ("afraid", "Scared"),
        ("joy", "Joyful"),
        ("happy", "Joyful"),
        ("peaceful", "Peaceful"),
        ("calm", "Peaceful"),
        ("powerful", "Powerful"),
        ("confident", "Powerful"),
        ("sadness", "Sad"),
        ("unhappy", "Sad"),
        ("Neutral", "Neutral"),
    ],
)
def test_emorynlp_synonyms_map_to_emorynlps_own_labels(text, label):
    assert parse_answer(text, EMORYNLP).label == label


def test_emorynlp_kinds():
    assert parsed("He is angry at Joey.", EMORYNLP) == ("Mad", "synonym")
    assert parsed("He is mad at Joey.", EMORYNLP) == ("Mad", "label")
    assert parsed("Because he shouts. <angry>", EMORYNLP) == ("Mad", "tag")


def test_iemocap_synonyms():
    assert parsed("joy", IEMOCAP) == ("happy", "synonym")
    assert parsed("frustration", IEMOCAP) == ("frustrated", "synonym")
    assert parsed("thrilled", IEMOCAP) == ("excited", "synonym")


def test_matching_is_whole_word_unhappy_is_not_happy():
    assert parsed("She is unhappy.", MELD) == ("sadness", "synonym")
    assert parsed("She is unhappy.", EMORYNLP) == ("Sad", "synonym")
    assert parsed("Rachel seems unhappy today.", IEMOCAP) == ("sad", "synonym")  # not IEMOCAP's "happy"
    # "madness" is not "mad", and a sentence around it is never fuzzy-matched.
    assert parsed("This is madness, says Ross to everyone.", MELD) == (None, "none")
    assert parsed("madness", EMORYNLP) == (None, "none")  # not a misspelt "sadness" either


def test_a_rationale_sentence_is_parsed_by_its_words_never_by_edit_distance():
    assert parsed("Joey expresses joy.", MELD) == ("joy", "label")
    assert parsed("Joey expresses joy.", MELD_COE) == ("joy", "synonym")
    assert parsed("Joey expresses joy.", EMORYNLP) == ("Joyful", "synonym")
    # The old fallback gave every sentence some label by edit distance ("surprise").
    for ls in (MELD, MELD_COE, EMORYNLP, IEMOCAP):
        assert parsed("Joey is talking to Ross about it.", ls) == (None, "none")


def test_short_misspellings_are_fuzzy_matched():
    assert parsed("joyfull", MELD) == ("joy", "fuzzy")
    assert parsed("joyfull", MELD_COE) == ("joy", "fuzzy")
    assert parsed("Joyfull.", EMORYNLP) == ("Joyful", "fuzzy")
    assert parsed("suprised", MELD) == ("surprise", "fuzzy")
    assert parsed("very angy", MELD) == ("anger", "fuzzy")
    # The last tag's content is a short answer too.
    assert parsed("Because Chandler made a joke. <joyfull>", MELD) == ("joy", "fuzzy")


def test_short_answers_far_from_every_label_stay_unparsed():
    for text in ("ok", "no idea", "banana", "I do not know", "", "   ", "<>"):
        assert parsed(text, MELD) == (None, "none"), text


def test_the_tag_comes_first_then_a_label_word_then_a_synonym():
    # The last known tag wins over words in the rationale.
    assert parsed("She was sad before, now happy. <joy>", MELD) == ("joy", "tag")
    assert parsed("Hmm <anger> no, <sadness>", MELD) == ("sadness", "tag")
    assert parsed("<Joyful>", MELD_COE) == ("joy", "tag")
    # An unknown tag is skipped; a prompt name anywhere beats a synonym that comes earlier.
    assert parsed("Happy at first, then sad. <bored>", MELD_COE) == ("sadness", "label")
    assert parsed("Happy at first, then unhappy.", MELD_COE) == ("joy", "synonym")


def test_every_parse_records_its_kind_and_fallbacks_are_fuzzy_or_none():
    texts = ["<joy>", "joy", "happy", "joyfull", "Joey is talking to Ross about it."]
    results = [parse_answer(t, MELD) for t in texts]
    assert [r.method for r in results] == ["tag", "label", "synonym", "fuzzy", "none"]
    assert set(PARSE_METHODS) == {r.method for r in results}
    assert set(FALLBACK_METHODS) == {"fuzzy", "none"}
    m = compute_metrics(["joy"] * 5, [r.label for r in results], MELD, [r.method for r in results])
    assert m["unparsed"] == 1 and m["accuracy"] == 80.0 and m["fallback_share"] == 40.0
    assert m["parse_methods"] == {"fuzzy": 1, "label": 1, "none": 1, "synonym": 1, "tag": 1}


def test_each_builtin_synonym_names_one_label_and_survives_renaming():
    for ls in BUILTIN.values():
        names, synonyms = ls.vocabulary()
        assert not set(names) & set(synonyms)
        assert set(names.values()) == set(ls.labels)
    renamed = EMORYNLP.with_prompt_names({"Neutral": "calm"})  # a synonym of Peaceful becomes a name
    assert parsed("calm", renamed) == ("Neutral", "label")
    assert parsed("serene", renamed) == ("Peaceful", "synonym")
    assert LabelSet.from_dict(MELD_COE.to_dict()) == MELD_COE
    assert LabelSet.from_dict({k: v for k, v in MELD.to_dict().items() if k != "synonyms"}) == MELD


def test_a_word_naming_two_labels_is_a_config_error():
    with pytest.raises(ConfigError, match="names both"):
        LabelSet("x", ("a", "b"), ("a", "b"), (("glad",), ("glad",)))
