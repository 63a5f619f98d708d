"""Plots for reports, rendered to PNG bytes with matplotlib's Agg canvas.

No pyplot and no global backend state: each plot builds its own ``Figure``, so
rendering never opens a window and is safe in threads and tests. Labels are plain
text (``$`` is escaped so a model name never turns into mathtext).
"""

from __future__ import annotations

import io
import math
from typing import Sequence

__all__ = ["loglog_scatter", "predicted_vs_measured", "residuals_plot", "relative_speed_bars", "latency_histogram",
           "roofline_chart", "speedup_chart"]

_DPI = 110
_SMALL_DPI = 90  # the per-command pages: one plot each, kept light (a roofline of 150 ops: ~60 kB)


def _figure(w: float = 7.0, h: float = 4.8, dpi: int = _DPI):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _label(text: str, limit: int = 28) -> str:
    text = str(text)
    if text.startswith(("torchvision:", "seed:", "zoo:")):  # the model name is label enough
        text = text.split(":", 1)[1]
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _unit(seconds: Sequence[float]) -> tuple[float, str]:
    """(scale, unit) that puts the largest value between 1 and 1000."""
    top = max((v for v in seconds if v and v > 0), default=1.0)
    for scale, unit in ((1.0, "s"), (1e3, "ms"), (1e6, "us")):
        if top * scale >= 1:
            return scale, unit
    return 1e9, "ns"


def _finite(*cols):
    keep = [i for i in range(len(cols[0]))
            if all(c[i] is not None and isinstance(c[i], (int, float)) and math.isfinite(c[i]) and c[i] > 0
                   for c in cols[:2])]
    return [[c[i] for i in keep] for c in cols]


def loglog_scatter(xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], *, xlabel: str,
                   ylabel: str = "latency", title: str = "",
                   fit: tuple[float, float] | None = None, errors: Sequence[tuple[float, float]] | None = None) -> bytes:
    """Labelled log-log scatter; ``fit=(a, b)`` draws ``log10 y = a + b log10 x``; ys in
    seconds (shown in s, ms or us, whichever reads best), ``errors`` their (low, high) CIs."""
    cols = [list(xs), list(ys), list(labels)] + ([list(errors)] if errors else [])
    cols = _finite(*cols)
    y_scale, unit = _unit(cols[1])
    ylabel = f"{ylabel} ({unit})"
    x, y, lab = cols[0], [v * y_scale for v in cols[1]], cols[2]
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if errors:
        err = [(e[0] if e[0] is not None else v / y_scale, e[1] if e[1] is not None else v / y_scale)
               for v, e in zip(y, cols[3])]  # no CI: no bar
        lo = [max(v - e[0] * y_scale, 0) for v, e in zip(y, err)]
        hi = [max(e[1] * y_scale - v, 0) for v, e in zip(y, err)]
        ax.errorbar(x, y, yerr=[lo, hi], fmt="o", ms=4, color="#1f77b4", ecolor="#9cc3e4", capsize=2)
    else:
        ax.plot(x, y, "o", ms=4, color="#1f77b4")
    for xi, yi, li in zip(x, y, lab):
        ax.annotate(_label(li), (xi, yi), fontsize=6, xytext=(3, 2), textcoords="offset points")
    if fit and x:
        a, b = fit
        lo_x, hi_x = min(x), max(x)
        ax.plot([lo_x, hi_x], [10 ** (a + b * math.log10(lo_x)) * y_scale, 10 ** (a + b * math.log10(hi_x)) * y_scale],
                "--", color="#d62728", lw=1, label=f"fit: latency ~ {xlabel.split(' ')[0]}^{b:.2f}")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    return _png(fig)


def predicted_vs_measured(predicted: Sequence[float], measured: Sequence[float], labels: Sequence[str],
                          *, title: str = "predicted vs measured latency") -> bytes:
    """Log-log scatter with the y = x line (seconds in; shown in s, ms or us)."""
    p, m, lab = _finite(list(predicted), list(measured), list(labels))
    k, unit = _unit(list(p) + list(m))
    fig = _figure(6.0, 5.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([v * k for v in p], [v * k for v in m], "o", ms=4, color="#2ca02c")
    for pi, mi, li in zip(p, m, lab):
        ax.annotate(_label(li), (pi * k, mi * k), fontsize=6, xytext=(3, 2), textcoords="offset points")
    if p:
        lo = min(min(p), min(m)) * k / 1.5
        hi = max(max(p), max(m)) * k * 1.5
        ax.plot([lo, hi], [lo, hi], "-", color="#888", lw=1, label="y = x")
        ax.plot([lo, hi], [2 * lo, 2 * hi], ":", color="#bbb", lw=1, label="2x off")
        ax.plot([lo, hi], [lo / 2, hi / 2], ":", color="#bbb", lw=1)
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"predicted latency ({unit})")
    ax.set_ylabel(f"measured latency ({unit})")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    return _png(fig)


