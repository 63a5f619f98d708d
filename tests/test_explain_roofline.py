"""Roofline classification and findings on constructed cases, with a synthetic
machine profile (no dependence on real timings)."""

from __future__ import annotations

import pytest

from flopgap.explain import Bound
import torch
from torch import nn


def _timed(median, *, interrupted=False, disturbed=False, n=10, threads=2):
    """A rigorous timing of ``n`` samples all at ``median`` (no samples: ``None``)."""
    from flopgap.timing import Disturbance, Measurement, TimerOptions, TimingSpec

    spec = TimingSpec("m", (), "cpu", threads, TimerOptions())
    samples = [] if median is None else [median] * n
    dist = Disturbance(True, ("busy",)) if disturbed else Disturbance(False)
    return Measurement(spec, samples, 1, 0.0, 0, interrupted=interrupted, disturbance=dist)

from flopgap.count import count
from flopgap.explain import build_explanation, classify
from flopgap.explain._attribute import Attribution
from flopgap.machine import MachineProfile

# peak 100 GFLOP/s, memory 10 GB/s, cache 50 GB/s for <= 100 kB, 5 us per op, 1 us per module
PROFILE = MachineProfile.synthetic(peak=1e11, mem_bandwidth=1e10, cache_bandwidth=5e10, cache_bytes=100_000,
                                   dispatch_overhead_s=5e-6, module_overhead_s=1e-6)


class MatMul(nn.Module):
    def forward(self, a, b):
        return torch.mm(a, b)


class Add(nn.Module):
    def forward(self, a, b):
        return a + b


class TinyChain(nn.Module):
    def forward(self, x):
        for _ in range(20):
            x = torch.relu(x)
        return x


def _meta_count(module, *shapes):
    return count(module, tuple(torch.empty(s, device="meta") for s in shapes), meta=True)


def test_huge_matmul_is_compute_bound():
    res = _meta_count(MatMul(), (2048, 2048), (2048, 2048))
    (r,) = res.kernel_ops
    assert r.flops == 2 * 2048**3                      # 17,179,869,184
    assert r.bytes == 3 * 2048 * 2048 * 4              # two inputs + output, fp32
    roof = classify(r.flops, r.bytes, PROFILE)
    assert roof.t_compute == pytest.approx(2 * 2048**3 / 1e11)   # 0.1718 s
    assert roof.t_memory == pytest.approx(3 * 2048 * 2048 * 4 / 1e10)  # 5.03 ms
    assert roof.bound == "compute"
    assert roof.time == roof.t_compute


def test_large_elementwise_add_is_memory_bound():
    n = 2**24
    res = _meta_count(Add(), (n,), (n,))
    (r,) = res.kernel_ops
    assert r.flops == n
    assert r.bytes == 3 * n * 4                        # 201,326,592 B
    roof = classify(r.flops, r.bytes, PROFILE)
    assert roof.t_memory == pytest.approx(3 * n * 4 / 1e10)      # 20.1 ms > 0.17 ms compute
    assert roof.bound == "memory"


def test_chain_of_tiny_ops_is_overhead_bound():
    res = _meta_count(TinyChain(), (4,))
    assert len(res.kernel_ops) == 20
    for r in res.kernel_ops:
        roof = classify(r.flops, r.bytes, PROFILE)
        # 4 FLOPs -> 40 ps; 32 B in cache -> 0.64 ns; overhead 5 us
        assert roof.t_compute == pytest.approx(4 / 1e11)
        assert roof.t_memory == pytest.approx(32 / 5e10)
        assert roof.bound == "overhead"
        assert roof.time == 5e-6


def test_cache_bandwidth_used_only_when_bytes_fit():
    assert classify(0, 100_000, PROFILE).t_memory == pytest.approx(100_000 / 5e10)
    assert classify(0, 100_001, PROFILE).t_memory == pytest.approx(100_001 / 1e10)


def test_ties_go_to_compute_then_memory():
    assert classify(5e5, 5e4, PROFILE).bound == "compute"   # 5 us compute, 1 us memory, 5 us overhead
    flat = MachineProfile.synthetic(mem_bandwidth=5e10, cache_bytes=0, dispatch_overhead_s=5e-6)
    assert classify(0, 2.5e5, flat).bound == "memory"        # 250 kB / 50 GB/s = 5 us = the overhead


def test_dtype_picks_its_peak():
    prof = MachineProfile.synthetic(peak_flops={"fp32": 1e11, "bf16": 4e11, "int8": 8e11})
    assert classify(8e11, 0, prof, "bfloat16").t_compute == pytest.approx(2.0)
    assert classify(8e11, 0, prof, "qint8").t_compute == pytest.approx(1.0)
    assert classify(8e11, 0, prof, "float32").t_compute == pytest.approx(8.0)


def _explain(res, times, call_s, median_s=None):
    att = Attribution(times=times, launches=[0] * len(times), calls=5, call_s=call_s, ops_s=sum(t or 0 for t in times))
    return build_explanation(res, att, PROFILE, weight_bytes=0, batch=1,
                             measurement=_timed(call_s / 2 if median_s is None else median_s))


