"""Wall time of one counting pass / one plain eager forward (inference_mode, batch 1).

Target (issue 2): at most 1.5x for resnet50, mobilenet_v3_small and vit_b_16, with
torch's FlopCounterMode measured beside it in the same run. Runs are interleaved
(forward, flopgap, FlopCounterMode, forward, ...) and medians compared, so machine
noise hits all three alike. Usage: python benchmarks/count_overhead.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from flopgap.count import count
from flopgap.models import load_model, make_inputs, resolve_inputs

MODELS = ["torchvision:resnet50", "torchvision:mobilenet_v3_small", "torchvision:vit_b_16", "seed:ex2-deep"]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(spec: str, repeats: int) -> dict:
    loaded = load_model(spec)
    module, x = loaded.module, make_inputs(resolve_inputs(loaded))

    def plain():
        with torch.inference_mode():
            module(*x)

    def flopgap():
        count(module, x, model=spec)

    def fcm():
        with torch.inference_mode(), FlopCounterMode(display=False):
            module(*x)

    for fn in (plain, flopgap, fcm):  # warm-up: first calls allocate and pick kernels
        fn()
        fn()
    times = {"plain": [], "flopgap": [], "fcm": []}
    for _ in range(repeats):
        for name, fn in (("plain", plain), ("flopgap", flopgap), ("fcm", fcm)):
            times[name].append(_timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": spec, "forward_ms": 1e3 * med["plain"], "flopgap_x": med["flopgap"] / med["plain"],
            "fcm_x": med["fcm"] / med["plain"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} interleaved runs")
    print(f"{'model':34s} {'forward':>10s} {'flopgap/fwd':>12s} {'FlopCounterMode/fwd':>20s} {'target':>8s}")
    for spec in args.models.split(","):
        r = bench(spec, args.repeats)
        target = "<=1.5x" if spec.startswith("torchvision") else "-"
        ok = "" if target == "-" else (" ok" if r["flopgap_x"] <= 1.5 else " MISSED")
        print(f"{spec:34s} {r['forward_ms']:8.2f}ms {r['flopgap_x']:11.2f}x {r['fcm_x']:19.2f}x {target:>8s}{ok}")


if __name__ == "__main__":
    main()
