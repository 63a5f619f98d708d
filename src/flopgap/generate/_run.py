"""``run_generation``: count, time and explain prefill and decode of a causal LM.

Algorithm::

    session = the model + transformers' cache class (DynamicCache or StaticCache)
    for each batch B and context L in the sweep (the first point is B[0], L = P):
        count prefill of P tokens at B          (exact, per op, bytes split by tensor group)
        count a decode step against L tokens     (the same)
        floors = bytes / bandwidth, FLOPs / peak (this machine's measured ceilings)
        time prefill (fresh cache per call)      -> time to first token
        time a decode step (cache reset to L)    -> ms per output token
    decode over N new tokens: FLOPs and bytes are affine in the context length, so the
    mean step over contexts P .. P+N-1 is the mean of the first and last steps (both
    counted); the timed step is at the mean context P + (N-1)//2.
    findings: which floor binds each phase, how far from it the measured time is,
    what batching and a longer context do, in the seed's terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from flopgap.errors import UsageError
from flopgap.generate._phases import Floors, PhaseCount, count_phase, floors_for
from flopgap.generate._session import CACHE_KINDS, session_for
from flopgap.generate._timed import PhaseTiming, phase_timing, time_call

__all__ = ["GenerateOptions", "GenerationPoint", "GenerationResult", "run_generation", "GENERATE_SCHEMA"]

GENERATE_SCHEMA = "flopgap.generate/1"
_EFFECT = 0.05  # ratios within 5% of 1 are "no effect", as in the studies' verdicts


@dataclass(frozen=True)
class GenerateOptions:
    """What to generate and how to time it (validated on construction)."""

    prompt: int = 128
    new_tokens: int = 32
    batches: tuple[int, ...] = (1,)
    contexts: tuple[int, ...] | None = None  # decode contexts of the sweep (default: the mean context only)
    cache: str = "dynamic"
    threads: int | None = None
    precision: float = 0.02
    max_time: float = 2.0  # seconds of timing per phase and point
    device: str = "cpu"
    time: bool = True
    cuda_graph: bool = False

    def __post_init__(self):
        if self.prompt < 1:
            raise UsageError(f"--prompt must be >= 1 token, got {self.prompt}")
        if self.new_tokens < 1:
            raise UsageError(f"--new-tokens must be >= 1, got {self.new_tokens}")
        if not self.batches or any(int(b) < 1 for b in self.batches):
            raise UsageError(f"--batch values must be positive integers, got {list(self.batches)}")
        if self.contexts is not None and (not self.contexts or any(int(c) < 1 for c in self.contexts)):
            raise UsageError(f"--contexts values must be positive integers, got {list(self.contexts)}")
        if self.cache not in CACHE_KINDS:
            raise UsageError(f"--cache must be one of {', '.join(CACHE_KINDS)}, got {self.cache!r}")
        if not 0 < self.precision < 1:
            raise UsageError(f"--precision must be in (0, 1), got {self.precision}")
        if not self.max_time > 0:
            raise UsageError(f"--max-time must be > 0 seconds, got {self.max_time}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be a positive integer, got {self.threads}")
        if self.cuda_graph and not self.device.startswith("cuda"):
            raise UsageError("--cuda-graph needs --device cuda")

    @property
    def mean_context(self) -> int:
        """The mean cache length over the N decode steps (P, P+1, ..., P+N-1)."""
        return self.prompt + (self.new_tokens - 1) // 2

    def sweep_contexts(self) -> tuple[int, ...]:
        return tuple(int(c) for c in self.contexts) if self.contexts else (self.mean_context,)


@dataclass
class GenerationPoint:
    """One (batch, context) point: counts, floors and timings of both phases."""

    batch: int
    context: int
    prefill: PhaseCount
    decode: PhaseCount
    prefill_floors: Floors
    decode_floors: Floors
    prefill_time: PhaseTiming | None = None
    decode_time: PhaseTiming | None = None
    launches_per_token: float | None = None  # CUDA only
    graph_time: PhaseTiming | None = None  # CUDA graph of the decode step

    def to_dict(self) -> dict:
        out = {"batch": self.batch, "context": self.context,
               "prefill": {"count": self.prefill.to_dict(), "floors": self.prefill_floors.to_dict()},
               "decode": {"count": self.decode.to_dict(), "floors": self.decode_floors.to_dict()},
               "launches_per_token": self.launches_per_token}
        for phase, timing, floors, counted in (("prefill", self.prefill_time, self.prefill_floors, self.prefill),
                                               ("decode", self.decode_time, self.decode_floors, self.decode)):
            if timing is not None:
                out[phase]["time"] = timing.to_dict()
                out[phase]["utilisation"] = floors.utilisation(timing.median_s, counted)
        if self.graph_time is not None:
            out["decode"]["cuda_graph_time"] = self.graph_time.to_dict()
        return out


@dataclass
class GenerationResult:
    """Prefill and decode of one model: the first point is the headline, the others the sweep."""

    model: str
    options: GenerateOptions
    points: list[GenerationPoint]
    decode_first: PhaseCount  # the first decode step (context P)
    decode_last: PhaseCount  # the last one (context P+N-1)
    machine: dict
    findings: list[dict] = field(default_factory=list)
    environment: dict = field(default_factory=dict)

    @property
    def headline(self) -> GenerationPoint:
        return self.points[0]

    def decode_mean(self) -> dict:
        """Mean per-step figures over the N decode steps (exact: affine in the context)."""
        a, b = self.decode_first, self.decode_last
        keys = ("flops", "weights", "kv_read", "kv_written", "activations", "kernel_ops")
        return {k: (getattr(a, k) + getattr(b, k)) / 2 for k in keys} | {"tokens": a.tokens}

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"schema": GENERATE_SCHEMA, "model": self.model, "options": asdict(self.options),
                "points": [p.to_dict() for p in self.points],
                "decode_first": self.decode_first.to_dict(), "decode_last": self.decode_last.to_dict(),
                "decode_mean": self.decode_mean(), "machine": self.machine, "findings": self.findings,
                "environment": self.environment,
                "conventions": {"flops": "a fused multiply-add is 2 FLOPs",
                                "per_token": "per token processed: B*P for prefill, B for a decode step",
                                "bytes": "each tensor read once per op and each output written once; weights, "
                                         "KV cache read/written and activations apart"}}


def _machine_summary(profile) -> dict:
    return {"mem_bandwidth": profile.mem_bandwidth, "cache_bandwidth": profile.cache_bandwidth,
            "cache_bytes": profile.cache_bytes, "peak_flops": dict(profile.peak_flops),
            "dispatch_overhead_s": profile.dispatch_overhead_s, "quick": profile.quick, "source": profile.source}


def run_generation(spec, *, options: GenerateOptions | None = None, kwargs: dict | None = None, profile=None,
                   progress: Callable[[str], None] | None = None, clock=None) -> GenerationResult:
    """Count, time and explain prefill and decode of ``spec`` (``hf:ARCH`` or a loaded
    transformers causal LM). ``profile``: a :class:`flopgap.machine.MachineProfile`, or
    a callable returning one, called once the model is loaded (default:
    :func:`machine_profile`); ``clock``: the timer's clock (tests)."""
    from flopgap.timing import check_device, environment

    options = options or GenerateOptions()
    device = check_device(options.device, what="--device")
    session = session_for(spec, kwargs=kwargs, cache=options.cache, device=device)
    limit = getattr(session.config, "max_position_embeddings", None) or getattr(session.config, "n_positions", None)
    longest = max(options.prompt + options.new_tokens, *options.sweep_contexts()) + 1
    if limit and longest > limit:
        raise UsageError(f"{session.spec} holds {limit} positions; prompt + new tokens (or a sweep context) "
                         f"needs {longest}: shorten them or raise max_position_embeddings with --kwargs")
    if profile is None:
        profile = machine_profile(device)
    elif callable(profile):
        profile = profile()
    say = progress or (lambda msg: None)
    timing = dict(threads=options.threads, precision=options.precision, max_time=options.max_time,
                  device=device if device.startswith("cuda") else None)
    say("counting the first and last decode steps")
    batch0 = int(options.batches[0])
    first = count_phase(session, "decode", batch0, options.prompt)
    last = count_phase(session, "decode", batch0, options.prompt + options.new_tokens - 1)
    points = []
    for b in options.batches:
        for ctx in options.sweep_contexts():
            say(f"batch {b}, context {ctx}: counting")
            point = _point(session, int(b), int(ctx), options, profile)
            if options.time:
                say(f"batch {b}, context {ctx}: timing prefill and a decode step")
                _time_point(session, point, options, timing, clock)
            points.append(point)
    result = GenerationResult(session.spec, options, points, first, last, _machine_summary(profile),
                              environment=environment(device if device.startswith("cuda") else None))
    from flopgap.generate._findings import findings

    result.findings = findings(result, profile)
    return result


