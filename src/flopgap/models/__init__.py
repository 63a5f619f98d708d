"""Stage 1 of the pipeline: model and inputs in (specs -> ``nn.Module`` + tensors)."""

from flopgap.models._inputs import InputSpec, describe_inputs, make_inputs, parse_input_spec, with_batch
from flopgap.models._specs import LoadedModel, builtin_models, call_model, load_model, parse_kwargs, resolve_inputs

__all__ = [
    "InputSpec", "LoadedModel", "load_model", "resolve_inputs", "make_inputs",
    "parse_input_spec", "parse_kwargs", "call_model", "builtin_models", "describe_inputs", "with_batch",
]
