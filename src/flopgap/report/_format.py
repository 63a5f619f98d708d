"""Number formatting shared by every table: SI prefixes, seconds, percentages."""

from __future__ import annotations

from flopgap._units import fmt_bytes, fmt_ci, fmt_latency, fmt_seconds, pct, si

__all__ = ["si", "fmt_seconds", "pct", "fmt_bytes", "fmt_ci", "fmt_latency", "fmt_measurement"]


def fmt_measurement(m, *, device: bool = True) -> str:
    """:func:`fmt_latency` of a :class:`flopgap.timing.Measurement` or its ``to_dict()``."""
    if isinstance(m, dict):
        spec = m.get("spec") or {}
        return fmt_latency(m.get("median"), m.get("ci_low"), m.get("ci_high"), m.get("n_samples"),
                           spec.get("threads"), spec.get("device") if device else None,
                           disturbed=bool(m.get("disturbed")), precision_met=m.get("precision_met"))
    return fmt_latency(m.median, m.ci_low, m.ci_high, m.n_samples, m.spec.threads,
                       m.spec.device if device else None, disturbed=m.disturbed, precision_met=m.precision_met)
