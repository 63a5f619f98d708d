"""Input specs: ``1x3x224x224`` (float32), ``1x128:int64[0,30522)``, ``2x8:float16``.

Grammar: ``DIMS[:DTYPE][RANGE]`` where ``DIMS`` is positive integers joined by ``x``,
``DTYPE`` a torch dtype name, and ``RANGE`` ``[lo,hi)`` (integers: uniform in the
half-open range; floats: uniform in it). Floats without a range are standard normal;
integers without a range are in ``[0, 2)``; booleans are random.

What a spec may say, checked once by :func:`check_spec` (for ``--input``, ``--batch``
and a model's declared example inputs alike), each breach a one-line
:class:`~flopgap.errors.UsageError`:

- every dimension a positive integer, at most :data:`MAX_DIMS` of them, and the tensor's
  bytes within what torch can address (``numel x element size < 2**63``);
- a range only on integer and floating dtypes, with finite bounds, ``lo < hi``;
- integer ranges exact (``int64[0,9007199254740993)`` keeps its last digit: bounds are
  never read as floats) and drawable in the dtype: ``lo >= min`` and ``hi - 1 <= max``
  (int64: ``hi <= 2**63 - 1``, the largest bound ``torch.randint`` takes);
- float ranges within the dtype (``float16[0,70000)`` is refused, not turned into
  ``inf``) and not empty once rounded to it.

``str(spec)`` prints a spec the parser reads back to an equal spec.
"""

from __future__ import annotations

import decimal
import math
import re
from dataclasses import dataclass

import torch

from flopgap.errors import UsageError

__all__ = ["InputSpec", "parse_input_spec", "check_spec", "make_inputs", "with_batch", "describe_inputs",
           "MAX_DIMS"]

