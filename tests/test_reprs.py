"""Notebook representations: every result object has a short one-line ``__repr__`` with
its key figures (a latency with n, CI and threads) and warning count, an ``_repr_html_``
table, and its ``warnings``."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
import torch
from torch import nn

from flopgap.count import CountResult, OpRecord, count
from flopgap.explain import build_explanation, predict
from flopgap.explain._attribute import Attribution
from flopgap.machine import MachineProfile
from flopgap.store import RunInfo
from flopgap.study.compare import Source, Timed, compare_sources
from flopgap.study.seed import SeedResult
from flopgap.study.shufflenet import ShuffleResult
from flopgap.study.zoo import ZooResult
from flopgap.timing import FakeClock, FakeLoad, ProcessRepeats, TimerOptions, compare, measure
from flopgap.variants import VariantRow, VariantsResult
from flopgap.variants import VariantFinding

_FAST = TimerOptions(max_time=0.3, precision=0.02, min_block_s=0.0)


class _Html(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.row_headers = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.row_headers += tag == "th" and dict(attrs).get("scope") == "row"


def _check(obj, *needles: str, warnings: int | None = None) -> str:
    text = repr(obj)
    assert "\n" not in text and len(text) < 500, text  # short: never every sample or op record
    assert text.startswith(f"<{type(obj).__name__} ") and text.endswith(">")
    n = len(obj.warnings)
    assert text.endswith(f"; {n} warning{'s' if n != 1 else ''}>")
    if warnings is not None:
        assert n == warnings, obj.warnings
    for needle in needles:
        assert needle in text, (needle, text)
    page = obj._repr_html_()
    parser = _Html()
    parser.feed(page)
    assert parser.tags[0] == "table" and parser.row_headers >= 1
    for w in obj.warnings:
        assert "warning:" in page
    return text


def _measurement(ms: float = 1.0, busy: bool = False):
    clock = FakeClock(ms * 1e-3, read_s=1e-7, jitter=0.02)
    return measure(clock.model, (), _FAST, name="m", clock=clock,
                   load=FakeLoad(others=(4,)) if busy else FakeLoad())


def test_count_repr_and_uncovered_warning():
    c = count(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), (torch.randn(2, 4),))
    _check(c, "FLOPs 160 FLOP", "kernel ops 2", warnings=0)  # 2*2*4*8 + 16 + relu 16
    b = count(nn.Linear(4, 8), (torch.randn(2, 4),), backward=True)
    _check(b, "forward 144 FLOP", "backward 144 FLOP")
    odd = CountResult("m", ["1x3"], 0, [OpRecord(0, "aten.mystery.default", "", "uncovered", "uncovered", [], [], [])],
                      [])
    text = _check(odd, warnings=1)
    assert "aten.mystery.default x1" in odd.warnings[0] and "1 warning>" in text


def test_measurement_and_comparison_reprs():
    m = _measurement()
    text = _check(m, "median 1 ms [", "n=", "threads", warnings=0)
    assert len(m.samples) > 20 and str(m.samples[3]) not in text
    busy = _measurement(busy=True)
    _check(busy, "(DISTURBED)")
    assert busy.warnings and busy.warnings[0].startswith("machine disturbed")
    clock = FakeClock(lambda i: 1e-3 if i % 2 == 0 else 2e-3, read_s=1e-7)
    c = compare(clock.model, (), clock.model, (), _FAST, names=("a", "b"), clock=clock, load=FakeLoad())
    _check(c, "ratio ", "(paired bootstrap)")
    r = ProcessRepeats(["seed:ex2-deep"], 2, [m])
    _check(r, "processes 1 of 2", "median of medians")


def test_explanation_and_prediction_reprs():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
    c = count(model, (torch.randn(4, 16),))
    prof = MachineProfile.synthetic()
    att = Attribution([1e-5 if not r.is_free else None for r in c.ops], [0] * len(c.ops), 3, 3e-5, 2e-5)
    ex = build_explanation(c, att, prof, measurement=_measurement(0.03))
    _check(ex, "profiled call 30 us", "rigorous median 30", "-bound")
    p = predict(c, prof)
    _check(p, "predicted ", "(never timed)", warnings=1)  # a synthetic profile has no calibration


def test_variants_repr():
    rows = [VariantRow("eager", 1, None, "ok", latency_s=1e-4, latency_ci=(0.99e-4, 1.01e-4), speedup=1.0,
                       speedup_ci=(1.0, 1.0), n_samples=100, measured_threads=2),
            VariantRow("int8-dynamic", 1, None, "ok", latency_s=2e-4, latency_ci=(1.9e-4, 2.1e-4), speedup=0.5,
                       speedup_ci=(0.48, 0.52), n_samples=100),
            VariantRow("compile", 1, None, "failed", reason="no compiler")]
    v = VariantsResult("seed:ex3-float", ["1x1000"], ["eager", "int8-dynamic", "compile"], [1], [None], rows,
                       findings=[VariantFinding("failed", "compile failed at batch 1: no compiler")])
    _check(v, "eager b1 100 us [99 us, 101 us] n=100, 2 threads", "int8-dynamic b1 0.50x [0.48, 0.52]", warnings=1)


def _run(kind: str) -> RunInfo:
    return RunInfo(7, kind, "", {}, "h", {}, "f", "finished", "2026-01-01T00:00:00", None, 1)


def test_study_and_compare_reprs():
    zoo = ZooResult(_run("zoo"), [{"label": "a", "batch": 1, "disturbed": True}],
                    {1: {"n": 5, "correlations": {"flops": {"spearman": {"r": 0.9, "ci_low": 0.7, "ci_high": 1.0}}},
                         "inversions": {"count": 2}}}, failures={"b": "raised"})
    _check(zoo, "batch 1 5 models, FLOPs vs latency Spearman 0.90 [0.70, 1.00], 2 inversions", warnings=2)
    seed = SeedResult(_run("seed"), {}, {}, [{"id": 1, "example": "Ex.1", "ratio": 0.23, "ci_low": 0.229,
                                              "ci_high": 0.231, "verdict": "does not hold"}])
    _check(seed, "claim 1 (Ex.1) 0.23 [0.229, 0.231]: does not hold", warnings=0)
    shuffle = ShuffleResult(_run("shufflenet-v2"), [], [{"guideline": "G1", "verdict": "holds"}])
    _check(shuffle, "G1 holds")
    a = Timed("m", 1, 1e-3, 0.99e-3, 1.01e-3, 50, 2)
    b = Timed("m", 1, 1.2e-3, 1.19e-3, 1.21e-3, 50, 2)
    cmp = compare_sources(Source("A", "time", {}, (a,)), Source("B", "time", {}, (b,)))
    _check(cmp, "m b1 1.200 [", "regression")
