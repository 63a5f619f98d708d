"""``explain()``: count, profile, join, classify, predict and find, for one model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from flopgap._units import fmt_latency, fmt_seconds, si
from flopgap._summary import summary_html, summary_repr
from flopgap.errors import UsageError
from flopgap.explain._attribute import Attribution, profile_ops
from flopgap.explain._findings import findings as _findings
from flopgap.explain._predict import Prediction, predict
from flopgap.explain._records import Bound, ClassShare, ExplainedOp, Finding, ModuleTime, Totals
from flopgap.explain._roofline import classify, op_dtype
from flopgap.explain._weights import weight_bytes as _weight_bytes

__all__ = ["Explanation", "explain", "build_explanation", "EXPLAIN_SCHEMA"]

EXPLAIN_SCHEMA = "flopgap.explain/2"  # 2: typed records; an op's class is "bound"
_EXPLAIN_MAX_TIME = 2.0  # seconds for the rigorous median: a 2% CI for models up to ~50 ms


@dataclass
class Explanation:
    """Why a model takes the time it takes on this machine.

    ``ops``: one :class:`ExplainedOp` per count record; ``modules``: per-module sums
    (:class:`ModuleTime`); ``classes``: time and FLOP share per roofline class
    (:class:`ClassShare`); ``totals``: the whole call (:class:`Totals`); ``findings``:
    :class:`Finding` records (:mod:`flopgap.explain._findings`); ``measurement``: the
    rigorous timing, if taken; ``disturbance``: the sentinel's record of the profiled pass.
    """

    model: str
    inputs: list[str]
    ops: list[ExplainedOp]
    modules: list[ModuleTime]
    classes: dict[Bound, ClassShare]
    totals: Totals
    profile: object
    prediction: Prediction
    findings: list[Finding] = field(default_factory=list)
    measurement: object | None = None     # flopgap.timing.Measurement of the rigorous timing, if taken
    disturbance: object | None = None     # the sentinel's record of the profiled pass
    trace: dict | None = None             # the trace written (path, events annotated), when one was asked for

    __repr__ = summary_repr
    _repr_html_ = summary_html

    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        t, m = self.totals, self.measurement
        rows = [("profiled call", f"{fmt_seconds(t.call_s)} (median of {t.profiled_calls} calls)")]
        if m is not None:
            rows.append(("rigorous median", fmt_latency(m.median, m.ci_low, m.ci_high, len(m.samples),
                                                        m.spec.threads, m.spec.device, disturbed=m.disturbed)))
        rows += [("dominant", f"{self.dominant}-bound" if self.dominant else "-"),
                 ("predicted", fmt_seconds(t.predicted_s)), ("FLOPs", si(t.flops, "FLOP")),
                 ("kernel ops", str(t.ops)), ("findings", str(len(self.findings))),
                 ("threads / device", f"{t.threads} / {t.device}")]
        return f"{self.model} ({', '.join(self.inputs)})", rows

    @property
    def disturbed(self) -> bool:
        return self.totals.disturbed

    @property
    def warnings(self) -> list[str]:
        """Why these figures may not describe the machine, most serious first."""
        out = []
        if self.disturbance is not None and self.disturbance.disturbed:
            out.append(f"profiled pass: {self.disturbance.summary}: shares and per-op times describe a busy "
                       "machine")
        if self.measurement is not None:
            out += [f"rigorous median: {w}" for w in self.measurement.warnings]
        return out

    def top_by(self, key: str, n: int = 10) -> list[ExplainedOp]:
        """The ``n`` kernel ops with the largest ``key`` (``time_s``, ``flops``, ...)."""
        rows = [r for r in self.ops if getattr(r, key) is not None and not r.free]
        return sorted(rows, key=lambda r: -getattr(r, key))[:n]

    @property
    def dominant(self) -> Bound | None:
        """compute | memory | overhead (overhead includes ``outside_python_s``); None if nothing was timed."""
        return next((Bound(f.numbers["class"]) for f in self.findings if f.kind == "dominant"), None)

    def to_dict(self) -> dict:
        p = self.profile.to_dict()
        p.pop("calibration", None)
        p["calibration_cases"] = len(self.profile.calibration)
        return {
            "schema": EXPLAIN_SCHEMA, "model": self.model, "inputs": self.inputs,
            "conventions": {
                "flops": "a fused multiply-add is 2 FLOPs",
                "bytes": "every tensor input read once (weights included), every output written once; views free",
                "time": "torch.profiler total CPU time of each top-level op (children included), median over "
                        "profiled calls (on CUDA the larger of CPU and kernel time; device_time_s is the kernel "
                        "time alone); shares are of the profiled call",
                "bound": "roofline: max(FLOPs/peak, bytes/bandwidth, dispatch overhead); bandwidth is the "
                         "cache-resident one when the op's bytes fit the cache test",
            },
            "disturbed": self.disturbed, "warnings": self.warnings,
            "totals": self.totals.to_dict(), "classes": {str(k): v.to_dict() for k, v in self.classes.items()},
            "findings": [f.to_dict() for f in self.findings],
            "top_by_time": [r.index for r in self.top_by("time_s")],
            "top_by_flops": [r.index for r in self.top_by("flops")],
            "ops": [r.to_dict() for r in self.ops], "modules": [m.to_dict() for m in self.modules],
            "prediction": self.prediction.to_dict(),
            "measurement": _measurement_summary(self.measurement),
            "profile_disturbance": self.disturbance.to_dict() if self.disturbance is not None else None,
            "machine": p,
        }


def _measurement_summary(m) -> dict | None:
    """The rigorous timing without its sample lists (``flopgap time --json`` keeps those)."""
    if m is None:
        return None
    d = m.to_dict()
    return {k: v for k, v in d.items() if k not in ("samples", "warmup_samples", "dispatch_samples",
                                                     "device_samples", "environment")}


def _batch(inputs) -> int:
    for t in inputs:
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return int(t.shape[0])
    return 1


def _op(r, t, n_launch, predicted_s, dev_t, profile, call_s) -> ExplainedOp:
    roof = classify(r.flops, r.bytes, profile, op_dtype(r))
    peak = profile.peak(op_dtype(r))
    return ExplainedOp(
        index=r.index, op=r.op, module=r.module, family=r.family, kind=r.kind, free=r.is_free, flops=r.flops,
        bytes=r.bytes, time_s=t, share=(t / call_s if t is not None and call_s else None),
        achieved_flops_s=(r.flops / t if t else None), achieved_bytes_s=(r.bytes / t if t else None),
        efficiency=(r.flops / t / peak if t and r.flops else None), launches=n_launch, device_time_s=dev_t,
        bound=roof.bound, t_compute=roof.t_compute, t_memory=roof.t_memory, t_overhead=roof.t_overhead,
        roofline_s=roof.time, predicted_s=predicted_s, inner_run=getattr(r, "inner_run", 0) or 0)


def _classes(timed: list[ExplainedOp], call_s: float, flops: int) -> dict[Bound, ClassShare]:
    out = {}
    for c in Bound:
        sel = [x for x in timed if x.bound == c]
        ct = sum(x.time_s for x in sel)
        cf = sum(x.flops for x in sel)
        out[c] = ClassShare(len(sel), ct, ct / call_s if call_s else 0.0, cf, cf / flops if flops else 0.0,
                            sum(x.bytes for x in sel))
    return out


def _modules(count_result, timed: list[ExplainedOp], call_s: float) -> list[ModuleTime]:
    """Each module's subtree sums (the same walk as the count's aggregation)."""
    acc = {m.name: [0.0, 0] for m in count_result.modules}
    for x in timed:
        parts = x.module.split(".") if x.module else []
        for i in range(len(parts) + 1):
            a = acc.get(".".join(parts[:i]))
            if a is not None:
                a[0] += x.time_s
                a[1] += x.launches
    out = []
    for m in count_result.modules:
        t, launches = acc[m.name]
        nbytes = m.bytes_read + m.bytes_written
        out.append(ModuleTime(m.name, m.type, m.depth, m.flops, nbytes, m.ops, t, launches,
                              t / call_s if call_s else 0.0, m.flops / t if t else None, nbytes / t if t else None))
    return out


def build_explanation(count_result, attribution: Attribution, profile, *, weight_bytes: int = 0, batch: int = 1,
                      measurement=None, disturbance=None) -> Explanation:
    """Join a count, an attribution and a profile (pure arithmetic: unit-testable).

    ``measurement`` is the rigorous timing (:class:`flopgap.timing.Measurement`) or
    ``None``; its median reconciles the profiled call only when it is trustworthy: at
    least 6 samples (a CI exists) and an undisturbed machine. ``disturbance`` is the
    sentinel's record of the profiled pass itself."""
    prediction = predict(count_result, profile)
    call_s = attribution.call_s
    dev_times = attribution.device_times or [None] * len(count_result.ops)
    rows = [_op(r, t, n, p["predicted_s"], dt, profile, call_s)
            for r, t, n, p, dt in zip(count_result.ops, attribution.times, attribution.launches, prediction.ops,
                                      dev_times)]
    timed = [x for x in rows if x.time_s is not None]
    ops_s = sum(x.time_s for x in timed)
    outside = call_s - ops_s
    flops = count_result.flops
    nbytes = count_result.bytes_read + count_result.bytes_written
    # only a trustworthy median reconciles: a CI exists and the machine was not disturbed
    med = (measurement.median if measurement is not None and not measurement.disturbed
           and math.isfinite(measurement.ci_low) else None)
    ref = med if med is not None else call_s
    peak = profile.peak("float32")
    totals = Totals(
        call_s=call_s, ops_s=ops_s, outside_s=outside,
        outside_share=max(outside, 0.0) / call_s if call_s else 0.0,
        # the profiler's own cost (profiled call - rigorous median) is not the model's
        # Python time: only the time outside ops beyond it counts as framework overhead
        outside_python_s=(max(0.0, outside - max(0.0, call_s - med)) if med is not None else max(outside, 0.0)),
        profiled_calls=attribution.calls, marker_s=attribution.marker_s,
        unmatched_events=dict(attribution.unmatched_events), unmatched_s=attribution.unmatched_s,
        unmatched_records=sum(1 for x in rows if not x.matched and not x.free),
        measured_median_s=med, profiler_overhead=(call_s / med - 1.0) if med else None,
        predicted_s=prediction.latency_s, roofline_s=prediction.roofline_s,
        prediction_error=(prediction.latency_s / med - 1.0) if med else None,
        interrupted=bool(measurement is not None and measurement.interrupted),
        disturbed=bool((measurement is not None and measurement.disturbed)
                       or (disturbance is not None and disturbance.disturbed)),
        threads=(measurement.spec.threads if measurement is not None else attribution.threads),
        flops=flops, bytes=nbytes, weight_bytes=weight_bytes, ops=len(count_result.kernel_ops),
        achieved_flops_s=flops / ref if ref else 0.0, efficiency=flops / ref / peak if ref and peak else 0.0,
        ridge_intensity=peak / profile.mem_bandwidth, batch=batch, launches=sum(attribution.launches),
        device=attribution.device,
        # CUDA: kernel time per call (the GPU busy) and the share of the call the GPU waits on the host
        device_s=attribution.device_s,
        gpu_idle_share=(max(0.0, 1.0 - attribution.device_s / call_s)
                        if attribution.device_s is not None and call_s else None),
        page_faults_per_call=attribution.page_faults_per_call,
    )
    ex = Explanation(count_result.model, list(count_result.inputs), rows, _modules(count_result, timed, call_s),
                     _classes(timed, call_s, flops), totals, profile, prediction, measurement=measurement,
                     disturbance=disturbance)
    ex.findings = _findings(ex)
    return ex


