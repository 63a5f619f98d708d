"""Findings in the seed's terms: does low FLOPs per token mean low time per token?

Each finding is ``{kind, title, text, verdict}``; ``verdict`` is ``holds``, ``does not
hold`` or ``inconclusive`` where the finding rests on timings, ``None`` where it is
arithmetic on the counts and the machine profile. A timing that missed its precision or
carries a warning from the timer never carries a verdict: it says "inconclusive" and why.
"""

from __future__ import annotations

from flopgap._units import fmt_bytes, fmt_seconds, pct, si

__all__ = ["findings"]

_SLOWER = 1.05  # "more time per token" needs the ratio beyond 5%, as the studies' verdicts
_FAR_FROM_FLOOR = 3.0  # a phase slower than 3x its roofline floor is not explained by the floor
_OVERHEAD_SHARE = 0.25  # dispatch cost above this share of the call: call it overhead-bound


def _timing_note(*timings) -> str | None:
    """Why these timings cannot carry a verdict (the timer's own warnings are listed
    with the timings), or ``None``."""
    bad = [t for t in timings if t is not None and not t.trustworthy]
    if not bad:
        return None
    reasons = []
    for t in bad:
        if not t.precision_met:
            reasons.append("precision not reached")
        if t.warnings:
            reasons.append(f"{len(t.warnings)} timing warning(s)")
    return ", ".join(dict.fromkeys(reasons))


def _fmt_ratio(x: float) -> str:
    return "-" if x != x or x in (float("inf"), float("-inf")) else f"{x:.1f}"


def _phase(result, name: str, point, profile) -> dict:
    count = getattr(point, name)
    floors = getattr(point, f"{name}_floors")
    timing = getattr(point, f"{name}_time")
    ridge = floors.peak / floors.bandwidth
    per = count.per_token()
    text = (f"{name} at batch {point.batch} ({'prompt' if name == 'prefill' else 'context'} {count.context}): "
            f"{si(per['flops'], 'FLOP')} and {fmt_bytes(per['bytes'])} per token, intensity "
            f"{count.intensity:.1f} FLOP/B against this machine's ridge {ridge:.1f} FLOP/B "
            f"({si(floors.peak, 'FLOP/s')} / {si(floors.bandwidth, 'B/s')}): {floors.bound}-bound on paper, "
            f"floor {fmt_seconds(floors.floor_s)} per call (memory {fmt_seconds(floors.memory_s)}, "
            f"compute {fmt_seconds(floors.compute_s)})")
    verdict = None
    if timing is not None:
        u = floors.utilisation(timing.median_s, count)
        if (u["mfu"] or 0) > 1 or (u["mbu"] or 0) > 1:
            text = ("the machine profile's ceilings are below what this run reached (it was measured while the "
                    "machine was busy, or is a quick profile): re-measure with `flopgap machine --refresh` on a "
                    "quiet machine before reading MFU/MBU. ") + text
        text += (f"; measured {fmt_seconds(timing.median_s)} per call [{fmt_seconds(timing.ci_low_s)}, "
                 f"{fmt_seconds(timing.ci_high_s)}] (n={timing.n_samples}, {timing.threads} threads, "
                 f"{timing.device}): {pct(u['mfu'])} of peak FLOP/s (MFU), {pct(u['mbu'])} of the bandwidth "
                 f"(MBU), {pct(u['of_floor'])} of the floor's speed")
        slack = timing.median_s / floors.floor_s if floors.floor_s else float("inf")
        if slack > _FAR_FROM_FLOOR:
            overhead = count.kernel_ops * profile.dispatch_overhead_s
            share = overhead / timing.median_s
            text += (f"; {slack:.1f}x its floor: neither bandwidth nor FLOP/s binds it. Its {count.kernel_ops} "
                     f"kernel ops at the measured {fmt_seconds(profile.dispatch_overhead_s)} dispatch cost each "
                     f"are {fmt_seconds(overhead)} ({pct(share)} of the call): ")
            text += ("per-op overhead, as the seed says of many small layers" if share > _OVERHEAD_SHARE else
                     "its kernels run far below the measured peak and bandwidth (GEMMs with few rows, "
                     "element-wise passes), not the dispatch cost")
        note = _timing_note(timing)
        if note:
            text = f"inconclusive at this noise ({note}): " + text
    return {"kind": f"{name}-roofline", "title": f"{name}: what bounds it", "text": text, "verdict": verdict}


