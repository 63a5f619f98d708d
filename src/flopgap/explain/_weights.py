"""Bytes of a module's weights: what one call reads besides its activations."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["weight_bytes"]


def weight_bytes(module: nn.Module) -> int:
    """Bytes of parameters and buffers (a tensor shared by several modules counted once).

    Packed quantized weights count too: ``torch.ao`` dynamic quantized layers keep their
    int8 weight and bias in ``_packed_params``, out of ``parameters()`` (the same rule as
    the counting stage's parameter count); tensor subclasses (torchao's quantized
    weights) count the tensors they are made of.
    """
    seen: set[int] = set()
    total = 0
    for sub in module.modules():
        for t in list(sub.parameters(recurse=False)) + list(sub.buffers(recurse=False)):
            if id(t) in seen:
                continue
            seen.add(id(t))
            total += _tensor_nbytes(t)
        if getattr(sub, "_packed_params", None) is not None and callable(getattr(sub, "weight", None)):
            with contextlib.suppress(Exception):  # a packed layer without weight()/bias(): nothing to add
                w, b = sub.weight(), sub.bias()
                total += _tensor_nbytes(w) + (_tensor_nbytes(b) if b is not None else 0)
    return total


def _tensor_nbytes(t: torch.Tensor) -> int:
    if type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        with contextlib.suppress(Exception):  # not a flattenable subclass after all: its own size
            names, _ = t.__tensor_flatten__()
            return sum(_tensor_nbytes(getattr(t, n)) for n in names if isinstance(getattr(t, n), torch.Tensor))
    return t.numel() * t.element_size()
