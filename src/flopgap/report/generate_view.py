"""Terminal view of a generation run: per-phase table, sweep, findings, timing warnings."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from flopgap.report._format import fmt_bytes, fmt_seconds, pct, si

__all__ = ["render_generation"]



def _where(phase: str, point, options) -> str:
    """Which timing a warning is about: the prefill of the prompt, or a decode step at its
    cache length."""
    if phase == "prefill":
        return f"prefill (batch {point.batch}, prompt {options.prompt})"
    return f"decode (batch {point.batch}, context {point.context})"

def _timing_cells(t, per_token: bool) -> tuple[str, str, str]:
    if t is None:
        return "-", "-", "-"
    call = f"{fmt_seconds(t.median_s)} [{fmt_seconds(t.ci_low_s)}, {fmt_seconds(t.ci_high_s)}] n={t.n_samples}"
    tok = t.median_s / t.tokens if per_token else t.median_s
    lo, hi = t.tokens_per_s_ci
    rate = f"{t.tokens_per_s:.4g} [{lo:.4g}, {hi:.4g}]"
    return call, fmt_seconds(tok), rate


def render_generation(result, console) -> None:
    o = result.options
    p = result.headline
    t = p.decode_time or p.prefill_time
    where = f"{t.device}, {t.threads} thread(s)" if t is not None else o.device
    console.print(f"[bold]{escape(result.model)}[/bold]  generation: prompt {o.prompt}, {o.new_tokens} new tokens, "
                  f"batch {p.batch}, {o.cache} cache, {escape(where)}")
    m = result.machine
    console.print(f"machine ceilings: peak fp32 {si(m['peak_flops'].get('fp32', 0), 'FLOP/s')}, memory "
                  f"{si(m['mem_bandwidth'], 'B/s')}, cache {si(m['cache_bandwidth'], 'B/s')} "
                  f"({'quick' if m['quick'] else 'full'} profile, {m['source']})")
    shaky = [_where(phase, q, o) for q in result.points
             for phase in ("prefill", "decode")
             if getattr(q, f"{phase}_time") is not None and not getattr(q, f"{phase}_time").trustworthy]
    if shaky:
        disturbed = any(getattr(q, f"{ph}_time") is not None and getattr(q, f"{ph}_time").disturbed
                        for q in result.points for ph in ("prefill", "decode"))
        what = "were taken on a disturbed machine" if disturbed else "missed their precision or carry warnings"
        console.print(f"[yellow]warning[/yellow]: the timings of {escape(', '.join(shaky))} {what}: they describe "
                      "this run, not the machine at rest, and carry no verdict (details at the end)")
    table = Table(title=f"per phase, batch {p.batch}", title_justify="left")
    table.add_column("")
    table.add_column(f"prefill ({o.prompt} tokens)", justify="right")
    table.add_column(f"decode step (cache {p.context})", justify="right")
    pre, dec = p.prefill.per_token(), p.decode.per_token()
    rows = [
        ("FLOPs / token", si(pre["flops"]), si(dec["flops"])),
        ("bytes / token", fmt_bytes(pre["bytes"]), fmt_bytes(dec["bytes"])),
        ("  weights", fmt_bytes(pre["weights"]), fmt_bytes(dec["weights"])),
        ("  KV cache read", fmt_bytes(pre["kv_read"]), fmt_bytes(dec["kv_read"])),
        ("  KV cache written", fmt_bytes(pre["kv_written"]), fmt_bytes(dec["kv_written"])),
        ("  activations", fmt_bytes(pre["activations"]), fmt_bytes(dec["activations"])),
        ("intensity (FLOP/B)", f"{p.prefill.intensity:.2f}", f"{p.decode.intensity:.2f}"),
        ("kernel ops / token", f"{pre['kernel_ops']:.3g}", f"{dec['kernel_ops']:.3g}"),
        ("memory floor / call", fmt_seconds(p.prefill_floors.memory_s), fmt_seconds(p.decode_floors.memory_s)),
        ("compute floor / call", fmt_seconds(p.prefill_floors.compute_s), fmt_seconds(p.decode_floors.compute_s)),
        ("bound on paper", p.prefill_floors.bound, p.decode_floors.bound),
    ]
    pc, pt, pr = _timing_cells(p.prefill_time, per_token=False)
    dc, dt, dr = _timing_cells(p.decode_time, per_token=True)
    if p.prefill_time is not None or p.decode_time is not None:
        rows += [("measured / call [95% CI]", pc, dc),
                 ("time to first token / ms per token", pt, dt),
                 ("tokens/s [95% CI]", pr, dr)]
        for label, key in (("MFU (of peak FLOP/s)", "mfu"), ("MBU (of bandwidth)", "mbu"),
                           ("speed of the floor", "of_floor")):
            cells = []
            for phase in ("prefill", "decode"):
                timing = getattr(p, f"{phase}_time")
                floors = getattr(p, f"{phase}_floors")
                cells.append(pct(floors.utilisation(timing.median_s, getattr(p, phase))[key]) if timing else "-")
            rows.append((label, *cells))
    if p.launches_per_token is not None:
        rows.append(("kernel launches / token", "-", f"{p.launches_per_token:.3g}"))
    if p.graph_time is not None:
        gc, gt, gr = _timing_cells(p.graph_time, per_token=True)
        rows.append(("CUDA graph: ms per token", "-", gt))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    mean = result.decode_mean()
    console.print(f"decode over {o.new_tokens} tokens (cache {o.prompt} .. {o.prompt + o.new_tokens - 1}): mean "
                  f"per step {si(mean['flops'], 'FLOPs')}, weights {fmt_bytes(mean['weights'])}, KV read "
                  f"{fmt_bytes(mean['kv_read'])}, KV written {fmt_bytes(mean['kv_written'])}, "
                  f"{mean['kernel_ops']:.0f} kernel ops")
    if len(result.points) > 1:
        from flopgap.generate import sweep_rows

        sweep = Table(title="sweep: decode step by batch and context", title_justify="left")
        for col in ("batch", "context", "FLOPs/token", "bytes/token", "KV share", "FLOP/B", "memory floor",
                    "compute floor", "bound", "step [n]", "ms/token", "tokens/s", "of floor"):
            sweep.add_column(col, justify="right")
        for r, point in zip(sweep_rows(result), result.points):
            timing = point.decode_time
            sweep.add_row(str(r["batch"]), str(r["context"]), si(r["decode_flops_per_token"]),
                          fmt_bytes(r["decode_bytes_per_token"]), pct(r["kv_share"]), f"{r['intensity']:.2f}",
                          fmt_seconds(r["memory_floor_s"]), fmt_seconds(r["compute_floor_s"]), r["bound"],
                          f"{fmt_seconds(timing.median_s)} [{timing.n_samples}]" if timing else "-",
                          f"{r['ms_per_token']:.3g}" if timing else "-",
                          f"{r['tokens_per_s']:.4g}" if timing else "-",
                          pct(r["of_floor"]) if timing else "-")
        console.print(sweep)
    console.print("[bold]findings[/bold]")
    for f in result.findings:
        verdict = f" [{f['verdict']}]" if f.get("verdict") else ""
        console.print(f"- {escape(f['title'])}{verdict}: {escape(f['text'])}")
    warned = []
    for point in result.points:
        for phase in ("prefill", "decode"):
            timing = getattr(point, f"{phase}_time")
            if timing is not None:
                for w in timing.warnings or (["CI wider than --precision"] if not timing.precision_met else []):
                    warned.append(f"{_where(phase, point, o)}: {w}")
    for w in dict.fromkeys(warned):
        console.print(f"[yellow]timing warning[/yellow]: {escape(w)}")
    if p.decode_time is not None and p.decode_time.reset_s is not None:
        console.print(f"[dim]each timed decode call resets the cache to {p.context} tokens first "
                      f"({fmt_seconds(p.decode_time.reset_s)} of it, timed apart); per token = per token "
                      "processed (B*P for prefill, B for a decode step); FLOPs: a fused multiply-add = 2.[/dim]")