_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "double": torch.float64,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
# numbers as Python writes them; inf and nan are read so that they can be refused by name
_NUMBER = r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|inf|nan)"
_SPEC = re.compile(
    r"^(?P<dims>\d+(?:x\d+)*)"
    r"(?::(?P<dtype>[a-z0-9]+))?"
    rf"(?:\[(?P<lo>{_NUMBER}),(?P<hi>{_NUMBER})\))?$"
)
_SEED = 0  # inputs are reproducible: the same spec always yields the same tensor
MAX_DIMS = 64          # torch's own limit on a tensor's dimensions (at::kMaxDim-style ops fail beyond)
_MAX_SPEC_CHARS = 2000  # 64 dimensions of 19 digits and a range fit; anything longer is not a spec
_MAX_BYTES = 2**63 - 1  # torch computes a tensor's storage size in int64 bytes
_INT64_HIGH = 2**63 - 1  # torch.randint's exclusive upper bound must itself fit int64
# inputs larger than this share of the memory available now are refused before they are
# built: the model and its activations need the rest, and an allocation the kernel
# over-commits would end in the OOM killer instead of an error
_MAX_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class InputSpec:
    """What one positional input is: shape, dtype and value range (hashable, JSON-able).

    Integer ranges are kept as ``int`` (exact), float ranges as ``float``."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    low: int | float | None = None
    high: int | float | None = None

    def __str__(self) -> str:
        s = "x".join(map(str, self.shape))
        if self.dtype != "float32" or self.low is not None:
            s += f":{self.dtype}"
        if self.low is not None:
            s += f"[{_number(self.low)},{_number(self.high)})"
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
        if self.low is None:
            return torch.randn(self.shape, generator=g).to(dtype)
        lo, hi = float(self.low), float(self.high)
        if dtype != torch.float64 and hi - lo <= torch.finfo(torch.float32).max:
            t = torch.rand(self.shape, generator=g) * (hi - lo) + lo
        else:  # a span beyond float32 (or float64 inputs): interpolate in float64, never overflowing
            u = torch.rand(self.shape, generator=g, dtype=torch.float64)
            t = lo * (1 - u) + hi * u
        t = t.to(dtype)
        # rounding to the dtype can land on hi itself: keep the range half-open
        top = torch.nextafter(torch.tensor(hi, dtype=dtype), torch.tensor(lo, dtype=dtype))
        return torch.minimum(t, top).clamp_(min=lo)

    def make_meta(self) -> torch.Tensor:
        """A meta tensor of this shape and dtype: no memory, no values (``--meta``)."""
        return torch.empty(self.shape, dtype=_DTYPES[self.dtype], device="meta")

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _DTYPES[self.dtype].itemsize


def _number(v: int | float) -> str:
    """A bound as the parser reads it back exactly: integers as digits, other floats by repr."""
    if isinstance(v, int):
        return str(v)
    if v.is_integer() and abs(v) < 1e16:  # below 2**53: every such float is an exact integer
        return str(int(v))
    return repr(v)


def _bad(text, why: str) -> UsageError:
    return UsageError(f"bad input spec {str(text)[:80]!r}: {why}")


def _dims(text: str, dims: str) -> tuple[int, ...]:
    parts = dims.split("x")
    if len(parts) > MAX_DIMS:
        raise _bad(text, f"{len(parts)} dimensions; at most {MAX_DIMS}")
    if any(len(p.lstrip("0")) > 19 for p in parts):  # beyond int64 (19 digits): no tensor has it
        raise _bad(text, "a dimension beyond 2**63 - 1 elements")
    return tuple(int(p.lstrip("0") or "0") for p in parts)  # leading zeros count against int()'s digit limit


def _integer_bound(text: str, token: str) -> int:
    """An integer bound read exactly (``1e3`` is 1000; ``0.5`` is refused)."""
    try:
        d = decimal.Decimal(token)
    except decimal.InvalidOperation:
        raise _bad(text, f"{token!r} is not a number") from None
    if not d.is_finite():
        raise _bad(text, f"the bound {token} is not a finite number")
    if d.adjusted() > 19:  # |d| >= 10**20: beyond every integer dtype (and cheap to refuse)
        raise _bad(text, f"the bound {token[:30]} is out of range for integer inputs")
    if d != d.to_integral_value():
        raise _bad(text, f"the bound {token} of an integer range is not an integer")
    return int(d)


def _float_bound(text: str, token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise _bad(text, f"the bound {token[:30]} is not a finite number")
    return value


def parse_input_spec(text: str) -> InputSpec:
    """Parse one ``--input`` value; raise :class:`UsageError` with the grammar on failure."""
    if not isinstance(text, str) or len(text) > _MAX_SPEC_CHARS:
        raise _bad(text, f"longer than {_MAX_SPEC_CHARS} characters")
    m = _SPEC.match(text.strip().replace(" ", ""))
    if not m:
        raise UsageError(
            f"bad input spec {text[:80]!r}: expected DIMS[:DTYPE][[lo,hi)], "
            "e.g. 1x3x224x224 or 1x128:int64[0,30522)"
        )
    shape = _dims(text, m["dims"])
    dtype = m["dtype"] or "float32"
    if dtype not in _DTYPES:
        raise _bad(text, f"unknown dtype {dtype!r} (known: {', '.join(sorted(_DTYPES))})")
    dt = _DTYPES[dtype]
    low = high = None
    if m["lo"] is not None:
        if dt == torch.bool:
            raise _bad(text, "bool inputs take no range")
        if dt.is_floating_point:
            low, high = _float_bound(text, m["lo"]), _float_bound(text, m["hi"])
        else:
            low, high = _integer_bound(text, m["lo"]), _integer_bound(text, m["hi"])
    return check_spec(InputSpec(shape, str(dt).removeprefix("torch."), low, high), text)


def check_spec(spec: InputSpec, text: str | None = None) -> InputSpec:
    """``spec`` if it describes a tensor flopgap can build (see the module docstring),
    else a one-line :class:`UsageError` quoting ``text`` (default: the spec)."""
    text = str(spec) if text is None else text
    if spec.dtype not in _DTYPES:
        raise _bad(text, f"dtype {spec.dtype!r} is not supported (known: {', '.join(sorted(_DTYPES))})")
    dt = _DTYPES[spec.dtype]
    if len(spec.shape) > MAX_DIMS:
        raise _bad(text, f"{len(spec.shape)} dimensions; at most {MAX_DIMS}")
    if any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in spec.shape):
        raise _bad(text, "every dimension must be a positive integer")
    if math.prod(spec.shape) * dt.itemsize > _MAX_BYTES:
        raise _bad(text, "more elements than torch can address (the tensor's bytes must be below 2**63)")
    if (spec.low is None) != (spec.high is None):
        raise _bad(text, "a range needs both bounds")
    if spec.low is None:
        return spec
    low, high = spec.low, spec.high
    if dt == torch.bool:
        raise _bad(text, "bool inputs take no range")
    if dt.is_floating_point:
        if not (math.isfinite(low) and math.isfinite(high)):
            raise _bad(text, "the range [lo,hi) needs finite bounds")
        if not high > low:
            raise _bad(text, f"empty range [{_number(low)},{_number(high)})")
        top = torch.finfo(dt).max
        if max(abs(low), abs(high)) > top:
            raise _bad(text, f"a bound beyond {spec.dtype}'s largest value {top:g}")
        if not torch.tensor(low, dtype=dt) < torch.tensor(high, dtype=dt):
            raise _bad(text, f"the range is empty once rounded to {spec.dtype}")
        return InputSpec(spec.shape, spec.dtype, float(low), float(high))
    if not all(isinstance(v, int) or (isinstance(v, float) and v.is_integer()) for v in (low, high)):
        raise _bad(text, f"an integer range is needed for {spec.dtype}")
    low, high = int(low), int(high)
    info = torch.iinfo(dt)
    limit = _INT64_HIGH if dt == torch.int64 else info.max + 1
    if not high > low:
        raise _bad(text, f"empty range [{low},{high})")
    if low < info.min or high > limit:
        raise _bad(text, f"an integer range within [{info.min},{limit}) is needed for {spec.dtype}")
    return InputSpec(spec.shape, spec.dtype, low, high)


def with_batch(specs: tuple[InputSpec, ...], batch: int | None) -> tuple[InputSpec, ...]:
    """Override the leading dimension of every input (``--batch N``)."""
    if batch is None:
        return specs
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise UsageError(f"--batch must be a positive integer, got {batch}")
    return tuple(check_spec(InputSpec((batch, *s.shape[1:]), s.dtype, s.low, s.high),
                            f"{s} with --batch {batch}") for s in specs)


def _available_memory() -> int | None:
    """Bytes the kernel says can be allocated now without swapping (Linux), else ``None``."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def make_inputs(specs: tuple[InputSpec, ...], seed: int = _SEED, *, meta: bool = False) -> tuple[torch.Tensor, ...]:
    """Build the tensors for ``specs`` reproducibly (seeded generator, CPU), or meta
    tensors (``meta=True``: shapes and dtypes only, whatever their size)."""
    if meta:
        return tuple(s.make_meta() for s in specs)
    need = sum(s.nbytes for s in specs)
    have = _available_memory()
    if have is not None and need > _MAX_MEMORY_SHARE * have:
        raise UsageError(f"inputs {', '.join(map(str, specs))} need {need / 1e9:.3g} GB, more than half of the "
                         f"{have / 1e9:.3g} GB this machine has available: use a smaller --batch/--input, "
                         "or count with --meta")
    g = torch.Generator().manual_seed(seed)
    try:
        return tuple(s.make(g) for s in specs)
    except (RuntimeError, MemoryError) as e:  # e.g. a shape too large to allocate
        raise UsageError(f"cannot build inputs {', '.join(map(str, specs))}: {str(e).splitlines()[0]}") from None


def describe_inputs(inputs) -> list[str]:
    """Shape/dtype strings for tensors, e.g. ``['1x3x224x224:float32']``."""
    out = []
    for t in inputs:
        if isinstance(t, torch.Tensor):
            out.append("x".join(map(str, t.shape)) + ":" + str(t.dtype).removeprefix("torch."))
        else:
            out.append(type(t).__name__)
    return out
