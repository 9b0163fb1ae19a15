"""Fast batched generation for evaluation, STEeR and clue writing.

What makes it fast (and what the reference lacked): prompts are sorted by length so each batch
holds similar lengths (little padding), left-padded, KV-cached, and each row stops as soon as its
answer is complete (the closing ``>`` of a label tag, the label word itself in the ``word`` label
format, or EOS); finished rows are removed from the batch and its KV cache, so they stop costing
work. ``max_new_tokens`` does not depend on the prompt length. Greedy by default; sampling
(temperature/top-p) is configurable.

Score decoding (:meth:`Generator.score`) is the other way to answer: no text is generated; each
candidate answer (every label's answer text) is scored by its log-likelihood after the prompt. The
prompt's KV cache is computed once (batched, left-padded) and shared by all candidates, whose
tokens then go through the model together in one more forward pass (none when every candidate is
a single token).

Under ``torch.distributed`` each rank generates a disjoint shard and every rank receives all
outputs, gathered back into the original order (the reference matched rank-local indices against
the global gold list).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from coe_runtime.distributed import sharded
from coe_runtime.step import GenerationSettings, ModelRef

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

# A label tag as the answer parser reads it: ``<joy>``, ``< sadness >``.
_TAG_AT_END = re.compile(r"<\s*([A-Za-z][A-Za-z _-]*?)\s*>[^<>]*$")
# A first word that is over (a non-letter follows it): the word format's stop without label names.
_WORD_THEN_BOUNDARY = re.compile(r"[a-z]+[^a-z]")


def decode_one(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    """The text of one token sequence, special tokens left out. (transformers types ``decode`` as
    ``str | list[str]``, a list being what a batch gives: one sequence is always a str.)"""
    return cast(str, tokenizer.decode(ids, skip_special_tokens=True))


@dataclass(frozen=True)
class GenOutput:
    text: str
    n_prompt_tokens: int
    n_new_tokens: int


@dataclass(frozen=True)
class ScoreOutput:
    best: int  # index of the highest-scoring answer (ties: the first)
    logprobs: tuple[float, ...]  # per answer: the sum of its tokens' log-probabilities after the prompt
    n_prompt_tokens: int


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str, max_tokens: int | None = None
) -> list[int]:
    """Token ids of a prompt (with the tokenizer's BOS), cut from the LEFT when longer than
    ``max_tokens`` so the question at the end is never lost (the reference cut from the right)."""
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if max_tokens is None or len(ids) <= max_tokens:
        return ids
    bos = tokenizer.bos_token_id
    if bos is not None and ids and ids[0] == bos:
        return [bos] + ids[len(ids) - (max_tokens - 1) :]
    return ids[len(ids) - max_tokens :]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (memory peaks show early)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class AnswerCompleteStop:
    """Decides, per row, whether the newest token completes the answer.

    ``tag`` format: the newest token closes a label tag. Only rows whose newest token contains
    ``>`` are decoded (a precomputed id set), so the check costs almost nothing. With
    ``label_names`` a tag must name a known label; without, any tag.

    ``word`` format: the text so far starts with a label name that is complete: followed by a
    non-letter, or the whole text when no other label name extends it (``sad`` waits for the next
    token when ``sadness`` is a label too). Without ``label_names``, any first word followed by a
    non-letter. A row that starts with something else runs on (the parser still reads it).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        label_names: Sequence[str] | None = None,
        label_format: str = "tag",
    ):
        if label_format not in ("tag", "word"):
            raise ValueError(f"unknown label format {label_format!r}; expected 'tag' or 'word'")
        self.tokenizer = tokenizer
        self.label_format = label_format
        vocab = tokenizer.get_vocab()
        self.closing_ids = {
            i
            for i in vocab.values()
            if ">" in tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        }
        self.label_names = {n.lower() for n in label_names} if label_names else None

    def is_complete(self, new_tokens: list[int]) -> bool:
        if self.label_format == "word":
            return self._word_complete(new_tokens)
        if not new_tokens or new_tokens[-1] not in self.closing_ids:
            return False
        text = decode_one(self.tokenizer, new_tokens)
        m = _TAG_AT_END.search(text)
        if m is None:
            return False
        return self.label_names is None or m.group(1).strip().lower() in self.label_names

    def _word_complete(self, new_tokens: list[int]) -> bool:
        if not new_tokens:
            return False
        text = decode_one(self.tokenizer, new_tokens).lstrip().lower()
        if self.label_names is None:
            return _WORD_THEN_BOUNDARY.match(text) is not None
        for name in self.label_names:
            if not text.startswith(name):
                continue
            rest = text[len(name) :]
            if rest and not rest[0].isalpha():
                return True
            if not rest and not any(o != name and o.startswith(name) for o in self.label_names):
                return True
        return False


