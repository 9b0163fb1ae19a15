"""Training throughput: length-grouped batches vs a naive padded loader, same model, optimizer and
batch size; only the batching differs.

    python bench/bench_training.py [--n 192] [--batch-size 8] [--device cpu|cuda]

Throughput is counted in tokens that are not padding (prompt + target), per second of
forward + backward + optimizer step. "naive" shuffles examples and pads each batch to its
longest member (what a plain DataLoader + padding collator does); "grouped" is the trainer's
LengthGroupedBatchSampler. Each variant runs in its own process (its own peak RSS).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._bench_common import machine, peak_rss_mb, run_child, synthetic  # noqa: E402


def variant(name: str, n: int, batch_size: int, device: str) -> dict:
    from coe_runtime.models.loading import load_tokenizer
    from coe_runtime.step import MAX_LENGTH, ModelRef, TrainStep
    from coe_runtime.train import (
        LengthGroupedBatchSampler,
        PaddingCollator,
        ShuffledBatchSampler,
        build_trainable_model,
        tokenize_example,
    )

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ref = ModelRef()
    tok = load_tokenizer(ref)
    feats = [tokenize_example(tok, ex.prompt, ex.target, MAX_LENGTH) for ex in synthetic(n, seed=2)]
    lengths = [len(f["input_ids"]) for f in feats]
    step = TrainStep(
        name="bench",
        output="/tmp/unused",
        train_files=["unused"],
        lora={"modules_to_save": ["embed_tokens", "lm_head"]},
    )
    model = build_trainable_model(step, device=device)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, betas=(0.9, 0.95))
    sampler_cls = LengthGroupedBatchSampler if name == "grouped" else ShuffledBatchSampler
    batches = list(sampler_cls(lengths, batch_size, seed=0))
    collate = PaddingCollator(tok.pad_token_id)
    real_tokens = padded_tokens = 0
    start = time.perf_counter()
    for b in batches:
        batch = {k: v.to(device) for k, v in collate([feats[i] for i in b]).items()}
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        real_tokens += int(batch["attention_mask"].sum())
        padded_tokens += batch["input_ids"].numel()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "variant": name, "examples": n, "batches": len(batches), "seconds": round(seconds, 3),
        "non_pad_tokens": real_tokens, "padding_share": round(1 - real_tokens / padded_tokens, 3),
        "non_pad_tokens_per_s": round(real_tokens / seconds, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=192)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.variant:
        print(json.dumps(variant(a.variant, a.n, a.batch_size, a.device)))
        return
    torch.set_num_threads(1)
    common = ["--n", str(a.n), "--batch-size", str(a.batch_size), "--device", a.device]
    results = [run_child(__file__, ["--variant", v, *common]) for v in ("naive", "grouped")]
    naive, grouped = results
    print(f"machine: {machine()}; device {a.device}")
    print(
        f"{'variant':<8} {'seconds':>8} {'non-pad tok':>12} {'pad share':>10} {'tok/s':>9} {'peak RSS MB':>12}"
    )
    for r in results:
        print(
            f"{r['variant']:<8} {r['seconds']:>8} {r['non_pad_tokens']:>12} {r['padding_share']:>10} "
            f"{r['non_pad_tokens_per_s']:>9} {r['peak_rss_mb']:>12}"
        )
    ratio = grouped["non_pad_tokens_per_s"] / naive["non_pad_tokens_per_s"]
    print(f"speed-up (non-pad tokens/s): {ratio:.2f}x")
    print(json.dumps({"results": results, "speedup_non_pad_tokens_per_s": round(ratio, 2)}))


if __name__ == "__main__":
    main()
