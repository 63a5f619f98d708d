"""Errors that the CLI turns into one line and an exit code, never a traceback."""

from __future__ import annotations

__all__ = ["FlopgapError", "UsageError", "one_line"]


class FlopgapError(Exception):
    """A failure the user can act on; the CLI prints ``error: <message>`` and exits 1."""

    exit_code = 1


class UsageError(FlopgapError):
    """Bad input from the user (spec, shape, file, option); the CLI exits 2."""

    exit_code = 2


def one_line(e: BaseException) -> str:
    """``Type: first line of the message``: how every caught error is shown to users."""
    text = f"{type(e).__name__}: {e}".strip()
    return text.splitlines()[0] if text else type(e).__name__