def _pick_next(
    logits: torch.Tensor, settings: GenerationSettings, generator: torch.Generator | None
) -> torch.Tensor:
    import torch

    if not settings.do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_p, sorted_i = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        drop = sorted_p.cumsum(dim=-1) - sorted_p > settings.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, sorted_i, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class Generator:
    """Batched generation with one model (base + optional adapter) and its tokenizer."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        label_names: Sequence[str] | None = None,
        max_prompt_tokens: int | None = None,
        seed: int = 0,
        label_format: str = "tag",
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.label_names = list(label_names) if label_names else None
        self.max_prompt_tokens = max_prompt_tokens
        self.seed = seed
        self.label_format = label_format
        self._stop = AnswerCompleteStop(tokenizer, self.label_names, label_format)

    @classmethod
    def load(
        cls,
        model_ref: ModelRef,
        adapter: str | None = None,
        device: str | None = None,
        label_names: Sequence[str] | None = None,
        label_format: str = "tag",
    ) -> Generator:
        """Base model by reference plus an adapter URI/path (None: the base model alone)."""
        from coe_runtime.models.loading import default_device, load_model, load_tokenizer

        device = device or default_device()
        model = load_model(model_ref, adapter=adapter, device=device)
        model.eval()
        return cls(model, load_tokenizer(model_ref), label_names=label_names, label_format=label_format)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prompt_budget(self, settings: GenerationSettings) -> int | None:
        if self.max_prompt_tokens is not None:
            return self.max_prompt_tokens
        limit = getattr(self.model.config, "max_position_embeddings", None)
        return None if limit is None else max(1, limit - settings.max_new_tokens)

    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        shard: bool = True,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[GenOutput]:
        """Outputs in the order of ``prompts``. With ``shard`` under torch.distributed, each rank
        does its share and all ranks get every output. ``on_progress(done, total)`` is called after
        every batch with this rank's counts."""
        return sharded(prompts, lambda mine: self._generate_local(mine, settings, on_progress), shard=shard)

    def score(
        self,
        prompts: Sequence[str],
        answers: Sequence[str],
        batch_size: int = 16,
        shard: bool = True,
        on_progress: Callable[[int, int], None] | None = None,
        method: str = "prefix",
    ) -> list[ScoreOutput]:
        """Score decoding: for each prompt, the log-likelihood of every answer text after it.

        An answer is tokenised on its own (no special tokens), as training tokenises targets, and
        follows the prompt's tokens directly. ``method``: ``prefix`` (the default) computes each
        prompt's KV cache once (``batch_size`` prompts per prefill) and then feeds every
        (prompt, answer) pair's remaining tokens against it in one more pass, the cache repeated
        once per answer (so that pass holds ``len(answers)`` times the prefill's cache: lower
        ``batch_size`` if it does not fit); with single-token answers the prefill's last logits
        score them all and there is no second pass. ``full`` runs every prompt + answer sequence
        whole (the reference it must equal). Sharded over ranks like :meth:`generate`; outputs in
        the order of ``prompts``. Ties go to the earlier answer.
        """
        if not answers:
            raise ValueError("score: no answers to score")
        if method not in ("prefix", "full"):
            raise ValueError(f"score: unknown method {method!r}; expected 'prefix' or 'full'")
        answer_ids = [self.tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
        empty = [a for a, ids in zip(answers, answer_ids, strict=True) if not ids]
        if empty:
            raise ValueError(f"score: answer {empty[0]!r} has no tokens")
        return sharded(
            prompts,
            lambda mine: self._score_local(mine, answer_ids, batch_size, method, on_progress),
            shard=shard,
        )

    def _score_local(
        self,
        prompts: Sequence[str],
        answer_ids: list[list[int]],
        batch_size: int,
        method: str,
        on_progress: Callable[[int, int], None] | None,
    ) -> list[ScoreOutput]:
        import torch

        longest = max(len(a) for a in answer_ids)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        budget = self.max_prompt_tokens or (None if limit is None else max(1, limit - longest))
        encoded = [encode_prompt(self.tokenizer, p, budget) for p in prompts]
        results: list[ScoreOutput | None] = [None] * len(prompts)
        was_training = self.model.training
        self.model.eval()
        done = 0
        try:
            with torch.inference_mode():
                for batch in length_sorted_batches([len(e) for e in encoded], batch_size):
                    rows = [encoded[i] for i in batch]
                    if method == "prefix":
                        scores = self._score_prefix_batch(rows, answer_ids)
                    else:
                        scores = self._score_full_batch(rows, answer_ids)
                    for i, row in zip(batch, scores.tolist(), strict=True):
                        best = max(range(len(row)), key=lambda k: (row[k], -k))
                        results[i] = ScoreOutput(best, tuple(row), len(encoded[i]))
                    done += len(batch)
                    if on_progress is not None:
                        on_progress(done, len(prompts))
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    def _left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask, position_ids) of left-padded rows, on the model's device."""
        import torch

        width = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        return input_ids.to(self.device), attention.to(self.device), positions.to(self.device)

    def _prefill(
        self, rows: list[list[int]]
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass over the left-padded ``rows`` into a fresh KV cache: (cache, attention_mask,
        position_ids, the last position's logits)."""
        from transformers import DynamicCache

        input_ids, attention, positions = self._left_padded(rows)
        cache = DynamicCache()
        last = self.model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            use_cache=True,
            **{self._cache_kwarg(): cache},
            **self._last_logits_kwargs(),
        ).logits[:, -1, :]
        return cache, attention, positions, last

    def _score_prefix_batch(self, rows: list[list[int]], answer_ids: list[list[int]]) -> torch.Tensor:
        """[prompts, answers] log-likelihoods: one prefill of the prompts, then (when an answer has
        more than one token) one pass over every (prompt, answer) pair against the shared cache."""
        import torch

        n, k = len(rows), len(answer_ids)
        cache, attention, positions, last = self._prefill(rows)
        first = torch.tensor([a[0] for a in answer_ids], device=self.device)
        scores = torch.log_softmax(last.float(), dim=-1)[:, first]  # [n, k]
        longest = max(len(a) for a in answer_ids)
        if longest == 1:
            return scores.cpu()
        # Feed tokens 1..L-1 of each answer (right-padded); logits at j predict token j+1.
        steps = longest - 1
        feed = torch.full((k, steps), self.tokenizer.pad_token_id, dtype=torch.long)
        want = torch.zeros((k, steps), dtype=torch.long)
        mask = torch.zeros((k, steps), dtype=torch.long)
        for j, a in enumerate(answer_ids):
            feed[j, : len(a) - 1] = torch.tensor(a[:-1])
            want[j, : len(a) - 1] = torch.tensor(a[1:])
            mask[j, : len(a) - 1] = 1
        feed, want, mask = feed.to(self.device), want.to(self.device), mask.to(self.device)
        cache.batch_repeat_interleave(k)  # row order: prompt 0 x answers, prompt 1 x answers, ...
        att = torch.cat([attention.repeat_interleave(k, dim=0), mask.repeat(n, 1)], dim=-1)
        offsets = torch.arange(1, steps + 1, device=self.device)
        pos = positions[:, -1:].repeat_interleave(k, dim=0) + offsets
        logits = self.model(
            input_ids=feed.repeat(n, 1),
            attention_mask=att,
            position_ids=pos,
            use_cache=True,
            **{self._cache_kwarg(): cache},
        ).logits
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, want.repeat(n, 1)[..., None]).squeeze(-1)
        rest = (logp * mask.repeat(n, 1)).sum(-1).view(n, k)
        return (scores + rest).cpu()

    def _score_full_batch(self, rows: list[list[int]], answer_ids: list[list[int]]) -> torch.Tensor:
        """The reference: every prompt + answer sequence in one left-padded batch, no shared cache."""
        import torch

        n, k = len(rows), len(answer_ids)
        longest = max(len(a) for a in answer_ids)
        seqs = [r + a for r in rows for a in answer_ids]
        input_ids, attention, positions = self._left_padded(seqs)
        logits = self.model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            **self._last_logits_kwargs(longest + 1),
        ).logits[:, -(longest + 1) :, :]
        logp = torch.log_softmax(logits.float(), dim=-1)
        out = torch.zeros(n * k)
        for row in range(n * k):
            a = answer_ids[row % k]
            # Answer token j sits at position W - len(a) + j; the logit predicting it is one before.
            start = longest - len(a)
            idx = torch.arange(start, start + len(a), device=logp.device)
            tok = torch.tensor(a, device=logp.device)
            out[row] = logp[row, idx, tok].sum().cpu()
        return out.view(n, k)

    def _generate_local(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[GenOutput]:
        import torch

        budget = self._prompt_budget(settings)
        encoded = [encode_prompt(self.tokenizer, p, budget) for p in prompts]
        results: list[GenOutput | None] = [None] * len(prompts)
        rng = None
        if settings.do_sample:
            rng = torch.Generator(device=self.device).manual_seed(self.seed)
        was_training = self.model.training
        self.model.eval()
        done = 0
        try:
            with torch.inference_mode():
                for batch in length_sorted_batches([len(e) for e in encoded], settings.batch_size):
                    for i, new in zip(
                        batch, self._decode_batch([encoded[i] for i in batch], settings, rng), strict=True
                    ):
                        text = decode_one(self.tokenizer, new)
                        results[i] = GenOutput(text, len(encoded[i]), len(new))
                    done += len(batch)
                    if on_progress is not None:
                        on_progress(done, len(prompts))
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    @functools.cached_property
    def _forward_params(self) -> frozenset[str]:
        """The base model's forward() parameter names (looked up once, not per batch)."""
        import inspect

        get_base_model = getattr(self.model, "get_base_model", None)  # a PEFT model wraps the base
        base = get_base_model() if get_base_model is not None else self.model
        return frozenset(inspect.signature(base.forward).parameters)

    def _cache_kwarg(self) -> str:
        """The forward() argument that takes the KV cache: ``cache`` in newer transformers v5
        releases (``past_key_values`` is deprecated there), ``past_key_values`` before."""
        return "cache" if "cache" in self._forward_params else "past_key_values"

    def _last_logits_kwargs(self, n: int = 1) -> dict[str, int]:
        """Ask the model for the last ``n`` positions' logits only, where it can: the prefill would
        otherwise project every prompt position onto the vocabulary — for a small model about a
        fifth of the prefill's work and a batch x length x vocabulary tensor (~0.5 GB at batch 16)."""
        for name in ("logits_to_keep", "num_logits_to_keep"):
            if name in self._forward_params:
                return {name: n}
        return {}

    def _decode_batch(
        self, batch: list[list[int]], settings: GenerationSettings, rng: torch.Generator | None
    ) -> list[list[int]]:
        """Greedy/sampled decoding of one left-padded batch with a KV cache that shrinks as rows finish."""
        import torch

        device = self.device
        eos = self.tokenizer.eos_token_id
        cache, attention, positions, logits = self._prefill(batch)
        cache_kw = self._cache_kwarg()
        next_pos = positions[:, -1] + 1
        active = list(range(len(batch)))  # original row of each live row
        new_tokens: list[list[int]] = [[] for _ in batch]
        for step in range(settings.max_new_tokens):
            chosen = _pick_next(logits, settings, rng)
            keep: list[int] = []
            for live, tok in enumerate(chosen.tolist()):
                row = active[live]
                if tok == eos:
                    continue  # EOS ends the row; it is not part of the text
                new_tokens[row].append(tok)
                if settings.stop_at_label and self._stop.is_complete(new_tokens[row]):
                    continue
                keep.append(live)
            if not keep or step == settings.max_new_tokens - 1:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                attention, chosen, next_pos = attention[index], chosen[index], next_pos[index]
                active = [active[i] for i in keep]
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=-1)
            logits = self.model(
                input_ids=chosen[:, None],
                attention_mask=attention,
                position_ids=next_pos[:, None],
                use_cache=True,
                **{cache_kw: cache},
            ).logits[:, -1, :]
            next_pos = next_pos + 1
        return new_tokens
