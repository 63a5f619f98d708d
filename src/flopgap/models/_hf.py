"""``hf:ARCH`` and ``hf:PATH/config.json``: transformers models built from a config
class with random weights. Nothing is downloaded: the hub is switched off
(``HF_HUB_OFFLINE=1``) before transformers is imported, and a config file is read as
JSON from the local disk.

Each architecture names the transformers ``model_type`` its config comes from, the
model class built from it, and what its inputs are (token ids or pixels). Config
fields are overridden by ``--kwargs`` (``{"num_hidden_layers": 4}``); unknown fields
are refused, so a typo never builds the default model silently.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from flopgap.errors import UsageError, one_line
from flopgap.models._inputs import InputSpec

__all__ = ["HF_ARCHS", "HfArch", "load_hf", "hf_config", "is_causal_lm", "import_transformers"]

DEFAULT_SEQ = 128  # tokens per sequence when --seq is not given


@dataclass(frozen=True)
class HfArch:
    model_type: str  # transformers' config registry key (AutoConfig.for_model)
    model_class: str  # class in the transformers namespace
    inputs: str  # "tokens" (input_ids) or "pixels" (pixel_values)
    description: str


HF_ARCHS: dict[str, HfArch] = {
    "bert": HfArch("bert", "BertModel", "tokens", "BERT-base encoder (110 M params at the defaults)"),
    "distilbert": HfArch("distilbert", "DistilBertModel", "tokens", "DistilBERT encoder, 6 layers"),
    "roberta": HfArch("roberta", "RobertaModel", "tokens", "RoBERTa-base encoder"),
    "t5-encoder": HfArch("t5", "T5EncoderModel", "tokens", "T5-small encoder stack (relative position bias)"),
    "vit": HfArch("vit", "ViTModel", "pixels", "ViT-B/16 encoder at 224x224"),
    "gpt2": HfArch("gpt2", "GPT2LMHeadModel", "tokens", "GPT-2 small causal LM (124 M params, tied head)"),
    "llama": HfArch("llama", "LlamaForCausalLM", "tokens", "Llama causal LM, 7B defaults (MHA; GQA via "
                                                           "num_key_value_heads)"),
    "mistral": HfArch("mistral", "MistralForCausalLM", "tokens", "Mistral-7B causal LM (GQA 32/8, sliding window)"),
    "qwen2": HfArch("qwen2", "Qwen2ForCausalLM", "tokens", "Qwen2 causal LM (biased q/k/v projections)"),
    "opt": HfArch("opt", "OPTForCausalLM", "tokens", "OPT-350m-style causal LM (learned positions, ReLU MLP)"),
    "phi3": HfArch("phi3", "Phi3ForCausalLM", "tokens", "Phi-3-mini causal LM (fused qkv and gate_up)"),
}


def import_transformers():
    """transformers, imported with the hub switched off; a one-line error when missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # transformers imports torchao (when installed) as models are built; its enum
    # registrations make torch log a deprecation warning on stderr that is not the user's
    # concern: that one logger is kept to errors
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    try:
        import transformers
    except ImportError:
        raise UsageError("hf: models need transformers: pip install 'flopgap[hf]'") from None
    transformers.logging.set_verbosity_error()
    return transformers


