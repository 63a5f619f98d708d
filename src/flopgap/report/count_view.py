"""Render a :class:`~flopgap.count.CountResult`: rich tables, CSV rows."""

from __future__ import annotations

import csv
import io

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flopgap.count import CountResult
from flopgap.report._format import fmt_bytes, pct, si

__all__ = ["render_count", "count_csv"]


_PHASE_SHORT = {"forward": "fwd", "backward": "bwd"}


def _mode_label(result: CountResult) -> str:
    if result.backward:
        return "training step: forward + backward, training mode"
    return "inference_mode" if result.mode == "inference" else "grad enabled"


def render_count(result: CountResult, console: Console, depth: int = 2, top: int = 10) -> None:
    t = result.totals()
    console.print(
        f"[bold]{escape(result.model)}[/bold]  inputs {', '.join(result.inputs)}  "
        f"({_mode_label(result)}{', meta tensors' if result.meta else ''})"
    )
    if result.backward:
        _render_phases(result, console, depth)
    else:
        table = Table(title="per module (totals include children)", title_justify="left")
        for col in ("module", "type", "params", "FLOPs", "MACs", "bytes read", "bytes written", "FLOP/B", "ops"):
            table.add_column(col, justify="left" if col in ("module", "type") else "right")
        for m in result.modules:
            if m.depth > depth or (m.ops_all == 0 and m.params == 0):
                continue
            table.add_row(_module_label(m), escape(m.type), si(m.params), si(m.flops), si(m.macs),
                          fmt_bytes(m.bytes_read), fmt_bytes(m.bytes_written), f"{m.intensity:.1f}", str(m.ops))
        console.print(table)

    ops = sorted(result.kernel_ops, key=lambda r: -r.flops)[:top]
    if ops:
        top_table = Table(title=f"top {len(ops)} ops by FLOPs", title_justify="left")
        cols = ["#"] + (["phase"] if result.backward else []) + ["op", "module", "input shapes", "FLOPs", "bytes",
                                                                  "share"]
        for col in cols:
            top_table.add_column(col, justify="right" if col in ("#", "FLOPs", "bytes", "share") else "left")
        total = result.flops or 1
        for r in ops:
            shapes = " ".join("x".join(map(str, s)) for s in r.input_shapes if s and isinstance(s[0], int))
            phase = [_PHASE_SHORT[r.phase]] if result.backward else []
            top_table.add_row(str(r.index), *phase, r.op.removeprefix("aten."), escape(r.module or "(model)"),
                              shapes[:40], si(r.flops), fmt_bytes(r.bytes), pct(r.flops / total))
        console.print(top_table)

    console.print(
        f"[bold]total[/bold]{' (forward + backward)' if result.backward else ''}: {si(t['params'])} params, "
        f"{si(t['flops'])}FLOPs, {si(t['macs'])}MACs, "
        f"{fmt_bytes(t['bytes_read'])} read, {fmt_bytes(t['bytes_written'])} written, "
        f"intensity {t['intensity']:.1f} FLOP/B, {t['ops']} kernel ops ({t['ops_all']} dispatched incl. views)"
    )
    unc = result.uncovered()
    if unc:
        console.print(f"[yellow]no formula for {pct(1 - result.coverage)} of kernel ops (their FLOPs are unknown, not zero):[/yellow]")
        for row in unc:
            where = ", ".join(f"{k or '(model)'} x{v}" for k, v in list(row["modules"].items())[:4])
            console.print(f"  {row['op']}: {row['calls']} call(s), {pct(row['share'])} of ops; in {escape(where)}")
    else:
        console.print("formula coverage: 100% of kernel ops")
    console.print("[dim]FLOPs: a fused multiply-add = 2 FLOPs (MACs shown apart). Bytes: each tensor input read "
                  "once (weights included) + each output written once; views are free.[/dim]")
    if result.backward:
        console.print("[dim]Backward: one backward pass from a gradient of ones on the outputs (no loss, no "
                      "optimizer step), every op autograd dispatched counted with its own formula; weight "
                      "gradients always, input gradients only where autograd needs them (the model's inputs "
                      "need none, so the first layer computes no input gradient).[/dim]")


def _module_label(m) -> str:
    return escape("  " * m.depth + (m.name.rsplit(".", 1)[-1] if m.name else "(model)"))


def _ratio(b: float, f: float) -> str:
    return f"{b / f:.2f}x" if f else "-"


def _render_phases(result: CountResult, console: Console, depth: int) -> None:
    fwd, bwd = result.phase("forward"), result.phase("backward")
    phases = Table(title="per phase", title_justify="left")
    for col in ("phase", "FLOPs", "MACs", "bytes read", "bytes written", "FLOP/B", "kernel ops"):
        phases.add_column(col, justify="left" if col == "phase" else "right")
    for name, part in (("forward", fwd), ("backward", bwd), ("total", result)):
        t = part.totals()
        phases.add_row(name, si(t["flops"]), si(t["macs"]), fmt_bytes(t["bytes_read"]), fmt_bytes(t["bytes_written"]),
                       f"{t['intensity']:.1f}", str(t["ops"]))
    console.print(phases)
    console.print(f"backward / forward: {_ratio(bwd.flops, fwd.flops)} FLOPs, {_ratio(bwd.macs, fwd.macs)} MACs, "
                  f"{_ratio(bwd.bytes_read + bwd.bytes_written, fwd.bytes_read + fwd.bytes_written)} bytes "
                  "(counted op by op; the rule of thumb is 2x FLOPs: a weight gradient and an input gradient "
                  "per matmul or conv)")
    table = Table(title="per module, forward and backward (totals include children)", title_justify="left")
    for col in ("module", "type", "params", "fwd FLOPs", "bwd FLOPs", "bwd/fwd", "fwd bytes", "bwd bytes", "ops"):
        table.add_column(col, justify="left" if col in ("module", "type") else "right")
    for f, b in zip(fwd.modules, bwd.modules):
        if f.depth > depth or (f.ops_all == 0 and b.ops_all == 0 and f.params == 0):
            continue
        table.add_row(_module_label(f), escape(f.type), si(f.params), si(f.flops), si(b.flops), _ratio(b.flops, f.flops),
                      fmt_bytes(f.bytes_read + f.bytes_written), fmt_bytes(b.bytes_read + b.bytes_written),
                      f"{f.ops}+{b.ops}")
    console.print(table)


def count_csv(result: CountResult) -> str:
    """One row per dispatched op."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["index", "op", "module", "family", "kind", "input_shapes", "output_shapes",
                "flops", "macs", "bytes_read", "bytes_written", "phase"])
    for r in result.ops:
        w.writerow([r.index, r.op, r.module, r.family, r.kind, r.input_shapes, r.output_shapes,
                    r.flops, r.macs, r.bytes_read, r.bytes_written, r.phase])
    return buf.getvalue()
