from __future__ import annotations

import json

import pytest
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import TrainerCallback

from coe_runtime.errors import ConfigError, DataError
from coe_runtime.models.loading import attach_adapter, load_model, load_tokenizer
from coe_runtime.step import ModelRef, parse_step
from coe_runtime.train import (
    IGNORE_INDEX,
    LengthGroupedBatchSampler,
    PaddingCollator,
    ShuffledBatchSampler,
    build_trainable_model,
    resolve_deepspeed_config,
    run_train,
    tokenize_example,
)
from tests.runtime.conftest import train_config

REF = ModelRef()


def test_label_mask_covers_only_target_and_eos():
    tok = load_tokenizer(REF)
    prompt, target = "Speaker A: well okay. The answer is", " <neutral>"
    f = tokenize_example(tok, prompt, target, max_length=256)
    target_ids = tok(target, add_special_tokens=False)["input_ids"]
    n_prompt = len(f["input_ids"]) - len(target_ids) - 1
    assert f["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert f["labels"][n_prompt:] == target_ids + [tok.eos_token_id]
    assert f["input_ids"][n_prompt:] == target_ids + [tok.eos_token_id]
    assert f["input_ids"][0] == tok.bos_token_id


def test_long_prompt_is_cut_from_the_left_never_the_target():
    tok = load_tokenizer(REF)
    prompt = "old history line. " * 40 + "Which emotion?"
    f = tokenize_example(tok, prompt, " <joy>", max_length=20)
    assert len(f["input_ids"]) == 20
    n_target = sum(lab != IGNORE_INDEX for lab in f["labels"])
    assert tok.decode(f["input_ids"][-n_target:], skip_special_tokens=True) == " <joy>"
    assert tok.decode(f["input_ids"][:-n_target], skip_special_tokens=True).endswith("Which emotion?")
    with pytest.raises(DataError, match="targets are never truncated"):
        tokenize_example(tok, prompt, " a very long target " * 10, max_length=20, where="f.jsonl (example x)")


def test_collator_pads_right_with_masked_labels():
    batch = PaddingCollator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def _padding(lengths, batches):
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_length_grouped_batches_cover_all_once_with_less_padding_and_fixed_per_epoch():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(5, 300) for _ in range(203)]
    grouped = LengthGroupedBatchSampler(lengths, 8, seed=1)
    plain = ShuffledBatchSampler(lengths, 8, seed=1)
    for sampler in (grouped, plain):
        assert sorted(i for b in sampler for i in b) == list(range(203))
        assert len(list(sampler)) == len(sampler) == 26
    assert _padding(lengths, list(grouped)) * 5 < _padding(lengths, list(plain))
    first = list(grouped)
    assert list(grouped) == first  # same epoch: same batches (resume skips exactly these)
    grouped.set_epoch(1)
    assert list(grouped) != first


def test_deepspeed_configs_resolve(tmp_path):
    assert resolve_deepspeed_config("zero2")["zero_optimization"]["stage"] == 2
    assert resolve_deepspeed_config("zero3")["zero_optimization"]["stage"] == 3
    assert resolve_deepspeed_config({"zero_optimization": {"stage": 1}}) == {
        "zero_optimization": {"stage": 1}
    }
    p = tmp_path / "ds.json"
    p.write_text('{"zero_optimization": {"stage": 2}}')
    assert resolve_deepspeed_config(str(p))["zero_optimization"]["stage"] == 2
    with pytest.raises(ConfigError, match="unknown bundled config"):
        resolve_deepspeed_config("zero9")
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        resolve_deepspeed_config(str(p))


def _logits(model, tok, text="Speaker A: so great. What is the emotion of A? The answer is"):
    model.eval()
    with torch.no_grad():
        return model(**tok([text], return_tensors="pt")).logits


@pytest.mark.slow
def test_training_lowers_loss_and_publishes_a_reloadable_adapter(trained):
    out = trained["out"]
    log = [json.loads(line) for line in (out / "train-log.jsonl").read_text().splitlines()]
    assert len(log) == trained["summary"]["optimizer_steps"] == 24  # 64 examples / 8 per batch * 3 epochs
    first, last = sum(r["loss"] for r in log[:3]) / 3, sum(r["loss"] for r in log[-3:]) / 3
    assert last < 0.6 * first
    assert all(r["tokens_per_s"] > 0 and r["non_pad_tokens"] > 0 for r in log)
    # Warm-up 10 % then linear decay, sized from the 24 actual steps.
    lrs = [r["learning_rate"] for r in log]
    assert lrs[0] < lrs[2] and max(lrs) == pytest.approx(3e-3, rel=0.01) and lrs[-1] < lrs[5]
    for name in (
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/tokenizer.json",
    ):
        assert (out / name).is_file(), name
    resolved = json.loads((out / "resolved-config.json").read_text())
    assert resolved["step"]["lora"]["r"] == 16 and resolved["effective_batch_size"] == 8
    # Best epoch chosen on dev, with per-epoch metrics.
    best = json.loads((out / "best.json").read_text())
    epochs = {e: json.loads((out / f"dev-metrics-epoch-{e}.json").read_text()) for e in (1, 2, 3)}
    assert best["weighted_f1"] == max(m["weighted_f1"] for m in epochs.values())
    assert best["epoch"] == min(e for e, m in epochs.items() if m["weighted_f1"] == best["weighted_f1"])
    assert not (out / "_checkpoints").exists()
    # Plain peft reload gives identical logits on two independent loads, and differs from the base.
    tok = load_tokenizer(REF)
    a = _logits(attach_adapter(load_model(REF), out / "adapter"), tok)
    b = _logits(attach_adapter(load_model(REF), out / "adapter"), tok)
    assert torch.equal(a, b)
    assert not torch.allclose(a, _logits(load_model(REF), tok))


