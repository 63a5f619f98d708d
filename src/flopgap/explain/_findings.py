"""Findings in the seed's terms (memory access, kernel launches / dispatch overhead,
hardware utilisation, opportunities), each with its numbers and the ops it concerns.

One small function per finding, in :data:`FINDERS` (in the order they are reported);
each takes the explanation and returns a :class:`Finding` or ``None``. A finding without
numbers is never emitted. Every threshold is named below with the reason for its value.
"""

from __future__ import annotations

from flopgap._units import fmt_seconds

from typing import Callable

from flopgap.explain._records import Bound, Finding, OpRef
from flopgap.machine import GATHER_MAX_RUN

__all__ = ["findings", "FINDERS"]

# a cost is worth a finding from a tenth of the call: below it, the other findings matter more
NOTABLE_SHARE = 0.10
# a matmul/conv below a quarter of peak is "low utilisation" (well-shaped GEMMs reach 50-90%)
LOW_EFFICIENCY = 0.25
# ops under half a percent of the call are left out of the low-utilisation list (noise, not cost)
MIN_OP_SHARE = 0.005
# weights at least half the bytes moved: int8 weights would cut the traffic by a noticeable amount
WEIGHT_HEAVY_SHARE = 0.5
# int8 weights move a quarter of fp32's bytes, so they save three quarters of the weight bytes
INT8_SAVING = 0.75
# fusion is worth naming from ten elementwise ops (fewer are not a pattern) ...
FUSION_MIN_OPS = 10
# ... and batching from half the call in fixed cost (Horace He's overhead-bound regime)
FIXED_COST_SHARE = 0.5
# the GPU idle half the call or more: launch-bound, the CUDA-graph regime
GPU_IDLE_SHARE = 0.5
# page faults priced at 5% of the call or more get a finding (below, they are within the noise)
FAULT_SHARE = 0.05
# scattered reads (ops gathering an input in short runs) get a finding from 5% of the call:
# the usual fix (one layout kept through the ops, or a fused kernel) is a small change
GATHER_SHARE = 0.05
# the Python/module-call time outside ops is named in the dominant finding from 1% of the call
OUTSIDE_NAMED = 0.01
TOP_OPS = 5  # ops listed per finding

_CLASS_WORDS = {Bound.COMPUTE: "compute (FLOP-bound work)", Bound.MEMORY: "memory traffic",
                Bound.OVERHEAD: "dispatch overhead (fixed per-op cost)"}
_ELEMENTWISE = ("pointwise", "norm", "softmax", "reduction")
# families whose kernels pack or stride their operands themselves (a scattered input costs them no gather)
_OWN_OPERAND_PACKING = ("conv", "matmul", "attention", "quantized")


def _rate(x: float, unit: str) -> str:
    return f"{x / 1e9:,.1f} G{unit}"


def _top(rows, n: int = TOP_OPS, key: str = "time_s") -> tuple[OpRef, ...]:
    """The ``n`` rows with the largest ``key``, as references with their time."""
    ranked = sorted(rows, key=lambda r: -(getattr(r, key) or 0.0))[:n]
    return tuple(OpRef(r.index, r.op, r.module, time_s=r.time_s) for r in ranked)


class _View:
    """What every finder needs, computed once: the timed rows, the call, the shares."""

    def __init__(self, ex):
        self.ex, self.t, self.prof = ex, ex.totals, ex.profile
        self.rows = [r for r in ex.ops if r.time_s is not None]
        self.kernel = [r for r in self.rows if not r.free]
        self.total = self.t.call_s
        self.shares = {c: ex.classes[c].time_share for c in Bound}
        self.py_share = self.t.outside_python_s / self.total
        self.overhead_like = self.shares[Bound.OVERHEAD] + self.py_share
        self.ov_rows = [r for r in self.rows if r.bound == Bound.OVERHEAD]


def _disturbed(v: _View) -> Finding | None:
    if not v.t.disturbed:
        return None
    warnings = v.ex.warnings
    return Finding("disturbed", "Measured on a disturbed machine",
                   "the figures below were measured while the machine was busy, so they describe that busy "
                   "machine, not this one at rest: " + "; ".join(warnings)
                   + ". Re-run on a quiet machine before acting on them.",
                   {"disturbed": True, "warnings": len(warnings)})


