"""Generation throughput: our Generator vs the reference's way, side by side, same model and data.

    python bench/bench_generation.py [--n 192] [--max-new-tokens 32] [--device cpu|cuda]

Reference way: plain ``model.generate`` at batch 8, prompts in file order, decoding the full
``max_new_tokens`` (no answer-complete stop). Ours: length-sorted batches of 32, KV cache that
drops finished rows, stop at the closing ``>`` of the label tag or EOS. The model is the tiny one
with a LoRA adapter trained for a few seconds first (so it answers with a label tag, as a trained
model does). Each variant runs in its own process: its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._bench_common import machine, peak_rss_mb, run_child, synthetic  # noqa: E402


def train_adapter(workdir: Path) -> Path:
    from coe_runtime.data.dialogue import write_examples
    from coe_runtime.step import parse_step
    from coe_runtime.train import run_train

    write_examples(workdir / "train.jsonl", synthetic(96, seed=0, max_words=40))
    cfg = {
        "kind": "train", "name": "bench", "output": str(workdir / "out"), "train_files": [str(workdir / "train.jsonl")],
        "lora": {"modules_to_save": ["embed_tokens", "lm_head"]},
        "optim": {"epochs": 4, "learning_rate": 3e-3, "per_device_batch_size": 8, "gradient_accumulation_steps": 1,
                  "gradient_checkpointing": False, "max_length": 512},
    }  # fmt: skip
    run_train(parse_step(cfg))
    return workdir / "out" / "adapter"


def variant(name: str, adapter: str, n: int, max_new: int, device: str) -> dict:
    from coe_runtime.models.generate import Generator
    from coe_runtime.step import GenerationSettings, ModelRef

    torch.set_num_threads(1)
    prompts = [ex.prompt for ex in synthetic(n, seed=1)]
    gen = Generator.load(
        ModelRef(), adapter, device=device, label_names=list(("joy", "anger", "sadness", "neutral"))
    )
    tok = gen.tokenizer
    start = time.perf_counter()
    if name == "ours":
        outs = gen.generate(prompts, GenerationSettings(max_new_tokens=max_new, batch_size=32))
        new_tokens = sum(o.n_new_tokens for o in outs)
        texts = [o.text for o in outs]
    else:  # the reference: plain generate, batch 8, file order, full-length decoding
        new_tokens, texts = 0, []
        with torch.inference_mode():
            for i in range(0, len(prompts), 8):
                enc = tok(prompts[i : i + 8], return_tensors="pt", padding=True).to(device)
                out = gen.model.generate(
                    **enc,
                    max_new_tokens=max_new,
                    min_new_tokens=max_new,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
                new = out[:, enc["input_ids"].shape[1] :]
                new_tokens += new.numel()
                texts += tok.batch_decode(new, skip_special_tokens=True)
    seconds = time.perf_counter() - start
    answered = sum(">" in t for t in texts)
    return {
        "variant": name, "examples": n, "seconds": round(seconds, 3), "new_tokens": new_tokens,
        "new_tokens_per_s": round(new_tokens / seconds, 1), "examples_per_s": round(n / seconds, 2),
        "answered_with_tag": answered, "peak_rss_mb": round(peak_rss_mb(), 1),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=192)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--adapter", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.variant:
        print(json.dumps(variant(a.variant, a.adapter, a.n, a.max_new_tokens, a.device)))
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="coe-bench-gen-") as tmp:
        adapter = train_adapter(Path(tmp))
        common = [
            "--adapter",
            str(adapter),
            "--n",
            str(a.n),
            "--max-new-tokens",
            str(a.max_new_tokens),
            "--device",
            a.device,
        ]
        results = [run_child(__file__, ["--variant", v, *common]) for v in ("reference", "ours")]
    ref, ours = results
    print(f"machine: {machine()}; device {a.device}")
    print(
        f"{'variant':<10} {'seconds':>8} {'new tok':>8} {'tok/s':>9} {'ex/s':>8} {'tagged':>7} {'peak RSS MB':>12}"
    )
    for r in results:
        print(
            f"{r['variant']:<10} {r['seconds']:>8} {r['new_tokens']:>8} {r['new_tokens_per_s']:>9} "
            f"{r['examples_per_s']:>8} {r['answered_with_tag']:>7} {r['peak_rss_mb']:>12}"
        )
    print(f"speed-up (examples/s): {ours['examples_per_s'] / ref['examples_per_s']:.2f}x")
    print(
        json.dumps(
            {
                "results": results,
                "speedup_examples_per_s": round(ours["examples_per_s"] / ref["examples_per_s"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
