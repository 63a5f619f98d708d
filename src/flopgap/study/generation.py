"""The generation study: the seed's question for LLMs on this machine.

Does a model with fewer FLOPs per token decode faster, in proportion? For each model
(Llama-style decoders of growing width and depth, GQA) and batch size: prefill P
tokens and time a decode step at the mean context (``flopgap.generate``), with counts,
floors and CIs. Across models at each batch: Spearman of decode FLOPs/token, bytes/token
and the memory floor with ms/token; inversions (fewer FLOPs per token, yet
significantly slower); and per model the batching verdict: is a decode step at batch B
"nearly free" (under half of B times the step at batch 1) because decode is not
compute-bound?

Verdicts come from CIs only, never from a median alone, and a timing that missed its
precision or carries the timer's warnings makes its verdict "inconclusive".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from flopgap.errors import UsageError
from flopgap.study._runner import Item, Retime, RunOutcome, close_run, open_run, run_items, stored_rows
from flopgap.study._stats import correlate, inversions

__all__ = ["GENERATION_MODELS", "GenerationStudyResult", "run_generation_study", "generation_result",
           "analyze_generation", "KIND"]

KIND = "generation"
_FREE_BATCHING = 0.5  # a batch of B "nearly free" when its step costs under half of B single steps

# (label, config overrides of hf:llama): widths 256..1024, 2..8 layers, GQA 4:1, vocab 32000
GENERATION_MODELS: list[tuple[str, dict]] = [
    ("llama-2L-256", {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 704,
                      "num_attention_heads": 4, "num_key_value_heads": 1}),
    ("llama-4L-512", {"num_hidden_layers": 4, "hidden_size": 512, "intermediate_size": 1408,
                      "num_attention_heads": 8, "num_key_value_heads": 2}),
    ("llama-6L-768", {"num_hidden_layers": 6, "hidden_size": 768, "intermediate_size": 2048,
                      "num_attention_heads": 12, "num_key_value_heads": 3}),
    ("llama-8L-1024", {"num_hidden_layers": 8, "hidden_size": 1024, "intermediate_size": 2816,
                       "num_attention_heads": 16, "num_key_value_heads": 4}),
]


def generation_items(models: Sequence[tuple[str, dict]], batches: Sequence[int]) -> list[Item]:
    if not batches or any(int(b) < 1 for b in batches):
        raise UsageError(f"--batch values must be positive integers, got {list(batches)}")
    return [Item(model=label, key=f"b{int(b)}", spec="hf:llama", batch=int(b), kwargs=tuple(sorted(kw.items())))
            for label, kw in models for b in batches]


def measure_generation(item: Item, *, prompt: int, new_tokens: int, max_time: float, precision: float,
                       threads: int | None, profile) -> dict:
    """One model at one batch: prefill and a decode step, counted, timed, against floors."""
    from flopgap.generate import GenerateOptions, run_generation

    options = GenerateOptions(prompt=prompt, new_tokens=new_tokens, batches=(item.batch,), threads=threads,
                              max_time=max_time, precision=precision)
    result = run_generation(item.spec, kwargs=item.kwargs_dict, options=options, profile=profile)
    timings = [t for t in (result.headline.prefill_time, result.headline.decode_time) if t is not None]
    if any(any("interrupted" in w for w in t.warnings) for t in timings):
        raise KeyboardInterrupt  # a partial measurement is not stored as a finished one
    # "disturbed" makes the study re-time the item (run_items), then keep it flagged
    return {**result.to_dict(), "disturbed": any(t.disturbed for t in timings)}


def _row(label: str, payload: dict) -> dict:
    point = payload["points"][0]
    dec, pre = point["decode"], point["prefill"]
    t = dec.get("time") or {}
    tokens = dec["count"]["tokens"]
    per = dec["count"]["per_token"]
    return {
        "label": label, "batch": point["batch"], "context": point["context"],
        "params_bytes": dec["count"]["weights"],
        "flops": per["flops"], "bytes": per["bytes"], "kv_share": (per["kv_read"] + per["kv_written"]) / per["bytes"]
        if per["bytes"] else 0.0,
        "memory_floor": dec["floors"]["memory_s"] / tokens, "compute_floor": dec["floors"]["compute_s"] / tokens,
        # per output token (seconds); the CI carried through the division by the batch
        "median": t["median_s"] / tokens if t.get("median_s") else None,
        "ci_low": t["ci_low_s"] / tokens if t.get("ci_low_s") else None,
        "ci_high": t["ci_high_s"] / tokens if t.get("ci_high_s") else None,
        "step_s": t.get("median_s"), "step_ci": (t.get("ci_low_s"), t.get("ci_high_s")),
        "n": t.get("n_samples"), "threads": t.get("threads"), "trustworthy": bool(t) and t.get("precision_met")
        and not t.get("warnings") and not payload.get("disturbed"),
        "mbu": (dec.get("utilisation") or {}).get("mbu"), "mfu": (dec.get("utilisation") or {}).get("mfu"),
        "ttft": (pre.get("time") or {}).get("median_s"),
    }


def _batching_verdicts(rows: Sequence[dict]) -> list[dict]:
    out = []
    by_model: dict[str, dict[int, dict]] = {}
    for r in rows:
        by_model.setdefault(r["label"], {})[r["batch"]] = r
    for label, per_batch in by_model.items():
        if 1 not in per_batch:
            continue
        one = per_batch[1]
        for b, r in sorted(per_batch.items()):
            if b == 1 or not (one.get("step_s") and r.get("step_s")):
                continue
            lo = r["step_ci"][0] / one["step_ci"][1] if r["step_ci"][0] and one["step_ci"][1] else None
            hi = r["step_ci"][1] / one["step_ci"][0] if r["step_ci"][1] and one["step_ci"][0] else None
            ratio = r["step_s"] / one["step_s"]
            if not (one["trustworthy"] and r["trustworthy"]) or lo is None or hi is None:
                verdict = "inconclusive"
            elif hi < _FREE_BATCHING * b:
                verdict = "holds"
            elif lo > _FREE_BATCHING * b:
                verdict = "does not hold"
            else:
                verdict = "inconclusive"
            out.append({"model": label, "batch": b, "step_ratio": ratio, "ci": [lo, hi], "tokens_ratio": b,
                        "verdict": verdict,
                        "text": f"{label}: a decode step at batch {b} costs {ratio:.2f}x [{_f(lo)}, {_f(hi)}] the "
                                f"step at batch 1 for {b}x the tokens"})
    return out


def _f(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.2f}"


def analyze_generation(rows: Sequence[dict], *, n_boot: int = 2000) -> dict:
    """Per batch across models: correlations with ms/token, inversions; batching verdicts."""
    out: dict = {"batches": {}, "batching": _batching_verdicts(rows)}
    for batch in sorted({r["batch"] for r in rows}):
        rs = [r for r in rows if r["batch"] == batch and r.get("median")]
        # no correlation or inversion rests on an untrustworthy timing (disturbed, imprecise): listed apart
        usable = [r for r in rs if r["trustworthy"]]
        lat = [r["median"] for r in usable]
        corr = {key: correlate([r[key] for r in usable], lat, n_boot=n_boot) for key in
                ("flops", "bytes", "memory_floor")} if len(usable) >= 3 else {}
        out["batches"][batch] = {"n": len(usable), "correlations": corr, "inversions": inversions(usable, by="flops"),
                                 "untrustworthy": [r["label"] for r in rs if not r["trustworthy"]]}
    return out


@dataclass
class GenerationStudyResult:
    run: object
    rows: list[dict]
    analysis: dict
    failures: dict[str, str] = field(default_factory=dict)
    outcome: RunOutcome | None = None

    def to_dict(self) -> dict:
        return {"schema": "flopgap.study.generation/1", "run": self.run.to_dict(), "rows": self.rows,
                "analysis": {"batches": {str(b): a for b, a in self.analysis["batches"].items()},
                             "batching": self.analysis["batching"]},
                "failures": self.failures}


def generation_result(store, run_id, *, outcome: RunOutcome | None = None, n_boot: int = 2000):
    run, rows, failures = stored_rows(store, run_id, KIND, _row)
    return GenerationStudyResult(run, rows, analyze_generation(rows, n_boot=n_boot), failures, outcome)


def run_generation_study(*, store, models: Sequence[tuple[str, dict]] | None = None, batches: Sequence[int] = (1, 4),
                         prompt: int = 128, new_tokens: int = 32, max_time: float = 2.0, precision: float = 0.02,
                         threads: int | None = None, resume: bool = False, progress=None,
                         measure: Callable[[Item], dict] | None = None, machine: dict | None = None,
                         profile=None, retime: Retime = Retime()) -> GenerationStudyResult:
    """Run (or resume) the generation study into ``store``. ``progress(event)`` receives
    :class:`flopgap.study.Progress` events; an item timed on a disturbed machine is
    re-timed as ``retime`` says. ``measure`` and ``machine`` replace the per-item
    measurement and the machine metadata (tests)."""
    models = list(models or GENERATION_MODELS)
    items = generation_items(models, batches)
    config = {"models": [[label, kw] for label, kw in models], "batches": [int(b) for b in batches],
              "prompt": prompt, "new_tokens": new_tokens, "max_time": max_time, "precision": precision,
              "threads": threads}
    if machine is None:
        from flopgap.timing import environment

        machine = environment()
    if measure is None:
        if profile is None:
            from flopgap.generate import machine_profile

            profile = machine_profile()

        def measure(it: Item) -> dict:
            return measure_generation(it, prompt=prompt, new_tokens=new_tokens, max_time=max_time,
                                      precision=precision, threads=threads, profile=profile)

    run_id, resumed = open_run(store, KIND, config, machine, resume=resume, name=f"{len(models)} decoders")
    outcome = run_items(store, run_id, items, measure, kind="model", progress=progress, label="generation",
                        resumed=resumed, retime=retime)
    result = generation_result(store, run_id, outcome=outcome)
    return close_run(store, run_id, result, measured=bool(result.rows), nothing="every model failed")
