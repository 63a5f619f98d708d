"""A registry of pure cost formulas, one per op (overload packet) or family.

A formula takes the op's arguments normalised by its schema (``dict`` name -> value,
every tensor replaced by a :class:`Meta`: shape + dtype) plus the output metas, and
returns a :class:`Cost`. It is plain shape arithmetic, testable without running a
kernel. Registering an op twice is refused. Ops that cost nothing on purpose are
*declared* (views, metadata, allocation), which is different from not being known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

import torch

__all__ = ["Meta", "Cost", "Formula", "register_formula", "declare_free", "lookup", "registered_ops",
           "ZERO", "FREE_FAMILIES"]


class Meta(NamedTuple):
    """What a formula may see of a tensor: its shape, dtype and strides.

    A named tuple, not a dataclass: the counting pass builds one per tensor argument
    of every dispatched op, and tuple construction is the cheapest Python offers.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    stride: tuple[int, ...] | None = None
    # a nested (jagged) tensor: the shape of each component; ``shape`` is then
    # ``(total elements,)`` so that ``numel`` and ``nbytes`` stay right
    parts: tuple[tuple[int, ...], ...] | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes this tensor occupies as addressed: broadcast (stride-0) dimensions count once."""
        if self.stride is None or 0 not in self.stride:  # the common case, without a Python loop
            return math.prod(self.shape) * self.dtype.itemsize
        n = 1
        for size, st in zip(self.shape, self.stride):
            if st != 0:
                n *= size
        return n * self.itemsize if self.shape else self.itemsize


@dataclass(frozen=True)
class Cost:
    """FLOPs (a fused multiply-add is 2), MACs, and optional byte overrides.

    ``bytes_read``/``bytes_written`` left ``None`` mean the generic rule: every tensor
    input is read once (weights included) and every output written once.
    """

    flops: int = 0
    macs: int = 0
    bytes_read: int | None = None
    bytes_written: int | None = None
    noop: bool = False  # the call did nothing (e.g. dropout in eval): free, not "uncovered"


ZERO = Cost()
Formula = Callable[[dict, tuple], Cost]
FREE_FAMILIES = ("view", "metadata", "alloc")


@dataclass(frozen=True)
class _Entry:
    family: str
    formula: Formula | None  # None: declared free (no FLOPs, no bytes)


_REGISTRY: dict[object, _Entry] = {}
# lookup() by the op object's identity: an OpOverload's __hash__ is Python code, and the
# counting pass looks every op up; (op, entry) so that a reused id is never a false hit
_LOOKUP: dict[int, tuple] = {}


def _packets(ops: Iterable) -> list:
    out = []
    for op in ops:
        if op is None:  # not built into this torch
            continue
        if isinstance(op, str):  # "quantized.linear_dynamic" style, resolved lazily
            ns, _, name = op.partition(".")
            try:
                op = getattr(getattr(torch.ops, ns), name)
            except (AttributeError, RuntimeError):
                continue  # op not built into this torch: nothing to register
        out.append(op)
    return out


def register_formula(*ops, family: str) -> Callable[[Formula], Formula]:
    """Decorator: register ``formula`` for ``ops`` (overload packets or overloads).

    Raises ``ValueError`` if any op already has a formula or a declaration.
    """

    def wrap(formula: Formula) -> Formula:
        for op in _packets(ops):
            if op in _REGISTRY:
                raise ValueError(f"a formula for {op} is already registered (family {_REGISTRY[op].family!r})")
            _REGISTRY[op] = _Entry(family, formula)
        _LOOKUP.clear()
        return formula

    return wrap


def declare_free(*ops, family: str) -> None:
    """Declare ops that cost no FLOPs and move no bytes on purpose (views, metadata)."""
    if family not in FREE_FAMILIES:
        raise ValueError(f"free family must be one of {FREE_FAMILIES}, got {family!r}")
    for op in _packets(ops):
        if op in _REGISTRY:
            raise ValueError(f"{op} is already registered (family {_REGISTRY[op].family!r})")
        _REGISTRY[op] = _Entry(family, None)
    _LOOKUP.clear()


def lookup(op) -> _Entry | None:
    """The entry for an ``OpOverload``: exact overload first, then its packet."""
    hit = _LOOKUP.get(id(op))
    if hit is not None and hit[0] is op:
        return hit[1]
    entry = _REGISTRY.get(op)
    if entry is None:
        entry = _REGISTRY.get(getattr(op, "overloadpacket", None))
    _LOOKUP[id(op)] = (op, entry)
    return entry


def registered_ops() -> dict[str, str]:
    """``{op name: family}`` for everything registered (for docs and coverage tests)."""
    return {str(k): v.family for k, v in _REGISTRY.items()}