def explain(module, inputs, *, name: str = "model", count_result=None, profile=None, measure: bool = True,
            timer=None, calls: int | None = None, device: str | None = None, load=None,
            trace: str | Path | None = None) -> Explanation:
    """Explain ``module(*inputs)`` on this machine.

    Counts (unless ``count_result`` is given), loads or measures the machine profile for
    the thread count in effect (unless ``profile`` is given; cached per fingerprint),
    profiles ``calls`` forward passes under ``torch.profiler`` and joins them to the
    count, classifies each op by roofline, predicts, and (``measure=True``) times the
    model with :func:`flopgap.timing.measure` under ``timer`` (a
    :class:`~flopgap.timing.TimerOptions`; default: 2 s budget) to reconcile the profiled
    total with a rigorous median. ``timer.threads`` applies to the profile, the
    profiled pass and the timing alike. The disturbance sentinel watches the profiled
    pass and the timing (``load`` replaces its evidence source in tests); a disturbed
    measurement is kept and reported, never used to reconcile. Ctrl-C during the timing
    keeps what was measured (``totals.interrupted``).

    ``trace`` (a ``.json`` or ``.json.gz`` path): the profiled calls as a Chrome/Perfetto
    trace, ``torch.profiler``'s own export, its op events carrying flopgap's FLOPs,
    bytes, intensity and roofline class as ``flopgap.*`` args (see
    :mod:`flopgap.explain._trace`); ``Explanation.trace`` then says what was annotated.
    """
    from flopgap.timing import TimerOptions, threads_context
    from flopgap.timing import measure as timing_measure
    from flopgap.timing import Sentinel, system_load

    inputs = tuple(inputs)
    trace = _trace_path(trace)
    if calls is not None and calls < 1:
        raise UsageError(f"calls must be >= 1, got {calls}")
    if device is None:
        device = next((str(t.device) for t in inputs if isinstance(t, torch.Tensor)), "cpu")
    timer = timer if timer is not None else TimerOptions(max_time=_EXPLAIN_MAX_TIME)
    if not isinstance(timer, TimerOptions):
        raise UsageError(f"timer must be a TimerOptions, got {type(timer).__name__}")
    with threads_context(timer.threads) as threads:
        if count_result is None:
            from flopgap.count import count

            count_result = count(module, inputs, model=name)
        if count_result.meta:
            raise UsageError("explain needs a count of real tensors, not a meta count")
        if profile is None:
            from flopgap.machine import needs_for, profile_machine

            profile = profile_machine(device=device, needs=needs_for(count_result))
        sentinel = Sentinel(load if load is not None else system_load()) if timer.watch_load else None
        if sentinel is not None:
            sentinel.start(0.0, threads)
        attribution = profile_ops(module, inputs, count_result.ops, calls=calls, device=device, name=name,
                                  trace=trace)
        disturbance = sentinel.finish() if sentinel is not None else None
        measurement = None
        if measure:
            from flopgap.models import bind_inputs

            fn, args = bind_inputs(module, inputs)
            measurement = timing_measure(fn, args, timer.replace(device=device if device.startswith("cuda")
                                                                 else timer.device),
                                         name=name, load=load)
    ex = build_explanation(count_result, attribution, profile, weight_bytes=_weight_bytes(module),
                           batch=_batch(inputs), measurement=measurement, disturbance=disturbance)
    if trace is not None:
        from flopgap.explain._trace import annotate_trace

        rows = [{**op.to_dict(), "macs": r.macs} for op, r in zip(ex.ops, count_result.ops)]
        ex.trace = {"path": str(trace), **annotate_trace(
            trace, attribution.trace_joins, rows, model=name,
            conventions={k: v for k, v in ex.to_dict()["conventions"].items() if k in ("flops", "bytes", "bound", "class")})}
    return ex


def _trace_path(trace) -> Path | None:
    """The trace's path, checked before minutes of work: ``.json`` or ``.json.gz``, its folder creatable."""
    if trace is None:
        return None
    p = Path(trace)
    if not (p.name.endswith(".json") or p.name.endswith(".json.gz")):
        raise UsageError(f"--trace must be a .json or .json.gz path (Chrome/Perfetto trace), got {str(trace)!r}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write {str(p)!r}: {e.strerror}") from None
    return p
