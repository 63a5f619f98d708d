"""The sweep runner: every variant x thread setting x batch size, timed against eager.

Pseudocode::

    for batch in batches:                       # inputs, eager outputs, eager count: once per batch
        ...
    for variant in variants:
        for threads in thread_settings:
            built = variant.build(deepcopy(eager))       # failure -> one "failed" row per batch
            for batch in batches:
                first call (compile time for compiled variants), error vs eager outputs,
                counting pass (where the dispatcher sees the work), no-op verdict,
                peak memory of one call,
                compare(eager, variant) alternating -> latency, speed-up (eager/variant) with CI

A variant that raises is reported with a one-line reason and the sweep goes on. Ctrl-C
stops the sweep and returns the rows measured so far with ``interrupted=True``.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from flopgap._units import fmt_latency
from flopgap._summary import summary_html, summary_repr
from flopgap._json import jsonable
from flopgap.errors import UsageError, one_line
from flopgap.timing import TimerOptions, check_device, environment, threads_context
from flopgap.variants._registry import Built, Variant, default_variants, get_variant

__all__ = ["VariantRow", "VariantsResult", "run_variants", "VARIANTS_SCHEMA"]

VARIANTS_SCHEMA = "flopgap.variants/1"
_VARIANT_MAX_TIME = 2.0  # seconds per variant x batch x threads: a 2% CI for models up to ~50 ms
STATUSES = ("ok", "no-op", "failed")


@dataclass
class VariantRow:
    """One variant at one batch size and thread setting. Times are seconds per call."""

    variant: str
    batch: int
    threads: int | None
    status: str                      # ok | no-op | failed
    reason: str = ""                 # one line: why it failed, or what made it a no-op
    latency_s: float | None = None   # median
    latency_ci: tuple[float, float] | None = None
    eager_latency_s: float | None = None  # eager, timed alternately with this variant
    speedup: float | None = None     # eager / variant (above 1: the variant is faster)
    speedup_ci: tuple[float, float] | None = None
    throughput: float | None = None  # items (batch rows) per second
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    peak_mem_bytes: int | None = None
    weight_bytes: int | None = None
    ops: int | None = None           # counted kernel ops of one call (None: not countable)
    ops_eager: int | None = None
    op_changes: dict | None = None
    build_s: float | None = None     # building the variant (quantizing, wrapping)
    first_call_s: float | None = None  # first call at this shape: compile time for compiled variants
    compiled: bool = False
    notes: list[str] = field(default_factory=list)
    timing: dict | None = None       # the comparison's own record (flopgap.time)
    n_samples: int | None = None     # samples behind latency_s
    measured_threads: int | None = None  # intra-op threads in effect while timing
    precision_met: bool | None = None
    disturbed: bool = False          # the sentinel saw a busy machine while this row was timed
    warnings: list[str] = field(default_factory=list)
    explain: dict | None = None      # flopgap.explain's split for eager and this variant (slower rows, on request)

    @property
    def per_item_s(self) -> float | None:
        return self.latency_s / self.batch if self.latency_s is not None else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_item_s"] = self.per_item_s
        return jsonable(d)


@dataclass
class VariantsResult:
    """All rows of a sweep, the findings drawn from them, and how they were measured."""

    model: str
    inputs: list[str]
    variants: list[str]
    batches: list[int]
    threads: list[int | None]
    rows: list[VariantRow]
    findings: list = field(default_factory=list)  # VariantFinding records
    device: str = "cpu"
    interrupted: bool = False
    settings: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)

    __repr__ = summary_repr
    _repr_html_ = summary_html

    @property
    def warnings(self) -> list[str]:
        """Interruption, disturbed or failed rows, and notes on what could not be checked."""
        out = [f.text for f in self.findings if f.kind in ("interrupted", "disturbed", "inconclusive", "failed")]
        return out + list(self.settings.get("notes", []))

    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        rows = []
        for r in self.rows:
            where = f"{r.variant} b{r.batch}" + (f" {r.threads}t" if r.threads else "")
            if r.status == "failed":
                rows.append((where, "failed"))
            elif r.variant == "eager":
                rows.append((where, fmt_latency(r.latency_s, *(r.latency_ci or (None, None)), r.n_samples,
                                                r.measured_threads, disturbed=r.disturbed)))
            elif r.speedup is not None:
                lo, hi = r.speedup_ci or (None, None)
                ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None and lo == lo else " [no CI]"
                rows.append((where, f"{r.speedup:.2f}x{ci}" + (f" {r.status}" if r.status != "ok" else "")
                             + (" DISTURBED" if r.disturbed else "")))
        return f"{self.model} on {self.device}", rows

    def row(self, variant: str, batch: int | None = None, threads: int | None | str = "any") -> VariantRow:
        """The first row of ``variant`` (at ``batch`` and ``threads`` when given)."""
        for r in self.rows:
            if r.variant == variant and (batch is None or r.batch == batch) and (threads == "any" or r.threads == threads):
                return r
        raise KeyError(f"no row for variant {variant!r} batch {batch} threads {threads}")

    def to_dict(self) -> dict:
        return {
            "schema": VARIANTS_SCHEMA,
            "model": self.model,
            "inputs": self.inputs,
            "device": self.device,
            "variants": self.variants,
            "batches": self.batches,
            "threads": self.threads,
            "interrupted": self.interrupted,
            "conventions": {
                "latency": "median seconds per call (flopgap.timing), 95% CI",
                "speedup": "eager latency / variant latency, both timed alternately (flopgap.timing.compare); "
                           "above 1 the variant is faster",
                "throughput": "batch / median latency (items per second)",
                "max_rel_err": "max|variant - eager| / max|eager| per output tensor, largest over outputs",
                "no-op": "module tree (types, dtypes, shapes, strides) and counted kernel-op sequence identical "
                         "to eager, or the compiler produced no graph",
                "peak_mem": self.settings.get("peak_memory_method", ""),
                "first_call_s": "first call at each input shape; for compiled variants this is the compile time, "
                                "kept apart from the steady-state latency",
            },
            "settings": self.settings,
            "rows": [r.to_dict() for r in self.rows],
            "findings": [f.to_dict() for f in self.findings],
            "environment": self.environment,
        }


def _resolve_variants(variants, module: nn.Module, device: str) -> list[Variant]:
    if variants is None:
        chosen = default_variants(module, device)
    else:
        if isinstance(variants, (str, Variant)):
            variants = [variants]
        chosen = []
        for v in variants:
            v = get_variant(v.strip()) if isinstance(v, str) else v
            if not isinstance(v, Variant):
                raise UsageError(f"not a variant: {v!r}")
            if v.name not in [c.name for c in chosen]:
                chosen.append(v)
        if not chosen:
            raise UsageError("no variant to try: --try needs at least one name")
    names = [v.name for v in chosen]
    if "eager" not in names:
        chosen.insert(0, get_variant("eager"))  # the baseline every speed-up is against
    else:
        chosen.insert(0, chosen.pop(names.index("eager")))
    return chosen


def _check_sizes(values: Sequence, what: str, allow_none: bool) -> list:
    out = []
    for v in values:
        if v is None and allow_none:
            out.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise UsageError(f"{what} must be positive integers, got {v!r}")
        if v not in out:
            out.append(v)
    if not out:
        raise UsageError(f"{what}: give at least one value")
    return out


def _load(spec_or_loaded, kwargs: dict | None):
    from flopgap.models import LoadedModel, load_model

    if isinstance(spec_or_loaded, LoadedModel):
        return spec_or_loaded
    if isinstance(spec_or_loaded, str):
        return load_model(spec_or_loaded, kwargs)
    if isinstance(spec_or_loaded, nn.Module):
        return LoadedModel(type(spec_or_loaded).__name__, spec_or_loaded.eval(), None, "module")
    raise UsageError(f"run_variants needs a model spec, LoadedModel or nn.Module, got {type(spec_or_loaded).__name__}")


@dataclass
class _BatchCase:
    specs: tuple
    inputs: tuple
    eager_out: object
    eager_ops: list | None
    eager_ops_n: int | None
    explain_on: bool = False
    eager_explain: dict | None = None


def run_variants(spec_or_loaded, *, variants: Sequence[str | Variant] | None = None,
                 batches: Sequence[int] = (1,), threads: Sequence[int | None] = (None,),
                 input_specs: list[str] | None = None, kwargs: dict | None = None,
                 timer: TimerOptions | None = None, device: str | None = None,
                 explain: bool = False, progress: Callable[[str], None] | None = None,
                 clock=None, load=None) -> VariantsResult:
    """Time each variant of a model against eager at each batch size and thread count.

    ``spec_or_loaded`` is a model spec (``seed:ex3-float``), a
    :class:`~flopgap.models.LoadedModel` or an ``nn.Module`` (then pass ``input_specs``).
    ``variants`` are registered names or :class:`Variant` objects (default: every
    registered default variant whose ``applies`` holds); ``eager`` is always run first as
    the baseline. ``timer`` (:class:`~flopgap.timing.TimerOptions`, default a 2 s budget)
    times each comparison, with each row's thread count and the device set per row;
    ``clock`` and ``load`` go to the timer (tests pass fakes). A row whose timing the
    sentinel found disturbed says so (``disturbed``, ``warnings``), and findings never
    rest on it.
    ``explain=True`` runs :func:`flopgap.explain.explain` on eager and on each variant
    that came out slower (where the counting pass can see it) to give the "why".
    Where eager cannot be counted at a batch size, no-op detection by op sequence is off
    there, and ``settings["notes"]`` (and each row's notes) say so.
    """
    from flopgap.count import count
    from flopgap.models import call_model, make_inputs, resolve_inputs
    from flopgap.variants._findings import findings
    from flopgap.variants._probe import PEAK_MEMORY_METHOD, op_sequence, tree_signature

    device = check_device(device)
    kind = torch.device(device).type   # cpu | cuda: what the variants' predicates look at
    loaded = _load(spec_or_loaded, kwargs)
    batches = _check_sizes(batches, "batch sizes", allow_none=False)
    threads = _check_sizes(threads, "thread counts", allow_none=True)
    timer = timer if timer is not None else TimerOptions(max_time=_VARIANT_MAX_TIME)
    if not isinstance(timer, TimerOptions):
        raise UsageError(f"timer must be a TimerOptions, got {type(timer).__name__}")
    eager = loaded.module.to(device).eval()
    chosen = _resolve_variants(variants, eager, kind)
    say = progress or (lambda msg: None)

    result = VariantsResult(
        loaded.spec, [], [v.name for v in chosen], list(batches), list(threads), [], device=device,
        settings={"precision": timer.precision, "max_time": timer.max_time, "timer": timer.to_dict(),
                  "peak_memory_method": PEAK_MEMORY_METHOD[kind], "explain": explain},
    )
    result.environment = environment(device)
    eager_sig = tree_signature(eager)

    try:
        cases: dict[int, _BatchCase] = {}
        for b in batches:
            specs = resolve_inputs(loaded, input_specs, b)
            if any(s.name for s in specs):
                raise UsageError("variants takes positional inputs only (no NAME=SPEC): the variants it builds "
                                 "(compiled, quantized, CUDA graphs) are called with positional arguments")
            inputs = tuple(t.to(device) for t in make_inputs(specs))
            with torch.inference_mode():
                eager_out = call_model(eager, inputs, loaded.spec)  # a model error is a one-line UsageError
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    c = count(eager, inputs, model=loaded.spec, python=False)
                ops = op_sequence(c)
            except Exception as e:  # counting is a bonus here, never a reason to stop: say what is lost
                ops = None
                note = f"eager count failed at batch {b}: {one_line(e)}; no-op detection off"
                result.settings.setdefault("notes", []).append(note)
            cases[b] = _BatchCase(specs, inputs, eager_out, ops, len(ops) if ops is not None else None,
                                  explain_on=explain)
        result.inputs = [" ".join(map(str, cases[b].specs)) for b in batches]
        for variant, t in ((v, t) for v in chosen for t in threads):
            timing = _Timing(timer.replace(threads=t, device=device), clock, load)
            if _run_variant(result, variant, eager, eager_sig, cases, timing, say, count):
                result.interrupted = True  # the timer stopped on Ctrl-C: keep the rows, stop the sweep
                break
    except KeyboardInterrupt:
        result.interrupted = True
    result.findings = findings(result)
    return result


@dataclass
class _Ctx:
    built: Built | None
    reason: str
    build_s: float | None
    warnings: list[str]


def _build(variant: Variant, eager: nn.Module, inputs: tuple, threads: int | None) -> _Ctx:
    try:
        with threads_context(threads), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            built = variant.build(copy.deepcopy(eager), inputs)
            build_s = time.perf_counter() - t0
        if not isinstance(built, Built):
            raise TypeError(f"variant {variant.name!r} build returned {type(built).__name__}, not Built")
        return _Ctx(built, "", build_s, _warning_lines(caught))
    except KeyboardInterrupt:
        raise
    except Exception as e:
        return _Ctx(None, one_line(e), None, [])


def _warning_lines(caught) -> list[str]:
    out = []
    for w in caught:
        line = str(w.message).strip().splitlines()[0][:200] if str(w.message).strip() else w.category.__name__
        if line not in out:
            out.append(line)
    return out


@dataclass(frozen=True)
class _Timing:
    """How each row is timed: the options (with the row's threads and device), the clock and the load source."""

    options: TimerOptions
    clock: object = None
    load: object = None

    @property
    def threads(self) -> int | None:
        return self.options.threads

    @property
    def device(self) -> str:
        return self.options.device


def _run_variant(result, variant, eager, eager_sig, cases, timing: _Timing, say, count) -> bool:
    """Build the variant once, then measure one row per batch; returns whether Ctrl-C
    stopped the timing (the sweep stops there, keeping every row measured so far)."""
    threads = timing.threads
    first_batch = next(iter(cases))
    say(f"{variant.name}: building" + (f" ({threads} threads)" if threads else ""))
    ctx = _build(variant, eager, cases[first_batch].inputs, threads)
    try:
        for b, case in cases.items():
            row = VariantRow(variant.name, b, threads, "failed", build_s=ctx.build_s)
            result.rows.append(row)  # appended first: an interrupt keeps what was measured
            if ctx.built is None:
                row.reason = f"build failed: {ctx.reason}"
                continue
            row.notes = list(ctx.built.notes) + [f"warning: {w}" for w in ctx.warnings if w not in ctx.built.notes]
            row.compiled = ctx.built.compiled
            if case.eager_ops is None and variant.name != "eager":
                row.notes.append("no-op detection off: the eager model could not be counted at this batch "
                                 "(see settings.notes)")
            say(f"{variant.name}: batch {b}" + (f", {threads} threads" if threads else ""))
            try:
                if _measure_row(row, variant, ctx.built, eager, eager_sig, case, timing, count):
                    return True
            except KeyboardInterrupt:
                if not row.reason:
                    row.reason = "interrupted before this row was measured"
                raise
            except _Phase as e:
                row.status, row.reason = "failed", str(e)
            except Exception as e:
                row.status, row.reason = "failed", one_line(e)
        return False
    finally:
        del ctx
        gc.collect()


class _Phase(Exception):
    """A failure already phrased as one line with the phase it happened in."""


@contextlib.contextmanager
def _quiet_compiler_logs(on: bool):
    """Inductor logs a CUDA_HOME notice on CPU-only machines; the sweep states what ran instead."""
    if not on:
        yield
        return
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_call(row, built, inputs, timing: _Timing):
    """The first call at this shape (a compiled variant compiles here), timed apart."""
    try:
        with threads_context(timing.threads), warnings.catch_warnings(), torch.inference_mode(), \
                _quiet_compiler_logs(built.compiled):
            warnings.simplefilter("ignore")
            built.before_first_call()
            t0 = time.perf_counter()
            out = built.fn(*inputs)
            if timing.device.startswith("cuda"):
                torch.cuda.synchronize()
            row.first_call_s = time.perf_counter() - t0
    except Exception as e:
        raise _Phase(f"first call{' (compiling)' if built.compiled else ''}: {one_line(e)}") from None
    return out


def _is_noop(row, variant, built, inputs, case, eager_sig, count) -> bool:
    """The variant's own verdict first (the compiler made no graph), then the module tree
    and the counted op sequence against eager's; fills the row's op counts on the way."""
    from flopgap.explain import weight_bytes
    from flopgap.variants._probe import op_changes, op_sequence, tree_signature

    verdict = built.verdict()
    variant_ops = None
    if built.module is not None:
        row.weight_bytes = weight_bytes(built.module)
    if built.countable and built.module is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                variant_ops = op_sequence(count(built.module, inputs, model=variant.name, python=False))
        except Exception as e:
            row.notes.append(f"counting pass could not run on this variant: {one_line(e)}")
    elif not built.countable:
        row.notes.append("kernel-op count n/a: compiled code runs outside the dispatcher the counting pass watches")
    row.ops_eager = case.eager_ops_n
    if variant_ops is not None:
        row.ops = len(variant_ops)
        if case.eager_ops is not None:
            row.op_changes = op_changes(case.eager_ops, variant_ops)
    if variant.name == "eager":
        return False
    if verdict is False:
        row.reason = "did not change the model: the compiler produced no graph (runs eager)"
        return True
    if verdict is None and built.module is not None and variant_ops is not None and case.eager_ops is not None:
        noop = (tree_signature(built.module) == eager_sig and variant_ops == case.eager_ops
                and all(a is b for a, b in zip(inputs, case.inputs)))
        if noop:
            row.reason = "did not change the model: module tree and op sequence identical to eager"
        return noop
    return False


def _time_row(row, variant, built, eager, inputs, case, timing: _Timing) -> bool:
    """Latency with its CI (eager alone; a variant alternately with eager, for the
    speed-up); returns whether Ctrl-C stopped the timer."""
    from flopgap.timing import compare, measure

    if variant.name == "eager":
        m = measure(built.fn, inputs, timing.options, name="eager", clock=timing.clock, load=timing.load)
        row.latency_s, row.latency_ci = m.median, (m.ci_low, m.ci_high)
        row.eager_latency_s = m.median
        row.speedup, row.speedup_ci = 1.0, (1.0, 1.0)
        row.timing = {"kind": "measurement", "eager": _compact(m)}
        interrupted, mine = m.interrupted, m
    else:
        c = compare(eager, case.inputs, built.fn, inputs, timing.options, names=("eager", variant.name),
                    clock=timing.clock, load=timing.load)
        row.latency_s, row.latency_ci = c.b.median, (c.b.ci_low, c.b.ci_high)
        row.eager_latency_s = c.a.median
        row.speedup, row.speedup_ci = c.ratio, (c.ci_low, c.ci_high)
        row.timing = {"kind": "comparison", "ratio": c.ratio, "ci_low": c.ci_low, "ci_high": c.ci_high,
                      "excludes_one": c.excludes_one, "eager": _compact(c.a), variant.name: _compact(c.b)}
        interrupted, mine = c.interrupted, c.b
    row.n_samples = mine.n_samples
    row.measured_threads = mine.spec.threads
    row.disturbed = mine.disturbed
    row.precision_met = mine.precision_met
    row.warnings = mine.warnings
    row.throughput = row.batch / row.latency_s if row.latency_s else None
    return interrupted


def _measure_row(row, variant, built, eager, eager_sig, case, timing: _Timing, count) -> bool:
    """First call and error, no-op detection, peak memory, then the timing; returns
    whether Ctrl-C stopped the timing (the row keeps what was measured)."""
    from flopgap.variants._probe import NonFiniteOutput, output_error, peak_memory

    inputs = built.prepare(case.inputs)
    out = _first_call(row, built, inputs, timing)
    if variant.remedy:  # another workload (a training step) has no outputs to match eager's
        try:
            row.max_abs_err, row.max_rel_err = output_error(out, case.eager_out)
        except NonFiniteOutput as e:  # a variant that returns NaN is broken, not "0 error"
            raise _Phase(f"outputs: {e}") from None
    del out
    with threads_context(timing.threads):  # the row's thread count for every pass, not only the timing
        noop = _is_noop(row, variant, built, inputs, case, eager_sig, count)
        row.peak_mem_bytes, _ = peak_memory(built.fn, inputs)
    interrupted = _time_row(row, variant, built, eager, inputs, case, timing)
    row.status = "no-op" if noop else "ok"
    if interrupted:
        row.notes.append("timing interrupted: fewer samples than asked for")
    elif case.explain_on and variant.remedy and row.speedup_ci and row.speedup_ci[1] < 1 \
            and built.countable and built.module is not None:
        row.explain = _explain_pair(case, eager, built.module, inputs, variant.name, timing.device, timing.threads)
    return interrupted


def _explain_summary(e) -> dict:
    return {
        "dominant": str(e.dominant) if e.dominant is not None else None,
        "call_s": e.totals.call_s,
        "ops": e.totals.ops,
        "time_share": {str(k): v.time_share for k, v in e.classes.items()},
        "outside_share": e.totals.outside_share,
        "top_ops": [(r.op, r.time_s) for r in e.top_by("time_s", 3)],
    }


def _explain_pair(case, eager, module, inputs, name, device, threads) -> dict:
    """flopgap.explain on eager (once per batch and thread count) and on the variant, with the
    row's thread count; a failure is noted, not raised."""
    try:
        from flopgap.explain import explain

        with threads_context(threads), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cache = case.eager_explain if case.eager_explain is not None else {}
            case.eager_explain = cache
            if threads not in cache:
                cache[threads] = _explain_summary(explain(eager, case.inputs, name="eager", measure=False,
                                                          device=device))
            return {"eager": cache[threads],
                    name: _explain_summary(explain(module, inputs, name=name, measure=False, device=device))}
    except KeyboardInterrupt:
        raise
    except Exception as e:  # explain is optional here: say why it is missing
        return {"error": one_line(e)}


def _compact(m) -> dict:
    """The timer's summary without its sample lists (``flopgap time`` keeps those)."""
    keys = ("median", "ci_low", "ci_high", "half_width", "p5", "p95", "min", "n_samples", "calls", "block_size",
            "precision_met", "cold_s", "warmup_calls", "steady", "wall_s", "disturbed", "disturbance", "warnings")
    d = m.to_dict()
    return {k: d.get(k) for k in keys}
