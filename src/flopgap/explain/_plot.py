"""Roofline plot (PNG, matplotlib Agg backend): one point per op, the model total."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flopgap._figures import save_figure
from flopgap.errors import UsageError

__all__ = ["roofline_plot"]

_COLORS = {"compute": "tab:red", "memory": "tab:blue", "overhead": "tab:gray"}


def roofline_plot(ex, path: str | Path) -> Path:
    """Write ``path``: achieved FLOP/s against arithmetic intensity (FLOP/byte) for every
    timed op with FLOPs, sized by time share and coloured by class, the machine's
    ceilings (peak fp32, main-memory and cache bandwidth), and the model total."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"the roofline plot is a PNG: {str(path)!r} does not end in .png")
    prof = ex.profile
    peak = prof.peak("float32")
    rows = [r for r in ex.ops if r.time_s and r.flops > 0 and r.bytes > 0]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    xs = np.logspace(-3, 4, 200)
    ax.plot(xs, np.minimum(peak, xs * prof.mem_bandwidth), "k-", lw=1.5, label="roofline (main memory)")
    ax.plot(xs, np.minimum(peak, xs * prof.cache_bandwidth), "k--", lw=1, label="roofline (cache)")
    for bound, color in _COLORS.items():
        sel = [r for r in rows if r.bound == bound]
        if sel:
            ax.scatter([r.flops / r.bytes for r in sel], [r.achieved_flops_s for r in sel],
                       s=[10 + 400 * (r.share or 0) for r in sel], c=color, alpha=0.6,
                       label=f"{bound}-bound ops ({len(sel)})")
    t = ex.totals
    ref = t.measured_median_s or t.call_s
    if t.bytes and ref:
        ax.scatter([t.flops / t.bytes], [t.flops / ref], marker="*", s=300, c="gold", edgecolors="k",
                   label="model total", zorder=5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved FLOP/s")
    model = ex.model.replace("$", r"\$")  # a '$' in a model name would start matplotlib's math mode
    ax.set_title(f"{model}: {peak / 1e9:.0f} GFLOP/s peak, {prof.mem_bandwidth / 1e9:.0f} GB/s memory")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    return save_figure(fig, path)
