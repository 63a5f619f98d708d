"""The timer's clock: replaceable, so tests drive every decision with a fake one.

A :class:`Clock` is any callable returning seconds (monotonic). It may have a
``sync()`` method, which the timer calls after each block of calls and before reading
the end time (the place for ``torch.cuda.synchronize``), and a ``resolution``
attribute (seconds). The default is :func:`time.perf_counter`.

Every duration the timer uses (samples, warm-up, budgets such as ``max_time``) is read
from this one clock, so a :class:`FakeClock` controls the whole run.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["Clock", "FakeClock", "default_clock", "clock_floor"]


@runtime_checkable
class Clock(Protocol):
    def __call__(self) -> float: ...


def default_clock() -> Clock:
    return time.perf_counter


_FLOOR_READS = 101  # consecutive reads; their median gap is the cost of one reading (robust to a preemption)


def clock_floor(clock: Clock) -> float:
    """The smallest duration this clock can tell apart from zero: the larger of its
    stated resolution and the median cost of one reading (what a start/stop pair adds
    to every sample)."""
    reads = [clock() for _ in range(_FLOOR_READS)]
    cost = float(np.median(np.diff(reads)))
    if clock is time.perf_counter:
        resolution = time.get_clock_info("perf_counter").resolution
    else:
        resolution = float(getattr(clock, "resolution", 0.0) or 0.0)
    return max(cost, resolution, 0.0)


class FakeClock:
    """A deterministic clock for tests: time moves only when the fake model runs or
    the clock is read.

    - ``clock()`` returns the current time, then advances it by ``read_s`` (the cost of
      a reading, i.e. the timer's own overhead); readings are floored to multiples of
      ``resolution`` when it is set.
    - ``clock.model(*args)`` is a model that does nothing but advance the time by the
      duration of its ``i``-th call (``i = 0`` is the cold call): ``call_s`` is a float,
      a sequence (the last value repeats), or a function of ``i``; with ``jitter`` each
      duration is multiplied by ``1 + jitter * U(-1, 1)`` from a generator seeded with
      ``seed``.
    - ``clock.sync()`` counts synchronisations (``syncs``).
    """

    def __init__(self, call_s: float | Sequence[float] | Callable[[int], float] = 1e-3, *, read_s: float = 0.0,
                 resolution: float = 0.0, jitter: float = 0.0, seed: int = 0, start: float = 0.0):
        self._call_s = call_s
        self.read_s = read_s
        self.resolution = resolution
        self.jitter = jitter
        self._rng = np.random.default_rng(seed)
        self.now = start
        self.calls = 0
        self.reads = 0
        self.syncs = 0

    def __call__(self) -> float:
        t = self.now
        self.now += self.read_s
        self.reads += 1
        if self.resolution:
            return math.floor(t / self.resolution) * self.resolution
        return t

    def duration(self, i: int) -> float:
        c = self._call_s
        if callable(c):
            d = c(i)
        elif isinstance(c, (int, float)):
            d = float(c)
        else:
            d = c[min(i, len(c) - 1)]
        if self.jitter:
            d *= 1 + self.jitter * self._rng.uniform(-1, 1)
        return d

    def model(self, *args) -> None:
        self.now += self.duration(self.calls)
        self.calls += 1

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sync(self) -> None:
        self.syncs += 1
