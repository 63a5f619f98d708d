"""Render a :class:`~flopgap.variants.VariantsResult`: one rich table, notes, findings."""

from __future__ import annotations

import math

from rich import box
from rich.console import Console
from rich.text import Text

from flopgap._terminal import markup, printable
from flopgap.report.fit import Col, fit_table, left_out_note
from flopgap.report._format import fmt_bytes, fmt_seconds, si

__all__ = ["render_variants"]

_STATUS_STYLE = {"ok": "", "no-op": "yellow", "failed": "red"}


def _err(x: float | None) -> str:
    return "-" if x is None else "0" if x == 0 else f"{x:.2g}"


def _half_width(r) -> float:
    lo, hi = r.latency_ci
    if math.isnan(lo) or math.isnan(hi):
        return math.nan
    return max(r.latency_s - lo, hi - r.latency_s) / r.latency_s if r.latency_s else 0.0


def _speedup(r) -> str:
    if r.speedup is None:
        return "-"
    if r.variant == "eager":
        return "1 (base)"
    lo, hi = r.speedup_ci
    if lo is None or math.isnan(lo) or math.isnan(hi):
        return f"{r.speedup:.2g}x [no CI]"
    return f"{r.speedup:.2g}x [{lo:.2g}, {hi:.2g}]"


def _paired_eager(r) -> str:
    """Eager's median in the alternating pair the speed-up comes from (it can differ from
    the eager row, timed alone at another moment, when the machine drifts)."""
    if r.variant == "eager" or r.eager_latency_s is None or r.latency_s is None:
        return "-"
    return fmt_seconds(r.eager_latency_s)


def render_variants(result, console: Console) -> None:
    """Print the sweep: a row per variant x batch x threads, then notes and findings."""
    console.print(f"[bold]{markup(result.model)}[/bold]  inputs {markup('; '.join(result.inputs))}  "
                  f"on {markup(result.device)}"
                  + ("  [red](interrupted: partial)[/red]" if result.interrupted else ""))
    for f in result.findings:
        if f.kind == "disturbed":
            console.print(Text(printable(f"warning: {f.text}"), style="yellow"))
    show_threads = len(result.threads) > 1
    measured = sorted({r.measured_threads for r in result.rows if r.measured_threads is not None})
    threads = "" if show_threads else f", threads: {', '.join(map(str, measured)) or result.threads[0] or 'torch default'}"
    # optional: left out (highest first) when the console is too narrow for every column
    cols = [Col("variant", text=True), Col("batch")] + ([Col("thr")] if show_threads else []) + [
        Col("status", text=True, shrink=False), Col("latency"), Col("eager (paired)", optional=6), Col("speed-up [CI]"),
        Col("items/s", optional=4), Col("abs err", optional=5), Col("rel err"), Col("peak mem", optional=3),
        Col("ops", optional=2), Col("1st call", optional=1)]
    rows = []
    for r in sorted(result.rows, key=lambda r: (r.batch, r.threads or 0, result.variants.index(r.variant)
                                                   if r.variant in result.variants else 99)):
        lat = "-" if r.latency_s is None else (
            f"{fmt_seconds(r.latency_s)} ±{_half_width(r):.0%}".replace("±nan%", "(no CI)") + f" n={r.n_samples}"
            + (" DISTURBED" if r.disturbed else ""))
        ops = "-" if r.ops_eager is None else (f"{r.ops_eager}->{r.ops}" if r.ops is not None else f"{r.ops_eager}->n/a")
        if r.variant == "eager" and r.ops is not None:
            ops = str(r.ops)
        first = "-" if r.first_call_s is None else ("compile " if r.compiled else "") + fmt_seconds(r.first_call_s)
        ops = ops.replace("->n/a", "->?") if r.compiled else ops
        rows.append([r.variant, str(r.batch)] + ([str(r.threads or "default")] if show_threads else []) + [
            Text(r.status, style=_STATUS_STYLE.get(r.status, "")), lat, _paired_eager(r), _speedup(r),
            si(r.throughput), _err(r.max_abs_err), _err(r.max_rel_err),
            "-" if r.peak_mem_bytes is None else fmt_bytes(r.peak_mem_bytes), ops, first])
    table, dropped = fit_table(cols, rows, console, box=box.SIMPLE_HEAD, pad_edge=False,
                               title=f"variants vs eager (speed-up = eager / variant, 95% CI{threads})")
    console.print(table)
    if dropped:
        console.print(Text(left_out_note(dropped), style="dim"))

    console.print("[bold]what each variant did[/bold]")
    seen = set()
    for r in result.rows:
        if r.variant in seen:
            continue
        seen.add(r.variant)
        lines = r.notes or ([r.reason] if r.reason else [])
        console.print(Text(printable(f"  {r.variant}: " + (" | ".join(lines) if lines else "-"))))
    for note in result.settings.get("notes", []):
        console.print(Text(printable(f"  {note}"), style="yellow"))
    if result.findings:
        console.print("[bold]findings[/bold]")
        for f in result.findings:
            style = {"slower": "red", "failed": "red", "no-op": "yellow", "faster": "green"}.get(f.kind, "")
            console.print(Text(printable(f"  {f.text}"), style=style))
    method = result.settings.get("peak_memory_method", "")
    console.print(f"[dim]Latency: median per call, ±: larger side of its 95% CI; speed-up from alternating timing of eager and the "
                  f"variant (eager (paired): eager's median in that pair). Errors vs eager outputs on the same input (rel = max|diff| / max|eager|). Ops: counted kernel ops, "
                  f"eager->variant (? where compiled code bypasses the dispatcher). "
                  f"Peak memory: {markup(method)}. First call includes compilation for compiled variants.[/dim]")
