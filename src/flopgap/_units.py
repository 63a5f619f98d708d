"""Numbers with units, for every stage's text: SI prefixes, seconds, percentages, and the
one way a latency is printed (median, CI, samples, threads). At package level so that
result objects left of ``report`` (their ``__repr__``) and the report stage share it."""

from __future__ import annotations

import math

__all__ = ["si", "fmt_seconds", "pct", "fmt_bytes", "fmt_ci", "fmt_latency"]


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


def fmt_ci(low: float | None, high: float | None) -> str:
    """``[41.7 us, 41.8 us]`` or ``[CI unknown]`` (fewer than 6 samples)."""
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return "[CI unknown]"
    return f"[{fmt_seconds(low)}, {fmt_seconds(high)}]"


def fmt_latency(median: float | None, low: float | None, high: float | None, n: int | None,
                threads: int | None, device: str | None = None, *, disturbed: bool = False,
                precision_met: bool | None = None) -> str:
    """Every latency flopgap prints: ``41.8 us [41.7 us, 41.8 us] n=2095, 2 threads, cpu``,
    with ``DISTURBED`` / ``precision not met`` in front when they apply."""
    flags = []
    if disturbed:
        flags.append("DISTURBED")
    if precision_met is False:
        flags.append("precision not met")
    where = [f"n={n}" if n is not None else "n=?",
             f"{threads} thread{'s' if threads != 1 else ''}" if threads is not None else "threads ?"]
    if device:
        where.append(device)
    text = f"{fmt_seconds(median)} {fmt_ci(low, high)} {', '.join(where)}"
    return f"{' '.join(f'({f})' for f in flags)} {text}".strip() if flags else text
