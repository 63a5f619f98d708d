"""What pricing scattered reads changes: each model's prediction with and without the gather terms, on one profile.

For the models of ``predict_accuracy.py``'s sets, the prediction from the cached machine
profile (measured lazily where it lacks a case) with scattered reads priced as shipped
(copies reading in runs under ``GATHER_MAX_RUN`` on the gather curves, other memory ops
reading such an input plus the gather's cost beyond a clone) against the same profile
with them switched off (every op priced as if it read in order). Nothing is timed: the
ratio shows which models the gather pricing moves, and by how much, apart from any
change of the machine between accuracy runs.

    .venv/bin/python benchmarks/gather_effect.py [--sets tuned,heldout-dev] [--threads 2] [--no-save]

Figures go to ``benchmarks/results/gather_effect.json`` with the machine's metadata.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="tuned,heldout-dev", help="comma-separated sets of predict_accuracy.py")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    if args.threads < 1:
        print("error: --threads >= 1", file=sys.stderr)
        return 2
    import os

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from predict_accuracy import _build, _specs

    import flopgap.machine._keys as keys
    from flopgap.count import count
    from flopgap.explain import predict
    from flopgap.machine import needs_for, profile_machine

    rows = []
    for st, name in _specs([s.strip() for s in args.sets.split(",") if s.strip()], False):
        module, x = _build(name)
        module.eval()
        with torch.inference_mode():
            c = count(module, x, model=name)
        prof = profile_machine(needs=needs_for(c))
        with_g = predict(c, prof).latency_s
        n = sum(1 for r in c.ops if keys.gather_run(r) is not None)
        shipped = keys.GATHER_MAX_RUN
        keys.GATHER_MAX_RUN = 0          # no run is short: every op priced as read in order
        try:
            without = predict(c, prof).latency_s
        finally:
            keys.GATHER_MAX_RUN = shipped
        rows.append({"set": st, "model": name, "gather_ops": n, "with_s": with_g, "without_s": without})
        print(f"{st:14s} {name:36s} {n:3d} scattered ops  predicted {with_g * 1e3:9.3f} ms with, "
              f"{without * 1e3:9.3f} ms without ({with_g / without - 1:+.1%})", flush=True)
    figures = {"threads": args.threads, "sets": args.sets, "rows": rows}
    if not args.no_save:
        from _results import save

        print(f"wrote {save('gather_effect', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
