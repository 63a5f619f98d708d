"""Where flopgap keeps what it measured about this machine, and how a file is replaced.

Every cache lives in ``$FLOPGAP_CACHE_DIR``, or ``~/.cache/flopgap`` when that is unset;
nothing is read from the working directory. Files are replaced atomically through a
temporary file with a name no other process uses, so concurrent writers never see (or
leave) half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "atomic_write_text"]


def cache_dir() -> Path:
    """``$FLOPGAP_CACHE_DIR`` if set, else ``~/.cache/flopgap``."""
    env = os.environ.get("FLOPGAP_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "flopgap"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` all at once (a unique temporary file, then ``os.replace``:
    :func:`flopgap._files.replace_atomically`). Raises :class:`OSError` as ``open`` would;
    the temporary file never outlives a failure."""
    from flopgap._files import replace_atomically

    replace_atomically(path, text)
