"""ERC metrics with scikit-learn, always on the dataset's own label set (stated in the output).

Weighted F1 (the papers' headline, in percent), macro F1, accuracy, a per-class report, the
confusion matrix and the share of answers that needed the fallback parse. An unparsed
prediction (``None``) counts as wrong: it is scored as an extra "unparsed" class that never
matches a gold label.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from coe_runtime.data.answers import FALLBACK_METHODS
from coe_runtime.data.labels import LabelSet
from coe_runtime.errors import ConfigError
from coe_runtime.store import atomic_write

UNPARSED = "<unparsed>"


def _pct(x: float) -> float:
    return round(100.0 * float(x), 2)


def compute_metrics(
    gold: Sequence[str],
    pred: Sequence[str | None],
    label_set: LabelSet,
    parse_methods: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Scores in percent (two decimals). ``gold``/``pred`` use the dataset's own label spelling."""
    if len(gold) != len(pred):
        raise ConfigError(f"compute_metrics: {len(gold)} gold labels but {len(pred)} predictions")
    if parse_methods is not None and len(parse_methods) != len(pred):
        raise ConfigError(f"compute_metrics: {len(pred)} predictions but {len(parse_methods)} parse methods")
    if not gold:
        raise ConfigError("compute_metrics: no examples to score")
    labels = list(label_set.labels)
    bad_gold = sorted({g for g in gold if g not in labels})
    if bad_gold:
        raise ConfigError(f"gold labels {bad_gold} are not in label set {label_set.name!r} {labels}")
    bad_pred = sorted({p for p in pred if p is not None and p not in labels})
    if bad_pred:
        raise ConfigError(f"predicted labels {bad_pred} are not in label set {label_set.name!r} {labels}")
    y_pred = [UNPARSED if p is None else p for p in pred]
    occurring = [lab for lab in labels if lab in set(gold) | set(pred)]
    y_gold = list(gold)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_gold, y_pred, labels=labels, zero_division=0
    )
    per_class = {
        lab: {
            "precision": _pct(precision[i]),
            "recall": _pct(recall[i]),
            "f1": _pct(f1[i]),
            "support": int(support[i]),
        }
        for i, lab in enumerate(labels)
    }
    # Columns: every label, then "unparsed" (rows: gold labels; the unparsed row is always zero).
    cm = confusion_matrix(y_gold, y_pred, labels=[*labels, UNPARSED])[: len(labels)]
    methods = Counter(parse_methods or [])
    n = len(gold)
    fallback = sum(methods[m] for m in FALLBACK_METHODS) if parse_methods is not None else None
    return {
        "label_set": label_set.name,
        "labels": labels,
        "prompt_names": list(label_set.prompt_names),
        "n": n,
        "weighted_f1": _pct(f1_score(y_gold, y_pred, labels=labels, average="weighted", zero_division=0)),
        # Macro over the labels that occur (in gold or predictions): a label absent from both
        # would add a meaningless 0 (small dev/test subsets often miss a rare class).
        "macro_f1": _pct(f1_score(y_gold, y_pred, labels=occurring, average="macro", zero_division=0)),
        "accuracy": _pct(accuracy_score(y_gold, y_pred)),
        "per_class": per_class,
        "confusion_matrix": {"rows": labels, "columns": [*labels, "unparsed"], "counts": cm.tolist()},
        "unparsed": sum(p is None for p in pred),
        "parse_methods": dict(sorted(methods.items())) if parse_methods is not None else None,
        "fallback_share": _pct(fallback / n) if fallback is not None else None,
    }


def majority_baseline(
    train_labels: Sequence[str], test_labels: Sequence[str], label_set: LabelSet
) -> dict[str, Any]:
    """Always predict the most frequent training label (ties: label-set order); scored on test."""
    if not train_labels:
        raise ConfigError("majority_baseline: no training labels")
    counts = Counter(train_labels)
    majority = max(label_set.labels, key=lambda lab: (counts[lab], -label_set.labels.index(lab)))
    m = compute_metrics(test_labels, [majority] * len(test_labels), label_set)
    return {
        "label": majority,
        "label_set": label_set.name,
        "weighted_f1": m["weighted_f1"],
        "macro_f1": m["macro_f1"],
        "accuracy": m["accuracy"],
    }


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text report: headline scores, the per-class table, the confusion matrix."""
    lines = [
        f"label set: {metrics['label_set']}   examples: {metrics['n']}"
        + (f"   decoding: {metrics['decoding']}" if metrics.get("decoding") else "")
        + (f"   label format: {metrics['label_format']}" if metrics.get("label_format") else ""),
        f"weighted F1: {metrics['weighted_f1']:.2f}   macro F1: {metrics['macro_f1']:.2f}   "
        f"accuracy: {metrics['accuracy']:.2f}",
    ]
    if metrics.get("fallback_share") is not None:
        lines.append(
            f"fallback-parsed answers: {metrics['fallback_share']:.2f}%   unparsed: {metrics['unparsed']}   "
            f"methods: {metrics['parse_methods']}"
        )
    width = max(9, *(len(lab) for lab in metrics["labels"]))
    lines += ["", f"{'label':<{width}} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    for lab, row in metrics["per_class"].items():
        lines.append(
            f"{lab:<{width}} {row['precision']:>9.2f} {row['recall']:>7.2f} {row['f1']:>7.2f} {row['support']:>8d}"
        )
    cm = metrics["confusion_matrix"]
    col_w = max(8, *(len(c) for c in cm["columns"]))
    lines += ["", "confusion matrix (rows: gold, columns: predicted)"]
    lines.append(" " * (width + 1) + " ".join(f"{c:>{col_w}}" for c in cm["columns"]))
    for lab, counts in zip(cm["rows"], cm["counts"], strict=True):
        lines.append(f"{lab:<{width}} " + " ".join(f"{c:>{col_w}d}" for c in counts))
    if "majority_baseline" in metrics:
        b = metrics["majority_baseline"]
        lines += ["", f"majority-class baseline ({b['label']}): weighted F1 {b['weighted_f1']:.2f}"]
    return "\n".join(lines) + "\n"


def write_metrics(directory: str | Path, metrics: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``metrics.json`` and the readable ``metrics.txt`` (each via temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in (
        ("metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False) + "\n"),
        ("metrics.txt", format_metrics(metrics)),
    ):
        path = directory / name
        with atomic_write(path) as f:
            f.write(text)
        out.append(path)
    return out[0], out[1]
