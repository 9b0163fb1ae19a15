"""The ERC answer format (``label_format``): the prompt's answer instruction and the targets the
prepare step writes; STEeR keeps its tags in either format."""

from __future__ import annotations

import json

import pytest

from coe_runtime.data.answers import parse_answer
from coe_runtime.data.dialogue import read_examples
from coe_runtime.data.labels import get_label_set
from coe_runtime.data.readers import read_file
from coe_runtime.errors import ConfigError
from coe_runtime.prepare import run_prepare
from coe_runtime.prompts.builder import build_prompt, estimate_tokens, required_length
from coe_runtime.prompts.tasks import build_examples
from coe_runtime.step import PrepareStep

DEMO = get_label_set("demo", "coe")


@pytest.fixture(scope="module")
def demo_train():
    return read_file(None, "demo", "train", "demo")


def test_word_format_targets_are_the_prompt_name_after_a_space(demo_train):
    tagged = build_examples(demo_train, "erc", DEMO)
    words = build_examples(demo_train, "erc", DEMO, label_format="word")
    assert [ex.id for ex in words] == [ex.id for ex in tagged]
    for t, w in zip(tagged, words, strict=True):
        name = DEMO.to_prompt(t.meta["label"])
        assert t.target == f"<{name}>" and w.target == f" {name}"
        assert "in angle brackets, like <option>" in t.prompt
        assert "Answer with one option, as a single word." in w.prompt and "angle brackets" not in w.prompt
        assert t.prompt.endswith("### Answer\n") and w.prompt.endswith("### Answer:")
        assert w.prompt[: -len("### Answer:")] == t.prompt[: -len("### Answer\n")].replace(
            " in angle brackets, like <option>.", ", as a single word."
        )
        # The parser reads a bare word answer.
        assert parse_answer(w.target, DEMO).label == t.meta["label"]
    assert " joyful" in {ex.target for ex in words}


def test_only_erc_changes_with_the_format(demo_train):
    for task in ("roleplay", "speaker_id"):
        assert build_examples(demo_train, task, DEMO, label_format="word") == build_examples(
            demo_train, task, DEMO
        )


def test_unknown_label_format_is_refused(demo_train):
    d = demo_train[0]
    with pytest.raises(ConfigError, match="label format"):
        build_prompt(d, 0, "erc", DEMO, label_format="json")
    with pytest.raises(ConfigError, match="label format"):
        required_length(d, 0, "erc", DEMO, label_format="json")
    with pytest.raises(Exception, match="label_format"):
        PrepareStep.model_validate(
            {"name": "p", "output": "/x", "dataset": {"format": "demo"}, "label_format": "json"}
        )


def test_prepare_writes_word_targets_and_keeps_steer_tags(tmp_path):
    out = tmp_path / "store" / "exp" / "prepare"
    step = PrepareStep.model_validate(
        {
            "name": "prepare",
            "output": f"file://{out}",
            "dataset": {"format": "demo"},
            "tasks": ["erc", "steer"],
            "label_format": "word",
        }
    )
    summary = run_prepare(step, count_tokens=estimate_tokens)
    assert summary["label_format"] == "word"
    assert json.loads((out / "summary.json").read_text())["label_format"] == "word"
    for split in ("train", "dev", "test"):
        for ex in read_examples(out / f"erc-{split}.jsonl"):
            assert ex.target.startswith(" ") and "<" not in ex.target
    memory = read_examples(out / "memory-r0.jsonl")
    assert memory and all(ex.target.rstrip().endswith(">") for ex in memory)
    ref = [json.loads(line) for line in (out / "reference" / "erc-test.json").read_text().splitlines()]
    assert all(r["target"].startswith(" ") for r in ref)
