"""Turn the benchmarks' latest results into the summaries the docs show.

Every figure a doc gives about this project's performance sits between two markers::

    <!-- summary:NAME -->
    ...generated text...
    <!-- /summary:NAME -->

and comes from ``benchmarks/results/NAME.json`` through the function registered for NAME
below, with the machine and the commit it ran on. Nothing between the markers is typed
by hand: ``python benchmarks/summarize.py`` rewrites every block in ``README.md`` and
``docs/*.md``; ``--check`` exits 1 when a block differs from what the results give
(``tests/test_docs_summaries.py`` runs it).

    python benchmarks/summarize.py           # rewrite the blocks
    python benchmarks/summarize.py --check   # are the docs in step with the results?
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
_BLOCK = re.compile(r"(<!-- summary:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /summary:(?P=name) -->)", re.S)

SUMMARIES: dict[str, Callable[[dict], str]] = {}


def summary(name: str):
    """Register the function that writes the summary of ``benchmarks/results/<name>.json``."""
    def deco(fn):
        if name in SUMMARIES:
            raise ValueError(f"summary {name!r} registered twice")
        SUMMARIES[name] = fn
        return fn
    return deco


def machine_line(payload: dict) -> str:
    m = payload.get("machine") or {}
    threads = m.get("torch_threads")
    return (f"Measured by `benchmarks/{payload.get('benchmark')}.py` at commit {payload.get('commit') or '?'} on "
            f"{m.get('cpu_model', '?')} ({m.get('logical_cores', '?')} logical cores, {threads} torch threads), "
            f"torch {m.get('torch', '?')}, {str(m.get('time', '?'))[:16].replace('T', ' ')} UTC.")


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


@summary("noise_robustness")
def _noise(p: dict) -> str:
    f = p["figures"]
    q, ld = f["quiet"], f["loaded"]

    def share(ph):
        flagged = ph["seed"]["flagged"] + ph["zoo"]["flagged"]
        timings = ph["seed"]["timings"] + ph["zoo"]["timings"]
        return f"{flagged} of {timings}"

    rho = (lambda r: "-" if r is None else f"{r:.3f}")
    lines = [
        "| figure | quiet | under load | target |",
        "|---|---|---|---|",
        f"| timings flagged disturbed | {share(q)} ({_pct(f['quiet_flagged_share'])}) | {share(ld)} "
        f"({_pct(f['loaded_flagged_share'])}) | <= 5% quiet, >= 95% loaded |",
        f"| verdicts flipped to their opposite | - | {len(f['flips'])} | 0 |",
        f"| zoo FLOPs Spearman rho (models kept) | {rho(q['rho_flops'])} ({q['rho_n']}) | {rho(ld['rho_flops'])} "
        f"({ld['rho_n']}) | |",
        "",
        "| claim | quiet | under load |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v} | {ld['verdicts'].get(k)} |" for k, v in q["verdicts"].items()]
    lines += ["", machine_line(p)]
    return "\n".join(lines)


@summary("timer_quality")
def _timer_quality(p: dict) -> str:
    import statistics

    f = p["figures"]
    lines = [f"{f['processes']} fresh processes per model and timer, {f['threads']} threads, max_time "
             f"{f['max_time']:g} s. Spread = max/min of the per-process medians (1.000 is perfect); cost = median "
             "wall seconds per timing.", "",
             "| model | median | flopgap spread | adaptive_autorange spread | time.time spread | flopgap cost (s) | "
             "autorange cost (s) | flopgap runs disturbed |", "|---|---|---|---|---|---|---|---|"]
    for spec, timers in f["models"].items():
        rows = [timers.get(t) or [] for t in ("flopgap", "adaptive_autorange", "time.time")]
        if not all(rows):
            continue
        spreads = [max(r["median"] for r in rs) / min(r["median"] for r in rs) for rs in rows]
        med = statistics.median(r["median"] for r in rows[0])
        cost = [statistics.median(r["cost_s"] for r in rs) for rs in rows[:2]]
        dist = sum(bool(r.get("disturbed")) for r in rows[0])
        unit = f"{med * 1e6:.1f} us" if med < 1e-3 else f"{med * 1e3:.2f} ms"
        lines.append(f"| {spec} | {unit} | {spreads[0]:.3f} | {spreads[1]:.3f} | {spreads[2]:.3f} | {cost[0]:.2f} | "
                     f"{cost[1]:.2f} | {dist} of {len(rows[0])} |")
    c = f.get("seed_claim_2")
    if c:
        lines += ["", f"`flopgap time seed:ex2-deep --vs seed:ex2-wide`: ratio {c['ratio']:.3f}, 95% CI "
                      f"{c['ci_low']:.3f} .. {c['ci_high']:.3f}" + (" (machine disturbed)" if c.get("disturbed") else "")]
    lines += ["", machine_line(p)]
    return "\n".join(lines)


@summary("predict_accuracy")
def _predict_accuracy(p: dict) -> str:
    f = p["figures"]
    lines = [f"{f['threads']} threads; {f['passes']} timing passes, {f['calm_passes']} with the profile's chains "
             "within 5% of their profile time; a model's figure is its median in its least-disturbed undisturbed "
             "pass, and a model with no undisturbed pass is not scored.", "",
             "| set | method | models | within +-10% | within +-25% | median error | Spearman | in 90% interval |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in f["sets"].items():
        if "flopgap" not in s:
            lines.append(f"| {name} | not scored: fewer than 2 undisturbed models | {s['n']} | | | | | |")
            continue
        for label, key in (("flopgap", "flopgap"), ("FLOPs fit (in-sample)", "flops_fit_in_sample")):
            x = s[key]
            lines.append(f"| {name} | {label} | {x['n']} | {_pct(x['within_10'])} | {_pct(x['within_25'])} | "
                         f"{100 * x['median_abs_error']:.1f}% | {x['spearman']:.3f} | "
                         f"{_pct(x.get('interval_coverage'))} |")
        if s.get("disturbed_not_scored"):
            lines.append(f"| {name} | not scored (disturbed in every pass) | {len(s['disturbed_not_scored'])} | "
                         f"{', '.join(s['disturbed_not_scored'])} | | | | |")
    lines += ["", machine_line(p)]
    return "\n".join(lines)


@summary("first_predict")
def _first_predict(p: dict) -> str:
    f = p["figures"]
    lines = [f"{f['threads']} threads, a fresh process and an empty cache each.", "",
             "| run | wall time | calibration cases cached | load average before / after | busy |",
             "|---|---|---|---|---|"]
    for r in f["first_predict"]:
        lines.append(f"| first `flopgap predict {r['model']}` | {r['first_wall_s']:.1f} s | {r['cases']} | "
                     f"{r['load_before']['loadavg_1min']:.1f} / {r['load_after']['loadavg_1min']:.1f} | "
                     f"{'yes' if r['busy_warnings'] else 'no'} |")
        lines.append(f"| the same again (cache filled) | {r['second_wall_s']:.1f} s | | | |")
    full = f.get("full_profile")
    if full:
        lines.append(f"| full profile (`flopgap machine --refresh`) | {full['wall_s']:.1f} s | {full['cases']} | "
                     f"{full['load_before']['loadavg_1min']:.1f} / {full['load_after']['loadavg_1min']:.1f} | "
                     f"{'yes' if full['busy_warnings'] else 'no'} |")
    lines += ["", machine_line(p)]
    return "\n".join(lines)


def _load_all() -> dict[str, dict]:
    out = {}
    for path in sorted(RESULTS.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except ValueError:
            continue
    return out


def render(name: str, results: dict[str, dict]) -> str:
    if name not in SUMMARIES:
        return f"(no summary is registered for {name!r} in benchmarks/summarize.py)\n"
    if name not in results:
        return (f"(no result yet: run `python benchmarks/{name.split('-')[0]}.py` on a quiet machine, then "
                "`python benchmarks/summarize.py`)\n")
    return SUMMARIES[name](results[name]).rstrip("\n") + "\n"


def update(text: str, results: dict[str, dict]) -> str:
    return _BLOCK.sub(lambda m: m.group(1) + render(m.group("name"), results) + m.group(4), text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a doc's block differs from the results")
    args = ap.parse_args()
    results = _load_all()
    stale = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        new = update(text, results)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"summaries out of step with benchmarks/results: {', '.join(map(str, stale))} "
              "(run python benchmarks/summarize.py)", file=sys.stderr)
        return 1
    if not args.check:
        print(f"updated {', '.join(map(str, stale)) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
