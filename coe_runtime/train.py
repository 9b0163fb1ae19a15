"""LoRA fine-tuning of one curriculum stage with the Hugging Face Trainer (plain, DDP or DeepSpeed).

* Loss on target tokens + EOS only (labels are -100 on the prompt and on padding); a prompt that
  would not fit is cut from the LEFT, the target never (the reference cut from the right).
* AdamW (betas from the step, the paper's 0.9/0.95), warm-up ratio + linear decay, sized by the
  Trainer from the actual number of examples of this step (the reference sized STEeR's schedule
  for the seeds only); gradient accumulation; gradient checkpointing where the model supports it.
* Length-grouped batches: examples sorted by length into batches, batch order shuffled per epoch
  with the seed, so little compute goes to padding.
* ``init_adapter``: the previous stage's adapter is loaded trainable and training continues on it.
* DeepSpeed ZeRO-2/3 through ``TrainingArguments(deepspeed=...)`` when the step names a config;
  on CPU it runs with gloo and torch AdamW.
* Checkpoints every epoch (or every ``checkpoint_every_steps``) are published to
  ``<output>/_checkpoints/checkpoint-N`` (manifest last); a restarted step resumes from the last
  complete one and ends with the same number of optimizer steps.
* With ``eval_file``: after each epoch, generate on dev, score, keep the best epoch's adapter.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from coe_runtime import progress
from coe_runtime.data.dialogue import Example, read_examples_uri
from coe_runtime.errors import ConfigError, DataError
from coe_runtime.models.generate import encode_prompt
from coe_runtime.record import publish_step
from coe_runtime.step import TrainStep, dump_step
from coe_runtime.store import cache_dir, get_store, join, materialize, normalize_uri

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE_INDEX = -100
CHECKPOINTS = "_checkpoints"
_CKPT_RE = re.compile(r"checkpoint-(\d+)$")
STATE_DIR = "coe-state"  # our own files inside a Trainer checkpoint (train log, dev evaluations)


# --------------------------------------------------------------------------- tokenisation
def tokenize_example(
    tokenizer: PreTrainedTokenizerBase, prompt: str, target: str, max_length: int, where: str = "example"
) -> dict[str, list[int]]:
    """``input_ids`` = prompt + target + EOS; ``labels`` = -100 on the prompt, ids on target + EOS.

    The prompt is encoded exactly as generation encodes it (so training and inference see the
    same tokens) and cut from the left when prompt + target + EOS exceeds ``max_length``."""
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no EOS token; training needs one to end targets")
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    budget = max_length - len(target_ids)
    if budget < 1:
        raise DataError(
            where,
            None,
            f"target is {len(target_ids)} tokens with EOS, over max_length {max_length}; "
            "raise optim.max_length or shorten the target (targets are never truncated)",
        )
    prompt_ids = encode_prompt(tokenizer, prompt, budget)
    return {
        "input_ids": prompt_ids + target_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids,
    }


def load_train_examples(uris: Sequence[str]) -> list[tuple[Example, str]]:
    """Every example of every file, in order, with ``file:line``-style provenance for errors."""
    out: list[tuple[Example, str]] = []
    for i, uri in enumerate(uris):
        examples = read_examples_uri(uri, f"train_files[{i}]")
        if not examples:
            raise DataError(str(uri), None, "no examples; expected JSONL with one example per line")
        out.extend((ex, f"{uri} (example {ex.id})") for ex in examples)
    return out


class PaddingCollator:
    """Right-pads a batch; padding gets attention 0 and label -100."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.tensor(f["input_ids"])
            labels[row, :n] = torch.tensor(f["labels"])
            attention[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": attention}


class LengthGroupedBatchSampler:
    """Batches of similar length: sort by (length, a per-epoch random tie-break), cut into batches,
    shuffle the batch order with ``seed + epoch``. Deterministic per epoch, so a resumed run skips
    exactly the batches it already trained on."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        tie = [rng.random() for _ in self.lengths]
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], tie[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


class ShuffledBatchSampler(LengthGroupedBatchSampler):
    """Plain shuffled batches (``group_by_length: false``), same interface."""

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]


# --------------------------------------------------------------------------- DeepSpeed config
def resolve_deepspeed_config(spec: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """A bundled name (``zero2``, ``zero3``), a path/URI of a JSON file, or an inline dict."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        return dict(spec)
    bundled = resources.files("coe_runtime") / "deepspeed" / f"{spec}.json"
    if "/" not in spec and not spec.endswith(".json"):
        if not bundled.is_file():
            raise ConfigError(
                f"distributed.deepspeed: unknown bundled config {spec!r}; expected zero2, zero3, a path or a dict"
            )
        return json.loads(bundled.read_text())
    path = materialize(spec)
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"distributed.deepspeed: cannot read {spec} ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"distributed.deepspeed: {spec} is not valid JSON: {e}") from None


def prepare_deepspeed_env() -> None:
    """DeepSpeed JIT-builds a small op on first use; keep the build in our cache across runs."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))


def zero_stage(ds_config: dict[str, Any] | None) -> int:
    if not ds_config:
        return 0
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


# --------------------------------------------------------------------------- model
def build_trainable_model(step: TrainStep, device: str | None = None) -> PreTrainedModel:
    """The base model with a trainable LoRA adapter: a fresh one from ``step.lora``, or the
    ``init_adapter`` loaded trainable (continued, never merged)."""
    from peft import LoraConfig, get_peft_model

    from coe_runtime.models.loading import attach_adapter, load_model

    model = load_model(step.base_model, device=device)
    if step.init_adapter:
        return attach_adapter(model, step.init_adapter, trainable=True)
    cfg = LoraConfig(
        r=step.lora.r,
        lora_alpha=step.lora.alpha,
        lora_dropout=step.lora.dropout,
        target_modules=list(step.lora.target_modules),
        modules_to_save=list(step.lora.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, cfg)
    except ValueError as e:
        raise ConfigError(f"lora: {e}") from None
    return cast("PreTrainedModel", peft_model)  # a PeftModel forwards the wrapped model's API


def _unwrap(model: Any) -> Any:
    while hasattr(model, "module") and not hasattr(model, "peft_config"):
        model = model.module
    return model


# --------------------------------------------------------------------------- checkpoints
# A checkpoint is published by every node: DeepSpeed writes each rank's ZeRO shard into its own
# node's output folder, so a checkpoint is the union of one part per node, each published as
# ``<output>/_checkpoints/checkpoint-N/node-K/`` (manifest last). It is complete when all
# ``nnodes`` parts are; a restarted step fetches every part into each node's folder.
NODE_PART = "node-{}"


def published_checkpoints(output: str, nnodes: int = 1) -> list[tuple[int, str]]:
    """(optimizer step, prefix) of every COMPLETE checkpoint (all nodes' parts published), oldest first."""
    store = get_store(output)
    root = join(output, CHECKPOINTS)
    parts: dict[int, set[str]] = {}
    for uri in store.list(root):
        rel = uri[len(root) + 1 :].split("/")
        if len(rel) == 3 and rel[2] == "MANIFEST.json" and (m := _CKPT_RE.match(rel[0])):
            parts.setdefault(int(m.group(1)), set()).add(rel[1])
    wanted = {NODE_PART.format(k) for k in range(nnodes)}
    return sorted((n, join(root, f"checkpoint-{n}")) for n, have in parts.items() if wanted <= have)


def node_rank() -> int:
    """This pod's node index under torchrun (``GROUP_RANK``; the operator's PET_NODE_RANK feeds it)."""
    return int(os.environ.get("GROUP_RANK") or os.environ.get("NODE_RANK") or 0)


def work_dir_for(step: TrainStep) -> Path:
    """A local folder shared by the ranks of one node (DeepSpeed writes every rank's shard there)."""
    key = hashlib.sha256(step.output.encode()).hexdigest()[:12]
    return cache_dir() / "work" / f"{step.name}-{key}"


# --------------------------------------------------------------------------- the run, in named parts
@dataclass
class TrainData:
    """The tokenised training set (and dev examples) of one step."""

    features: list[dict[str, list[int]]]
    lengths: list[int]
    eval_examples: list[Example]


@dataclass
class WorkDirs:
    """This node's local folders: the Trainer's output (checkpoints) and our own state (log, dev)."""

    root: Path

    @property
    def trainer(self) -> Path:
        return self.root / "trainer"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def log(self) -> Path:
        return self.state / "train-log.jsonl"


def load_train_data(step: TrainStep, tokenizer: Any) -> TrainData:
    pairs = load_train_examples(step.train_files)
    features = [
        tokenize_example(tokenizer, ex.prompt, ex.target, step.optim.max_length, where) for ex, where in pairs
    ]
    eval_examples = read_examples_uri(step.eval_file, "eval_file") if step.eval_file else []
    return TrainData(features, [len(f["input_ids"]) for f in features], eval_examples)


def training_arguments(step: TrainStep, ds_config: dict | None, dirs: WorkDirs) -> Any:
    """The Trainer's settings, all from the step config (nothing from the environment but GPUs)."""
    import torch
    from transformers import TrainingArguments

    on_gpu = torch.cuda.is_available()
    optim = step.optim
    save_steps = optim.checkpoint_every_steps
    return TrainingArguments(
        output_dir=str(dirs.trainer),
        per_device_train_batch_size=optim.per_device_batch_size,
        gradient_accumulation_steps=optim.gradient_accumulation_steps,
        learning_rate=optim.learning_rate,
        adam_beta1=optim.betas[0],
        adam_beta2=optim.betas[1],
        weight_decay=optim.weight_decay,
        warmup_steps=min(optim.warmup_ratio, 0.999),  # a float < 1 is a ratio of the total steps
        lr_scheduler_type="linear",
        num_train_epochs=optim.epochs,
        max_steps=optim.max_steps or -1,
        optim="adamw_torch_fused" if on_gpu else "adamw_torch",
        **_checkpointing_args(TrainingArguments, optim.gradient_checkpointing),
        bf16=on_gpu and step.base_model.dtype in ("auto", "bfloat16"),
        use_cpu=not on_gpu,
        deepspeed=ds_config,
        seed=optim.seed,
        logging_steps=1,
        save_strategy="steps" if save_steps else "epoch",
        save_steps=save_steps or 500,
        save_total_limit=1,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        # gloo on CPU; only under a launcher (a lone process has no group to join).
        ddp_backend="gloo" if not on_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )


def join_process_group(args: Any, ds_config: dict | None) -> None:
    """ZeRO-3 partitions weights while loading (zero.Init), which reads the world size from
    deepspeed.comm; on CPU accelerate initialises only torch.distributed, so join it here."""
    if ds_config is not None and args.world_size > 1:
        import deepspeed

        deepspeed.init_distributed(dist_backend=args.ddp_backend or "nccl")


def restore_checkpoint(step: TrainStep, args: Any, dirs: WorkDirs) -> str | None:
    """Fetch the newest complete checkpoint (every node's part) into this node's folder; returns
    the local checkpoint path to resume from, or None for a fresh start."""
    local_main = args.local_process_index == 0
    nnodes = step.distributed.nnodes
    with args.main_process_first(local=True, desc="fetch checkpoint"):
        checkpoints = published_checkpoints(step.output, nnodes)
        if local_main:
            shutil.rmtree(dirs.root, ignore_errors=True)
            dirs.root.mkdir(parents=True)
            if checkpoints:
                n, prefix = checkpoints[-1]
                store = get_store(prefix)
                for k in range(nnodes):
                    store.fetch(join(prefix, NODE_PART.format(k)), dirs.trainer / f"checkpoint-{n}")
    resume_from = str(dirs.trainer / f"checkpoint-{checkpoints[-1][0]}") if checkpoints else None
    if local_main:
        dirs.state.mkdir(parents=True, exist_ok=True)
        if resume_from and (Path(resume_from) / STATE_DIR).is_dir():
            shutil.copytree(Path(resume_from) / STATE_DIR, dirs.state, dirs_exist_ok=True)
    if resume_from:
        progress.report(step=step.name, phase="resume", message=f"resuming from {Path(resume_from).name}")
    return resume_from


def publish_checkpoint(step: TrainStep, args: Any, dirs: WorkDirs, global_step: int) -> None:
    """Every node publishes its part of checkpoint-N; then world rank 0 drops the older ones."""
    _barrier()
    ckpt = dirs.trainer / f"checkpoint-{global_step}"
    if args.process_index == 0:
        shutil.copytree(dirs.state, ckpt / STATE_DIR, dirs_exist_ok=True)
    if args.local_process_index == 0:
        prefix = join(step.output, CHECKPOINTS, ckpt.name, NODE_PART.format(node_rank()))
        get_store(prefix).publish(ckpt, prefix, meta={"global_step": global_step, "node": node_rank()})
    _barrier()
    if args.process_index == 0:
        store = get_store(step.output)
        for n, old in published_checkpoints(step.output, step.distributed.nnodes):
            if n != global_step:
                store.delete_prefix(old)


def _trainer_class() -> type:
    """``Trainer`` with our length-grouped (or shuffled) batches; built on first use (transformers
    is imported only by steps that train)."""
    from torch.utils.data import DataLoader
    from transformers import Trainer

    class GroupedBatchTrainer(Trainer):
        def __init__(self, *a: Any, lengths: list[int], group_by_length: bool, **kw: Any):
            super().__init__(*a, **kw)
            self.coe_lengths = lengths
            self.coe_group = group_by_length

        def get_train_dataloader(self):
            sampler_cls = LengthGroupedBatchSampler if self.coe_group else ShuffledBatchSampler
            loader = DataLoader(
                self.train_dataset,  # type: ignore[arg-type]
                batch_sampler=sampler_cls(
                    self.coe_lengths, self.args.per_device_train_batch_size, self.args.seed
                ),
                collate_fn=self.data_collator,
                num_workers=0,
            )
            return self.accelerator.prepare(loader)

    return GroupedBatchTrainer


def _callback_class() -> type:
    from transformers import TrainerCallback

    class StepCallback(TrainerCallback):
        """Our train log and progress lines; dev evaluation per epoch; checkpoints to the store."""

        def __init__(self, step: TrainStep, dirs: WorkDirs, evaluator: _DevEvaluator | None):
            self.step, self.dirs, self.evaluator = step, dirs, evaluator
            self.t_last = time.perf_counter()
            self.tokens_last = 0

        def on_train_begin(self, args, state, control, **kw):
            self.tokens_last = state.num_input_tokens_seen
            self.t_last = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            now = time.perf_counter()
            tokens = state.num_input_tokens_seen
            rate = (tokens - self.tokens_last) / max(now - self.t_last, 1e-9)
            self.t_last, self.tokens_last = now, tokens
            row = {
                "step": state.global_step,
                "epoch": round(state.epoch or 0, 4),
                "loss": logs["loss"],
                "learning_rate": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "non_pad_tokens": tokens,
                "tokens_per_s": round(rate, 1),
            }
            with self.dirs.log.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            progress.report(
                step=self.step.name, phase="train", epoch=row["epoch"], loss=row["loss"],
                done=state.global_step, total=state.max_steps, tokens_per_s=row["tokens_per_s"],
            )  # fmt: skip

        def on_epoch_end(self, args, state, control, model=None, **kw):
            if self.evaluator is not None:
                self.evaluator.evaluate(model, round(state.epoch or 0))

        def on_save(self, args, state, control, **kw):
            publish_checkpoint(self.step, args, self.dirs, state.global_step)

    return StepCallback


def publish_outputs(
    step: TrainStep,
    tokenizer: Any,
    dirs: WorkDirs,
    final_adapter: Path,
    evaluator: _DevEvaluator | None,
    summary: dict[str, Any],
    context: dict[str, Any],
) -> None:
    """World rank 0 assembles ``adapter/`` (the best dev epoch's, else the last), the log, dev
    metrics and ``resolved-config.json`` in a temp dir and publishes them (manifest last)."""
    with tempfile.TemporaryDirectory(prefix="coe-train-") as tmp:
        out = Path(tmp)
        best = evaluator.best if evaluator else None
        chosen = dirs.state / "best-adapter" if best else final_adapter
        _copy_adapter(chosen, out / "adapter")
        tokenizer.save_pretrained(out / "adapter")
        if dirs.log.is_file():
            shutil.copyfile(dirs.log, out / "train-log.jsonl")
        for f in sorted(dirs.state.glob("dev-metrics-epoch-*.json")):
            shutil.copyfile(f, out / f.name)
        if best:
            (out / "best.json").write_text(json.dumps(best, indent=2))
            summary["best_epoch"] = best["epoch"]
            summary["best_dev_weighted_f1"] = best["weighted_f1"]
        resolved = {"step": json.loads(dump_step(step)), **context, "summary": summary}
        (out / "resolved-config.json").write_text(json.dumps(resolved, indent=2))
        publish_step(step, out, meta={"kind": "train", **summary})
        get_store(step.output).delete_prefix(join(step.output, CHECKPOINTS))  # done: no longer needed


def run_train(step: TrainStep, extra_callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train, publish ``adapter/`` + tokenizer + ``resolved-config.json`` + ``train-log.jsonl``
    (+ dev metrics and ``best.json`` with ``eval_file``) under ``step.output``; returns a summary.

    ``extra_callbacks``: more ``transformers.TrainerCallback`` objects (progress displays, tests)."""
    from transformers import PrinterCallback, set_seed

    from coe_runtime.models.loading import load_tokenizer

    step = step.model_copy(update={"output": normalize_uri(step.output)})
    ds_config = resolve_deepspeed_config(step.distributed.deepspeed)
    if ds_config is not None:
        prepare_deepspeed_env()
    tokenizer = load_tokenizer(step.base_model)
    data = load_train_data(step, tokenizer)
    dirs = WorkDirs(work_dir_for(step))
    args = training_arguments(step, ds_config, dirs)
    join_process_group(args, ds_config)
    resume_from = restore_checkpoint(step, args, dirs)

    # A fresh LoRA's A matrices come from the global RNG: seed it so a run (and its restart) is
    # reproducible. The Trainer seeds again later, but only after the model exists.
    set_seed(step.optim.seed)
    model = build_trainable_model(step, device=None)
    if step.optim.gradient_checkpointing:
        # With frozen embeddings the checkpointed blocks would see inputs without grad.
        model.enable_input_require_grads()
    evaluator = (
        _DevEvaluator(step, tokenizer, data.eval_examples, dirs.state, zero_stage(ds_config))
        if data.eval_examples
        else None
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=data.features,
        data_collator=PaddingCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[_callback_class()(step, dirs, evaluator), *extra_callbacks],
        lengths=data.lengths,
        group_by_length=step.optim.group_by_length,
    )
    # Our progress events and train-log.jsonl replace the Trainer's printed log dicts.
    trainer.remove_callback(PrinterCallback)
    world = args.world_size
    progress.report(
        step=step.name, phase="train", message=f"{len(data.features)} examples on {world} process(es)"
    )
    result = trainer.train(resume_from_checkpoint=resume_from)
    if evaluator is not None:
        # A step stopped after its last checkpoint but before that epoch's dev evaluation resumes at
        # the end, where the Trainer calls no epoch-end callback again: evaluate what it owes.
        evaluator.evaluate_unless_done(trainer.model, round(trainer.state.epoch or 0))

    final_adapter = dirs.root / "final-adapter"
    trainer.save_model(str(final_adapter))  # every rank: ZeRO-3 gathers the weights collectively
    summary = {
        "examples": len(data.features),
        "optimizer_steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 6),
        "world_size": world,
        "non_pad_tokens": trainer.state.num_input_tokens_seen,
    }
    if args.process_index == 0:
        optim = step.optim
        context = {
            "deepspeed": ds_config,
            "lora_from": step.init_adapter or "new adapter from step.lora",
            "world_size": world,
            "effective_batch_size": optim.per_device_batch_size * optim.gradient_accumulation_steps * world,
            "resumed_from": Path(resume_from).name if resume_from else None,
        }
        publish_outputs(step, tokenizer, dirs, final_adapter, evaluator, summary, context)
    _barrier()
    if args.local_process_index == 0:
        shutil.rmtree(dirs.root, ignore_errors=True)
    progress.report(step=step.name, phase="done", **summary)
    return summary


def _checkpointing_args(args_cls: Any, enabled: bool) -> dict[str, Any]:
    """Activation checkpointing under its current name (``gradient_checkpointing`` before the rename)."""
    import inspect

    params = inspect.signature(args_cls).parameters
    name = "activation_checkpointing" if "activation_checkpointing" in params else "gradient_checkpointing"
    if not enabled:
        return {name: False}
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def _copy_adapter(src: Path, dest: Path) -> None:
    """Only the peft files (the Trainer also drops training_args.bin etc. beside them)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
    if not (dest / "adapter_model.safetensors").is_file():
        raise RuntimeError(f"{src}: no adapter_model.safetensors was saved")


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class _DevEvaluator:
    """After each epoch: generate on dev (sharded over ranks), score on rank 0, keep the best
    epoch's adapter (ties: the earlier epoch). State lives in ``state_dir`` so it survives restarts."""

    def __init__(self, step: TrainStep, tokenizer, examples: list[Example], state_dir: Path, stage: int):
        from coe_runtime.evaluate import label_set_of

        self.step = step
        self.tokenizer = tokenizer
        self.examples = examples
        self.state_dir = state_dir
        self.stage = stage
        self.label_set = label_set_of(step.label_set)

    @property
    def best(self) -> dict[str, Any] | None:
        path = self.state_dir / "best.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def metrics_file(self, epoch: int) -> Path:
        return self.state_dir / f"dev-metrics-epoch-{epoch}.json"

    def evaluate_unless_done(self, model: Any, epoch: int) -> None:
        """Evaluate ``epoch`` unless its dev metrics are recorded (rank 0's record decides for all)."""
        from coe_runtime.distributed import rank0_decides

        if not rank0_decides(self.metrics_file(epoch).is_file()):
            self.evaluate(model, epoch)

    def evaluate(self, model: Any, epoch: int) -> None:
        import contextlib

        from coe_runtime.distributed import dist_info
        from coe_runtime.evaluate import evaluate_examples
        from coe_runtime.models.generate import Generator

        peft_model = _unwrap(model)
        gather: Any = contextlib.nullcontext()
        if self.stage == 3:
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(list(peft_model.parameters()), modifier_rank=None)
        with gather:
            generator = Generator(
                peft_model,
                self.tokenizer,
                label_names=self.label_set.prompt_names,
                label_format=self.step.label_format,
            )
            _, metrics = evaluate_examples(
                generator,
                self.examples,
                self.label_set,
                self.step.generation,
                source=str(self.step.eval_file),
                progress_step=self.step.name,
                progress_phase="eval",
                decoding=self.step.decoding,
                label_format=self.step.label_format,
            )
            rank, _ = dist_info()
            if rank == 0 and metrics is not None:
                metrics = {"epoch": epoch, **metrics}
                self.metrics_file(epoch).write_text(json.dumps(metrics, indent=2))
                best = self.best
                if best is None or metrics["weighted_f1"] > best["weighted_f1"]:
                    tmp = self.state_dir / "best-adapter.tmp"
                    shutil.rmtree(tmp, ignore_errors=True)
                    peft_model.save_pretrained(str(tmp))
                    shutil.rmtree(self.state_dir / "best-adapter", ignore_errors=True)
                    tmp.rename(self.state_dir / "best-adapter")
                    record = {k: metrics[k] for k in ("epoch", "weighted_f1", "macro_f1", "accuracy")}
                    (self.state_dir / "best.json").write_text(json.dumps(record, indent=2))
                    best = record
                progress.report(
                    step=self.step.name, phase="eval", epoch=epoch,
                    message=f"dev weighted F1 {metrics['weighted_f1']:.2f} (best: epoch {best['epoch']})",
                )  # fmt: skip
        _barrier()
