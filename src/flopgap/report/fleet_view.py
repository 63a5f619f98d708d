"""Report sections for one zoo (or the seed's claims) on several machines
(:class:`flopgap.study.MachineComparison`, :class:`flopgap.study.FleetResult`), shown in
the terminal by :func:`flopgap.report.study_view.print_sections` and written as HTML."""

from __future__ import annotations

import math

from flopgap.report._format import fmt_seconds, si
from flopgap.report.html import Plot, Para, Section, Table

__all__ = ["machines_sections", "fleet_sections"]

_METRICS = {"params": "params", "flops": "FLOPs", "bytes": "bytes", "ops": "kernel ops", "prediction": "prediction"}


def _r(d: dict | None) -> str:
    if not d or d.get("r") is None or not math.isfinite(d["r"]):
        return "-"
    lo, hi = d.get("ci_low"), d.get("ci_high")
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and math.isfinite(lo) else ""
    return f"{d['r']:.2f}{ci}"


def _lat(cell: dict | None) -> str:
    if not cell or cell.get("value") is None:
        return "-"
    if not cell.get("measured"):
        return f"pred. {fmt_seconds(cell['value'])}"
    lo, hi = cell.get("ci_low"), cell.get("ci_high")
    text = (f"{fmt_seconds(cell['value'])} [no CI: too few samples]" if lo is None or hi is None
            else f"{fmt_seconds(cell['value'])} [{fmt_seconds(lo)}, {fmt_seconds(hi)}]")
    return f"disturbed, left out: {text}" if cell.get("disturbed") else text


def _x(v) -> str:
    return "-" if v is None else f"{v:.3g}x"


def _machines_table(cmp) -> Table:
    rows = []
    for m in cmp.machines:
        md = m.metadata or {}
        rows.append([m.name, m.run_id, m.target or "-", ", ".join(fp[:8] for fp in m.fingerprints) or "-",
                     md.get("gpu") or md.get("cpu_model") or "-", md.get("logical_cores", "-"),
                     md.get("torch_threads", "-"), md.get("torch", "-"), len(m.rows) or len(m.claims)])
    return Table(["machine", "run", "kind (--machines)", "fingerprints", "CPU / GPU", "cores", "threads", "torch",
                  "results"], rows, "machines compared", "machines")


