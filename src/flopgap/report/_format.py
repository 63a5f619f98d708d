"""Number formatting shared by every table: SI prefixes, seconds, percentages."""

from __future__ import annotations

import math

__all__ = ["si", "fmt_seconds", "pct", "fmt_bytes"]


def si(value: float, unit: str = "", digits: int = 3) -> str:
    """``1.23 G``-style engineering notation (powers of 1000)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return f"0 {unit}".strip()
    prefixes = ["", "k", "M", "G", "T", "P"]
    exp = min(max(int(math.floor(math.log10(abs(value)) / 3)), 0), len(prefixes) - 1)
    scaled = value / 1000 ** exp
    text = f"{scaled:.{digits}g}"
    return f"{text} {prefixes[exp]}{unit}".strip()


def fmt_bytes(n: float) -> str:
    return si(n, "B")


def fmt_seconds(s: float | None) -> str:
    """Seconds as ns/us/ms/s with 3 significant digits."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    a = abs(s)
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if a >= scale or unit == "ns":
            return f"{s / scale:.3g} {unit}"
    return f"{s} s"


def pct(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.{digits}f}%"
