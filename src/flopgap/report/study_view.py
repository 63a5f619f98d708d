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

from flopgap._terminal import printable
from flopgap.report._format import fmt_bytes, fmt_latency, fmt_seconds, si
from flopgap.report.fit import left_out_note, natural_width
from flopgap.report.html import Plot, Para, Section, Table

__all__ = ["sections_for", "zoo_sections", "seed_sections", "shufflenet_sections", "compare_sections", "runs_table",
           "print_sections", "title_for"]

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


def _lat(m, lo, hi, n=None, threads=None, *, disturbed: bool = False, precision_met=None) -> str:
    if m is None:
        return "-"
    return fmt_latency(m, lo, hi, n, threads, disturbed=disturbed, precision_met=precision_met)


def _caveats(disturbed: Sequence[str], imprecise: Sequence[str] = ()) -> list[Para]:
    """Said first: what was measured on a busy machine, or missed its precision."""
    out = []
    if disturbed:
        out.append(Para(f"Machine disturbed: {len(disturbed)} item(s) were timed while the machine was busy, even "
                        f"after re-timing ({', '.join(disturbed)}). They are shown, marked DISTURBED, and left out "
                        "of every verdict and correlation. Re-run on a quiet machine (--resume keeps the rest).",
                        "warn"))
    if imprecise:
        out.append(Para(f"Precision not reached: {len(imprecise)} item(s) ended with a CI wider than --precision "
                        f"({', '.join(imprecise)}); give them more --max-time.", "warn"))
    return out


def _short(label: str) -> str:
    return label.split(":", 1)[1] if label.startswith(("torchvision:", "seed:", "zoo:")) else label


