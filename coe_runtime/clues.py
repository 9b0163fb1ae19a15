"""The ``clues`` step: an instruction-tuned LLM writes a persona per speaker and a scene per dialogue.

Output: ``clues.json`` in the clue file format (coe_runtime.data.clue_file), published under the step's
output, plus ``clues-summary.json`` (counts: requested, generated, served from the cache, empty).

No peeking (the default, ``future_turns: false``): a persona is written for every target utterance
from each speaker's lines *before* that utterance, and stored in ``utterance_personas[uid]``; the
prompt builder prefers it over a dialogue-level persona. A speaker who has not spoken yet has no
persona at that point. The per-dialogue scene is written from the dialogue's opening line only.
With ``future_turns: true`` (the CoE paper's way, cheaper) one persona per (dialogue, speaker) is
written from all of that speaker's lines, and the scene from the whole dialogue.

Cost: identical inputs are generated once (a speaker's persona input changes only when they
speak), so the no-peeking mode costs about one generation per utterance, the other mode one per
(dialogue, speaker). Every generation is cached by its exact request (dialogue, speaker, lines,
model, prompt version, generation settings) under ``step.cache`` (default ``<output>/../clue-cache``),
in append-only shard files, so a rerun, or a crash half-way, never pays twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coe_runtime.data.clue_file import Clues, dialogue_key, write_clues
from coe_runtime.data.dialogue import SPLITS, Dialogue
from coe_runtime.models.hub import content_key
from coe_runtime.record import publish_step
from coe_runtime.step import CluesStep, GenerationSettings, ModelRef

PERSONA = "persona"
SCENE = "scene"
MAX_LINES = 12  # most recent lines a persona is written from
MAX_LINE_WORDS = 60  # each line shortened to this many words in the LLM's prompt
MAX_CLUE_CHARS = 400  # cleaned clue length cap
CACHE_CHUNK = 256  # generations per cache shard (also how much a crash can lose)


@dataclass(frozen=True)
class ClueRequest:
    """One text to generate. ``uid`` set: a persona as of that target utterance (no peeking)."""

    kind: str  # persona | scene
    dialogue: str  # dialogue key "<split>/<dialogue_id>"
    speaker: str | None
    uid: str | None
    lines: tuple[str, ...]  # "Speaker: text" (scene) or the speaker's own lines (persona)


# --------------------------------------------------------------------------------------------
# Pure: what to generate, the LLM's prompt, cleaning, assembling the clue file
# --------------------------------------------------------------------------------------------
def _short(text: str, words: int = MAX_LINE_WORDS) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


def plan_requests(dialogues: Iterable[Dialogue], future_turns: bool = False) -> list[ClueRequest]:
    """Every persona and scene the clue file needs, in dialogue order."""
    out: list[ClueRequest] = []
    for d in dialogues:
        key = dialogue_key(d.split, d.dialogue_id)
        if future_turns:
            out.append(
                ClueRequest(
                    SCENE, key, None, None, tuple(f"{u.speaker}: {_short(u.text)}" for u in d.utterances)
                )
            )
            for speaker in d.speakers:
                own = [_short(u.text) for u in d.utterances if speaker in u.speakers]
                out.append(ClueRequest(PERSONA, key, speaker, None, tuple(own[-MAX_LINES:])))
            continue
        if d.utterances:
            first = d.utterances[0]
            out.append(ClueRequest(SCENE, key, None, None, (f"{first.speaker}: {_short(first.text)}",)))
        said: dict[str, list[str]] = {}
        for u in d.utterances:
            # Personas as of this target: only lines said before it.
            for speaker, lines in said.items():
                out.append(ClueRequest(PERSONA, key, speaker, u.uid, tuple(lines[-MAX_LINES:])))
            for speaker in u.speakers:
                said.setdefault(speaker, []).append(_short(u.text))
    return out


def llm_prompt(request: ClueRequest) -> str:
    """The instruction for one request (plain text; the chat template is applied by the runner).

    The task is said before the material and again, in full, after it: if a long prompt must be
    cut, the generator cuts from the left and only the oldest lines (and the opening task line)
    go, never the final instruction. Lines are quoted so a small model describes them instead of
    continuing the conversation.
    """
    if request.kind == SCENE:
        body = "\n".join(f'"{line}"' for line in request.lines)
        return (
            "Describe the scene of a conversation.\n\n"
            f"Conversation (quoted lines):\n{body}\n\n"
            "Task: in one or two sentences of your own, describe the scene of this conversation: where it "
            "probably takes place, who is there and what is going on. Do not continue the conversation. "
            "Write only the description."
        )
    body = "\n".join(f'- "{line}"' for line in request.lines)
    return (
        f"Describe the speaker {request.speaker}.\n\n"
        f"Lines said by {request.speaker} (quoted):\n{body}\n\n"
        f"Task: in one or two sentences of your own, describe {request.speaker}'s personality and "
        "situation as these lines show them. Write only the description."
    )


_LEAD_RE = re.compile(r"^\s*(persona|scene|description)\s*:\s*", re.IGNORECASE)


def clean_clue(text: str, max_chars: int = MAX_CLUE_CHARS) -> str:
    """Strip, keep the first paragraph as one line, cap the length at a sentence (else word) end."""
    # U+FFFD: a byte-level tokenizer's half-decoded character; never useful in a prompt.
    text = _LEAD_RE.sub("", text.replace("\ufffd", "").strip())
    paragraph = re.split(r"\n\s*\n", text, maxsplit=1)[0]
    one_line = " ".join(paragraph.split())
    # A generation cut by max_new_tokens ends mid-sentence: keep the complete sentences.
    if one_line and one_line[-1] not in ".!?…\"')":
        last_end = max(one_line.rfind(". "), one_line.rfind("! "), one_line.rfind("? "))
        if last_end > 0:
            one_line = one_line[: last_end + 1]
    if len(one_line) <= max_chars:
        return one_line
    cut = one_line[:max_chars]
    sentence_end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if sentence_end >= max_chars // 3:
        return cut[: sentence_end + 1]
    return cut.rsplit(" ", 1)[0].rstrip(",;:") + "…"


def model_key(ref: ModelRef) -> str:
    # A model folder in the store is keyed by what it holds (source + digest of its files), so two
    # experiments' snapshots of one Hub model share the clue cache (coe_runtime.models.hub).
    return f"{content_key(ref.name_or_path)}|dtype={ref.dtype}|seed={ref.seed}"


def model_slug(ref: ModelRef) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", content_key(ref.name_or_path)).strip("-")[-60:] or "model"
    return f"{slug}-{hashlib.sha256(model_key(ref).encode()).hexdigest()[:8]}"


def request_key(
    request: ClueRequest, ref: ModelRef, prompt_version: str, settings: GenerationSettings
) -> str:
    """Cache key: everything that decides the generated text."""
    payload = {
        "kind": request.kind,
        "dialogue": request.dialogue,
        "speaker": request.speaker,
        "lines": list(request.lines),
        "prompt": llm_prompt(request),  # a changed template never serves stale texts
        "model": model_key(ref),
        "prompt_version": prompt_version,
        "generation": settings.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def assemble_clues(
    requests: Sequence[ClueRequest], texts: Sequence[str], meta: dict[str, Any]
) -> tuple[Clues, int]:
    """The clue file from requests and their cleaned texts; returns (clues, number left out empty)."""
    clues = Clues(meta=meta)
    empty = 0
    for req, text in zip(requests, texts, strict=True):
        if not text:
            empty += 1  # the format forbids empty entries; the prompt simply shows no clue there
            continue
        if req.kind == SCENE:
            clues.scenes[req.dialogue] = text
            continue
        assert req.speaker is not None  # plan_requests names the speaker of every persona
        if req.uid is not None:
            clues.utterance_personas.setdefault(req.uid, {})[req.speaker] = text
        else:
            clues.personas.setdefault(req.dialogue, {})[req.speaker] = text
    return clues, empty


# --------------------------------------------------------------------------------------------
# Cache: append-only JSONL shards under a store prefix
# --------------------------------------------------------------------------------------------
def cache_prefix(step: CluesStep) -> str:
    from coe_runtime.store import join, normalize_uri

    base = step.cache or join(normalize_uri(step.output).rstrip("/").rsplit("/", 1)[0], "clue-cache")
    return join(base, model_slug(step.base_model), step.prompt_version)


def load_cache(store: Any, prefix: str) -> dict[str, str]:
    """Every cached ``key -> raw text`` under ``prefix`` (shards never overwrite each other)."""
    cached: dict[str, str] = {}
    for uri in store.list(prefix):
        if uri.endswith(".jsonl"):
            for row in store.read_jsonl(uri):
                cached[row["key"]] = row["text"]
    return cached


def write_cache_shard(store: Any, prefix: str, rows: list[dict[str, Any]]) -> None:
    from coe_runtime.store import join

    digest = hashlib.sha256("".join(r["key"] for r in rows).encode()).hexdigest()[:16]
    store.write_jsonl(join(prefix, f"shard-{time.time_ns()}-{digest}.jsonl"), rows)


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------
def load_dialogues(step: CluesStep) -> list[Dialogue]:
    """The dialogues of every split the dataset names (all three for the bundled demo)."""
    from coe_runtime.data.readers import load_split

    source = step.dataset
    splits = (
        [s for s in SPLITS if s in source.files] if source.format != "demo" or source.files else list(SPLITS)
    )
    dialogues: list[Dialogue] = []
    for split in splits:
        part = load_split(source, split)
        if source.max_dialogues:
            from coe_runtime.prompts.tasks import subset_dialogues

            # Prepare keeps the seed dialogues when it builds STEeR sets and not otherwise; this
            # step cannot know which, so it covers both subsets (their union, in file order).
            seeds = _seed_uids(step) if split == "train" else frozenset()
            chosen = {
                id(d)
                for keep in (seeds, frozenset())
                for d in subset_dialogues(part, source.max_dialogues, source.subset_seed, keep_uids=keep)
            }
            part = [d for d in part if id(d) in chosen]
        dialogues += part
    return dialogues


def _seed_uids(step: CluesStep) -> frozenset[str]:
    """Seed utterances are always kept when subsetting (as prepare keeps them)."""
    from coe_runtime.data.seeds import load_seeds
    from coe_runtime.errors import CoEError

    try:
        return frozenset(s.uid for s in load_seeds(step.dataset.label_set.name))
    except CoEError:
        return frozenset()


def chat_prompt(tokenizer: Any, text: str) -> str:
    """Wrap an instruction in the model's chat template when it has one (instruction-tuned LLMs)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text


