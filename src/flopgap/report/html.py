"""Self-contained HTML reports: one file, inline CSS, plots embedded as base64 PNG.

A report is a title and a list of :class:`Section`; a section holds blocks, each a
:class:`Para` (text), :class:`Table` or :class:`Plot`. Every string that reaches the
page (model names included) is HTML-escaped here, once, so callers pass plain text.
Every table carries a CSV copy as a ``data:`` link, and :func:`table_csv` /
:func:`write_csv` export tables to files. Opening the file needs no network.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence, Union

from flopgap._files import write_atomic
from flopgap.errors import UsageError

__all__ = ["Para", "Table", "Plot", "Details", "Section", "render_html", "write_html", "table_csv", "write_csv",
           "csv_cell", "main_table"]


@dataclass
class Para:
    """A paragraph of plain text (escaped); ``kind`` ``note`` or ``warn`` styles it."""

    text: str
    kind: str = ""


@dataclass
class Table:
    """A table of plain values; ``name`` is its CSV file stem. ``row_headers``: the first
    cell of each row is that row's header (``th scope="row"``: key/value tables).
    ``csv_columns``/``csv_rows``: what the CSV copy holds when it is more than the page
    shows (every op, full precision)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""
    name: str = "table"
    row_headers: bool = False
    csv_columns: Sequence[str] | None = None
    csv_rows: Sequence[Sequence[Any]] | None = None
    csv_link: bool = True  # False: the rows are already in another table's CSV copy (a collapsed remainder)
    optional: Sequence[int] = ()  # columns a narrow terminal leaves out, first listed first (HTML and CSV keep all)


@dataclass
class Plot:
    """A PNG image (bytes) with a caption."""

    png: bytes
    caption: str = ""


@dataclass
class Details:
    """Blocks collapsed under a one-line summary (``<details>``): the rest of a top-N table."""

    summary: str
    blocks: list = field(default_factory=list)


