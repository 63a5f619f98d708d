"""Statistics of timing samples: order-statistic CI of the median, summaries, ratio CI.

Why an order-statistic interval for the median: it is distribution-free (timing samples
are skewed and often bimodal), exact for independent samples (coverage from the
binomial, never below the nominal level), deterministic (no random resampling, so the
stopping rule is reproducible under a fake clock) and costs one sort. The bootstrap is
known to behave badly for a single median (its resampled medians take only a few
distinct values); we use it only for the *ratio* of two medians, where no closed form
exists.

Caveat stated where users look: every interval here assumes independent samples.
Machine noise is bursty, so samples from one process are correlated; the honest check
is to repeat in fresh processes (``flopgap time --processes N``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.special import bdtr, ndtri  # binomial CDF, normal quantile (scipy.stats costs 0.5 s to import)

__all__ = ["median_ci_ranks", "median_ci", "half_width", "median_half_width", "summarize", "ratio_ci", "MIN_SAMPLES_95",
           "CI_METHOD", "RATIO_CI_METHOD"]

CI_METHOD = "order-statistic (binomial, distribution-free)"
RATIO_CI_METHOD = "paired bootstrap over interleaved rounds (percentile)"

MIN_SAMPLES_95 = 6  # 2 * 0.5**6 = 0.031 < 0.05, while 2 * 0.5**5 = 0.0625 is not


@lru_cache(maxsize=4096)  # the stopping rule asks for the same n again and again
def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks ``(l, u)`` with ``P(x_(l) <= median < x_(u)) >= confidence``.

    With ``B ~ Binomial(n, 1/2)`` the number of samples below the true median,
    ``P(x_(l) <= m < x_(u)) = P(l <= B <= u - 1)``. We take the symmetric pair
    ``u = n + 1 - l`` with the largest ``l`` such that ``P(B <= l - 1) <= (1 - confidence) / 2``;
    coverage is then ``1 - 2 P(B <= l - 1)``. Returns ``None`` when ``n`` is too small
    for any pair to reach ``confidence`` (``n < 6`` at 95%).

    Example: n = 10: P(B <= 1) = 11/1024 = 0.0107 <= 0.025 < P(B <= 2) = 56/1024, so
    l = 2, u = 9.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha2 = (1 - confidence) / 2
    if n < 1 or bdtr(0, n, 0.5) > alpha2:
        return None
    # start near the normal approximation, then step to the exact boundary:
    # j = l - 1 is the largest j with P(B <= j) <= alpha2
    j = min(n - 1, max(0, int(n / 2 - ndtri(1 - alpha2) * math.sqrt(n) / 2)))
    while j > 0 and bdtr(j, n, 0.5) > alpha2:
        j -= 1
    while bdtr(j + 1, n, 0.5) <= alpha2:
        j += 1
    lo = j + 1
    return lo, n + 1 - lo


def median_ci(sorted_samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """``(low, high)`` of the order-statistic CI; NaN when there are too few samples for
    any interval to reach ``confidence`` (fewer than 6 at 95%): unknown, never a guess."""
    n = len(sorted_samples)
    ranks = median_ci_ranks(n, confidence) if n else None
    if ranks is None:
        return math.nan, math.nan
    lo, hi = ranks
    return float(sorted_samples[lo - 1]), float(sorted_samples[hi - 1])


def median_half_width(samples, confidence: float = 0.95) -> float:
    """``half_width`` of the order-statistic CI, computed with one sort (the stopping
    rule calls this after every few samples, so it avoids :func:`summarize`)."""
    x = np.sort(np.asarray(samples, dtype=float))
    if len(x) == 0:
        return math.inf
    lo, hi = median_ci(x, confidence)
    n = len(x)
    med = float(x[n // 2]) if n % 2 else float(0.5 * (x[n // 2 - 1] + x[n // 2]))
    return half_width(med, lo, hi)


def half_width(median: float, low: float, high: float) -> float:
    """The larger side of the CI relative to the median (the precision reached); inf when
    the CI is unknown."""
    if not median > 0 or math.isnan(low) or math.isnan(high):
        return math.inf
    return max(median - low, high - median) / median


def summarize(samples, confidence: float = 0.95) -> dict:
    """Median, CI, mean, p5/p95 (linear interpolation), min/max, IQR and the number of
    outliers outside Tukey's fences ``[Q1 - 1.5 IQR, Q3 + 1.5 IQR]`` (kept, only counted)."""
    x = np.sort(np.asarray(samples, dtype=float))
    if len(x) == 0:
        nan = math.nan
        return dict(median=nan, ci_low=nan, ci_high=nan, mean=nan, p5=nan, p95=nan, min=nan, max=nan,
                    q1=nan, q3=nan, iqr=nan, outliers=0, n=0)
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    p5, p95 = np.percentile(x, [5, 95])
    iqr = q3 - q1
    lo, hi = median_ci(x, confidence)
    outliers = int(np.count_nonzero((x < q1 - 1.5 * iqr) | (x > q3 + 1.5 * iqr)))
    return dict(median=float(med), ci_low=lo, ci_high=hi, mean=float(x.mean()), p5=float(p5), p95=float(p95),
                min=float(x[0]), max=float(x[-1]), q1=float(q1), q3=float(q3), iqr=float(iqr),
                outliers=outliers, n=len(x))


def ratio_ci(a, b, confidence: float = 0.95, *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``median(a) / median(b)``.

    ``a[i]`` and ``b[i]`` are taken in the same round (interleaved), so rounds are
    resampled as pairs: noise that hits both models in a round cancels in the ratio
    instead of widening it. Unequal lengths fall back to independent resampling.
    Seeded: the same samples always give the same interval.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    ratios = np.empty(resamples)
    paired = len(a) == len(b)
    chunk = max(1, 2_000_000 // max(len(a), len(b)))  # bound memory at ~16 MB per index array
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        ia = rng.integers(0, len(a), size=(k, len(a)))
        ib = ia if paired else rng.integers(0, len(b), size=(k, len(b)))
        ratios[start:start + k] = np.median(a[ia], axis=1) / np.median(b[ib], axis=1)
    alpha = 1 - confidence
    lo, hi = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
