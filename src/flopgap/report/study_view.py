"""Turn study results into report sections (tables, verdicts, plots), shown in the
terminal with rich and written as self-contained HTML by :mod:`flopgap.report.html`.

One source for both: :func:`sections_for` builds :class:`~flopgap.report.html.Section`
lists; :func:`print_sections` prints their tables and paragraphs (not the plots).
"""

from __future__ import annotations

import math
from typing import Sequence

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from flopgap.report._format import fmt_bytes, fmt_seconds, si
from flopgap.report.html import Figure, Para, Section, Table
from flopgap.timing._stats import independent_ratio_ci

__all__ = ["sections_for", "zoo_sections", "seed_sections", "shufflenet_sections", "compare_runs",
           "compare_sections", "runs_table", "print_sections", "title_for"]

_METRIC_NAMES = {"params": "params", "flops": "FLOPs", "bytes": "bytes", "ops": "kernel ops",
                 "prediction": "explain prediction"}


def _num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}"


def _r(d: dict) -> str:
    if d is None or d.get("r") is None or not math.isfinite(d["r"]):
        return "-"
    lo, hi = d.get("ci_low"), d.get("ci_high")
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and math.isfinite(lo) else ""
    return f"{d['r']:.2f}{ci}"


def _ci(x, lo, hi, digits: int = 3) -> str:
    if x is None:
        return "-"
    if lo is None or hi is None:
        return f"{_num(x, digits)} [no CI: too few samples]"
    return f"{_num(x, digits)} [{_num(lo, digits)}, {_num(hi, digits)}]"


def _lat(m, lo, hi) -> str:
    if m is None:
        return "-"
    if lo is None or hi is None:
        return f"{fmt_seconds(m)} [no CI: too few samples]"
    return f"{fmt_seconds(m)} [{fmt_seconds(lo)}, {fmt_seconds(hi)}]"


def _short(label: str) -> str:
    return label.split(":", 1)[1] if label.startswith(("torchvision:", "seed:", "zoo:")) else label


def title_for(result) -> str:
    run = result.run
    names = {"zoo": "Zoo correlation study", "seed": "Seed article case study",
             "shufflenet-v2": "ShuffleNet V2 guidelines case study"}
    return f"flopgap: {names.get(run.kind, run.kind)} (run {run.id})"


def _run_para(run) -> Para:
    cfg = ", ".join(f"{k}={v}" for k, v in run.config.items() if k not in ("models",))
    return Para(f"run {run.id} ({run.kind}, {run.status}), started {run.started}"
                f"{', finished ' + run.finished if run.finished else ''}; config: {cfg}", "note")


def _failures(result) -> list[Section]:
    if not result.failures:
        return []
    return [Section("Failures", [
        Para(f"{len(result.failures)} item(s) failed and are left out of every table above; "
             "flopgap study ... --resume retries them.", "warn"),
        Table(["item", "error"], sorted(result.failures.items()), "failed items", "failures"),
    ])]


