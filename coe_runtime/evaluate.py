"""Answer ERC examples, read each answer against the dataset's own label set, and score.

Two decodings: ``generate`` (generate text, parse the label from it) and ``score`` (the label
whose answer text, in the examples' label format, is most likely after the prompt; parse method
``score``, never unparsed). Used by ``train`` (dev set after each epoch, to choose the best epoch
on dev) and by the ``generate`` step (``run_generate``: the test set, once, with the best adapter).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from coe_runtime import progress
from coe_runtime.data.answers import SCORE_METHOD, parse_answer
from coe_runtime.data.dialogue import Example, gold_label, read_examples_uri
from coe_runtime.data.labels import LabelSet, get_label_set
from coe_runtime.distributed import dist_info, init_distributed
from coe_runtime.errors import DataError
from coe_runtime.models.generate import Generator
from coe_runtime.prompts.builder import answer_texts
from coe_runtime.record import publish_step
from coe_runtime.step import GenerateStep, GenerationSettings, LabelSetRef
from coe_runtime.store import atomic_write


def label_set_of(ref: LabelSetRef) -> LabelSet:
    return get_label_set(ref.name, ref.naming, ref.custom_prompt_names)


def evaluate_examples(
    generator: Generator,
    examples: Sequence[Example],
    label_set: LabelSet,
    settings: GenerationSettings,
    with_metrics: bool = True,
    source: str = "examples",
    progress_step: str | None = None,
    progress_phase: str = "generate",
    decoding: str = "generate",
    label_format: str = "tag",
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Predictions ``{id, output, parsed_label, gold, parse_method, decoding}`` in the order of
    ``examples`` (score decoding adds ``scores``: each label's log-likelihood), and the metrics
    (None when ``with_metrics`` is off or no example has a gold label; they record ``decoding``).
    With ``progress_step``, progress events (done/total/ETA) are reported while answering."""
    from coe_runtime.metrics import compute_metrics

    if decoding not in ("generate", "score"):
        raise ValueError(f"unknown decoding {decoding!r}; expected 'generate' or 'score'")
    prompts = [ex.prompt for ex in examples]
    on_progress = progress.throttled(progress_step, progress_phase) if progress_step else None
    predictions: list[dict[str, Any]] = []
    if decoding == "score":
        answers = answer_texts(label_set, label_format)
        scored = generator.score(prompts, answers, settings.batch_size, on_progress=on_progress)
        for ex, out in zip(examples, scored, strict=True):
            predictions.append(
                {
                    "id": ex.id,
                    "output": answers[out.best],
                    "parsed_label": label_set.labels[out.best],
                    "gold": gold_label(ex, label_set, source),
                    "parse_method": SCORE_METHOD,
                    "decoding": "score",
                    "scores": {
                        lab: round(v, 4) for lab, v in zip(label_set.labels, out.logprobs, strict=True)
                    },
                }
            )
    else:
        outputs = generator.generate(prompts, settings, on_progress=on_progress)
        for ex, gen in zip(examples, outputs, strict=True):
            parsed = parse_answer(gen.text, label_set)
            predictions.append(
                {
                    "id": ex.id,
                    "output": gen.text,
                    "parsed_label": parsed.label,
                    "gold": gold_label(ex, label_set, source),
                    "parse_method": parsed.method,
                    "decoding": "generate",
                }
            )
    if not with_metrics or not predictions:
        return predictions, None
    unlabelled = [p["id"] for p in predictions if p["gold"] is None]
    if unlabelled:
        raise DataError(
            source,
            None,
            f"{len(unlabelled)} example(s) have no meta.label to score against (first: {unlabelled[0]})",
        )
    metrics = compute_metrics(
        [p["gold"] for p in predictions],
        [p["parsed_label"] for p in predictions],
        label_set,
        [p["parse_method"] for p in predictions],
    )
    metrics["decoding"] = decoding
    metrics["label_format"] = label_format
    return predictions, metrics


def run_generate(step: GenerateStep) -> dict:
    """Predictions JSONL ``{id, output, parsed_label, gold, parse_method, decoding}`` (+
    ``metrics.json``), published under ``step.output`` by rank 0."""
    from coe_runtime.metrics import write_metrics
    from coe_runtime.models.loading import default_device
    from coe_runtime.store import normalize_uri

    step = step.model_copy(update={"output": normalize_uri(step.output)})
    init_distributed()  # under torchrun each rank generates its own shard
    label_set = label_set_of(step.label_set)
    examples = read_examples_uri(step.input_file, "input_file")
    progress.report(step=step.name, phase="load", message=f"{len(examples)} examples")
    generator = Generator.load(
        step.base_model,
        step.adapter,
        device=default_device(),
        label_names=label_set.prompt_names,
        label_format=step.label_format,
    )
    start = time.perf_counter()
    predictions, metrics = evaluate_examples(
        generator,
        examples,
        label_set,
        step.generation,
        with_metrics=step.with_metrics,
        source=step.input_file,
        progress_step=step.name,
        decoding=step.decoding,
        label_format=step.label_format,
    )
    seconds = time.perf_counter() - start
    summary = {"examples": len(examples), "seconds": round(seconds, 3), "decoding": step.decoding}
    if metrics is not None:
        summary.update({k: metrics[k] for k in ("weighted_f1", "accuracy") if k in metrics})
    rank, _ = dist_info()
    if rank == 0:
        with tempfile.TemporaryDirectory(prefix="coe-generate-") as tmp:
            write_predictions(Path(tmp) / "predictions.jsonl", predictions)
            if metrics is not None:
                write_metrics(tmp, metrics)
            publish_step(step, tmp, meta={"kind": "generate", **summary})
    progress.report(step=step.name, phase="done", **summary)
    return summary


def write_predictions(path: Path, predictions: Sequence[Any]) -> None:
    with atomic_write(path) as f:
        for p in predictions:
            f.write(
                json.dumps(asdict(p) if hasattr(p, "__dataclass_fields__") else p, ensure_ascii=False) + "\n"
            )
