"""The built-in variants: eager, int8 dynamic quantization (torchao and the deprecated
``torch.ao`` path), ``torch.compile`` modes, bf16/fp16 casts, bf16 autocast, channels_last.

Each transform states what it did in its notes; none of them hides a failure: a
transform that cannot work raises, and the runner reports the variant as failed with a
one-line reason while the others still run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings

import torch
from torch import nn

from flopgap.errors import one_line
from flopgap.variants._registry import Built, Variant, register_variant

__all__ = ["torchao_status"]

# modules torch.ao's quantize_dynamic swaps by default (qint8)
_LEGACY_QUANTIZABLE = (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.RNNCell, nn.GRUCell)
_LEGACY_DEPRECATION = ("torch.ao.quantization.quantize_dynamic is deprecated (to be removed from torch; "
                       "torchao's quantize_ replaces it, pytorch/ao#2259)")


def _has(module: nn.Module, types) -> bool:
    return any(isinstance(m, types) for m in module.modules())


def _has_float_params(module: nn.Module, device: str = "cpu") -> bool:
    return any(p.is_floating_point() for p in module.parameters())


@contextlib.contextmanager
def _quiet_torch_logs(*names: str):
    """Silence torch loggers that warn on import (e.g. torchao's pytree Enum registration)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


@functools.cache
def torchao_status() -> tuple[bool, str]:
    """(usable, reason): can torchao int8-dynamic-quantize and run an ``nn.Linear`` here?

    Checked once per process by quantizing and running a 16x16 Linear on the CPU.
    """
    try:
        with _quiet_torch_logs("torch.utils._pytree", "torchao"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

            probe = nn.Linear(16, 16)
            quantize_(probe, Int8DynamicActivationInt8WeightConfig())
            with torch.inference_mode():
                probe(torch.randn(2, 16))
    except ImportError as e:
        return False, f"torchao is not installed ({e.name or e}): pip install 'flopgap[quant]'"
    except Exception as e:  # torchao present but broken with this torch
        return False, f"torchao cannot run int8 dynamic quantization here: {one_line(e)}"
    return True, f"torchao {torchao.__version__}"


# --------------------------------------------------------------------------- eager
def _eager(module: nn.Module, inputs: tuple) -> Built:
    return Built(module, module, notes=["the model as loaded (float32 eager, inference_mode)"])


# --------------------------------------------------------------------------- int8
def _legacy_quantize(module: nn.Module) -> tuple[nn.Module, int]:
    """``quantize_dynamic`` that also quantizes a bare root layer.

    ``quantize_dynamic`` swaps *children* only, so on a bare ``nn.Linear`` it returns the
    float module unchanged (the bug in the seed's example 3). Wrapping the root in a
    ``Sequential`` and unwrapping it again quantizes the root too.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation is stated in the notes instead
        from torch.ao.quantization import quantize_dynamic

        if isinstance(module, _LEGACY_QUANTIZABLE):
            out = quantize_dynamic(nn.Sequential(module), dtype=torch.qint8)[0]
        else:
            out = quantize_dynamic(module, dtype=torch.qint8)
    swapped = sum(1 for m in out.modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic"))
    return out, swapped


class _NoMhaFastPath(nn.Module):
    """Runs the wrapped module with ``torch.backends.mha`` fast path off (restored after).

    ``nn.TransformerEncoderLayer``'s fast-path check reads ``linear1.weight.device``; on a
    ``torch.ao`` dynamic quantized Linear ``weight`` is a method, so the check raises.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.model = module

    def forward(self, *inputs):
        before = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            return self.model(*inputs)
        finally:
            torch.backends.mha.set_fastpath_enabled(before)


def _int8_legacy(module: nn.Module, inputs: tuple) -> Built:
    has_encoder = _has(module, nn.TransformerEncoderLayer)
    out, swapped = _legacy_quantize(module)
    notes = [_LEGACY_DEPRECATION,
             f"torch.ao dynamic int8 ({torch.backends.quantized.engine} engine): int8 weights per tensor, "
             f"activations quantized per call; {swapped} layer(s) swapped"
             + (" (root layer included by wrapping it)" if isinstance(module, _LEGACY_QUANTIZABLE) else "")]
    if has_encoder and swapped:
        out = _NoMhaFastPath(out).eval()
        notes.append("nn.TransformerEncoderLayer fast path turned off during the call: its check reads "
                     "linear1.weight.device, a method on torch.ao quantized layers (raises otherwise); "
                     "MultiheadAttention's in_proj and out_proj stay float")
    return Built(out, out, notes=notes)


def _int8_dynamic(module: nn.Module, inputs: tuple) -> Built:
    usable, why = torchao_status()
    if not usable:
        built = _int8_legacy(module, inputs)
        built.notes.insert(0, f"torchao unusable ({why}); fell back to torch.ao")
        return built
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    with _quiet_torch_logs("torch.utils._pytree", "torchao"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_(module, Int8DynamicActivationInt8WeightConfig())  # root module included
    names = {id(m): n for n, m in module.named_modules()}
    skipped = [names.get(id(m), "?") or "(root)" for m in linears if type(m.weight) in (nn.Parameter, torch.Tensor)]
    quantized = len(linears) - len(skipped)
    notes = [f"{why} quantize_(Int8DynamicActivationInt8WeightConfig): int8 weights per channel, "
             f"activations quantized per token on each call; {quantized} of {len(linears)} Linear layer(s) quantized"
             + (" (the root layer itself)" if isinstance(module, nn.Linear) and not skipped else "")]
    if _has(module, nn.TransformerEncoderLayer) and quantized:
        notes.append("nn.TransformerEncoderLayer loses its fused fast path (aten._transformer_encoder_layer_fwd): "
                     "it is skipped whenever a weight is a tensor subclass")
    if skipped:
        shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        notes.append(f"left in float by torchao's default filter: {shown}")
    return Built(module, module, notes=notes)


def _has_linear(module: nn.Module, device: str) -> bool:
    return _has(module, nn.Linear)


def _has_legacy(module: nn.Module, device: str) -> bool:
    return device == "cpu" and _has(module, _LEGACY_QUANTIZABLE) and torchao_available_cheap()


def torchao_available_cheap() -> bool:
    """Whether torchao is importable, without importing it (int8-legacy is only a
    separate default variant when int8-dynamic uses torchao)."""
    import importlib.util

    return importlib.util.find_spec("torchao") is not None


# --------------------------------------------------------------------------- compile
def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _compiler(mode: str | None):
    def build(module: nn.Module, inputs: tuple) -> Built:
        import torch._dynamo

        if mode == "reduce-overhead" and not any(
                isinstance(t, torch.Tensor) and t.is_cuda for t in inputs):
            raise RuntimeError("CUDA graphs (mode reduce-overhead) need a CUDA device; inputs are on cpu")
        # a fresh cache: one model's specialisations must not count against another's
        # recompile limit (past it dynamo silently runs eager)
        torch._dynamo.reset()
        compiled = torch.compile(module, mode=mode, dynamic=False)
        # graphs before the first call at each batch size: a batch that adds none ran eager
        # (e.g. past dynamo's recompile limit), even when an earlier batch compiled
        before: list[int] = []

        def arm() -> None:
            before[:] = [_unique_graphs()]

        def verdict() -> bool | None:
            return False if before and _unique_graphs() == before[0] else None

        shown = mode or "default"
        notes = [f"torch.compile(mode={shown!r}, backend='inductor', dynamic=False): one specialisation per "
                 "input shape, compiled on the first call (its time is reported apart as compile time; inductor's "
                 "on-disk caches make a repeat compile of the same graph faster than a cold one)"]
        return Built(compiled, module, notes=notes, countable=False, compiled=True, verdict=verdict,
                     before_first_call=arm)

    return build


def _is_cuda(module: nn.Module, device: str) -> bool:
    return device == "cuda"


# --------------------------------------------------------------------------- precision
def _cast_inputs(dtype: torch.dtype):
    def prepare(inputs: tuple) -> tuple:
        return tuple(t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs)
    return prepare


def _cast(dtype: torch.dtype):
    def build(module: nn.Module, inputs: tuple) -> Built:
        module = module.to(dtype)
        name = str(dtype).removeprefix("torch.")
        return Built(module, module, prepare=_cast_inputs(dtype),
                     notes=[f"cast: weights and floating-point inputs converted to {name} (no autocast); "
                            "outputs compared with eager in float32"])
    return build


class _Autocast(nn.Module):
    """Runs the wrapped module under ``torch.autocast`` (a module, so it can be counted)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = module
        self.dtype = dtype

    def forward(self, *inputs):
        device = next((t.device.type for t in inputs if isinstance(t, torch.Tensor)), "cpu")
        with torch.autocast(device, dtype=self.dtype):
            return self.model(*inputs)


def _autocast(dtype: torch.dtype):
    def build(module: nn.Module, inputs: tuple) -> Built:
        wrapped = _Autocast(module, dtype).eval()
        name = str(dtype).removeprefix("torch.")
        return Built(wrapped, wrapped, notes=[
            f"autocast to {name}: weights stay float32, ops on autocast's lower-precision list "
            "(matmul, conv, linear) cast their inputs on every call"])
    return build


# --------------------------------------------------------------------------- layout
def _channels_last_inputs(inputs: tuple) -> tuple:
    return tuple(t.contiguous(memory_format=torch.channels_last)
                 if isinstance(t, torch.Tensor) and t.dim() == 4 and t.is_floating_point() else t for t in inputs)


def _channels_last(module: nn.Module, inputs: tuple) -> Built:
    module = module.to(memory_format=torch.channels_last)
    return Built(module, module, prepare=_channels_last_inputs,
                 notes=["4-D weights and 4-D float inputs stored NHWC (memory_format=torch.channels_last)"])


def _has_conv(module: nn.Module, device: str) -> bool:
    return _has(module, nn.Conv2d)


# --------------------------------------------------------------------------- registry
register_variant(Variant("eager", "the model as loaded: float32, eager, inference_mode (the baseline)", _eager))
register_variant(Variant(
    "int8-dynamic", "dynamic int8 quantization of Linear layers: torchao quantize_ where usable, else torch.ao",
    _int8_dynamic, _has_linear))
register_variant(Variant(
    "int8-legacy", "torch.ao.quantization.quantize_dynamic (deprecated; FBGEMM/x86 kernels), root layer included",
    _int8_legacy, _has_legacy))
register_variant(Variant("compile", "torch.compile, default mode (inductor)", _compiler(None)))
register_variant(Variant("compile-max-autotune", "torch.compile(mode='max-autotune-no-cudagraphs')",
                         _compiler("max-autotune-no-cudagraphs")))
register_variant(Variant("compile-cudagraphs", "torch.compile(mode='reduce-overhead'): CUDA graphs (GPU only)",
                         _compiler("reduce-overhead"), _is_cuda))
register_variant(Variant("bf16", "cast weights and float inputs to bfloat16", _cast(torch.bfloat16),
                         _has_float_params))
register_variant(Variant("fp16", "cast weights and float inputs to float16", _cast(torch.float16),
                         _has_float_params))
register_variant(Variant("bf16-autocast", "torch.autocast to bfloat16, weights stay float32",
                         _autocast(torch.bfloat16), _has_float_params))
register_variant(Variant("channels_last", "NHWC memory format for convolutional models", _channels_last,
                         _has_conv))