@pytest.mark.slow
def test_continuing_from_an_adapter_starts_from_its_weights(trained, synthetic_files, tmp_path):
    cfg = train_config(
        tmp_path / "next", synthetic_files["train"], init_adapter=str(trained["out"] / "adapter")
    )
    model = build_trainable_model(parse_step(cfg))
    saved = load_file(str(trained["out"] / "adapter" / "adapter_model.safetensors"))
    live = get_peft_model_state_dict(model)  # the live weights, keyed as peft saves them
    assert any("lora_A" in k for k in saved) and set(live) == set(saved)
    for key, value in saved.items():
        assert torch.equal(live[key], value), key
    fresh = get_peft_model_state_dict(
        build_trainable_model(parse_step(train_config(tmp_path / "x", synthetic_files["train"])))
    )
    assert any(not torch.equal(fresh[k], saved[k]) for k in saved)  # a fresh adapter would differ
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lm_head" in n for n in trainable)


class _Interrupt(Exception):
    pass


class _StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise _Interrupt(f"simulated preemption at step {self.step}")


@pytest.mark.slow
def test_interrupted_training_resumes_from_its_checkpoint_to_the_same_end(synthetic_files, tmp_path):
    def cfg(out):
        return parse_step(
            train_config(
                out,
                synthetic_files["train"],
                optim={"epochs": 2, "checkpoint_every_steps": 3, "per_device_batch_size": 16},
            )
        )

    reference = run_train(cfg(tmp_path / "straight"))
    out = tmp_path / "interrupted"
    with pytest.raises(_Interrupt):
        run_train(cfg(out), extra_callbacks=[_StopAt(5)])
    assert (out / "_checkpoints" / "checkpoint-3" / "node-0" / "MANIFEST.json").is_file()  # one part per node
    assert not (out / "MANIFEST.json").exists()
    resumed = run_train(cfg(out))
    assert resumed["optimizer_steps"] == reference["optimizer_steps"] == 8
    resolved = json.loads((out / "resolved-config.json").read_text())
    assert resolved["resumed_from"] == "checkpoint-3"
    steps = [json.loads(line)["step"] for line in (out / "train-log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # the log carried over in the checkpoint, no step twice
    a = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_step_stopped_before_its_last_dev_evaluation_evaluates_on_resume(
    synthetic_files, tmp_path, monkeypatch
):
    # The last checkpoint is written before the epoch-end dev evaluation; a step stopped between the
    # two resumes at its end, where the Trainer calls no epoch-end callback: the evaluation is owed.
    from coe_runtime import train as train_module

    out = tmp_path / "out"
    cfg = parse_step(
        train_config(
            out,
            synthetic_files["train"],
            eval_file=str(synthetic_files["dev"]),
            optim={"epochs": 1, "checkpoint_every_steps": 3, "per_device_batch_size": 16},
        )
    )
    real_evaluate = train_module._DevEvaluator.evaluate

    def stopped(self, model, epoch):
        raise _Interrupt("stopped before the dev evaluation")

    monkeypatch.setattr(train_module._DevEvaluator, "evaluate", stopped)
    with pytest.raises(_Interrupt):
        run_train(cfg)
    assert (out / "_checkpoints" / "checkpoint-4" / "node-0" / "MANIFEST.json").is_file()  # the last step's
    monkeypatch.setattr(train_module._DevEvaluator, "evaluate", real_evaluate)
    resumed = run_train(cfg)
    assert resumed["optimizer_steps"] == 4
    assert json.loads((out / "resolved-config.json").read_text())["resumed_from"] == "checkpoint-4"
    dev = json.loads((out / "dev-metrics-epoch-1.json").read_text())
    assert dev["epoch"] == 1 and dev["n"] == 12
    assert json.loads((out / "best.json").read_text())["epoch"] == 1