def residuals_plot(xs: Sequence[float], ratios: Sequence[float], labels: Sequence[str], *,
                   xlabel: str = "FLOPs", title: str = "residuals of the FLOPs-only fit",
                   outliers: Sequence[str] = ()) -> bytes:
    """measured / fitted latency against ``xs`` (log-log); outliers in red."""
    x, r, lab = _finite(list(xs), list(ratios), list(labels))
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    out = set(outliers)
    colors = ["#d62728" if li in out else "#1f77b4" for li in lab]
    ax.scatter(x, r, s=16, c=colors)
    for xi, ri, li in zip(x, r, lab):
        ax.annotate(_label(li), (xi, ri), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.axhline(1.0, color="#888", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("measured / FLOPs-fit latency")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    return _png(fig)


def relative_speed_bars(groups: Sequence[str], series: dict[str, Sequence[float | None]], *,
                        title: str = "", ylabel: str = "relative speed (first = 1)") -> bytes:
    """Grouped bars: one group per configuration, one bar per series (None = no number)."""
    fig = _figure(7.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    n = max(len(series), 1)
    width = 0.8 / n
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"]
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        vals = [v if v is not None else 0.0 for v in values]
        ax.bar(xs, vals, width, label=name.replace("$", r"\$"), color=colors[i % len(colors)])
    ax.axhline(1.0, color="#888", lw=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([_label(g, 20) for g in groups], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _png(fig)


def latency_histogram(samples: dict[str, Sequence[float]], medians: dict[str, float], *, title: str = "") -> bytes:
    """Histogram of steady-state samples (seconds per call), one series per model, its
    median marked; a log time axis when the samples span more than 10x."""
    import numpy as np

    values = [v for xs in samples.values() for v in xs if v and v > 0]
    scale, unit = _unit(values)
    fig = _figure(7.0, 3.6, dpi=_SMALL_DPI)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = (min(values), max(values)) if values else (1.0, 2.0)
    log = hi > 10 * lo
    bins = np.geomspace(lo * scale, hi * scale, 40) if log else 40
    colors = ["#1f77b4", "#ff7f0e"]
    for i, (name, xs) in enumerate(samples.items()):
        xs = [v * scale for v in xs if v and v > 0]
        if not xs:
            continue
        color = colors[i % len(colors)]
        ax.hist(xs, bins=bins, alpha=0.55, color=color, label=f"{_label(name)} (n={len(xs)})")
        if medians.get(name):
            ax.axvline(medians[name] * scale, color=color, lw=1.5, ls="--")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(f"latency per call ({unit}); dashed: median")
    ax.set_ylabel("samples")
    ax.set_title(title.replace("$", r"\$"), fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


_CLASS_COLORS = {"compute": "tab:red", "memory": "tab:blue", "overhead": "tab:gray"}


def roofline_chart(ops: Sequence[dict], *, peak: float, mem_bandwidth: float, cache_bandwidth: float,
                   total: tuple[float, float, float] | None = None, title: str = "") -> bytes:
    """Achieved FLOP/s against arithmetic intensity per op (dicts with flops, bytes,
    time_s, share, bound: ``cls`` in ``flopgap.explain/1`` results), sized by time share, coloured by roofline class, under the
    machine's ceilings; ``total`` = (flops, bytes, seconds) of the whole model."""
    import numpy as np

    fig = _figure(7.0, 4.6, dpi=_SMALL_DPI)
    ax = fig.add_subplot(1, 1, 1)
    xs = np.logspace(-3, 4, 200)
    ax.plot(xs, np.minimum(peak, xs * mem_bandwidth), "k-", lw=1.5, label="roofline (main memory)")
    ax.plot(xs, np.minimum(peak, xs * cache_bandwidth), "k--", lw=1, label="roofline (cache)")
    rows = [r for r in ops if r.get("time_s") and r.get("flops") and r.get("bytes")]
    for cls, color in _CLASS_COLORS.items():
        sel = [r for r in rows if (r.get("bound") or r.get("cls")) == cls]
        if sel:
            ax.scatter([r["flops"] / r["bytes"] for r in sel], [r["flops"] / r["time_s"] for r in sel],
                       s=[10 + 400 * (r.get("share") or 0) for r in sel], c=color, alpha=0.6,
                       label=f"{cls}-bound ops ({len(sel)})")
    if total and all(total):
        flops, nbytes, seconds = total
        ax.scatter([flops / nbytes], [flops / seconds], marker="*", s=300, c="gold", edgecolors="k",
                   label="model total", zorder=5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(title.replace("$", r"\$"), fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    return _png(fig)


def speedup_chart(labels: Sequence[str], speedups: Sequence[float], cis: Sequence[tuple[float, float] | None], *,
                  title: str = "") -> bytes:
    """Horizontal bars of speed-up (eager / variant) with their 95% CI, a line at 1 (no
    change), on a log axis so 2x faster and 2x slower are the same length."""
    fig = _figure(7.0, 0.9 + 0.38 * max(len(labels), 1), dpi=_SMALL_DPI)
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(len(labels)))[::-1]
    colors = ["#2ca02c" if ci and ci[0] > 1 else "#d62728" if ci and ci[1] < 1 else "#888888"
              for ci in cis]
    ax.barh(ys, [v - 1 for v in speedups], color=colors, alpha=0.75, left=1)  # from 1: slower bars go left
    for y, v, ci in zip(ys, speedups, cis):
        if ci and all(c and c > 0 for c in ci):
            ax.errorbar([v], [y], xerr=[[v - ci[0]], [ci[1] - v]], fmt="none", ecolor="k", capsize=3, lw=1)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels([_label(x, 36) for x in labels], fontsize=8)
    ax.set_xlabel("speed-up vs eager (eager / variant), 95% CI; green: faster, red: slower, grey: CI holds 1")
    ax.set_title(title.replace("$", r"\$"), fontsize=10)
    return _png(fig)
