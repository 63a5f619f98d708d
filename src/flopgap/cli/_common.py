"""Options and helpers shared by the command modules (model loading, output files)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from flopgap._terminal import printable
from flopgap.cli._interrupt import deferred_sigint, phase, wrote
from flopgap.errors import UsageError

__all__ = ["ModelArg", "InputOpt", "BatchOpt", "KwargsOpt", "JsonOpt", "CsvOpt", "HtmlOpt", "DbOpt", "ThreadsOpt",
           "PrecisionOpt", "console", "err_console", "load", "write_json", "write_text", "non_negative", "keep",
           "open_db", "say", "seconds"]

ModelArg = Annotated[str, typer.Argument(help="model spec: torchvision:NAME, seed:NAME, zoo:NAME, pkg.mod:callable, or a .pt2/.pt file")]
InputOpt = Annotated[Optional[list[str]], typer.Option("--input", "-i", help="input spec, repeat per positional input: 1x3x224x224 or 1x128:int64[0,30522)")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch", "-b", help="override the leading (batch) dimension of every input")]
KwargsOpt = Annotated[Optional[str], typer.Option("--kwargs", help="JSON object passed to the model builder, e.g. '{\"num_classes\": 10}'")]
JsonOpt = Annotated[Optional[str], typer.Option("--json", help="write the versioned JSON result to this path ('-' for stdout)")]
CsvOpt = Annotated[Optional[str], typer.Option("--csv", help="write a CSV table to this path ('-' for stdout)")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="torch intra-op threads while measuring, and the machine profile measured for that count (default: what torch uses now; stated with every latency)")]
PrecisionOpt = Annotated[float, typer.Option("--precision", help="stop timing once the 95% CI of the median is within this fraction of it (default 0.02 = 2%, the same for every command)")]

# wide tables when piped (rich defaults to 80 columns off a terminal); COLUMNS wins
def _columns() -> int | None:
    try:
        return int(os.environ.get("COLUMNS", "0")) or None
    except ValueError:  # COLUMNS set to something that is not a number: ignore it
        return None


_WIDTH = _columns() or (None if sys.stdout.isatty() else 140)
console = Console(highlight=False, width=_WIDTH)
err_console = Console(stderr=True, highlight=False)


def say(text: str) -> None:
    """A status line on stderr with user-controlled text in it (never read as markup)."""
    err_console.print(printable(text), markup=False, highlight=False, soft_wrap=True)


def load(spec: str, inputs: list[str] | None, batch: int | None, kwargs: str | None, *, meta: bool = False):
    """(LoadedModel, input specs, input tensors) from command-line values.

    The input specs are checked before the model is built (a bad ``--input`` costs no
    model build); with ``meta`` the inputs are meta tensors (no memory).
    """
    from flopgap.models import load_model, make_inputs, parse_input_spec, parse_kwargs, resolve_inputs

    for text in inputs or ():
        parse_input_spec(text)
    with phase(f"loading the model {spec!r}"):
        loaded = load_model(spec, parse_kwargs(kwargs), meta=meta)
    specs = resolve_inputs(loaded, inputs, batch)
    with phase("building the inputs"):
        return loaded, specs, make_inputs(specs, meta=meta)


def write_text(path: str, text: str) -> None:
    """``text`` to ``path`` (atomically, a Ctrl-C held until it is written) or stdout (``-``).

    On stdout the data is written as it is (a pipe gets the exact names), except that a
    terminal gets control characters as escapes, like everything else flopgap prints."""
    from flopgap._files import write_atomic

    if path == "-":
        sys.stdout.write(printable(text, newlines=True) if sys.stdout.isatty() else text)
        return
    with deferred_sigint():
        write_atomic(path, text)
        wrote(repr(path))
    say(f"wrote {path}")


def write_json(path: str, data) -> None:
    """Strict JSON (NaN -> null) to ``path`` or stdout (``-``); "wrote" goes to stderr."""
    from flopgap._json import dumps

    write_text(path, dumps(data) + "\n")


def non_negative(name: str, value: int) -> int:
    if value < 0:
        raise UsageError(f"{name} must be >= 0, got {value}")
    return value


def seconds(name: str, value: float) -> float:
    """A time budget: a finite positive number of seconds (``inf`` or ``nan`` refused)."""
    import math

    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{name} must be a positive, finite number of seconds, got {value}")
    return value


HtmlOpt = Annotated[Optional[str], typer.Option("--html", help="also write a self-contained HTML report of this result to this path")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="also save this result in a results store (SQLAlchemy URL or SQLite path, e.g. flopgap.db); list with 'flopgap runs --db URL'")]


def open_db(db):
    """The results store ``--db`` names, opened (and checked writable) before any
    measuring, so that a bad store costs no minutes of timing; ``None`` without ``--db``."""
    if db is None or not isinstance(db, str):
        return db
    from flopgap.store import open_store

    return open_store(db, writable=True)


def keep(kind: str, model: str, payload: dict, *, html: str | None, db, config: dict, interrupted: bool,
         figures=()) -> None:
    """``--html`` and ``--db`` for any command: a report of ``payload`` and/or one stored run.

    ``db`` is a URL or a store from :func:`open_db`. The stored run's status is
    ``interrupted`` when the result was cut short by Ctrl-C (``interrupted``, what the
    payload says too), else ``finished``. Each output is written whole: a Ctrl-C that
    arrives meanwhile is held until it is done.
    """
    if html:
        from flopgap.report.generic import sections_from_result
        from flopgap.report.html import write_html

        with deferred_sigint():
            path = write_html(html, f"flopgap {kind}: {model}", sections_from_result(f"{kind}: {model}", payload,
                                                                                       figures=figures),
                              machine=payload.get("environment") or None)
            wrote(repr(str(path)))
        say(f"wrote report {path}")
    if db:
        from flopgap.timing import environment

        store = open_db(db)
        status = "interrupted" if interrupted else "finished"
        with deferred_sigint():
            run_id = store.start_run(kind, config, environment())
            store.put(run_id, model, kind, payload)
            store.set_status(run_id, status)
            wrote(f"run {run_id} in {store.url}")
        say(f"stored as run {run_id} ({kind}, {status}) in {store.url}")