Block = Union[Para, Table, Plot, Details]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#1b1b1b;padding:0 1em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #d0d0d0;padding:.25em .6em;vertical-align:top}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
details{margin:.4em 0 1.2em}summary{cursor:pointer;color:#333}
th[scope=row]{background:#fafafa;font-weight:normal}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
.note{color:#555}.warn{color:#8a4b00;background:#fff6e5;padding:.3em .6em}
.csv{font-size:.8em;font-weight:normal;margin-left:.8em}
.meta{font-size:.85em;color:#555}
td.holds{background:#e7f6e7}td.does-not-hold{background:#fde8e8}td.inconclusive{background:#f4f4f4}
td.partly{background:#fff6e0}
"""

_VERDICT_CLASS = {"holds": "holds", "does not hold": "does-not-hold", "partly holds": "partly"}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _is_num(value: Any) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    return isinstance(value, str) and bool(re.fullmatch(r"[-+]?[\d.,]+(e[-+]?\d+)?\s*[a-zA-Zµ%x/]*", value.strip()))


# a cell a spreadsheet would run as a formula: =, @, a tab or carriage return first, or a
# sign that does not start a number (-1.5% stays data, +cmd|... does not)
_FORMULA = re.compile(r"^(?:[=@\t\r]|[+-](?![\d.]))")


def csv_cell(value: Any) -> Any:
    """A value as written to CSV: ``None`` empty, and text that a spreadsheet would read
    as a formula (a module named ``=HYPERLINK(...)``) prefixed with ``'`` so it stays text."""
    if value is None:
        return ""
    if isinstance(value, str) and _FORMULA.match(value):
        return "'" + value
    return value


def table_csv(table: Table) -> str:
    """The table as CSV text (header row first): its ``csv_rows`` when it has them; see
    :func:`csv_cell`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(c) for c in (table.csv_columns if table.csv_rows is not None and table.csv_columns
                                      else table.columns)])
    for row in (table.csv_rows if table.csv_rows is not None else table.rows):
        w.writerow([csv_cell(v) for v in row])
    return buf.getvalue()


def _cell(value: Any) -> str:
    text = _e(value)
    cls = []
    if _is_num(value):
        cls.append("num")
    if isinstance(value, str):
        low = value.lower()
        for key, c in _VERDICT_CLASS.items():
            if low == key:
                cls.append(c)
        if low.startswith("inconclusive"):
            cls.append("inconclusive")
    return f"<td class=\"{' '.join(cls)}\">{text}</td>" if cls else f"<td>{text}</td>"


def _table(table: Table) -> str:
    link = ""
    if table.csv_link:
        data = base64.b64encode(table_csv(table).encode()).decode()
        fname = _e(re.sub(r"[^\w.-]+", "_", table.name) + ".csv")
        link = f'<a class="csv" download="{fname}" href="data:text/csv;base64,{data}">CSV</a>'
    out = ["<table>", f"<caption>{_e(table.caption)}{link}</caption>", "<thead><tr>"]
    out += [f'<th scope="col">{_e(c)}</th>' for c in table.columns]
    out.append("</tr></thead><tbody>")
    for row in table.rows:
        if table.row_headers and row:
            out.append(f'<tr><th scope="row">{_e(row[0])}</th>' + "".join(_cell(v) for v in row[1:]) + "</tr>")
        else:
            out.append("<tr>" + "".join(_cell(v) for v in row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _block(block: Block) -> str:
    if isinstance(block, Para):
        cls = f' class="{_e(block.kind)}"' if block.kind else ""
        return f"<p{cls}>{_e(block.text)}</p>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Details):
        inner = "\n".join(_block(b) for b in block.blocks)
        return f"<details><summary>{_e(block.summary)}</summary>\n{inner}\n</details>"
    if isinstance(block, Plot):
        data = base64.b64encode(block.png).decode()
        return (f'<figure><img alt="{_e(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_e(block.caption)}</figcaption></figure>")
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_html(title: str, sections: Sequence[Section], *, machine: dict | None = None,
                subtitle: str = "") -> str:
    """The whole report as one HTML string (no external resources)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="note">{_e(subtitle)}</p>')
    parts.append(f'<p class="meta">written by flopgap, {_e(stamp)}</p>')
    for section in sections:
        parts.append(f"<section><h2>{_e(section.title)}</h2>")
        parts += [_block(b) for b in section.blocks]
        parts.append("</section>")
    if machine:
        parts.append("<section><h2>Machine</h2>")
        parts.append(_table(Table(["key", "value"], _flatten(machine), "machine metadata of the run", "machine",
                                  row_headers=True)))
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flatten(v, name + ".")
        else:
            out.append((name, v if isinstance(v, (int, float, str)) or v is None else str(v)))
    return out


def write_html(path: str | Path, title: str, sections: Sequence[Section], *, machine: dict | None = None,
               subtitle: str = "") -> Path:
    """Write the report to ``path`` (parent folders created, atomically) and return the path."""
    return write_atomic(path, render_html(title, sections, machine=machine, subtitle=subtitle))


def _tables(blocks) -> list:
    out = []
    for b in blocks:
        out += _tables(b.blocks) if isinstance(b, Details) else [b]
    return out


def main_table(sections: Sequence[Section], name: str | None = None) -> Table:
    """The table called ``name`` (a command's per-op or per-row table), else the one with
    the most rows in its CSV copy."""
    tables = [t for s in sections for t in _tables(s.blocks) if isinstance(t, Table) and t.csv_link]
    if not tables:
        raise UsageError("this result has no table to write as CSV")
    named = [t for t in tables if t.name == name]
    return named[0] if named else max(tables, key=lambda t: len(t.csv_rows if t.csv_rows is not None else t.rows))


def write_csv(folder: str | Path, sections: Sequence[Section]) -> list[Path]:
    """Write every table of the report as ``folder/NAME.csv`` (its full CSV copy; a
    collapsed remainder is part of its top table's file); returns the paths."""
    d = Path(folder)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {str(d)!r}: {e.strerror}") from None
    paths, seen = [], set()
    for section in sections:
        for block in _tables(section.blocks):
            if isinstance(block, Table) and block.csv_link:  # without a link: its rows are in another table's CSV
                stem = re.sub(r"[^\w.-]+", "_", block.name) or "table"
                n, name = 1, stem
                while name in seen:
                    n += 1
                    name = f"{stem}_{n}"
                seen.add(name)
                paths.append(write_atomic(d / f"{name}.csv", table_csv(block)))
    return paths