def title_for(result) -> str:
    run = result.run
    names = {"zoo": "Zoo correlation study", "seed": "Seed article case study",
             "shufflenet-v2": "ShuffleNet V2 guidelines case study", "generation": "LLM generation study"}
    where = f" on {len(result.results)} kinds of machine" if hasattr(result, "comparison") else ""
    return f"flopgap: {names.get(run.kind, run.kind)}{where} (run {run.id})"


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
    caveats = _caveats([r["label"] for r in result.rows if r.get("disturbed")],
                       [r["label"] for r in result.rows if r.get("precision_met") is False and not r.get("disturbed")])
    sections = [Section("Run", caveats + [_run_para(result.run), Para(
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
        if a.get("excluded"):
            blocks.insert(0, Para(f"Left out of the correlations, inversions and fit: "
                                  + "; ".join(f"{e['label']} ({e['reason']})" for e in a["excluded"]), "warn"))
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
                f"top inversions by FLOPs ratio x slowdown, batch {batch}", f"inversions_b{batch}", optional=(6,)))
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
            ["model", "params", "FLOPs", "bytes", "kernel ops", "predicted", "measured [95% CI] n, threads",
             "measured / predicted", "measured / FLOPs fit", "explain: top finding"],
            [[r["label"], si(r["params"]), si(r["flops"]), fmt_bytes(r["bytes"]) if r["bytes"] is not None else "-",
              r["ops"] if r["ops"] is not None else "-", fmt_seconds(r["prediction"]),
              _lat(r["median"], r["ci_low"], r["ci_high"], r.get("n_samples"), r.get("threads"),
                   disturbed=r.get("disturbed", False), precision_met=r.get("precision_met")),
              f"{r['median'] / r['prediction']:.2f}x" if r["prediction"] and r["median"] else "-",
              f"{resid[r['label']]['ratio']:.2f}x" if r["label"] in resid else "-", r["finding"]]
             for r in sorted(rows, key=lambda r: r["median"] or 0)],
            f"models, batch {batch}, by latency", f"models_b{batch}", optional=(8, 3, 1)))
        if plots and len(rows) >= 2:
            from flopgap.report import plots as P

            labels = [r["label"] for r in rows]
            lat = [r["median"] for r in rows]
            errs = [(r["ci_low"], r["ci_high"]) for r in rows]
            fitab = (fit["a"], fit["b"]) if fit["residuals"] else None
            blocks.append(Plot(P.loglog_scatter([r["flops"] for r in rows], lat, labels, xlabel="FLOPs",
                                                  title=f"latency vs FLOPs, batch {batch}", fit=fitab, errors=errs),
                                 f"latency vs FLOPs (log-log), batch {batch}"))
            blocks.append(Plot(P.loglog_scatter([r["params"] for r in rows], lat, labels, xlabel="params",
                                                  title=f"latency vs params, batch {batch}", errors=errs),
                                 f"latency vs params (log-log), batch {batch}"))
            if any(r["prediction"] for r in rows):
                blocks.append(Plot(P.predicted_vs_measured([r["prediction"] for r in rows], lat, labels,
                                                             title=f"explain's prediction vs measured, batch {batch}"),
                                     f"predicted vs measured latency, batch {batch}"))
            if fit["residuals"]:
                blocks.append(Plot(P.residuals_plot([x["flops"] for x in fit["residuals"]],
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
        ["example", "claim", "metric", "measured [95% CI]", "n, threads", "verdict", "explain's reason", "notes"],
        [[c["example"], c["claim"], c["metric"], _ci(c["ratio"], c["ci_low"], c["ci_high"]),
          f"n={c.get('n', '?')}, {c.get('threads', '?')} threads" if c.get("ratio") is not None else "-",
          str(c["verdict"]), c.get("reason", ""), c.get("notes", "")] for c in result.claims],
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
                     _lat(med, m["ci_low"], m["ci_high"], m.get("n_samples"), (m.get("spec") or {}).get("threads"),
                          disturbed=bool(m.get("disturbed")), precision_met=m.get("precision_met")) if m else "-",
                     fmt_seconds(p.get("one_shot_s")),
                     f"{p['one_shot_s'] / med:.1f}x" if med and p.get("one_shot_s") else "-",
                     "yes" if p.get("quantized") else "no", _first_text(p.get("findings"))])
    models = Table(["model", "params", "FLOPs", "bytes", "kernel ops", "median latency [95% CI] n, threads",
                    "article's method (1 cold call)", "cold / median", "int8", "explain: top finding"],
                   rows, "the seed's models, batch 1", "models")
    verdict_rule = Para(
        "Verdicts: the latency ratio A/B of each pair is timed alternately (warmed-up medians, paired bootstrap "
        "95% CI). An effect counts beyond 5%: holds = the CI lies wholly beyond +5% (or -5%) on the claimed side; "
        "does not hold = it lies wholly on the other side of 1, or wholly within +-5% of 1 (no effect worth the "
        "name); otherwise inconclusive at this noise. A pair timed on a disturbed machine (after re-timing) is "
        "inconclusive: machine disturbed; one whose CIs missed --precision is inconclusive: precision not reached. "
        "torch.ao.quantization (Ex.3) is deprecated in favour of torchao; the study uses it because the article does.",
        "note")
    caveats = _caveats([c["id"] for c in result.claims if c.get("verdict") == "inconclusive: machine disturbed"],
                       [c["id"] for c in result.claims if c.get("verdict") == "inconclusive: precision not reached"])
    return [Section("Run", [_run_para(result.run)]), Section("Claims and verdicts", caveats + [claims, verdict_rule]),
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
    caveats = _caveats([f"{r['guideline']} {r['config']}" for r in result.rows if r.get("disturbed")],
                       [f"{r['guideline']} {r['config']}" for r in result.rows
                        if r.get("verdict") == "inconclusive: precision not reached"])
    sections = [Section("Run", caveats + [_run_para(result.run), intro])]
    gv = Table(["guideline", "statement", "expected here", "configs holding", "verdict", "direction agrees with paper (ARM)"],
               [[g["guideline"], g["text"], g["expect"], f"{g['holds']} of {g['measured']}", g["verdict"],
                 g["direction_agrees_with_paper_arm"]] for g in result.guidelines],
               "verdict per guideline", "guidelines")
    sections.append(Section("Verdicts", [gv]))
    for g in ("G1", "G2", "G3", "G4"):
        rows = [r for r in result.rows if r["guideline"] == g]
        if all(r["verdict"] == "not measured" for r in rows if r["verdict"] != "(reference)"):
            continue
        t = Table(["configuration", "FLOPs", "FLOPs / first", "latency (n, threads)", "relative speed [95% CI]",
                   "paper GPU", "paper ARM", "verdict"],
                  [[r["config"], si(r["flops"]), _num(r["flops_vs_first"], 4),
                    f"{fmt_seconds(r['latency'])} (n={r.get('n')}, {r.get('threads')} threads)"
                    if r.get("n") is not None else fmt_seconds(r["latency"]),
                    _ci(r["speed"], r["speed_low"], r["speed_high"]) if r["verdict"] != "(reference)" else "1",
                    _num(r["paper_gpu"]), _num(r["paper_arm"]), str(r["verdict"])] for r in rows],
                  f"{g}: relative speeds, this machine vs the paper", f"shufflenet_{g}")
        blocks: list = [t]
        if plots:
            from flopgap.report import plots as P

            blocks.append(Plot(P.relative_speed_bars(
                [r["config"] for r in rows],
                {"this machine": [r["speed"] for r in rows], "paper GPU": [r["paper_gpu"] for r in rows],
                 "paper ARM": [r["paper_arm"] for r in rows]}, title=f"{g}: relative speed"),
                f"{g}: relative speed (first configuration = 1; missing paper figures drawn as 0)"))
        sections.append(Section(g, blocks))
    return sections + _failures(result)


def sections_for(result, *, plots: bool = True) -> list[Section]:
    if hasattr(result, "comparison"):  # one study on several kinds of machine
        from flopgap.report.fleet_view import fleet_sections

        return fleet_sections(result, plots=plots)
    kind = result.run.kind
    if kind == "zoo":
        return zoo_sections(result, plots=plots)
    if kind == "seed":
        return seed_sections(result, plots=plots)
    if kind == "shufflenet-v2":
        return shufflenet_sections(result, plots=plots)
    if kind == "generation":
        from flopgap.report.generation_view import generation_sections

        return generation_sections(result, plots=plots)
    if hasattr(result, "measurements"):  # a single command's run saved with --db: the page its --html wrote
        from flopgap.report.command_view import command_sections

        out = [Section(f"run {result.run.id}", [_run_para(result.run)])]
        for m in result.measurements:
            out += command_sections(m.kind, m.payload, plots=plots)
        return out
    raise ValueError(f"no report for {kind!r} runs")


# ----------------------------------------------------------------------------- runs / compare
def runs_table(runs: Sequence) -> Table:
    """One row per run: its name (a study's, or the model of a single command's run),
    the models it holds and its stored records (a model may have several)."""
    return Table(["run", "kind", "name / model", "status", "started (UTC)", "models", "records", "machine", "cpu"],
                 [[r.id, r.kind, r.name or (r.config or {}).get("model") or "", r.status,
                   r.started[:19].replace("T", " "), r.models, r.measurements, r.machine_fingerprint[:8],
                   (r.machine or {}).get("cpu_model", "")] for r in runs],
                 "runs, newest first", "runs")


def compare_sections(cmp) -> list[Section]:
    """A :class:`flopgap.study.compare.Comparison` as a grid in the layout of
    ``torch.utils.benchmark.Compare``: one row per model, the two sides' medians with
    their CI, n and threads, then B / A with its CI and the flag."""
    a, b = cmp.a, cmp.b
    notes = [Para(w, "warn") for w in cmp.warnings]
    notes.append(Para(f"A = {a.label} ({a.kind}), B = {b.label} ({b.kind}); ratio = latency B / latency A, 95% CI; "
                      f"flagged beyond +-{100 * cmp.threshold:g}% (the whole CI past the threshold).", "note"))
    if cmp.only_a or cmp.only_b:
        notes.append(Para("timed on one side only: " + "; ".join(
            part for part in (f"A: {', '.join(cmp.only_a)}" if cmp.only_a else "",
                              f"B: {', '.join(cmp.only_b)}" if cmp.only_b else "") if part), "note"))

    def side(t):
        text = fmt_latency(t.median, t.ci_low, t.ci_high, t.n, t.threads, disturbed=t.disturbed)
        # a side from a few processes has their range as its interval, at a lower confidence
        return text if t.ci_level >= 0.95 else f"{text} ({100 * t.ci_level:.0f}% CI)"

    t = Table(["model", "batch", "A", "B", "B / A [95% CI]", "flag"],
              [[r.a.model, r.a.batch if r.a.batch is not None else "-", side(r.a), side(r.b),
                _ci(r.ratio, r.ci_low if math.isfinite(r.ci_low) else None,
                    r.ci_high if math.isfinite(r.ci_high) else None), r.flag] for r in cmp.rows],
              f"latency of {b.label} vs {a.label}", "compare")
    return [Section(f"{b.label} vs {a.label}", notes + [t])]


# ----------------------------------------------------------------------------- terminal
def _rich_table(b: Table, rows: list[list[str]], shown: list[int], numbered: bool) -> RichTable:
    t = RichTable(title=_text(b.caption), title_justify="left")
    if numbered:
        t.add_column("#", justify="right")
    for i in shown:
        t.add_column(_text(str(b.columns[i])), overflow="fold")
    for n, r in enumerate(rows, 1):
        cells = [_text(r[i]) for i in shown]
        t.add_row(*([_text(str(n))] + cells if numbered else cells))
    return t


def print_sections(sections: Sequence[Section], console: Console, *, wide: int = 70) -> None:
    """Print the tables and paragraphs (plots are for the HTML report).

    Columns holding long prose (any cell over ``wide`` characters, such as explain's
    findings) are printed under the table, one line per row, so the table stays readable.
    """
    for s in sections:
        console.print(_text(s.title, style="bold underline"))
        for b in s.blocks:
            if isinstance(b, Para):
                style = {"note": "dim", "warn": "yellow"}.get(b.kind, "")
                console.print(_text(b.text, style=style))
            elif isinstance(b, Table):
                rows = [["" if v is None else printable(v) for v in row] for row in b.rows]
                cols = list(range(len(b.columns)))
                prose = [i for i in cols[1:] if any(len(r[i]) > wide for r in rows)]
                # columns with nothing in them (a finding when explain was skipped) are not printed
                shown = [i for i in cols if i not in prose and (i == 0 or any(r[i] for r in rows))]
                t = _rich_table(b, rows, shown, bool(prose))
                left_out = []
                for i in b.optional:  # a narrow terminal: leave out the optional columns, first listed first
                    if natural_width(console, t) <= console.width:
                        break
                    if i in shown:
                        shown.remove(i)
                        left_out.append(str(b.columns[i]))
                        t = _rich_table(b, rows, shown, bool(prose))
                console.print(t)
                if left_out:
                    console.print(_text(left_out_note(left_out), style="dim"))
                first: dict[tuple, int] = {}  # the same prose (one model in several pairs) is printed once
                for n, r in enumerate(rows, 1):
                    lines = [f"{b.columns[i]}: {r[i]}" for i in prose if r[i]]
                    if not lines:
                        continue
                    key = (r[0], *lines)
                    if key in first:
                        console.print(_text(f"  {n}. {r[0]}: as {first[key]}.", style="dim"))
                        continue
                    first[key] = n
                    console.print(_text(f"  {n}. {r[0]}", style="bold"))
                    for line in lines:
                        console.print(_text(f"     {line}"))
        console.print()


def _text(text: object, style: str = "") -> Text:
    """Rich text, never parsed as markup, with control characters shown as escapes."""
    return Text(printable(text), style=style)
