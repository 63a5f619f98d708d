"""The variant registry: each variant is a small named transform of an eager model.

A :class:`Variant` has a predicate ``applies(module, device)`` (is it worth trying by
default on this model?) and ``build(module, inputs)`` returning a :class:`Built`: the
callable to time, how to adapt the inputs, and notes that say what was done. ``build``
receives a private deep copy of the eager module and may change it in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from flopgap.errors import UsageError

__all__ = ["Variant", "Built", "register_variant", "get_variant", "variant_names", "default_variants"]


def _same_inputs(inputs: tuple) -> tuple:
    return inputs


def _no_verdict() -> bool | None:
    return None


def _nothing() -> None:
    return None


@dataclass
class Built:
    """What a variant's ``build`` returns.

    ``fn`` is called as ``fn(*prepare(inputs))``. ``module`` is the transformed module
    tree used for no-op detection and counting (``None`` when there is none); set
    ``countable=False`` when the counting pass cannot see the work (compiled code
    bypasses the dispatcher). ``before_first_call`` is called just before the first call
    at each input shape (batch), and ``verdict`` right after it; the verdict may return
    ``False`` ("changed nothing", e.g. the compiler produced no graph for that call),
    ``True`` or ``None`` (no opinion: decide from the module tree and op sequence).
    """

    fn: Callable
    module: nn.Module | None = None
    prepare: Callable[[tuple], tuple] = _same_inputs
    notes: list[str] = field(default_factory=list)
    countable: bool = True
    compiled: bool = False
    verdict: Callable[[], bool | None] = _no_verdict
    before_first_call: Callable[[], None] = _nothing


@dataclass(frozen=True)
class Variant:
    """A named transform: ``applies(module, device) -> bool``, ``build(module, inputs) -> Built``.

    ``remedy=False`` marks a variant that is another workload rather than a faster
    version of the model (``train-step``): its outputs are not compared with eager's, and
    its finding states its cost relative to eager instead of a speed-up verdict.
    """

    name: str
    description: str
    build: Callable[[nn.Module, tuple], Built]
    applies: Callable[[nn.Module, str], bool] = lambda module, device: True
    default: bool = True  # part of "every variant that applies"
    remedy: bool = True   # False: another workload (train-step): its ratio to eager is a cost, not a speed-up


_REGISTRY: dict[str, Variant] = {}


def register_variant(variant: Variant) -> Variant:
    """Add a variant to the registry; a second variant with the same name is refused."""
    if variant.name in _REGISTRY:
        raise ValueError(f"variant {variant.name!r} is already registered")
    _REGISTRY[variant.name] = variant
    return variant


def variant_names() -> list[str]:
    """Registered variant names, in registration order (``eager`` first)."""
    return list(_REGISTRY)


def get_variant(name: str) -> Variant:
    """The registered variant called ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown variant {name!r}; known: {', '.join(_REGISTRY)}") from None


def default_variants(module: nn.Module, device: str = "cpu") -> list[Variant]:
    """Every default variant whose predicate holds for ``module`` on ``device``."""
    return [v for v in _REGISTRY.values() if v.default and v.applies(module, device)]