def run_clues(step: CluesStep, generator: Any = None, console: Any = None) -> dict[str, Any]:
    """Generate (or fetch from the cache) every clue and publish ``clues.json``; returns the summary.

    A published step is not redone. Under torchrun every rank loads the cache and the data, so all
    ranks agree on what is missing; the generator shards each chunk, rank 0 writes the cache and
    publishes.
    """
    from coe_runtime.distributed import init_distributed
    from coe_runtime.progress import is_rank_zero, report
    from coe_runtime.store import get_store

    init_distributed()
    started = time.monotonic()
    dialogues = load_dialogues(step)
    requests = plan_requests(dialogues, step.future_turns)
    settings = step.generation.model_copy(update={"stop_at_label": False})
    keys = [request_key(r, step.base_model, step.prompt_version, settings) for r in requests]
    prefix = cache_prefix(step)
    cache_store = get_store(prefix)
    cached = load_cache(cache_store, prefix)
    # Identical requests are generated once.
    missing = list(dict.fromkeys(k for k in keys if k not in cached))
    first_of: dict[str, ClueRequest] = {}
    for req, key in zip(requests, keys, strict=True):
        first_of.setdefault(key, req)
    report(
        step=step.name,
        phase="clues",
        message=f"{len(requests)} clues, {len(missing)} to generate",
        total=len(missing),
    )

    generated = tokens = 0
    if missing:
        if generator is None:
            from coe_runtime.models.generate import Generator

            generator = Generator.load(step.base_model)
        tokenizer = getattr(generator, "tokenizer", None)
        for start in range(0, len(missing), CACHE_CHUNK):
            chunk = missing[start : start + CACHE_CHUNK]
            prompts = [chat_prompt(tokenizer, llm_prompt(first_of[k])) for k in chunk]
            outputs = generator.generate(prompts, settings)
            rows = []
            for key, out in zip(chunk, outputs, strict=True):
                req = first_of[key]
                cached[key] = out.text
                tokens += int(out.n_new_tokens)
                rows.append(
                    {
                        "key": key,
                        "kind": req.kind,
                        "dialogue": req.dialogue,
                        "speaker": req.speaker,
                        "text": out.text,
                    }
                )
            generated += len(chunk)
            if is_rank_zero():
                write_cache_shard(cache_store, prefix, rows)
            report(step=step.name, phase="clues", done=generated, total=len(missing))

    texts = [clean_clue(cached[k]) for k in keys]
    meta = {
        "generated_by": "coe_runtime.clues",
        "model": step.base_model.name_or_path,
        "prompt_version": step.prompt_version,
        "future_turns": step.future_turns,
    }
    clues, empty = assemble_clues(requests, texts, meta)
    summary: dict[str, Any] = {
        "step": step.name,
        "dialogues": len(dialogues),
        "requests": len(requests),
        "unique_requests": len(set(keys)),
        "generated": generated,
        "from_cache": len(set(keys)) - generated,
        "empty": empty,
        "tokens_generated": tokens,
        "scenes": len(clues.scenes),
        "personas": sum(len(v) for v in clues.personas.values()),
        "utterance_personas": sum(len(v) for v in clues.utterance_personas.values()),
        "cache": prefix,
        "seconds": round(time.monotonic() - started, 3),
    }
    if not is_rank_zero():
        return summary
    with tempfile.TemporaryDirectory(prefix="coe-clues-") as tmp:
        write_clues(Path(tmp) / "clues.json", clues)
        (Path(tmp) / "clues-summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        publish_step(
            step, tmp, meta={"kind": "clues", **{k: summary[k] for k in ("generated", "from_cache")}}
        )
    if console is None:
        from rich.console import Console

        console = Console()
    console.print(
        f"clues: {summary['scenes']} scenes, {summary['personas'] + summary['utterance_personas']} personas "
        f"({generated} generated, {summary['from_cache']} from the cache, {empty} empty) in {summary['seconds']}s"
    )
    return summary
