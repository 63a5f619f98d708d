"""Repeat a timing in fresh processes (pyperf's lesson: one process can be unlucky for
its whole life: address-space layout, which core it lands on, a noisy neighbour).

Each repeat runs ``python -m flopgap time ARGS --json -`` to completion, one after the
other (never in parallel: they would disturb each other). The spread is the max/min
ratio of the per-process medians (or ratios, for ``--vs``); the headline figure is
their median, with an interval over processes (:attr:`ProcessRepeats.ci`). A
within-process CI describes one process's luck (address-space layout, which core, the
allocator's state); only the spread between processes shows how much that luck moves
the result. Ctrl-C keeps every process that finished, and the partial result of the
one running when it reports one. A child that rejects its arguments (exit 2) is the
caller's usage error; any other failure ends the run and keeps the processes that
finished, with the reason in ``failure``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from flopgap._json import jsonable
from flopgap._summary import summary_html, summary_repr
from flopgap._units import fmt_seconds
from flopgap.errors import UsageError
from flopgap.timing._stats import MIN_SAMPLES_95, median_ci
from flopgap.timing._timer import TIME_SCHEMA, Comparison, Measurement

__all__ = ["ProcessRepeats", "repeat_in_processes"]


@dataclass
class ProcessRepeats:
    """Results of the same ``flopgap time`` command in ``len(results)`` fresh processes."""

    args: list[str]
    requested: int
    results: list[Measurement | Comparison] = field(default_factory=list)
    interrupted: bool = False
    failure: str | None = None   # why the run stopped before ``requested`` processes, if one failed

    __repr__ = summary_repr
    _repr_html_ = summary_html

    @property
    def warnings(self) -> list[str]:
        out = [f"stopped after {len(self.results)} of {self.requested} processes: {self.failure}"] if self.failure else []
        out += [w for r in self.results for w in r.warnings if w not in out]
        return out

    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        ratio = bool(self.results) and isinstance(self.results[0], Comparison)
        mid = f"{self.median:.3f}" if ratio else fmt_seconds(self.median)
        return " ".join(self.args), [("processes", f"{len(self.results)} of {self.requested}"),
                                     ("median of " + ("ratios" if ratio else "medians"), mid),
                                     ("spread max/min", f"{self.spread:.3f}" if math.isfinite(self.spread) else "n/a")]

    @property
    def values(self) -> list[float]:
        """Per-process medians (seconds per call) or ratios (``--vs``)."""
        return [r.ratio if isinstance(r, Comparison) else r.median for r in self.results]

    @property
    def spread(self) -> float:
        """max/min of the per-process values: 1.0 is perfectly reproducible; NaN (``null``
        in JSON) with fewer than 2 positive values, where there is no spread to speak of."""
        v = [x for x in self.values if x > 0]
        return max(v) / min(v) if len(v) >= 2 else math.nan

    @property
    def median(self) -> float:
        return float(np.median(self.values)) if self.results else math.nan

    @property
    def ci(self) -> tuple[float, float, float]:
        """``(low, high, confidence)``: an interval for the median over processes.

        Each process is one draw of "what this machine gives a fresh process", so the
        per-process values are the samples: with 6 or more, the 95% order-statistic
        interval (as within a process); with 2 to 5, their range, whose coverage of the
        median is ``1 - 2 * 0.5**n`` (50% for 2, 94% for 5) and is stated as such;
        NaN with fewer than 2."""
        v = np.sort(np.asarray(self.values, dtype=float))
        n = len(v)
        if n >= MIN_SAMPLES_95:
            lo, hi = median_ci(v, 0.95)
            return lo, hi, 0.95
        if n >= 2:
            return float(v[0]), float(v[-1]), 1 - 2 * 0.5 ** n
        return math.nan, math.nan, math.nan

    @property
    def disturbed(self) -> int:
        """How many processes the sentinel found disturbed."""
        return sum(1 for r in self.results if r.disturbed)

    @property
    def cold_s(self) -> list[float]:
        """First call in each fresh process (model A's for ``--vs``)."""
        return [(r.a if isinstance(r, Comparison) else r).cold_s for r in self.results]

    def to_dict(self) -> dict:
        return jsonable({
            "schema": TIME_SCHEMA, "kind": "processes", "args": self.args, "requested": self.requested,
            "completed": len(self.results), "interrupted": self.interrupted, "failure": self.failure,
            "values": self.values, "median": self.median, "spread": self.spread,
            "ci_low": self.ci[0], "ci_high": self.ci[1], "ci_confidence": self.ci[2],
            "ci_method": "order statistic over per-process values (range below 6 processes)",
            "disturbed_processes": self.disturbed, "cold_s": self.cold_s,
            "results": [r.to_dict() for r in self.results],
        })

    @classmethod
    def from_dict(cls, d: dict) -> "ProcessRepeats":
        if not isinstance(d, dict) or d.get("schema") != TIME_SCHEMA or d.get("kind") != "processes":
            raise UsageError(f"not a {TIME_SCHEMA} processes result")
        return cls(list(d["args"]), d["requested"], [_parse(r) for r in d["results"]], d.get("interrupted", False),
                   d.get("failure"))


def _parse(d: dict) -> Measurement | Comparison:
    return Comparison.from_dict(d) if d.get("kind") == "comparison" else Measurement.from_dict(d)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def repeat_in_processes(args: list[str], processes: int, *,
                        on_result: Callable[[int, Measurement | Comparison], None] | None = None,
                        python: str = sys.executable, popen: Callable[..., subprocess.Popen] = subprocess.Popen
                        ) -> ProcessRepeats:
    """Run ``flopgap time *args --json -`` in ``processes`` fresh processes in turn.

    Raises :class:`UsageError` when a child rejects the arguments (its exit 2, with its
    message); on any other failure returns the processes that finished, with
    ``failure`` saying what went wrong. ``popen`` is replaceable for tests.
    """
    if processes < 1:
        raise UsageError(f"--processes must be a positive integer, got {processes}")
    if any(a in ("--json", "--processes") or a.startswith(("--json=", "--processes=")) for a in args):
        raise UsageError("repeat_in_processes sets --json and --processes itself")
    out = ProcessRepeats(list(args), processes)
    cmd = [python, "-m", "flopgap", "time", *args, "--json", "-"]
    for i in range(processes):
        proc = popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = proc.communicate()
        except KeyboardInterrupt:
            # the child got the same SIGINT: give it a moment to report what it measured
            out.interrupted = True
            try:
                stdout, stderr = proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                proc.kill()
                proc.wait()
                break
            try:
                result = _parse(json.loads(stdout))
            except (ValueError, KeyError, TypeError, UsageError):
                break
            out.results.append(result)
            break
        if proc.returncode == 2:  # the child's own usage error: the same arguments are ours
            raise UsageError(_last_line(stderr).removeprefix("error: "))
        if proc.returncode not in (0, 130):
            out.failure = f"process {i + 1} of {processes} failed (exit {proc.returncode}): {_last_line(stderr)}"
            break
        try:
            result = _parse(json.loads(stdout))
        except (ValueError, KeyError, TypeError, UsageError) as e:
            out.failure = f"process {i + 1} of {processes} wrote no {TIME_SCHEMA} JSON ({type(e).__name__})"
            break
        out.results.append(result)
        if on_result:
            on_result(i, result)
        if proc.returncode == 130:
            out.interrupted = True
            break
    return out
