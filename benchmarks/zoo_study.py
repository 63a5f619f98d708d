"""The zoo correlation study on this machine: how well do params, FLOPs, bytes, op count
and explain's prediction rank torchvision's classification models by latency?

Prints, for batch 1 (or --batch): Spearman, Kendall and log-log Pearson of each count
with measured latency (95% bootstrap CIs), the FLOPs-only fit, its outliers and the top
inversions (fewer FLOPs yet significantly slower, with explain's finding for the slower).
The figures go to ``benchmarks/results/zoo_study.json`` (``_results.save``: schema,
commit, command line, machine); ``--quick`` and ``--models`` runs to
``zoo_study-quick.json`` and ``zoo_study-custom.json``, so that only the full zoo feeds
the summary in docs/study.md (``python benchmarks/summarize.py``).

Every torchvision classification model at 224x224 takes about an hour on 2 cores
(vit_h_14 alone is ~170 GFLOPs); ``--quick`` runs the demo's six small models in a few
minutes. Results go to a temporary store unless ``--db`` names one (then ``--resume``
continues an interrupted run). Run it on a quiet machine: a disturbed model is re-timed,
then left out of the correlations and listed.

Usage: python benchmarks/zoo_study.py [--quick] [--batch N] [--max-time S] [--threads N]
       [--db URL] [--resume] [--html PATH] [--models SPEC,SPEC] [--quick-profile] [--no-explain]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from flopgap.report.html import Section, Table, write_html
from flopgap.report.study_view import print_sections, sections_for, title_for
from flopgap.store import open_store
from flopgap.study import DEMO_MODELS, run_zoo
from flopgap.timing import TimerOptions, environment, threads_context

_TOP_INVERSIONS = 5  # inversions kept in the figures: the summary shows the strongest few
_ROW_KEYS = ("label", "params", "flops", "bytes", "ops", "prediction", "median", "ci_low", "ci_high", "n_samples",
             "threads", "precision_met", "disturbed", "attempts")


def _figures(result, *, zoo: str, args, wall_s: float) -> dict:
    """What the summary needs, per batch, from the analysed result (no sample lists)."""
    batches = {}
    for batch, a in result.analysis.items():
        inv, fit = a["inversions"], a["fit"]
        batches[str(batch)] = {
            "n": a["n"], "excluded": a["excluded"], "correlations": a["correlations"],
            "inversions": {k: inv[k] for k in ("count", "pairs_compared", "share")}
            | {"top": [{k: v for k, v in p.items() if k != "finding"} for p in inv["top"][:_TOP_INVERSIONS]]},
            "fit": {k: fit[k] for k in ("a", "b", "r2", "sd")}
            | {"outliers": [{k: o[k] for k in ("label", "ratio", "z")} for o in fit["outliers"]]},
            "rows": [{k: r.get(k) for k in _ROW_KEYS} for r in result.rows if r["batch"] == batch],
        }
    return {"zoo": zoo, "models": len({r["label"] for r in result.rows}), "batch": args.batch,
            "max_time": args.max_time, "threads": args.threads, "explain": not args.no_explain,
            "profile": "quick" if args.quick_profile else "full", "wall_s": wall_s,
            "failures": result.failures, "batches": batches}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"only the demo's {len(DEMO_MODELS)} small models")
    ap.add_argument("--models", help="comma-separated specs instead of the torchvision zoo")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--max-time", type=float, default=2.0, help="timing budget per model, seconds")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-explain", action="store_true")
    ap.add_argument("--quick-profile", action="store_true", help="predict from the machine's quick profile")
    ap.add_argument("--db", help="keep the results in this store (default: a temporary file)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--html", help="also write the HTML report here")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import save

    out = Console(highlight=False, width=160)
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="flopgap-zoo-")
        db = str(Path(tmp.name) / "zoo.db")
    else:
        db = args.db
    models = args.models.split(",") if args.models else (list(DEMO_MODELS) if args.quick else None)
    zoo = "custom" if args.models else "demo" if args.quick else "torchvision"
    with threads_context(args.threads):  # the machine record states the thread count the models run with
        machine = environment()
    t0 = time.perf_counter()
    store = open_store(db)
    result = run_zoo(None if models else "torchvision", store=store, models=models, batches=(args.batch,),
                     timer=TimerOptions(max_time=args.max_time, threads=args.threads),
                     with_explain=not args.no_explain, resume=args.resume, quick_profile=args.quick_profile)
    wall = time.perf_counter() - t0
    env = result.run.machine
    out.print(f"zoo study: {len(result.rows)} models at batch {args.batch}, max_time {args.max_time} s per model, "
              f"threads {args.threads or env.get('torch_threads')}, {wall:.0f} s wall; "
              f"{env.get('cpu_model')}, {env.get('logical_cores')} logical cores, torch {env.get('torch')}, "
              f"load average at start {env.get('load_average')}")
    sections = sections_for(result, plots=bool(args.html))
    wanted = []
    for s in sections:
        if s.title.startswith("Batch") or s.title == "Failures":
            blocks = [b for b in s.blocks if not isinstance(b, Table) or not b.name.startswith("models_")]
            wanted.append(Section(s.title, blocks))
    print_sections(wanted, out)
    if args.html:
        print(f"wrote {write_html(args.html, title_for(result), sections, machine=env)}")
    if args.db:
        print(f"stored as run {result.run.id} in {store.url}")
    store.close()
    if tmp is not None:
        tmp.cleanup()
    name = "zoo_study" + ("" if zoo == "torchvision" else "-quick" if zoo == "demo" else "-custom")
    print(f"wrote {save(name, _figures(result, zoo=zoo, args=args, wall_s=wall), environment=machine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
