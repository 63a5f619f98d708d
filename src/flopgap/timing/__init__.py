"""Stage 3 of the pipeline: rigorous latency measurement.

Conventions: steady-state latency is the **median** of adaptive samples taken after a
detected warm-up, under ``torch.inference_mode()``, with a **95% order-statistic
(binomial, distribution-free) CI**; the first call is reported apart as the cold
start. A sample is a block of back-to-back calls sized so that the clock's resolution
and cost stay under 0.1% of it (1 call for slow models). The ratio of two models
(:func:`compare`) is timed alternately and gets a paired bootstrap CI. The clock is
replaceable (:class:`Clock`; :class:`FakeClock` for tests). Every run is watched by a
disturbance sentinel (:class:`Disturbance` on the result; :class:`FakeLoad` for tests).
How to time is one :class:`TimerOptions`. See docs/timing.md.

Names are imported on first use, so that ``import flopgap.timing`` (and the CLI's
``--help``) does not pay for torch until a measurement needs it.
"""

from importlib import import_module

_WHERE = {
    "Clock": "_clock", "FakeClock": "_clock",
    "check_device": "_context", "threads_context": "_context",
    "environment": "_env", "flopgap_version": "_env", "cpu_model": "_env", "minor_faults": "_env",
    "health_warnings": "_health",
    "TimerOptions": "_options", "DEFAULT_PRECISION": "_options", "DEFAULT_MAX_TIME": "_options",
    "ProcessRepeats": "_processes", "repeat_in_processes": "_processes",
    "Disturbance": "_sentinel", "FakeLoad": "_sentinel", "LoadSource": "_sentinel", "SystemLoad": "_sentinel",
    "Sentinel": "_sentinel", "system_load": "_sentinel", "others_runnable": "_sentinel",
    "own_process": "_sentinel", "PARTS": "_sentinel", "SINGLE_OP_PARTS": "_sentinel",
    "TIME_SCHEMA": "_timer", "Comparison": "_timer", "CudaHooks": "_timer", "Measurement": "_timer",
    "TimingSpec": "_timer", "compare": "_timer", "measure": "_timer",
}

__all__ = ["measure", "compare", "TimerOptions", "DEFAULT_PRECISION", "DEFAULT_MAX_TIME", "environment",
           "Measurement", "Comparison", "TimingSpec", "Clock", "FakeClock", "CudaHooks", "ProcessRepeats",
           "repeat_in_processes", "TIME_SCHEMA", "threads_context", "check_device", "health_warnings",
           "Disturbance", "LoadSource", "SystemLoad", "FakeLoad", "Sentinel", "system_load", "others_runnable",
           "own_process", "PARTS", "SINGLE_OP_PARTS",
           "cpu_model", "minor_faults", "flopgap_version"]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(import_module(f"flopgap.timing.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flopgap.timing' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