def _prefill_vs_decode(point) -> dict | None:
    pt, dt = point.prefill_time, point.decode_time
    if pt is None or dt is None:
        return None
    fp = point.prefill.flops / point.prefill.tokens
    fd = point.decode.flops / point.decode.tokens
    tp = pt.median_s / pt.tokens
    td = dt.median_s / dt.tokens
    # the ratio's bounds from the two CIs (each a monotone function of one median)
    lo = (dt.ci_low_s / dt.tokens) / (pt.ci_high_s / pt.tokens)
    hi = (dt.ci_high_s / dt.tokens) / (pt.ci_low_s / pt.tokens)
    note = _timing_note(pt, dt)
    if note or lo != lo or hi != hi:
        verdict = "inconclusive"
    elif lo > _SLOWER:
        verdict = "holds"
    elif hi < _SLOWER:
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    text = (f"a decode token costs {si(fd, 'FLOP')} ({fd / fp:.2f}x a prefill token's {si(fp, 'FLOP')}) yet "
            f"takes {fmt_seconds(td)} against {fmt_seconds(tp)} per prefill token: {td / tp:.1f}x the time "
            f"[{_fmt_ratio(lo)}, {_fmt_ratio(hi)}] for {fd / fp:.2f}x the FLOPs. A decode step reads every weight "
            f"({fmt_bytes(point.decode.weights)}) for {point.decode.tokens} token(s); prefill shares that read "
            f"among {point.prefill.tokens} tokens")
    if note:
        text += f" (inconclusive at this noise: {note})"
    return {"kind": "seed-claim", "title": "equal FLOPs per token, unequal time: prefill vs decode",
            "text": text, "verdict": verdict}


def _batching(points) -> dict | None:
    by_ctx: dict[int, list] = {}
    for p in points:
        if p.decode_time is not None:
            by_ctx.setdefault(p.context, []).append(p)
    for ctx, ps in by_ctx.items():
        if len(ps) < 2:
            continue
        ps = sorted(ps, key=lambda p: p.batch)
        a, b = ps[0], ps[-1]
        step = b.decode_time.median_s / a.decode_time.median_s
        tokens = b.batch / a.batch
        floor = b.decode_floors.floor_s / a.decode_floors.floor_s
        note = _timing_note(a.decode_time, b.decode_time)
        text = (f"batching {b.batch} requests instead of {a.batch} at context {ctx} costs {step:.2f}x per decode "
                f"step for {tokens:.0f}x the tokens ({a.decode_time.tokens_per_s:.3g} -> "
                f"{b.decode_time.tokens_per_s:.3g} tokens/s); the step's floor grows {floor:.2f}x "
                f"(weights are read once per step whatever the batch; KV and activations grow with it), "
                f"its intensity {a.decode.intensity:.2f} -> {b.decode.intensity:.2f} FLOP/B")
        verdict = None
        if note:
            text += f" (inconclusive at this noise: {note})"
        return {"kind": "batching", "title": "batching decode", "text": text, "verdict": verdict}
    return None


def _context(points) -> dict | None:
    by_batch: dict[int, list] = {}
    for p in points:
        by_batch.setdefault(p.batch, []).append(p)
    for batch, ps in by_batch.items():
        if len(ps) < 2:
            continue
        ps = sorted(ps, key=lambda p: p.context)
        a, b = ps[0], ps[-1]
        kv_a = (a.decode.kv_read + a.decode.kv_written) / a.decode.tokens
        kv_b = (b.decode.kv_read + b.decode.kv_written) / b.decode.tokens
        text = (f"from context {a.context} to {b.context} at batch {batch}, the KV cache traffic per token grows "
                f"{fmt_bytes(kv_a)} -> {fmt_bytes(kv_b)} ({pct(kv_a * a.decode.tokens / a.decode.bytes)} -> "
                f"{pct(kv_b * b.decode.tokens / b.decode.bytes)} of the step's bytes) and the memory floor "
                f"{fmt_seconds(a.decode_floors.memory_s)} -> {fmt_seconds(b.decode_floors.memory_s)}")
        if a.decode_time is not None and b.decode_time is not None:
            text += (f"; measured {fmt_seconds(a.decode_time.median_s)} -> {fmt_seconds(b.decode_time.median_s)} "
                     "per step")
            note = _timing_note(a.decode_time, b.decode_time)
            if note:
                text += f" (inconclusive at this noise: {note})"
        return {"kind": "context", "title": "longer context", "text": text, "verdict": None}
    return None


def _cache(result) -> dict | None:
    p = result.headline
    if result.options.cache != "dynamic":
        return None
    new = p.decode.kv_written / p.decode.tokens
    return {"kind": "kv-cache", "title": "DynamicCache grows by concatenation",
            "text": (f"each decode step re-writes the whole KV cache ({fmt_bytes(new)} per token at context "
                     f"{p.context}): DynamicCache appends by torch.cat, a copy of every layer's keys and values. "
                     "A StaticCache (--cache static) writes only the new token's rows, and reads its whole "
                     "preallocated length every step instead"),
            "verdict": None}


def findings(result, profile) -> list[dict]:
    p = result.headline
    out = []
    for caveat in getattr(profile, "warnings", None) or []:
        out.append({"kind": "machine-profile", "title": "machine profile", "text": caveat, "verdict": None})
    out += [_phase(result, "decode", p, profile), _phase(result, "prefill", p, profile)]
    for f in (_prefill_vs_decode(p), _batching(result.points), _context(result.points), _cache(result)):
        if f is not None:
            out.append(f)
    return out