def test_time_outside_ops_beyond_the_profiler_cost_counts_as_overhead():
    res = _meta_count(MatMul(), (2048, 2048), (2048, 2048))
    # 0.1 s in the matmul of a 0.25 s profiled call whose rigorous median is 0.23 s:
    # 0.15 s outside ops, 0.02 s of it the profiler's -> 0.13 s of Python
    ex = _explain(res, [0.1], 0.25, median_s=0.23)
    assert ex.totals.outside_python_s == pytest.approx(0.13)
    assert ex.dominant == "overhead"               # 0.13 / 0.25 = 52% > 40% compute
    dom = ex.findings[0].numbers
    assert dom["share"] == pytest.approx(0.52) and dom["compute_share"] == pytest.approx(0.4)


def test_explanation_shares_and_overhead_finding_for_tiny_chain():
    res = _meta_count(TinyChain(), (4,))
    ex = _explain(res, [4e-6] * 20, 100e-6)            # 20 ops x 4 us = 80 us of a 100 us call
    assert ex.classes[Bound.OVERHEAD].ops == 20
    assert ex.classes[Bound.OVERHEAD].time_share == pytest.approx(0.8)
    assert ex.classes[Bound.COMPUTE].time_share == 0.0
    assert ex.totals.outside_s == pytest.approx(20e-6)
    assert ex.totals.profiler_overhead == pytest.approx(1.0)   # 100 us profiled vs 50 us measured
    assert ex.dominant == "overhead"
    ov = next(f for f in ex.findings if f.kind == "overhead")
    assert ov.numbers["ops"] == 20
    assert ov.numbers["ops_x_overhead_s"] == pytest.approx(20 * 5e-6)
    assert ov.numbers["ops_x_overhead_share"] == pytest.approx(1.0)
    assert ov.numbers["mean_overhead_op_s"] == pytest.approx(4e-6)
    # 20 us outside ops, but the profiler itself costs 100 - 50 = 50 us: no Python time left
    assert ex.totals.outside_python_s == 0.0
    batching = next(f for f in ex.findings if f.title.endswith("CUDA graphs"))
    assert batching.numbers["fixed_share"] == pytest.approx(0.8)
    assert all(f.numbers for f in ex.findings)


def test_explanation_compute_dominated_matmul():
    res = _meta_count(MatMul(), (2048, 2048), (2048, 2048))
    ex = _explain(res, [0.2], 0.201)
    assert ex.dominant == "compute"
    assert ex.classes[Bound.COMPUTE].flop_share == 1.0
    util = next(f for f in ex.findings if f.kind == "utilisation")
    # 17.18 GFLOP in 0.2 s = 85.9 GFLOP/s = 85.9% of 100 GFLOP/s
    assert util.numbers["gemm_efficiency"] == pytest.approx(2 * 2048**3 / 0.2 / 1e11)
    assert util.numbers["below_25pct_ops"] == 0
    assert not any(f.kind == "overhead" for f in ex.findings)


def test_explanation_memory_finding_for_large_add():
    n = 2**24
    res = _meta_count(Add(), (n,), (n,))
    ex = _explain(res, [0.025], 0.026)
    assert ex.dominant == "memory"
    mem = next(f for f in ex.findings if f.kind == "memory")
    assert mem.numbers["bytes_per_flop"] == pytest.approx(12.0)   # 12 B per 1 FLOP
    assert mem.numbers["memory_bound_share"] == pytest.approx(0.025 / 0.026)
    assert mem.ops[0].op == "aten.add.Tensor"


def test_unmatched_record_is_reported_not_zeroed():
    res = _meta_count(TinyChain(), (4,))
    times = [4e-6] * 19 + [None]
    ex = _explain(res, times, 100e-6)
    assert ex.totals.unmatched_records == 1
    assert ex.ops[-1].time_s is None and ex.ops[-1].share is None


def test_to_dict_schema():
    res = _meta_count(TinyChain(), (4,))
    d = _explain(res, [4e-6] * 20, 100e-6).to_dict()
    assert d["schema"] == "flopgap.explain/2"
    assert d["prediction"]["schema"] == "flopgap.predict/3"
    assert d["machine"]["source"] == "synthetic"
    assert len(d["ops"]) == 20 and {"time_s", "bound", "predicted_s", "efficiency"} <= set(d["ops"][0])


def test_page_fault_finding_arithmetic():
    res = _meta_count(TinyChain(), (4,))
    att = Attribution(times=[4e-6] * 20, launches=[0] * 20, calls=5, call_s=100e-6, ops_s=80e-6,
                      page_faults_per_call=10.0)
    prof = MachineProfile.synthetic()
    prof.page_fault_s = 1e-6
    ex = build_explanation(res, att, prof, measurement=_timed(50e-6))
    pf = next(f for f in ex.findings if f.title.endswith("page faults"))
    # 10 faults x 1 us = 10 us of the 50 us median
    assert pf.numbers["page_faults_s"] == pytest.approx(10e-6)
    assert pf.numbers["page_faults_share"] == pytest.approx(0.2)
    att.page_faults_per_call = 1.0   # 1 us = 2%: below the 5% threshold, not shown
    ex = build_explanation(res, att, prof, measurement=_timed(50e-6))
    assert not any(f.title.endswith("page faults") for f in ex.findings)


