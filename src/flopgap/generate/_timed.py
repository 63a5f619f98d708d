"""Timing the two phases with the rigorous timer (one place calls it).

- Prefill (time to first token): one call = a fresh cache + one forward pass over the
  prompt, so every call does the same work from an empty cache. The first token is
  the argmax of the last position's logits: one more op, counted in the pass.
- Decode (ms per output token): one call = reset the cache to ``L`` tokens + one step.
  Resetting is a few attribute writes per layer (a refill of a small counter tensor per
  layer for a ``StaticCache``); it is timed on its own with the same timer and stated
  beside the step, so that the step's time is read knowing what it includes.

Tokens/s: ``B*P / prefill`` for prefill, ``B / step`` for decode; their CIs are the
timing CI carried through (a monotone function of the median keeps its order-statistic
interval).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PhaseTiming", "time_call", "phase_timing"]


def time_call(fn, *, name: str, options: dict, clock=None):
    """``flopgap.timing.measure`` of ``fn()`` with ``options`` (the fields of
    :class:`flopgap.timing.TimerOptions`: threads, precision, max_time, device): the one
    call site of the timer in this stage."""
    from flopgap.timing import TimerOptions, measure

    return measure(fn, (), TimerOptions(**options), name=name, clock=clock)


@dataclass(frozen=True)
class PhaseTiming:
    """A timed phase call: seconds per call with its CI, and what it means per token."""

    median_s: float
    ci_low_s: float
    ci_high_s: float
    n_samples: int
    calls: int
    threads: int
    device: str
    precision_met: bool
    tokens: int  # tokens processed per call (B*P or B)
    warnings: list[str] = field(default_factory=list)
    reset_s: float | None = None  # decode: the cache reset included in each call
    disturbed: bool = False  # the timer's sentinel saw the machine disturbed

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.median_s if self.median_s > 0 else float("nan")

    @property
    def tokens_per_s_ci(self) -> tuple[float, float]:
        lo = self.tokens / self.ci_high_s if self.ci_high_s > 0 else float("nan")
        hi = self.tokens / self.ci_low_s if self.ci_low_s > 0 else float("nan")
        return lo, hi

    @property
    def trustworthy(self) -> bool:
        """Precise enough and with no warning from the timer: what a verdict may rest on."""
        return self.precision_met and not self.warnings and not self.disturbed

    def to_dict(self) -> dict:
        lo, hi = self.tokens_per_s_ci
        return {"median_s": self.median_s, "ci_low_s": self.ci_low_s, "ci_high_s": self.ci_high_s,
                "n_samples": self.n_samples, "calls": self.calls, "threads": self.threads, "device": self.device,
                "precision_met": self.precision_met, "warnings": list(self.warnings), "disturbed": self.disturbed,
                "tokens": self.tokens,
                "tokens_per_s": self.tokens_per_s, "tokens_per_s_ci": [lo, hi], "reset_s": self.reset_s}


def phase_timing(measurement, tokens: int, reset_s: float | None = None) -> PhaseTiming:
    d = measurement.to_dict()
    spec = d.get("spec", {})
    warnings = list(d.get("warnings") or []) + list(getattr(measurement, "warnings", None) or [])
    disturbed = bool(getattr(measurement, "disturbed", False))
    if measurement.interrupted:
        warnings.append("interrupted before the timer finished")
    return PhaseTiming(measurement.median, measurement.ci_low, measurement.ci_high, len(measurement.samples),
                       measurement.calls, int(spec.get("threads") or 0), str(spec.get("device") or "cpu"),
                       bool(measurement.precision_met), tokens, list(dict.fromkeys(str(w) for w in warnings)),
                       reset_s, disturbed)
