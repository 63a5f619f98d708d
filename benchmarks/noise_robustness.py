"""Does flopgap stay honest on a busy machine? The seed study and a six-model zoo study,
once on the quiet machine and once under a synthetic load this script starts and stops.

The load: two processes spinning on a core each (CPU competition) and one copying a
256 MiB array over and over (memory-bandwidth competition). Both phases run with the
same settings; studies re-time a disturbed item up to three times, as they always do.

Each phase runs ``--rounds`` times (default 3), quiet and loaded alternating. Figures
(targets from the issue that asked for this benchmark):
1. verdicts that flipped from a definite answer to its opposite under load (target 0:
   every loaded verdict equals the quiet one or is "inconclusive");
2. share of the loaded timings the sentinel flagged disturbed (target >= 95%);
3. share of the quiet timings it flagged (target <= 5%);
4. the zoo's Spearman rho of FLOPs with latency, quiet vs loaded (disturbed rows left out).

A timing is one timed attempt: a re-time counts as another timing, so an item flagged
twice and then quiet counts two flagged timings of three.

    python benchmarks/noise_robustness.py            # full: seed study + 6 torchvision models
    python benchmarks/noise_robustness.py --quick    # smoke run: 2 zoo models, short budgets
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTLE_S = 3.0  # after the load stops, before the next quiet phase: the hog's 512 MiB go back to the kernel
_SPIN = "while True: pass"
_HOG = ("import numpy as np\n"
        "a = np.ones(32 * 2**20); b = np.empty_like(a)\n"   # 256 MiB each: far beyond any cache
        "while True: np.copyto(b, a)")


class Load:
    """Two spinning processes and one memory-bandwidth hog, stopped on exit whatever happens."""

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for code in (_SPIN, _SPIN, _HOG)]
        time.sleep(2.0)  # let them reach their steady state (the hog allocates first)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        time.sleep(SETTLE_S)


def _timings(result, timed_items: int) -> dict:
    """Timings taken and flagged, from the study's outcome (re-times included)."""
    o = result.outcome
    retimed = sum(n - 1 for n in o.retimed.values())    # each re-time followed a flagged timing
    final = len(o.disturbed)
    return {"items": timed_items, "timings": timed_items + retimed, "flagged": retimed + final,
            "still_disturbed": final}


def _evidence(store) -> dict:
    """What the sentinel saw in each stored (last) timing: its verdict and the witnesses' figures."""
    out = {}
    for run in store.runs(limit=2):
        for m in store.measurements(run.id):
            if m.kind not in ("model", "comparison"):
                continue
            p = m.payload if isinstance(m.payload, dict) else {}
            timing = p.get("time") if m.kind == "model" else p.get("a")
            d = timing.get("disturbance") if isinstance(timing, dict) else None
            if d:
                out[f"{m.model} {m.key}".strip()] = {k: d.get(k) for k in (
                    "disturbed", "reasons", "probes", "contended", "others_max", "steal_share", "reference_ratios")}
    return out


def _phase(name: str, models: list[str], timer, quick: bool) -> dict:
    from flopgap.store import Store
    from flopgap.study import run_seed, run_zoo

    with tempfile.TemporaryDirectory(prefix="flopgap-noise-") as tmp:
        store = Store(str(Path(tmp) / "noise.db"))
        notes: list[str] = []

        def hear(p) -> None:  # the runner says why it re-times an item
            if p.note:
                notes.append(f"{p.item}: {p.note}")

        t0 = time.perf_counter()
        seed = run_seed(store=store, timer=timer, with_explain=False, progress=hear)
        zoo = run_zoo(store=store, models=models, timer=timer, with_explain=False, quick_profile=True,
                      n_boot=500 if quick else 2000, progress=hear)
        wall = time.perf_counter() - t0
        evidence = _evidence(store)
        store.close()
    verdicts = {c["id"]: str(c["verdict"]) for c in seed.claims}
    rho = zoo.analysis[1]["correlations"]["flops"]["spearman"]
    rows = {r["label"]: {"median_s": r["median"], "n": r["n_samples"], "disturbed": r["disturbed"],
                         "attempts": r["attempts"]} for r in zoo.rows}
    return {"phase": name, "wall_s": wall, "verdicts": verdicts, "seed": _timings(seed, len(seed.comparisons)),
            "zoo": _timings(zoo, len(zoo.rows)), "rho_flops": rho.get("r"), "rho_n": zoo.analysis[1]["n"],
            "excluded": zoo.analysis[1]["excluded"], "zoo_rows": rows, "evidence": evidence,
            "retimes": notes}


