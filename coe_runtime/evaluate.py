"""Generate on ERC examples, parse each answer against the dataset's own label set, and score.

Used by ``train`` (dev set after each epoch, to choose the best epoch on dev) and by the
``generate`` step (the test set, once, with the best adapter).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from coe_runtime.answers import parse_answer
from coe_runtime.data import Example
from coe_runtime.errors import DataError
from coe_runtime.labels import LabelSet, get_label_set
from coe_runtime.step import GenerationSettings, LabelSetRef

if TYPE_CHECKING:
    from coe_runtime.generate import Generator


def label_set_of(ref: LabelSetRef) -> LabelSet:
    return get_label_set(ref.name, ref.naming, ref.custom_prompt_names)


def gold_label(example: Example, label_set: LabelSet, source: str = "examples") -> str | None:
    """The example's gold label in the dataset's own spelling (``meta.label``), checked against
    the label set; None when the example carries none (e.g. unlabelled inference)."""
    label = example.meta.get("label")
    if label is None:
        return None
    if label not in label_set.labels:
        raise DataError(
            source,
            None,
            f"example {example.id}: label {label!r} is not in label set {label_set.name!r} {list(label_set.labels)}",
        )
    return label


def evaluate_examples(
    generator: Generator,
    examples: Sequence[Example],
    label_set: LabelSet,
    settings: GenerationSettings,
    with_metrics: bool = True,
    source: str = "examples",
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Predictions ``{id, output, parsed_label, gold, parse_method}`` in the order of ``examples``,
    and the metrics (None when ``with_metrics`` is off or no example has a gold label)."""
    from coe_runtime.metrics import compute_metrics

    outputs = generator.generate([ex.prompt for ex in examples], settings)
    predictions = []
    for ex, out in zip(examples, outputs, strict=True):
        parsed = parse_answer(out.text, label_set)
        predictions.append(
            {
                "id": ex.id,
                "output": out.text,
                "parsed_label": parsed.label,
                "gold": gold_label(ex, label_set, source),
                "parse_method": parsed.method,
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
    return predictions, metrics
