"""Text that came from outside flopgap, made safe to show on a terminal.

Model specs, module and class names, paths, input specs, error messages and anything
read back from a file or a results store can hold characters a terminal acts on: ANSI
escape sequences (colours, cursor moves, hyperlinks, window titles), carriage returns
and backspaces that overwrite what was printed, bidirectional overrides that reorder
it, and, through rich, markup such as ``[bold]`` or ``[link=...]``. Every such string
goes through :func:`printable` (control characters shown as Python escapes, ``\\x1b``)
before it reaches ``print``, and through :func:`markup` (the same, then rich's markup
escaped) before it is put into a rich markup string or a table cell.
"""

from __future__ import annotations

import re

__all__ = ["printable", "markup"]

# C0 controls, DEL and C1 controls, plus the Unicode bidirectional marks, embeddings,
# overrides and isolates (a name could otherwise print reversed or reorder its line)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_NEWLINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, newlines: bool = False) -> str:
    """``str(text)`` with every control character shown as an escape (``\\x1b``,
    ``\\n``'s code ``\\x0a`` too unless ``newlines``), so the terminal shows it and
    never acts on it; everything else (any script, emoji) is kept."""
    pattern = _UNSAFE_KEEP_NEWLINES if newlines else _UNSAFE
    return pattern.sub(_escape, str(text))


def markup(text: object, *, newlines: bool = False) -> str:
    """:func:`printable`, then rich's markup escaped: safe inside a rich markup string
    or a table cell (``[bold]x[/bold]`` shows literally, ``[/]`` cannot fail)."""
    from rich.markup import escape

    return escape(printable(text, newlines=newlines))
