"""Study statistics on synthetic data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from flopgap.study._stats import (_rowwise_kendall_b, bootstrap_ci, correlate, flops_fit, inversions,
                                  ratio_verdict)


def test_perfectly_monotone_is_one_everywhere():
    x = [1e6, 2e6, 5e6, 1e7, 3e7, 1e8]
    y = [v ** 0.5 * 1e-6 for v in x]  # a power law: log-log linear, ranks identical
    c = correlate(x, y, n_boot=500)
    assert c["n"] == 6
    for m in ("spearman", "kendall", "pearson_loglog"):
        assert c[m]["r"] == pytest.approx(1.0)
        assert c[m]["ci_low"] == pytest.approx(1.0) and c[m]["ci_high"] == pytest.approx(1.0)


def test_perfectly_reversed_is_minus_one():
    x = [1, 2, 3, 4, 5, 6, 7]
    y = [7, 6, 5, 4, 3, 2, 1]
    c = correlate(x, y, n_boot=300)
    assert c["spearman"]["r"] == pytest.approx(-1.0)
    assert c["kendall"]["r"] == pytest.approx(-1.0)
    assert c["spearman"]["ci_high"] == pytest.approx(-1.0)


def test_known_kendall_value_one_swap():
    # one discordant pair of 10: tau = (9 - 1) / 10 = 0.8; spearman = 1 - 6*2/(5*24) = 0.9
    c = correlate([1, 2, 3, 4, 5], [1, 2, 3, 5, 4], n_boot=200)
    assert c["kendall"]["r"] == pytest.approx(0.8)
    assert c["spearman"]["r"] == pytest.approx(0.9)
    assert c["kendall"]["ci_low"] <= 0.8 <= c["kendall"]["ci_high"]


def test_vectorised_kendall_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, size=(20, 15)).astype(float)
    b = rng.integers(0, 6, size=(20, 15)).astype(float)
    ours = _rowwise_kendall_b(a, b)
    ref = [stats.kendalltau(a[i], b[i]).statistic for i in range(20)]
    assert ours == pytest.approx(ref)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(7)
    x = rng.lognormal(size=40)
    y = x * rng.lognormal(sigma=0.5, size=40)
    assert bootstrap_ci("spearman", x, y, seed=3) == bootstrap_ci("spearman", x, y, seed=3)
    c = correlate(x, y, n_boot=1000)
    for m in ("spearman", "kendall", "pearson_loglog"):
        assert c[m]["ci_low"] < c[m]["r"] < c[m]["ci_high"]


def test_non_positive_and_missing_values_are_dropped_and_counted():
    c = correlate([1, 2, 0, None, 4, 5], [1, 2, 3, 4, None, 6], n_boot=100)
    assert c["n"] == 3  # (1,1), (2,2), (5,6)
    assert correlate([1, 2], [1, 2])["n"] == 2 and math.isnan(correlate([1, 2], [1, 2])["spearman"]["r"])
    assert math.isnan(correlate([3, 3, 3, 3], [1, 2, 3, 4], n_boot=50)["spearman"]["r"])


def _row(label, flops, median, half=0.01, finding=""):
    return {"label": label, "flops": flops, "params": flops, "median": median,
            "ci_low": median * (1 - half), "ci_high": median * (1 + half), "finding": finding}


def test_inversions_only_significant_ones_ranked():
    rows = [_row("a", 1e6, 5e-3, finding="many small kernels"), _row("b", 1e8, 1e-3), _row("c", 1e7, 2e-3),
            _row("d", 2e7, 2.001e-3, half=0.05)]  # d vs c: not significant (CIs overlap)
    inv = inversions(rows, by="flops")
    assert inv["pairs_compared"] == 6
    got = [(p["fewer"], p["more"]) for p in inv["top"]]
    # every model is slower than b with fewer FLOPs, a slower than all; c < d in FLOPs but with
    # overlapping CIs: not an inversion
    assert set(got) == {("a", "b"), ("a", "c"), ("a", "d"), ("c", "b"), ("d", "b")}
    assert got[0] == ("a", "b")  # 100x the FLOPs and 5x faster ranks first
    assert inv["top"][0]["count_ratio"] == pytest.approx(100) and inv["top"][0]["slowdown"] == pytest.approx(5)
    assert inv["top"][0]["finding"] == "many small kernels"
    assert inv["count"] == 5 and inv["share"] == pytest.approx(5 / 6)


def test_rows_without_ci_are_never_inversions():
    rows = [_row("a", 1e6, 5e-3), dict(_row("b", 1e8, 1e-3), ci_high=None), _row("c", 1e9, 1e-3)]
    rows[0]["ci_low"] = None
    inv = inversions(rows)
    assert inv["count"] == 0 and inv["pairs_compared"] == 3


def test_flops_fit_recovers_power_law_and_flags_outlier():
    rows = [_row(f"m{i}", 10 ** (6 + i / 2), 1e-9 * (10 ** (6 + i / 2)) ** 0.8) for i in range(10)]
    fit = flops_fit(rows)
    assert fit["b"] == pytest.approx(0.8) and fit["a"] == pytest.approx(-9.0)
    assert fit["r2"] == pytest.approx(1.0) and fit["outliers"] == []
    rows = [dict(r, median=r["median"] * (1 + 0.02 * ((-1) ** i))) for i, r in enumerate(rows)]
    rows[4] = dict(rows[4], median=rows[4]["median"] * 10)  # one model 10x slower than its FLOPs say
    fit = flops_fit(rows)
    assert [o["label"] for o in fit["outliers"]] == ["m4"]
    assert fit["outliers"][0]["ratio"] > 3


@pytest.mark.parametrize("lo, hi, expect, verdict", [
    (1.2, 1.5, "greater", "holds"),
    (0.2, 0.3, "greater", "does not hold"),
    (0.9, 1.3, "greater", "inconclusive at this noise"),
    (0.97, 1.03, "less", "does not hold"),  # within +-5% of 1: the claimed speed-up is absent
    (0.7, 0.8, "less", "holds"),
    (1.1, 1.2, "less", "does not hold"),
    (float("nan"), 1.0, "less", "inconclusive: precision not reached"),  # no interval: too few samples
    (0.997, 0.999, "less", "does not hold"),  # same model twice: CI excludes 1, but a 0.2% effect is no effect
    (1.02, 1.09, "greater", "inconclusive at this noise"),  # an effect, maybe too small to matter
    (1.06, 1.09, "greater", "holds"),
])
def test_ratio_verdict(lo, hi, expect, verdict):
    assert ratio_verdict(lo, hi, expect) == verdict


def test_no_verdict_rests_on_a_disturbed_or_imprecise_measurement():
    from flopgap.study import Verdict

    # a wide CI wholly on the claimed side, from a disturbed or imprecise run
    assert ratio_verdict(1.1, 25.0, "greater") == Verdict.HOLDS
    assert ratio_verdict(1.1, 25.0, "greater", disturbed=True) == Verdict.DISTURBED
    assert ratio_verdict(1.1, 25.0, "greater", precise=False) == Verdict.IMPRECISE
    assert ratio_verdict(1.1, 25.0, "greater", disturbed=True, precise=False) == Verdict.DISTURBED
    assert not Verdict.DISTURBED.definite and Verdict.HOLDS.definite and Verdict.DOES_NOT_HOLD.definite
    assert str(Verdict.DISTURBED) == "inconclusive: machine disturbed"
