"""CUDA timing: events around each block, with synchronisation, host dispatch time
apart from device time, and peak device memory.

Everything CUDA-specific is injected (event factory, synchronize, memory functions),
so the logic is unit-tested on a CPU with fakes. Per block::

    synchronize()                  # nothing of ours is still queued
    t0 = clock(); start.record()
    fn(*inputs) x n                # the host only enqueues kernels
    end.record(); t1 = clock()     # dispatch = t1 - t0: host-side cost
    synchronize(); t2 = clock()    # wall = t2 - t0: what a caller waits for
    device = start.elapsed_time(end) / 1e3   # ms -> s, GPU time between the events

The sample (``Measurement.samples``) is ``wall``: it is what a synchronous caller
sees. ``dispatch > device`` means the model is launch-bound (overhead-bound).
"""

from __future__ import annotations

from typing import Any, Callable

from flopgap.timing._clock import Clock
from flopgap.timing._runner import BlockTiming

__all__ = ["CudaRunner"]


class CudaRunner:
    device = "cuda"

    def __init__(self, fn: Callable[..., Any], inputs: tuple, clock: Clock, *,
                 event_factory: Callable[[], Any] | None = None,
                 synchronize: Callable[[], None] | None = None,
                 max_memory_allocated: Callable[[], int] | None = None,
                 reset_peak_memory_stats: Callable[[], None] | None = None):
        if event_factory is None or synchronize is None:
            import torch

            event_factory = event_factory or (lambda: torch.cuda.Event(enable_timing=True))
            synchronize = synchronize or torch.cuda.synchronize
            max_memory_allocated = max_memory_allocated or torch.cuda.max_memory_allocated
            reset_peak_memory_stats = reset_peak_memory_stats or torch.cuda.reset_peak_memory_stats
        self.fn = fn
        self.inputs = tuple(inputs)
        self.clock = clock
        self._event = event_factory
        self._synchronize = synchronize
        self._clock_sync = getattr(clock, "sync", None)
        self._max_memory = max_memory_allocated
        self._reset_peak = reset_peak_memory_stats

    def _sync(self) -> None:
        self._synchronize()
        if self._clock_sync is not None:
            self._clock_sync()

    def run_block(self, n: int) -> BlockTiming:
        fn, inputs, clock = self.fn, self.inputs, self.clock
        start, end = self._event(), self._event()
        self._sync()
        t0 = clock()
        start.record()
        for _ in range(n):
            fn(*inputs)
        end.record()
        t1 = clock()
        self._sync()
        t2 = clock()
        return BlockTiming(wall=t2 - t0, dispatch=t1 - t0, device=start.elapsed_time(end) / 1e3)

    def reset_peak_memory(self) -> None:
        if self._reset_peak is not None:
            self._reset_peak()

    def peak_memory(self) -> int | None:
        return int(self._max_memory()) if self._max_memory is not None else None