def _dominant(v: _View) -> Finding:
    ranking = {Bound.COMPUTE: v.shares[Bound.COMPUTE], Bound.MEMORY: v.shares[Bound.MEMORY],
               Bound.OVERHEAD: v.overhead_like}
    dom = max(ranking, key=ranking.get)
    cls = v.ex.classes
    return Finding(
        "dominant", f"Dominant cost: {_CLASS_WORDS[dom]}",
        f"{ranking[dom]:.0%} of the profiled call ({fmt_seconds(v.total)}) is {_CLASS_WORDS[dom]}"
        + (f", including {v.py_share:.0%} spent outside any op beyond the profiler's own cost (Python, module calls)"
           if dom == Bound.OVERHEAD and v.py_share >= OUTSIDE_NAMED else "")
        + f"; compute-bound ops take {v.shares[Bound.COMPUTE]:.0%} of the time for "
          f"{cls[Bound.COMPUTE].flop_share:.0%} of the FLOPs.",
        {"class": str(dom), "share": ranking[dom], "compute_share": v.shares[Bound.COMPUTE],
         "memory_share": v.shares[Bound.MEMORY], "overhead_share": v.shares[Bound.OVERHEAD],
         "outside_python_share": v.py_share, "call_s": v.total},
        _top([r for r in v.rows if r.bound == dom]))


def _overhead(v: _View) -> Finding | None:
    n_ops = len(v.rows)
    fixed = n_ops * v.prof.dispatch_overhead_s
    if v.overhead_like < NOTABLE_SHARE and fixed / v.total < NOTABLE_SHARE:
        return None
    ov_time = sum(r.time_s for r in v.ov_rows)
    per_op = ov_time / len(v.ov_rows) if v.ov_rows else 0.0
    t = v.t
    return Finding(
        "overhead", "Kernel launches / dispatch overhead",
        f"{n_ops} dispatched ops x {fmt_seconds(v.prof.dispatch_overhead_s)} tiny-op overhead = {fmt_seconds(fixed)}, "
        f"{fixed / v.total:.0%} of the {fmt_seconds(v.total)} call; the {len(v.ov_rows)} overhead-bound ops take "
        f"{fmt_seconds(ov_time)} ({ov_time / v.total:.0%}), {fmt_seconds(per_op)} each on average "
        f"({per_op / v.prof.dispatch_overhead_s:.1f}x the tiny-op cost)"
        + (f"; {fmt_seconds(t.outside_s)} ({t.outside_share:.0%}) is outside any op, {fmt_seconds(t.outside_python_s)} of it "
           "beyond the profiler's own cost" if t.outside_s > 0 else "") + ".",
        {"ops": n_ops, "dispatch_overhead_s": v.prof.dispatch_overhead_s, "ops_x_overhead_s": fixed,
         "ops_x_overhead_share": fixed / v.total, "overhead_bound_ops": len(v.ov_rows),
         "overhead_bound_s": ov_time, "overhead_bound_share": ov_time / v.total, "mean_overhead_op_s": per_op,
         "outside_s": t.outside_s, "outside_python_s": t.outside_python_s,
         **({"kernel_launches": t.launches} if t.launches else {})},
        _top(v.ov_rows))


def _gpu_idle(v: _View) -> Finding | None:
    t = v.t
    if t.device_s is None or t.gpu_idle_share is None:
        return None
    idle, n_launch, launch = t.gpu_idle_share, t.launches or 0, v.prof.launch_latency_s
    return Finding(
        "gpu_idle", "GPU busy vs waiting on the host",
        f"the GPU runs kernels for {fmt_seconds(t.device_s)} of the {fmt_seconds(v.total)} profiled call; {idle:.0%} of the call "
        f"it waits for the host to dispatch and launch {n_launch} kernels"
        + (f" ({n_launch} x {fmt_seconds(launch)} measured launch latency = {fmt_seconds(n_launch * launch)})"
           if launch and n_launch else "")
        + (": launch-bound, so CUDA graphs or torch.compile shorten it and a larger batch is nearly free"
           if idle >= GPU_IDLE_SHARE else "") + ".",
        {"device_s": t.device_s, "call_s": v.total, "gpu_idle_share": idle, "kernel_launches": n_launch,
         **({"launch_latency_s": launch} if launch else {})},
        _top([r for r in v.rows if r.device_time_s is not None], key="device_time_s"))


