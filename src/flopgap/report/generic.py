"""Any command's result (its versioned ``to_dict()``) as report sections, for
``--html`` on every command and ``flopgap report`` of stored count/time/explain/variants
runs.

Layout: scalars of the top level and of each nested object become key/value tables;
lists of objects become tables (columns: their scalar fields, first ``max_rows`` rows);
long lists of numbers (timing samples) are summarised, never dumped.
"""

from __future__ import annotations

from typing import Any, Sequence

from flopgap.report.html import Plot, Para, Section, Table

__all__ = ["sections_from_result"]

_SKIP = {"samples", "warmup_samples", "dispatch_samples", "device_samples"}


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _fmt(v: Any) -> Any:
    """Floats to 4 significant digits (the JSON keeps full precision)."""
    return f"{v:.4g}" if isinstance(v, float) else v


def _kv_table(name: str, data: dict, caption: str) -> Table | None:
    rows = [[k, _fmt(v)] for k, v in data.items() if _scalar(v) and k not in _SKIP]
    rows += [[k, f"{len(v)} values"] for k, v in data.items() if k in _SKIP and isinstance(v, list)]
    rows += [[k, ", ".join(str(_fmt(x)) for x in v)] for k, v in data.items()
             if isinstance(v, list) and v and all(_scalar(x) for x in v) and k not in _SKIP and len(v) <= 20]
    return Table(["field", "value"], rows, caption, name) if rows else None


def _list_table(name: str, items: list, caption: str, max_rows: int) -> Table | None:
    dicts = [x for x in items if isinstance(x, dict)]
    if not dicts:
        return None
    columns: list[str] = []
    for d in dicts[:max_rows]:
        for k, v in d.items():
            if k not in columns and (_scalar(v) or (isinstance(v, list) and all(_scalar(x) for x in v))):
                columns.append(k)
    rows = []
    for d in dicts[:max_rows]:
        rows.append([", ".join(map(str, d[c])) if isinstance(d.get(c), list) else _fmt(d.get(c)) for c in columns])
    more = f" (first {max_rows} of {len(dicts)})" if len(dicts) > max_rows else ""
    return Table(columns, rows, caption + more, name)


def sections_from_result(title: str, data: dict, *, figures: Sequence[tuple[bytes, str]] = (),
                         max_rows: int = 200) -> list[Section]:
    """Report sections for one result dict (schema, totals, tables of rows, findings)."""
    blocks: list = []
    if "schema" in data:
        blocks.append(Para(f"result schema {data['schema']}", "note"))
    top = _kv_table("summary", data, "summary")
    if top:
        blocks.append(top)
    sections = [Section(title, blocks)]
    for key, value in data.items():
        if key in _SKIP or _scalar(value):
            continue
        if isinstance(value, dict):
            nested = [k for k, v in value.items() if isinstance(v, (dict, list)) and v and not _scalar(v)]
            table = _kv_table(key, value, key)
            sub_blocks = [table] if table else []
            for k in nested:
                v = value[k]
                t = _list_table(f"{key}_{k}", v, f"{key}: {k}", max_rows) if isinstance(v, list) else \
                    _kv_table(f"{key}_{k}", v, f"{key}: {k}")
                if t:
                    sub_blocks.append(t)
            if sub_blocks:
                sections.append(Section(key, sub_blocks))
        elif isinstance(value, list) and value:
            if all(isinstance(v, dict) and "text" in v for v in value):  # findings
                sections.append(Section(key, [Para(str(v["text"])) for v in value]))
            elif all(isinstance(v, str) for v in value):
                sections.append(Section(key, [Para(v) for v in value]))
            else:
                t = _list_table(key, value, key, max_rows)
                if t:
                    sections.append(Section(key, [t]))
    if figures:
        sections.append(Section("plots", [Plot(png, caption) for png, caption in figures]))
    return sections