# ----------------------------------------------------------------------------- zoo
def zoo_sections(result, *, plots: bool = True) -> list[Section]:
    sections = [Section("Run", [_run_para(result.run), Para(
        "Latency: median of adaptive warmed-up samples with a 95% CI (flopgap.timing). Correlations are across "
        "models at one batch size: Spearman and Kendall on ranks, Pearson on log10 values; [95% bootstrap CI, "
        "2000 resamples of the models, seeded]. FLOPs count a fused multiply-add as 2.", "note")])]
    for batch, a in result.analysis.items():
        rows = [r for r in result.rows if r["batch"] == batch]
        corr = a["correlations"]
        ctab = Table(["metric", "n", "Spearman rho [95% CI]", "Kendall tau [95% CI]", "Pearson log-log r [95% CI]"],
                     [[_METRIC_NAMES[k], corr[k]["n"], _r(corr[k]["spearman"]), _r(corr[k]["kendall"]),
                       _r(corr[k]["pearson_loglog"])] for k in corr],
                     f"correlation with measured latency, batch {batch}", f"correlations_b{batch}")
        blocks: list = [ctab]
        inv = a["inversions"]
        blocks.append(Para(
            f"Inversions: {inv['count']} of {inv['pairs_compared']} ordered pairs ({_num(100 * inv['share'], 2) if inv['pairs_compared'] else '-'}%) "
            "have a model with fewer FLOPs whose latency CI lies wholly above the other's."))
        if inv["top"]:
            blocks.append(Table(
                ["fewer FLOPs (slower)", "FLOPs", "latency", "more FLOPs (faster)", "FLOPs", "latency",
                 "FLOPs ratio", "slowdown", "explain: why the slower one is slow"],
                [[p["fewer"], si(p["flops_fewer"]), fmt_seconds(p["latency_fewer"]), p["more"], si(p["flops_more"]),
                  fmt_seconds(p["latency_more"]), f"{p['count_ratio']:.3g}x", f"{p['slowdown']:.3g}x", p["finding"]]
                 for p in inv["top"]],
                f"top inversions by FLOPs ratio x slowdown, batch {batch}", f"inversions_b{batch}"))
        fit = a["fit"]
        if fit["residuals"]:
            blocks.append(Para(f"FLOPs-only fit: latency ~ FLOPs^{fit['b']:.2f} (log-log R^2 = {fit['r2']:.2f}, "
                               f"residual sd x{10 ** fit['sd']:.2f}); outliers are more than 2 sd off."))
            if fit["outliers"]:
                blocks.append(Table(["model", "FLOPs", "measured", "FLOPs fit", "measured / fit", "z", "explain"],
                                    [[o["label"], si(o["flops"]), fmt_seconds(o["median"]), fmt_seconds(o["fitted"]),
                                      f"{o['ratio']:.2f}x", f"{o['z']:+.1f}", o["finding"]] for o in fit["outliers"]],
                                    f"outliers of the FLOPs-only fit, batch {batch}", f"outliers_b{batch}"))
        resid = {r["label"]: r for r in fit["residuals"]}
        blocks.append(Table(
            ["model", "params", "FLOPs", "bytes", "kernel ops", "predicted", "measured [95% CI]",
             "measured / predicted", "measured / FLOPs fit", "explain: top finding"],
            [[r["label"], si(r["params"]), si(r["flops"]), fmt_bytes(r["bytes"]) if r["bytes"] is not None else "-",
              r["ops"] if r["ops"] is not None else "-", fmt_seconds(r["prediction"]),
              _lat(r["median"], r["ci_low"], r["ci_high"]),
              f"{r['median'] / r['prediction']:.2f}x" if r["prediction"] and r["median"] else "-",
              f"{resid[r['label']]['ratio']:.2f}x" if r["label"] in resid else "-", r["finding"]]
             for r in sorted(rows, key=lambda r: r["median"] or 0)],
            f"models, batch {batch}, by latency", f"models_b{batch}"))
        if plots and len(rows) >= 2:
            from flopgap.report import plots as P

            labels = [r["label"] for r in rows]
            lat = [r["median"] for r in rows]
            errs = [(r["ci_low"], r["ci_high"]) for r in rows]
            fitab = (fit["a"], fit["b"]) if fit["residuals"] else None
            blocks.append(Figure(P.loglog_scatter([r["flops"] for r in rows], lat, labels, xlabel="FLOPs",
                                                  title=f"latency vs FLOPs, batch {batch}", fit=fitab, errors=errs),
                                 f"latency vs FLOPs (log-log), batch {batch}"))
            blocks.append(Figure(P.loglog_scatter([r["params"] for r in rows], lat, labels, xlabel="params",
                                                  title=f"latency vs params, batch {batch}", errors=errs),
                                 f"latency vs params (log-log), batch {batch}"))
            if any(r["prediction"] for r in rows):
                blocks.append(Figure(P.predicted_vs_measured([r["prediction"] for r in rows], lat, labels,
                                                             title=f"explain's prediction vs measured, batch {batch}"),
                                     f"predicted vs measured latency, batch {batch}"))
            if fit["residuals"]:
                blocks.append(Figure(P.residuals_plot([x["flops"] for x in fit["residuals"]],
                                                      [x["ratio"] for x in fit["residuals"]],
                                                      [x["label"] for x in fit["residuals"]],
                                                      outliers=[o["label"] for o in fit["outliers"]]),
                                     f"residuals of the FLOPs-only fit, batch {batch}"))
        sections.append(Section(f"Batch {batch}: {len(rows)} models", blocks))
    return sections + _failures(result)


