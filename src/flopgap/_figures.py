"""Writing a matplotlib figure to a path: the one place a plot's file errors become a
clear usage error (shared by the explain and variants plots)."""

from __future__ import annotations

import io
from pathlib import Path

from flopgap._files import write_atomic

__all__ = ["save_figure"]


def save_figure(fig, path: Path) -> Path:
    """Save ``fig`` to ``path`` (parents created, written atomically: see
    :mod:`flopgap._files`) and close it; an unwritable path is a one-line
    :class:`~flopgap.errors.UsageError`. The format follows the suffix (.png, .svg, .pdf)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return write_atomic(path, buf.getvalue())