def machines_sections(cmp, *, plots: bool = True) -> list[Section]:
    """Sections of a machines comparison: machines, per batch latency table, best count,
    rank changes, swaps and one-machine inversions; seed verdicts per machine; exclusions."""
    names = [m.name for m in cmp.machines]
    head = [Para("Latency: median with its 95% CI on each machine ('pred.': explain's prediction where nothing "
                 "was timed). A swap: two models whose order flips between two machines with both CIs disjoint "
                 "on both. An inversion: fewer FLOPs yet a latency CI wholly above the other model's.", "note"),
            _machines_table(cmp)]
    head += [Para(n, "warn") for n in cmp.notes]
    sections = [Section("Machines", head)]
    for batch, b in cmp.batches.items():
        blocks: list = []
        blocks.append(Table(["model", "FLOPs", *names],
                            [[r["model"], "-" if r["flops"] is None else si(r["flops"]),
                              *[_lat(r["latency"].get(n)) for n in names]] for r in b["table"]],
                            f"latency per machine, batch {batch}", f"latency_b{batch}"))
        pm = b["machines"]
        rows = []
        for key, label in _METRICS.items():
            rows.append([label, *[_r((pm[n]["correlations"].get(key) or {}).get("spearman")) for n in names]])
        best = []
        for n in names:
            bm = pm[n]["best"]
            if bm.get("metric"):
                tied = f" (tied with {', '.join(_METRICS[t] for t in bm['tied_with'])})" if bm["tied_with"] else ""
                best.append(f"{_METRICS[bm['metric']]}{tied}")
            else:
                best.append("-")
        rows.append(["ranks latency best", *best])
        inv = []
        for n in names:
            i = pm[n]["inversions"]
            timed = pm[n]["latency"] == "measured" and i.get("pairs_compared")
            inv.append(f"{i['count']} of {i['pairs_compared']} pairs" if timed else "-")
        rows.append(["FLOPs inversions (significant)", *inv])
        blocks.append(Table(["count", *[f"{n}: Spearman rho [95% CI] vs {pm[n]['latency']} latency" for n in names]],
                            rows, f"which count ranks latency best on each machine, batch {batch}",
                            f"best_count_b{batch}"))
        for p in b["pairs"]:
            a, c = p["a"], p["b"]
            rc = p["rank_correlation"]
            blocks.append(Para(
                f"{a} vs {c}: {p['common']} models on both; rank correlation of their latencies "
                f"{_r(rc)}; {p['moved']} change rank; {p['swap_count']} swap(s); "
                f"{p['inversions_only_a_count']} FLOPs inversion(s) only on {a}, "
                f"{p['inversions_only_b_count']} only on {c} (of {p['timed_on_both']} models timed on both)."))
            if p["moves"]:
                blocks.append(Table(["model", f"rank on {a}", f"rank on {c}", "moved", f"latency on {a}",
                                     f"latency on {c}"],
                                    [[m["model"], m["rank_a"], m["rank_b"], f"{m['shift']:+d}",
                                      fmt_seconds(m["latency_a"]), fmt_seconds(m["latency_b"])] for m in p["moves"]],
                                    f"largest rank changes, {a} -> {c}, batch {batch} (1 = fastest)",
                                    f"rank_changes_b{batch}"))
            if p["swaps"]:
                blocks.append(Table(["faster on " + a, "faster on " + c, f"its speed-up on {a}",
                                     f"the other's speed-up on {c}"],
                                    [[s["faster_on_a"], s["faster_on_b"], _x(s["ratio_a"]), _x(s["ratio_b"])]
                                     for s in p["swaps"]], f"swaps between {a} and {c}, batch {batch}",
                                    f"swaps_b{batch}"))
            for side, other, key in ((a, c, "inversions_only_a"), (c, a, "inversions_only_b")):
                if p[key]:
                    blocks.append(Table(["fewer FLOPs (slower)", "more FLOPs (faster)", "FLOPs ratio", "slowdown"],
                                        [[i["fewer"], i["more"], _x(i["count_ratio"]), _x(i["slowdown"])]
                                         for i in p[key]],
                                        f"inversions on {side}, not on {other}, batch {batch}", f"{key}_b{batch}"))
            if plots and p["common"] >= 2:
                from flopgap.report import plots as P

                la = [r["latency"][a]["value"] for r in b["table"] if a in r["latency"] and c in r["latency"]]
                lc = [r["latency"][c]["value"] for r in b["table"] if a in r["latency"] and c in r["latency"]]
                labels = [r["model"] for r in b["table"] if a in r["latency"] and c in r["latency"]]
                blocks.append(Plot(P.loglog_scatter(la, lc, labels, xlabel=f"latency on {a} (s)",
                                                      ylabel=f"latency on {c}",
                                                      title=f"{a} vs {c}, batch {batch}"),
                                     f"each model's latency on {a} (x) and {c} (y), log-log"))
        sections.append(Section(f"Batch {batch} across machines", blocks))
    if cmp.claims:
        rows = []
        for c in cmp.claims:
            cells = []
            for n in names:
                v = c["verdicts"].get(n)
                if v is None:
                    cells.append("-")
                    continue
                ratio = "-" if v["ratio"] is None else (
                    f"{v['ratio']:.3g}" + ("" if v["ci_low"] is None else f" [{v['ci_low']:.3g}, {v['ci_high']:.3g}]"))
                cells.append(f"{v['verdict']}: {ratio}" + (f" (disturbed: {v['disturbed']})" if v.get("disturbed") else ""))
            rows.append([c.get("example") or c["id"], c.get("claim") or "", *cells,
                         "differs" if c["differs"] else "same"])
        sections.append(Section("The seed's claims per machine", [
            Para("Each claim's measured ratio [95% CI] and verdict on each machine; an effect counts beyond 5%.",
                 "note"),
            Table(["example", "claim", *names, "across machines"], rows, "verdicts per machine", "claims_per_machine")]))
    if cmp.excluded:
        sections.append(Section("Left out: disturbed measurements", [
            Para(f"{len(cmp.excluded)} measurement(s) ran on a disturbed machine; no correlation, inversion, swap "
                 "or verdict uses them. Re-time them on a quiet machine (a new run of the same study).", "warn"),
            Table(["machine", "model", "batch", "why"],
                  [[e["machine"], e["model"], e["batch"], e["reason"]] for e in cmp.excluded],
                  "disturbed measurements", "disturbed")]))
    return sections


def fleet_sections(result, *, plots: bool = True) -> list[Section]:
    """A multi-machine study run: the comparison first, then (in the HTML report, where
    ``plots`` is on) each machine's own report; the terminal gets the comparison and the
    failures only."""
    from flopgap.report.study_view import sections_for

    out = [Section(f"Run {result.run.id}: one {result.run.kind} study on {len(result.results)} kinds of machine", [
        Para(f"run {result.run.id} ({result.run.kind}, {result.run.status}), started {result.run.started}; "
             f"kinds of machine: {', '.join(result.results)}", "note")])]
    out += machines_sections(result.comparison, plots=plots)
    if plots:
        for target, r in result.results.items():
            for s in sections_for(r, plots=plots):
                out.append(Section(f"{target}: {s.title}", s.blocks))
    elif result.failures:
        out.append(Section("Failures", [
            Para(f"{len(result.failures)} item(s) failed and are left out of every table above; "
                 "flopgap study ... --resume retries them.", "warn"),
            Table(["item", "error"], sorted(result.failures.items()), "failed items", "failures")]))
    return out
