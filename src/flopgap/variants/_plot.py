"""Latency and throughput against batch size, one line per variant (and thread count)."""

from __future__ import annotations

from pathlib import Path

from flopgap._figures import save_figure
from flopgap.errors import UsageError

__all__ = ["plot_variants"]


def plot_variants(result, path: str | Path) -> Path:
    """Write a two-panel figure (latency with its 95% CI, throughput) to ``path``
    (the suffix picks the format: .png, .svg, .pdf). Failed rows are left out."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--plot must end in .png, .svg or .pdf, got {str(path)!r}")
    groups: dict[tuple, list] = {}
    for r in result.rows:
        if r.latency_s:
            groups.setdefault((r.variant, r.threads), []).append(r)
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (variant, threads), rows in groups.items():
        rows.sort(key=lambda r: r.batch)
        label = variant + (f" ({threads}t)" if threads else "") + (" [no-op]" if rows[0].status == "no-op" else "")
        xs = [r.batch for r in rows]
        lat = [r.latency_s * 1e3 for r in rows]
        err = [[(r.latency_s - r.latency_ci[0]) * 1e3 for r in rows], [(r.latency_ci[1] - r.latency_s) * 1e3 for r in rows]]
        ax_lat.errorbar(xs, lat, yerr=err, marker="o", capsize=3, label=label)
        ax_thr.plot(xs, [r.throughput for r in rows], marker="o", label=label)
    for ax, ylabel in ((ax_lat, "latency per call (ms), median and 95% CI"), (ax_thr, "throughput (items/s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r.batch for r in result.rows}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_thr.legend(fontsize=8)
    fig.suptitle(f"{result.model}: variants on {result.device}")
    fig.tight_layout()
    return save_figure(fig, path)
