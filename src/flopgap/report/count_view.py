"""Render a :class:`~flopgap.count.CountResult`: rich tables, CSV rows."""

from __future__ import annotations

import csv
import io

from rich.console import Console
from rich.table import Table

from flopgap._terminal import markup
from flopgap.count import CountResult
from flopgap.report._format import fmt_bytes, pct, si
from flopgap.report.html import csv_cell

__all__ = ["render_count", "count_csv"]


def render_count(result: CountResult, console: Console, depth: int = 2, top: int = 10) -> None:
    t = result.totals()
    console.print(
        f"[bold]{markup(result.model)}[/bold]  inputs {markup(', '.join(result.inputs))}  "
        f"({'inference_mode' if result.mode == 'inference' else 'grad enabled'}{', meta tensors' if result.meta else ''})"
    )
    table = Table(title="per module (totals include children)", title_justify="left")
    for col in ("module", "type", "params", "FLOPs", "MACs", "bytes read", "bytes written", "FLOP/B", "ops"):
        table.add_column(col, justify="left" if col in ("module", "type") else "right")
    for m in result.modules:
        if m.depth > depth or (m.ops_all == 0 and m.params == 0):
            continue
        name = ("  " * m.depth + (m.name.rsplit(".", 1)[-1] if m.name else "(model)"))
        table.add_row(markup(name), markup(m.type), si(m.params), si(m.flops), si(m.macs), fmt_bytes(m.bytes_read),
                      fmt_bytes(m.bytes_written), f"{m.intensity:.1f}", str(m.ops))
    console.print(table)

    ops = sorted(result.kernel_ops, key=lambda r: -r.flops)[:top]
    if ops:
        top_table = Table(title=f"top {len(ops)} ops by FLOPs", title_justify="left")
        for col in ("#", "op", "module", "input shapes", "FLOPs", "bytes", "share"):
            top_table.add_column(col, justify="right" if col in ("#", "FLOPs", "bytes", "share") else "left")
        total = result.flops or 1
        for r in ops:
            shapes = " ".join("x".join(map(str, s)) for s in r.input_shapes if s and isinstance(s[0], int))
            top_table.add_row(str(r.index), markup(r.op.removeprefix("aten.")), markup(r.module or "(model)"),
                              shapes[:40],
                              si(r.flops), fmt_bytes(r.bytes), pct(r.flops / total))
        console.print(top_table)

    console.print(
        f"[bold]total[/bold]: {si(t['params'])} params, {si(t['flops'])}FLOPs, {si(t['macs'])}MACs, "
        f"{fmt_bytes(t['bytes_read'])} read, {fmt_bytes(t['bytes_written'])} written, "
        f"intensity {t['intensity']:.1f} FLOP/B, {t['ops']} kernel ops ({t['ops_all']} dispatched incl. views)"
    )
    unc = result.uncovered()
    if unc:
        console.print(f"[yellow]no formula for {pct(1 - result.coverage)} of kernel ops (their FLOPs are unknown, not zero):[/yellow]")
        for row in unc:
            where = ", ".join(f"{k or '(model)'} x{v}" for k, v in list(row["modules"].items())[:4])
            console.print(f"  {markup(row['op'])}: {row['calls']} call(s), {pct(row['share'])} of ops; "
                          f"in {markup(where)}")
    else:
        console.print("formula coverage: 100% of kernel ops")
    console.print("[dim]FLOPs: a fused multiply-add = 2 FLOPs (MACs shown apart). Bytes: each tensor input read "
                  "once (weights included) + each output written once; views are free.[/dim]")


def count_csv(result: CountResult) -> str:
    """One row per dispatched op."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["index", "op", "module", "family", "kind", "input_shapes", "output_shapes",
                "flops", "macs", "bytes_read", "bytes_written"])
    for r in result.ops:
        w.writerow([csv_cell(v) for v in (r.index, r.op, r.module, r.family, r.kind, r.input_shapes,
                                          r.output_shapes, r.flops, r.macs, r.bytes_read, r.bytes_written)])
    return buf.getvalue()
