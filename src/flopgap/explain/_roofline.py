"""Roofline classification with the measured ceilings plus the dispatch overhead.

For one op with ``F`` FLOPs and ``B`` bytes (count conventions), on a profile with
peak ``P`` (for the op's dtype), bandwidth ``W`` (cache bandwidth when ``B`` fits the
cache-resident test, else main memory) and tiny-op overhead ``O``::

    t_compute  = F / P
    t_memory   = B / W
    t_overhead = O
    roofline   = max(t_compute, t_memory, t_overhead)
    class      = the term that gives the max: compute-bound | memory-bound | overhead-bound

Ties go to compute, then memory (an op is overhead-bound only when both work terms
are below the fixed cost).
"""

from __future__ import annotations

from dataclasses import dataclass

from flopgap.explain._records import Bound

__all__ = ["Roofline", "classify", "op_dtype"]


@dataclass(frozen=True)
class Roofline:
    t_compute: float
    t_memory: float
    t_overhead: float

    @property
    def time(self) -> float:
        return max(self.t_compute, self.t_memory, self.t_overhead)

    @property
    def bound(self) -> Bound:
        if self.t_compute >= self.t_memory and self.t_compute >= self.t_overhead:
            return Bound.COMPUTE
        if self.t_memory >= self.t_overhead:
            return Bound.MEMORY
        return Bound.OVERHEAD


def op_dtype(record) -> str:
    """The dtype that sets an op's peak: the first floating/int8 tensor input."""
    for d in record.input_dtypes:
        if d in ("qint8", "quint8", "int8"):
            return "int8"
        if d in ("float32", "bfloat16", "float16", "float64"):
            return d
    return "float32"


def classify(flops: float, nbytes: float, profile, dtype: str = "float32") -> Roofline:
    """The three roofline terms of one op on ``profile`` (a MachineProfile)."""
    peak = profile.peak(dtype)
    bw = profile.bandwidth_for(nbytes)
    return Roofline(flops / peak if peak else 0.0, nbytes / bw if bw else 0.0, profile.dispatch_overhead_s)
