"""Stage 1 of the pipeline: model and inputs in (specs -> ``nn.Module`` + tensors)."""

from flopgap.models._hf import HF_ARCHS, is_causal_lm
from flopgap.models._inputs import (InputSpec, Inputs, bind_inputs, describe_inputs, inputs_to, make_inputs,
                                    parse_input_spec, with_batch, with_seq)
from flopgap.models._specs import (LoadedModel, builtin_models, call_model, load_model, no_downloads, parse_kwargs,
                                   raised_by_model, resolve_inputs)
from flopgap.models._timm import timm_models

__all__ = [
    "InputSpec", "Inputs", "bind_inputs", "inputs_to", "with_seq", "with_batch", "LoadedModel", "load_model",
    "resolve_inputs", "make_inputs", "parse_input_spec", "parse_kwargs", "call_model", "builtin_models",
    "describe_inputs", "raised_by_model", "no_downloads", "HF_ARCHS", "is_causal_lm", "timm_models",
]
