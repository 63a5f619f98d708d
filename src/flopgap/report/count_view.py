"""Render a :class:`~flopgap.count.CountResult`: rich tables, CSV rows."""

from __future__ import annotations


from rich.console import Console

from flopgap._terminal import markup
from flopgap.count import CountResult
from flopgap.report.fit import Col, print_fit
from flopgap.report._format import fmt_bytes, pct, si

__all__ = ["render_count"]


_PHASE_SHORT = {"forward": "fwd", "backward": "bwd"}


def _mode_label(result: CountResult) -> str:
    if result.backward:
        return "training step: forward + backward, training mode"
    return "inference_mode" if result.mode == "inference" else "grad enabled"


def render_count(result: CountResult, console: Console, depth: int = 2, top: int = 10) -> None:
    t = result.totals()
    console.print(
        f"[bold]{markup(result.model)}[/bold]  inputs {markup(', '.join(result.inputs))}  "
        f"({_mode_label(result)}{', meta tensors' if result.meta else ''})"
    )
    if result.backward:
        _render_phases(result, console, depth)
    else:
        cols = [Col("module", text=True), Col("type", text=True, shrink=False), Col("params"), Col("FLOPs"), Col("MACs", optional=2),
                Col("bytes read"), Col("bytes written"), Col("FLOP/B", optional=1), Col("ops")]
        rows = [[_module_label(m), m.type, si(m.params), si(m.flops), si(m.macs), fmt_bytes(m.bytes_read),
                 fmt_bytes(m.bytes_written), f"{m.intensity:.1f}", str(m.ops)]
                for m in result.modules if m.depth <= depth and (m.ops_all or m.params)]
        print_fit(console, cols, rows, "per module (totals include children)")

    ops = sorted(result.kernel_ops, key=lambda r: -r.flops)[:top]
    if ops:
        cols = [Col("#")] + ([Col("phase", text=True, shrink=False)] if result.backward else []) + [
            Col("op", text=True), Col("module", text=True), Col("input shapes", text=True), Col("FLOPs"),
            Col("bytes"), Col("share")]
        total = result.flops or 1
        rows = []
        for r in ops:
            shapes = " ".join("x".join(map(str, s)) for s in r.input_shapes if s and isinstance(s[0], int))
            phase = [_PHASE_SHORT[r.phase]] if result.backward else []
            rows.append([str(r.index), *phase, r.op.removeprefix("aten."), r.module or "(model)", shapes,
                         si(r.flops), fmt_bytes(r.bytes), pct(r.flops / total)])
        print_fit(console, cols, rows, f"top {len(ops)} ops by FLOPs")

    console.print(
        f"[bold]total[/bold]{' (forward + backward)' if result.backward else ''}: {si(t['params'])} params, "
        f"{si(t['flops'], 'FLOPs')}, {si(t['macs'], 'MACs')}, "
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
    if result.backward:
        console.print("[dim]Backward: one backward pass from a gradient of ones on the outputs (no loss, no "
                      "optimizer step), every op autograd dispatched counted with its own formula; weight "
                      "gradients always, input gradients only where autograd needs them (the model's inputs "
                      "need none, so the first layer computes no input gradient).[/dim]")


def _module_label(m) -> str:
    return "  " * m.depth + (m.name.rsplit(".", 1)[-1] if m.name else "(model)")



def _ratio(b: float, f: float) -> str:
    return f"{b / f:.2f}x" if f else "-"


def _render_phases(result: CountResult, console: Console, depth: int) -> None:
    fwd, bwd = result.phase("forward"), result.phase("backward")
    rows = []
    for name, part in (("forward", fwd), ("backward", bwd), ("total", result)):
        t = part.totals()
        rows.append([name, si(t["flops"]), si(t["macs"]), fmt_bytes(t["bytes_read"]), fmt_bytes(t["bytes_written"]),
                     f"{t['intensity']:.1f}", str(t["ops"])])
    print_fit(console, [Col("phase", text=True, shrink=False), Col("FLOPs"), Col("MACs"), Col("bytes read"), Col("bytes written"),
                         Col("FLOP/B"), Col("kernel ops")], rows, "per phase")
    console.print(f"backward / forward: {_ratio(bwd.flops, fwd.flops)} FLOPs, {_ratio(bwd.macs, fwd.macs)} MACs, "
                  f"{_ratio(bwd.bytes_read + bwd.bytes_written, fwd.bytes_read + fwd.bytes_written)} bytes "
                  "(counted op by op; the rule of thumb is 2x FLOPs: a weight gradient and an input gradient "
                  "per matmul or conv)")
    cols = [Col("module", text=True), Col("type", text=True, shrink=False), Col("params"), Col("fwd FLOPs"), Col("bwd FLOPs"),
            Col("bwd/fwd"), Col("fwd bytes", optional=1), Col("bwd bytes", optional=1), Col("ops")]
    rows = [[_module_label(f), f.type, si(f.params), si(f.flops), si(b.flops), _ratio(b.flops, f.flops),
             fmt_bytes(f.bytes_read + f.bytes_written), fmt_bytes(b.bytes_read + b.bytes_written), f"{f.ops}+{b.ops}"]
            for f, b in zip(fwd.modules, bwd.modules)
            if f.depth <= depth and (f.ops_all or b.ops_all or f.params)]
    print_fit(console, cols, rows, "per module, forward and backward (totals include children)")