def hf_config(spec_rest: str, kwargs: dict):
    """``(config, model class, inputs kind, canonical spec)`` for ``hf:ARCH`` or ``hf:PATH``."""
    transformers = import_transformers()
    if spec_rest in HF_ARCHS:
        arch = HF_ARCHS[spec_rest]
        base = {}
        model_type, class_name, kind = arch.model_type, arch.model_class, arch.inputs
    else:
        path = Path(spec_rest)
        if path.is_dir():
            path = path / "config.json"
        if path.suffix != ".json":
            known = ", ".join(HF_ARCHS)
            raise UsageError(f"unknown hf architecture {spec_rest!r}: known {known}, or hf:PATH/config.json")
        try:
            base = json.loads(path.read_text())
        except OSError as e:
            raise UsageError(f"cannot read {str(path)!r}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise UsageError(f"{str(path)!r} is not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(base, dict) or "model_type" not in base:
            raise UsageError(f"{str(path)!r} has no \"model_type\": not a transformers config.json")
        model_type = base.pop("model_type")
        class_name, kind = _class_for(transformers, model_type, base.get("architectures") or [])
    try:
        config_class = transformers.AutoConfig.for_model(model_type).__class__
    except ValueError:
        raise UsageError(f"transformers {transformers.__version__} does not know model_type {model_type!r}") from None
    defaults = config_class().to_dict()
    unknown = sorted(k for k in kwargs if k not in defaults and not hasattr(config_class(), k))
    if unknown:
        raise UsageError(f"hf:{spec_rest} --kwargs: {', '.join(map(repr, unknown))} not a field of "
                         f"{config_class.__name__} (e.g. num_hidden_layers, hidden_size, num_attention_heads)")
    try:
        config = config_class(**{**base, **kwargs})
    except (TypeError, ValueError) as e:
        raise UsageError(f"hf:{spec_rest} rejected --kwargs {kwargs}: {one_line(e)}") from None
    config.use_cache = False  # a plain forward pass; generation builds its own cache
    vocab, pad = getattr(config, "vocab_size", None), getattr(config, "pad_token_id", None)
    if isinstance(vocab, int) and isinstance(pad, int) and pad >= vocab and "pad_token_id" not in kwargs:
        config.pad_token_id = None  # a shrunk vocabulary leaves the default pad id out of range
    return config, class_name, kind


def _class_for(transformers, model_type: str, architectures: list) -> tuple[str, str]:
    for name in architectures:
        if hasattr(transformers, name):
            return name, "pixels" if "Image" in name or model_type == "vit" else "tokens"
    for arch in HF_ARCHS.values():
        if arch.model_type == model_type:
            return arch.model_class, arch.inputs
    return "AutoModel", "tokens"


def is_causal_lm(module) -> bool:
    """Whether a transformers model generates text (a causal LM with a cache)."""
    return type(module).__name__.endswith("ForCausalLM") or type(module).__name__.endswith("LMHeadModel")


def _input_specs(config, kind: str) -> tuple[InputSpec, ...]:
    """The default inputs: token ids (``input_ids``) or pixels (``pixel_values``), passed
    positionally: the first argument of every model forward listed here, so every stage
    (timers, profilers, variants) calls the model the same way. Attention masks and other
    keyword inputs are given with ``--input attention_mask=1x128:int64[1,2)``."""
    if kind == "pixels":
        size = getattr(config, "image_size", 224)
        channels = getattr(config, "num_channels", 3)
        return (InputSpec((1, channels, size, size)),)
    vocab = int(getattr(config, "vocab_size", 0) or 2)
    return (InputSpec((1, DEFAULT_SEQ), "int64", 0, vocab),)


def load_hf(spec_rest: str, kwargs: dict, meta: bool):
    """Build ``hf:spec_rest``; returns ``(module, input specs, config)``."""
    transformers = import_transformers()
    config, class_name, kind = hf_config(spec_rest, kwargs)
    model_class = getattr(transformers, class_name, None) or transformers.AutoModel

    def build(device: str):
        try:
            with torch.device(device):
                if model_class is transformers.AutoModel:
                    return model_class.from_config(config)
                return model_class(config)
        except (TypeError, ValueError, AssertionError, RuntimeError) as e:
            raise UsageError(f"hf:{spec_rest} could not be built from its config: {one_line(e)}") from None

    module = build("meta")
    if not meta:
        _check_fits(spec_rest, module)
        module = build("cpu")
    return module, _input_specs(config, kind), config


_MEMORY_SHARE = 0.8  # refuse to build weights above this share of the machine's memory


def _check_fits(spec_rest: str, meta_module) -> None:
    """Refuse (one line, before allocating) a model whose weights do not fit in memory."""
    need = sum(p.numel() * p.element_size() for p in meta_module.parameters())
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf: let the build try
        return
    if need > _MEMORY_SHARE * total:
        raise UsageError(f"hf:{spec_rest} has {need / 1e9:.1f} GB of weights, more than this machine's "
                         f"{total / 1e9:.1f} GB of memory allows: count it with --meta, or shrink it with --kwargs")