def _share(phase: dict) -> tuple[int, int]:
    flagged = phase["seed"]["flagged"] + phase["zoo"]["flagged"]
    timings = phase["seed"]["timings"] + phase["zoo"]["timings"]
    return flagged, timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 zoo models, short budgets")
    ap.add_argument("--max-time", type=float, default=None, help="timing budget per model or pair (s)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="quiet and loaded phases each run this many times, alternating (default 3; 1 quick)")
    args = ap.parse_args()

    from _results import save

    from flopgap.study import DEMO_MODELS, Verdict, study_profile
    from flopgap.timing import TimerOptions, environment

    models = list(DEMO_MODELS[:2] if args.quick else DEMO_MODELS)
    timer = TimerOptions(max_time=args.max_time or (0.5 if args.quick else 2.0), threads=args.threads)
    env = environment()
    print(f"# noise_robustness: seed study + {len(models)} zoo models, max_time {timer.max_time:g} s, "
          f"threads {args.threads or env['torch_threads']}; {env['cpu_model']}, {env['logical_cores']} logical "
          f"cores, torch {env['torch']}, load average at start {env['load_average']}, {env['time']}", flush=True)
    study_profile(timer, quick=True)  # measured (or read) on the quiet machine, before any load
    rounds = args.rounds or (1 if args.quick else 3)
    quiets, loadeds = [], []
    for r in range(rounds):  # alternating, so that a slow spell of the host hits both phases alike
        quiets.append(_phase("quiet", models, timer, args.quick))
        print(f"# round {r + 1}: quiet phase done in {quiets[-1]['wall_s']:.0f} s", flush=True)
        with Load():
            loadeds.append(_phase("loaded", models, timer, args.quick))
        print(f"# round {r + 1}: loaded phase done in {loadeds[-1]['wall_s']:.0f} s", flush=True)
    quiet, loaded = quiets[0], loadeds[0]

    definite = {str(Verdict.HOLDS), str(Verdict.DOES_NOT_HOLD)}
    answers = {k: {q["verdicts"][k] for q in quiets if q["verdicts"].get(k) in definite} for k in quiet["verdicts"]}
    flips = sorted({k for ld in loadeds for k, v in ld["verdicts"].items()
                    if v in definite and answers.get(k) and v not in answers[k]})
    lf, lt = map(sum, zip(*(_share(x) for x in loadeds)))
    qf, qt = map(sum, zip(*(_share(x) for x in quiets)))
    print()
    print(f"{'claim':16s} {'quiet (round 1)':32s} loaded (round 1)")
    for k, v in quiet["verdicts"].items():
        print(f"{k:16s} {v:32s} {loaded['verdicts'].get(k)}")
    print()
    print(f"1. verdicts flipped between a definite answer and its opposite: {len(flips)} {flips or ''} (target 0)")
    print(f"2. loaded timings flagged disturbed: {lf} of {lt} = {100 * lf / max(lt, 1):.0f}% (target >= 95%)")
    print(f"3. quiet timings flagged disturbed: {qf} of {qt} = {100 * qf / max(qt, 1):.0f}% (target <= 5%)")
    fmt = (lambda r: "-" if r is None else f"{r:.3f}")
    print(f"4. zoo FLOPs Spearman rho per round: quiet {', '.join(fmt(q['rho_flops']) for q in quiets)}; loaded "
          f"{', '.join(fmt(x['rho_flops']) for x in loadeds)} (models kept: "
          f"{', '.join(str(x['rho_n']) for x in loadeds)})")
    figures = {"quiet": quiet, "loaded": loaded, "rounds": {"quiet": quiets, "loaded": loadeds}, "flips": flips,
               "quiet_counts": [qf, qt], "loaded_counts": [lf, lt],
               "loaded_flagged_share": lf / max(lt, 1), "quiet_flagged_share": qf / max(qt, 1),
               "targets": {"flips": 0, "loaded_flagged_share_min": 0.95, "quiet_flagged_share_max": 0.05},
               "settings": {"max_time": timer.max_time, "threads": args.threads, "models": models,
                            "quick": args.quick, "rounds": rounds}}
    path = save("noise_robustness" + ("-quick" if args.quick else ""), figures, environment=env)
    print(f"# wrote {path}")


if __name__ == "__main__":
    main()
