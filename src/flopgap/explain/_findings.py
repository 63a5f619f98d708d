"""Findings in the seed's terms (memory access, kernel launches / dispatch overhead,
hardware utilisation, opportunities), each with its numbers and the ops it concerns.

A finding is a dict ``{"kind", "title", "text", "numbers", "ops"}``; one without
numbers is never emitted (:func:`findings` drops it).
"""

from __future__ import annotations

__all__ = ["findings"]

_CLASS_WORDS = {"compute": "compute (FLOP-bound work)", "memory": "memory traffic",
                "overhead": "dispatch overhead (fixed per-op cost)"}
_ELEMENTWISE = ("pointwise", "norm", "softmax", "reduction")


def _us(s: float) -> str:
    return f"{s * 1e6:,.1f} us" if s < 1e-3 else f"{s * 1e3:,.2f} ms"


def _fmt_rate(x: float, unit: str) -> str:
    return f"{x / 1e9:,.1f} G{unit}"


def _top(rows: list[dict], n: int = 5, key: str = "time_s") -> list[dict]:
    return [{"index": r["index"], "op": r["op"], "module": r["module"], key: r[key]}
            for r in sorted(rows, key=lambda r: -(r[key] or 0.0))[:n]]


def findings(ex) -> list[dict]:
    """All findings for an Explanation-like object (rows, classes, totals, profile)."""
    out: list[dict] = []
    rows = [r for r in ex.ops if r["time_s"] is not None]
    kernel = [r for r in rows if not r["free"]]
    total = ex.totals["call_s"]
    prof = ex.profile
    if not rows or total <= 0:
        return out
    cls = ex.classes
    # ------------------------------------------------------------ said first: a busy machine
    warnings = getattr(ex, "warnings", [])
    if ex.totals.get("disturbed"):
        out.append({
            "kind": "disturbed", "title": "Measured on a disturbed machine",
            "text": ("the figures below were measured while the machine was busy, so they describe that busy "
                     "machine, not this one at rest: " + "; ".join(warnings)
                     + ". Re-run on a quiet machine before acting on them."),
            "numbers": {"disturbed": True, "warnings": len(warnings)},
            "ops": [],
        })
    # ------------------------------------------------------------ dominant cost
    shares = {c: cls[c]["time_share"] for c in ("compute", "memory", "overhead")}
    py_share = ex.totals["outside_python_s"] / total
    overhead_like = shares["overhead"] + py_share
    ranking = {"compute": shares["compute"], "memory": shares["memory"], "overhead": overhead_like}
    dom = max(ranking, key=ranking.get)
    dom_ops = [r for r in rows if r["cls"] == dom]
    out.append({
        "kind": "dominant", "title": f"Dominant cost: {_CLASS_WORDS[dom]}",
        "text": (f"{ranking[dom]:.0%} of the profiled call ({_us(total)}) is {_CLASS_WORDS[dom]}"
                 + (f", including {py_share:.0%} spent outside any op beyond the profiler's own cost "
                    f"(Python, module calls)" if dom == "overhead" and py_share >= 0.01 else "")
                 + f"; compute-bound ops take {shares['compute']:.0%} of the time for "
                   f"{cls['compute']['flop_share']:.0%} of the FLOPs."),
        "numbers": {"class": dom, "share": ranking[dom], "compute_share": shares["compute"],
                    "memory_share": shares["memory"], "overhead_share": shares["overhead"],
                    "outside_python_share": py_share, "call_s": total},
        "ops": _top(dom_ops),
    })
    # ------------------------------------------------------------ dispatch overhead
    n_ops = len(rows)
    fixed = n_ops * prof.dispatch_overhead_s
    ov_rows = [r for r in rows if r["cls"] == "overhead"]
    ov_time = sum(r["time_s"] for r in ov_rows)
    if overhead_like >= 0.1 or fixed / total >= 0.1:
        per_op = ov_time / len(ov_rows) if ov_rows else 0.0
        out.append({
            "kind": "overhead", "title": "Kernel launches / dispatch overhead",
            "text": (f"{n_ops} dispatched ops x {_us(prof.dispatch_overhead_s)} tiny-op overhead = {_us(fixed)}, "
                     f"{fixed / total:.0%} of the {_us(total)} call; the {len(ov_rows)} overhead-bound ops take "
                     f"{_us(ov_time)} ({ov_time / total:.0%}), {_us(per_op)} each on average "
                     f"({per_op / prof.dispatch_overhead_s:.1f}x the tiny-op cost)"
                     + (f"; {_us(ex.totals['outside_s'])} ({ex.totals['outside_share']:.0%}) is outside any op, "
                        f"{_us(ex.totals['outside_python_s'])} of it beyond the profiler's own cost"
                        if ex.totals["outside_s"] > 0 else "") + "."),
            "numbers": {"ops": n_ops, "dispatch_overhead_s": prof.dispatch_overhead_s, "ops_x_overhead_s": fixed,
                        "ops_x_overhead_share": fixed / total, "overhead_bound_ops": len(ov_rows),
                        "overhead_bound_s": ov_time, "overhead_bound_share": ov_time / total,
                        "mean_overhead_op_s": per_op, "outside_s": ex.totals["outside_s"],
                        "outside_python_s": ex.totals["outside_python_s"],
                        **({"kernel_launches": ex.totals["launches"]} if ex.totals.get("launches") else {})},
            "ops": _top(ov_rows),
        })
    # ------------------------------------------------------------ GPU waiting on the host (CUDA)
    dev_s = ex.totals.get("device_s")
    if dev_s is not None and ex.totals.get("gpu_idle_share") is not None:
        idle = ex.totals["gpu_idle_share"]
        n_launch = ex.totals.get("launches") or 0
        launch = prof.launch_latency_s
        out.append({
            "kind": "gpu_idle", "title": "GPU busy vs waiting on the host",
            "text": (f"the GPU runs kernels for {_us(dev_s)} of the {_us(total)} profiled call; "
                     f"{idle:.0%} of the call it waits for the host to dispatch and launch "
                     f"{n_launch} kernels"
                     + (f" ({n_launch} x {_us(launch)} measured launch latency = {_us(n_launch * launch)})"
                        if launch and n_launch else "")
                     + (": launch-bound, so CUDA graphs or torch.compile shorten it and a larger batch is "
                        "nearly free" if idle >= 0.5 else "") + "."),
            "numbers": {"device_s": dev_s, "call_s": total, "gpu_idle_share": idle, "kernel_launches": n_launch,
                        **({"launch_latency_s": launch} if launch else {})},
            "ops": _top([r for r in rows if r.get("device_time_s") is not None], key="device_time_s"),
        })
    # ------------------------------------------------------------ memory access
    mem_rows = [r for r in rows if r["cls"] == "memory"]
    mem_time = sum(r["time_s"] for r in mem_rows)
    flops = ex.totals["flops"]
    nbytes = ex.totals["bytes"]
    if mem_time / total >= 0.1:
        out.append({
            "kind": "memory", "title": "Memory access",
            "text": (f"{len(mem_rows)} memory-bound ops take {_us(mem_time)} ({mem_time / total:.0%} of the call) "
                     f"for {sum(r['flops'] for r in mem_rows) / max(flops, 1):.0%} of the FLOPs; the model moves "
                     f"{nbytes / 1e6:,.1f} MB, {nbytes / max(flops, 1):.3f} bytes per FLOP (this machine's ridge point "
                     f"is {1 / ex.totals['ridge_intensity']:.3f} bytes per FLOP)."),
            "numbers": {"memory_bound_ops": len(mem_rows), "memory_bound_s": mem_time,
                        "memory_bound_share": mem_time / total, "bytes": nbytes,
                        "bytes_per_flop": nbytes / max(flops, 1), "ridge_bytes_per_flop": 1 / ex.totals["ridge_intensity"]},
            "ops": _top(mem_rows),
        })
    # ------------------------------------------------------------ hardware utilisation
    gemm = [r for r in kernel if r["family"] in ("matmul", "conv", "attention") and r["flops"] > 0]
    if gemm:
        peak = prof.peak("float32")
        g_time = sum(r["time_s"] for r in gemm)
        g_flops = sum(r["flops"] for r in gemm)
        eff = g_flops / g_time / peak if g_time > 0 else 0.0
        low = [r for r in gemm if r["efficiency"] is not None and r["efficiency"] < 0.25
               and r["time_s"] / total >= 0.005]
        low_time = sum(r["time_s"] for r in low)
        out.append({
            "kind": "utilisation", "title": "Hardware utilisation",
            "text": (f"{len(gemm)} matmul/conv ops reach {_fmt_rate(g_flops / g_time, 'FLOP/s')} on average, "
                     f"{eff:.0%} of the measured {_fmt_rate(peak, 'FLOP/s')} peak; the whole model reaches "
                     f"{ex.totals['efficiency']:.1%} of peak"
                     + (f"; {len(low)} of them run below 25% of peak and take {_us(low_time)} "
                        f"({low_time / total:.0%} of the call)" if low else "") + "."),
            "numbers": {"gemm_ops": len(gemm), "gemm_flops_per_s": g_flops / g_time, "peak_flops_per_s": peak,
                        "gemm_efficiency": eff, "model_efficiency": ex.totals["efficiency"],
                        "below_25pct_ops": len(low), "below_25pct_s": low_time, "below_25pct_share": low_time / total},
            "ops": sorted(({"index": r["index"], "op": r["op"], "module": r["module"], "efficiency": r["efficiency"],
                            "time_s": r["time_s"]} for r in low), key=lambda d: -d["time_s"])[:5],
        })
    # ------------------------------------------------------------ opportunities
    wbytes = ex.totals["weight_bytes"]
    if nbytes and wbytes / nbytes >= 0.5:
        int8 = prof.peak_flops.get("int8")
        out.append({
            "kind": "opportunity", "title": "Opportunity: quantization",
            "text": (f"weights are {wbytes / nbytes:.0%} of the bytes moved ({wbytes / 1e6:,.1f} of {nbytes / 1e6:,.1f} MB); "
                     f"int8 weights would move {wbytes * 0.75 / 1e6:,.1f} MB less"
                     + (f", and this machine's int8 GEMM peak is {int8 / prof.peak('float32'):.1f}x its fp32 peak"
                        if int8 else "")
                     + " (a gain only where the ops are memory- or compute-bound, not overhead-bound)."),
            "numbers": {"weight_bytes": wbytes, "bytes": nbytes, "weight_share": wbytes / nbytes,
                        **({"int8_over_fp32_peak": int8 / prof.peak("float32")} if int8 else {})},
            "ops": _top([r for r in kernel if r["family"] in ("matmul", "conv")]),
        })
    elem = [r for r in kernel if r["family"] in _ELEMENTWISE]
    e_time = sum(r["time_s"] for r in elem)
    if len(elem) >= 10 and e_time / total >= 0.1:
        out.append({
            "kind": "opportunity", "title": "Opportunity: fusion (torch.compile)",
            "text": (f"{len(elem)} elementwise/normalisation ops take {_us(e_time)} ({e_time / total:.0%} of the call) "
                     f"for {sum(r['flops'] for r in elem) / max(flops, 1):.1%} of the FLOPs; each reads and writes "
                     f"its tensor once: fusing them (torch.compile, folding batch-norm into convs) removes "
                     f"those passes and {len(elem)} dispatches."),
            "numbers": {"elementwise_ops": len(elem), "elementwise_s": e_time, "elementwise_share": e_time / total,
                        "elementwise_flop_share": sum(r["flops"] for r in elem) / max(flops, 1)},
            "ops": _top(elem),
        })
    if overhead_like >= 0.5:
        out.append({
            "kind": "opportunity", "title": "Opportunity: batching or CUDA graphs",
            "text": (f"at batch {ex.totals['batch']}, {overhead_like:.0%} of the call is fixed per-op/per-call cost "
                     f"that does not grow with the batch: batching amortises it, and on CUDA a CUDA graph "
                     f"replays the {n_ops} ops without per-op launches."),
            "numbers": {"batch": ex.totals["batch"], "fixed_share": overhead_like, "ops": n_ops},
            "ops": _top(ov_rows),
        })
    faults = ex.totals.get("page_faults_per_call")
    fault_s = getattr(prof, "page_fault_s", None)
    ref = ex.totals.get("measured_median_s") or total
    if faults and fault_s and faults * fault_s / ref >= 0.05:
        cost = faults * fault_s
        out.append({
            "kind": "opportunity", "title": "Opportunity: allocator page faults",
            "text": (f"{faults:,.0f} minor page faults per call x {_us(fault_s)} each (this machine's first-touch "
                     f"cost) = {_us(cost)}, {cost / ref:.0%} of the {_us(ref)} call: the allocator hands fresh pages "
                     f"to large activations on every call; an allocator that keeps freed memory (jemalloc or "
                     f"tcmalloc, or glibc's MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_) avoids most of them."),
            "numbers": {"page_faults_per_call": faults, "page_fault_s": fault_s, "page_faults_s": cost,
                        "page_faults_share": cost / ref},
            "ops": [],
        })
    # ------------------------------------------------------------ what could not be attributed
    unc = [r for r in kernel if r["kind"] == "uncovered"]
    if unc:
        u_time = sum(r["time_s"] for r in unc)
        out.append({
            "kind": "coverage", "title": "Ops without a FLOP formula",
            "text": f"{len(unc)} ops have no FLOP formula; they take {_us(u_time)} ({u_time / total:.0%} of the call).",
            "numbers": {"uncovered_ops": len(unc), "uncovered_s": u_time, "uncovered_share": u_time / total},
            "ops": _top(unc),
        })
    return [f for f in out if f["numbers"]]
