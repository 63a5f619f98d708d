"""Variants: int8 on a bare Linear, no-op detection, failures that do not stop the sweep."""

from __future__ import annotations

import warnings

import pytest

from flopgap.timing import FakeClock, FakeLoad, TimerOptions
import torch
from torch import nn

from flopgap.errors import UsageError
from flopgap.models import LoadedModel, InputSpec
from flopgap.variants import Built, Variant, get_variant, register_variant, run_variants, torchao_status
from flopgap.variants._probe import output_error, tree_signature

# the sweep's logic, not the machine: a fake clock (every reading 10 us later), 1-call
# blocks, stop at the first CI check, and a quiet fake machine for the sentinel
FAST = {"timer": TimerOptions(max_time=0.2, precision=0.1, min_time=0, min_block_s=0),
        "clock": FakeClock(read_s=1e-5), "load": FakeLoad.quiet()}


def _bare_linear() -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel("bare-linear", nn.Linear(1000, 10).eval(), (InputSpec((1, 1000)),), "test")


def _identity(module, inputs):
    return Built(module, module, notes=["changes nothing on purpose"])


def _boom(module, inputs):
    raise RuntimeError("no int8 kernel for this op\nsecond line that must not show")


IDENTITY = Variant("identity", "returns the eager module untouched", _identity)
BOOM = Variant("boom", "raises while building", _boom)


def test_quantize_dynamic_on_bare_linear_is_the_seed_bug():
    # the seed's example 3: quantize_dynamic swaps children only, the root stays float
    lin = nn.Linear(1000, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        out = quantize_dynamic(lin, {nn.Linear}, dtype=torch.qint8)
    assert type(out) is nn.Linear and torch.equal(out.weight, lin.weight)  # a float copy


def test_int8_legacy_quantizes_a_bare_linear():
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    loaded = _bare_linear()
    x = torch.randn(1, 1000)
    built = get_variant("int8-legacy").build(nn.Linear(1000, 10).eval().requires_grad_(False), (x,))
    assert isinstance(built.fn, DynamicLinear)
    assert any("deprecated" in n for n in built.notes)
    result = run_variants(loaded, variants=["int8-legacy"], **FAST)
    row = result.row("int8-legacy")
    assert row.status == "ok"
    assert 0 < row.max_abs_err and row.max_rel_err < 0.05  # differs from eager, within int8 error
    assert row.op_changes == {"added": {"quantized.linear_dynamic.default": 1}, "removed": {"aten.linear.default": 1}}


def test_int8_dynamic_quantizes_a_bare_linear():
    loaded = _bare_linear()
    result = run_variants(loaded, variants=["int8-dynamic"], **FAST)
    row = result.row("int8-dynamic")
    assert row.status == "ok"
    assert 0 < row.max_abs_err and row.max_rel_err < 0.05
    usable, _ = torchao_status()
    if usable:  # torchao: the root Linear keeps its class, its weight becomes an int8 tensor subclass
        built = get_variant("int8-dynamic").build(nn.Linear(1000, 10).eval(), (torch.randn(1, 1000),))
        assert type(built.module) is nn.Linear and type(built.module.weight).__name__ == "Int8Tensor"
        assert "aten._int_mm.default" in row.op_changes["added"]
        assert "1 of 1 Linear layer(s) quantized (the root layer itself)" in row.notes[0]
    else:  # torch.ao fallback, with the reason and the deprecation stated
        assert row.op_changes["added"] == {"quantized.linear_dynamic.default": 1}
        assert row.notes[0].startswith("torchao unusable")


def test_noop_flagged_on_identity_not_on_real_change():
    loaded = _bare_linear()
    result = run_variants(loaded, variants=[IDENTITY, "bf16"], **FAST)
    assert [r.variant for r in result.rows] == ["eager", "identity", "bf16"]
    ident, bf16 = result.row("identity"), result.row("bf16")
    assert ident.status == "no-op"
    assert ident.reason == "did not change the model: module tree and op sequence identical to eager"
    assert ident.max_abs_err == 0.0
    assert bf16.status == "ok" and bf16.reason == ""
    assert any(f["kind"] == "no-op" and f["variant"] == "identity" for f in result.findings)


def test_channels_last_on_mlp_is_a_noop():
    result = run_variants(_bare_linear(), variants=["channels_last"], **FAST)
    assert result.row("channels_last").status == "no-op"


def test_failing_variant_does_not_stop_the_others():
    loaded = _bare_linear()
    result = run_variants(loaded, variants=[BOOM, "int8-legacy", "compile-cudagraphs"], batches=(1, 2), **FAST)
    boom = [r for r in result.rows if r.variant == "boom"]
    assert [r.batch for r in boom] == [1, 2]
    assert all(r.status == "failed" for r in boom)
    assert boom[0].reason == "build failed: RuntimeError: no int8 kernel for this op"
    cg = result.row("compile-cudagraphs", batch=1)
    assert cg.status == "failed" and "need a CUDA device" in cg.reason
    assert [r.status for r in result.rows if r.variant in ("eager", "int8-legacy")] == ["ok"] * 4


def test_variant_failing_at_call_time_is_reported_with_its_phase():
    def build(module, inputs):
        def fn(*args):
            raise ValueError("unsupported op aten::foo")
        return Built(fn, None)

    result = run_variants(_bare_linear(), variants=[Variant("bad-call", "raises when called", build)], **FAST)
    row = result.row("bad-call")
    assert row.status == "failed"
    assert row.reason == "first call: ValueError: unsupported op aten::foo"
    assert result.row("eager").status == "ok"


def test_interrupt_keeps_rows_already_measured():
    def build(module, inputs):
        def fn(*args):
            raise KeyboardInterrupt
        return Built(fn, None)

    result = run_variants(_bare_linear(), variants=[Variant("ctrl-c", "interrupts", build), "bf16"], **FAST)
    assert result.interrupted
    assert [r.variant for r in result.rows] == ["eager", "ctrl-c"]  # bf16 never started
    assert result.row("eager").status == "ok" and result.row("eager").latency_s > 0
    assert result.findings[0]["kind"] == "interrupted"


def test_unknown_variant_lists_known_ones():
    with pytest.raises(UsageError, match=r"unknown variant 'int4'; known: eager, int8-dynamic, int8-legacy, compile"):
        run_variants(_bare_linear(), variants=["int4"])


def test_bad_batch_is_a_usage_error():
    with pytest.raises(UsageError, match="batch sizes must be positive integers, got 0"):
        run_variants(_bare_linear(), batches=(0,))


def test_duplicate_registration_refused():
    with pytest.raises(ValueError, match="variant 'eager' is already registered"):
        register_variant(Variant("eager", "again", _identity))


def test_default_variants_follow_applies():
    from flopgap.variants import default_variants

    names = [v.name for v in default_variants(nn.Linear(4, 4))]
    assert "channels_last" not in names and "compile-cudagraphs" not in names
    assert names[:2] == ["eager", "int8-dynamic"] and "compile" in names
    assert "channels_last" in [v.name for v in default_variants(nn.Conv2d(3, 8, 3))]


def test_output_error_exact():
    # |[1, 2.5] - [1, 2]| max = 0.5; relative to max|eager| = 2: 0.25
    assert output_error(torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0])) == (0.5, 0.25)
    assert output_error((torch.zeros(2), torch.ones(2)), (torch.zeros(2), torch.ones(2))) == (0.0, 0.0)


