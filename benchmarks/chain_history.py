"""Do the profile's synthetic chains run slower in the calibration's process than in a fresh one?

The machine profile fits its in-sequence terms on the chains' times
(``flopgap.machine._chains``). A model is timed in a process that ran little else; the
calibration child, by its second chain round, has run hundreds of single-op cases. This
benchmark times the same chains in both kinds of process, alternately, so that the
machine's slow spells fall on both sides: a *history* child first runs the calibration
grid's cases for ``--history-s`` seconds (each built, timed as the profile times it and
freed), then, ``--pairs`` times, a *fresh* child (built the chains, ran nothing else)
times every chain and the history child times them right after. Both children run with
glibc's allocator pinned as the profile pins it. Each pair gives a ratio history/fresh
per chain; the median over the pairs is the figure.

    .venv/bin/python benchmarks/chain_history.py [--pairs 5] [--history-s 40] [--threads 2]
        [--burst-s 0.4] [--no-save]

Figures go to ``benchmarks/results/chain_history.json`` with the machine's metadata.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _child(kind: str, threads: int, burst_s: float, history_s: float) -> int:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from flopgap.machine._bench import time_blocks, time_call
    from flopgap.machine._chains import chain_cases

    built = [(label, build()) for label, build in chain_cases()]
    cases = 0
    if kind == "history":
        from flopgap.machine._grid import grid

        t0 = time.perf_counter()
        for c in grid(False):
            if time.perf_counter() - t0 > history_s:
                break
            fn, inputs = c.build()
            time_blocks(lambda: fn(*inputs))
            del fn, inputs
            cases += 1
    print(json.dumps({"ready": cases}), flush=True)
    for _ in sys.stdin:
        out = {}
        for label, (module, inputs) in built:
            out[label] = float(np.median(time_call(lambda: module(*inputs), min_run_time=burst_s)))
        print(json.dumps(out), flush=True)
    return 0


def _start(kind: str, args) -> tuple[subprocess.Popen, int]:
    from flopgap.machine._isolated import child_env

    p = subprocess.Popen([sys.executable, __file__, "--child", kind, "--threads", str(args.threads),
                          "--burst-s", str(args.burst_s), "--history-s", str(args.history_s)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
    return p, int(json.loads(p.stdout.readline())["ready"])


def _ask(p: subprocess.Popen) -> dict:
    p.stdin.write("go\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--history-s", type=float, default=40.0, help="seconds of grid cases the history child runs first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--burst-s", type=float, default=0.4, help="seconds of timing per chain per turn")
    ap.add_argument("--child", choices=("fresh", "history"), help=argparse.SUPPRESS)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child, args.threads, args.burst_s, args.history_s)
    if args.pairs < 1 or args.history_s < 0 or args.burst_s <= 0:
        print("error: --pairs >= 1, --history-s >= 0 and --burst-s > 0", file=sys.stderr)
        return 2

    hist, cases = _start("history", args)
    print(f"history child: ran {cases} calibration cases in {args.history_s:.0f} s", flush=True)
    pairs = []
    try:
        for i in range(args.pairs):
            fresh, _ = _start("fresh", args)
            a = _ask(fresh)
            fresh.stdin.close()
            fresh.wait()
            b = _ask(hist)
            pairs.append({"fresh_s": a, "history_s": b})
            print(f"pair {i + 1}: " + "  ".join(f"{k.split(' @')[0][:16]} {a[k] * 1e3:.2f}/{b[k] * 1e3:.2f}"
                                                 for k in list(a)[:6]) + " ... ms (fresh/history)", flush=True)
    finally:
        hist.stdin.close()
        hist.wait()
    rows = []
    for label in pairs[0]["fresh_s"]:
        r = [p["history_s"][label] / p["fresh_s"][label] for p in pairs]
        rows.append({"chain": label, "ratios": r, "median_ratio": float(np.median(r))})
        print(f"{label:40s} history / fresh: median {np.median(r):.2f}x  ({', '.join(f'{v:.2f}' for v in r)})")
    med = [r["median_ratio"] for r in rows]
    print(f"over the {len(rows)} chains: median {np.median(med):.2f}x, range {min(med):.2f}x .. {max(med):.2f}x "
          f"({args.pairs} pairs; each chain's figure is the median over the pairs)")
    figures = {"threads": args.threads, "pairs": args.pairs, "history_s": args.history_s, "history_cases": cases,
               "burst_s": args.burst_s, "chains": rows, "raw": pairs,
               "median_over_chains": float(np.median(med))}
    if not args.no_save:
        from _results import save

        print(f"wrote {save('chain_history', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