def _memory(v: _View) -> Finding | None:
    mem = [r for r in v.rows if r.bound == Bound.MEMORY]
    mem_time = sum(r.time_s for r in mem)
    if mem_time / v.total < NOTABLE_SHARE:
        return None
    flops, nbytes = v.t.flops, v.t.bytes
    return Finding(
        "memory", "Memory access",
        f"{len(mem)} memory-bound ops take {fmt_seconds(mem_time)} ({mem_time / v.total:.0%} of the call) for "
        f"{sum(r.flops for r in mem) / max(flops, 1):.0%} of the FLOPs; the model moves {nbytes / 1e6:,.1f} MB, "
        f"{nbytes / max(flops, 1):.3f} bytes per FLOP (this machine's ridge point is "
        f"{1 / v.t.ridge_intensity:.3f} bytes per FLOP).",
        {"memory_bound_ops": len(mem), "memory_bound_s": mem_time, "memory_bound_share": mem_time / v.total,
         "bytes": nbytes, "bytes_per_flop": nbytes / max(flops, 1), "ridge_bytes_per_flop": 1 / v.t.ridge_intensity},
        _top(mem))


def _utilisation(v: _View) -> Finding | None:
    gemm = [r for r in v.kernel if r.family in ("matmul", "conv", "attention") and r.flops > 0]
    if not gemm:
        return None
    peak = v.prof.peak("float32")
    g_time = sum(r.time_s for r in gemm)
    g_flops = sum(r.flops for r in gemm)
    eff = g_flops / g_time / peak if g_time > 0 else 0.0
    low = [r for r in gemm if r.efficiency is not None and r.efficiency < LOW_EFFICIENCY
           and r.time_s / v.total >= MIN_OP_SHARE]
    low_time = sum(r.time_s for r in low)
    return Finding(
        "utilisation", "Hardware utilisation",
        f"{len(gemm)} matmul/conv ops reach {_rate(g_flops / g_time, 'FLOP/s')} on average, {eff:.0%} of the "
        f"measured {_rate(peak, 'FLOP/s')} peak; the whole model reaches {v.t.efficiency:.1%} of peak"
        + (f"; {len(low)} of them run below {LOW_EFFICIENCY:.0%} of peak and take {fmt_seconds(low_time)} "
           f"({low_time / v.total:.0%} of the call)" if low else "") + ".",
        {"gemm_ops": len(gemm), "gemm_flops_per_s": g_flops / g_time, "peak_flops_per_s": peak,
         "gemm_efficiency": eff, "model_efficiency": v.t.efficiency, "below_25pct_ops": len(low),
         "below_25pct_s": low_time, "below_25pct_share": low_time / v.total},
        tuple(OpRef(r.index, r.op, r.module, time_s=r.time_s, efficiency=r.efficiency)
              for r in sorted(low, key=lambda r: -r.time_s)[:TOP_OPS]))


def _quantization(v: _View) -> Finding | None:
    wbytes, nbytes = v.t.weight_bytes, v.t.bytes
    if not nbytes or wbytes / nbytes < WEIGHT_HEAVY_SHARE:
        return None
    int8 = v.prof.peak_flops.get("int8")
    return Finding(
        "opportunity", "Opportunity: quantization",
        f"weights are {wbytes / nbytes:.0%} of the bytes moved ({wbytes / 1e6:,.1f} of {nbytes / 1e6:,.1f} MB); "
        f"int8 weights would move {wbytes * INT8_SAVING / 1e6:,.1f} MB less"
        + (f", and this machine's int8 GEMM peak is {int8 / v.prof.peak('float32'):.1f}x its fp32 peak" if int8 else "")
        + " (a gain only where the ops are memory- or compute-bound, not overhead-bound).",
        {"weight_bytes": wbytes, "bytes": nbytes, "weight_share": wbytes / nbytes,
         **({"int8_over_fp32_peak": int8 / v.prof.peak("float32")} if int8 else {})},
        _top([r for r in v.kernel if r.family in ("matmul", "conv")]))


def _fusion(v: _View) -> Finding | None:
    elem = [r for r in v.kernel if r.family in _ELEMENTWISE]
    e_time = sum(r.time_s for r in elem)
    if len(elem) < FUSION_MIN_OPS or e_time / v.total < NOTABLE_SHARE:
        return None
    flops = v.t.flops
    return Finding(
        "opportunity", "Opportunity: fusion (torch.compile)",
        f"{len(elem)} elementwise/normalisation ops take {fmt_seconds(e_time)} ({e_time / v.total:.0%} of the call) for "
        f"{sum(r.flops for r in elem) / max(flops, 1):.1%} of the FLOPs; each reads and writes its tensor once: "
        f"fusing them (torch.compile, folding batch-norm into convs) removes those passes and {len(elem)} "
        "dispatches.",
        {"elementwise_ops": len(elem), "elementwise_s": e_time, "elementwise_share": e_time / v.total,
         "elementwise_flop_share": sum(r.flops for r in elem) / max(flops, 1)},
        _top(elem))


