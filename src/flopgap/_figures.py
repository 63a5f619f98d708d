"""Writing a matplotlib figure to a path: the one place a plot's file errors become a
clear usage error (shared by the explain and variants plots)."""

from __future__ import annotations

from pathlib import Path

from flopgap.errors import UsageError

__all__ = ["save_figure"]


def save_figure(fig, path: Path) -> Path:
    """Save ``fig`` to ``path`` (parents created) and close it; an unwritable path is a
    one-line :class:`UsageError`."""
    import matplotlib.pyplot as plt

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    except OSError as e:
        raise UsageError(f"cannot write {str(path)!r}: {e.strerror}") from None
    finally:
        plt.close(fig)
    return path
