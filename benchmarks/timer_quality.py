"""How good is flopgap's timer? Reproducibility and cost against two peers, in one run.

Timers compared, each in ``--processes`` fresh processes per model (interleaved:
process round p runs every model with every timer before round p + 1, so slow drift of
the machine hits all timers alike), all under ``torch.inference_mode()`` and with the
threads torch uses by default:

- ``flopgap``: ``flopgap.timing.measure(precision=0.01)`` (95% CI within 1%);
- ``adaptive_autorange``: ``torch.utils.benchmark.Timer(num_threads=<torch default>)
  .adaptive_autorange()`` with its defaults (threshold 0.1 = IQR/median, max 10 s);
- ``time.time``: the seed article's way, one call timed with ``time.time()``.

Figures:
1. reproducibility: max/min of the medians from the fresh processes (1.000 is perfect);
   target for flopgap <= 1.05 on every model whose median is >= 50 us, and lower
   than both peers;
2. cost: wall seconds each timer spent in one process (after imports and loading the
   model); target
   for flopgap's 1% CI: no more than adaptive_autorange's for its own default threshold.
3. the seed's claim 2: ``flopgap time seed:ex2-deep --vs seed:ex2-wide`` ratio and CI.

    python benchmarks/timer_quality.py            # full: 7 models x 3 timers x 5 processes
    python benchmarks/timer_quality.py --quick    # smoke run: 2 models, 2 processes
    python benchmarks/timer_quality.py --threads 1   # every timer with one torch thread
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = ["seed:ex1-small", "seed:ex1-large", "seed:ex2-deep", "seed:ex2-wide", "seed:ex3-float", "seed:ex3-int8",
          "torchvision:resnet18"]
QUICK_MODELS = ["seed:ex2-deep", "seed:ex2-wide"]
TIMERS = ["flopgap", "adaptive_autorange", "time.time"]
_FLOOR_S = 50e-6  # the reproducibility target applies to models at or above 50 us


def _worker(timer: str, spec: str, max_time: float, threads: int | None) -> dict:
    """One timing of one model in this (fresh) process; prints nothing but the JSON."""
    import torch

    if threads:
        torch.set_num_threads(threads)  # for every timer alike

    from flopgap.models import load_model, make_inputs, resolve_inputs

    from torch.utils.benchmark import Timer

    from flopgap.timing import TimerOptions, measure

    loaded = load_model(spec)
    x = make_inputs(resolve_inputs(loaded))
    m = loaded.module
    with torch.inference_mode():
        t0 = time.perf_counter()  # imports and model build are outside: cost is measuring time
        if timer == "flopgap":
            r = measure(m, x, TimerOptions(precision=0.01, max_time=max_time), name=spec)
            out = {"median": r.median, "met": r.precision_met, "half_width": r.half_width, "n": r.n_samples,
                   "threads": r.spec.threads, "disturbed": r.disturbed}
        elif timer == "adaptive_autorange":
            t = Timer(stmt="m(*x)", globals={"m": m, "x": x}, num_threads=torch.get_num_threads())
            r = t.adaptive_autorange(max_run_time=max_time)
            out = {"median": r.median, "met": r.has_warnings is False, "half_width": None}
        elif timer == "time.time":
            start = time.time()
            m(*x)
            out = {"median": time.time() - start, "met": None, "half_width": None}
        else:
            raise SystemExit(f"unknown timer {timer!r}")
        out["cost_s"] = time.perf_counter() - t0
    return out


def _spawn(timer: str, spec: str, max_time: float, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", timer, spec, "--max-time", str(max_time)]
    if threads:
        cmd += ["--threads", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"worker {timer} {spec} failed: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout)


def _fmt_us(s: float) -> str:
    return f"{s * 1e6:9.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 models, 2 processes, 2 s budgets")
    ap.add_argument("--processes", type=int, default=None, help="fresh processes per model and timer (default 5)")
    ap.add_argument("--max-time", type=float, default=None, help="per-timing budget in seconds (default 10)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for every timer (default: torch's own)")
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--worker", nargs=2, metavar=("TIMER", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    max_time = args.max_time or (2.0 if args.quick else 10.0)
    if args.worker:
        print(json.dumps(_worker(args.worker[0], args.worker[1], max_time, args.threads)))
        return

    import torch

    from flopgap.timing import environment

    models = args.models or (QUICK_MODELS if args.quick else MODELS)
    procs = args.processes or (2 if args.quick else 5)
    env = environment()
    print(f"# timer_quality: {len(models)} models x {len(TIMERS)} timers x {procs} fresh processes, "
          f"max_time {max_time:g} s")
    print(f"# {env['cpu_model']}, {env['logical_cores']} logical / {env['physical_cores']} physical cores, "
          f"torch {env['torch']} ({args.threads or torch.get_num_threads()} threads), BLAS {env['blas'].get('blas_info')}, "
          f"load average {env['load_average']}, {env['time']}")
    results = {(m, t): [] for m in models for t in TIMERS}
    t_start = time.perf_counter()
    try:
        for p in range(procs):
            for spec in models:
                for timer in TIMERS:
                    results[spec, timer].append(_spawn(timer, spec, max_time, args.threads))
            print(f"# round {p + 1}/{procs} done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    except KeyboardInterrupt:
        print("# interrupted: reporting the rounds that finished")

    print()
    print("1. reproducibility: max/min of per-process medians (median of medians in us)")
    print(f"{'model':24s} {'median us':>9s}  " + "  ".join(f"{t:>20s}" for t in TIMERS) + "  target             medians us (same order)")
    for spec in models:
        rows = [results[spec, t] for t in TIMERS]
        if not all(rows):
            continue
        spreads = [max(r["median"] for r in rs) / min(r["median"] for r in rs) for rs in rows]
        med = statistics.median(r["median"] for r in rows[0])
        if med >= _FLOOR_S:
            ok = spreads[0] <= 1.05 and spreads[0] < min(spreads[1:])
            verdict = "PASS" if ok else "FAIL"
        else:
            verdict = "better than peers" if spreads[0] < min(spreads[1:]) else "n/a (< 50 us)"
        meds = "/".join(f"{statistics.median(r['median'] for r in rs) * 1e6:.1f}" for rs in rows)
        print(f"{spec:24s} {_fmt_us(med)}  " + "  ".join(f"{s:20.3f}" for s in spreads) + f"  {verdict:18s} {meds}")

    print()
    print("2. cost: median wall seconds per timing (flopgap: 1% CI; adaptive_autorange: its default threshold)")
    print(f"{'model':24s} {'flopgap s':>10s} {'met':>5s} {'autorange s':>12s}  target")
    for spec in models:
        f, a = results[spec, "flopgap"], results[spec, "adaptive_autorange"]
        if not f or not a:
            continue
        fc, ac = statistics.median(r["cost_s"] for r in f), statistics.median(r["cost_s"] for r in a)
        met = sum(bool(r["met"]) for r in f)
        print(f"{spec:24s} {fc:10.2f} {met:>2d}/{len(f):<2d} {ac:12.2f}  {'PASS' if fc <= ac else 'FAIL'}")

    print()
    print("3. seed claim 2: flopgap time seed:ex2-deep --vs seed:ex2-wide")
    cmd = [sys.executable, "-m", "flopgap", "time", "seed:ex2-deep", "--vs", "seed:ex2-wide",
           "--max-time", str(max_time), "--json", "-"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode == 0:
        d = json.loads(r.stdout)
        print(f"ratio deep/wide = {d['ratio']:.3f}, 95% CI {d['ci_low']:.3f} .. {d['ci_high']:.3f} "
              f"({'excludes' if d['excludes_one'] else 'INCLUDES'} 1.0); medians "
              f"{d['a']['median'] * 1e6:.1f} us vs {d['b']['median'] * 1e6:.1f} us")
    else:
        print(f"failed: {r.stderr.strip()}")
    print(f"# total {time.perf_counter() - t_start:.0f} s; load average at end {environment()['load_average']}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import save

    figures = {"max_time": max_time, "processes": procs, "threads": args.threads or torch.get_num_threads(),
               "models": {spec: {t: results[spec, t] for t in TIMERS} for spec in models},
               "seed_claim_2": json.loads(r.stdout) if r.returncode == 0 else None}
    if figures["seed_claim_2"]:
        for side in ("a", "b"):
            figures["seed_claim_2"][side].pop("samples", None)
            figures["seed_claim_2"][side].pop("warmup_samples", None)
    print(f"# wrote {save('timer_quality' + ('-quick' if args.quick else ''), figures, environment=env)}")


if __name__ == "__main__":
    main()