# ----------------------------------------------------------------------------- seed
def _first_text(findings) -> str:
    if not findings:
        return ""
    f = findings[0]
    return f.get("text", "") if isinstance(f, dict) else str(f)


def seed_sections(result, *, plots: bool = True) -> list[Section]:
    claims = Table(
        ["example", "claim", "metric", "measured [95% CI]", "verdict", "explain's reason", "notes"],
        [[c["example"], c["claim"], c["metric"], _ci(c["ratio"], c["ci_low"], c["ci_high"]), c["verdict"],
          c.get("reason", ""), c.get("notes", "")] for c in result.claims],
        "one verdict per claim of the article", "claims")
    lat = {}
    for comp in result.comparisons.values():
        for side in ("a", "b"):
            m = comp[side]
            lat.setdefault(m["spec"]["name"] if isinstance(m.get("spec"), dict) else m.get("name"), m)
    rows = []
    for spec, p in result.models.items():
        c = p.get("count", {})
        m = lat.get(spec)
        med = m["median"] if m else None
        rows.append([spec, si(c.get("params")), si(c.get("flops")),
                     fmt_bytes((c.get("bytes_read") or 0) + (c.get("bytes_written") or 0)), c.get("ops", "-"),
                     _lat(med, m["ci_low"], m["ci_high"]) if m else "-", fmt_seconds(p.get("one_shot_s")),
                     f"{p['one_shot_s'] / med:.1f}x" if med and p.get("one_shot_s") else "-",
                     "yes" if p.get("quantized") else "no", _first_text(p.get("findings"))])
    models = Table(["model", "params", "FLOPs", "bytes", "kernel ops", "median latency [95% CI]",
                    "article's method (1 cold call)", "cold / median", "int8", "explain: top finding"],
                   rows, "the seed's models, batch 1", "models")
    verdict_rule = Para(
        "Verdicts: the latency ratio A/B of each pair is timed alternately (warmed-up medians, paired bootstrap "
        "95% CI). An effect counts beyond 5%: holds = the CI lies wholly beyond +5% (or -5%) on the claimed side; "
        "does not hold = it lies wholly on the other side of 1, or wholly within +-5% of 1 (no effect worth the "
        "name); otherwise inconclusive at this noise. "
        "torch.ao.quantization (Ex.3) is deprecated in favour of torchao; the study uses it because the article does.",
        "note")
    return [Section("Run", [_run_para(result.run)]), Section("Claims and verdicts", [claims, verdict_rule]),
            Section("Models", [models])] + _failures(result)


