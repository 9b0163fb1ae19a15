"""Task builders on the demo data (and a few real MELD / EmoryNLP dialogues when present)."""

from __future__ import annotations

from collections import Counter

import pytest

from coe_runtime.data.clue_file import DEMO_CLUES, load_clues
from coe_runtime.data.dialogue import Dialogue, Example, Utterance
from coe_runtime.data.labels import get_label_set
from coe_runtime.data.readers import read_file
from coe_runtime.data.seeds import Seed, load_seeds
from coe_runtime.errors import ConfigError, DataError
from coe_runtime.prompts.builder import PromptBudgetError
from coe_runtime.prompts.tasks import build_examples, build_steer_sets, subset_dialogues, subset_examples

DEMO = get_label_set("demo", "coe")


@pytest.fixture(scope="module")
def demo_train() -> list[Dialogue]:
    return read_file(None, "demo", "train", "demo")


@pytest.fixture(scope="module")
def demo_clues():
    return load_clues(str(DEMO_CLUES))


def test_erc_examples_cover_every_utterance_with_label_tags(demo_train, demo_clues):
    examples = build_examples(demo_train, "erc", DEMO, demo_clues)
    utterances = [u for d in demo_train for u in d.utterances]
    assert [ex.id for ex in examples] == [f"erc:{u.uid}" for u in utterances]
    for ex, u in zip(examples, utterances, strict=True):
        assert ex.target == f"<{DEMO.to_prompt(u.label)}>"
        assert ex.meta["label"] == u.label and ex.meta["label_set"] == "demo" and ex.meta["split"] == "train"
        assert u.text in ex.prompt and "### Personas" in ex.prompt and "### Scene" in ex.prompt
    assert {ex.target for ex in examples} == {f"<{p}>" for p in DEMO.prompt_names}
    assert "<joyful>" in {ex.target for ex in examples}  # CoE naming reaches the target


def test_auxiliary_tasks(demo_train, demo_clues):
    roleplay = build_examples(demo_train, "roleplay", DEMO, demo_clues)
    speaker = build_examples(demo_train, "speaker_id", DEMO, demo_clues)
    d = demo_train[0]
    assert roleplay[1].target == d.utterances[1].text and d.utterances[1].text not in roleplay[1].prompt
    assert d.utterances[0].text in roleplay[1].prompt  # the history it continues
    assert speaker[1].target == d.utterances[1].speaker
    assert all(ex.target in ex.prompt.split("Candidates:")[1] for ex in speaker)


def test_reference_export_has_input_and_target_only(demo_train):
    import json

    ex = build_examples(demo_train[:1], "erc", DEMO)[0]
    assert json.loads(ex.to_reference()) == {"input": ex.prompt, "target": ex.target}


def test_steer_memory_from_seeds_and_pool_from_the_rest(demo_train, demo_clues):
    seeds = load_seeds("demo")
    memory, pool = build_steer_sets(demo_train, DEMO, seeds, demo_clues)
    assert len(memory) == len(seeds) and {m.meta["uid"] for m in memory} == {s.uid for s in seeds}
    assert len(memory) + len(pool) == sum(len(d.utterances) for d in demo_train)
    assert not {m.meta["uid"] for m in memory} & {p.meta["uid"] for p in pool}
    by_uid = {s.uid: s for s in seeds}
    for m in memory:
        assert m.target == f"{by_uid[m.meta['uid']].rationale} <{DEMO.to_prompt(m.meta['label'])}>"
        assert m.meta["steer_set"] == "memory"
    assert all(p.target == "" and p.meta["steer_set"] == "pool" for p in pool)
    assert Counter(m.meta["label"] for m in memory).keys() == set(DEMO.labels)  # every label seeded
    combined = build_examples(demo_train, "steer", DEMO, demo_clues, seeds=seeds)
    assert [e.id for e in combined] == [e.id for e in memory + pool]


