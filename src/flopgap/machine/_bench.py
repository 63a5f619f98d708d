"""Micro-benchmark timing: ``torch.utils.benchmark.Timer.blocked_autorange`` with the
model's thread count, under ``torch.inference_mode()`` (the mode models are timed in).

Each figure is a :class:`Figure`: the median of the timed blocks and its spread
(25th/75th percentile and min/max over blocks), so a reader sees how noisy it was.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

__all__ = ["Figure", "time_call", "time_blocks", "figure_from_times", "figure_of_seconds", "BLOCKS", "MIN_BLOCK_S"]

BLOCKS = 5            # blocks per calibration case: the fastest of 5 is rarely a disturbed one
MIN_BLOCK_S = 1e-3    # a block of calls lasts at least 1 ms: 1000x perf_counter's cost
_MAX_CALLS = 10_000   # calls per block at most (a 100 ns op)


@dataclass(frozen=True)
class Figure:
    """One measured ceiling: ``value`` (median) with its spread over timed blocks."""

    value: float
    p25: float
    p75: float
    min: float
    max: float
    unit: str
    samples: int

    @property
    def rel_spread(self) -> float:
        """Interquartile range relative to the median (0.05 = +-2.5% around it)."""
        return (self.p75 - self.p25) / self.value if self.value else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "rel_spread": self.rel_spread}

    @classmethod
    def from_dict(cls, d: dict) -> "Figure":
        return cls(d["value"], d["p25"], d["p75"], d["min"], d["max"], d["unit"], d["samples"])


def _timer_cls():
    # torch.utils.benchmark imports cpp_extension, which logs a CUDA_HOME warning on
    # machines without a CUDA runtime; keep stderr clean for JSON consumers
    log = logging.getLogger("torch.utils.cpp_extension")
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        log.setLevel(old)
    return Timer


def time_call(fn: Callable[[], object], *, min_run_time: float = 0.05, threads: int | None = None,
              sync: Callable[[], None] | None = None, min_blocks: int = 3) -> np.ndarray:
    """Seconds per call of ``fn()``, one value per timed block (blocked_autorange).

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called after each call so that
    asynchronous devices are timed to completion. At least ``min_blocks`` blocks: a
    reported spread needs several, and autorange may stop at one. The chains,
    which keep a median over rounds, pass 1.
    """
    Timer = _timer_cls()
    stmt = "fn(); sync()" if sync is not None else "fn()"
    glb = {"fn": fn, "sync": sync}
    timer = Timer(stmt=stmt, globals=glb, num_threads=threads or torch.get_num_threads())
    with torch.inference_mode():
        fn()  # warm-up: first-call allocation, oneDNN primitive creation
        m = timer.blocked_autorange(min_run_time=min_run_time)
        times = list(m.times)
        while len(times) < min_blocks:
            times.extend(timer.timeit(m.number_per_run).times)
    return np.asarray(times, dtype=float)


def time_blocks(fn: Callable[[], object], *, blocks: int = BLOCKS, min_block_s: float = MIN_BLOCK_S,
                clock: Callable[[], float] = time.perf_counter) -> np.ndarray:
    """Seconds per call of ``fn()`` in ``blocks`` blocks, under ``torch.inference_mode()``.

    One untimed call (first-call allocation, oneDNN primitive creation), one timed call
    to size the blocks, then ``blocks`` blocks of ``n`` calls each, ``n`` the fewest
    calls that last ``min_block_s``::

        fn(); once = time(fn())
        n = clamp(ceil(min_block_s / once), 1, 10000)
        for each block: t = time(n calls) / n

    ``clock`` is replaceable (tests drive it with a fake one).
    """
    with torch.inference_mode():
        fn()
        t0 = clock()
        fn()
        once = max(clock() - t0, 1e-9)
        n = int(min(max(1, math.ceil(min_block_s / once)), _MAX_CALLS))
        out = []
        for _ in range(blocks):
            t0 = clock()
            for _ in range(n):
                fn()
            out.append((clock() - t0) / n)
    return np.asarray(out, dtype=float)


def figure_from_times(times: np.ndarray, work: float, unit: str) -> Figure:
    """A rate figure (``work`` per second, e.g. FLOP/s or B/s) from per-call times."""
    rates = work / np.asarray(times, dtype=float)
    return Figure(float(np.median(rates)), float(np.percentile(rates, 25)), float(np.percentile(rates, 75)),
                  float(rates.min()), float(rates.max()), unit, int(rates.size))


def figure_of_seconds(times: np.ndarray) -> Figure:
    t = np.asarray(times, dtype=float)
    return Figure(float(np.median(t)), float(np.percentile(t, 25)), float(np.percentile(t, 75)),
                  float(t.min()), float(t.max()), "s", int(t.size))
