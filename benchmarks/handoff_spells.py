"""Does the sentinel's handoff part see the slow spells that move small-op models?

Times one model over and over with ``flopgap.timing.measure`` (2% CI) for ``--seconds``
on ``--threads`` threads, with no other process started, and keeps per timing: the
median, whether the sentinel flagged it, and each reference part's ratio to its calm
time. Then compares the medians of the timings flagged only for their handoff part
with those of the unflagged ones: when the host runs the VM's threads apart, the
handoff part slows and the model with it, while the dispatch, compute and memory parts
do not move. A run that falls wholly inside one state shows no contrast, and says so.

    .venv/bin/python benchmarks/handoff_spells.py [--model torchvision:mobilenet_v2] [--seconds 240]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="torchvision:mobilenet_v2")
    ap.add_argument("--seconds", type=float, default=240.0, help="how long to keep timing (default 240)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-save", action="store_true", help="do not write benchmarks/results")
    args = ap.parse_args(argv)

    from flopgap.models import load_model, make_inputs, resolve_inputs
    from flopgap.timing import TimerOptions, measure, threads_context
    from flopgap.timing._sentinel import part_ratio

    torch.set_num_threads(args.threads)
    lm = load_model(args.model)
    inputs = make_inputs(resolve_inputs(lm, None, 1))
    opts = TimerOptions(max_time=2.0, precision=0.02, threads=args.threads)
    rows = []
    t0 = time.time()
    while time.time() - t0 < args.seconds:
        with threads_context(args.threads):
            m = measure(lm.module, inputs, opts, name=args.model)
        d = m.disturbance
        ratios = (d.reference_ratios or {}) if d is not None else {}
        only_handoff = bool(d is not None and d.disturbed and len(d.reasons) == 1
                            and [p for p, r in ratios.items() if r > part_ratio(p)] == ["handoff"])
        rows.append({"t_s": time.time() - t0, "median_s": m.median, "n": m.n_samples, "disturbed": m.disturbed,
                     "handoff_only": only_handoff, "ratios": ratios})
    calm = [r for r in rows if not r["disturbed"]]
    spell = [r for r in rows if r["handoff_only"]]

    def summary(rs: list[dict]) -> dict | None:
        if not rs:
            return None
        med = np.array([r["median_s"] for r in rs])
        hand = np.array([r["ratios"].get("handoff", np.nan) for r in rs])
        return {"timings": len(rs), "median_s": float(np.median(med)), "p10_s": float(np.quantile(med, 0.1)),
                "p90_s": float(np.quantile(med, 0.9)), "handoff_ratio_min": float(np.nanmin(hand)),
                "handoff_ratio_max": float(np.nanmax(hand))}

    figures = {"model": args.model, "threads": args.threads, "seconds": args.seconds, "timings": len(rows),
               "unflagged": summary(calm), "flagged_for_handoff_only": summary(spell),
               "flagged_otherwise": len(rows) - len(calm) - len(spell), "rows": rows}
    for label, s in (("unflagged", figures["unflagged"]), ("flagged for handoff only", figures["flagged_for_handoff_only"])):
        if s is None:
            print(f"{label:26s} none")
        else:
            print(f"{label:26s} {s['timings']:4d} timings  median of medians {s['median_s'] * 1e3:.2f} ms "
                  f"(p10 {s['p10_s'] * 1e3:.2f}, p90 {s['p90_s'] * 1e3:.2f})  handoff part "
                  f"{s['handoff_ratio_min']:.2f}-{s['handoff_ratio_max']:.2f}x its calm time")
    if figures["unflagged"] and figures["flagged_for_handoff_only"]:
        print(f"ratio of the two medians: "
              f"{figures['flagged_for_handoff_only']['median_s'] / figures['unflagged']['median_s']:.2f}")
    else:
        print("the run stayed in one state: no contrast to show")
    if not args.no_save:
        from _results import save

        print(f"wrote {save('handoff_spells', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
