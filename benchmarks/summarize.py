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
import statistics
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
    script = str(payload.get("benchmark") or "?").split("-")[0]  # zoo_study-quick was run by zoo_study.py
    return (f"Measured by `benchmarks/{script}.py` at commit {payload.get('commit') or '?'} on "
            f"{m.get('cpu_model', '?')} ({m.get('logical_cores', '?')} logical cores, {threads} torch threads), "
            f"torch {m.get('torch', '?')}, {str(m.get('time', '?'))[:16].replace('T', ' ')} UTC.")


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _pct1(x) -> str:
    """One decimal: a share checked against a target (22 of 26 models is 84.6%, under 85%)."""
    return "-" if x is None else f"{100 * x:.1f}%"


@summary("noise_robustness")
def _noise(p: dict) -> str:
    f = p["figures"]
    rounds = f.get("rounds") or {"quiet": [f["quiet"]], "loaded": [f["loaded"]]}
    qf, qt = f.get("quiet_counts") or (None, None)
    lf, lt = f.get("loaded_counts") or (None, None)
    rho = (lambda r: "-" if r is None else f"{r:.3f}")
    q, ld = f["quiet"], f["loaded"]
    lines = [
        f"{len(rounds['quiet'])} round(s) of each phase, alternating; a timing is one timed attempt (a re-time "
        "counts again).", "",
        "| figure | quiet | under load | target |",
        "|---|---|---|---|",
        f"| timings flagged disturbed | {qf} of {qt} ({_pct(f['quiet_flagged_share'])}) | {lf} of {lt} "
        f"({_pct(f['loaded_flagged_share'])}) | <= 5% quiet, >= 95% loaded |",
        f"| verdicts flipped to their opposite | - | {len(f['flips'])} | 0 |",
        f"| zoo FLOPs Spearman rho per round (models kept) | "
        + ", ".join(f"{rho(x['rho_flops'])} ({x['rho_n']})" for x in rounds["quiet"]) + " | "
        + ", ".join(f"{rho(x['rho_flops'])} ({x['rho_n']})" for x in rounds["loaded"]) + " | |",
        "",
        "| claim (round 1) | quiet | under load |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v} | {ld['verdicts'].get(k)} |" for k, v in q["verdicts"].items()]
    lines += ["", machine_line(p)]
    return "\n".join(lines)


def _r_ci(d: dict | None) -> str:
    """A statistic with its 95% CI, ``0.97 [0.95, 0.98]`` (``-`` where undefined)."""
    if not d or d.get("r") is None:
        return "-"
    return f"{d['r']:.2f}" + (" [no CI]" if d.get("ci_low") is None else f" [{d['ci_low']:.2f}, {d['ci_high']:.2f}]")