def test_tree_signature_sees_dtype_and_layout():
    conv = nn.Conv2d(3, 8, 3)
    sig = tree_signature(conv)
    assert tree_signature(nn.Conv2d(3, 8, 3)) == sig  # same structure, other values
    assert tree_signature(conv.to(torch.bfloat16)) != sig
    assert tree_signature(nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)) != sig


def test_compile_tiny_linear():
    loaded = LoadedModel("tiny", nn.Linear(8, 8).eval(), (InputSpec((2, 8)),), "test")
    result = run_variants(loaded, variants=["compile"], **FAST)
    row = result.row("compile")
    assert row.status == "ok", row.reason
    assert row.compiled and row.first_call_s > 0 and row.ops is None
    assert row.max_abs_err < 1e-5
    assert any(f["kind"] == "compile-time" for f in result.findings)


def test_eager_count_failure_is_said_and_turns_no_op_detection_off(monkeypatch):
    import flopgap.count

    def broken_count(*args, **kwargs):
        raise RuntimeError("no formula machinery today")

    monkeypatch.setattr(flopgap.count, "count", broken_count)
    result = run_variants(_bare_linear(), variants=[IDENTITY], **FAST)
    assert result.settings["notes"] == [
        "eager count failed at batch 1: RuntimeError: no formula machinery today; no-op detection off"]
    row = result.row("identity")
    assert row.status == "ok"   # identical to eager, but nothing could show it
    assert any("no-op detection off" in n for n in row.notes)
    assert result.to_dict()["settings"]["notes"] == result.settings["notes"]


def test_output_error_never_hides_nan_as_zero():
    from flopgap.variants._probe import NonFiniteOutput

    nan, inf = float("nan"), float("inf")
    with pytest.raises(NonFiniteOutput, match="2 of 2 values are NaN or infinite where eager's are finite"):
        output_error(torch.tensor([nan, nan]), torch.tensor([1.0, 2.0]))
    with pytest.raises(NonFiniteOutput, match="output 1: 1 of 2"):
        output_error((torch.ones(2), torch.tensor([1.0, inf])), (torch.ones(2), torch.ones(2)))
    # where eager itself is not finite the variant is not held to it; the rest is compared:
    # |3 - 2| = 1 over the finite elements, relative to max|eager| there = 2
    assert output_error(torch.tensor([nan, 3.0]), torch.tensor([inf, 2.0])) == (1.0, 0.5)


def test_a_variant_returning_nan_is_a_failed_row():
    def build(module, inputs):
        return Built(lambda *args: torch.full((1, 10), float("nan")), None)

    result = run_variants(_bare_linear(), variants=[Variant("all-nan", "fp16 overflow", build)], **FAST)
    row = result.row("all-nan")
    assert row.status == "failed" and row.max_abs_err is None
    assert row.reason == "outputs: 10 of 10 values are NaN or infinite where eager's are finite"
