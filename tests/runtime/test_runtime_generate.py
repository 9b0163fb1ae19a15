from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from coe_runtime.evaluate import run_generate
from coe_runtime.models.generate import (
    AnswerCompleteStop,
    Generator,
    encode_prompt,
    length_sorted_batches,
)
from coe_runtime.models.loading import load_model, load_tokenizer
from coe_runtime.step import GenerationSettings, ModelRef, parse_step
from tests.runtime.runtime_fixtures import synthetic_examples

REF = ModelRef()


@pytest.fixture(scope="module")
def base_generator() -> Generator:
    return Generator(load_model(REF), load_tokenizer(REF), label_names=["joy", "anger", "sadness", "neutral"])


def test_encode_prompt_cuts_from_the_left_and_keeps_bos():
    tok = load_tokenizer(REF)
    prompt = "first words that may go " * 20 + "THE QUESTION AT THE END?"
    full = encode_prompt(tok, prompt)
    cut = encode_prompt(tok, prompt, max_tokens=12)
    assert len(cut) == 12 and len(full) > 12
    assert cut[0] == tok.bos_token_id
    assert cut[1:] == full[-11:]
    assert tok.decode(cut, skip_special_tokens=True).endswith("AT THE END?")


def test_length_sorted_batches_cover_every_index_once():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    batches = length_sorted_batches(lengths, 3)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert [lengths[i] for i in batches[0]] == [9, 7, 5]


def test_batched_generation_equals_one_at_a_time_in_original_order(base_generator):
    prompts = [ex.prompt for ex in synthetic_examples(11, seed=3)]
    settings = GenerationSettings(max_new_tokens=8, batch_size=4)
    batched = base_generator.generate(prompts, settings)
    single = [base_generator.generate([p], settings)[0] for p in prompts]
    assert batched == single
    assert all(o.n_new_tokens <= 8 for o in batched)
    assert [o.n_prompt_tokens for o in batched] == [
        len(encode_prompt(base_generator.tokenizer, p)) for p in prompts
    ]


def test_prefill_projects_only_the_last_position_and_changes_no_output(base_generator, monkeypatch):
    assert base_generator._last_logits_kwargs() == {"logits_to_keep": 1}
    prompts = [ex.prompt for ex in synthetic_examples(6, seed=6)]
    settings = GenerationSettings(max_new_tokens=6, batch_size=3)
    fast = base_generator.generate(prompts, settings)
    monkeypatch.setattr(base_generator, "_last_logits_kwargs", lambda: {})
    assert base_generator.generate(prompts, settings) == fast


