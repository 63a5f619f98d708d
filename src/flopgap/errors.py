"""Errors that the CLI turns into one line and an exit code, never a traceback."""

from __future__ import annotations

__all__ = ["FlopgapError", "UsageError"]


class FlopgapError(Exception):
    """A failure the user can act on; the CLI prints ``error: <message>`` and exits 1."""

    exit_code = 1


class UsageError(FlopgapError):
    """Bad input from the user (spec, shape, file, option); the CLI exits 2."""

    exit_code = 2