def machine_profile(device: str = "cpu", quick: bool | None = None):
    """This machine's profile: the full one when it is cached (or ``quick=False``),
    else the quick one (seconds to measure: peak FLOP/s and bandwidth are what the
    floors need; the calibration grid of the full profile is for explain's predictions)."""
    from flopgap.machine import cache_path, fingerprint, profile_machine

    dev = device if device.startswith("cuda") else None
    if quick is None:
        quick = not cache_path(fingerprint(dev), False).exists()
    return profile_machine(quick=quick, device=dev)


def _point(session, batch: int, context: int, options: GenerateOptions, profile) -> GenerationPoint:
    prefill = count_phase(session, "prefill", batch, options.prompt)
    decode = count_phase(session, "decode", batch, context)
    return GenerationPoint(batch, context, prefill, decode, floors_for(prefill, profile), floors_for(decode, profile))


def _time_point(session, point: GenerationPoint, options: GenerateOptions, timing: dict, clock) -> None:
    module = session.module
    fresh = session.prefill(point.batch, options.prompt)

    def prefill_call():
        inputs = fresh()
        out = module(*inputs, **inputs.kwargs)
        return out.logits[:, -1].argmax(-1)  # the first token

    m = time_call(prefill_call, name=f"{session.spec} prefill", options=timing, clock=clock)
    point.prefill_time = phase_timing(m, point.batch * options.prompt)
    inputs, reset = session.decode(point.batch, point.context)

    def step():
        reset()
        return module(*inputs, **inputs.kwargs)

    reset_m = time_call(reset, name="cache reset", options={**timing, "max_time": min(0.5, options.max_time)},
                        clock=clock)
    m = time_call(step, name=f"{session.spec} decode", options=timing, clock=clock)
    point.decode_time = phase_timing(m, point.batch, reset_s=reset_m.median)
    if session.device.startswith("cuda"):
        from flopgap.generate._cuda import graph_step, launches_per_call

        point.launches_per_token = launches_per_call(step) / point.batch
        if options.cuda_graph:
            replay = graph_step(step, cache_kind=session.cache)
            m = time_call(replay, name=f"{session.spec} decode (CUDA graph)", options=timing, clock=clock)
            point.graph_time = phase_timing(m, point.batch)


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def sweep_rows(result: GenerationResult) -> list[dict]:
    """One row per sweep point: floors and (when timed) measured decode step."""
    rows = []
    for p in result.points:
        row = {"batch": p.batch, "context": p.context,
               "decode_flops_per_token": p.decode.flops / p.decode.tokens,
               "decode_bytes_per_token": p.decode.bytes / p.decode.tokens,
               "kv_share": (p.decode.kv_read + p.decode.kv_written) / p.decode.bytes if p.decode.bytes else 0.0,
               "intensity": p.decode.intensity, "memory_floor_s": p.decode_floors.memory_s,
               "compute_floor_s": p.decode_floors.compute_s, "bound": p.decode_floors.bound}
        if p.decode_time is not None:
            row["step_s"] = p.decode_time.median_s
            row["ms_per_token"] = 1e3 * p.decode_time.median_s / p.batch
            row["tokens_per_s"] = p.decode_time.tokens_per_s
            row["of_floor"] = p.decode_floors.floor_s / p.decode_time.median_s
            row["trustworthy"] = p.decode_time.trustworthy
        rows.append(row)
    return rows
