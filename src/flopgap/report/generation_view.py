"""Sections of a generation study (terminal, HTML and CSV share them)."""

from __future__ import annotations

from flopgap.report._format import fmt_bytes, fmt_seconds, pct, si
from flopgap.report.html import Para, Section, Table

__all__ = ["generation_sections"]


def _corr(d) -> str:
    r = (d or {}).get("spearman") or {}
    if r.get("r") is None:
        return "-"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    return f"{r['r']:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None else "")


def generation_sections(result, *, plots: bool = True) -> list[Section]:
    from flopgap.report.study_view import _lat, _run_para

    out = [Section("Run", [_run_para(result.run), Para(
        "Per model and batch: a prefill of the prompt, then one decode step timed at the mean context of the "
        "generated tokens (cache reset before each timed call). Per token = per output token of a decode step. "
        "Floors: bytes / measured bandwidth, FLOPs / measured peak. Verdicts rest on CIs only.", "note")])]
    for batch, a in result.analysis["batches"].items():
        rows = sorted((r for r in result.rows if r["batch"] == batch), key=lambda r: r["flops"])
        blocks = [Table(
            ["model", "decode FLOPs/token", "bytes/token", "KV share", "memory floor/token", "compute floor/token",
             "ms/token [95% CI]", "n", "threads", "MBU", "MFU", "time to first token"],
            [[r["label"], si(r["flops"]), fmt_bytes(r["bytes"]), pct(r["kv_share"]), fmt_seconds(r["memory_floor"]),
              fmt_seconds(r["compute_floor"]), _lat(r["median"], r["ci_low"], r["ci_high"]), r["n"], r["threads"],
              pct(r["mbu"]), pct(r["mfu"]), fmt_seconds(r["ttft"])] for r in rows],
            f"decode per token, batch {batch}", f"generation_b{batch}")]
        corr = a["correlations"]
        if corr:
            blocks.append(Para(f"Spearman with ms/token across {a['n']} models [95% bootstrap CI]: FLOPs/token "
                               f"{_corr(corr.get('flops'))}, bytes/token {_corr(corr.get('bytes'))}, memory floor "
                               f"{_corr(corr.get('memory_floor'))}."))
        inv = a["inversions"]
        blocks.append(Para(f"Inversions: {inv['count']} of {inv['pairs_compared']} ordered pairs have fewer FLOPs "
                           "per token yet a ms/token CI wholly above the other's."))
        if a["untrustworthy"]:
            blocks.append(Para("inconclusive at this noise (precision not reached or timer warnings): "
                               + ", ".join(a["untrustworthy"]), "warning"))
        out.append(Section(f"Batch {batch}", blocks))
    if result.analysis["batching"]:
        out.append(Section("Batching decode", [Table(
            ["model", "batch", "step vs batch 1 [CI]", "tokens", "verdict: batching is nearly free (< B/2)"],
            [[v["model"], v["batch"], f"{v['step_ratio']:.2f}x [{_n(v['ci'][0])}, {_n(v['ci'][1])}]",
              f"{v['tokens_ratio']}x", v["verdict"]] for v in result.analysis["batching"]],
            "batching verdicts", "batching")]))
    if result.failures:
        out.append(Section("Failures", [Table(["model", "error"], [[k, v] for k, v in result.failures.items()],
                                              "models that failed", "failures")]))
    return out


def _n(x) -> str:
    return "-" if x is None else f"{x:.2f}"
