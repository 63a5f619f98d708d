"""Is a measurement trustworthy? Warnings computed from what was recorded, never guessed.

On a small shared CPU the worst failure is silent: OpenMP threads that lose their core
to another process wait for each other at every barrier, and a 10 us op takes
milliseconds. Nothing in a median says so; the spread of the samples and the machine's
load at the start do.
"""

from __future__ import annotations

import math

from flopgap.timing._stats import MIN_SAMPLES_95

__all__ = ["health_warnings"]

_TAIL_RATIO = 2.0  # p95 / median above this: a heavy tail (bursts of interference)
_FAULTS_PER_CALL = 50  # minor page faults per call from which the allocator is named


def health_warnings(m) -> list[str]:
    """One sentence per problem found in ``m`` (a :class:`Measurement`), with its numbers,
    most serious first: a disturbed machine, then a CI that missed its target or an
    interrupted run, then what the samples themselves show."""
    out: list[str] = []
    d = getattr(m, "disturbance", None)
    if d is not None and d.disturbed:
        out.append(f"{d.summary}: this latency describes a busy machine, not this one at rest; "
                   "re-time it on a quiet machine (or with fewer --threads)")
    n = len(m.samples)
    if n < MIN_SAMPLES_95:
        out.append(f"only {n} sample(s): no 95% confidence interval (6 needed); give it more --max-time")
    elif not m.precision_met and not m.interrupted:
        out.append(f"precision not reached: the 95% CI is +-{100 * m.half_width:.2g}% of the median, wider than "
                   f"the --precision target of {100 * m.spec.precision:g}%, after --max-time {m.spec.max_time:g} s; "
                   "give it more time or accept the wider CI")
    if m.interrupted:
        out.append(f"interrupted: figures are from the {n} sample(s) taken before Ctrl-C")
    if d is None:  # not watched: the load average at the start is all there is
        env = m.environment or {}
        threads = m.spec.threads
        cores = env.get("logical_cores") or 0
        load = (env.get("load_average") or [None])[0]
        if load is not None and cores and threads > 1 and (load - 1) + threads > cores + 0.5:
            # load - 1: this process itself is one runnable task at the start
            out.append(f"the machine was busy (load average {load:.2f} on {cores} logical cores) while timing "
                       f"with {threads} threads: an intra-op thread that loses its core stalls every op; "
                       "re-run on a quiet machine or with --threads 1")
    median, p95 = m.median, m.p95
    if math.isfinite(median) and median > 0 and math.isfinite(p95) and p95 / median > _TAIL_RATIO:
        out.append(f"heavy tail: p95 is {p95 / median:.1f}x the median, so something interfered in bursts; "
                   "the median is robust to it, the mean is not")
    faults = getattr(m, "page_faults_per_call", None)
    if faults is not None and faults >= _FAULTS_PER_CALL:
        out.append(f"{faults:,.0f} minor page faults per call while sampling: the allocator hands this model fresh "
                   "pages on every call, and with glibc how many depends on what ran before in the process, so "
                   "another process may measure it faster or slower; pin MALLOC_MMAP_THRESHOLD_ and "
                   "MALLOC_TRIM_THRESHOLD_, or use jemalloc/tcmalloc, to measure the steady state "
                   "(flopgap explain prices the faults)")
    if not m.steady:
        out.append("warm-up did not reach a steady state within its bound: early samples may still be drifting")
    return out
