"""Does a model run slower in a process that has already built and run other models?

The machine profile is measured in a fresh child process, and ``flopgap time MODEL`` runs
in a fresh process; a benchmark, a study or a notebook that builds and runs many models
in one process times the later ones in a process with a history (a grown, fragmented
heap; glibc's trim threshold pinned as flopgap pins it). This benchmark measures that:
each target model is built, timed (``flopgap.timing.measure``, 2% CI, up to
``--max-time`` s) and freed in this fresh process; then every other model is built, run
``--calls`` times and freed; then the targets are timed again, ``--after`` times. A
timing the disturbance sentinel flags is reported as such and left out of the ratio.

    .venv/bin/python benchmarks/process_history.py [--targets a,b] [--others a,b] [--threads 2]
        [--max-time S] [--after N] [--allocator pinned|default] [--no-save]

Figures go to ``benchmarks/results/process_history.json`` with the machine's metadata.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGETS = ("torchvision:resnet18", "torchvision:mobilenet_v2", "torchvision:wide_resnet50_2")


def _time(name: str, threads: int, max_time: float) -> dict:
    """One timing of a freshly built model (``predict_accuracy._timing``), then freed;
    ``disturbed``: the sentinel's summary, or ''."""
    from flopgap.models import load_model, make_inputs, resolve_inputs
    from predict_accuracy import _timing

    lm = load_model(name)
    t = _timing(lm.module, make_inputs(resolve_inputs(lm, None, 1)), name, max_time, threads)
    del lm
    gc.collect()
    return {**{k: t[k] for k in ("median_s", "ci_low_s", "ci_high_s", "samples")}, "disturbed": t["summary"]}


def _fmt(t: dict) -> str:
    return (f"{t['median_s'] * 1e3:8.2f} ms [{t['ci_low_s'] * 1e3:.2f}, {t['ci_high_s'] * 1e3:.2f}] "
            f"n={t['samples']}")


def _run_others(names: list[str], calls: int) -> float:
    import torch

    from flopgap.models import load_model, make_inputs, resolve_inputs

    t0 = time.perf_counter()
    for name in names:
        lm = load_model(name)
        x = make_inputs(resolve_inputs(lm, None, 1))
        with torch.inference_mode():
            for _ in range(calls):
                lm.module(*x)
        del lm, x
        gc.collect()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    from predict_accuracy import TORCHVISION

    from _results import allocator_option, rerun_pinned

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default=",".join(TARGETS), help="models timed before and after")
    ap.add_argument("--others", default=None,
                    help="models built, run and freed between (default: the 24 torchvision models of "
                         "predict_accuracy.py less the targets)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-time", type=float, default=3.0, help="seconds per timing (default 3)")
    ap.add_argument("--calls", type=int, default=3, help="calls of each other model (default 3)")
    ap.add_argument("--after", type=int, default=2, help="timings of each target afterwards (default 2)")
    allocator_option(ap)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)

    rc = rerun_pinned(args.allocator, __file__, argv)
    if rc is not None:
        return rc
    import torch

    torch.set_num_threads(args.threads)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    others = ([o.strip() for o in args.others.split(",") if o.strip()] if args.others
              else ["torchvision:" + m for m in TORCHVISION if "torchvision:" + m not in targets])
    if not targets or args.after < 1:
        print("error: at least one target and --after 1", file=sys.stderr)
        return 2
    rows = []
    for name in targets:
        fresh = _time(name, args.threads, args.max_time)
        rows.append({"model": name, "fresh": fresh, "after": []})
        print(f"fresh process   {name:32s} {_fmt(fresh)}"
              + (f"  DISTURBED: {fresh['disturbed']}" if fresh["disturbed"] else ""), flush=True)
    others_s = _run_others(others, args.calls)
    print(f"built, ran {args.calls}x and freed {len(others)} other models ({others_s:.0f} s)", flush=True)
    for i in range(args.after):
        for row in rows:
            t = _time(row["model"], args.threads, args.max_time)
            row["after"].append(t)
            print(f"after, timing {i + 1}  {row['model']:32s} {_fmt(t)}"
                  + (f"  DISTURBED: {t['disturbed']}" if t["disturbed"] else ""), flush=True)
    for row in rows:
        calm = [t["median_s"] for t in row["after"] if not t["disturbed"]]
        row["ratio_after_over_fresh"] = (
            [c / row["fresh"]["median_s"] for c in calm] if calm and not row["fresh"]["disturbed"] else None)
        r = row["ratio_after_over_fresh"]
        print(f"{row['model']:32s} after / fresh: " + (", ".join(f"{v:.2f}x" for v in r) if r else
                                                       "not comparable (a disturbed timing)"))
    figures = {"threads": args.threads, "allocator": args.allocator, "others": others, "calls": args.calls,
               "max_time_s": args.max_time, "others_seconds": others_s, "rows": rows}
    if not args.no_save:
        from _results import save

        print(f"wrote {save('process_history', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