def _batching(v: _View) -> Finding | None:
    if v.overhead_like < FIXED_COST_SHARE:
        return None
    return Finding(
        "opportunity", "Opportunity: batching or CUDA graphs",
        f"at batch {v.t.batch}, {v.overhead_like:.0%} of the call is fixed per-op/per-call cost that does not grow "
        f"with the batch: batching amortises it, and on CUDA a CUDA graph replays the {len(v.rows)} ops without "
        "per-op launches.",
        {"batch": v.t.batch, "fixed_share": v.overhead_like, "ops": len(v.rows)},
        _top(v.ov_rows))


def _page_faults(v: _View) -> Finding | None:
    faults, fault_s = v.t.page_faults_per_call, getattr(v.prof, "page_fault_s", None)
    ref = v.t.measured_median_s or v.total
    if not faults or not fault_s or faults * fault_s / ref < FAULT_SHARE:
        return None
    cost = faults * fault_s
    return Finding(
        "opportunity", "Opportunity: allocator page faults",
        f"{faults:,.0f} minor page faults per call x {fmt_seconds(fault_s)} each (this machine's first-touch cost) = "
        f"{fmt_seconds(cost)}, {cost / ref:.0%} of the {fmt_seconds(ref)} call: the allocator hands fresh pages to large "
        "activations on every call; an allocator that keeps freed memory (jemalloc or tcmalloc, or glibc's "
        "MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_) avoids most of them.",
        {"page_faults_per_call": faults, "page_fault_s": fault_s, "page_faults_s": cost, "page_faults_share": cost / ref})


def _gathers(v: _View) -> Finding | None:
    rows = [r for r in v.kernel if 0 < r.inner_run < GATHER_MAX_RUN and r.family not in _OWN_OPERAND_PACKING]
    g_time = sum(r.time_s for r in rows)
    if not rows or g_time / v.total < GATHER_SHARE:
        return None
    shortest = min(r.inner_run for r in rows)
    return Finding(
        "opportunity", "Opportunity: scattered reads (layout)",
        f"{len(rows)} ops read an input in contiguous runs of fewer than {GATHER_MAX_RUN} elements (a transposed or "
        f"permuted tensor read against its output's memory order; the shortest runs are {shortest} element"
        f"{'s' if shortest > 1 else ''}): they take {fmt_seconds(g_time)}, {g_time / v.total:.0%} of the call, at "
        "several times the time per byte of an in-order copy. Keeping one layout through these ops (a permute folded "
        "into the matmul that follows, patches unfolded in one reshape) or fusing them (torch.compile) turns the "
        "gathers into streaming reads.",
        {"gather_ops": len(rows), "gather_s": g_time, "gather_share": g_time / v.total, "shortest_run": shortest},
        _top(rows))


def _coverage(v: _View) -> Finding | None:
    unc = [r for r in v.kernel if r.kind == "uncovered"]
    if not unc:
        return None
    u_time = sum(r.time_s for r in unc)
    return Finding("coverage", "Ops without a FLOP formula",
                   f"{len(unc)} ops have no FLOP formula; they take {fmt_seconds(u_time)} ({u_time / v.total:.0%} of the call).",
                   {"uncovered_ops": len(unc), "uncovered_s": u_time, "uncovered_share": u_time / v.total},
                   _top(unc))


FINDERS: tuple[Callable[[_View], Finding | None], ...] = (
    _disturbed, _dominant, _overhead, _gpu_idle, _memory, _utilisation, _quantization, _fusion, _batching,
    _gathers, _page_faults, _coverage)


def findings(ex) -> list[Finding]:
    """Every finding for an :class:`~flopgap.explain.Explanation`, in :data:`FINDERS` order
    (a disturbed machine first); none when nothing was timed."""
    if not any(r.time_s is not None for r in ex.ops) or ex.totals.call_s <= 0:
        return []
    v = _View(ex)
    return [f for f in (finder(v) for finder in FINDERS) if f is not None and f.numbers]
