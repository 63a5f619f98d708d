"""Render timing results (:mod:`flopgap.timing`) as rich tables."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from rich.text import Text

from flopgap._terminal import markup, printable
from flopgap.report._format import fmt_bytes, fmt_measurement, fmt_seconds, pct
from flopgap.timing import Comparison, Measurement, ProcessRepeats

__all__ = ["render_measurement", "render_comparison", "render_repeats"]

_CI_NOTE = ("median of steady-state samples; 95% CI of the median by order statistics (binomial, "
            "distribution-free); cold = first call, reported apart")


def _header(m: Measurement) -> str:
    s = m.spec
    mode = "grad enabled" if s.grad else "inference_mode"
    threads = m.environment.get("torch_threads", s.threads)
    return (f"{s.device}, {s.threads} thread(s) (torch uses {threads}; {m.environment.get('logical_cores')} logical "
            f"cores, {m.environment.get('cpu_model', '?')}), {mode}")


def _target(m: Measurement) -> str:
    reached = f"+-{pct(m.half_width, 2)}" if m.half_width != float("inf") else "-"
    verdict = "met" if m.precision_met else "[yellow]NOT met[/yellow]"
    return f"{reached} (target +-{pct(m.spec.precision, 2)}: {verdict})"


def _warmup(m: Measurement) -> str:
    if m.steady:
        return f"{m.warmup_calls} calls to steady state ({len(m.warmup_samples)} samples)"
    return f"[yellow]not steady[/yellow] after {m.warmup_calls} calls ({len(m.warmup_samples)} samples, bound reached)"


def _ci(m: Measurement) -> str:
    if math.isnan(m.ci_low):
        return f"unknown ({len(m.samples)} samples: 6 needed)"
    return f"{fmt_seconds(m.ci_low)} .. {fmt_seconds(m.ci_high)}"


def _rows(m: Measurement) -> list[tuple[str, str]]:
    rows = [
        ("median", fmt_seconds(m.median)),
        ("95% CI", _ci(m)),
        ("precision", _target(m)),
        ("mean", fmt_seconds(m.mean)),
        ("p5 / p95", f"{fmt_seconds(m.p5)} / {fmt_seconds(m.p95)}"),
        ("min", fmt_seconds(m.min)),
        ("cold (first call)", fmt_seconds(m.cold_s)),
        ("warm-up", _warmup(m)),
        ("samples", f"n={len(m.samples)} x {m.block_size} call(s) = {m.calls} calls"),
        ("machine", m.disturbance.summary if m.disturbance is not None else "not watched"),
        ("outliers", f"{m.outliers} (outside Tukey 1.5 IQR fences; kept)"),
    ]
    if m.device_samples:
        rows.append(("device time (CUDA events)", fmt_seconds(m.device_median)))
    if m.dispatch_samples:
        rows.append(("host dispatch", fmt_seconds(m.dispatch_median)))
    if m.peak_memory_bytes is not None:
        rows.append(("peak device memory", fmt_bytes(m.peak_memory_bytes)))
    elif m.notes and m.spec.device.startswith("cuda"):
        rows.append(("peak device memory", "not per model (interleaved run)"))
    if m.page_faults_per_call is not None:
        rows.append(("minor page faults", f"{m.page_faults_per_call:,.1f} per call while sampling"))
    rows.append(("wall time", f"{m.wall_s:.2f} s"))
    return rows


def render_measurement(m: Measurement, console: Console) -> None:
    console.print(Text(printable(m.spec.name), style="bold")
                  + Text(printable(f"  inputs {', '.join(m.spec.inputs)}  {_header(m)}")))
    _print_warnings(m, console)
    console.print(Text(f"latency {fmt_measurement(m)}", style="bold"))
    table = Table(show_header=True, title_justify="left")
    table.add_column("latency per call")
    table.add_column("value", justify="left")
    for k, v in _rows(m):
        table.add_row(k, v)
    console.print(table)
    console.print(f"[dim]{_CI_NOTE}[/dim]")


def _print_warnings(m: Measurement, console: Console, prefix: str = "") -> None:
    for w in m.warnings:
        console.print(Text(printable(f"warning: {prefix}{w}"), style="yellow"))


def render_comparison(c: Comparison, console: Console) -> None:
    a, b = c.a, c.b
    name_a, name_b = markup(a.spec.name), markup(b.spec.name)
    console.print(Text(printable(a.spec.name), style="bold") + Text(" vs ") + Text(printable(b.spec.name), style="bold")
                  + Text(printable(f"  timed alternately (ABBA)  {_header(a)}")))
    for w in c.warnings:
        console.print(Text(printable(f"warning: {w}"), style="yellow"))
    table = Table(show_header=True)
    table.add_column("latency per call")
    table.add_column(name_a, justify="left")
    table.add_column(name_b, justify="left")
    for (k, va), (_, vb) in zip(_rows(a), _rows(b)):
        if k == "wall time":
            continue
        table.add_row(k, va, vb)
    console.print(table)
    if c.disturbed:
        verdict = "no conclusion: the machine was disturbed (see the warnings above)"
    elif math.isnan(c.ci_low):
        verdict = "CI unknown (too few rounds)"
    elif c.excludes_one:
        verdict = f"{name_a} is {'slower' if c.ci_low > 1 else 'faster'} than {name_b}"
    else:
        verdict = "the CI includes 1.0: no difference shown"
    console.print(f"[bold]ratio {name_a} / {name_b} = {c.ratio:.3f}[/bold]  "
                  f"95% CI {c.ci_low:.3f} .. {c.ci_high:.3f} (paired bootstrap over {len(a.samples)} rounds): {verdict}")
    console.print(f"[dim]{_CI_NOTE}; wall time {a.wall_s:.2f} s[/dim]")


def render_repeats(r: ProcessRepeats, console: Console) -> None:
    if not r.results:
        console.print("[yellow]no process finished[/yellow]" + (f": {markup(r.failure)}" if r.failure else ""))
        return
    first = r.results[0]
    ratio = isinstance(first, Comparison)
    console.print(f"[bold]{len(r.results)} fresh process(es) of {r.requested}[/bold], one after another: "
                  f"flopgap time {markup(' '.join(r.args))}", soft_wrap=True)
    table = Table()
    for col in ("process", "ratio" if ratio else "median", "95% CI", "target", "cold (first call)", "samples",
                "machine"):
        table.add_column(col, justify="right")
    for i, res in enumerate(r.results, 1):
        m = res.a if ratio else res
        if ratio:
            value, ci = f"{res.ratio:.3f}", f"{res.ci_low:.3f} .. {res.ci_high:.3f}"
        else:
            value, ci = fmt_seconds(m.median), _ci(m)
        met = m.precision_met and (not ratio or res.b.precision_met)
        table.add_row(str(i), value, ci, "met" if met else "not met", fmt_seconds(m.cold_s), str(len(m.samples)),
                      "DISTURBED" if res.disturbed else "quiet" if m.disturbance is not None else "not watched")
    console.print(table)
    what = "ratio" if ratio else "median"
    fmt = (lambda x: f"{x:.3f}") if ratio else fmt_seconds
    mid = fmt(r.median)
    spread = f"{r.spread:.3f}" if not math.isnan(r.spread) else "n/a (needs 2 processes)"
    lo, hi, conf = r.ci
    ci = (f"{pct(conf, 0)} CI {fmt(lo)} .. {fmt(hi)}" + (" (the range: fewer than 6 processes)" if conf < 0.95 else "")
          if not math.isnan(lo) else "no CI (needs 2 processes)")
    threads = r.results[0].a.spec.threads if ratio else r.results[0].spec.threads
    console.print(f"[bold]between processes[/bold]: median of {what}s {mid}, {ci}, spread max/min = {spread} "
                  f"(n={len(r.results)} processes, {threads} threads)")
    if r.disturbed:
        console.print(Text(f"warning: the machine was disturbed in {r.disturbed} of {len(r.results)} processes",
                           style="yellow"))
    if r.interrupted:
        console.print(f"[yellow]interrupted: {len(r.results)} of {r.requested} processes reported[/yellow]")
    if r.failure:
        console.print(f"[yellow]stopped: {markup(r.failure)}; {len(r.results)} of {r.requested} processes reported[/yellow]")
