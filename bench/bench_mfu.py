"""LoRA training throughput of a 7B-shaped model as model FLOPs utilisation (MFU).

    python bench/bench_mfu.py [--config mistral-7b|tiny] [--seq 1400] [--batch 4] [--steps 10]

Random weights with Mistral-7B's shape (32 layers, hidden 4096, 32 heads / 8 KV heads, MLP 14336,
vocab 32000) in bf16 on one GPU, LoRA r=16 on q/k/v (the paper's recipe), gradient checkpointing
on, AdamW on the LoRA weights. The model's FLOPs per token are counted as the dense matmuls of a
forward pass (2 x parameters touched) plus attention (4 x layers x seq x hidden, causal halved); a
LoRA step is forward + backward through activations, i.e. 2 x forward for the frozen weights (no
weight gradients), plus one recomputed forward for checkpointing. We report:

- MFU (LoRA, 3x forward): what the GPU really did, the figure the goal (>= 40 %) refers to;
- MFU (6ND convention): full fine-tuning's usual count, for comparison with published numbers.

Peak bf16 dense FLOP/s per GPU come from NVIDIA's data sheets (table below); others need --peak.
``--config tiny --device cpu`` runs the same code on a small shape (a check that it works).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from NVIDIA's product data sheets.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "B200": 2250e12}

SHAPES = {
    "mistral-7b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32000,
    ),
    "tiny": dict(
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1000,
    ),
}


def forward_flops_per_token(shape: dict, seq: int) -> float:
    h, f, L = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    per_layer = 2 * (h * h + 2 * h * kv + h * h) + 2 * (3 * h * f)  # q,k,v,o + gate,up,down
    attention = 2 * 2 * seq * h / 2  # QK^T and AV, causal: half the positions
    head = 2 * h * shape["vocab_size"]
    return L * (per_layer + attention) + head


def params(shape: dict) -> float:
    h, f, L = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    return L * (2 * h * h + 2 * h * kv + 3 * h * f) + 2 * h * shape["vocab_size"]


def peak_for(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(SHAPES), default="mistral-7b")
    p.add_argument("--seq", type=int, default=1400)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda")
    p.add_argument("--peak", type=float, default=None, help="peak bf16 FLOP/s of the device")
    p.add_argument("--no-checkpointing", action="store_true")
    args = p.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import MistralConfig, MistralForCausalLM

    shape = SHAPES[args.config]
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    config = MistralConfig(**shape, max_position_embeddings=max(4096, args.seq), attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(args.device):
        model = MistralForCausalLM(config).to(dtype)
    model = get_peft_model(
        model,
        LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj"]),
    )
    checkpointing = not args.no_checkpointing
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    optim = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=2e-4, betas=(0.9, 0.95))
    ids = torch.randint(0, shape["vocab_size"], (args.batch, args.seq), device=args.device)

    def step() -> None:
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    tokens = args.batch * args.seq * args.steps
    fwd = forward_flops_per_token(shape, args.seq)
    passes = 3 + (1 if checkpointing else 0)  # fwd + bwd (2x fwd, input grads only) [+ recompute]
    lora_flops = fwd * passes * tokens
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    peak = peak_for(device_name, args.peak)
    result = {
        "device": device_name,
        "config": args.config,
        "params_b": round(params(shape) / 1e9, 3),
        "seq": args.seq,
        "batch": args.batch,
        "steps": args.steps,
        "gradient_checkpointing": checkpointing,
        "tokens_per_s": round(tokens / seconds, 1),
        "achieved_tflops": round(lora_flops / seconds / 1e12, 2),
        "mfu_lora": round(lora_flops / seconds / peak, 4) if peak else None,
        "mfu_6nd": round(6 * params(shape) * tokens / seconds / peak, 4) if peak else None,
        "peak_tflops": peak / 1e12 if peak else None,
        "max_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1)
        if args.device == "cuda"
        else None,
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
