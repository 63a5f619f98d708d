"""Short notebook representations of result objects: ``__repr__`` (one line of key
figures) and ``_repr_html_`` (a small table), both from the object's ``_summary()``.

A result class opts in with three lines in its body::

    __repr__ = summary_repr
    _repr_html_ = summary_html

    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        return "title", [("key", "value with its unit"), ...]

and a ``warnings`` property (list of sentences), which both show: the count in the
repr, the sentences first in the table. Defined in the class body, they are kept by
``@dataclass`` (which writes a ``__repr__`` only where the class defines none), so a
repr never dumps every sample or op record. At package level, beside ``_json``, because
the result classes live in stages left of ``report``.
"""

from __future__ import annotations

import html

__all__ = ["summary_repr", "summary_html"]

_REPR_ITEMS = 5  # key figures in the one-line repr; the HTML table has them all


def summary_repr(obj) -> str:
    title, rows = obj._summary()
    warnings = list(getattr(obj, "warnings", None) or [])
    figures = ", ".join(f"{k} {v}" for k, v in rows[:_REPR_ITEMS])
    return f"<{type(obj).__name__} {title}: {figures}; {len(warnings)} warning{'s' if len(warnings) != 1 else ''}>"


def summary_html(obj) -> str:
    title, rows = obj._summary()
    warnings = list(getattr(obj, "warnings", None) or [])
    e = html.escape
    out = [f"<table><caption style=\"text-align:left\"><b>{e(type(obj).__name__)}</b> {e(title)}</caption>"]
    for w in warnings:
        out.append(f'<tr><td colspan="2" style="color:#8a4b00">warning: {e(w)}</td></tr>')
    out += [f'<tr><th scope="row" style="text-align:left">{e(k)}</th><td>{e(str(v))}</td></tr>' for k, v in rows]
    out.append("</table>")
    return "".join(out)
