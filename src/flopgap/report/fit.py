"""Terminal tables that fit the console: 100 columns when output is piped, the terminal's
width otherwise, everything with ``flopgap --wide``.

A table is declared as columns and rows of plain strings. Columns marked *optional*
are left out, last first, while the table's natural width exceeds the console; the
caller prints :func:`left_out_note` so the reader knows they exist. Text columns
(names, shapes) fold onto several lines instead of being cut to "…"; numeric columns
never wrap, so a value keeps its unit on its line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from flopgap._terminal import printable

__all__ = ["Col", "fit_table", "left_out_note", "natural_width", "print_fit"]

@dataclass(frozen=True)
class Col:
    """A column: header, alignment, whether it is text that may fold, and whether it may
    be left out on a narrow console (``optional``: higher is left out first)."""

    header: str
    text: bool = False
    optional: int = 0
    shrink: bool = True  # False: a text column that keeps its width (short names: types); others fold first


def _build(cols: Sequence[Col], rows: Sequence[Sequence[str]], keep: Sequence[int], title: str,
           table_kwargs: dict) -> Table:
    table = Table(title=Text(title) if title else None, title_justify="left", **table_kwargs)
    for i in keep:
        c = cols[i]
        if c.text:  # a column that must keep its width does not wrap: rich collapses only wrapping ones
            table.add_column(Text(c.header), justify="left", overflow="fold", no_wrap=not c.shrink)
        else:
            table.add_column(Text(c.header), justify="right", no_wrap=True)
    for r in rows:
        table.add_row(*[r[i] if isinstance(r[i], Text) else Text(printable(r[i])) for i in keep])
    return table


def natural_width(console: Console, table: Table) -> int:
    """The table's width with no limit (``Console.measure`` clamps to the console's width)."""
    return console.measure(table, options=console.options.update_width(10**4)).maximum


def fit_table(cols: Sequence[Col], rows: Sequence[Sequence[str]], console: Console, *, title: str = "",
              **table_kwargs) -> tuple[Table, list[str]]:
    """(rich table, headers left out) for ``console``'s width. Cells are plain text
    (never markup; control characters shown as escapes); ``table_kwargs`` go to :class:`rich.table.Table`. The natural width
    is rich's own measurement of the table (``Console.measure``)."""
    keep = list(range(len(cols)))
    dropped: list[str] = []
    table = _build(cols, rows, keep, title, table_kwargs)
    for i in sorted((i for i, c in enumerate(cols) if c.optional), key=lambda i: (-cols[i].optional, -i)):
        if natural_width(console, table) <= console.width:
            break
        keep.remove(i)
        dropped.append(cols[i].header)
        table = _build(cols, rows, keep, title, table_kwargs)
    return table, dropped


def left_out_note(dropped: Sequence[str]) -> str:
    """One line naming the columns a narrow console left out."""
    return f"(not shown at this width: {', '.join(dropped)}; flopgap --wide shows every column)" if dropped else ""


def print_fit(console: Console, cols: Sequence[Col], rows: Sequence[Sequence[str]], title: str, **table_kwargs) -> None:
    """Print :func:`fit_table`'s table, and under it which columns were left out."""
    table, dropped = fit_table(cols, rows, console, title=title, **table_kwargs)
    console.print(table)
    if dropped:
        console.print(Text(left_out_note(dropped), style="dim"))