def test_generation_reports_progress_per_batch(base_generator, monkeypatch, capsys):
    prompts = [ex.prompt for ex in synthetic_examples(7, seed=5)]
    seen: list[tuple[int, int]] = []
    base_generator.generate(
        prompts,
        GenerationSettings(max_new_tokens=2, batch_size=3),
        on_progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(3, 7), (6, 7), (7, 7)]

    # the step's reporter: throttled (first batches fall inside the interval), the end always reported
    from coe_runtime import progress

    clock = iter([0.0, 1.0, 2.0, 30.0, 31.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    update = progress.throttled("test", "generate", every_s=10)
    for done in (1, 2, 3, 4):
        update(done, 4)
    events = [progress.parse(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["done"], e["total"]) for e in events] == [(3, 4), (4, 4)]
    assert events[0]["eta_s"] == 10.0 and events[1]["eta_s"] == 0.0


def test_sampling_is_reproducible_and_differs_from_greedy(base_generator):
    prompts = [ex.prompt for ex in synthetic_examples(4, seed=4)]
    sample = GenerationSettings(max_new_tokens=10, do_sample=True, temperature=1.5, top_p=0.9)
    a = base_generator.generate(prompts, sample)
    b = base_generator.generate(prompts, sample)
    greedy = base_generator.generate(prompts, GenerationSettings(max_new_tokens=10))
    assert a == b
    assert a != greedy


def test_answer_complete_stop_needs_a_known_label_tag():
    tok = load_tokenizer(REF)
    stop = AnswerCompleteStop(tok, ["joy", "anger"])
    assert stop.is_complete(tok(" so the answer is <joy>", add_special_tokens=False)["input_ids"])
    assert not stop.is_complete(tok(" so the answer is <jo", add_special_tokens=False)["input_ids"])
    assert not stop.is_complete(tok(" a <b> tag", add_special_tokens=False)["input_ids"])
    assert AnswerCompleteStop(tok).is_complete(tok(" a <b>", add_special_tokens=False)["input_ids"])


@pytest.mark.slow
def test_trained_generation_stops_at_the_label_tag(trained):
    gen = Generator.load(
        REF, str(trained["out"] / "adapter"), device="cpu", label_names=["joy", "anger", "sadness", "neutral"]
    )
    prompts = [ex.prompt for ex in synthetic_examples(8, seed=9)]
    stopped = gen.generate(prompts, GenerationSettings(max_new_tokens=24))
    full = gen.generate(prompts, GenerationSettings(max_new_tokens=24, stop_at_label=False))
    tagged = [o for o in stopped if o.text.rstrip().endswith(">")]
    assert tagged, "the trained adapter should answer with a label tag"
    for s, f in zip(stopped, full, strict=True):
        assert f.text.startswith(s.text)
        assert s.n_new_tokens <= f.n_new_tokens


class ScriptedLM(torch.nn.Module):
    """A stand-in model that always continues with a fixed successor of the last token and never
    emits EOS: the only way for a row to stop early is the label-tag check."""

    def __init__(self, successor: dict[int, int], vocab_size: int, filler: int):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.successor, self.vocab_size, self.filler = successor, vocab_size, filler
        self.config = SimpleNamespace(max_position_embeddings=512)
        self.calls = []

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=True, cache=None):
        self.calls.append(input_ids.shape[0])
        logits = torch.full((*input_ids.shape, self.vocab_size), -1e9)
        for row, tok in enumerate(input_ids[:, -1].tolist()):
            logits[row, -1, self.successor.get(tok, self.filler)] = 0.0
        return SimpleNamespace(logits=logits)


def test_rows_stop_at_their_label_tag_and_leave_the_batch():
    tok = load_tokenizer(REF)
    filler = tok(" x", add_special_tokens=False)["input_ids"][0]
    successor = {}
    starts = {}
    for name, script in (("early", " <joy>"), ("late", " well, so:<anger>")):
        ids = tok(script, add_special_tokens=False)["input_ids"]
        prompt_end = tok(f" {name}", add_special_tokens=False)["input_ids"][-1]
        chain = [prompt_end, *ids]
        for a, b in zip(chain, chain[1:], strict=False):
            assert a not in successor or successor[a] == b
            successor[a] = b
        successor[ids[-1]] = filler  # after the tag the text would go on and on
        starts[name] = len(ids)
    model = ScriptedLM(successor, len(tok), filler)
    gen = Generator(model, tok, label_names=["joy", "anger"])
    prompts = ["p early", "p late", "p early", "p late"]
    out = gen.generate(prompts, GenerationSettings(max_new_tokens=30, batch_size=4))
    assert [o.text for o in out] == [" <joy>", " well, so:<anger>"] * 2
    assert [o.n_new_tokens for o in out] == [starts["early"], starts["late"]] * 2
    # Finished rows leave the batch: after the early rows stop, only two rows are decoded.
    assert model.calls[0] == 4 and model.calls[-1] == 2
    assert out == [gen.generate([p], GenerationSettings(max_new_tokens=30))[0] for p in prompts]
    unstopped = gen.generate(prompts[:1], GenerationSettings(max_new_tokens=30, stop_at_label=False))
    assert unstopped[0].n_new_tokens == 30


@pytest.mark.slow
def test_run_generate_writes_predictions_in_input_order_and_metrics(trained, synthetic_files, tmp_path):
    out = tmp_path / "test-out"
    step = parse_step(
        {
            "kind": "generate",
            "name": "test",
            "output": str(out),
            "input_file": str(synthetic_files["test"]),
            "adapter": str(trained["out"] / "adapter"),
            "label_set": {"name": "meld"},
            "generation": {"max_new_tokens": 6, "batch_size": 4},
        }
    )
    summary = run_generate(step)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"te-{i}" for i in range(13)]
    assert set(rows[0]) == {"id", "output", "parsed_label", "gold", "parse_method", "decoding"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 13 and metrics["label_set"] == "meld"
    assert summary["examples"] == 13
    assert (out / "MANIFEST.json").is_file()
