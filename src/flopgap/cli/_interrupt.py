"""Ctrl-C on the command line: one line that says what was kept and how to go on.

typer turns a ``KeyboardInterrupt`` raised in a command into a silent exit 130, so
every command is wrapped (:func:`interruptible`, applied by ``cli._app``) to turn it
into :class:`~flopgap.errors.Interrupted` first; ``cli.main`` prints its message.

What the message says comes from where the interrupt hit:

- a stored run (a study): the exception is a :class:`~flopgap.errors.RunInterrupted`
  carrying the run id, the store and how many measurements it keeps; the line gives
  the command that resumes it;
- anything else: the phase it hit (:func:`phase`, e.g. loading the model) and the
  files already written (:func:`wrote`).

Writing a result is never cut in half: :func:`deferred_sigint` holds a Ctrl-C that
arrives while a file or a stored run is written and raises it once the write is done.
"""

from __future__ import annotations

import contextlib
import functools
import shlex
import signal
import threading

from flopgap.errors import Interrupted, RunInterrupted

__all__ = ["interruptible", "phase", "wrote", "deferred_sigint", "set_argv", "message", "reset"]

_state: dict = {"phase": "", "wrote": [], "argv": []}


def reset() -> None:
    """Forget the phase and written files (``cli.main`` calls it once per command line)."""
    _state.clear()
    _state.update(phase="", wrote=[], argv=[])


def set_argv(args: list[str]) -> None:
    _state["argv"] = list(args)


@contextlib.contextmanager
def phase(text: str):
    """Name what the command is doing (``loading the model``) for an interrupt's message."""
    before = _state["phase"]
    _state["phase"] = text
    try:
        yield
    except KeyboardInterrupt:
        _state.setdefault("hit", text)  # the innermost phase the interrupt went through
        raise
    finally:
        _state["phase"] = before


def wrote(what: str) -> None:
    """Record a file or stored run this command has written completely."""
    _state["wrote"].append(what)


def _resume_command() -> str:
    args = list(_state["argv"])
    if "--resume" not in args:
        args.append("--resume")
    return "flopgap " + shlex.join(args)


def message(exc: BaseException | None = None) -> str:
    """The one line printed after ``error: `` for a Ctrl-C."""
    if isinstance(exc, RunInterrupted):
        return (f"interrupted (Ctrl-C): run {exc.run_id} in {exc.url} keeps its {exc.stored} stored "
                f"measurement(s) and is marked interrupted; resume with: {_resume_command()}")
    hit = _state.get("hit") or _state["phase"]
    where = f" while {hit}" if hit else ""
    if _state["wrote"]:
        return f"interrupted (Ctrl-C){where}; kept what was already written: {', '.join(_state['wrote'])}"
    return f"interrupted (Ctrl-C){where}; nothing was measured to keep: run the same command again"


def interruptible(fn):
    """``fn`` with ``KeyboardInterrupt`` turned into :class:`Interrupted` (exit 130)
    before typer can swallow it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as e:
            raise Interrupted(message(e)) from None

    return wrapper


@contextlib.contextmanager
def deferred_sigint():
    """Hold SIGINT while the block runs (a result being written), then raise it.

    Outside the main thread, or where SIGINT is ignored, the block runs as it is.
    """
    previous = None
    received: list[int] = []
    if threading.current_thread() is threading.main_thread():
        try:
            previous = signal.getsignal(signal.SIGINT)
            if previous in (signal.SIG_IGN, None):
                previous = None
            else:
                signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
        except (ValueError, OSError):  # no signal support here
            previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
            if received:
                raise KeyboardInterrupt
