"""How long does the first ``flopgap predict MODEL`` take on an empty cache, profile included?

Each model is predicted by ``flopgap predict MODEL --threads N --json F`` in a fresh
process with a fresh, empty ``FLOPGAP_CACHE_DIR``, so the run pays for everything a
new user pays for: imports, loading and counting the model, measuring the part of the
machine profile the prediction needs (ceilings, chains, the calibration cases near the
model's ops), and predicting. Then the same command again on the now-filled cache (the
second run), and a full profile (``flopgap machine --refresh``: every grid case) in
another fresh cache. Wall times from ``time.perf_counter`` around the subprocess.

The machine's load is recorded before and after each run (the load average and other
processes' runnable threads), and whether the profile says it was measured while the
machine was busy (then its disturbed parts were not cached, and the second run measures
them again). Targets (2 cores, quiet machine): first predict <= 60 s, full profile
<= 90 s.

    .venv/bin/python benchmarks/first_predict.py [--models a,b] [--threads 2] [--no-full]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

FLOPGAP = str(Path(sys.executable).with_name("flopgap"))
DEFAULT_MODELS = ("torchvision:mobilenet_v3_small", "torchvision:resnet50")
FIRST_TARGET_S, FULL_TARGET_S = 60.0, 90.0


def _load() -> dict:
    from flopgap.timing._sentinel import others_runnable

    return {"loadavg_1min": os.getloadavg()[0], "others_runnable": others_runnable()}


def _run(args: list[str], cache: str, timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "FLOPGAP_CACHE_DIR": cache, "COLUMNS": "160"}
    t0 = time.perf_counter()
    p = subprocess.run([FLOPGAP, *args], capture_output=True, text=True, env=env, timeout=timeout)
    return time.perf_counter() - t0, p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-full", action="store_true", help="skip the full-profile run")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    figures = {"threads": args.threads, "first_predict": [], "full_profile": None}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        with tempfile.TemporaryDirectory(prefix="flopgap-first-") as cache:
            out = Path(cache) / "pred.json"
            before = _load()
            wall, p = _run(["predict", model, "--threads", str(args.threads), "--json", str(out)], cache, 1800)
            after = _load()
            if p.returncode != 0:
                print(f"{model}: flopgap predict failed (exit {p.returncode}): {p.stderr.strip()[-300:]}")
                return 1
            d = json.loads(out.read_text())
            again, _ = _run(["predict", model, "--threads", str(args.threads), "--json", str(out)], cache, 1800)
            d2 = json.loads(out.read_text())
            busy = [w for w in d.get("warnings", []) if "busy" in w]
            row = {"model": model, "first_wall_s": wall, "second_wall_s": again,
                   "cases": None, "predicted_s": d["latency_s"], "interval": d["interval"],
                   "profile_source_second": d2["machine"]["source"], "busy_warnings": busy,
                   "load_before": before, "load_after": after}
            prof_files = list(Path(cache).glob("machine-*.json"))
            if prof_files:
                row["cases"] = len(json.loads(prof_files[0].read_text())["calibration"])
            figures["first_predict"].append(row)
            print(f"{model}: first predict {wall:.1f} s (target {FIRST_TARGET_S:.0f} s), second {again:.1f} s; "
                  f"{row['cases']} calibration cases cached; load {before['loadavg_1min']:.1f} -> "
                  f"{after['loadavg_1min']:.1f}, other runnable threads {before['others_runnable']} -> "
                  f"{after['others_runnable']}" + (f"; BUSY: {busy[0]}" if busy else ""), flush=True)
    if not args.no_full:
        with tempfile.TemporaryDirectory(prefix="flopgap-full-") as cache:
            before = _load()
            wall, p = _run(["machine", "--refresh", "--threads", str(args.threads), "--json", "-"], cache, 3600)
            after = _load()
            if p.returncode != 0:
                print(f"flopgap machine failed (exit {p.returncode}): {p.stderr.strip()[-300:]}")
                return 1
            d = json.loads(p.stdout)
            busy = [ln for ln in p.stderr.splitlines() if "busy" in ln]
            figures["full_profile"] = {"wall_s": wall, "cases": len(d["calibration"]), "load_before": before,
                                       "load_after": after, "busy_warnings": busy}
            print(f"full profile: {wall:.1f} s (target {FULL_TARGET_S:.0f} s), {len(d['calibration'])} cases; load "
                  f"{before['loadavg_1min']:.1f} -> {after['loadavg_1min']:.1f}" + (f"; BUSY: {busy[0]}" if busy
                                                                                      else ""), flush=True)
    if not args.no_save:
        from _results import save

        print(f"wrote {save('first_predict', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
