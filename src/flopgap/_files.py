"""Writing a file so that readers see the old content or the new, never a part.

Every file flopgap writes (JSON, CSV, HTML, plots, the machine-profile cache) goes
through :func:`write_atomic`: the bytes go to a temporary file with a unique name in the
same folder, are flushed to disk, and :func:`os.replace` puts it in place in one step.
Two processes writing the same path at once both succeed, and the last rename wins;
a process killed mid-write leaves at most a stray ``.NAME.*.tmp`` file, never a
truncated NAME.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flopgap.errors import UsageError

__all__ = ["write_atomic", "replace_atomically"]


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def replace_atomically(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` through a uniquely named temporary file
    in the same folder (flushed to disk, given the mode a new file gets, or the mode of
    the file it replaces) and one :func:`os.replace`; parent folders are created.
    Raises :class:`OSError` as ``open`` would; the temporary file never outlives a failure."""
    p = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, p.stat().st_mode & 0o7777 if p.exists() else _new_file_mode())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


def write_atomic(path: str | Path, data: str | bytes, *, what: str = "") -> Path:
    """:func:`replace_atomically` for a file the user asked for: a path that cannot be
    written (a folder, a missing permission, a full disk) is a one-line
    :class:`~flopgap.errors.UsageError` naming ``what`` (default: the path)."""
    p = Path(path)
    label = what or repr(str(p))
    if p.is_dir():
        raise UsageError(f"cannot write {label}: {str(p)!r} is a directory")
    try:
        return replace_atomically(p, data)
    except OSError as e:
        raise UsageError(f"cannot write {label}: {e.strerror or e}") from None
