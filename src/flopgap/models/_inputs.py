"""Input specs: ``1x3x224x224`` (float32), ``1x128:int64[0,30522)``, ``2x8:float16``,
and keyword inputs ``input_ids=1x128:int64[0,32000)``.

Grammar: ``[NAME=]DIMS[:DTYPE][RANGE]`` where ``NAME`` is a Python identifier (the
input is passed as the keyword argument ``NAME=``; without it, positionally in order),
``DIMS`` is positive integers joined by ``x``, ``DTYPE`` a torch dtype name, and
``RANGE`` ``[lo,hi)`` (integers: uniform in the half-open range; floats: uniform in
it). Floats without a range are standard normal; integers without a range are in
``[0, 2)``; booleans are random.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch

from flopgap.errors import UsageError

__all__ = ["InputSpec", "Inputs", "parse_input_spec", "make_inputs", "with_batch", "with_seq", "describe_inputs",
           "bind_inputs", "inputs_to"]

_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "double": torch.float64,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
_SPEC = re.compile(
    r"^(?P<dims>\d+(?:x\d+)*)"
    r"(?::(?P<dtype>[a-z0-9]+))?"
    r"(?:\[(?P<lo>-?[\d.eE+-]+),(?P<hi>-?[\d.eE+-]+)\))?$"
)
_SEED = 0  # inputs are reproducible: the same spec always yields the same tensor


@dataclass(frozen=True)
class InputSpec:
    """What one input is: shape, dtype, value range and, for a keyword input, its name
    (hashable, JSON-able)."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    low: float | None = None
    high: float | None = None
    name: str | None = None  # None: positional

    def __str__(self) -> str:
        s = (f"{self.name}=" if self.name else "") + "x".join(map(str, self.shape))
        if self.dtype != "float32" or self.low is not None:
            s += f":{self.dtype}"
        if self.low is not None:
            lo, hi = (int(v) if float(v).is_integer() else v for v in (self.low, self.high))
            s += f"[{lo},{hi})"
        return s

    def make(self, generator: torch.Generator | None = None) -> torch.Tensor:
        dtype = _DTYPES[self.dtype]
        g = generator
        if dtype == torch.bool:
            return torch.randint(0, 2, self.shape, generator=g).bool()
        if not dtype.is_floating_point:
            lo = int(self.low) if self.low is not None else 0
            hi = int(self.high) if self.high is not None else 2
            return torch.randint(lo, hi, self.shape, generator=g, dtype=dtype)
        if self.low is not None:
            t = torch.rand(self.shape, generator=g) * (self.high - self.low) + self.low
        else:
            t = torch.randn(self.shape, generator=g)
        return t.to(dtype)


_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$", re.S)


def parse_input_spec(text: str) -> InputSpec:
    """Parse one ``--input`` value; raise :class:`UsageError` with the grammar on failure.

    ``NAME=SPEC`` names a keyword input; the rest of the grammar is the positional one.
    """
    named = _NAME.match(text)
    if named:
        spec = _parse_positional(named.group(2))
        return InputSpec(spec.shape, spec.dtype, spec.low, spec.high, named.group(1))
    return _parse_positional(text)


def _parse_positional(text: str) -> InputSpec:
    m = _SPEC.match(text.strip().replace(" ", ""))
    if not m:
        raise UsageError(
            f"bad input spec {text!r}: expected DIMS[:DTYPE][[lo,hi)], "
            "e.g. 1x3x224x224 or 1x128:int64[0,30522)"
        )
    shape = tuple(int(d) for d in m["dims"].split("x"))
    if any(d <= 0 for d in shape):
        raise UsageError(f"bad input spec {text!r}: every dimension must be positive")
    dtype = m["dtype"] or "float32"
    if dtype not in _DTYPES:
        raise UsageError(f"bad input spec {text!r}: unknown dtype {dtype!r} (known: {', '.join(sorted(_DTYPES))})")
    canonical = str(_DTYPES[dtype]).removeprefix("torch.")
    low = high = None
    if m["lo"] is not None:
        try:
            low, high = float(m["lo"]), float(m["hi"])
        except ValueError:
            raise UsageError(f"bad input spec {text!r}: the range [lo,hi) needs two numbers") from None
        if not high > low:
            raise UsageError(f"bad input spec {text!r}: empty range [{m['lo']},{m['hi']})")
        dt = _DTYPES[dtype]
        if not dt.is_floating_point and dt != torch.bool:
            info = torch.iinfo(dt)
            if low < info.min or high - 1 > info.max or not (low.is_integer() and high.is_integer()):
                raise UsageError(f"bad input spec {text!r}: an integer range within [{info.min},{info.max + 1}) "
                                 f"is needed for {canonical}")
    return InputSpec(shape, canonical, low, high)


