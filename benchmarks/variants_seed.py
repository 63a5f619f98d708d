"""Which remedy pays on this machine? Variants of the seed's three examples and a
BERT-like encoder (``nn.TransformerEncoder``, built from code, no downloads) at batch 1
and 32: speed-up of each variant over eager with its 95% CI.

    python benchmarks/variants_seed.py            # full: every variant, 1.5 s per comparison
    python benchmarks/variants_seed.py --quick    # fewer variants, smaller encoder, 0.5 s
    python benchmarks/variants_seed.py --json out.json --explain

Threads default to 1: on a small shared machine two intra-op threads wait on each other
whenever another process holds a core (milliseconds per call), which would drown the
effects measured here. ``--threads 2`` measures that instead.

Prints a Markdown table (model, batch, variant, status, latency, speed-up [CI]) and the
"slower" findings with their reasons (kernel-op counts from the counting pass, and with
``--explain`` flopgap.explain's split of eager and of each slower variant). The figures
go to ``benchmarks/results/variants_seed.json`` (``--quick``: ``variants_seed-quick.json``)
through ``_results.save`` (schema, commit, command line, machine); the full run's feed the
summary in docs/variants.md (``python benchmarks/summarize.py``). Run it on a quiet machine:
a row timed while the machine was disturbed is kept, marked, and no finding rests on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SEED = ["seed:ex1-small", "seed:ex1-large", "seed:ex2-deep", "seed:ex2-wide", "seed:ex3-float"]
FULL_VARIANTS = ["eager", "int8-dynamic", "int8-legacy", "compile", "compile-max-autotune", "bf16", "fp16",
                 "bf16-autocast"]
QUICK_VARIANTS = ["eager", "int8-dynamic", "int8-legacy", "compile", "bf16"]
_REPORTED = ("slower", "no-op", "failed", "compile-time", "unresolved", "inconclusive")  # findings listed with reasons
_ROW_KEYS = ("variant", "batch", "status", "reason", "latency_s", "latency_ci", "eager_latency_s", "speedup",
             "speedup_ci", "n_samples", "measured_threads", "precision_met", "disturbed", "first_call_s", "compiled",
             "ops", "ops_eager", "max_abs_err", "max_rel_err")


def _fmt_s(s):
    if s is None:
        return "-"
    return f"{s * 1e6:.3g} us" if s < 1e-3 else f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _speedup(r):
    if r.speedup is None:
        return "-"
    if r.variant == "eager":
        return "1 (baseline)"
    lo, hi = r.speedup_ci
    if lo is None or lo != lo or hi != hi:
        return f"{r.speedup:.2f}x [no CI]"
    return f"{r.speedup:.2f}x [{lo:.2f}, {hi:.2f}]"


def _figures(results, *, models, variants, threads, max_time, encoder_time, backend) -> dict:
    """The rows and findings the summary needs (the timings' sample lists stay in --json)."""
    return {"models": models, "variants": variants, "batches": [1, 32], "threads": threads, "max_time": max_time,
            "encoder_time": encoder_time, "int8_backend": backend,
            "results": [{"model": res.model, "inputs": res.inputs,
                         "rows": [{k: getattr(r, k) for k in _ROW_KEYS} for r in res.rows],
                         "findings": [f.to_dict() for f in res.findings]} for res in results]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer variants, zoo:bert-tiny, 0.5 s per comparison")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-time", type=float, default=None)
    ap.add_argument("--encoder-time", type=float, default=None,
                    help="seconds per comparison for the encoder (default 2 quick, 12 full)")
    ap.add_argument("--json", default=None, help="write every result (flopgap.variants/1) to this path")
    ap.add_argument("--explain", action="store_true", help="add flopgap.explain's split for each slower variant")
    args = ap.parse_args(argv)

    from flopgap.timing import TimerOptions, environment, threads_context
    from flopgap.variants import run_variants, torchao_status

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import save

    models = SEED + (["zoo:bert-tiny"] if args.quick else ["zoo:bert-mini"])
    variants = QUICK_VARIANTS if args.quick else FULL_VARIANTS
    max_time = args.max_time or (0.5 if args.quick else 1.5)
    args.encoder_time = args.encoder_time or (2.0 if args.quick else 12.0)
    usable, why = torchao_status()
    backend = why if usable else f"torch.ao ({why})"
    with threads_context(args.threads):  # the machine record states the thread count the variants run with
        machine = environment()
    print(f"# variants on the seed's examples and a BERT-like encoder ({'quick' if args.quick else 'full'})\n")
    print(f"threads {args.threads}, batches 1 and 32, {max_time} s per comparison ({args.encoder_time} s for the "
          f"encoder); int8-dynamic backend: {backend}\n", flush=True)
    results, t0 = [], time.perf_counter()
    rows_md = ["| model | batch | variant | status | latency | speed-up vs eager [95% CI] |",
               "|---|---|---|---|---|---|"]
    slower = []
    interrupted = False
    for spec in models:
        print(f"... {spec}", file=sys.stderr, flush=True)
        # the encoder at batch 32 takes ~1 s per call on a small CPU: give it enough time for a CI
        budget = max(max_time, args.encoder_time) if spec.startswith("zoo:") else max_time
        res = run_variants(spec, variants=variants, batches=(1, 32), threads=(args.threads,),
                           timer=TimerOptions(max_time=budget),
                           explain=args.explain)
        results.append(res)
        for r in sorted(res.rows, key=lambda r: (r.batch, variants.index(r.variant))):
            status = r.status if r.status == "ok" else f"{r.status}: {r.reason}"
            if r.disturbed:
                status += " (machine disturbed)"
            lat = _fmt_s(r.latency_s) + (f" (compile {_fmt_s(r.first_call_s)})" if r.compiled and r.first_call_s else "")
            rows_md.append(f"| {spec} | {r.batch} | {r.variant} | {status} | {lat} | {_speedup(r)} |")
        for f in res.findings:
            if f.kind in _REPORTED:
                slower.append((spec, f))
        if res.interrupted:
            interrupted = True
            break
    print("## speed-up vs eager [95% CI] (above 1: faster)\n")
    print("| model | batch | eager latency | " + " | ".join(v for v in variants if v != "eager") + " |")
    print("|---|---|---|" + "---|" * (len(variants) - 1))
    for res in results:
        for b in res.batches:
            cells = []
            for v in variants:
                r = next((r for r in res.rows if r.variant == v and r.batch == b), None)
                if v == "eager":
                    eager_lat = _fmt_s(r.latency_s) if r else "-"
                    continue
                cells.append("-" if r is None else r.status if r.status == "failed" else
                             _speedup(r).replace("x [", "x<br>[") + (" no-op" if r.status == "no-op" else ""))
            print(f"| {res.model} | {b} | {eager_lat} | " + " | ".join(cells) + " |")
    print("\n## every row\n")
    print("\n".join(rows_md))
    print("\n## where a variant was slower, did nothing, failed or could not be judged, and why\n")
    for spec, f in slower:
        print(f"- {spec}: {f.text}")
    print(f"\n_total {time.perf_counter() - t0:.0f} s_")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": [r.to_dict() for r in results]}, fh, indent=1, default=str)
    if interrupted:  # a partial sweep never replaces the latest complete figures
        print("interrupted: figures not saved to benchmarks/results")
        return 130
    figures = _figures(results, models=models, variants=variants, threads=args.threads, max_time=max_time,
                       encoder_time=args.encoder_time, backend=backend)
    print(f"wrote {save('variants_seed' + ('-quick' if args.quick else ''), figures, environment=machine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
