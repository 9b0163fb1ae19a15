"""Bootstrap confidence intervals for ERC scores, computed from predictions (pure, seeded).

A resample draws ``len(gold)`` examples with replacement; each score is recomputed on it with the
same definitions as :func:`coe_runtime.metrics.compute_metrics` (weighted F1 over the label set,
macro F1 over the labels occurring in gold or predictions, accuracy; an unparsed prediction never
matches). The scores are vectorised over a confusion-count matrix per resample, so 1000 resamples
of the 2610 MELD test utterances take well under a second.

Two arms scored on the same test utterances are compared *paired*: :func:`paired_bootstrap`
resamples whole dialogues (utterances of one dialogue are not independent) and gives the mean
difference, a percentile interval, a two-sided p-value and the standard error; :func:`mcnemar` is
the exact test on per-utterance correctness; :func:`holm` adjusts a family of p-values; and
:func:`mde_factor` turns a standard error into the smallest effect a test can detect.

The dialogue bootstrap holds the trained models fixed: it says how much a difference would move on
another test sample, not on another training run. :func:`with_seed_variation` adds the training
seed's variance (estimated from an arm's seed repeats) to a difference of seed means and gives its
standard error and a normal-approximation p-value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from coe_runtime.errors import ConfigError

METRICS = ("weighted_f1", "macro_f1", "accuracy")


@dataclass(frozen=True)
class Interval:
    """A point estimate (on the full sample) and a percentile bootstrap interval, in percent."""

    point: float
    low: float
    high: float
    level: float
    resamples: int
    seed: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "point": self.point,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "resamples": self.resamples,
            "seed": self.seed,
        }


def _encode(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str]) -> tuple:
    if len(gold) != len(pred):
        raise ConfigError(f"bootstrap: {len(gold)} gold labels but {len(pred)} predictions")
    if not gold:
        raise ConfigError("bootstrap: no examples")
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({g for g in gold if g not in index})
    if unknown:
        raise ConfigError(f"bootstrap: gold labels {unknown} are not in the label list {list(labels)}")
    bad = sorted({p for p in pred if p is not None and p not in index})
    if bad:
        raise ConfigError(f"bootstrap: predicted labels {bad} are not in the label list {list(labels)}")
    k = len(labels)
    g = np.array([index[x] for x in gold], dtype=np.int64)
    p = np.array([k if x is None else index[x] for x in pred], dtype=np.int64)  # k = unparsed
    return g, p, k


def _scores(counts: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Scores of each row of ``counts`` (shape [B, k, k+1]: gold x predicted, last column unparsed)."""
    tp = np.diagonal(counts[:, :, :k], axis1=1, axis2=2).astype(float)  # [B, k]
    support = counts.sum(axis=2).astype(float)  # gold count per label
    predicted = counts[:, :, :k].sum(axis=1).astype(float)  # predicted count per label
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    n = support.sum(axis=1)
    weighted = (f1 * support).sum(axis=1) / n
    occurring = denom > 0
    macro = np.divide(
        (f1 * occurring).sum(axis=1), occurring.sum(axis=1), out=np.zeros(len(n)), where=occurring.any(axis=1)
    )
    accuracy = tp.sum(axis=1) / n
    return {"weighted_f1": 100 * weighted, "macro_f1": 100 * macro, "accuracy": 100 * accuracy}


def point_scores(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str]) -> dict[str, float]:
    """The three scores on the full sample (same definitions as the bootstrap)."""
    g, p, k = _encode(gold, pred, labels)
    counts = np.bincount(g * (k + 1) + p, minlength=k * (k + 1)).reshape(1, k, k + 1)
    return {m: round(float(v[0]), 2) for m, v in _scores(counts, k).items()}


