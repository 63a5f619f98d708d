"""The timer: cold call, warm-up to steady state, adaptive blocks, stop on a CI.

Algorithm (one model; :func:`compare` runs the same steps for two, interleaved)::

    floor = clock_floor(clock)                      # resolution and cost of a reading
    min_block = min_block_s or 1000 * floor         # clock error <= 0.1% of a block
    cold = one call                                 # reported apart, never a sample
    # warm-up: samples are blocks; a block holds ceil(min_block / est) calls, est being
    # the median per-call time of the last W = 5 warm-up samples (1 call for slow models)
    repeat: time a block
    until (>= 2W samples and median(previous W) - median(last W) <= warmup_tol * median(last W))
          or warm-up time >= warmup_max_time (then steady = False)
    block = ceil(min_block / median(last W))        # fixed from here on
    # sampling: one block per sample; checks at n = min_samples, then every max(1, n // 20)
    repeat: time a block
    until (95% CI of the median within +-precision of it (order statistic, see _stats)
           and time since the cold call >= min_time)
          or time since the cold call >= max_time or n >= max_samples

The warm-up rule is one-sided: only a *drop* of the moving median counts as drift
(caches, allocator and lazy initialisation make early calls slow); a rise is noise from
the machine and sampling handles it. Every duration, budgets included, comes from the
one clock, so a fake clock decides every step exactly.

Ctrl-C during sampling stops it and returns what was measured (``interrupted=True``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, Callable

import numpy as np

from flopgap._json import jsonable
from flopgap.errors import UsageError, one_line
from flopgap.models import describe_inputs
from flopgap.timing._clock import Clock, clock_floor, default_clock
from flopgap.timing._context import check_device, threads_context
from flopgap.timing._cuda import CudaRunner
from flopgap.timing._env import environment, minor_faults
from flopgap.timing._health import health_warnings
from flopgap.timing._options import TimerOptions
from flopgap.timing._runner import CpuRunner
from flopgap.timing._sentinel import Disturbance, LoadSource, Sentinel, system_load
from flopgap.timing._stats import (CI_METHOD, MIN_SAMPLES_95, RATIO_CI_METHOD, half_width, median_half_width, ratio_ci,
                                  summarize)

__all__ = ["TimingSpec", "TimerOptions", "Measurement", "Comparison", "CudaHooks", "measure", "compare", "TIME_SCHEMA"]

TIME_SCHEMA = "flopgap.time/1"

_WINDOW = 5                  # warm-up samples per moving-median window
_OVERHEAD_RATIO = 1000       # a block lasts >= 1000x the clock floor: clock error <= 0.1%
_MAX_WARMUP_SAMPLES = 1000
_CHECK_GROWTH = 20           # after min_samples, check the CI each time n grows by n // 20
_SHARED_PEAK_NOTE = ("peak device memory not reported: the models ran interleaved and the device's peak "
                     "counter is shared by both (time each alone for its peak)")


@dataclass(frozen=True)
class TimingSpec:
    """What was timed and how (hashable; the result lives in :class:`Measurement`).

    ``threads`` and ``device`` are the values in effect during the run (``options``
    may have left them to torch or to the inputs)."""

    name: str
    inputs: tuple[str, ...]
    device: str
    threads: int
    options: TimerOptions = TimerOptions()

    precision = property(lambda self: self.options.precision)
    max_time = property(lambda self: self.options.max_time)
    min_time = property(lambda self: self.options.min_time)
    confidence = property(lambda self: self.options.confidence)
    min_samples = property(lambda self: self.options.min_samples)
    grad = property(lambda self: self.options.grad)

    def to_dict(self) -> dict:
        d = self.options.to_dict()
        d["requested_threads"] = d.pop("threads")
        d.pop("device")
        return {"name": self.name, "inputs": list(self.inputs), "device": self.device, "threads": self.threads, **d}

    @classmethod
    def from_dict(cls, d: dict) -> "TimingSpec":
        d = dict(d)
        opts = {k: v for k, v in d.items() if k not in ("name", "inputs", "device", "threads", "requested_threads")}
        opts["threads"] = d.get("requested_threads")
        return cls(d.get("name", "model"), tuple(d.get("inputs", ())), d.get("device", "cpu"), d.get("threads", 1),
                   TimerOptions.from_dict(opts))


@dataclass(frozen=True)
class CudaHooks:
    """Injection points of the CUDA path (tests pass fakes; ``None`` = torch.cuda's)."""

    event_factory: Callable[[], Any] | None = None
    synchronize: Callable[[], None] | None = None
    max_memory_allocated: Callable[[], int] | None = None
    reset_peak_memory_stats: Callable[[], None] | None = None


@dataclass
class Measurement:
    """Steady-state latency of one callable. Every time is seconds per call.

    ``samples`` has one entry per sample (a block of ``block_size`` calls divided by
    ``block_size``); statistics are computed from them on demand. ``cold_s`` is the
    first call, ``warmup_calls`` the calls spent reaching steady state, ``calls`` the
    calls behind ``samples``.
    """

    spec: TimingSpec
    samples: list[float]
    block_size: int
    cold_s: float
    warmup_calls: int
    warmup_samples: list[float] = field(default_factory=list)
    steady: bool = True
    environment: dict = field(default_factory=dict)
    wall_s: float = math.nan
    clock_floor_s: float = 0.0
    interrupted: bool = False
    dispatch_samples: list[float] | None = None
    device_samples: list[float] | None = None
    peak_memory_bytes: int | None = None
    notes: list[str] = field(default_factory=list)
    page_faults_per_call: float | None = None  # minor faults per call while sampling (None: unknown)
    disturbance: Disturbance | None = None     # the sentinel's evidence (None: not watched)

    @cached_property
    def _stats(self) -> dict:
        return summarize(self.samples, self.spec.confidence)

    median = property(lambda self: self._stats["median"])
    ci_low = property(lambda self: self._stats["ci_low"])
    ci_high = property(lambda self: self._stats["ci_high"])
    mean = property(lambda self: self._stats["mean"])
    p5 = property(lambda self: self._stats["p5"])
    p95 = property(lambda self: self._stats["p95"])
    min = property(lambda self: self._stats["min"])
    max = property(lambda self: self._stats["max"])
    iqr = property(lambda self: self._stats["iqr"])
    outliers = property(lambda self: self._stats["outliers"], doc="samples outside Tukey's 1.5 IQR fences (kept)")

    @property
    def calls(self) -> int:
        return len(self.samples) * self.block_size

    @property
    def half_width(self) -> float:
        """Larger side of the CI relative to the median: the precision reached."""
        return half_width(self.median, self.ci_low, self.ci_high)

    @property
    def precision_met(self) -> bool:
        return len(self.samples) >= max(self.spec.min_samples, MIN_SAMPLES_95) and \
            self.half_width <= self.spec.precision

    @property
    def disturbed(self) -> bool:
        """The sentinel saw competition, steal or a slowed reference kernel during the run."""
        return bool(self.disturbance is not None and self.disturbance.disturbed)

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    @property
    def warnings(self) -> list[str]:
        """Why this figure may not describe the machine, most serious first (disturbed,
        precision not reached, interrupted, then the rest): one sentence each."""
        return health_warnings(self)

    @property
    def dispatch_median(self) -> float | None:
        return float(np.median(self.dispatch_samples)) if self.dispatch_samples else None

    @property
    def device_median(self) -> float | None:
        return float(np.median(self.device_samples)) if self.device_samples else None

    def to_dict(self) -> dict:
        """JSON-ready; statistics that are unknown (too few samples) are ``None``."""
        s = jsonable(self._stats)
        return {
            "schema": TIME_SCHEMA,
            "kind": "measurement",
            "spec": self.spec.to_dict(),
            "ci_method": CI_METHOD,
            "median": s["median"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
            "half_width": jsonable(self.half_width),
            "mean": s["mean"], "p5": s["p5"], "p95": s["p95"], "min": s["min"], "max": s["max"], "iqr": s["iqr"],
            "outliers": s["outliers"], "precision_met": self.precision_met, "interrupted": self.interrupted,
            "disturbed": self.disturbed, "warnings": self.warnings,
            "disturbance": self.disturbance.to_dict() if self.disturbance is not None else None,
            "cold_s": self.cold_s, "warmup_calls": self.warmup_calls, "steady": self.steady,
            "block_size": self.block_size, "n_samples": len(self.samples), "calls": self.calls,
            "wall_s": self.wall_s, "clock_floor_s": self.clock_floor_s,
            "dispatch_median": self.dispatch_median, "device_median": self.device_median,
            "peak_memory_bytes": self.peak_memory_bytes, "notes": list(self.notes),
            "page_faults_per_call": self.page_faults_per_call,
            "samples": list(self.samples), "warmup_samples": list(self.warmup_samples),
            "dispatch_samples": self.dispatch_samples, "device_samples": self.device_samples,
            "environment": self.environment,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Measurement":
        _check_schema(d, "measurement")
        return cls(
            spec=TimingSpec.from_dict(d["spec"]), samples=list(d["samples"]), block_size=d["block_size"],
            cold_s=d["cold_s"], warmup_calls=d["warmup_calls"], warmup_samples=list(d.get("warmup_samples", [])),
            steady=d.get("steady", True), environment=d.get("environment", {}), wall_s=d.get("wall_s", math.nan),
            clock_floor_s=d.get("clock_floor_s", 0.0), interrupted=d.get("interrupted", False),
            dispatch_samples=d.get("dispatch_samples"), device_samples=d.get("device_samples"),
            peak_memory_bytes=d.get("peak_memory_bytes"), notes=list(d.get("notes", [])),
            page_faults_per_call=d.get("page_faults_per_call"),
            disturbance=Disturbance.from_dict(d.get("disturbance")),
        )


@dataclass
class Comparison:
    """Two callables timed alternately in one run (ABBA order, so slow drift of the
    machine hits both). ``ratio`` is ``a.median / b.median``; its CI is a paired
    bootstrap over rounds (``a.samples[i]`` and ``b.samples[i]`` share round ``i``)."""

    a: Measurement
    b: Measurement
    interrupted: bool = False
    resamples: int = 2000

    @property
    def ratio(self) -> float:
        return self.a.median / self.b.median if self.b.median > 0 else math.nan

    @cached_property
    def _ci(self) -> tuple[float, float]:
        return ratio_ci(self.a.samples, self.b.samples, self.a.spec.confidence, resamples=self.resamples)

    ci_low = property(lambda self: self._ci[0])
    ci_high = property(lambda self: self._ci[1])

    @property
    def disturbed(self) -> bool:
        """Either side's run was disturbed (they ran interleaved: in practice both or neither)."""
        return self.a.disturbed or self.b.disturbed

    @property
    def warnings(self) -> list[str]:
        """Both sides' warnings; one both share (the sentinel watched them together) is said once."""
        wa, wb = self.a.warnings, self.b.warnings
        out = [w for w in wa if w in wb]
        out += [f"{self.a.spec.name}: {w}" for w in wa if w not in wb]
        out += [f"{self.b.spec.name}: {w}" for w in wb if w not in wa]
        return out

    @property
    def excludes_one(self) -> bool:
        """The CI says the two differ (at the confidence level)."""
        return self.ci_low > 1 or self.ci_high < 1

    def to_dict(self) -> dict:
        return {
            "schema": TIME_SCHEMA, "kind": "comparison",
            "ratio": jsonable(self.ratio), "ci_low": jsonable(self.ci_low), "ci_high": jsonable(self.ci_high),
            "confidence": self.a.spec.confidence, "ci_method": RATIO_CI_METHOD, "resamples": self.resamples,
            "excludes_one": self.excludes_one, "interrupted": self.interrupted, "disturbed": self.disturbed,
            "a": self.a.to_dict(), "b": self.b.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Comparison":
        _check_schema(d, "comparison")
        return cls(Measurement.from_dict(d["a"]), Measurement.from_dict(d["b"]), d.get("interrupted", False),
                   d.get("resamples", 2000))


def _check_schema(d: dict, kind: str) -> None:
    if not isinstance(d, dict) or d.get("schema") != TIME_SCHEMA or d.get("kind", kind) != kind:
        got = d.get("schema") if isinstance(d, dict) else type(d).__name__
        raise UsageError(f"not a {TIME_SCHEMA} {kind} result (schema {got!r}, kind {d.get('kind') if isinstance(d, dict) else None!r})")


# --------------------------------------------------------------------------- running

def _block_size(per_call_s: float, min_block_s: float, max_block: int) -> int:
    """Calls per block so that a block lasts at least ``min_block_s``."""
    if min_block_s <= 0:
        return 1
    if not per_call_s > 0:
        return max_block
    # the 1e-9 keeps float noise (100.00000000000001) from adding a call
    return int(min(max_block, max(1, math.ceil(min_block_s / per_call_s * (1 - 1e-9)))))


@dataclass
class _Job:
    name: str
    runner: Any
    cold_s: float = math.nan
    warmup: list[float] = field(default_factory=list)
    warmup_calls: int = 0
    steady: bool = False
    block: int = 1
    samples: list[float] = field(default_factory=list)
    dispatch: list[float] = field(default_factory=list)
    device: list[float] = field(default_factory=list)


def _block(job: _Job, n: int):
    """One timed block; the model raising in it (on any call, not only the first) is the
    user's error, one line naming the model, never a traceback. Ctrl-C passes through."""
    try:
        return job.runner.run_block(n)
    except (KeyboardInterrupt, UsageError):
        raise
    except BaseException as e:
        when = "on its first call" if math.isnan(job.cold_s) else "while being timed"
        raise UsageError(f"{job.name} raised {when}: {one_line(e)}") from None


def _cold(job: _Job) -> None:
    job.runner.reset_peak_memory()
    job.cold_s = _block(job, 1).wall


def _warm_up(job: _Job, clock: Clock, opt: TimerOptions, min_block_s: float, progress) -> None:
    t0 = clock()
    block = 1
    w = job.warmup
    while True:
        if len(w) >= 2 * _WINDOW:
            prev, last = float(np.median(w[-2 * _WINDOW:-_WINDOW])), float(np.median(w[-_WINDOW:]))
            if prev - last <= opt.warmup_tol * last:
                job.steady = True
                break
        if w and (clock() - t0 >= opt.warmup_budget or len(w) >= _MAX_WARMUP_SAMPLES):
            break  # (one sample at least: the block size comes from it)
        t = _block(job, block)
        w.append(t.wall / block)
        job.warmup_calls += block
        block = _block_size(float(np.median(w[-_WINDOW:])), min_block_s, opt.max_block)
    job.block = _block_size(float(np.median(w[-_WINDOW:])), min_block_s, opt.max_block)
    if progress:
        progress("warmup", {"name": job.name, "calls": job.warmup_calls, "steady": job.steady, "block": job.block})


def _met(job: _Job, opt: TimerOptions) -> bool:
    if len(job.samples) < max(opt.min_samples, MIN_SAMPLES_95):
        return False
    return median_half_width(job.samples, opt.confidence) <= opt.precision


def _sample(jobs: list[_Job], clock: Clock, opt: TimerOptions, t_start: float, progress, sentinel) -> bool:
    """Rounds of one block per job (order reversed every other round: ABBA) until every
    job's CI meets the target, the budget is spent or Ctrl-C; returns interrupted."""
    next_check = max(opt.min_samples, MIN_SAMPLES_95)
    rnd = 0
    try:
        while True:
            order = jobs if rnd % 2 == 0 else jobs[::-1]
            for job in order:
                t = _block(job, job.block)
                job.samples.append(t.wall / job.block)
                if t.dispatch is not None:
                    job.dispatch.append(t.dispatch / job.block)
                if t.device is not None:
                    job.device.append(t.device / job.block)
            rnd += 1
            if sentinel is not None:
                sentinel.poll(clock())
            if rnd >= next_check:
                if all(_met(j, opt) for j in jobs) and clock() - t_start >= opt.effective_min_time:
                    break
                next_check = rnd + max(1, rnd // _CHECK_GROWTH)
                if progress:
                    progress("sampling", {"samples": rnd, "elapsed": clock() - t_start, "max_time": opt.max_time,
                                          "half_width": [_hw(j, opt) for j in jobs]})
            if rnd >= opt.max_samples or clock() - t_start >= opt.max_time:
                break
    except KeyboardInterrupt:
        # keep complete rounds only, so samples stay paired
        n = min(len(j.samples) for j in jobs)
        for j in jobs:
            del j.samples[n:], j.dispatch[n:], j.device[n:]
        if n == 0:
            raise
        return True
    return False


def _hw(job: _Job, opt: TimerOptions) -> float:
    return median_half_width(job.samples, opt.confidence)


@contextlib.contextmanager
def _torch_context(threads: int | None, grad: bool):
    import torch

    with threads_context(threads), torch.enable_grad() if grad else torch.inference_mode():
        yield


def _resolve_device(device, inputs: tuple, cuda_hooks: CudaHooks | None) -> str:
    import torch

    if device is None:
        device = next((str(t.device) for t in inputs if isinstance(t, torch.Tensor)), "cpu")
    # fake CUDA hooks (tests) stand in for a GPU: no availability check then
    return check_device(device, need_cuda=cuda_hooks is None)


def _run(named: list[tuple[str, Callable, tuple]], opt: TimerOptions, *, clock, progress, cuda_hooks,
         load: LoadSource | None) -> tuple[list[Measurement], bool]:
    import torch

    clock = clock if clock is not None else default_clock()
    # a lone tensor is one input, not a sequence of rows
    named = [(n, f, (inp,) if isinstance(inp, torch.Tensor) else tuple(inp)) for n, f, inp in named]
    devices = {_resolve_device(opt.device, tuple(inp), cuda_hooks) for _, _, inp in named}
    if len(devices) > 1:
        raise UsageError(f"models to compare run on different devices: {', '.join(sorted(devices))}")
    dev = devices.pop()
    jobs = []
    for name, fn, inputs in named:
        if not callable(fn):
            raise UsageError(f"{name} is not callable (got {type(fn).__name__})")
        if dev.startswith("cuda"):
            hooks = cuda_hooks or CudaHooks()
            # not asdict(): it deep-copies, and a copied bound method would act on a copy
            runner = CudaRunner(fn, tuple(inputs), clock, **{f.name: getattr(hooks, f.name) for f in fields(hooks)})
        else:
            runner = CpuRunner(fn, tuple(inputs), clock)
        jobs.append(_Job(name, runner))
    sentinel = None
    if opt.watch_load:
        sentinel = Sentinel(load if load is not None else system_load())

    with _torch_context(opt.threads, opt.grad):
        used_threads = torch.get_num_threads()
        env = environment(dev)
        floor = clock_floor(clock)
        min_block_s = opt.min_block_s if opt.min_block_s is not None else _OVERHEAD_RATIO * floor
        t_begin = clock()
        if sentinel is not None:
            sentinel.start(t_begin, used_threads)
        for job in jobs:
            _cold(job)
            if progress:
                progress("cold", {"name": job.name, "cold_s": job.cold_s})
        t_start = clock()
        for job in jobs:
            _warm_up(job, clock, opt, min_block_s, progress)
        faults0 = minor_faults()
        interrupted = _sample(jobs, clock, opt, t_start, progress, sentinel)
        faults1 = minor_faults()
        wall = clock() - t_begin
        # the device's peak counter is global: it is one model's peak only when one model ran
        peaks = [jobs[0].runner.peak_memory()] if len(jobs) == 1 else [None] * len(jobs)
        disturbance = sentinel.finish() if sentinel is not None and not interrupted else None

    # faults are counted per process: one model's only when one model ran
    sampled = sum(len(j.samples) * j.block for j in jobs)
    faults = ((faults1 - faults0) / sampled if len(jobs) == 1 and sampled and faults0 is not None
              and faults1 is not None else None)
    out = []
    for job, (_, _, inputs), peak in zip(jobs, named, peaks):
        spec = TimingSpec(job.name, tuple(describe_inputs(inputs)), dev, used_threads, opt)
        out.append(Measurement(
            spec=spec, samples=job.samples, block_size=job.block, cold_s=job.cold_s,
            warmup_calls=job.warmup_calls, warmup_samples=job.warmup, steady=job.steady, environment=env,
            wall_s=wall, clock_floor_s=floor, interrupted=interrupted,
            dispatch_samples=job.dispatch or None, device_samples=job.device or None, peak_memory_bytes=peak,
            notes=[_SHARED_PEAK_NOTE] if len(jobs) > 1 and dev.startswith("cuda") else [],
            page_faults_per_call=faults, disturbance=disturbance,
        ))
    if progress:
        progress("done", {"interrupted": interrupted, "disturbed": bool(disturbance and disturbance.disturbed)})
    return out, interrupted


def measure(fn: Callable[..., Any], inputs: tuple = (), options: TimerOptions | None = None, *,
            name: str = "model", clock: Clock | None = None, progress: Callable[[str, dict], None] | None = None,
            cuda_hooks: CudaHooks | None = None, load: LoadSource | None = None) -> Measurement:
    """Time ``fn(*inputs)`` (any callable: module, compiled or quantized module).

    ``options`` (:class:`TimerOptions`, default ``TimerOptions()``) say when to stop and
    how to run: under ``torch.inference_mode()`` unless ``grad``; with ``threads`` set,
    torch uses that many intra-op threads for the run (restored after) and the result
    records the count in effect. Stops when the 95% CI of the median is within
    ``precision`` of the median, or after ``max_time`` seconds (warm-up included), never
    before ``min_time``. The disturbance sentinel watches the machine meanwhile
    (``load`` replaces its evidence source; tests pass :class:`FakeLoad`), and the result
    says whether the run was disturbed (``.disturbed``, ``.disturbance``) and lists every
    caveat (``.warnings``). ``progress(phase, info)`` is called at phase ends and CI
    checks. The clock is replaceable (``clock``); see the module docstring for the
    algorithm.
    """
    opt = options if options is not None else TimerOptions()
    if not isinstance(opt, TimerOptions):
        raise UsageError(f"options must be a TimerOptions, got {type(opt).__name__}")
    (m,), _ = _run([(name, fn, inputs)], opt, clock=clock, progress=progress, cuda_hooks=cuda_hooks, load=load)
    return m


def compare(fn_a: Callable[..., Any], inputs_a: tuple, fn_b: Callable[..., Any], inputs_b: tuple,
            options: TimerOptions | None = None, *, names: tuple[str, str] = ("a", "b"), clock: Clock | None = None,
            progress: Callable[[str, dict], None] | None = None, cuda_hooks: CudaHooks | None = None,
            load: LoadSource | None = None, resamples: int = 2000) -> Comparison:
    """Time two callables alternately in one run and return their :class:`Comparison`.

    Both get a cold call and a warm-up, then rounds of one block each, in ABBA order,
    until both medians meet ``options.precision`` or ``options.max_time`` runs out.
    ``max_time`` and the warm-up bound are for the whole run (the warm-up bound applies
    per model). One sentinel watches the whole run, so both sides share its verdict.
    """
    if len(names) != 2:
        raise UsageError(f"compare needs two names, got {names!r}")
    opt = options if options is not None else TimerOptions()
    if not isinstance(opt, TimerOptions):
        raise UsageError(f"options must be a TimerOptions, got {type(opt).__name__}")
    (a, b), interrupted = _run([(names[0], fn_a, inputs_a), (names[1], fn_b, inputs_b)], opt, clock=clock,
                               progress=progress, cuda_hooks=cuda_hooks, load=load)
    return Comparison(a, b, interrupted, resamples)