def test_steer_seed_errors(demo_train):
    u = demo_train[0].utterances[0]
    wrong = next(lab for lab in DEMO.labels if lab != u.label)
    with pytest.raises(DataError, match=f"says label '{wrong}' but the data says '{u.label}'") as err:
        build_steer_sets(demo_train, DEMO, [Seed(u.uid, wrong, "because", 3, "my-seeds.jsonl")])
    assert str(err.value).startswith("my-seeds.jsonl:3:")
    with pytest.raises(DataError, match="not an utterance of the"):
        build_steer_sets(demo_train, DEMO, [Seed("nope", "joy", "because", 1, "s.jsonl")])
    with pytest.raises(ConfigError, match="seed rationales"):
        build_examples(demo_train, "steer", DEMO)


def test_label_outside_the_label_set_is_refused():
    d = Dialogue("x", "demo", "train", [Utterance("x-u0", ("A",), "hi", "Joyful", 7)], source="mine.jsonl")
    with pytest.raises(
        DataError, match=r"mine.jsonl:7: utterance x-u0: label 'Joyful' is not in label set 'demo'"
    ):
        build_examples([d], "erc", DEMO)


def test_prompts_that_cannot_fit_are_all_reported_at_once():
    long = " ".join(["word"] * 80)
    d = Dialogue(
        "x",
        "demo",
        "train",
        [
            Utterance(f"x-u{i}", ("A",), text, "neutral", i + 1)
            for i, text in enumerate(["hi", long, long + " more"])
        ],
        source="mine.jsonl",
    )
    with pytest.raises(PromptBudgetError) as err:
        build_examples([d], "erc", DEMO, max_length=100)
    message = str(err.value)
    assert message.startswith("mine.jsonl:3: 2 erc prompts do not fit max_length 100")
    assert f"utterance x-u2 with {err.value.required} tokens" in message
    assert err.value.required > 100
    assert len(build_examples([d], "erc", DEMO, max_length=err.value.required)) == 3


def _examples(labels: list[str]) -> list[Example]:
    return [Example(f"erc:{i}", "erc", "p", "t", {"label": lab}) for i, lab in enumerate(labels)]


def test_subset_examples_is_stratified_deterministic_and_ordered():
    examples = _examples(["neutral"] * 60 + ["joy"] * 30 + ["fear"] * 9 + ["anger"] * 1)
    sub = subset_examples(examples, 20, seed=1)
    assert len(sub) == 20
    counts = Counter(e.meta["label"] for e in sub)
    assert (
        counts["neutral"] in (11, 12) and counts["joy"] == 6 and counts["anger"] == 1 and counts["fear"] >= 1
    )
    assert [int(e.id[4:]) for e in sub] == sorted(int(e.id[4:]) for e in sub)
    assert sub == subset_examples(examples, 20, seed=1)
    assert sub != subset_examples(examples, 20, seed=2)
    assert subset_examples(examples, 0) == examples and subset_examples(examples, 500) == examples


def test_subset_dialogues_keeps_seed_dialogues(demo_train):
    keep = {demo_train[-1].utterances[0].uid}
    sub = subset_dialogues(demo_train, 5, seed=0, keep_uids=keep)
    assert len(sub) == 5 and sub[-1] is demo_train[-1]
    assert [demo_train.index(d) for d in sub] == sorted(demo_train.index(d) for d in sub)


@pytest.mark.realdata
def test_real_meld_and_emorynlp_dialogues(data_dir):
    meld = read_file(data_dir / "meld" / "dev_sent_emo.csv", "meld", "dev", "meld")[:3]
    meld_ls = get_label_set("meld", "coe")
    examples = build_examples(meld, "erc", meld_ls, max_length=256)
    assert len(examples) == sum(len(d.utterances) for d in meld)
    assert all(e.meta["n_tokens"] <= 256 and e.prompt.endswith("### Answer\n") for e in examples)
    emory = read_file(data_dir / "emorynlp" / "emorynlp_dev_final.csv", "emorynlp", "dev", "emorynlp")
    multi = next(d for d in emory if any(len(u.speakers) > 1 for u in d.utterances))
    speaker = build_examples([multi], "speaker_id", get_label_set("emorynlp"))
    both = next(e for e in speaker if " & " in e.target)
    assert both.target in both.prompt.split("Candidates:")[1]
    erc = build_examples([multi], "erc", get_label_set("emorynlp"))
    assert {e.target for e in erc} <= {f"<{p}>" for p in get_label_set("emorynlp").prompt_names}
