"""The pytest plugin, run inside pytest with ``pytester``: budgets, baselines, regressions,
disturbed measurements. Every inner test times a fake model on a fake clock, so each
verdict is exact; one inner test uses the real clock."""

from __future__ import annotations

import json

import pytest
# imported here so that pytester's in-process runs never import them anew (numpy, scipy and
# torch refuse to load twice in one process, and pytester drops what an inner run imported)
import torch  # noqa: F401
import flopgap.study.compare  # noqa: F401
from flopgap.timing import FakeClock, FakeLoad, TimerOptions, measure  # noqa: F401

_HEADER = '''
import pytest
from flopgap.timing import FakeClock, FakeLoad

MS = 1e-3


def fake(call_s, jitter=0.02, seed=0, busy=False):
    """A fake model on a fake clock, on a calm fake machine (or a busy one)."""
    clock = FakeClock(call_s, read_s=1e-7, jitter=jitter, seed=seed)
    load = FakeLoad(others=(4,)) if busy else FakeLoad()
    return clock.model, dict(clock=clock, load=load, min_block_s=0.0, max_time=0.5, precision=0.01)
'''


def _tests(pytester, body: str) -> None:
    pytester.makepyfile(test_latency=_HEADER + body)


def test_budget_pass_fail_and_summary(pytester):
    _tests(pytester, '''
def test_fast(flopgap_latency):
    model, opts = fake(2 * MS)
    m = flopgap_latency(model, (), max_ms=3, **opts)
    assert 1.9 * MS < m.median < 2.1 * MS


def test_slow(flopgap_latency):
    model, opts = fake(5 * MS)
    flopgap_latency(model, (), max_ms=3, **opts)


@pytest.mark.flopgap(max_ms=2)
def test_straddles(flopgap_latency):
    model, opts = fake(2 * MS, jitter=0.2)
    flopgap_latency(model, (), **opts)
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*test_slow*over the budget of 3 ms*",
        "*= flopgap latency =*",
        "test_latency.py::test_fast: 2* ms ?* ms, * ms? n=*, * thread*, cpu; budget 3 ms: within*",
        "test_latency.py::test_slow: 5* ms*budget 3 ms: over*",
        "test_latency.py::test_straddles: *budget 2 ms: inconclusive*",
    ])


def test_save_then_compare_flags_a_regression_only_beyond_the_threshold(pytester, tmp_path, monkeypatch):
    body = '''
import os
SCALE = float(os.environ.get("SCALE", "1"))


def test_a(flopgap_latency):
    model, opts = fake(2 * MS * SCALE)
    flopgap_latency(model, (), **opts)


def test_b(flopgap_latency):
    model, opts = fake(1 * MS)
    flopgap_latency(model, (), name="b-model", **opts)
    flopgap_latency(model, (), name="b-model", **opts)
'''
    _tests(pytester, body)
    baseline = pytester.path / "base"  # inside the rootdir: pytest derives rootdir (and node ids) from path args
    pytester.runpytest("--flopgap-save", str(baseline)).assert_outcomes(passed=2)
    data = json.loads((baseline / "flopgap-latency.json").read_text())
    assert data["schema"] == "flopgap.pytest/1"
    assert sorted(data["results"]) == ["b-model", "b-model#2", "test_latency.py::test_a"]
    entry = data["results"]["test_latency.py::test_a"]
    assert entry["schema"] == "flopgap.time/1" and entry["spec"]["name"] == "test_latency.py::test_a"
    assert entry["ci_low"] <= entry["median"] <= entry["ci_high"] and entry["n_samples"] == len(entry["samples"])
    assert data["environment"]["cpu_model"]

    base = str(baseline / "flopgap-latency.json")
    monkeypatch.setenv("SCALE", "1.3")  # 30% slower: beyond 5% + CI
    result = pytester.runpytest("--flopgap-compare", base)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_a: 1.*x the baseline (95% CI 1.2* .. 1.3*), beyond the 5% threshold*",
                                 "*b-model: *vs baseline *: no change*"])
    monkeypatch.setenv("SCALE", "1.3")  # the same change under a 50% threshold: no failure
    pytester.runpytest("--flopgap-compare", base, "--flopgap-threshold", "0.5").assert_outcomes(passed=2)
    monkeypatch.setenv("SCALE", "0.5")
    result = pytester.runpytest("--flopgap-compare", base)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_a: *vs baseline 0.5*: improvement*"])


def test_disturbed_measurement_is_reported_never_failed(pytester, monkeypatch):
    _tests(pytester, '''
import os


def test_disturbed(flopgap_latency):
    model, opts = fake(5 * MS * float(os.environ.get("SCALE", "1")), busy=True)
    flopgap_latency(model, (), max_ms=1, name="busy", **opts)
''')
    result = pytester.runpytest("--flopgap-save", "base.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["DISTURBED busy: 5* ms*budget 1 ms: not judged (disturbed); *machine disturbed*"])
    monkeypatch.setenv("SCALE", "2")  # twice as slow, but both sides disturbed: reported, not failed
    result = pytester.runpytest("--flopgap-compare", "base.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["DISTURBED busy: 10* ms*vs baseline 2.0*x*: not judged: disturbed*"])


def test_baseline_from_another_machine_is_not_judged(pytester, tmp_path):
    _tests(pytester, '''
def test_a(flopgap_latency):
    model, opts = fake(2 * MS)
    flopgap_latency(model, (), **opts)
''')
    base = pytester.path / "b.json"
    base.write_text(json.dumps({"schema": "flopgap.pytest/1", "environment": {"cpu_model": "another CPU"},
                                "results": {"test_latency.py::test_a": {"median": 1e-3, "ci_low": 0.99e-3,
                                                                        "ci_high": 1.01e-3, "n_samples": 50}}}))
    result = pytester.runpytest("--flopgap-compare", str(base))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_a: *; not judged: the baseline and this run were measured under different "
                                 "settings (machine cpu another CPU vs *)*"])


@pytest.mark.parametrize("content,needle", [
    (None, "cannot read"), ("{bad", "is not JSON"), ('{"schema": "flopgap.time/1"}', "is not a flopgap.pytest/1"),
])
def test_bad_baseline_is_a_usage_error(pytester, tmp_path, content, needle):
    _tests(pytester, "def test_x():\n    pass\n")
    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    result = pytester.runpytest("--flopgap-compare", str(path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--flopgap-compare*{needle}*"])


def test_real_clock_on_a_small_model(pytester):
    pytester.makepyfile(test_real='''
import torch


def test_linear(flopgap_latency):
    model = torch.nn.Linear(64, 64).eval()
    m = flopgap_latency(model, (torch.randn(8, 64),), max_ms=10_000, max_time=0.3)
    assert m.median > 0 and m.spec.threads >= 1
''')
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    # within the budget, or not judged when the sentinel saw this shared machine busy
    result.stdout.fnmatch_lines(["*test_real.py::test_linear: * n=*, * thread*, cpu; budget 10000 ms: *"])
