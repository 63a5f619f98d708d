"""Findings drawn from a sweep: which variant paid, which did nothing, why a variant was
slower (from the counting pass and the timings), and batch/thread scaling.

Scaling rules (stated in every finding's text):

- per-item latency "stops falling" at batch ``b`` when the next batch in the sweep cuts
  per-item latency by less than 10%;
- overhead-bound (Horace He's diagnostic): latency grows by less than 10% per doubling
  of the batch, i.e. ``(L2 / L1) ** (1 / log2(b2 / b1)) < 1.10``;
- thread scaling efficiency: ``(L(t0) / L(t)) / (t / t0)`` against the smallest thread
  count ``t0`` in the sweep (1.0 = perfect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from flopgap._units import fmt_seconds

__all__ = ["findings", "cpu_flags", "VariantFinding"]

_STOP_FALLING = 0.10   # per-item gain below 10%: stopped falling
_OVERHEAD_GROWTH = 1.10  # latency growth per batch doubling below 10%: overhead-bound


@dataclass(frozen=True)
class VariantFinding:
    """One finding of a sweep: ``kind`` (faster, slower, no-gain, no-op, failed, cost,
    inconclusive, unresolved, compile-time, batch-saturation, overhead-bound,
    thread-scaling, disturbed, interrupted), its ``text`` with the numbers written out,
    where it applies, and the ``numbers`` themselves."""

    kind: str
    text: str
    variant: str | None = None
    batch: int | None = None
    threads: int | None = None
    numbers: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, "variant": self.variant, "batch": self.batch,
                "threads": self.threads, **self.numbers}


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where unavailable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _ci(r) -> str:
    lo, hi = r.speedup_ci or (None, None)
    return f"{r.speedup:.2f}x [{lo:.2f}, {hi:.2f}]" if lo is not None else f"{r.speedup:.2f}x"


def _nthreads(t: int) -> str:
    return f"{t} thread" + ("" if t == 1 else "s")


def _where(r) -> str:
    return f"batch {r.batch}" + (f", {_nthreads(r.threads)}" if r.threads else "")


def _has_ci(r) -> bool:
    return bool(r.latency_s) and r.latency_ci is not None and not any(
        v is None or math.isnan(v) for v in r.latency_ci)


def _gpu_half_support(device: str, variant: str) -> str:
    """The GPU's name and whether it has tensor cores for the variant's dtype."""
    import torch

    try:
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
    except (RuntimeError, AssertionError, ValueError):  # no CUDA here (e.g. a stored result re-rendered)
        return f"device {device}"
    need = (7, 0) if variant == "fp16" else (8, 0)
    dt = "fp16" if variant == "fp16" else "bf16"
    has = (major, minor) >= need
    return (f"GPU {name} (sm_{major}{minor}): {dt} tensor cores {'present' if has else 'absent'}; "
            "at small batch a GPU call is usually bound by kernel launches, which halving the bytes does not shorten")


def _why_slower(r, result) -> str:
    """The "why" for a slower variant, in numbers the sweep has."""
    parts = []
    eager = next((e for e in result.rows if e.variant == "eager" and e.batch == r.batch and e.threads == r.threads
                  and e.latency_s), None)
    if r.op_changes and r.ops is not None and r.ops_eager is not None:
        added = ", ".join(f"{k.removeprefix('aten.')} x{v}" for k, v in sorted(r.op_changes["added"].items(),
                                                                                   key=lambda kv: -kv[1])[:4])
        parts.append(f"{r.ops} kernel ops per call vs eager's {r.ops_eager}" + (f" (added: {added})" if added else ""))
        if eager and r.ops > r.ops_eager and r.latency_s and r.eager_latency_s:
            extra = r.latency_s - r.eager_latency_s
            parts.append(f"{fmt_seconds(extra)} more per call, {fmt_seconds(extra / (r.ops - r.ops_eager))} per added op")
    if r.variant.startswith("int8") and eager and eager.weight_bytes and r.weight_bytes:
        parts.append(f"weights {eager.weight_bytes / 1e6:.3g} MB -> {r.weight_bytes / 1e6:.3g} MB "
                     f"({(eager.weight_bytes - r.weight_bytes) / 1e6:.3g} MB less read per call), while every call "
                     "now quantizes its activations")
    if r.compiled and eager and eager.ops_eager and r.latency_s and r.eager_latency_s:
        parts.append(f"the compiled call takes {fmt_seconds(r.latency_s - r.eager_latency_s)} more than eager's "
                     f"{eager.ops_eager} kernel op(s) ({fmt_seconds(r.eager_latency_s / eager.ops_eager)} per op on average): "
                     "where eager's ops are already single GEMMs or fused kernels there is little left to fuse, "
                     "and the compiled call adds a fixed per-call cost (guards, wrapper)")
    if r.variant in ("bf16", "fp16", "bf16-autocast"):
        flags = None if str(result.device).startswith("cuda") else cpu_flags()
        if flags is None:
            parts.append(_gpu_half_support(result.device, r.variant))
        elif flags and r.variant != "fp16":
            fast = sorted(flags & {"avx512_bf16", "amx_bf16"})
            parts.append(f"CPU bf16 support: {', '.join(fast) if fast else 'no avx512_bf16/amx_bf16 (emulated)'}")
        elif flags:
            fast = sorted(flags & {"avx512_fp16", "amx_fp16", "f16c"})
            parts.append(f"CPU fp16 support: {', '.join(fast) if fast else 'none'}")
        if r.ops is not None and r.ops_eager is not None and r.ops != r.ops_eager:
            parts.append(f"{r.ops} kernel ops vs eager's {r.ops_eager} (casts)")
    if r.explain and "error" not in r.explain:
        ev, vv = r.explain.get("eager"), r.explain.get(r.variant)
        if ev and vv:
            top = ", ".join(f"{op.removeprefix('aten.')} {fmt_seconds(t)}" for op, t in vv["top_ops"] if t)
            parts.append(f"explain: eager {fmt_seconds(ev['call_s'])} per profiled call, {ev['dominant']}-bound; "
                         f"{r.variant} {fmt_seconds(vv['call_s'])}, {vv['dominant']}-bound "
                         f"({vv['time_share'].get('overhead', 0):.0%} in overhead-bound ops, "
                         f"{vv['outside_share'] or 0:.0%} outside ops); slowest ops: {top}")
    elif r.explain:
        parts.append(f"explain unavailable: {r.explain['error']}")
    return "; ".join(parts)


def _is_remedy(name: str) -> bool:
    from flopgap.variants._registry import get_variant

    try:
        return get_variant(name).remedy
    except Exception:  # a stored result naming a variant this build does not register
        return True


def _cost_finding(r) -> "VariantFinding":
    """Another workload (``train-step``): its cost in eager inference calls, with the CI."""
    lo, hi = r.speedup_ci or (None, None)
    cost = 1 / r.speedup if r.speedup else math.nan
    if lo and hi and not (math.isnan(lo) or math.isnan(hi)):
        ci = f" [{1 / hi:.2f}, {1 / lo:.2f}]"
        cost_ci = (1 / hi, 1 / lo)
    else:
        ci, cost_ci = " (no CI)", None
    return VariantFinding("cost", f"{r.variant} at {_where(r)}: {fmt_seconds(r.latency_s)} per step, {cost:.2f}x{ci} "
                          f"an eager inference call ({fmt_seconds(r.eager_latency_s)}, timed alternately)",
                          r.variant, r.batch, r.threads, {"cost": cost, "cost_ci": cost_ci})


def _variant_findings(result) -> list["VariantFinding"]:
    out = []
    for r in result.rows:
        if r.variant == "eager":
            continue
        base = (r.variant, r.batch, r.threads)
        if r.status == "failed":
            out.append(VariantFinding("failed", f"{r.variant} failed at {_where(r)}: {r.reason}", *base))
            continue
        if r.status == "no-op":
            out.append(VariantFinding("no-op", f"{r.variant} did not change the model at {_where(r)} "
                                      f"({r.reason.split(': ', 1)[-1]}); speed-up {_ci(r)}", *base))
            continue
        if r.speedup is None:
            continue
        if r.disturbed:  # no verdict rests on a busy machine: say so, with the sentinel's evidence
            out.append(VariantFinding(
                "inconclusive", f"{r.variant} at {_where(r)}: inconclusive, machine disturbed while timing "
                f"({'; '.join(w for w in r.warnings if w.startswith('machine disturbed'))[:300]}); "
                "re-run on a quiet machine", *base, {"speedup": r.speedup}))
            continue
        if not _is_remedy(r.variant):
            out.append(_cost_finding(r))
            continue
        lo, hi = r.speedup_ci or (r.speedup, r.speedup)
        if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
            n = (r.timing or {}).get(r.variant, {}).get("n_samples")
            out.append(VariantFinding(
                "unresolved", f"{r.variant} at {_where(r)}: speed-up {r.speedup:.2f}x but no CI "
                f"({n if n is not None else 'too few'} sample(s) in the time allowed: raise --max-time)", *base,
                {"speedup": r.speedup}))
            continue
        if lo > 1:
            kind, text = "faster", f"{r.variant} is faster than eager at {_where(r)}: {_ci(r)}"
        elif hi < 1:
            why = _why_slower(r, result)
            kind, text = "slower", f"{r.variant} is SLOWER than eager at {_where(r)}: {_ci(r)}" + (f"; why: {why}" if why else "")
        else:
            kind, text = "no-gain", f"{r.variant} did not pay at {_where(r)}: {_ci(r)} (CI includes 1)"
        out.append(VariantFinding(kind, text, *base, {"speedup": r.speedup, "speedup_ci": r.speedup_ci}))
        if r.compiled and r.first_call_s is not None and r.eager_latency_s and r.latency_s:
            saved = r.eager_latency_s - r.latency_s
            if lo > 1:
                pays = f"pays back after ~{math.ceil(r.first_call_s / saved):,} calls ({fmt_seconds(saved)} saved per call)"
            elif hi < 1:
                pays = "never pays back: the compiled model is slower"
            else:
                pays = "no payback established: speed-up not distinguishable from 1"
            out.append(VariantFinding("compile-time", f"{r.variant} took {r.first_call_s:.3g} s to compile at "
                                      f"{_where(r)}; {pays}", *base, {"compile_s": r.first_call_s}))
    return out


def _scaling_findings(result) -> list["VariantFinding"]:
    out = []
    groups: dict[tuple, list] = {}
    for r in result.rows:
        if _has_ci(r) and not r.disturbed:  # no CI, or a busy machine: no basis for a scaling claim
            groups.setdefault((r.variant, r.threads), []).append(r)
    if len(result.batches) > 1:
        for (variant, threads), rows in groups.items():
            rows = sorted(rows, key=lambda r: r.batch)
            if len(rows) < 2:
                continue
            where = f" ({_nthreads(threads)})" if threads else ""
            stop = None
            for a, b in zip(rows, rows[1:]):
                if b.per_item_s > (1 - _STOP_FALLING) * a.per_item_s:
                    stop = a.batch
                    break
            per_item = ", ".join(f"b{r.batch} {fmt_seconds(r.per_item_s)}" for r in rows)
            if stop is None:
                text = f"{variant}{where}: per-item latency still falling at batch {rows[-1].batch} ({per_item})"
            else:
                text = (f"{variant}{where}: per-item latency stops falling at batch {stop} "
                        f"(next batch gains < 10%; {per_item})")
            out.append(VariantFinding("batch-saturation", text, variant, stop, threads))
            bound = []
            for a, b in zip(rows, rows[1:]):
                growth = (b.latency_s / a.latency_s) ** (1 / math.log2(b.batch / a.batch))
                if growth < _OVERHEAD_GROWTH:
                    bound.append(f"{a.batch}->{b.batch} (x{growth:.2f} per doubling)")
            if bound:
                out.append(VariantFinding("overhead-bound", f"{variant}{where} is overhead-bound: latency grows < 10% "
                                          f"per batch doubling at {', '.join(bound)}", variant, None, threads))
    thread_values = [t for t in result.threads if t]
    if len(thread_values) > 1:
        t0 = min(thread_values)
        for variant in result.variants:
            for b in result.batches:
                rows = {r.threads: r for r in result.rows if r.variant == variant and r.batch == b and _has_ci(r)
                        and not r.disturbed}
                if t0 not in rows:
                    continue
                effs = []
                for t in sorted(rows):
                    if t and t != t0:
                        eff = (rows[t0].latency_s / rows[t].latency_s) / (t / t0)
                        effs.append(f"{_nthreads(t)} {eff:.0%}")
                if effs:
                    out.append(VariantFinding("thread-scaling", f"{variant} batch {b}: thread scaling efficiency vs "
                                              f"{_nthreads(t0)}: {', '.join(effs)}", variant, b))
    return out


def findings(result) -> list[VariantFinding]:
    """Every finding of a sweep, variant verdicts first, then scaling."""
    out = _variant_findings(result) + _scaling_findings(result)
    disturbed = [r for r in result.rows if r.disturbed]
    if disturbed:
        out.insert(0, VariantFinding(
            "disturbed", f"machine disturbed while timing {len(disturbed)} of {len(result.rows)} row(s) "
            f"({', '.join(sorted({f'{r.variant} {_where(r)}' for r in disturbed}))}): their speed-ups are shown "
            "but no finding rests on them"))
    if result.interrupted:
        out.insert(0, VariantFinding("interrupted", f"interrupted: {len(result.rows)} row(s) measured are kept"))
    return out