# ----------------------------------------------------------------------------- shufflenet
def shufflenet_sections(result, *, plots: bool = True) -> list[Section]:
    cfg = result.run.config
    spatial = cfg.get("spatial", 56)
    intro = Para(
        f"Micro-benchmarks of ShuffleNet V2 (Ma et al., ECCV 2018, Tables 1-4): 10 stacked blocks, batch 1, input "
        f"{spatial}x{spatial} (paper: 56x56{'' if spatial == 56 else f'; scaled by {(spatial / 56) ** 2:.3g} in FLOPs for a CPU, equal across configurations'}), "
        f"threads {cfg.get('threads') or 'torch default'}. Relative speed = latency of the group's first configuration / "
        "latency of this one (timed alternately; 95% CI). Paper columns: the paper's speeds divided by the first "
        "configuration's (GPU = GTX 1080Ti batches/s, ARM = Snapdragon 810 one thread images/s).", "note")
    sections = [Section("Run", [_run_para(result.run), intro])]
    gv = Table(["guideline", "statement", "expected here", "configs holding", "verdict", "direction agrees with paper (ARM)"],
               [[g["guideline"], g["text"], g["expect"], f"{g['holds']} of {g['measured']}", g["verdict"],
                 g["direction_agrees_with_paper_arm"]] for g in result.guidelines],
               "verdict per guideline", "guidelines")
    sections.append(Section("Verdicts", [gv]))
    for g in ("G1", "G2", "G3", "G4"):
        rows = [r for r in result.rows if r["guideline"] == g]
        if all(r["verdict"] == "not measured" for r in rows if r["verdict"] != "(reference)"):
            continue
        t = Table(["configuration", "FLOPs", "FLOPs / first", "latency", "relative speed [95% CI]",
                   "paper GPU", "paper ARM", "verdict"],
                  [[r["config"], si(r["flops"]), _num(r["flops_vs_first"], 4), fmt_seconds(r["latency"]),
                    _ci(r["speed"], r["speed_low"], r["speed_high"]) if r["verdict"] != "(reference)" else "1",
                    _num(r["paper_gpu"]), _num(r["paper_arm"]), r["verdict"]] for r in rows],
                  f"{g}: relative speeds, this machine vs the paper", f"shufflenet_{g}")
        blocks: list = [t]
        if plots:
            from flopgap.report import plots as P

            blocks.append(Figure(P.relative_speed_bars(
                [r["config"] for r in rows],
                {"this machine": [r["speed"] for r in rows], "paper GPU": [r["paper_gpu"] for r in rows],
                 "paper ARM": [r["paper_arm"] for r in rows]}, title=f"{g}: relative speed"),
                f"{g}: relative speed (first configuration = 1; missing paper figures drawn as 0)"))
        sections.append(Section(g, blocks))
    return sections + _failures(result)


def sections_for(result, *, plots: bool = True) -> list[Section]:
    kind = result.run.kind
    if kind == "zoo":
        return zoo_sections(result, plots=plots)
    if kind == "seed":
        return seed_sections(result, plots=plots)
    if kind == "shufflenet-v2":
        return shufflenet_sections(result, plots=plots)
    if hasattr(result, "measurements"):  # a single command's run saved with --db
        from flopgap.report.generic import sections_from_result

        out = [Section(f"run {result.run.id}", [_run_para(result.run)])]
        for m in result.measurements:
            out += sections_from_result(f"{m.kind}: {m.model}", m.payload if isinstance(m.payload, dict) else {})
        return out
    raise ValueError(f"no report for {kind!r} runs")


# ----------------------------------------------------------------------------- runs / compare
def runs_table(runs: Sequence) -> Table:
    return Table(["run", "kind", "name", "status", "started (UTC)", "measurements", "machine", "cpu"],
                 [[r.id, r.kind, r.name, r.status, r.started[:19].replace("T", " "), r.measurements,
                   r.machine_fingerprint[:8], (r.machine or {}).get("cpu_model", "")] for r in runs],
                 "runs, newest first", "runs")


def _timed(payload: dict):
    """(median, ci_low, ci_high) of whatever a stored measurement timed, if anything."""
    if not isinstance(payload, dict):
        return None
    if all(isinstance(payload.get(k), (int, float)) for k in ("median", "ci_low", "ci_high")):
        return payload["median"], payload["ci_low"], payload["ci_high"]
    for key in ("time", "a"):
        sub = payload.get(key)
        if isinstance(sub, dict) and all(isinstance(sub.get(k), (int, float)) for k in ("median", "ci_low", "ci_high")):
            return sub["median"], sub["ci_low"], sub["ci_high"]
    comp = payload.get("comparison")
    if isinstance(comp, dict):
        return _timed(comp)
    return None


