"""Statistics of the timer against closed forms: order-statistic CI ranks from the
binomial, summaries on hand-computed arrays, the ratio bootstrap on exact ratios."""

from fractions import Fraction
from math import comb

import numpy as np
import pytest

from flopgap.timing._stats import half_width, median_ci, median_ci_ranks, median_half_width, ratio_ci, summarize


def _cdf(k: int, n: int) -> Fraction:
    """P(B <= k) for B ~ Binomial(n, 1/2), exactly."""
    return Fraction(sum(comb(n, i) for i in range(k + 1)), 2 ** n)


@pytest.mark.parametrize("n, expected", [
    (6, (1, 6)),      # P(B <= 0) = 1/64 = 0.016 <= 0.025 < P(B <= 1) = 7/64
    (10, (2, 9)),     # P(B <= 1) = 11/1024 = 0.011 <= 0.025 < P(B <= 2) = 56/1024 = 0.055
    (20, (6, 15)),    # P(B <= 5) = 0.0207 <= 0.025 < P(B <= 6) = 0.0577
    (100, (40, 61)),  # P(B <= 39) = 0.0176 <= 0.025 < P(B <= 40) = 0.0284
])
def test_median_ci_ranks_match_binomial_table(n, expected):
    assert median_ci_ranks(n, 0.95) == expected


@pytest.mark.parametrize("n", [1, 2, 5])
def test_median_ci_ranks_none_below_six_samples(n):
    # P(B <= 0) = 1/32 > 0.025 at n = 5: no pair of order statistics reaches 95%
    assert median_ci_ranks(n, 0.95) is None


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_median_ci_ranks_are_the_tightest_with_coverage(confidence):
    alpha2 = Fraction(1 - confidence).limit_denominator(1000) / 2
    for n in range(6, 160):
        ranks = median_ci_ranks(n, confidence)
        if _cdf(0, n) > alpha2:
            assert ranks is None, n
            continue
        lo, hi = ranks
        assert hi == n + 1 - lo
        assert _cdf(lo - 1, n) <= alpha2 < _cdf(lo, n), n  # coverage met, and l is the largest that meets it


def test_median_ci_on_sorted_values():
    x = np.arange(1.0, 11.0)  # 1..10: ranks (2, 9)
    assert median_ci(x) == (2.0, 9.0)
    assert all(np.isnan(median_ci(np.arange(5.0))))  # too few for 95%: unknown, not (min, max)


def test_summarize_hand_computed():
    x = [5, 1, 2, 3, 4, 6, 7, 8, 9, 100]
    s = summarize(x)
    assert s["median"] == 5.5
    assert s["min"] == 1 and s["max"] == 100
    assert s["mean"] == pytest.approx(14.5)           # 145 / 10
    assert s["q1"] == 3.25 and s["q3"] == 7.75        # linear interpolation at 2.25 and 6.75
    assert s["p5"] == pytest.approx(1.45)             # rank 0.45 between 1 and 2
    assert s["outliers"] == 1                         # 100 > 7.75 + 1.5 * 4.5 = 14.5
    assert (s["ci_low"], s["ci_high"]) == (2, 9)


def test_summarize_empty_is_nan_not_zero():
    s = summarize([])
    assert np.isnan(s["median"]) and s["n"] == 0


def test_half_width_is_the_larger_side():
    assert half_width(100.0, 99.0, 103.0) == pytest.approx(0.03)
    assert half_width(0.0, 0.0, 0.0) == float("inf")


def test_ratio_ci_exact_and_deterministic():
    rng = np.random.default_rng(1)
    b = rng.uniform(1.0, 2.0, 200)
    assert ratio_ci(2 * b, b) == (pytest.approx(2.0), pytest.approx(2.0))  # paired: noise cancels
    a = 3 * b * rng.uniform(0.95, 1.05, 200)
    lo, hi = ratio_ci(a, b)
    assert ratio_ci(a, b) == (lo, hi)  # seeded
    assert lo < np.median(a) / np.median(b) < hi
    assert 2.7 < lo < hi < 3.3


def test_ratio_ci_unpaired_and_too_few():
    lo, hi = ratio_ci([2.0, 2.0, 2.0], [1.0, 1.0])
    assert (lo, hi) == (2.0, 2.0)
    assert np.isnan(ratio_ci([1.0], [1.0])[0])


def test_median_half_width_agrees_with_summarize():
    rng = np.random.default_rng(7)
    for n in (1, 5, 6, 11, 40, 333):
        x = rng.lognormal(0, 0.3, n)
        s = summarize(x)
        assert median_half_width(x) == pytest.approx(half_width(s["median"], s["ci_low"], s["ci_high"]))


def test_health_warnings_from_recorded_numbers():
    from flopgap.timing import Measurement, TimerOptions, TimingSpec, health_warnings

    spec = TimingSpec(name="m", inputs=(), device="cpu", threads=2, options=TimerOptions(precision=0.01, max_time=1.0))
    calm = [1.0e-3] * 20
    quiet = Measurement(spec, calm, 1, 2e-3, 5, environment={"logical_cores": 2, "load_average": [1.1, 1, 1]})
    assert health_warnings(quiet) == []
    # load 2.6 on 2 cores with 2 threads: (2.6 - 1) + 2 > 2.5 -> busy
    busy = Measurement(spec, calm, 1, 2e-3, 5, environment={"logical_cores": 2, "load_average": [2.6, 2, 2]})
    assert len(health_warnings(busy)) == 1 and "load average 2.60 on 2 logical cores" in health_warnings(busy)[0]
    # one thread never oversubscribes a 2-core machine through its own threads
    one = Measurement(TimingSpec("m", (), "cpu", 1, TimerOptions(precision=0.01, max_time=1.0)), calm, 1, 2e-3, 5,
                      environment={"logical_cores": 2, "load_average": [2.6, 2, 2]})
    assert health_warnings(one) == []
    tail = Measurement(spec, [1e-3] * 17 + [5e-3] * 3, 1, 2e-3, 5, environment={})
    assert any(w.startswith("heavy tail: p95 is") for w in health_warnings(tail))
    assert "warnings" in quiet.to_dict() and quiet.to_dict()["warnings"] == []


def test_page_fault_warning_names_the_allocator_from_the_recorded_count():
    from flopgap.timing import Measurement, TimerOptions, TimingSpec, health_warnings

    spec = TimingSpec(name="m", inputs=(), device="cpu", threads=1, options=TimerOptions(precision=0.01, max_time=1.0))
    calm = [1.0e-3] * 20
    few = Measurement(spec, calm, 1, 2e-3, 5, page_faults_per_call=49.0)
    many = Measurement(spec, calm, 1, 2e-3, 5, page_faults_per_call=948.0)
    unknown = Measurement(spec, calm, 1, 2e-3, 5)
    assert health_warnings(few) == [] and health_warnings(unknown) == []
    (w,) = health_warnings(many)
    assert w.startswith("948 minor page faults per call while sampling") and "MALLOC_TRIM_THRESHOLD_" in w
    d = many.to_dict()
    assert d["page_faults_per_call"] == 948.0 and d["warnings"] == [w]
    assert Measurement.from_dict(d).page_faults_per_call == 948.0
