"""Statistics for studies: correlations with bootstrap CIs, inversions, a FLOPs-only fit,
and verdicts on ratio claims. Pure functions of numbers; no timing, no torch.

Correlation of a count ``x`` (params, FLOPs, ...) with latency ``y`` across models:

- Spearman rho and Kendall tau-b on the raw values (rank-based, so log makes no difference);
- Pearson r on ``log10 x`` vs ``log10 y`` (power-law relation; positive values only).

Bootstrap CI (percentile): resample the models with replacement ``n_boot`` times from
a seeded ``numpy`` generator, recompute the statistic, take the 2.5th and 97.5th
percentiles; resamples where the statistic is undefined (all x tied) are dropped.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Sequence

import numpy as np

__all__ = ["correlate", "bootstrap_ci", "inversions", "flops_fit", "ratio_verdict", "Verdict", "EQUIVALENCE_BAND"]

EQUIVALENCE_BAND = 0.05  # an effect whose CI lies within +-5% of no change counts as absent
_CHUNK = 256  # bootstrap resamples per vectorised batch (bounds memory for Kendall's n x n signs)


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    num = (a * b).sum(axis=1)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _rowwise_kendall_b(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # tau_b = sum(sign(dx) sign(dy)) / sqrt(#pairs untied in x * #pairs untied in y)
    sx = np.sign(a[:, :, None] - a[:, None, :])
    sy = np.sign(b[:, :, None] - b[:, None, :])
    s = (sx * sy).sum(axis=(1, 2))
    tx = np.abs(sx).sum(axis=(1, 2))
    ty = np.abs(sy).sum(axis=(1, 2))
    den = np.sqrt(tx * ty)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, s / np.where(den > 0, den, 1), np.nan)


def _stat_rows(method: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    if method == "spearman":
        return _rowwise_pearson(rankdata(xs, axis=1), rankdata(ys, axis=1))
    if method == "kendall":
        return _rowwise_kendall_b(xs, ys)
    if method == "pearson_loglog":
        return _rowwise_pearson(np.log10(xs), np.log10(ys))
    raise ValueError(f"unknown correlation method {method!r}")


def bootstrap_ci(method: str, x: Sequence[float], y: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of ``method`` (spearman, kendall, pearson_loglog) over pairs."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    n = len(xa)
    if n < 3:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, _CHUNK):
        idx = rng.integers(0, n, size=(min(_CHUNK, n_boot - start), n))
        values.append(_stat_rows(method, xa[idx], ya[idx]))
    v = np.concatenate(values)
    v = v[np.isfinite(v)]
    if len(v) < n_boot / 2:  # mostly degenerate resamples: no honest interval
        return (math.nan, math.nan)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(v, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def correlate(x: Sequence[float], y: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Spearman, Kendall (tau-b) and log-log Pearson of ``x`` with ``y``, each with a 95%
    bootstrap CI and scipy's p-value. Pairs with a non-positive or missing value are dropped
    (they have no logarithm); ``n`` says how many were used."""
    from scipy import stats

    pairs = [(float(a), float(b)) for a, b in zip(x, y)
             if a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0]
    n = len(pairs)
    out: dict = {"n": n}
    if n < 3:
        for m in ("spearman", "kendall", "pearson_loglog"):
            out[m] = {"r": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
        return out
    xa = np.array([p[0] for p in pairs])
    ya = np.array([p[1] for p in pairs])
    constant = np.all(xa == xa[0]) or np.all(ya == ya[0])
    for m in ("spearman", "kendall", "pearson_loglog"):
        if constant:
            out[m] = {"r": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
            continue
        if m == "spearman":
            res = stats.spearmanr(xa, ya)
        elif m == "kendall":
            res = stats.kendalltau(xa, ya)
        else:
            res = stats.pearsonr(np.log10(xa), np.log10(ya))
        lo, hi = bootstrap_ci(m, xa, ya, n_boot=n_boot, seed=seed)
        out[m] = {"r": float(res.statistic), "ci_low": lo, "ci_high": hi, "p": float(res.pvalue)}
    return out


def inversions(rows: Sequence[dict], *, by: str = "flops", top: int = 10) -> dict:
    """Pairs where a model has fewer ``by`` (e.g. FLOPs) but is *significantly* slower.

    ``rows``: dicts with ``label``, ``by``, ``median``, ``ci_low``, ``ci_high`` (seconds;
    ``None`` where timing got too few samples for a CI) and optionally ``finding``. A
    pair counts when the cheaper model's latency CI lies wholly above the other's. Ranked by how hard they contradict the count:
    ``(count ratio) x (latency ratio)``.
    """
    usable = [r for r in rows if r.get(by) and r.get("median")]
    pairs, total = [], 0
    for a in usable:
        for b in usable:
            if a is b or not a[by] < b[by]:
                continue
            total += 1
            # no CI (too few samples) means no evidence: never counted as an inversion
            if a.get("ci_low") is not None and b.get("ci_high") is not None and a["ci_low"] > b["ci_high"]:
                pairs.append({
                    "fewer": a["label"], "more": b["label"],
                    f"{by}_fewer": a[by], f"{by}_more": b[by], "count_ratio": b[by] / a[by],
                    "latency_fewer": a["median"], "latency_more": b["median"],
                    "slowdown": a["median"] / b["median"],
                    "finding": a.get("finding") or "",
                })
    pairs.sort(key=lambda p: -(math.log(p["count_ratio"]) + math.log(p["slowdown"])))
    return {"by": by, "count": len(pairs), "pairs_compared": total,
            "share": len(pairs) / total if total else math.nan, "top": pairs[:top]}


def flops_fit(rows: Sequence[dict], *, by: str = "flops", sigma: float = 2.0) -> dict:
    """Least-squares fit ``log10 latency = a + b log10 FLOPs``; residuals as measured/fitted
    ratios; outliers are models more than ``sigma`` residual standard deviations off."""
    usable = [r for r in rows if r.get(by) and r.get("median")]
    if len(usable) < 3:
        return {"a": math.nan, "b": math.nan, "r2": math.nan, "sd": math.nan, "residuals": [], "outliers": []}
    x = np.log10([r[by] for r in usable])
    y = np.log10([r["median"] for r in usable])
    if np.all(x == x[0]):
        return {"a": math.nan, "b": math.nan, "r2": math.nan, "sd": math.nan, "residuals": [], "outliers": []}
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    dof = max(len(usable) - 2, 1)
    sd = float(np.sqrt((resid ** 2).sum() / dof))
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else math.nan
    residuals = [{"label": r["label"], by: r[by], "median": r["median"], "fitted": float(10 ** (a + b * xi)),
                  "ratio": float(10 ** e), "z": float(e / sd) if sd > 0 else 0.0, "finding": r.get("finding") or ""}
                 for r, xi, e in zip(usable, x, resid)]
    outliers = sorted((r for r in residuals if sd > 0 and abs(r["z"]) > sigma), key=lambda r: -abs(r["z"]))
    return {"a": float(a), "b": float(b), "r2": r2, "sd": sd, "residuals": residuals, "outliers": outliers}


class Verdict(str, Enum):
    """A verdict on a claim. A ``str`` enum, so it is its own JSON and table text."""

    HOLDS = "holds"
    DOES_NOT_HOLD = "does not hold"
    INCONCLUSIVE = "inconclusive at this noise"
    DISTURBED = "inconclusive: machine disturbed"
    IMPRECISE = "inconclusive: precision not reached"
    NOT_MEASURED = "not measured"

    def __str__(self) -> str:
        return self.value

    @property
    def definite(self) -> bool:
        """holds or does not hold: an answer, not a reason why there is none."""
        return self in (Verdict.HOLDS, Verdict.DOES_NOT_HOLD)

    @property
    def css(self) -> str:
        """The report's class for this verdict's cell."""
        return {Verdict.HOLDS: "holds", Verdict.DOES_NOT_HOLD: "does-not-hold"}.get(self, "inconclusive")


def ratio_verdict(ci_low: float | None, ci_high: float | None, expect: str, *, band: float = EQUIVALENCE_BAND,
                  disturbed: bool = False, precise: bool = True) -> Verdict:
    """Verdict on a claim about a latency ratio ``A/B`` given its CI.

    ``expect="greater"``: the claim says A is slower (ratio > 1); ``"less"``: A is faster.
    An effect counts only beyond ``band`` (5%): a claim that A is faster or slower is a
    claim of a noticeable effect, and rigorous timing resolves differences far below
    that (two runs of the same float layer differ by 0.2% with a CI that excludes 1).

    First, whether the measurement can bear a verdict at all:

    - inconclusive, machine disturbed: the sentinel saw a busy machine (``disturbed``);
    - inconclusive, precision not reached: a side's CI stayed wider than its target
      (``precise=False``), or there is no interval (too few samples).

    Then, on the CI:

    - holds: the CI lies wholly beyond ``1 + band`` (or below ``1 / (1 + band)``) on the
      claimed side;
    - does not hold: the CI lies wholly on the other side of 1, or wholly inside
      ``[1 / (1 + band), 1 + band]`` (no effect worth the name);
    - otherwise inconclusive at this noise.
    """
    if expect not in ("greater", "less"):
        raise ValueError(f"expect must be 'greater' or 'less', got {expect!r}")
    if disturbed:
        return Verdict.DISTURBED
    if not precise or ci_low is None or ci_high is None or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return Verdict.IMPRECISE
    hi_edge, lo_edge = 1 + band, 1 / (1 + band)
    if (expect == "greater" and ci_low > hi_edge) or (expect == "less" and ci_high < lo_edge):
        return Verdict.HOLDS
    if (expect == "greater" and ci_high < 1) or (expect == "less" and ci_low > 1):
        return Verdict.DOES_NOT_HOLD
    if ci_low >= lo_edge and ci_high <= hi_edge:
        return Verdict.DOES_NOT_HOLD
    return Verdict.INCONCLUSIVE
