"""The seed article's example models, built in (random weights; see README).

The article ("Can low parameter count and FLOPs correlate with high inference time in
PyTorch?") compares pairs of small MLPs and a dynamically quantized layer. Each entry
here declares its example input so ``flopgap count seed:NAME`` needs no ``--input``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from flopgap.models._inputs import InputSpec

__all__ = ["SeedModel", "SEED_MODELS"]


@dataclass(frozen=True)
class SeedModel:
    build: Callable[[], nn.Module]
    inputs: tuple[InputSpec, ...]
    description: str


def _ex1_small() -> nn.Module:
    return nn.Sequential(nn.Linear(1000, 10), nn.Linear(10, 1000), nn.Linear(1000, 1))


def _ex1_large() -> nn.Module:
    return nn.Sequential(nn.Linear(1000, 1000), nn.Linear(1000, 1))


def _ex2_deep() -> nn.Module:
    return nn.Sequential(*[nn.Linear(100, 100) for _ in range(10)])


def _ex2_wide() -> nn.Module:
    return nn.Sequential(nn.Linear(100, 500), nn.Linear(500, 100))


def _ex3_float() -> nn.Module:
    return nn.Linear(1000, 10)


def _ex3_int8_as_written() -> nn.Module:
    """Example 3 exactly as the article writes it.

    ``quantize_dynamic`` only swaps *children*, so on a bare ``nn.Linear`` it returns
    the float module unchanged: this model is the float layer, which is the point.
    """
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(_ex3_float(), {nn.Linear}, dtype=torch.qint8)


def _ex3_int8() -> nn.Module:
    """Example 3 as intended: the layer wrapped so that it really is quantized."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(nn.Sequential(_ex3_float()), {nn.Linear}, dtype=torch.qint8)


_X1000 = (InputSpec((1, 1000)),)
_X100 = (InputSpec((1, 100)),)

SEED_MODELS: dict[str, SeedModel] = {
    "ex1-small": SeedModel(_ex1_small, _X1000, "Ex.1 Linear(1000,10)->Linear(10,1000)->Linear(1000,1)"),
    "ex1-large": SeedModel(_ex1_large, _X1000, "Ex.1 Linear(1000,1000)->Linear(1000,1)"),
    "ex2-deep": SeedModel(_ex2_deep, _X100, "Ex.2 ten Linear(100,100) (many small layers)"),
    "ex2-wide": SeedModel(_ex2_wide, _X100, "Ex.2 Linear(100,500)->Linear(500,100) (equal FLOPs)"),
    "ex3-float": SeedModel(_ex3_float, _X1000, "Ex.3 Linear(1000,10), float32"),
    "ex3-int8-as-written": SeedModel(
        _ex3_int8_as_written, _X1000,
        "Ex.3 quantize_dynamic(Linear(1000,10)) as the article writes it (returns the float layer unchanged)",
    ),
    "ex3-int8": SeedModel(_ex3_int8, _X1000, "Ex.3 Linear(1000,10) really int8 dynamic-quantized"),
}