def with_batch(specs: tuple[InputSpec, ...], batch: int | None) -> tuple[InputSpec, ...]:
    """Override the leading dimension of every input (``--batch N``)."""
    if batch is None:
        return specs
    if batch <= 0:
        raise UsageError(f"--batch must be a positive integer, got {batch}")
    return tuple(InputSpec((batch, *s.shape[1:]), s.dtype, s.low, s.high, s.name) for s in specs)


def with_seq(specs: tuple[InputSpec, ...], seq: int | None) -> tuple[InputSpec, ...]:
    """Override the sequence length (``--seq N``): dimension 1 of every integer or
    boolean input of rank 2 or more (token ids, attention masks, position ids)."""
    if seq is None:
        return specs
    if seq <= 0:
        raise UsageError(f"--seq must be a positive integer, got {seq}")
    out, changed = [], False
    for s in specs:
        if len(s.shape) >= 2 and not _DTYPES[s.dtype].is_floating_point:
            s = InputSpec((s.shape[0], seq, *s.shape[2:]), s.dtype, s.low, s.high, s.name)
            changed = True
        out.append(s)
    if not changed:
        raise UsageError(f"--seq applies to token inputs (integer, [batch, seq, ...]); these inputs have none: "
                         f"{', '.join(map(str, specs))}")
    return tuple(out)


class Inputs(tuple):
    """The tensors for one call: positional ones (this tuple, so ``module(*inputs)``
    works for models without keyword inputs) and ``.kwargs`` (name -> tensor).
    Call a model with :func:`flopgap.models.call_model`, or bind the keyword inputs
    with :func:`bind_inputs` for code that calls ``fn(*args)``."""

    kwargs: dict

    def __new__(cls, args=(), kwargs: dict | None = None):
        self = super().__new__(cls, args)
        self.kwargs = dict(kwargs or {})
        return self

    @property
    def args(self) -> tuple:
        return tuple(self)

    def __repr__(self) -> str:
        return f"Inputs(args={tuple(self)!r}, kwargs={self.kwargs!r})"

    def __reduce__(self):
        return (Inputs, (tuple(self), self.kwargs))


def inputs_to(inputs, device) -> "Inputs":
    """The same inputs on ``device`` (keyword inputs included)."""
    move = (lambda t: t.to(device) if isinstance(t, torch.Tensor) else t)
    return Inputs([move(t) for t in inputs], {k: move(t) for k, t in (getattr(inputs, "kwargs", None) or {}).items()})


def bind_inputs(fn, inputs):
    """``(callable, positional args)`` that calls ``fn`` with the keyword inputs bound:
    for code (timers, profilers) that calls ``callable(*args)``."""
    kwargs = getattr(inputs, "kwargs", None)
    if not kwargs:
        return fn, tuple(inputs)
    return functools.partial(fn, **kwargs), tuple(inputs)


def make_inputs(specs: tuple[InputSpec, ...], seed: int = _SEED) -> Inputs:
    """Build the tensors for ``specs`` reproducibly (seeded generator, CPU): the
    positional ones in order, the named ones in ``.kwargs``."""
    names = [s.name for s in specs if s.name]
    if len(names) != len(set(names)):
        raise UsageError(f"keyword input named twice in {', '.join(map(str, specs))}")
    g = torch.Generator().manual_seed(seed)
    try:
        tensors = [s.make(g) for s in specs]
    except (RuntimeError, MemoryError) as e:  # e.g. a shape too large to allocate
        raise UsageError(f"cannot build inputs {', '.join(map(str, specs))}: {str(e).splitlines()[0]}") from None
    return Inputs([t for s, t in zip(specs, tensors) if not s.name],
                  {s.name: t for s, t in zip(specs, tensors) if s.name})


def describe_inputs(inputs) -> list[str]:
    """Shape/dtype strings for tensors, e.g. ``['1x3x224x224:float32', 'attention_mask=1x8:int64']``."""
    out = []
    items = [(None, t) for t in inputs] + list((getattr(inputs, "kwargs", None) or {}).items())
    for name, t in items:
        prefix = f"{name}=" if name else ""
        if isinstance(t, torch.Tensor):
            out.append(prefix + "x".join(map(str, t.shape)) + ":" + str(t.dtype).removeprefix("torch."))
        else:
            out.append(prefix + type(t).__name__)
    return out
