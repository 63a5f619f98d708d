"""Wall time of one counting pass / one plain eager forward (inference_mode, batch 1).

Target (issue 2): at most 1.5x for resnet50, mobilenet_v3_small and vit_b_16, with
torch's FlopCounterMode measured beside it in the same run, and the floor of any
dispatcher-level capture (an empty dispatch mode + module hooks). Runs are interleaved
(forward, flopgap, FlopCounterMode, forward, ...) and medians compared, so machine
noise hits all three alike. Usage: python benchmarks/count_overhead.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from flopgap.count import count
from flopgap.models import load_model, make_inputs, resolve_inputs

MODELS = ["torchvision:resnet50", "torchvision:mobilenet_v3_small", "torchvision:vit_b_16", "seed:ex2-deep"]


class _EmptyMode(TorchDispatchMode):
    """The floor of any dispatcher-level counter: Python dispatch and nothing else."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


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

    def floor():  # an empty dispatch mode + no-op global module hooks: what capture costs at least
        handles = [register_module_forward_pre_hook(lambda m, a: None),
                   register_module_forward_hook(lambda m, a, o: None, always_call=True)]
        try:
            with torch.inference_mode(), _EmptyMode():
                module(*x)
        finally:
            for h in handles:
                h.remove()

    fns = {"plain": plain, "flopgap": flopgap, "fcm": fcm, "floor": floor}
    for fn in fns.values():  # warm-up: first calls allocate and pick kernels
        fn()
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": spec, "forward_ms": 1e3 * med["plain"], "flopgap_x": med["flopgap"] / med["plain"],
            "fcm_x": med["fcm"] / med["plain"], "floor_x": med["floor"] / med["plain"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} interleaved runs")
    print(f"{'model':34s} {'forward':>10s} {'flopgap/fwd':>12s} {'FlopCounterMode/fwd':>20s} "
          f"{'floor/fwd':>10s} {'target':>8s}")
    for spec in args.models.split(","):
        r = bench(spec, args.repeats)
        target = "<=1.5x" if spec.startswith("torchvision") else "-"
        ok = "" if target == "-" else (" ok" if r["flopgap_x"] <= 1.5 else " MISSED")
        print(f"{spec:34s} {r['forward_ms']:8.2f}ms {r['flopgap_x']:11.2f}x {r['fcm_x']:19.2f}x "
              f"{r['floor_x']:9.2f}x {target:>8s}{ok}")
    print("floor = an empty TorchDispatchMode + no-op global module hooks: the cost of capturing at the "
          "dispatcher before any counting work")


if __name__ == "__main__":
    main()