def bootstrap_intervals(
    gold: Sequence[str],
    pred: Sequence[str | None],
    labels: Sequence[str],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Interval]:
    """Percentile bootstrap interval of weighted F1, macro F1 and accuracy (percent, 2 decimals).

    Deterministic for a given ``seed``; the point estimate is the full-sample score.
    """
    if resamples < 1:
        raise ConfigError(f"bootstrap: resamples must be >= 1, got {resamples}")
    if not 0 < level < 1:
        raise ConfigError(f"bootstrap: level must be in (0, 1), got {level}")
    g, p, k = _encode(gold, pred, labels)
    n = len(g)
    cell = g * (k + 1) + p
    rng = np.random.default_rng(seed)
    points = point_scores(gold, pred, labels)
    samples: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    chunk = max(1, min(resamples, 2_000_000 // max(n, 1)))  # bound memory: chunk x n indices at a time
    done = 0
    while done < resamples:
        b = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (np.arange(b)[:, None] * (k * (k + 1)) + cell[idx]).ravel()
        counts = np.bincount(flat, minlength=b * k * (k + 1)).reshape(b, k, k + 1)
        for m, v in _scores(counts, k).items():
            samples[m].append(v)
        done += b
    alpha = (1 - level) / 2
    out = {}
    for m in METRICS:
        values = np.concatenate(samples[m])
        low, high = np.quantile(values, [alpha, 1 - alpha])
        out[m] = Interval(points[m], round(float(low), 2), round(float(high), 2), level, resamples, seed)
    return out


# -- paired comparison of two arms on the same test utterances ---------------------------------


_UTTERANCE_SUFFIX = re.compile(r"^(.+?)[-_]u\d+$")


def utterance_uid(example_id: str) -> str:
    """The utterance id inside an example id (``erc:meld-test-d3-u5`` -> ``meld-test-d3-u5``, the
    prepared rows' ``meta.uid``); an id without a task prefix is returned as it is."""
    return example_id.split(":", 1)[1] if ":" in example_id else example_id


def dialogue_of(example_id: str) -> str:
    """The dialogue an utterance id belongs to, read from the id itself (a fallback for when the
    prepared test file does not say): ``erc:meld-test-d3-u5`` -> ``meld-test-d3``,
    ``s01_e15_c01_u001`` -> ``s01_e15_c01``. An id without an utterance suffix is its own dialogue."""
    uid = utterance_uid(example_id)
    match = _UTTERANCE_SUFFIX.match(uid)
    return match.group(1) if match else uid


@dataclass(frozen=True)
class PairedDelta:
    """Arm A minus arm B on one score (percentage points), averaged over the seed pairs: the
    full-sample difference, a percentile interval and a two-sided p-value from the cluster
    bootstrap, and the bootstrap standard error of the difference."""

    delta: float
    low: float
    high: float
    p_value: float
    se: float

    def as_dict(self) -> dict[str, float]:
        return {
            "delta": self.delta,
            "low": self.low,
            "high": self.high,
            "p_value": self.p_value,
            "se": self.se,
        }


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test on per-utterance correctness: ``a_only`` utterances only arm A gets
    right, ``b_only`` only arm B; two-sided binomial p-value of ``a_only`` out of the discordant ones."""

    a_only: int
    b_only: int
    p_value: float

    def as_dict(self) -> dict[str, float | int]:
        return {"a_only": self.a_only, "b_only": self.b_only, "p_value": self.p_value}


def cluster_weights(groups: Sequence[str], resamples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dialogue-level bootstrap weights: ``(weights, index)`` where ``weights[b, g]`` is how often
    resample ``b`` drew dialogue ``g`` (each resample draws as many dialogues as there are, with
    replacement) and ``index[i]`` is utterance ``i``'s dialogue. An utterance's weight in a resample
    is its dialogue's: a dialogue enters whole or not at all."""
    if resamples < 1:
        raise ConfigError(f"bootstrap: resamples must be >= 1, got {resamples}")
    names: dict[str, int] = {}
    index = np.array([names.setdefault(g, len(names)) for g in groups], dtype=np.int64)
    n_groups = len(names)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(resamples, n_groups))
    flat = (np.arange(resamples)[:, None] * n_groups + draws).ravel()
    weights = np.bincount(flat, minlength=resamples * n_groups).reshape(resamples, n_groups)
    return weights, index


def _group_counts(g: np.ndarray, p: np.ndarray, k: int, index: np.ndarray, n_groups: int) -> np.ndarray:
    """Confusion counts per dialogue, flattened: shape [n_groups, k * (k + 1)]."""
    cells = k * (k + 1)
    flat = index * cells + g * (k + 1) + p
    return np.bincount(flat, minlength=n_groups * cells).reshape(n_groups, cells).astype(float)


def _two_sided_p(values: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference": twice the smaller share of resampled
    differences on either side of 0 (each share counted with +1, so it is never 0), at most 1."""
    b = len(values)
    below = (np.count_nonzero(values <= 0) + 1) / (b + 1)
    above = (np.count_nonzero(values >= 0) + 1) / (b + 1)
    return float(min(1.0, 2 * min(below, above)))


def paired_bootstrap(
    gold: Sequence[str],
    pairs: Sequence[tuple[Sequence[str | None], Sequence[str | None]]],
    groups: Sequence[str],
    labels: Sequence[str],
    resamples: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, PairedDelta]:
    """Cluster (dialogue) bootstrap of score(A) - score(B) on the same test utterances.

    ``gold`` and ``groups`` (each utterance's dialogue) are aligned with every prediction list;
    ``pairs`` holds one ``(pred_a, pred_b)`` per seed pair. Every resample draws whole dialogues
    with replacement — one draw shared by all pairs — recomputes both arms' scores on it and
    averages the differences over the pairs. Scores as :func:`point_scores`; values in points,
    rounded to 2 decimals (p-values to 4). Deterministic for a given ``seed``.
    """
    if not pairs:
        raise ConfigError("paired bootstrap: no prediction pairs")
    if not 0 < level < 1:
        raise ConfigError(f"bootstrap: level must be in (0, 1), got {level}")
    if len(groups) != len(gold):
        raise ConfigError(f"paired bootstrap: {len(gold)} gold labels but {len(groups)} dialogue ids")
    weights, index = cluster_weights(groups, resamples, seed)
    n_groups = weights.shape[1]
    full = np.ones((1, n_groups))
    deltas: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    points: dict[str, list[float]] = {m: [] for m in METRICS}
    for pred_a, pred_b in pairs:
        scored = []
        for pred in (pred_a, pred_b):
            g, p, k = _encode(gold, pred, labels)
            counts = _group_counts(g, p, k, index, n_groups)
            scored.append(
                (
                    _scores((full @ counts).reshape(1, k, k + 1), k),
                    _scores((weights @ counts).reshape(resamples, k, k + 1), k),
                )
            )
        (point_a, boot_a), (point_b, boot_b) = scored
        for m in METRICS:
            points[m].append(float(point_a[m][0] - point_b[m][0]))
            deltas[m].append(boot_a[m] - boot_b[m])
    alpha = (1 - level) / 2
    out = {}
    for m in METRICS:
        values = np.mean(deltas[m], axis=0)
        low, high = np.quantile(values, [alpha, 1 - alpha])
        out[m] = PairedDelta(
            delta=round(float(np.mean(points[m])), 2),
            low=round(float(low), 2),
            high=round(float(high), 2),
            p_value=round(_two_sided_p(values), 4),
            se=round(float(np.std(values, ddof=1)) if resamples > 1 else 0.0, 3),
        )
    return out


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips: the probability of an
    outcome at most as likely as ``k`` (for p = 1/2: twice the smaller tail, at most 1)."""
    if n == 0:
        return 1.0
    try:
        from scipy.stats import binomtest
    except ImportError:  # scipy is optional: the same number from the binomial sum
        tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
        return min(1.0, 2 * tail)
    return float(binomtest(k, n, 0.5, alternative="two-sided").pvalue)


def mcnemar(gold: Sequence[str], pred_a: Sequence[str | None], pred_b: Sequence[str | None]) -> McNemar:
    """Exact McNemar test of arm A against arm B on the same utterances (an unparsed answer is wrong)."""
    if not len(gold) == len(pred_a) == len(pred_b):
        raise ConfigError(f"McNemar: {len(gold)} gold labels, {len(pred_a)} and {len(pred_b)} predictions")
    a_only = sum(1 for g, a, b in zip(gold, pred_a, pred_b, strict=True) if a == g and b != g)
    b_only = sum(1 for g, a, b in zip(gold, pred_a, pred_b, strict=True) if b == g and a != g)
    return McNemar(a_only, b_only, round(binomial_two_sided(a_only, a_only + b_only), 4))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given): the i-th smallest is multiplied by
    ``m - i + 1``, made non-decreasing along the sorted order, and capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def mde_factor(alpha: float = 0.05, power: float = 0.8) -> float:
    """``z(1 - alpha/2) + z(power)``: the minimum detectable effect of a two-sided test at level
    ``alpha`` with the given power, in standard errors of the estimate (2.80 for 0.05 and 0.8)."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ConfigError(f"MDE: alpha and power must be in (0, 1), got {alpha} and {power}")
    z = NormalDist().inv_cdf
    return z(1 - alpha / 2) + z(power)


def with_seed_variation(
    delta: float, se_test: float, seed_sd: float, runs_a: int, runs_b: int
) -> tuple[float, float]:
    """(standard error, two-sided p) of ``delta`` = mean of ``runs_a`` seeds of A minus mean of
    ``runs_b`` seeds of B, when each run also varies with its training seed by ``seed_sd`` (the
    same for both arms): SE = sqrt(se_test^2 + seed_sd^2 (1/runs_a + 1/runs_b)), the test-sample
    and seed variances being independent; p from the normal distribution (1 when SE is 0 and
    delta is 0)."""
    if runs_a < 1 or runs_b < 1:
        raise ConfigError(f"seed variation: need at least one run per arm, got {runs_a} and {runs_b}")
    if se_test < 0 or seed_sd < 0:
        raise ConfigError(f"seed variation: standard errors must be >= 0, got {se_test} and {seed_sd}")
    se = math.sqrt(se_test**2 + seed_sd**2 * (1 / runs_a + 1 / runs_b))
    if se == 0:
        return 0.0, 1.0 if delta == 0 else 0.0
    return se, 2 * (1 - NormalDist().cdf(abs(delta) / se))