def test_interrupted_timing_is_kept_and_an_unknown_median_reconciles_nothing():
    res = _meta_count(MatMul(), (64, 64), (64, 64))
    att = Attribution(times=[0.1], launches=[0], calls=5, call_s=0.25, ops_s=0.1)
    ex = build_explanation(res, att, PROFILE, measurement=_timed(0.2, interrupted=True))
    assert ex.totals.interrupted and ex.totals.measured_median_s == 0.2
    assert ex.totals.profiler_overhead == pytest.approx(0.25)
    # Ctrl-C before any sample: no median, so no overhead or error against it
    ex = build_explanation(res, att, PROFILE, measurement=_timed(None, interrupted=True))
    t = ex.totals
    assert t.interrupted and t.measured_median_s is None and t.profiler_overhead is None
    assert t.prediction_error is None and t.outside_python_s == pytest.approx(0.15)
    assert not build_explanation(res, att, PROFILE).totals.interrupted


def test_weight_bytes_include_packed_int8_weights():
    import warnings

    from torch.ao.quantization import quantize_dynamic

    from flopgap.explain import weight_bytes

    lin = nn.Sequential(nn.Linear(16, 8))
    assert weight_bytes(lin) == (16 * 8 + 8) * 4                     # float32 weight and bias
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(lin, dtype=torch.qint8)
    assert list(q.parameters()) == []                                # hidden from parameters()
    assert weight_bytes(q) == 16 * 8 * 1 + 8 * 4                     # int8 weight, float32 bias
    shared = nn.Sequential(lin[0], lin[0])
    assert weight_bytes(shared) == weight_bytes(lin)                 # a shared layer counts once


def test_cuda_gpu_idle_share_and_finding():
    # a CUDA attribution: 20 ops, 4 us each on the host, 1 us of kernels each -> 20 us of
    # kernels in a 100 us call: the GPU waits 80% of it for 25 launches of 8 us
    res = _meta_count(TinyChain(), (4,))
    prof = MachineProfile.synthetic(peak=1e11, mem_bandwidth=1e10, cache_bandwidth=5e10, cache_bytes=100_000,
                                    dispatch_overhead_s=5e-6, module_overhead_s=1e-6)
    prof.launch_latency_s = 8e-6
    att = Attribution(times=[4e-6] * 20, launches=[1] * 19 + [6], calls=5, call_s=100e-6, ops_s=80e-6,
                      device="cuda", device_times=[1e-6] * 20, device_s=20e-6)
    ex = build_explanation(res, att, prof, measurement=_timed(90e-6))
    assert ex.totals.device_s == pytest.approx(20e-6)
    assert ex.totals.gpu_idle_share == pytest.approx(0.8)
    assert [x.device_time_s for x in ex.ops if not x.free] == [1e-6] * 20
    idle = next(f for f in ex.findings if f.kind == "gpu_idle")
    assert idle.numbers == {"device_s": pytest.approx(20e-6), "call_s": pytest.approx(100e-6),
                               "gpu_idle_share": pytest.approx(0.8), "kernel_launches": 25,
                               "launch_latency_s": 8e-6}
    assert "80%" in idle.text and "launch-bound" in idle.text


def test_cpu_explanation_has_no_gpu_finding():
    res = _meta_count(TinyChain(), (4,))
    ex = _explain(res, [4e-6] * 20, 100e-6)
    assert ex.totals.device_s is None and ex.totals.gpu_idle_share is None
    assert not any(f.kind == "gpu_idle" for f in ex.findings)


class _ScatteredAdd(nn.Module):
    def forward(self, x, y):
        return x.transpose(0, 1) + y


def test_scattered_reads_get_a_layout_finding_from_five_percent_of_the_call():
    res = _meta_count(_ScatteredAdd(), (64, 64), (64, 64))
    (add,) = res.kernel_ops
    assert add.inner_run == 1
    times = [0.0 if r.is_free else 10e-6 for r in res.ops]
    ex = _explain(res, times, 100e-6)           # the add: 10% of the call
    g = next(f for f in ex.findings if f.title == "Opportunity: scattered reads (layout)")
    assert g.numbers == {"gather_ops": 1, "gather_s": pytest.approx(10e-6), "gather_share": pytest.approx(0.1),
                         "shortest_run": 1}
    assert g.ops[0].op == "aten.add.Tensor" and next(o for o in ex.ops if not o.free).inner_run == 1
    ex = _explain(res, times, 1e-3)             # 1%: below the threshold
    assert not any(f.title.startswith("Opportunity: scattered") for f in ex.findings)