def _units():
    """flopgap's unit formatting (plain Python, no torch), from the source tree when
    flopgap is not installed in the interpreter running this script."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.append(src)  # appended: an installed flopgap wins
    from flopgap import _units as units

    return units


def _latency(median, lo, hi, n, *, disturbed=False, precision_met=None) -> str:
    """A latency as every doc shows it: median [95% CI], samples, and what is wrong with it
    (the threads are in the machine line)."""
    u = _units()
    flags = ["disturbed"] * bool(disturbed) + ["precision not met"] * (precision_met is False)
    return f"{u.fmt_seconds(median)} {u.fmt_ci(lo, hi)}, n={n or '?'}" + "".join(f" ({f})" for f in flags)


@summary("zoo_study")
def _zoo_study(p: dict) -> str:
    si = _units().si
    f = p["figures"]
    names = (("params", "params"), ("flops", "FLOPs"), ("bytes", "bytes"), ("ops", "kernel ops"),
             ("prediction", "explain's prediction"))
    lines = [f"{f['models']} models ({f['zoo']} zoo), {f['max_time']:g} s timing budget per model, "
             f"{f['profile']} machine profile for the predictions, {f['wall_s'] / 60:.0f} min wall"
             + (f"; {len(f['failures'])} failed: {', '.join(sorted(f['failures']))}" if f["failures"] else "") + "."]
    for batch, b in f["batches"].items():
        by_label = {r["label"]: r for r in b["rows"]}
        left_out = ", ".join(f"{e['label']} ({e['reason']})" for e in b["excluded"])
        lines += ["", f"**Batch {batch}**: {b['n']} models" + (f"; left out: {left_out}" if left_out else "")
                  + ". Correlation with measured latency across the models [95% bootstrap CI]:", "",
                  "| metric | n | Spearman rho | Kendall tau | Pearson log-log r |", "|---|---|---|---|---|"]
        for key, name in names:
            c = b["correlations"][key]
            lines.append(f"| {name} | {c['n']} | {_r_ci(c['spearman'])} | {_r_ci(c['kendall'])} | "
                         f"{_r_ci(c['pearson_loglog'])} |")
        inv, fit = b["inversions"], b["fit"]
        share = f" ({_pct(inv['share'])})" if inv["pairs_compared"] else ""
        lines += ["", f"Inversions: {inv['count']} of {inv['pairs_compared']} ordered pairs{share} have a model "
                      "with fewer FLOPs whose latency CI lies wholly above the other's."]
        if fit.get("b") is not None:
            outliers = ", ".join(f"{o['label']} ({o['ratio']:.2f}x the fit)" for o in fit["outliers"]) or "none"
            lines.append(f"FLOPs-only fit: latency ~ FLOPs^{fit['b']:.2f} (log-log R^2 = {fit['r2']:.2f}, residual "
                         f"sd x{10 ** fit['sd']:.2f}); outliers beyond 2 sd: {outliers}.")
        if inv["top"]:
            lines += ["", "| fewer FLOPs (slower) | FLOPs | latency | more FLOPs (faster) | FLOPs | latency | "
                          "FLOPs ratio | slowdown |", "|---|---|---|---|---|---|---|---|"]
            for t in inv["top"]:
                slow, fast = (_latency(r.get("median"), r.get("ci_low"), r.get("ci_high"), r.get("n_samples"),
                                       disturbed=r.get("disturbed"), precision_met=r.get("precision_met"))
                              for r in (by_label.get(t["fewer"], {}), by_label.get(t["more"], {})))
                lines.append(f"| {t['fewer']} | {si(t['flops_fewer'])} | {slow} | {t['more']} | {si(t['flops_more'])} | "
                             f"{fast} | {t['count_ratio']:.2f}x | {t['slowdown']:.2f}x |")
    lines += ["", machine_line(p)]
    return "\n".join(lines)


@summary("variants_seed")
def _variants_seed(p: dict) -> str:
    from collections import Counter

    f = p["figures"]
    shown = [v for v in f["variants"] if v != "eager"]
    lines = [f"{f['threads']} thread(s), batch 1 and 32, {f['max_time']:g} s per comparison ({f['encoder_time']:g} s "
             f"for the encoder); int8-dynamic through {f['int8_backend']}. Speed-up = eager / variant from "
             "alternating timing, [95% CI]; above 1 the variant is faster. *no-op*: the variant did not change the "
             "model; *disturbed*: timed on a busy machine, no finding rests on it.", "",
             "| model | batch | eager latency | " + " | ".join(shown) + " |",
             "|---|---|---|" + "---|" * len(shown)]
    kinds: Counter = Counter()
    for res in f["results"]:
        kinds.update(x["kind"] for x in res["findings"])
        for batch in f["batches"]:
            rows = {r["variant"]: r for r in res["rows"] if r["batch"] == batch}
            if not rows:
                continue
            eager = rows.get("eager")
            cells = []
            for v in shown:
                r = rows.get(v)
                if r is None or r["status"] == "failed" or r["speedup"] is None:
                    cells.append("-" if r is None else r["status"])
                    continue
                lo, hi = r["speedup_ci"] or (None, None)
                cell = f"{r['speedup']:.2f}x" + (" [no CI]" if lo is None else f" [{lo:.2f}, {hi:.2f}]")
                cells.append(cell + (" no-op" if r["status"] == "no-op" else "")
                             + (" disturbed" if r["disturbed"] else ""))
            eager_lat = "-" if eager is None else _latency(
                eager["latency_s"], *(eager["latency_ci"] or (None, None)), eager["n_samples"],
                disturbed=eager["disturbed"], precision_met=eager["precision_met"])
            lines.append(f"| {res['model']} | {batch} | {eager_lat} | " + " | ".join(cells) + " |")
    order = ("faster", "slower", "no-gain", "no-op", "failed", "inconclusive", "unresolved")
    counted = ", ".join(f"{kinds[k]} {k}" for k in order if kinds[k]) or "none"
    lines += ["", f"Findings: {counted}.", "", machine_line(p)]
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


@summary("count_overhead")
def _count_overhead(p: dict) -> str:
    f = p["figures"]
    runs = sorted({r.get("repeats") for r in f["rows"]} - {None})
    lines = [f"Counting pass / eager forward, {f['threads']} thread(s), medians of "
             f"{'/'.join(map(str, runs)) or 'several'} interleaved runs each (no CI: the ratios are the figures); target "
             f"<= {f['target_x']}x. cpu = this thread's CPU time; floor = an empty dispatch mode + no-op module hooks.",
             "", "| model | forward | flopgap/fwd | FlopCounterMode/fwd | floor/fwd | cpu: flopgap | cpu: floor |",
             "|---|---|---|---|---|---|---|"]
    for r in f["rows"]:
        w, c = r["wall"], r["cpu"]
        lines.append(f"| {r['model']} | {1e3 * w['forward_s']:.2f} ms | {w['flopgap_x']:.2f}x | {w['fcm_x']:.2f}x | "
                     f"{w['floor_x']:.2f}x | {c['flopgap_x']:.2f}x | {c['floor_x']:.2f}x |")
    lines += ["", machine_line(p)]
    return "\n".join(lines)


@summary("llm_viewer_compare")
def _llm_viewer(p: dict) -> str:
    f = p["figures"]
    cfg = ", ".join(f"{k}={v}" for k, v in f["config"].items())
    lines = [f"`hf:llama` ({cfg}), batch {f['batch']}, prompt {f['prompt']}, a decode step at context "
             f"{f['prompt']}, float32 (LLM-Viewer's byte widths set to 4). Counts only: they do not depend on the "
             "machine.", "",
             "| phase | figure | flopgap (counted) | LLM-Viewer | ratio |", "|---|---|---|---|---|"]
    for r in f["rows"]:
        lines.append(f"| {r['phase']} | {r['figure']} | {r['flopgap']:,.0f} | {r['llm_viewer']:,.0f} | "
                     f"{r['ratio']:.3f} |")
    lines += ["", f"Computed by `benchmarks/{p.get('benchmark')}.py` at commit {p.get('commit') or '?'}, torch "
                  f"{(p.get('machine') or {}).get('torch', '?')}."]
    return "\n".join(lines)


@summary("handoff_spells")
def _handoff_spells(p: dict) -> str:
    f = p["figures"]
    lines = [f"`{f['model']}` timed {f['timings']} times over {f['seconds']:.0f} s on {f['threads']} CPU threads, no other "
             "process started; each timing a rigorous median, sampled until its 95% CI was within 2% or 2 s had "
             "passed.", "",
             "| timings | count | samples per timing (median) | median of their medians | p10 .. p90 | handoff part / calm |",
             "|---|---|---|---|---|---|"]
    groups = {"unflagged": [r for r in f["rows"] if not r["disturbed"]],
              "flagged_for_handoff_only": [r for r in f["rows"] if r["handoff_only"]]}
    for label, key in (("not flagged", "unflagged"), ("flagged for the handoff part alone", "flagged_for_handoff_only")):
        x = f[key]
        lines.append(f"| {label} | 0 | | | | |" if x is None else
                     f"| {label} | {x['timings']} | {statistics.median(r['n'] for r in groups[key]):.0f} | "
                     f"{x['median_s'] * 1e3:.2f} ms | {x['p10_s'] * 1e3:.2f} .. "
                     f"{x['p90_s'] * 1e3:.2f} ms | {x['handoff_ratio_min']:.2f}x .. {x['handoff_ratio_max']:.2f}x |")
    lines.append(f"| flagged for another reason | {f['flagged_otherwise']} | | | | |")
    if f["unflagged"] and f["flagged_for_handoff_only"]:
        lines += ["", f"The flagged timings' median is {f['flagged_for_handoff_only']['median_s'] / f['unflagged']['median_s']:.2f}x "
                  "the unflagged one."]
    lines += ["", machine_line(p)]
    return "\n".join(lines)


def _isolated_runs() -> list[dict]:
    """Saved full runs of predict_accuracy.py that timed each model in a fresh process, oldest first."""
    out = []
    for path in sorted((RESULTS / "history").glob("predict_accuracy-2*.json")):
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if d.get("figures", {}).get("isolate") == "model" and "--models" not in (d.get("argv") or []):
            out.append(d)
    return out


def _by_group(f: dict) -> bool:
    """The run matched passes on the cold chains apart (its drift readings carry their median)."""
    return any(d and "cold_median" in d for d in f.get("chain_drift_per_pass") or [])


def _moved(before: dict, after: dict) -> str:
    """How far the two sides moved between two runs: over the models scored in both, the
    median of each model's prediction (and of its measured median) in ``after`` over
    ``before``; a predictor unchanged between them shows how far two profiles differ."""
    prev = {r["model"]: r for r in before["figures"]["rows"] if r.get("measured_s")}
    pairs = [(r["predicted_s"] / prev[r["model"]]["predicted_s"], r["measured_s"] / prev[r["model"]]["measured_s"])
             for r in after["figures"]["rows"] if r.get("measured_s") and r["model"] in prev]
    if not pairs:
        return "-"
    pred, meas = (statistics.median([x[k] for x in pairs]) for k in (0, 1))
    return f"x{pred:.3f} / x{meas:.3f} ({len(pairs)} models)"


@summary("predict_accuracy")
def _predict_accuracy(p: dict) -> str:
    f = p["figures"]
    how = {"model": "each timing in a fresh process that built no other model",
           "none": "every model timed in the benchmark's own process"}.get(f.get("isolate", "none"), "")
    prof = f.get("profile") or {}
    again = len(f.get("profiles") or [prof]) - 1
    lines = [f"{f['threads']} threads; machine profile {prof.get('source', '?')} ({prof.get('cases', '?')} cases"
             + (f", {prof['seconds']:.0f} s" if prof.get("seconds") else "") + ")"
             + (f", measured again {again} time(s) when the machine left its state" if again else "")
             + f"; {f['passes']} timing passes, "
             f"{how}, " + (f"{f['matched_passes']} in the profile's state (its chains within 5% of their profile "
                          "time before and after the pass" + (", all of them and the cold ones apart"
                                                              if _by_group(f) else "")
                          + "); a model's figure is its median in the fastest of its "
                          "undisturbed passes in that state, and a model with none is not scored."
                          if "matched_passes" in f else
                          f"{f['calm_passes']} with the profile's chains within 5% of their profile time after the "
                          "pass; a model's figure is its median in its fastest undisturbed pass, and a model with "
                          "no undisturbed pass is not scored."), "",
             "| set | method | models | within +-10% | within +-25% | median error | Spearman | in 90% interval |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in f["sets"].items():
        if "flopgap" not in s:
            lines.append(f"| {name} | not scored: fewer than 2 undisturbed models | {s['n']} | | | | | |")
            continue
        for label, key in (("flopgap", "flopgap"), ("FLOPs fit (in-sample)", "flops_fit_in_sample")):
            x = s[key]
            lines.append(f"| {name} | {label} | {x['n']} | {_pct1(x['within_10'])} | {_pct1(x['within_25'])} | "
                         f"{100 * x['median_abs_error']:.1f}% | {x['spearman']:.3f} | "
                         f"{_pct1(x.get('interval_coverage'))} |")
        if s.get("disturbed_not_scored"):
            lines.append(f"| {name} | not scored (disturbed, or not in the profile's state, in every pass) | "
                         f"{len(s['disturbed_not_scored'])} | "
                         f"{', '.join(s['disturbed_not_scored'])} | | | | |")
    runs = _isolated_runs()
    if len(runs) > 1:
        lines += ["", "Every saved run with each timing in a fresh process (`benchmarks/results/history/`), the one "
                  "above among them; within +-10% / median error / in 90% interval:", "",
                  "| run | commit | passes in the profile's state | tuned | heldout-dev | heldout-final | "
                  "against the run before: predicted / measured |",
                  "|---|---|---|---|---|---|---|"]
        for i, r in enumerate(runs):
            rf = r["figures"]
            cells = []
            for name in ("tuned", "heldout-dev", "heldout-final"):
                x = (rf["sets"].get(name) or {}).get("flopgap")
                cells.append(f"{_pct1(x['within_10'])} / {100 * x['median_abs_error']:.1f}% / "
                             f"{_pct1(x.get('interval_coverage'))}" if x else "-")
            lines.append(f"| {str(r['machine'].get('time', '?'))[:16].replace('T', ' ')} | {r.get('commit')} | "
                         f"{rf.get('matched_passes', rf['calm_passes'])} of {rf['passes']} | " + " | ".join(cells)
                         + f" | {_moved(runs[i - 1], r) if i else '-'} |")
    spreads = [(name, s["pass_spread"]) for name, s in f["sets"].items() if (s.get("pass_spread") or {}).get("models")]
    if spreads:
        lines += ["", "How far the measured side repeats: across its undisturbed passes, a model's slowest median "
                  "over its fastest, " + "; ".join(
                      f"{name}: median +{100 * x['median']:.1f}%, above 10% for {_pct(x['over_10'])} of "
                      f"{x['models']} models" for name, x in spreads) + "."]
    lines += ["", machine_line(p)]
    return "\n".join(lines)


@summary("process_history")
def _process_history(p: dict) -> str:
    f = p["figures"]
    def t(x):
        return (f"{x['median_s'] * 1e3:.2f} ms [{x['ci_low_s'] * 1e3:.2f}, {x['ci_high_s'] * 1e3:.2f}] n={x['samples']}"
                + (" (disturbed)" if x["disturbed"] else ""))

    lines = [f"CPU, {f['threads']} threads, glibc allocator {f['allocator']}; each target timed (median, 95% CI of "
             "the median, samples; 2% CI target) in a fresh process, "
             f"then {len(f['others'])} other models built, run {f['calls']}x and freed in the same process, then the "
             "targets timed again.", "",
             "| model | fresh process | after the others | after / fresh |", "|---|---|---|---|"]
    for r in f["rows"]:
        after = "; ".join(t(x) for x in r["after"])
        ratio = ", ".join(f"{v:.2f}x" for v in r["ratio_after_over_fresh"]) if r["ratio_after_over_fresh"] else \
            "not comparable (a disturbed timing)"
        lines.append(f"| {r['model']} | {t(r['fresh'])} | {after} | {ratio} |")
    lines += ["", machine_line(p)]
    return "\n".join(lines)


@summary("chain_history")
def _chain_history(p: dict) -> str:
    f = p["figures"]
    lines = [f"CPU, {f['threads']} threads, glibc allocator pinned; each synthetic chain of the profile timed "
             f"(median of {f['burst_s']:g} s of blocks) in a fresh process that built the chains and ran nothing "
             f"else, then in a process that first ran {f['history_cases']} calibration cases "
             f"({f['history_s']:g} s), alternately, {f['pairs']} pairs; a chain's figure is its median ratio over "
             "the pairs.", "",
             "| chain | history / fresh (median) | each pair |", "|---|---|---|"]
    for r in f["chains"]:
        lines.append(f"| {r['chain']} | {r['median_ratio']:.2f}x | {', '.join(f'{v:.2f}' for v in r['ratios'])} |")
    lines += ["", machine_line(p)]
    return "\n".join(lines)


@summary("chain_fresh")
def _chain_fresh(p: dict) -> str:
    f = p["figures"]
    lines = [f"CPU, {f['threads']} threads, glibc allocator pinned; each chain built alone in a fresh process and "
             f"timed with `flopgap.timing.measure` (2% CI), {f['rounds']} rounds, a chain's figure its fastest "
             "undisturbed round; against the profile's own time of the chain (timed in the chain child) and the "
             "in-sequence fit over every chain and over the chains that are not whole networks.", "",
             "| chain | fresh process (median, 95% CI, samples) | / profile | / fit | / fit without whole networks |",
             "|---|---|---|---|---|"]
    for r in f["chains"]:
        if "fresh_s" not in r:
            lines.append(f"| {r['chain']} | inconclusive: every round disturbed | | | |")
            continue
        t = min((t for t in r["timings"] if not t["disturbed"]), key=lambda t: t["median_s"])
        name = f"**{r['chain']}**" if r["whole_network"] else r["chain"]
        lines.append(f"| {name} | {_latency(t['median_s'], t['ci_low_s'], t['ci_high_s'], t['samples'])} | "
                     f"{r['vs_profile']:.3f}x | {r['vs_fit']:.3f}x | {r['vs_fit_without_nets']:.3f}x |")
    for group, s in f["summary"].items():
        lines.append(f"| median over the {s['chains']} {group.replace('_', ' ')} | | {s['vs_profile']:.3f}x | "
                     f"{s['vs_fit']:.3f}x | {s['vs_fit_without_nets']:.3f}x |")
    lines += ["", "Whole networks in bold.", "", machine_line(p)]
    return "\n".join(lines)


@summary("python_work")
def _python_work(p: dict) -> str:
    f = p["figures"]
    u = _units()
    lines = [f"CPU, {f['threads']} threads; each block on the input it gets inside its model, in one process; the "
             "block called as its model calls it and a replay of the ATen ops it dispatched, each timed with "
             "`flopgap.timing.measure` (2% CI); one bytecode instruction of module code cost "
             f"{u.fmt_seconds(f['instruction_s'])} here (a tree of kernel-free modules).", "",
             "| model | block | ops | block (median, 95% CI, samples) | replay of its ops | beyond the replay | "
             "instructions | x cost |",
             "|---|---|---|---|---|---|---|---|"]
    def timing(t):
        return _latency(t["median_s"], t["ci_low_s"], t["ci_high_s"], t["samples"], disturbed=t["disturbed"])

    for r in f["blocks"]:
        b, rp = r["block"], r["replay"]
        noise = (b["ci_high_s"] - b["ci_low_s"] + rp["ci_high_s"] - rp["ci_low_s"]) / 2
        beyond = ("not used: disturbed" if r["disturbed"] else u.fmt_seconds(r["beyond_replay_s"])
                  + (" (within the two CIs)" if abs(r["beyond_replay_s"]) <= noise else ""))
        lines.append(f"| {r['model']} | {r['part']} | {r['ops']} | {timing(r['block'])} | {timing(r['replay'])} | "
                     f"{beyond} | {r['instructions']:,} | {u.fmt_seconds(r['priced_s'])} |")
    lines += ["", "The replay calls each op from a Python loop, so it carries a few instructions per op itself; "
              "the column beyond it is the block's own Python less that. Where the kernels take milliseconds the "
              "difference can fall within the two timings' confidence intervals, and is marked so.", "",
              machine_line(p)]
    return "\n".join(lines)


@summary("gather_effect")
def _gather_effect(p: dict) -> str:
    f = p["figures"]
    u = _units()
    moved = [r for r in f["rows"] if abs(r["with_s"] / r["without_s"] - 1) >= 0.001]
    lines = [f"CPU, {f['threads']} threads; sets {f['sets']}; each model predicted from one cached profile with "
             "scattered reads priced and with them switched off (nothing timed).", "",
             "| set | model | ops reading in runs under 64 | predicted with | without | change |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['set']} | {r['model']} | {r['gather_ops']} | {u.fmt_seconds(r['with_s'])} | "
              f"{u.fmt_seconds(r['without_s'])} | {r['with_s'] / r['without_s'] - 1:+.1%} |"
              for r in sorted(moved, key=lambda r: -(r["with_s"] / r["without_s"]))]
    lines += ["", f"The other {len(f['rows']) - len(moved)} models moved by less than 0.1%.", "", machine_line(p)]
    return "\n".join(lines)


@summary("model_parts")
def _model_parts(p: dict) -> str:
    f = p["figures"]
    alloc = "glibc allocator pinned" if f.get("allocator") == "pinned" else "glibc allocator as it comes"
    lines = [f"CPU, {f['threads']} threads, one process, {alloc}; each part called on the input it gets inside its model, "
             "timed with `flopgap.timing.measure` (2% CI) and predicted on its own from the cached machine profile; "
             "error = predicted / measured - 1.", "",
             "| model / part | ops | measured (median, 95% CI, samples) | predicted | error |",
             "|---|---|---|---|---|"]

    def row(name, r):
        t = _latency(r["median_s"], r["ci_low_s"], r["ci_high_s"], r["samples"], disturbed=r["disturbed"])
        err = "not used" if r["disturbed"] else f"{r['predicted_s'] / r['median_s'] - 1:+.1%}"
        return f"| {name} | {r['ops']} | {t} | {_units().fmt_seconds(r['predicted_s'])} | {err} |"

    for m in f["models"]:
        lines.append(row(f"**{m['model']}** (whole{', cold' if m['whole']['cold'] else ''})", m["whole"]))
        lines += [row(f"{r['part']}{' (cold)' if r['cold'] else ''}", r) for r in m["parts"] if r["ops"]]
        if m.get("disturbed_timings"):
            lines.append(f"| whole over the sum of its parts | | inconclusive: {m['disturbed_timings']} timing(s) "
                         "disturbed | | |")
        else:
            measured = m["whole"]["median_s"] / m["parts_measured_s"]
            lines.append(f"| whole over the sum of its parts | | {measured:.3f}x "
                         f"| {m['whole']['predicted_s'] / m['parts_predicted_s']:.3f}x | |")
    lines += ["", "Parts without a dispatched op (identities, dropout in eval) are left out of the table, not the sums.",
              "", machine_line(p)]
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


@summary("fleet")
def _fleet(p: dict) -> str:
    f = p["figures"]
    st = f["study"]
    lines = [f"A count-and-predict study of {len(f['models'])} models ({f['profile']} profile) on a local Ray "
             f"cluster, results into {st['store']}; then the store's write rate with concurrent writers.", "",
             "| Ray worker nodes | wall time | items per node | status |", "|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['wall_s']:.1f} s | {', '.join(map(str, r['items_per_node']))} | {r['status']} |"
              for r in st["runs"]]
    lines += ["", f"Speed-up with 2 worker nodes: {st['speedup']:.2f}x (both nodes share this machine's "
                  f"{(p.get('machine') or {}).get('logical_cores', '?')} cores).", "",
              "| store | writers | rows stored | items/s | transactions/s |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['writers']} | {v['stored']} | {v['items_per_s']:.0f} | {v['transactions_per_s']:.0f} |"
              for k, v in f["store"].items()]
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


def _example(payload: dict, key: str, head: int | None = None, tail: int = 0, skip: int = 0) -> str:
    """One example's output as a fenced block: the command, the lines the doc shows (the
    example's own cut, or the first ``head`` and last ``tail`` lines), and where and when
    it ran."""
    ex = payload["figures"].get(key)
    if ex is None:
        return f"(no output for example {key!r} yet: run `python benchmarks/examples.py --only {key}`)\n"
    lines = ex["output"].rstrip("\n").split("\n")
    head, tail = (ex.get("head"), ex.get("tail") or 0) if head is None else (head, tail)
    if skip:
        lines = [f"[... {skip} lines ...]"] + lines[skip:]
        head = None if head is None else head + 1   # the marker line is not one of the shown lines
    if head is not None and len(lines) > head + tail:
        cut = len(lines) - head - tail
        lines = lines[:head] + [f"[... {cut} more lines ...]"] + (lines[-tail:] if tail else [])
    m = payload.get("machine") or {}
    status = "" if ex["rc"] == 0 else f", exit status {ex['rc']}"
    return "\n".join(["```", f"$ {ex['command']}", *lines, "```",
                      f"`examples.py` at {ex.get('commit') or payload.get('commit') or '?'}, "
                      f"{m.get('cpu_model', '?')} ({m.get('logical_cores', '?')} cores), torch {m.get('torch', '?')}, "
                      f"{str(ex.get('time') or m.get('time', '?'))[:16].replace('T', ' ')} UTC{status}."])


# examples.ID (the example's own cut), examples.ID.H (its first H lines), examples.ID.H.T
# (and its last T), each optionally after .sS (its first S lines skipped)
_EXAMPLE_NAME = re.compile(r"examples\.([\w-]+)(?:\.s(\d+))?(?:\.(\d+)(?:\.(\d+))?)?")


def render(name: str, results: dict[str, dict]) -> str:
    if name.startswith("examples."):
        if "examples" not in results:
            return "(no example output yet: run `python benchmarks/examples.py`, then `python benchmarks/summarize.py`)\n"
        m = _EXAMPLE_NAME.fullmatch(name)
        if m is None:
            return f"(no summary is registered for {name!r}: examples.ID[.sSKIP][.HEAD[.TAIL]])\n"
        key, skip, head, tail = m.group(1), int(m.group(2) or 0), m.group(3), int(m.group(4) or 0)
        return _example(results["examples"], key, None if head is None else int(head), tail, skip).rstrip("\n") + "\n"
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
