"""Render machine profiles, explanations and predictions as rich tables."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from flopgap._terminal import markup, printable
from flopgap.report.fit import Col, print_fit
from flopgap.report._format import fmt_bytes, fmt_measurement, fmt_seconds, pct, si

__all__ = ["render_machine", "render_explanation", "render_prediction", "print_warnings"]


def _short(op: str) -> str:
    """``aten.max_pool2d.default:w4`` -> ``max_pool2d:w4`` (a key's suffix is kept)."""
    parts = op.split(".")
    if len(parts) < 2:
        return op
    suffix = parts[-1].split(":", 1)
    return parts[1] + (":" + suffix[1] if len(suffix) == 2 else "")


def render_machine(prof, console: Console, path: str | None = None) -> None:
    fp = prof.fingerprint
    console.print("[bold]machine[/bold] "
                  + markup(f"{fp.get('cpu')}  cores {fp.get('cores')}  threads {fp.get('threads')}  "
                           f"torch {fp.get('torch')}  device {fp.get('device')}"
                           + (f"  gpu {fp['gpu']}" if fp.get("gpu") else "")))
    console.print(f"profile: {prof.source}{' (quick)' if prof.quick else ''}, measured {prof.measured_at} "
                  f"in {prof.seconds:.1f} s" + (f"; cache {path}" if path else ""))
    console.print(f"used: peak fp32 {si(prof.peak('float32'), 'FLOP/s')}"
                  + "".join(f", {markup(k)} {si(v, 'FLOP/s')}" for k, v in prof.peak_flops.items() if k != "fp32")
                  + f"; memory {si(prof.mem_bandwidth, 'B/s')}, cache {si(prof.cache_bandwidth, 'B/s')} "
                  f"(ceilings: best block); dispatch {fmt_seconds(prof.dispatch_overhead_s)}, module call "
                  f"{fmt_seconds(prof.module_overhead_s)}"
                  + (f", kernel launch {fmt_seconds(prof.launch_latency_s)}" if prof.launch_latency_s else "")
                  + " (costs: median)")
    def fmt(v, unit):
        return fmt_seconds(v) if unit == "s" else si(v, unit)

    cols = [Col("figure", text=True), Col("median"), Col("p25", optional=1), Col("p75", optional=1),
            Col("min", optional=2), Col("max", optional=2), Col("spread"), Col("blocks")]
    rows = [[name, fmt(f.value, f.unit), fmt(f.p25, f.unit), fmt(f.p75, f.unit), fmt(f.min, f.unit),
             fmt(f.max, f.unit), pct(f.rel_spread), str(f.samples)] for name, f in prof.figures().items()]
    print_fit(console, cols, rows, "measured figures over timed blocks (spread = interquartile range / median)")
    if prof.chains:
        from flopgap.explain import Predictor

        pred = Predictor(prof)
        console.print(f"sequence fit on {len(prof.chains)} synthetic chains: t' = {pred.scale:.3f} x t "
                      f"({pred.matmul_scale:.3f} x t for matmuls and attention) + "
                      f"{fmt_seconds(pred.per_op_s)} per op + {_per_gb(pred.per_byte_s)} per GB of activations read, "
                      f"memory-class ops in cold models +{pred.cold_memory_extra:.0%}; chains: "
                      + ", ".join(f"{markup(c['label'])} measured {fmt_seconds(c['measured_s'])} fitted {fmt_seconds(c['fitted_s'])}"
                                  for c in pred.chain_fit))
    keys: dict[str, int] = {}
    for s in prof.calibration:
        keys[str(s.key)] = keys.get(str(s.key), 0) + 1
    if keys:
        from flopgap.machine import grid

        noisy = sum(1 for s in prof.calibration if s.attempts > 1)
        console.print(f"calibration: {len(prof.calibration)} of {len(grid(prof.quick))} grid cases measured "
                      f"({'a full profile' if prof.complete else 'lazily: the cases predictions so far needed'}; "
                      f"{noisy} measured twice: noisy or a large share of a prediction): "
                      + ", ".join(f"{markup(_short(k) if k.startswith('aten.') else k)} {n}"
                                  for k, n in sorted(keys.items())))



_OP_COLS = [Col("#"), Col("op", text=True), Col("module", text=True), Col("bound", text=True, shrink=False),
            Col("time"), Col("share"), Col("FLOPs"), Col("FLOP share", optional=2), Col("GFLOP/s"),
            Col("GB/s", optional=1), Col("% peak"), Col("roofline", optional=3)]


def _op_table(console: Console, title: str, rows, total_flops: int) -> None:
    cells = [[str(r.index), _short(r.op), r.module or "(model)", str(r.bound), fmt_seconds(r.time_s),
              pct(r.share), si(r.flops), pct(r.flops / total_flops if total_flops else None),
              f"{r.achieved_flops_s / 1e9:.2f}" if r.achieved_flops_s is not None else "-",
              f"{r.achieved_bytes_s / 1e9:.2f}" if r.achieved_bytes_s is not None else "-",
              pct(r.efficiency), fmt_seconds(r.roofline_s)] for r in rows]
    print_fit(console, _OP_COLS, cells, title)


def print_warnings(warnings, console: Console) -> None:
    """Caveats first, one yellow line each (markup off: they quote names)."""
    for w in warnings:
        console.print(Text(printable(f"warning: {w}"), style="yellow"))


def render_explanation(ex, console: Console, top: int = 10, depth: int = 1) -> None:
    from rich.text import Text

    t = ex.totals
    prof = ex.profile
    console.print(Text(printable(ex.model), style="bold")
                  + Text(printable(f"  inputs {', '.join(ex.inputs)}  device {t.device}  {t.threads} threads  "
                                   f"machine profile: {prof.source}{' (quick)' if prof.quick else ''}")))
    print_warnings(ex.warnings, console)
    console.print(f"ceilings: peak fp32 {si(prof.peak('float32'), 'FLOP/s')}, memory {si(prof.mem_bandwidth, 'B/s')}, "
                  f"cache {si(prof.cache_bandwidth, 'B/s')}, dispatch overhead {fmt_seconds(prof.dispatch_overhead_s)}")
    line = (f"profiled call {fmt_seconds(t.call_s)} (median of {t.profiled_calls}): ops "
            f"{fmt_seconds(t.ops_s)}, outside ops {fmt_seconds(t.outside_s)}")
    if t.device_s is not None:
        line += f"; GPU kernels {fmt_seconds(t.device_s)} (GPU idle {pct(t.gpu_idle_share, 0)})"
    console.print(line)
    if ex.measurement is not None:
        m = ex.measurement
        console.print(f"rigorous median {fmt_measurement(m)}"
                      + (f" (profiler overhead {pct(t.profiler_overhead, 0)})" if t.profiler_overhead is not None
                         else ": not used to reconcile (see the warnings above)"))
    console.print(f"predicted {fmt_seconds(t.predicted_s)} (roofline sum {fmt_seconds(t.roofline_s)})"
                  + (f", error {pct(t.prediction_error, 0)} vs the rigorous median"
                     if t.prediction_error is not None else "")
                  + f"; {si(t.flops, 'FLOP')}, {fmt_bytes(t.bytes)}, {t.ops} kernel ops"
                  + (f", {t.launches} kernel launches" if t.launches else "")
                  + f"; FLOP efficiency {pct(t.efficiency)} of peak")
    if t.unmatched_records:
        console.print(f"[yellow]{t.unmatched_records} counted ops got no profiler event[/yellow]")

    cls = Table(title="roofline classes: time share vs FLOP share", title_justify="left")
    for col in ("class", "ops", "time", "time share", "FLOP share", "bytes"):
        cls.add_column(col, justify="left" if col == "class" else "right")
    for c, row in ex.classes.items():
        cls.add_row(f"{c}-bound", str(row.ops), fmt_seconds(row.time_s), pct(row.time_share),
                    pct(row.flop_share), fmt_bytes(row.bytes))
    cls.add_row("outside ops", "-", fmt_seconds(t.outside_s), pct(t.outside_share), "-", "-")
    console.print(cls)

    _op_table(console, f"top {top} ops by time", ex.top_by("time_s", top), t.flops)
    _op_table(console, f"top {top} ops by FLOPs", ex.top_by("flops", top), t.flops)

    cols = [Col("module", text=True), Col("type", text=True, shrink=False), Col("time"), Col("share"), Col("FLOPs"),
            Col("GFLOP/s"), Col("ops")]
    rows = [["  " * m.depth + (m.name.rsplit(".", 1)[-1] if m.name else "(model)"), m.type,
             fmt_seconds(m.time_s), pct(m.share), si(m.flops),
             f"{m.achieved_flops_s / 1e9:.2f}" if m.achieved_flops_s else "-", str(m.ops)]
            for m in ex.modules if m.depth <= depth and m.ops > 0]
    print_fit(console, cols, rows, "per module (totals include children)")

    console.print("[bold]findings[/bold]")
    for f in ex.findings:
        console.print(Text("- ") + Text(printable(f.title), style="bold") + Text(printable(f": {f.text}")))
        if f.ops:
            names = ", ".join(f"#{o.index} {_short(o.op)}" + (f" ({o.module})" if o.module else "")
                              for o in f.ops[:5])
            console.print(Text(printable(f"    ops: {names}")))


def _per_gb(seconds_per_byte: float) -> str:
    return fmt_seconds(seconds_per_byte * 1e9)


def _python_part(pred) -> str:
    """The model's Python as the prediction priced it: bytecode instructions, or module calls."""
    if pred.python_opcodes is None:
        return f"{pred.module_calls} module calls x overhead = {fmt_seconds(pred.module_overhead_s)}"
    how = " (estimated from its ops)" if pred.python_estimated else ""
    return f"Python {pred.python_opcodes:,} bytecode instructions{how} = {fmt_seconds(pred.python_s)}"


def render_prediction(pred, console: Console, check=None, top: int = 5) -> None:
    iv = pred.interval
    line = f"[bold]{markup(pred.model)}[/bold]  predicted {fmt_seconds(pred.latency_s)}"
    if iv is not None:
        line += f"  {iv.level:.0%} interval {fmt_seconds(iv.low_s)} .. {fmt_seconds(iv.high_s)}"
    console.print(line + f"  for {pred.threads} threads")
    print_warnings(pred.warnings, console)
    console.print(f"(roofline sum {fmt_seconds(pred.roofline_s)}; {_python_part(pred)}; in-sequence fit "
                  f"{pred.scale:.2f} x t ({pred.matmul_scale:.2f} x t for matmuls and attention) + "
                  f"{fmt_seconds(pred.per_op_s)} per op + {_per_gb(pred.per_byte_s)} per GB of activations read"
                  + (f", memory-class ops +{pred.cold_memory_extra:.0%} in this cold model" if pred.cold_memory_extra
                     and pred.cold else "")
                  + ")"
                  + ("" if pred.calibrated else
                     "  [yellow]no calibration: per-op floors (roofline, or the host's cost of a tiny op of the "
                     "family) with the chain fit[/yellow]" if pred.chain_fit else
                     "  [yellow]no calibration, no chains: per-op floors only (roofline, host cost per op)[/yellow]"))
    if iv is not None:
        console.print(f"interval: method error {pct(math.exp(iv.q_lo) - 1, 0)} .. +{pct(math.exp(iv.q_hi) - 1, 0)} "
                      f"({iv.method_source}), calibration noise x{math.exp(iv.calibration_log):.2f}, extrapolation "
                      f"x{math.exp(iv.extrapolation_log):.2f}", markup=False)
    ext = pred.extrapolated
    if ext:
        console.print(f"extrapolated: {len(ext)} op(s), {pct(pred.extrapolated_share, 1)} of the predicted time: "
                      + "; ".join(printable(f"#{r['index']} {_short(r['op'])} ({fmt_seconds(r['predicted_s'])}: "
                                            f"{r['why']})")
                                  for r in ext[:top])
                      + (f"; {len(ext) - top} more" if len(ext) > top else ""), markup=False)
    if check is not None:
        print_warnings(check.measurement.warnings, console)
        console.print(printable(f"measured median {fmt_measurement(check.measurement)}, "
                                + (f"error {pct(check.error, 1)}, {'inside' if check.inside else 'outside'} the "
                                   "interval" if check.error is not None else f"error not computed: {check.reason}")),
                      markup=False)
    t = Table(title="predicted time by method", title_justify="left")
    for col in ("method", "ops", "predicted", "share"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for method, row in sorted(pred.by_method().items(), key=lambda kv: -kv[1]["predicted_s"]):
        t.add_row(markup(method), str(row["ops"]), fmt_seconds(row["predicted_s"]),
                  pct(row["predicted_s"] / pred.latency_s if pred.latency_s else None))
    console.print(t)
