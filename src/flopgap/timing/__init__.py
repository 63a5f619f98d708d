"""Stage 3 of the pipeline: rigorous latency measurement.

Conventions: steady-state latency is the **median** of adaptive samples taken after a
detected warm-up, under ``torch.inference_mode()``, with a **95% order-statistic
(binomial, distribution-free) CI**; the first call is reported apart as the cold
start. A sample is a block of back-to-back calls sized so that the clock's resolution
and cost stay under 0.1% of it (1 call for slow models). The ratio of two models
(:func:`compare`) is timed alternately and gets a paired bootstrap CI. The clock is
replaceable (:class:`Clock`; :class:`FakeClock` for tests). See docs/timing.md.
"""

from flopgap.timing._clock import Clock, FakeClock
from flopgap.timing._context import check_device, threads_context
from flopgap.timing._env import environment
from flopgap.timing._health import health_warnings
from flopgap.timing._processes import ProcessRepeats, repeat_in_processes
from flopgap.timing._timer import TIME_SCHEMA, Comparison, CudaHooks, Measurement, TimingSpec, compare, measure

__all__ = ["measure", "compare", "environment", "Measurement", "Comparison", "TimingSpec", "Clock", "FakeClock",
           "CudaHooks", "ProcessRepeats", "repeat_in_processes", "TIME_SCHEMA", "threads_context", "check_device",
           "health_warnings"]
