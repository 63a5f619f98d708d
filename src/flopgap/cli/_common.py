"""Options and helpers shared by the command modules (model loading, output files)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from flopgap.errors import UsageError

__all__ = ["ModelArg", "InputOpt", "BatchOpt", "KwargsOpt", "JsonOpt", "CsvOpt", "HtmlOpt", "DbOpt", "ThreadsOpt",
           "PrecisionOpt", "console",
           "err_console", "load", "write_json", "write_text", "non_negative", "keep", "set_wide", "write_tables"]

ModelArg = Annotated[str, typer.Argument(help="model spec: torchvision:NAME, seed:NAME, zoo:NAME, pkg.mod:callable, or a .pt2/.pt file")]
InputOpt = Annotated[Optional[list[str]], typer.Option("--input", "-i", help="input spec, repeat per positional input: 1x3x224x224 or 1x128:int64[0,30522)")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch", "-b", help="override the leading (batch) dimension of every input")]
KwargsOpt = Annotated[Optional[str], typer.Option("--kwargs", help="JSON object passed to the model builder, e.g. '{\"num_classes\": 10}'")]
JsonOpt = Annotated[Optional[str], typer.Option("--json", help="write the versioned JSON result to this path ('-' for stdout)")]
CsvOpt = Annotated[Optional[str], typer.Option("--csv", help="write every table of the result into this folder, one NAME.csv each (full precision, every row); the same on every command")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="torch intra-op threads while measuring, and the machine profile measured for that count (default: what torch uses now; stated with every latency)")]
PrecisionOpt = Annotated[float, typer.Option("--precision", help="stop timing once the 95% CI of the median is within this fraction of it (default 0.02 = 2%, the same for every command)")]

# wide tables when piped (rich defaults to 80 columns off a terminal); COLUMNS wins
def _columns() -> int | None:
    try:
        return int(os.environ.get("COLUMNS", "0")) or None
    except ValueError:  # COLUMNS set to something that is not a number: ignore it
        return None


_PIPED_WIDTH = 100  # tables fit 100 columns off a terminal (CI logs, files, pull requests)
_WIDE = 400         # --wide: wider than any table flopgap prints, so no column is left out
_WIDTH = _columns() or (None if sys.stdout.isatty() else _PIPED_WIDTH)
console = Console(highlight=False, width=_WIDTH)


def set_wide() -> None:
    """``--wide``: every column of every table (the console as wide as the widest one)."""
    console.width = _WIDE
err_console = Console(stderr=True, highlight=False)


def load(spec: str, inputs: list[str] | None, batch: int | None, kwargs: str | None, *, meta: bool = False):
    """(LoadedModel, input specs, input tensors) from command-line values."""
    from flopgap.models import load_model, make_inputs, parse_kwargs, resolve_inputs

    loaded = load_model(spec, parse_kwargs(kwargs), meta=meta)
    specs = resolve_inputs(loaded, inputs, batch)
    return loaded, specs, make_inputs(specs)


def write_text(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        return
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    except OSError as e:
        raise UsageError(f"cannot write {path!r}: {e.strerror}") from None
    err_console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)  # a path never wraps


def write_json(path: str, data) -> None:
    """Strict JSON (NaN -> null) to ``path`` or stdout (``-``); "wrote" goes to stderr."""
    from flopgap._json import dumps

    write_text(path, dumps(data) + "\n")


def non_negative(name: str, value: int) -> int:
    if value < 0:
        raise UsageError(f"{name} must be >= 0, got {value}")
    return value


HtmlOpt = Annotated[Optional[str], typer.Option("--html", help="also write a self-contained HTML report of this result to this path")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="also save this result in a results store (SQLAlchemy URL or SQLite path, e.g. flopgap.db); list with 'flopgap runs --db URL'")]


def keep(kind: str, model: str, payload: dict, *, html: str | None, db: str | None, config: dict,
         csv: str | None = None) -> None:
    """``--html``, ``--csv`` and ``--db`` for any command: the command's report page, its
    tables as CSV files in a folder, and/or one stored run (``flopgap report RUN`` rebuilds
    the same page from it, plots included)."""
    if html or csv:
        from flopgap.report.command_view import command_sections

        sections = command_sections(kind, payload, plots=bool(html))
        if html:
            from flopgap.report.html import write_html

            path = write_html(html, f"flopgap {kind}: {model}", sections,
                              machine=_machine_of(payload))
            err_console.print(f"wrote report {path}", highlight=False, markup=False, soft_wrap=True)
        if csv:
            write_tables(csv, sections)
    if db:
        from flopgap.store import open_store
        from flopgap.timing import environment

        store = open_store(db)
        run_id = store.start_run(kind, config, environment(), name=model)
        store.put(run_id, model, kind, payload)
        store.finish_run(run_id)
        err_console.print(f"stored as run {run_id} ({kind}) in {store.url}", highlight=False, markup=False)


def _machine_of(payload: dict) -> dict | None:
    """The machine metadata a result carries (a comparison's is its first side's)."""
    for d in (payload, payload.get("a") or {}, (payload.get("results") or [{}])[0]):
        if isinstance(d, dict) and d.get("environment"):
            return d["environment"]
    return None


def write_tables(folder: str, sections) -> None:
    """``--csv DIR``: every table of the result as ``DIR/NAME.csv`` (the same on every command)."""
    from flopgap.report.html import write_csv

    for p in write_csv(folder, sections):
        err_console.print(f"wrote {p}", highlight=False, markup=False, soft_wrap=True)