def compare_runs(store, run_a, run_b, *, threshold: float = 0.05) -> dict:
    """Latency ratio B/A for every (model, key) timed in both runs, with a CI and a flag.

    The ratio's CI combines the two medians' CIs in log space as if independent (the runs
    were not interleaved): ``se = sqrt(se_a^2 + se_b^2)`` with ``se = (log hi - log lo) / 3.92``.
    regression: the CI lies wholly above ``1 + threshold``; improvement: wholly below
    ``1 / (1 + threshold)``; else no change detected.
    """
    ra, rb = store.run(run_a), store.run(run_b)
    def timed(run):
        out = {}
        for m in store.measurements(run.id):
            t = _timed(m.payload)
            if t and all(v and v > 0 for v in t):
                out[(m.model, m.kind, m.key)] = t
        return out

    ta, tb = timed(ra), timed(rb)
    rows = []
    for k in [k for k in ta if k in tb]:
        (ma, la, ha), (mb, lb, hb) = ta[k], tb[k]
        ratio, lo, hi = independent_ratio_ci(ta[k], tb[k])
        flag = ("regression" if lo > 1 + threshold else "improvement" if hi < 1 / (1 + threshold)
                else "no change detected")
        rows.append({"model": k[0], "kind": k[1], "key": k[2], "a": ma, "b": mb, "ratio": ratio, "ci_low": lo,
                     "ci_high": hi, "flag": flag})
    return {"a": ra, "b": rb, "rows": rows, "threshold": threshold,
            "same_machine": ra.machine_fingerprint == rb.machine_fingerprint,
            "regressions": sum(r["flag"] == "regression" for r in rows)}


def compare_sections(cmp: dict) -> list[Section]:
    a, b = cmp["a"], cmp["b"]
    notes = [Para(f"A = run {a.id} ({a.kind}, {a.started[:19]}), B = run {b.id} ({b.kind}, {b.started[:19]}); "
                  f"ratio = latency B / latency A; flag at +-{100 * cmp['threshold']:.0f}% beyond the 95% CI.", "note")]
    if not cmp["same_machine"]:
        notes.append(Para(f"The runs come from different machines ({a.machine_fingerprint[:8]} vs "
                          f"{b.machine_fingerprint[:8]}): ratios compare machines, not code.", "warn"))
    if not cmp["rows"]:
        notes.append(Para("No model was timed in both runs.", "warn"))
    t = Table(["model", "kind", "key", "A", "B", "B / A [95% CI]", "flag"],
              [[r["model"], r["kind"], r["key"], fmt_seconds(r["a"]), fmt_seconds(r["b"]),
                _ci(r["ratio"], r["ci_low"], r["ci_high"]), r["flag"]] for r in cmp["rows"]],
              f"latency of run {b.id} vs run {a.id}", "compare")
    return [Section(f"Run {b.id} vs run {a.id}", notes + [t])]


# ----------------------------------------------------------------------------- terminal
def print_sections(sections: Sequence[Section], console: Console, *, wide: int = 70) -> None:
    """Print the tables and paragraphs (plots are for the HTML report).

    Columns holding long prose (any cell over ``wide`` characters, such as explain's
    findings) are printed under the table, one line per row, so the table stays readable.
    """
    for s in sections:
        console.print(Text(s.title, style="bold underline"))
        for b in s.blocks:
            if isinstance(b, Para):
                style = {"note": "dim", "warn": "yellow"}.get(b.kind, "")
                console.print(Text(b.text, style=style))
            elif isinstance(b, Table):
                rows = [["" if v is None else str(v) for v in row] for row in b.rows]
                cols = list(range(len(b.columns)))
                prose = [i for i in cols[1:] if any(len(r[i]) > wide for r in rows)]
                t = RichTable(title=Text(b.caption), title_justify="left")
                if prose:
                    t.add_column("#", justify="right")
                for i in cols:
                    if i not in prose:
                        t.add_column(Text(str(b.columns[i])), overflow="fold")
                for n, r in enumerate(rows, 1):
                    cells = [Text(r[i]) for i in cols if i not in prose]
                    t.add_row(*([Text(str(n))] + cells if prose else cells))
                console.print(t)
                first: dict[tuple, int] = {}  # the same prose (one model in several pairs) is printed once
                for n, r in enumerate(rows, 1):
                    lines = [f"{b.columns[i]}: {r[i]}" for i in prose if r[i]]
                    if not lines:
                        continue
                    key = (r[0], *lines)
                    if key in first:
                        console.print(Text(f"  {n}. {r[0]}: as {first[key]}.", style="dim"))
                        continue
                    first[key] = n
                    console.print(Text(f"  {n}. {r[0]}", style="bold"))
                    for line in lines:
                        console.print(Text(f"     {line}"))
        console.print()
