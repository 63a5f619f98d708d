"""Scaling findings on hand-made rows (no timing): exact thresholds and texts."""

from __future__ import annotations

import json

from flopgap.variants import VARIANTS_SCHEMA, VariantRow, VariantsResult, plot_variants
from flopgap.variants._findings import findings


def _row(variant, batch, latency, threads=None, speedup=1.0, ci=(1.0, 1.0), status="ok"):
    return VariantRow(variant, batch, threads, status, latency_s=latency, latency_ci=(latency * 0.99, latency * 1.01),
                      eager_latency_s=latency * speedup, speedup=speedup, speedup_ci=ci, throughput=batch / latency)


def _result(rows, batches, threads=(None,), variants=("eager",)):
    return VariantsResult("m", [], list(variants), list(batches), list(threads), rows)


def test_overhead_bound_and_saturation():
    # latency 100, 105, 210, 420 us at batch 1, 2, 4, 8: 1->2 grows x1.05 (< 1.10: overhead-bound),
    # per-item 100, 52.5, 52.5, 52.5 us: stops falling at batch 2 (2->4 gains 0%)
    rows = [_row("eager", b, lat * 1e-6) for b, lat in ((1, 100), (2, 105), (4, 210), (8, 420))]
    out = findings(_result(rows, (1, 2, 4, 8)))
    sat = [f for f in out if f.kind == "batch-saturation"]
    assert len(sat) == 1 and sat[0].batch == 2
    bound = [f for f in out if f.kind == "overhead-bound"]
    assert len(bound) == 1 and "1->2 (x1.05 per doubling)" in bound[0].text
    assert "2->4" not in bound[0].text


def test_overhead_growth_normalised_per_doubling():
    # 1 -> 4 is two doublings: latency x1.21 over it is x1.10 per doubling: not below the 10% line
    rows = [_row("eager", 1, 100e-6), _row("eager", 4, 121e-6 * 1.0001)]
    assert not [f for f in findings(_result(rows, (1, 4))) if f.kind == "overhead-bound"]
    rows = [_row("eager", 1, 100e-6), _row("eager", 4, 120e-6)]
    assert [f for f in findings(_result(rows, (1, 4))) if f.kind == "overhead-bound"]


def test_still_falling():
    rows = [_row("eager", 1, 100e-6), _row("eager", 8, 200e-6)]
    sat = [f for f in findings(_result(rows, (1, 8))) if f.kind == "batch-saturation"]
    assert sat[0].batch is None and "still falling at batch 8" in sat[0].text


def test_thread_scaling_efficiency():
    # 1 thread 100 us, 2 threads 80 us: speed-up 1.25 over 2x the threads = 62% efficiency
    rows = [_row("eager", 1, 100e-6, threads=1), _row("eager", 1, 80e-6, threads=2)]
    out = [f for f in findings(_result(rows, (1,), threads=(1, 2))) if f.kind == "thread-scaling"]
    assert len(out) == 1 and out[0].text.endswith("vs 1 thread: 2 threads 62%")


def test_verdicts_from_ci():
    rows = [_row("eager", 1, 1e-5),
            _row("fast", 1, 5e-6, speedup=2.0, ci=(1.9, 2.1)),
            _row("slow", 1, 2e-5, speedup=0.5, ci=(0.45, 0.55)),
            _row("same", 1, 1e-5, speedup=1.01, ci=(0.97, 1.04)),
            VariantRow("broken", 1, None, "failed", reason="build failed: RuntimeError: x")]
    kinds = {f.variant: f.kind for f in findings(_result(rows, (1,))) if f.variant and f.variant != "eager"}
    assert kinds == {"fast": "faster", "slow": "slower", "same": "no-gain", "broken": "failed"}


def test_json_schema_and_plot(tmp_path):
    rows = [_row("eager", 1, 1e-4), _row("eager", 8, 3e-4), _row("bf16", 1, 2e-4, speedup=0.5, ci=(0.4, 0.6)),
            _row("bf16", 8, 5e-4, speedup=0.6, ci=(0.5, 0.7))]
    result = _result(rows, (1, 8), variants=("eager", "bf16"))
    d = json.loads(json.dumps(result.to_dict()))
    assert d["schema"] == VARIANTS_SCHEMA == "flopgap.variants/1"
    assert [(r["variant"], r["batch"]) for r in d["rows"]] == [("eager", 1), ("eager", 8), ("bf16", 1), ("bf16", 8)]
    assert d["rows"][1]["per_item_s"] == 3e-4 / 8
    path = plot_variants(result, tmp_path / "v.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nan_ci_is_unresolved_not_a_verdict():
    rows = [_row("eager", 32, 1.0), _row("compile", 32, 0.9, speedup=1.1, ci=(float("nan"), float("nan")))]
    rows[1].compiled, rows[1].first_call_s = True, 3.0
    out = findings(_result(rows, (32,), variants=("eager", "compile")))
    kinds = [f.kind for f in out if f.variant == "compile"]
    assert kinds == ["unresolved"]
    assert "raise --max-time" in out[0].text
    d = _result(rows, (32,)).to_dict()
    assert d["rows"][1]["speedup_ci"] == [None, None]  # JSON has no NaN
