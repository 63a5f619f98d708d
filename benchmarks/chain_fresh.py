"""Do the profile's chains run as a model runs, and does the in-sequence fit need whole networks?

The machine profile times its synthetic chains (``flopgap.machine._chains``) in one
child process, in short bursts, and fits its in-sequence terms on those times. A model
is timed on its own, in a process that built it and nothing else. This benchmark times
every chain the way ``benchmarks/predict_accuracy.py`` times a model: each timing in a
fresh process that builds that one chain (glibc's allocator pinned as the profile pins
it) and times it with ``flopgap.timing.measure`` (2% CI, the disturbance sentinel on),
``--rounds`` times, chains interleaved so that a slow spell of the machine falls on
many of them; a chain's figure is its fastest undisturbed round, as a model's is.

Per chain it prints the fresh-process time against the profile's time of the chain
(``profile``) and against two fits of the in-sequence terms: the profile's own fit over
every chain (``fit``), and a fit made without the whole-network chains
(``fit w/o nets``: stem, head and classifier, ``WHOLE_NETWORKS``), which tells how a
chain set of stacks alone predicts whole networks.

    .venv/bin/python benchmarks/chain_fresh.py [--rounds 2] [--threads 2] [--no-save]

Reads the cached machine profile for the thread count (``flopgap machine`` or any
``flopgap predict`` measures it) and needs its chains to be the code's. Figures go to
``benchmarks/results/chain_fresh.json`` with the machine's metadata.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# the chains that are whole networks (stem, body, head, classifier), by label prefix
WHOLE_NETWORKS = ("mobile net ", "vit ", "decoder d192 h6 kv2")


def _child(index: int, threads: int) -> int:
    import torch

    torch.set_num_threads(threads)
    from predict_accuracy import _timing

    from flopgap.machine._chains import chain_cases

    label, build = chain_cases()[index]
    module, inputs = build()
    print(json.dumps(_timing(module, inputs, label, 2.0, threads)), flush=True)
    return 0


def _time(index: int, threads: int) -> dict:
    from flopgap.machine._isolated import child_env

    out = subprocess.run([sys.executable, __file__, "--child", str(index), "--threads", str(threads)],
                         capture_output=True, text=True, env=child_env())
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: timing chain {index} failed: {last}")
    return json.loads(lines[-1])


def _fits(profile) -> tuple[list[str], dict, dict]:
    """Labels, and per label the time the profile's own fit and a fit without the whole
    networks give."""
    from flopgap.explain._predict import Predictor

    pred = Predictor(profile)
    rows = pred._rows
    labels = [r[0] for r in rows]

    def apply(params):
        return {row[0]: pred.fitted(params, row) for row in rows}

    stacks = [r for r in rows if not r[0].startswith(WHOLE_NETWORKS)]
    return labels, apply(pred._solve(rows)), apply(pred._solve(stacks))


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    if args.child is not None:
        return _child(args.child, args.threads)
    if args.rounds < 1 or args.threads < 1:
        print("error: --rounds >= 1 and --threads >= 1", file=sys.stderr)
        return 2

    import torch

    from flopgap.machine import MachineProfile, cache_path, chain_reference_s, fingerprint
    from flopgap.machine._chains import chain_cases

    torch.set_num_threads(args.threads)
    path = cache_path(fingerprint(), False)
    if not path.exists():
        print(f"error: no machine profile for {args.threads} threads at {path}; run `flopgap machine` first",
              file=sys.stderr)
        return 2
    profile = MachineProfile.from_dict(json.loads(path.read_text()))
    code = [label for label, _ in chain_cases()]
    if [c["label"] for c in profile.chains] != code:
        print("error: the cached profile's chains are not the code's; run `flopgap predict` or `flopgap machine` "
              "to measure them", file=sys.stderr)
        return 2
    labels, fit, fit_stacks = _fits(profile)
    ref = {c["label"]: chain_reference_s(c) for c in profile.chains}

    timings = {label: [] for label in code}
    for r in range(args.rounds):
        order = range(len(code)) if r % 2 == 0 else reversed(range(len(code)))
        for i in order:
            timings[code[i]].append(_time(i, args.threads))
        print(f"round {r + 1} of {args.rounds} done", flush=True)

    rows = []
    print(f"{'chain':46s} {'fresh':>9s} {'n':>4s} {'/profile':>9s} {'/fit':>7s} {'/fit w/o nets':>14s}")
    for label in code:
        calm = [t for t in timings[label] if not t["disturbed"]]
        best = min(calm, key=lambda t: t["median_s"]) if calm else None
        row = {"chain": label, "whole_network": label.startswith(WHOLE_NETWORKS), "timings": timings[label],
               "profile_s": ref[label], "fit_s": fit[label], "fit_without_nets_s": fit_stacks[label]}
        if best is None:
            print(f"{label:46s} inconclusive: every round disturbed")
        else:
            f = best["median_s"]
            row.update(fresh_s=f, vs_profile=f / ref[label], vs_fit=f / fit[label],
                       vs_fit_without_nets=f / fit_stacks[label])
            print(f"{label:46s} {f * 1e3:7.3f}ms {best['samples']:4d} {f / ref[label]:8.3f}x {f / fit[label]:6.3f}x "
                  f"{f / fit_stacks[label]:13.3f}x  "
                  f"(CI {best['ci_low_s'] * 1e3:.3f}..{best['ci_high_s'] * 1e3:.3f} ms, "
                  f"{args.threads} threads, cpu)")
        rows.append(row)
    summary = {}
    for group, whole in (("stacks", False), ("whole_networks", True)):
        got = [r for r in rows if r["whole_network"] == whole and "fresh_s" in r]
        if got:
            summary[group] = {k: float(np.median([r[k] for r in got])) for k in
                              ("vs_profile", "vs_fit", "vs_fit_without_nets")} | {"chains": len(got)}
            s = summary[group]
            print(f"{group.replace('_', ' ')} ({s['chains']}): median fresh/profile {s['vs_profile']:.3f}x, "
                  f"fresh/fit {s['vs_fit']:.3f}x, fresh/fit without whole networks {s['vs_fit_without_nets']:.3f}x")
    figures = {"threads": args.threads, "rounds": args.rounds, "chains": rows, "summary": summary}
    if not args.no_save:
        from _results import save

        print(f"wrote {save('chain_fresh', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
