"""HTML report sections of one command's result (``--html`` on ``count``, ``time``,
``explain``, ``predict``, ``variants``, and ``flopgap report RUN`` of a run they saved).

Built from the result's versioned JSON (``to_dict()``), so a page written at the end of
a command and one rebuilt later from the results store are the same page, plots
included. Layout, as in the study reports: what matters first, with units; warnings
before figures; top-N tables with the rest collapsed (``<details>``); every table's
CSV copy holds every row at full precision; plots drawn from the numbers on the page.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from flopgap.report._format import fmt_bytes, fmt_latency, fmt_seconds, pct, si
from flopgap.report.html import Details, Plot, Para, Section, Table

__all__ = ["command_sections", "COMMAND_KINDS", "MAIN_TABLE"]

_TOP = 15  # rows of a top-N table shown open; the rest is collapsed


def _warnings(d: dict) -> list[Para]:
    return [Para(f"warning: {w}", "warn") for w in d.get("warnings") or []]


def _kv(rows: list[tuple[str, object]], caption: str, name: str) -> Table:
    return Table(["quantity", "value"], [[k, v] for k, v in rows if v is not None], caption, name, row_headers=True)


def _split(table_rows: list, columns: list[str], caption: str, name: str, *, what: str, csv_columns=None,
           csv_rows=None, rest_columns: int | None = None) -> list:
    """A top-N table, the rest of its rows collapsed under a summary line (its first
    ``rest_columns`` columns only: the CSV copy of the top table holds every row whole)."""
    head = Table(columns, table_rows[:_TOP], caption, name, csv_columns=csv_columns, csv_rows=csv_rows)
    if len(table_rows) <= _TOP:
        return [head]
    k = rest_columns or len(columns)
    rest = Table(columns[:k], [r[:k] for r in table_rows[_TOP:]], f"{caption}: the other {len(table_rows) - _TOP}",
                 f"{name}_rest", csv_link=False)
    return [head, Details(f"{len(table_rows) - _TOP} more {what}", [rest])]


# ----------------------------------------------------------------------------- count
def _shapes_cell(shapes) -> str:
    """Shapes as the terminal shows them: ``1x4 4x4 4`` (a scalar or a non-tensor: ``-``)."""
    out = []
    for shp in shapes or ():
        out.append("x".join(str(n) for n in shp) if isinstance(shp, (list, tuple)) and shp else "-")
    return " ".join(out)


def _count(d: dict, plots: bool) -> list[Section]:
    t = d.get("totals", {})
    summary = _kv([
        ("parameters", si(t.get("params"))), ("FLOPs (FMA = 2)", si(t.get("flops"), "FLOP")),
        ("MACs", si(t.get("macs"), "MAC")), ("bytes read", fmt_bytes(t.get("bytes_read"))),
        ("bytes written", fmt_bytes(t.get("bytes_written"))),
        ("arithmetic intensity", f"{t.get('intensity', 0):.2f} FLOP/B"), ("kernel ops", t.get("ops")),
        ("dispatched ops (views included)", t.get("ops_all")), ("formula coverage", pct(t.get("coverage"))),
        ("mode", d.get("mode")),
    ], f"{d.get('model')}: inputs {', '.join(d.get('inputs', []))}", "count_summary")
    raw = [(k, t.get(k)) for k in ("params", "flops", "macs", "bytes_read", "bytes_written", "intensity", "ops",
                                   "ops_all", "coverage")] + [("mode", d.get("mode"))]
    summary = replace(summary, csv_columns=["quantity", "value"], csv_rows=[[k, v] for k, v in raw if v is not None])
    blocks: list = [summary]
    for phase, pt in (d.get("phases") or {}).items():
        blocks.append(_kv([("FLOPs", si(pt["flops"], "FLOP")), ("MACs", si(pt["macs"], "MAC")),
                           ("bytes", fmt_bytes(pt["bytes_read"] + pt["bytes_written"])), ("kernel ops", pt["ops"])],
                          f"{phase} pass", f"phase_{phase}"))
    sections = [Section(f"count: {d.get('model')}", blocks)]
    mods = [m for m in d.get("modules", []) if m.get("ops_all") or m.get("params")]
    cols = ["module", "type", "params", "FLOPs", "MACs", "bytes read", "bytes written", "FLOP/B", "kernel ops"]
    rows = [["  " * m["depth"] + (m["name"] or "(model)"), m["type"], si(m["params"]), si(m["flops"]), si(m["macs"]),
             fmt_bytes(m["bytes_read"]), fmt_bytes(m["bytes_written"]), f"{m.get('intensity', 0):.2f}", m["ops"]]
            for m in mods]
    shallow = [r for r, m in zip(rows, mods) if m["depth"] <= 1]
    deep = [r for r, m in zip(rows, mods) if m["depth"] == 2]
    mod_blocks: list = [Table(cols, shallow, "per module (totals include children), depth 1", "modules",
                              csv_columns=["module", "type", "params", "flops", "macs", "bytes_read", "bytes_written",
                                           "ops"],
                              csv_rows=[[m["name"], m["type"], m["params"], m["flops"], m["macs"], m["bytes_read"],
                                         m["bytes_written"], m["ops"]] for m in mods])]
    if deep:
        mod_blocks.append(Details(f"{len(deep)} modules at depth 2 (every module is in the CSV)",
                                  [Table(cols, deep, "modules at depth 2", "modules_depth2", csv_link=False)]))
    ops = sorted([o for o in d.get("ops", []) if o.get("kind") not in ("view", "noop", "metadata", "alloc")],
                 key=lambda o: -o["flops"])
    total = t.get("flops") or 1
    op_rows = [[o["index"], o.get("phase", "forward"), o["op"].removeprefix("aten."), o["module"] or "(model)",
                si(o["flops"], "FLOP"), fmt_bytes(o["bytes_read"] + o["bytes_written"]), pct(o["flops"] / total)]
               for o in ops]
    op_blocks = _split(op_rows, ["#", "phase", "op", "module", "FLOPs", "bytes", "FLOP share"], "ops by FLOPs",
                       "ops", what="ops (fewer FLOPs)",
                       csv_columns=["index", "phase", "op", "module", "family", "kind", "input_shapes",
                                    "input_dtypes", "output_shapes", "flops", "macs", "bytes_read", "bytes_written"],
                       csv_rows=[[o["index"], o.get("phase", "forward"), o["op"], o["module"], o.get("family"),
                                  o["kind"], _shapes_cell(o.get("input_shapes")),
                                  " ".join(str(x) for x in o.get("input_dtypes") or ()),
                                  _shapes_cell(o.get("output_shapes")), o["flops"], o["macs"], o["bytes_read"],
                                  o["bytes_written"]] for o in d.get("ops", [])],
                       rest_columns=5)
    sections += [Section("Modules", mod_blocks), Section("Ops", op_blocks)]
    unc = d.get("uncovered") or []
    if unc:
        sections.append(Section("Ops without a formula (FLOPs unknown, not zero)", [Table(
            ["op", "calls", "share of kernel ops"], [[u["op"], u["calls"], pct(u["share"])] for u in unc],
            "uncovered ops", "uncovered")]))
    sections.append(Section("Conventions", [Para(f"{k}: {v}", "note") for k, v in d.get("conventions", {}).items()]))
    return sections


# ----------------------------------------------------------------------------- time
def _measurement_rows(m: dict) -> list[tuple[str, object]]:
    spec = m.get("spec") or {}
    return [
        ("median latency", fmt_latency(m.get("median"), m.get("ci_low"), m.get("ci_high"), m.get("n_samples"),
                                       spec.get("threads"), spec.get("device"), disturbed=bool(m.get("disturbed")),
                                       precision_met=m.get("precision_met"))),
        ("95% CI of the median", f"{fmt_seconds(m.get('ci_low'))} .. {fmt_seconds(m.get('ci_high'))}"),
        ("precision reached", f"+-{pct(m.get('half_width'), 2)} (target +-{pct(spec.get('precision'), 2)})"),
        ("mean", fmt_seconds(m.get("mean"))), ("p5 / p95", f"{fmt_seconds(m.get('p5'))} / {fmt_seconds(m.get('p95'))}"),
        ("min / max", f"{fmt_seconds(m.get('min'))} / {fmt_seconds(m.get('max'))}"),
        ("cold (first call)", fmt_seconds(m.get("cold_s"))),
        ("warm-up", f"{m.get('warmup_calls')} calls" + ("" if m.get("steady", True) else ", no steady state")),
        ("samples", f"{m.get('n_samples')} x {m.get('block_size')} call(s) = {m.get('calls')} calls"),
        ("outliers (Tukey 1.5 IQR, kept)", m.get("outliers")),
        ("threads", spec.get("threads")), ("device", spec.get("device")),
        ("device time (CUDA events)", fmt_seconds(m["device_median"]) if m.get("device_median") else None),
        ("peak device memory", fmt_bytes(m["peak_memory_bytes"]) if m.get("peak_memory_bytes") else None),
        ("minor page faults per call", f"{m['page_faults_per_call']:,.1f}" if m.get("page_faults_per_call")
         is not None else None),
        ("inputs", ", ".join(spec.get("inputs") or [])), ("wall time", fmt_seconds(m.get("wall_s"))),
    ]


def _time(d: dict, plots: bool) -> list[Section]:
    kind = d.get("kind", "measurement")
    if kind == "comparison":
        a, b = d["a"], d["b"]
        na, nb = a["spec"]["name"], b["spec"]["name"]
        ra, rb = _measurement_rows(a), _measurement_rows(b)
        table = Table(["quantity", na, nb], [[k, va, vb] for (k, va), (_, vb) in zip(ra, rb) if va is not None],
                      "timed alternately (ABBA rounds)", "comparison", row_headers=True)
        lo, hi = d.get("ci_low"), d.get("ci_high")
        ratio = (f"{na} / {nb} = {d['ratio']:.3f}, 95% CI {lo:.3f} .. {hi:.3f} (paired bootstrap over rounds)"
                 if d.get("ratio") is not None and lo is not None else "ratio unknown (too few rounds)")
        blocks = _warnings(a) + _warnings(b) + [Para(ratio), table]
        samples = {na: a.get("samples") or [], nb: b.get("samples") or []}
        medians = {na: a.get("median"), nb: b.get("median")}
        title = f"{na} vs {nb}"
        env = a.get("environment") or {}
    elif kind == "processes":
        def one(r: dict) -> str:
            if r.get("kind") == "comparison":
                return f"ratio {r['ratio']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") else "-"
            return fmt_latency(r.get("median"), r.get("ci_low"), r.get("ci_high"), r.get("n_samples"),
                               (r.get("spec") or {}).get("threads"), disturbed=bool(r.get("disturbed")))

        rows = [[i + 1, one(r)] for i, r in enumerate(d.get("results", []))]
        spread = d.get("spread")
        return [Section("time: fresh processes", _warnings(d) + [
            Para(f"{d.get('completed')} of {d.get('requested')} processes; spread max/min "
                 + (f"{spread:.3f}" if spread is not None else "n/a (needs 2 processes)")),
            Table(["process", "result"], rows, "one row per process", "processes", row_headers=True)])]
    else:
        name = d["spec"]["name"]
        blocks = _warnings(d) + [_kv(_measurement_rows(d), f"{name}: latency per call", "measurement")]
        samples, medians, title = {name: d.get("samples") or []}, {name: d.get("median")}, name
        env = d.get("environment") or {}
    if plots and any(samples.values()):
        from flopgap.report.plots import latency_histogram

        blocks.append(Plot(latency_histogram(samples, medians, title=title),
                             "steady-state samples (seconds per call of each block), median dashed"))
    blocks.append(Para(f"median of steady-state samples; 95% CI of the median by order statistics; cold = first "
                       f"call, reported apart; {env.get('cpu_model', '')}, torch {env.get('torch', '?')}", "note"))
    return [Section(f"time: {title}", blocks)]


# ----------------------------------------------------------------------------- explain
def _op_cells(o: dict, total_flops: int) -> list:
    return [o["index"], o["op"].removeprefix("aten.").removesuffix(".default"), o["module"] or "(model)",
            o.get("bound") or o.get("cls"), fmt_seconds(o.get("time_s")), si(o["flops"], "FLOP"), fmt_bytes(o["bytes"]),
            pct(o.get("share")), pct(o["flops"] / total_flops if total_flops else None),
            si(o["achieved_flops_s"], "FLOP/s") if o.get("achieved_flops_s") else "-", pct(o.get("efficiency")),
            fmt_seconds(o.get("roofline_s"))]


_OP_COLUMNS = ["#", "op", "module", "roofline class", "time", "FLOPs", "bytes", "share of call", "FLOP share",
               "achieved", "% of peak", "roofline time"]
_OP_CSV = ["index", "op", "module", "bound", "time_s", "flops", "bytes", "achieved_flops_s", "roofline_s",
           "predicted_s"]


def _explain(d: dict, plots: bool) -> list[Section]:
    t, mach = d.get("totals", {}), d.get("machine", {})
    measured = d.get("measurement") or {}
    head = _warnings(d) + [_kv([
        ("profiled call", f"{fmt_seconds(t.get('call_s'))} (median of {t.get('profiled_calls')} profiled calls)"),
        ("rigorous median", fmt_latency(measured.get("median"), measured.get("ci_low"), measured.get("ci_high"),
                                        measured.get("n_samples"), (measured.get("spec") or {}).get("threads"),
                                        disturbed=bool(measured.get("disturbed")))
         if measured.get("median") else None),
        ("time in ops / outside ops", f"{fmt_seconds(t.get('ops_s'))} / {fmt_seconds(t.get('outside_s'))}"),
        ("profiler overhead", pct(t.get("profiler_overhead"), 0) if t.get("profiler_overhead") is not None else None),
        ("predicted (never timed)", fmt_seconds(t.get("predicted_s"))),
        ("prediction error", pct(t.get("prediction_error")) if t.get("prediction_error") is not None else None),
        ("FLOPs / bytes", f"{si(t.get('flops'), 'FLOP')} / {fmt_bytes(t.get('bytes'))}"),
        ("kernel ops", t.get("ops")), ("FLOP efficiency", f"{pct(t.get('efficiency'))} of peak"),
        ("ceilings", f"peak fp32 {si((mach.get('peak_flops') or {}).get('fp32'), 'FLOP/s')}, memory "
                     f"{si(mach.get('mem_bandwidth'), 'B/s')}, cache {si(mach.get('cache_bandwidth'), 'B/s')}, "
                     f"dispatch {fmt_seconds(mach.get('dispatch_overhead_s'))}"),
        ("threads / device", f"{t.get('threads')} / {t.get('device')}"),
    ], f"{d.get('model')}: inputs {', '.join(d.get('inputs', []))}", "explain_summary")]
    classes = d.get("classes", {})
    cls_table = Table(["class", "ops", "time", "share of call", "FLOP share", "bytes"],
                      [[f"{c}-bound", r["ops"], fmt_seconds(r["time_s"]), pct(r["time_share"]), pct(r["flop_share"]),
                        fmt_bytes(r["bytes"])] for c, r in classes.items()]
                      + [["outside ops", "-", fmt_seconds(t.get("outside_s")), pct(t.get("outside_share")), "-", "-"]],
                      "roofline classes: time share against FLOP share", "classes", row_headers=True)
    sections = [Section(f"explain: {d.get('model')}", head + [cls_table])]
    findings = [Para(f"{f['title']}: {f['text']}") for f in d.get("findings", [])]
    if findings:
        sections.append(Section("Findings", findings))
    ops = [o for o in d.get("ops", []) if not o.get("free")]
    total = t.get("flops") or 0
    by_time = sorted([o for o in ops if o.get("time_s") is not None], key=lambda o: -o["time_s"])
    csv_rows = [[o.get(k) for k in _OP_CSV] for o in ops]
    op_blocks = _split([_op_cells(o, total) for o in by_time], _OP_COLUMNS, "ops by measured time", "ops_by_time",
                       what="ops (less time)", csv_columns=_OP_CSV, csv_rows=csv_rows, rest_columns=7)
    by_flops = sorted(ops, key=lambda o: -o["flops"])[:_TOP]
    op_blocks.append(Table(_OP_COLUMNS, [_op_cells(o, total) for o in by_flops], f"top {len(by_flops)} ops by FLOPs",
                           "ops_by_flops", csv_link=False))
    sections.append(Section("Ops", op_blocks))
    if plots and ops:
        from flopgap.report.plots import roofline_chart

        ref = t.get("measured_median_s") or t.get("call_s")
        png = roofline_chart(ops, peak=(mach.get("peak_flops") or {}).get("fp32") or 0.0,
                             mem_bandwidth=mach.get("mem_bandwidth") or 0.0,
                             cache_bandwidth=mach.get("cache_bandwidth") or 0.0,
                             total=(t.get("flops"), t.get("bytes"), ref), title=str(d.get("model")))
        sections.append(Section("Roofline", [Plot(png, "achieved FLOP/s against arithmetic intensity per op, "
                                                         "sized by time share; the star is the model")]))
    mods = [m for m in d.get("modules", []) if m.get("ops")]
    cols = ["module", "type", "time", "share of call", "FLOPs", "achieved"]
    rows = [["  " * m["depth"] + (m["name"] or "(model)"), m["type"], fmt_seconds(m["time_s"]), pct(m["share"]),
             si(m["flops"], "FLOP"), si(m["achieved_flops_s"], "FLOP/s") if m.get("achieved_flops_s") else "-"]
            for m in mods]
    shallow = [r for r, m in zip(rows, mods) if m["depth"] <= 1]
    second = [r for r, m in zip(rows, mods) if m["depth"] == 2]
    mod_csv = ["name", "type", "depth", "time_s", "flops", "bytes", "ops"]
    mod_blocks: list = [Table(cols, shallow, "per module (totals include children), depth 1", "modules",
                              csv_columns=mod_csv, csv_rows=[[m.get(k) for k in mod_csv] for m in mods])]
    if second:
        mod_blocks.append(Details(f"{len(second)} modules at depth 2 (every module is in the CSV)",
                                  [Table(cols, second, "modules at depth 2", "modules_depth2", csv_link=False)]))
    sections.append(Section("Modules", mod_blocks))
    sections.append(Section("Conventions", [Para(f"{k}: {v}", "note") for k, v in d.get("conventions", {}).items()]))
    return sections


# ----------------------------------------------------------------------------- predict
def _predict(d: dict, plots: bool) -> list[Section]:
    rows = [("predicted latency (model never timed)", fmt_seconds(d.get("latency_s"))),
            ("roofline sum", fmt_seconds(d.get("roofline_s"))),
            (("module calls x overhead", f"{d.get('module_calls')} x = {fmt_seconds(d.get('module_overhead_s'))}")
             if d.get("python_opcodes") is None else
             ("Python (bytecode instructions)", f"{d.get('python_opcodes'):,} = {fmt_seconds(d.get('python_s'))}"
              + (" (estimated from its ops)" if d.get("python_estimated") else ""))),
            ("calibrated", "yes" if d.get("calibrated") else "no (per-op floors)"), ("threads", d.get("threads"))]
    check = d.get("check") or {}
    m = check.get("measurement") or {}
    if m.get("median"):
        rows += [("measured (--measure)", fmt_latency(m.get("median"), m.get("ci_low"), m.get("ci_high"),
                                                      m.get("n_samples"), (m.get("spec") or {}).get("threads"),
                                                      disturbed=bool(m.get("disturbed")))),
                 ("prediction error", pct(check.get("error")) if check.get("error") is not None
                  else f"left out: {check.get('error_left_out_because')}")]
    blocks = _warnings(d) + _warnings(m) + [_kv(rows, str(d.get("model")), "prediction")]
    by_method = d.get("by_method") or {}
    latency = d.get("latency_s") or 0
    if by_method:
        blocks.append(Table(["method", "ops", "predicted", "share"],
                            [[k, v["ops"], fmt_seconds(v["predicted_s"]),
                              pct(v["predicted_s"] / latency if latency else None)]
                             for k, v in sorted(by_method.items(), key=lambda kv: -kv[1]["predicted_s"])],
                            "predicted time by method", "by_method", row_headers=True))
    ops = sorted(d.get("ops") or [], key=lambda o: -(o.get("predicted_s") or 0))
    op_rows = [[o["index"], o["op"].removeprefix("aten."), o["module"] or "(model)", o.get("method"),
                fmt_seconds(o.get("predicted_s")), fmt_seconds(o.get("roofline_s"))] for o in ops]
    return [Section(f"predict: {d.get('model')}", blocks),
            Section("Ops", _split(op_rows, ["#", "op", "module", "method", "predicted", "roofline"],
                                  "ops by predicted time", "predicted_ops", what="ops (less predicted time)",
                                  csv_columns=["index", "op", "module", "key", "method", "predicted_s", "roofline_s"],
                                  csv_rows=[[o.get(k) for k in ("index", "op", "module", "key", "method",
                                                                 "predicted_s", "roofline_s")] for o in ops],
                                  rest_columns=5))]


# ----------------------------------------------------------------------------- variants
def _variants(d: dict, plots: bool) -> list[Section]:
    rows = d.get("rows") or []
    threads = len(d.get("threads") or []) > 1

    def speed(r):
        if r.get("speedup") is None:
            return "-"
        ci = r.get("speedup_ci") or [None, None]
        return f"{r['speedup']:.3g}x" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci[0] is not None else " (no CI)")

    cols = ["variant", "batch"] + (["threads"] if threads else []) + [
        "status", "latency [95% CI] n, threads", "speed-up [95% CI]", "items/s", "max rel. error", "peak memory",
        "kernel ops", "first call"]
    table_rows = []
    for r in rows:
        ci = r.get("latency_ci") or [None, None]
        table_rows.append([r["variant"], r["batch"]] + ([r.get("threads") or "default"] if threads else []) + [
            r["status"] + (f": {r['reason']}" if r.get("reason") and r["status"] != "ok" else ""),
            fmt_latency(r.get("latency_s"), ci[0], ci[1], r.get("n_samples"), r.get("measured_threads"),
                        disturbed=bool(r.get("disturbed"))) if r.get("latency_s") else "-",
            speed(r), si(r.get("throughput")), f"{r['max_rel_err']:.2g}" if r.get("max_rel_err") is not None else "-",
            fmt_bytes(r["peak_mem_bytes"]) if r.get("peak_mem_bytes") is not None else "-",
            f"{r.get('ops_eager')} -> {r.get('ops')}" if r.get("ops_eager") is not None else "-",
            fmt_seconds(r.get("first_call_s")) + (" (compile)" if r.get("compiled") else "")])
    blocks: list = [Table(cols, table_rows, f"{d.get('model')} on {d.get('device')}: speed-up = eager / variant, "
                                            "timed alternately", "variants")]
    if plots:
        timed = [r for r in rows if r.get("speedup") and r["variant"] != "eager"]
        if timed:
            from flopgap.report.plots import speedup_chart

            labels = [f"{r['variant']} b{r['batch']}" + (f" {r['threads']}t" if r.get("threads") else "")
                      for r in timed]
            png = speedup_chart(labels, [r["speedup"] for r in timed],
                                [tuple(r["speedup_ci"]) if r.get("speedup_ci") and None not in r["speedup_ci"]
                                 else None for r in timed], title=str(d.get("model")))
            blocks.append(Plot(png, "speed-up of each variant over eager with its 95% CI (log axis)"))
    sections = [Section(f"variants: {d.get('model')}", blocks)]
    findings = [Para(f["text"], "warn" if f.get("kind") in ("slower", "failed", "disturbed", "inconclusive") else "")
                for f in d.get("findings") or []]
    if findings:
        sections.append(Section("Findings", findings))
    notes = []
    seen = set()
    for r in rows:
        if r["variant"] not in seen:
            seen.add(r["variant"])
            notes.append(Para(f"{r['variant']}: " + " | ".join(r.get("notes") or [r.get("reason") or "-"])))
    sections.append(Section("What each variant did", notes))
    sections.append(Section("Conventions", [Para(f"{k}: {v}", "note") for k, v in d.get("conventions", {}).items()]))
    return sections


_BUILDERS: dict[str, Callable[[dict, bool], list[Section]]] = {
    "count": _count, "time": _time, "explain": _explain, "predict": _predict, "variants": _variants}
COMMAND_KINDS = tuple(_BUILDERS)
# the table ``--csv -`` writes to stdout: one row per op, measurement or variant
MAIN_TABLE = {"count": "ops", "time": "measurement", "explain": "ops_by_time", "predict": "predicted_ops",
              "variants": "variants"}


def command_sections(kind: str, payload: dict, *, plots: bool = True) -> list[Section]:
    """Report sections for one command's result (``kind``: count, time, explain, predict
    or variants; anything else gets the generic key/value layout)."""
    builder = _BUILDERS.get(kind)
    if builder is None or not isinstance(payload, dict):
        from flopgap.report.generic import sections_from_result

        return sections_from_result(kind, payload if isinstance(payload, dict) else {})
    return builder(payload, plots)
