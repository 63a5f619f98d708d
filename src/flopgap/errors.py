"""Errors that the CLI turns into one line and an exit code, never a traceback."""

from __future__ import annotations

__all__ = ["FlopgapError", "UsageError", "Interrupted", "RunInterrupted", "one_line"]


class FlopgapError(Exception):
    """A failure the user can act on; the CLI prints ``error: <message>`` and exits 1."""

    exit_code = 1


class UsageError(FlopgapError):
    """Bad input from the user (spec, shape, file, option); the CLI exits 2."""

    exit_code = 2


class Interrupted(FlopgapError):
    """Ctrl-C, with what was kept and how to go on; the CLI exits 130 (128 + SIGINT)."""

    exit_code = 130


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a stored run (a study): a ``KeyboardInterrupt`` that also says which
    run in which store keeps how many measurements, so the message can say how to resume."""

    def __init__(self, run_id: int, url: str, stored: int):
        super().__init__(f"run {run_id} in {url} interrupted with {stored} stored measurement(s)")
        self.run_id, self.url, self.stored = run_id, url, stored


def one_line(e: BaseException) -> str:
    """``Type: first line of the message``: how every caught error is shown to users."""
    text = f"{type(e).__name__}: {e}".strip()
    return text.splitlines()[0] if text else type(e).__name__
