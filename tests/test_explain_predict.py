"""Prediction arithmetic on synthetic profiles (no timing)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from flopgap.count import count
from flopgap.explain import predict
from flopgap.explain._predict import Predictor
from flopgap.machine import CalKey, MachineProfile
from flopgap.machine._keys import op_features, op_key


def _meta_count(module, *shapes):
    return count(module.to("meta"), tuple(torch.empty(s, device="meta") for s in shapes), meta=True)


def test_roofline_only_prediction_is_the_sum_plus_module_calls():
    prof = MachineProfile.synthetic(peak=1e11, mem_bandwidth=1e10, cache_bandwidth=5e10, cache_bytes=100_000,
                                    dispatch_overhead_s=5e-6, module_overhead_s=1e-6)
    res = _meta_count(nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 100)), (1, 100))
    pred = predict(res, prof)
    assert not pred.calibrated
    # each Linear(100,100) at batch 1: 40,400 B read (x, W, b) + 400 B written -> 0.82 us from cache;
    # 20,000 FLOPs -> 0.2 us; so every op costs the 5 us overhead
    assert [o["method"] for o in pred.ops] == ["roofline"] * 3
    assert [o["predicted_s"] for o in pred.ops] == [5e-6] * 3
    assert pred.module_calls == 4            # the Sequential + 3 children
    assert pred.latency_s == pytest.approx(3 * 5e-6 + 4 * 1e-6)
    assert pred.roofline_s == pytest.approx(3 * 5e-6)
    d = pred.to_dict()
    assert d["schema"] == "flopgap.predict/3" and d["by_method"]["roofline"]["ops"] == 3


def test_cuda_family_overheads_are_the_floor_of_an_uncalibrated_prediction():
    # a CUDA-like profile: no calibration, host cost 30 us per linear and 9 us per relu;
    # a huge matmul family op above that floor keeps its roofline time
    prof = MachineProfile.synthetic(peak=1e11, mem_bandwidth=1e10, cache_bandwidth=5e10, cache_bytes=100_000,
                                    dispatch_overhead_s=5e-6, module_overhead_s=1e-6)
    prof.op_overhead_s = {"matmul": 30e-6, "pointwise": 9e-6}
    res = _meta_count(nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 2000)), (1, 100))
    pred = predict(res, prof)
    # the last linear reads W, b and x and writes y: 816,400 B, 81.6 us at 10 GB/s, above the 30 us floor
    big = (2000 * 100 + 2000 + 100) * 4 + 2000 * 4
    assert [o["method"] for o in pred.ops] == ["op overhead", "op overhead", "roofline"]
    assert [o["predicted_s"] for o in pred.ops][:2] == [30e-6, 9e-6]
    assert pred.ops[2]["predicted_s"] == pytest.approx(big / 1e10)
    assert pred.latency_s == pytest.approx(30e-6 + 9e-6 + big / 1e10 + 4 * 1e-6)
    d = MachineProfile.from_dict(prof.to_dict())
    assert d.op_overhead_s == {"matmul": 30e-6, "pointwise": 9e-6}


def test_an_uncalibrated_profile_with_chains_fits_scale_and_per_op_cost_on_its_floors():
    # CUDA profiles have chains but no calibration: T_chain = s x sum(floors) + c x ops
    # (+ module calls x module overhead); the per-byte and cold-memory terms stay 0
    from dataclasses import asdict

    prof = MachineProfile.synthetic(peak=1e11, mem_bandwidth=1e10, cache_bandwidth=5e10, cache_bytes=100_000,
                                    dispatch_overhead_s=5e-6, module_overhead_s=1e-6)
    prof.op_overhead_s = {"matmul": 30e-6, "pointwise": 9e-6}
    chains = []
    # linears only, relus only, and both: the floor per op differs, so s and c separate
    for i, (w, d, block) in enumerate(((64, 3, ("linear",)), (128, 6, ("relu",)), (256, 2, ("linear", "relu")),
                                       (32, 4, ("linear", "relu")))):
        net = nn.Sequential(*[nn.Linear(w, w) if k == "linear" else nn.ReLU() for _ in range(d) for k in block])
        res = _meta_count(net, (1, w))
        # every linear and relu at its family's floor (the 256x256 linear's roofline: 26 us)
        floors = d * sum(30e-6 if k == "linear" else 9e-6 for k in block)
        n = sum(1 for r in res.ops if not r.is_free)
        calls = len(net) + 1
        t = 1.25 * floors + 4e-6 * n + calls * 1e-6
        chains.append({"label": f"c{i}", "ops": [asdict(r) for r in res.ops], "module_calls": calls,
                       "seconds": t, "seconds_min": t})
    prof.chains = chains
    p = Predictor(prof)
    assert not p.calibrated
    assert p.scale == pytest.approx(1.25) and p.per_op_s == pytest.approx(4e-6)
    assert p.per_byte_s == 0.0 and p.cold_memory_extra == 0.0
    res = _meta_count(nn.Sequential(nn.Linear(100, 100), nn.ReLU()), (1, 100))
    pred = predict(res, prof)
    assert [o["method"] for o in pred.ops] == ["op overhead", "op overhead"]
    assert pred.latency_s == pytest.approx(1.25 * 39e-6 + 2 * 4e-6 + 3 * 1e-6)
    assert pred.scale == pytest.approx(1.25) and len(pred.chain_fit) == 4


def _knn_sample(key, feats, flops, seconds, op="aten.linear.default"):
    return {"label": "x", "op": op, "key": key, "features": feats, "flops": flops, "bytes": 0, "seconds": seconds}


def test_knn_prediction_is_overhead_plus_flops_over_rate():
    # every case runs at 1e11 FLOP/s net of the 2 us fixed cost of the smallest case
    # (the smallest case's own rate: 2e4 FLOPs / (0.1 * 2 us) = 1e11)
    cal = [_knn_sample("matmul", [0, 3, 3], 2e4, 2e-6),
           _knn_sample("matmul", [6, 10, 10], 1e9, 2e-6 + 1e-2),
           _knn_sample("matmul", [0, 10, 10], 1e8, 2e-6 + 1e-3)]
    prof = MachineProfile.synthetic(calibration=cal, module_overhead_s=0.0)
    res = _meta_count(nn.Linear(512, 256), (4, 512))
    (r,) = res.kernel_ops
    assert str(op_key(r)) == "matmul"
    assert op_features(r) == [2.0, 9.0, 8.0]          # log2 of M=4, K=512, N=256
    t, method = Predictor(prof).op_time(r)
    assert method == "knn:matmul"
    assert t == pytest.approx(2e-6 + r.flops / 1e11)


def test_curve_prediction_interpolates_log_time_over_log_bytes():
    op = "aten.relu.default"
    cal = [{"label": "a", "op": op, "key": op, "features": [0], "flops": 0, "bytes": 1_000, "seconds": 1e-6},
           {"label": "b", "op": op, "key": op, "features": [0], "flops": 0, "bytes": 1_000_000, "seconds": 1e-4}]
    p = Predictor(MachineProfile.synthetic(calibration=cal))
    assert p._curve_time(CalKey.parse(op), 1e5) == pytest.approx(1e-6 * 100 ** (2 / 3))   # 2/3 of the way in log bytes
    assert p._curve_time(CalKey.parse(op), 2e6) == pytest.approx(2e-4)                   # beyond: scales with bytes
    assert p._curve_time(CalKey.parse(op), 10) == pytest.approx(1e-6)                    # below: the fixed cost
    res = _meta_count(nn.ReLU(), (1, 25_000))                              # 100 kB read + 100 kB written
    (r,) = res.kernel_ops
    assert r.bytes == 200_000
    assert p.op_time(r) == (pytest.approx(1e-6 * 10 ** (2 * math.log10(200) / 3)), "curve")


def test_curves_interpolate_between_channel_counts():
    op = "aten.batch_norm.default"
    cal = [{"label": "x", "op": op, "key": op, "features": [0, c], "flops": 0, "bytes": b, "seconds": t}
           for c, pts in ((4.0, ((1e3, 1e-6), (1e6, 1e-4))), (8.0, ((1e3, 4e-6), (1e6, 4e-4))))
           for b, t in pts]
    p = Predictor(MachineProfile.synthetic(calibration=cal))
    assert p._curve_time(CalKey.parse(op), 1e3, 4.0) == pytest.approx(1e-6)
    assert p._curve_time(CalKey.parse(op), 1e3, 6.0) == pytest.approx(2e-6)    # halfway in log2 channels: geometric mean
    assert p._curve_time(CalKey.parse(op), 1e6, 10.0) == pytest.approx(4e-4)   # beyond the widest: clamped
    assert p._curve_time(CalKey.parse(op), 1e6, 2.0) == pytest.approx(1e-4)


def test_conv_keys_from_shapes():
    dense = _meta_count(nn.Conv2d(16, 32, 3, padding=1), (1, 16, 28, 28)).kernel_ops[0]
    dw = _meta_count(nn.Conv2d(32, 32, 3, padding=1, groups=32), (1, 32, 28, 28)).kernel_ops[0]
    grouped = _meta_count(nn.Conv2d(64, 64, 3, stride=2, padding=1, groups=4), (1, 64, 28, 28)).kernel_ops[0]
    assert (str(op_key(dense)), str(op_key(dw)), str(op_key(grouped))) == ("conv:dense", "conv:depthwise", "conv:grouped")
    # cin/g, cout/g, out pixels, kernel, stride area, batch, groups (log2)
    assert op_features(grouped) == [4.0, 4.0, math.log2(14 * 14), math.log2(9), 2.0, 0.0, 2.0]


def test_uncalibrated_memory_op_falls_back_to_the_add_curve():
    add = "aten.add.Tensor"
    cal = [{"label": "a", "op": add, "key": add, "features": [0], "flops": 0, "bytes": 100, "seconds": 1e-6},
           {"label": "b", "op": add, "key": add, "features": [0], "flops": 0, "bytes": 1e8, "seconds": 1e-2}]
    p = Predictor(MachineProfile.synthetic(calibration=cal))
    r = _meta_count(nn.Tanh(), (1, 1000)).kernel_ops[0]      # tanh: pointwise, not calibrated
    assert r.family == "pointwise"
    t, method = p.op_time(r)
    assert method == "curve:add"
    assert t == pytest.approx(p._curve_time(CalKey.parse(add), r.bytes))


def test_sequence_fit_recovers_scale_per_op_per_byte_and_cold_memory_terms_from_chains():
    from dataclasses import asdict

    from flopgap.explain._predict import cold_share, handoff_bytes, is_memory_class, weights_are_cold

    cal = [_knn_sample("matmul", [0, 3, 3], 2e4, 2e-6),
           _knn_sample("matmul", [0, 8, 8], 1e9, 2e-6 + 1e-2)]          # 1e11 FLOP/s net of 2 us
    llc = 8 * 2**20                                                     # cold beyond 4 MiB per call
    base_prof = MachineProfile.synthetic(calibration=cal)
    base_prof.llc_bytes = llc
    base = Predictor(base_prof)
    nets = [(nn.Sequential(*[nn.Linear(w, w) for _ in range(d)]), (1, w)) for w, d in ((64, 4), (256, 8), (1024, 2))]
    nets += [(nn.Sequential(*[nn.ReLU() for _ in range(d)]), (1, 2**18)) for d in (2, 6)]  # 1 MiB per op
    chains = []
    for module, shape in nets:
        res = _meta_count(module, shape)
        cold = weights_are_cold(res.ops, base_prof)
        times = [base.op_time(r, cold)[0] for r in res.ops]
        p = sum(times)
        m = cold_share(res.ops, base_prof) * sum(t for r, t in zip(res.ops, times) if is_memory_class(r))
        calls = len(module) + 1
        n = sum(1 for r in res.ops if not r.is_free)
        a = sum(handoff_bytes(r) for r in res.ops)
        # measured = 1.5 x the per-op sum + 3 us per op + 0.1 ns per handed-over byte
        #            + 0.5 x the memory-class ops x the chain's cold share + module calls x 1 us
        t = 1.5 * p + 3e-6 * n + 1e-10 * a + 0.5 * m + calls * 1e-6
        chains.append({"label": f"net {shape}", "ops": [asdict(r) for r in res.ops], "module_calls": calls,
                       "seconds": t, "seconds_min": t})
    # which chains are cold: the 8 MiB MLP (no memory-class op) and the six 1 MiB ReLUs
    assert [weights_are_cold(_meta_count(mm, sh).ops, base_prof) for mm, sh in nets] == [False, False, True, False,
                                                                                          True]
    assert handoff_bytes(_meta_count(nn.Linear(256, 256), (1, 256)).kernel_ops[0]) == 256 * 4 + 256 * 4  # x, bias
    # pools ran at their single-op time inside models: no handoff, not memory-class
    pool = _meta_count(nn.MaxPool2d(3, 2, 1), (1, 64, 112, 112)).kernel_ops[0]
    bn = _meta_count(nn.BatchNorm2d(64).eval(), (1, 64, 56, 56)).kernel_ops[0]
    assert handoff_bytes(pool) == 0 and not is_memory_class(pool)
    import torch.nn.functional as F
    from flopgap.machine._grid import _Call

    att = _meta_count(_Call(lambda q, k, v: F.scaled_dot_product_attention(q, k, v)), *[(1, 3, 197, 64)] * 3)
    assert not is_memory_class(next(o for o in att.ops if o.family == "attention"))   # it runs at its FLOP rate
    assert handoff_bytes(bn) == 64 * 56 * 56 * 4 + 4 * 64 * 4 and is_memory_class(bn)  # x and its 4 per-channel vectors
    prof = MachineProfile.synthetic(calibration=cal, chains=chains, module_overhead_s=1e-6)
    prof.llc_bytes = llc
    pred = Predictor(prof)
    assert pred.scale == pytest.approx(1.5) and pred.per_op_s == pytest.approx(3e-6)
    assert pred.per_byte_s == pytest.approx(1e-10) and pred.cold_memory_extra == pytest.approx(0.5)
    hot = _meta_count(nn.Sequential(nn.Linear(128, 128), nn.Linear(128, 128)), (1, 128))
    out = predict(hot, prof)
    ops_sum = sum(base.op_time(r)[0] for r in hot.ops)
    handed = sum(handoff_bytes(r) for r in hot.ops)
    assert out.latency_s == pytest.approx(1.5 * ops_sum + 2 * 3e-6 + 1e-10 * handed + 3 * 1e-6)
    relus = _meta_count(nn.Sequential(*[nn.ReLU() for _ in range(5)]), (1, 2**18))   # 5 MiB written: cold
    relu_t = [base.op_time(r, True)[0] for r in relus.ops]
    out = predict(relus, prof)
    k = cold_share(relus.ops, prof)                                   # 5 MiB of an 8 MiB cache: partly cold
    assert 0 < k < 1
    assert out.latency_s == pytest.approx((1.5 + 0.5 * k) * sum(relu_t) + 5 * 3e-6
                                          + 1e-10 * sum(handoff_bytes(r) for r in relus.ops) + 6 * 1e-6)
    fit = out.to_dict()["sequence_fit"]
    assert out.cold and fit["cold_model"] and not predict(hot, prof).cold
    assert fit["scale"] == pytest.approx(1.5) and fit["per_byte_s"] == pytest.approx(1e-10)
    assert fit["cold_memory_extra"] == pytest.approx(0.5)
    # with two chains the per-byte and cold-memory terms cannot be told apart: they stay 0
    two = Predictor(MachineProfile.synthetic(calibration=cal, chains=chains[:2], module_overhead_s=1e-6))
    assert two.per_byte_s == 0.0 and two.cold_memory_extra == 0.0


def test_cold_weights_floor_applies_above_l2_and_only_for_models_beyond_the_llc():
    from flopgap.explain._predict import weights_are_cold

    cal = [_knn_sample("matmul", [0, 3, 3], 2e4, 2e-6)]
    prof = MachineProfile.synthetic(calibration=cal, mem_bandwidth=1e10)
    prof.l2_bytes, prof.llc_bytes = 1_000_000, 16_000_000   # cold beyond 8 MB of weights
    p = Predictor(prof)
    small = _meta_count(nn.Linear(256, 256), (1, 256)).kernel_ops[0]      # 262 kB of weights: in L2
    big = _meta_count(nn.Linear(1024, 1024), (1, 1024)).kernel_ops[0]     # 4.19 MB: streamed from memory
    assert p.op_time(small, cold_weights=True)[0] == pytest.approx(2e-6 + small.flops / 1e11)
    assert p.op_time(big, cold_weights=True)[0] == pytest.approx(2e-6 + 1024 * 1024 * 4 / 1e10)  # 419 us
    assert p.op_time(big, cold_weights=False)[0] == pytest.approx(2e-6 + big.flops / 1e11)      # 21 us
    one = _meta_count(nn.Sequential(nn.Linear(1024, 1024)), (1, 1024))                   # 4.2 MB <= 8 MB
    two = _meta_count(nn.Sequential(nn.Linear(1024, 1024), nn.Linear(1024, 1024)), (1, 1024))  # 8.4 MB
    assert not weights_are_cold(one.ops, prof) and weights_are_cold(two.ops, prof)


def test_byte_only_ops_get_one_curve_over_all_calibrated_widths():
    # gelu was timed at two base widths (16 channels for small sizes, 64 for large): its
    # time depends on bytes only, so both are one curve; a [1, 28, 28, 768] input
    # (channel dimension read as 28) must land on that curve, not between two partial ones
    op = "aten.gelu.default"
    cal = [{"label": f"gelu {b} c{c}", "op": op, "key": op, "features": [0, c], "flops": 0, "bytes": b,
            "seconds": t, "per_channel": False}
           for c, b, t in ((4.0, 1e3, 1e-6), (4.0, 1e4, 2e-6), (6.0, 1e5, 1e-5), (6.0, 1e7, 1e-3))]
    p = Predictor(MachineProfile.synthetic(calibration=cal))
    assert list(p.curves[CalKey(op)]) == [0.0]
    r = _meta_count(nn.GELU(), (1, 28, 28, 768)).kernel_ops[0]
    assert r.bytes == 2 * 4 * 28 * 28 * 768
    t, method = p.op_time(r)
    assert method == "curve"
    # between the 1e5 and 1e7 points, log-linear: log t = log 1e-5 + 2 * (log b - log 1e5) / 2
    assert t == pytest.approx(1e-5 * r.bytes / 1e5)


def _weight_samples() -> list[dict]:
    # hot: 2 us fixed cost, 1e11 FLOP/s; cold: 8 us fixed cost, 2.5e10 FLOP/s (each case's
    # rate net of its table's fixed cost; the smallest case's own: F / (0.1 t))
    base = {"op": "aten.linear.default", "key": "matmul", "bytes": 0}
    return [{**base, "label": "a", "features": [0, 3, 3], "flops": 2e4, "seconds": 2e-6},
            {**base, "label": "b", "features": [0, 10, 10], "flops": 2e6, "seconds": 2e-6 + 2e-5},
            {**base, "label": "a cold", "features": [0, 3, 3], "flops": 2e4, "seconds": 8e-6, "cold": True},
            {**base, "label": "b cold", "features": [0, 10, 10], "flops": 2e6, "seconds": 8e-6 + 8e-5,
             "cold": True}]


def test_cold_weight_cases_predict_ops_of_models_whose_weights_exceed_the_cache():
    prof = MachineProfile.synthetic(calibration=_weight_samples())
    prof.llc_bytes = 8 * 2**20
    p = Predictor(prof)
    assert {str(k) for k in p.knn} == {"matmul", "matmul cold"}
    small = _meta_count(nn.Linear(1000, 1000), (1, 1000))            # 4.0 MB of weights: fits half of 8 MiB
    big = _meta_count(nn.Sequential(nn.Linear(1024, 1024), nn.Linear(1024, 1024)), (1, 1024))  # 8 MiB: not
    # small weights, but 4.2 MB of activations written per call besides them: cold too
    busy = _meta_count(nn.Sequential(nn.Linear(1000, 1000), nn.Unflatten(1, (1, 1000)), nn.Upsample(scale_factor=1050)),
                       (1, 1000))
    from flopgap.explain._predict import weights_are_cold

    assert not weights_are_cold(small.ops, prof) and weights_are_cold(big.ops, prof)
    assert weights_are_cold(busy.ops, prof)
    r = small.kernel_ops[0]
    hot_t, hot_m = p.op_time(r, cold_weights=False)
    cold_t, cold_m = p.op_time(r, cold_weights=True)
    assert (hot_m, cold_m) == ("knn:matmul", "knn:matmul cold")
    assert hot_t == pytest.approx(2e-6 + r.flops / 1e11)
    assert cold_t == pytest.approx(8e-6 + r.flops / 2.5e10)
    # a partly cold model (footprint between half a cache and a whole one): weighed by its share
    part_t, part_m = p.op_time(r, cold_weights=0.25)
    assert part_m == "knn:matmul cold" and part_t == pytest.approx(0.25 * cold_t + 0.75 * hot_t)
    # 1024 -> 1024 is case "b"'s own shape: its rate alone, and the method says so
    assert predict(big, prof).ops[0]["method"] == "own:matmul cold"


def test_page_faults_of_blocks_above_32_mib_are_predicted_per_call():
    from flopgap.explain._predict import fault_s

    prof = MachineProfile.synthetic()
    prof.page_fault_s = 1e-6
    # a 1024x1024x3x3 fp32 weight is 36 MiB: oneDNN reorders it into a fresh block every call
    big = _meta_count(nn.Conv2d(1024, 1024, 3, padding=1, bias=False), (1, 1024, 7, 7)).kernel_ops[0]
    assert fault_s(big, prof) == pytest.approx(1024 * 1024 * 9 * 4 / 4096 * 1e-6)
    small = _meta_count(nn.Conv2d(512, 512, 3, padding=1, bias=False), (1, 512, 7, 7)).kernel_ops[0]
    assert fault_s(small, prof) == 0.0                                # 9 MiB: from the heap
    relu = _meta_count(nn.ReLU(), (1, 16, 1024, 1024)).kernel_ops[0]   # 64 MiB out
    assert fault_s(relu, prof) == pytest.approx(64 * 2**20 / 4096 * 1e-6)
    inplace = _meta_count(nn.ReLU(inplace=True), (1, 16, 1024, 1024)).kernel_ops[0]
    assert inplace.op == "aten.relu_.default" and fault_s(inplace, prof) == 0.0
    prof.page_fault_s = None                                          # not measured (CUDA, synthetic)
    assert fault_s(big, prof) == 0.0
    prof.page_fault_s = 1e-6
    conv = _meta_count(nn.Conv2d(1024, 1024, 3, padding=1, bias=False), (1, 1024, 7, 7))
    assert predict(conv, prof).ops[0]["page_faults_s"] == pytest.approx(9216e-6)
    # timed at its own shape, the case paid the faults already: none added
    from flopgap.machine._grid import exact_case

    own = exact_case(conv.kernel_ops[0])
    cal = [{"label": own.id, "op": "aten.conv2d.default", "key": "conv:dense", "features": list(own.features),
            "flops": conv.kernel_ops[0].flops, "bytes": 0, "seconds": 5e-3}]
    with_own = MachineProfile.synthetic(calibration=cal)
    with_own.page_fault_s = 1e-6
    op = predict(conv, with_own).ops[0]
    assert op["method"] == "own:conv:dense" and op["page_faults_s"] == 0.0


def test_pool_keys_carry_the_window_and_fall_back_to_the_nearest_calibrated_one():
    from flopgap.machine._keys import pool_window

    k2 = _meta_count(nn.MaxPool2d(2, 2), (1, 64, 56, 56)).kernel_ops[0]
    k3 = _meta_count(nn.MaxPool2d(3, 2, 1), (1, 64, 56, 56)).kernel_ops[0]
    adaptive = _meta_count(nn.AdaptiveAvgPool2d(1), (1, 64, 7, 7)).kernel_ops[0]
    assert (pool_window(k2), pool_window(k3), pool_window(adaptive)) == (4, 9, None)
    assert (str(op_key(k2)), str(op_key(k3))) == (f"{k2.op}:w4", f"{k3.op}:w9")
    assert str(op_key(adaptive)) == adaptive.op
    key9 = f"{k3.op}:w9"
    cal = [{"label": "p", "op": k3.op, "key": key9, "features": [0, 6.0], "flops": 0, "bytes": b, "seconds": t}
           for b, t in ((1e3, 1e-6), (1e7, 1e-3))]
    p = Predictor(MachineProfile.synthetic(calibration=cal))
    assert p.op_time(k3)[1] == "curve"
    t, method = p.op_time(k2)                                         # only the 3x3 window is calibrated
    assert method == "curve:" + key9 and t == pytest.approx(p._curve_time(CalKey.parse(key9), k2.bytes, 6.0))


def test_stride_1_pools_have_their_own_key_and_fall_back_to_their_window():
    s1 = _meta_count(nn.MaxPool2d(3, 1, 1), (1, 192, 28, 28)).kernel_ops[0]      # googlenet's branch pool
    s2 = _meta_count(nn.MaxPool2d(3, 2, 1), (1, 192, 56, 56)).kernel_ops[0]      # same output map
    ceil = _meta_count(nn.MaxPool2d(3, 2, ceil_mode=True), (1, 64, 112, 112)).kernel_ops[0]
    assert str(op_key(s1)) == f"{s1.op}:w9:s1" and str(op_key(s2)) == str(op_key(ceil)) == f"{s2.op}:w9"
    assert s1.flops == s2.flops == 192 * 28 * 28 * 9                          # same window work
    assert s1.bytes == 2 * 192 * 28 * 28 * 4 and s2.bytes == 5 * 192 * 28 * 28 * 4  # not the same bytes
    curve = [(1e3, 1e-6), (1e7, 1e-3)]
    cal = [{"label": "p", "op": s2.op, "key": k, "features": [0, 7.0], "flops": 0, "bytes": b, "seconds": t * f}
           for k, f in ((f"{s2.op}:w9", 1.0), (f"{s2.op}:w9:s1", 4.0)) for b, t in curve]
    p = Predictor(MachineProfile.synthetic(calibration=cal))
    assert p.op_time(s1) == (pytest.approx(p._curve_time(CalKey.parse(f"{s1.op}:w9:s1"), s1.bytes, 7.0)), "curve")
    assert p.op_time(s2)[1] == "curve"
    # at equal bytes the stride-1 pool costs its own curve's 4x, not the stride-2 one's
    assert p._curve_time(CalKey.parse(f"{s1.op}:w9:s1"), s1.bytes, 7.0) == pytest.approx(4 * p._curve_time(CalKey.parse(f"{s2.op}:w9"),
                                                                                              s1.bytes, 7.0))
    # a profile calibrated before stride-1 cases: the stride-2 curve of the window, on bytes
    old = Predictor(MachineProfile.synthetic(calibration=[c for c in cal if not c["key"].endswith(":s1")]))
    assert old.op_time(s1) == (pytest.approx(old._curve_time(CalKey.parse(f"{s1.op}:w9"), s1.bytes, 7.0)), f"curve:{s1.op}:w9")
    # the stride class is preferred, not required: with only stride-1 cases a stride-2 pool uses them
    only_s1 = Predictor(MachineProfile.synthetic(calibration=[c for c in cal if c["key"].endswith(":s1")]))
    assert only_s1.op_time(s2)[1] == f"curve:{s1.op}:w9:s1"


def test_ragged_depthwise_convs_have_their_own_key_with_a_fallback():
    aligned = _meta_count(nn.Conv2d(64, 64, 3, padding=1, groups=64), (1, 64, 28, 28)).kernel_ops[0]
    ragged = _meta_count(nn.Conv2d(58, 58, 3, padding=1, groups=58), (1, 58, 28, 28)).kernel_ops[0]
    assert (str(op_key(aligned)), str(op_key(ragged))) == ("conv:depthwise", "conv:depthwise:ragged")
    assert op_features(ragged) == op_features(aligned)[:6] + [math.log2(58)]
    base = {"op": "aten.conv2d.default", "bytes": 0}
    # the smallest case of each table is its fixed cost; a second case sets the rate
    dw = [{**base, "label": "a", "key": "conv:depthwise", "features": [0, 0, 0, 0, 0, 0, 0], "flops": 1e3,
           "seconds": 1e-6},
          {**base, "label": "b", "key": "conv:depthwise", "features": op_features(aligned), "flops": aligned.flops,
           "seconds": 1e-6 + aligned.flops / 1e10}]
    only_aligned = Predictor(MachineProfile.synthetic(calibration=dw))
    t, method = only_aligned.op_time(ragged)
    assert method == "knn:conv:depthwise"                 # a profile without ragged cases
    rag = [{**c, "key": "conv:depthwise:ragged", "seconds": 2 * c["seconds"]} for c in dw]
    both = Predictor(MachineProfile.synthetic(calibration=dw + rag))
    t2, method2 = both.op_time(ragged)
    assert method2 == "knn:conv:depthwise:ragged" and t2 > t
    assert both.op_time(aligned)[1] == "own:conv:depthwise"      # case "b" is its own shape


def _chains_for(nets, prof, truth):
    """Chains whose 'measured' time is ``truth(per-op sum, ops)``, with known per-op times."""
    from dataclasses import asdict

    chains = []
    base = Predictor(prof)
    for i, (module, shape) in enumerate(nets):
        res = _meta_count(module, shape)
        p = sum(base.op_time(r)[0] for r in res.ops)
        n = sum(1 for r in res.ops if not r.is_free)
        t = truth(i, p, n) + (len(module) + 1) * prof.module_overhead_s
        chains.append({"label": f"c{i}", "ops": [asdict(r) for r in res.ops], "module_calls": len(module) + 1,
                       "seconds": t, "seconds_min": t})
    return chains


def test_the_interval_is_the_leave_one_out_error_of_the_chains_and_holds_the_prediction(monkeypatch):
    monkeypatch.setattr("flopgap.explain._predict.METHOD_ERROR", None)   # the chains' own error alone
    cal = [_knn_sample("matmul", [0, 3, 3], 2e4, 2e-6), _knn_sample("matmul", [0, 8, 8], 1e9, 2e-6 + 1e-2),
           _knn_sample("matmul", [0, 10, 10], 2e9, 2e-6 + 2e-2)]
    prof = MachineProfile.synthetic(calibration=cal, module_overhead_s=1e-6)
    nets = [(nn.Sequential(*[nn.Linear(w, w) for _ in range(d)]), (1, w))
            for w, d in ((64, 2), (128, 3), (256, 4), (512, 2), (96, 5), (200, 3), (300, 2), (48, 6))]
    # measured = 1.2 x the per-op sum + 2 us per op, with chain-to-chain noise of +-10%
    noise = [1.1, 0.92, 1.0, 1.05, 0.95, 1.08, 0.9, 1.02]
    prof.chains = _chains_for(nets, prof, lambda i, p, n: noise[i] * (1.2 * p + 2e-6 * n))
    pred = Predictor(prof)
    assert len(pred.loo_log_errors) == 8
    q_lo, q_hi, source = pred.method_error()
    assert q_lo == pytest.approx(min(0.0, float(np.quantile(pred.loo_log_errors, 0.05))))
    assert q_hi == pytest.approx(max(0.0, float(np.quantile(pred.loo_log_errors, 0.95))))
    assert "leave-one-out over this profile's 8 chains" in source
    out = predict(_meta_count(nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256)), (1, 256)), prof)
    iv = out.interval
    assert iv.low_s < out.latency_s < iv.high_s and iv.level == 0.9
    assert iv.extrapolation_log == 0.0 and iv.calibration_log == 0.0      # inside the grid, no spread
    assert iv.low_s == pytest.approx(out.latency_s * math.exp(q_lo)) and iv.high_s == pytest.approx(
        out.latency_s * math.exp(q_hi))
    d = out.to_dict()["interval"]
    assert d["low_s"] == iv.low_s and d["method_error"]["source"] == source


def test_extrapolated_and_uncalibrated_ops_are_listed_and_widen_the_interval():
    cal = [_knn_sample("matmul", [0, 3, 3], 2e4, 2e-6), _knn_sample("matmul", [0, 7, 7], 4e6, 2e-6 + 4e-5),
           {"label": "a1", "op": "aten.add.Tensor", "key": "aten.add.Tensor", "features": [0, 0], "flops": 0,
            "bytes": 1e3, "seconds": 1e-6, "spread": 0.5},
           {"label": "a2", "op": "aten.add.Tensor", "key": "aten.add.Tensor", "features": [0, 0], "flops": 0,
            "bytes": 1e6, "seconds": 1e-4, "spread": 0.5}]
    prof = MachineProfile.synthetic(calibration=cal)
    near = _meta_count(nn.Linear(128, 128), (1, 128))                 # features [0, 7, 7]: a calibrated shape
    far = _meta_count(nn.Sequential(nn.Linear(4096, 4096), nn.Tanh()), (1, 4096))   # [0, 12, 12]; tanh uncalibrated
    a, b = predict(near, prof), predict(far, prof)
    assert a.extrapolated == [] and a.interval.extrapolation_log == 0.0
    whys = {r["op"]: r["why"] for r in b.extrapolated}
    assert whys["aten.linear.default"] == "nearest calibrated shape 7.1 log2 units away"
    assert whys["aten.tanh.default"] == "not calibrated: the add curve at its bytes"
    share = (b.latency_s - b.module_overhead_s) / b.latency_s          # every op; the module calls are not ops
    assert b.extrapolated_share == pytest.approx(share)
    assert b.interval.extrapolation_log == pytest.approx(share * math.log(2.0))
    # the add curve's cases spread 50%: a calibration-noise term from the tanh's share
    tanh_share = b.ops[1]["predicted_s"] / b.latency_s
    assert b.interval.calibration_log == pytest.approx(1.645 * tanh_share * math.log(1.5))
    assert b.to_dict()["extrapolated"][0]["predicted_s"] == max(o["predicted_s"] for o in b.ops)


def test_the_shipped_held_out_error_is_a_floor_under_the_chains_error(monkeypatch):
    cal = [_knn_sample("matmul", [0, 3, 3], 2e4, 2e-6), _knn_sample("matmul", [0, 8, 8], 1e9, 2e-6 + 1e-2)]
    prof = MachineProfile.synthetic(calibration=cal, module_overhead_s=1e-6)
    nets = [(nn.Sequential(*[nn.Linear(w, w) for _ in range(d)]), (1, w))
            for w, d in ((64, 2), (128, 3), (256, 4), (512, 2), (96, 5), (200, 3))]
    prof.chains = _chains_for(nets, prof, lambda i, p, n: 1.2 * p + 2e-6 * n)   # no chain-to-chain noise
    monkeypatch.setattr("flopgap.explain._predict.METHOD_ERROR",
                        {"q_lo": -0.3, "q_hi": 0.4, "provenance": "a test set"})
    q_lo, q_hi, source = Predictor(prof).method_error()
    assert q_lo <= -0.3 and q_hi >= 0.4 and "held-out error shipped with the code (a test set)" in source


def test_the_cold_share_grows_from_half_the_last_level_cache_to_all_of_it():
    from flopgap.explain._predict import cold_share, weights_are_cold
    from flopgap.machine._keys import FULLY_COLD

    prof = MachineProfile.synthetic()
    prof.llc_bytes = 8 * 2**20
    assert FULLY_COLD == 1.0

    def relus(n):   # n ReLUs of 1 MiB each: 1 MiB written per op
        return _meta_count(nn.Sequential(*[nn.ReLU() for _ in range(n)]), (1, 2**18)).ops

    from flopgap.machine._keys import footprint_bytes

    shares = {}
    for n in (2, 4, 6, 8, 12):
        ops = relus(n)
        f = footprint_bytes(ops) / prof.llc_bytes
        shares[n] = cold_share(ops, prof)
        assert shares[n] == pytest.approx(min(1.0, max(0.0, (f - 0.5) / 0.5)))
        assert (shares[n] > 0) == weights_are_cold(ops, prof)       # above zero exactly when the model is cold
    assert shares[2] == 0.0 and 0 < shares[6] < 1 and shares[12] == 1.0


def test_matmuls_and_attention_get_their_own_in_sequence_scale_when_the_chains_tell_them_apart():
    from dataclasses import asdict

    import torch.nn.functional as F

    from flopgap.explain._predict import uses_matmul_scale
    from flopgap.machine._grid import _Call

    cal = [_knn_sample("matmul", [0, 3, 3], 2e4, 2e-6), _knn_sample("matmul", [0, 8, 8], 1e9, 2e-6 + 1e-2)]
    base_prof = MachineProfile.synthetic(calibration=cal, module_overhead_s=1e-6)
    base = Predictor(base_prof)

    def chains(nets, s, s_mm):
        out = []
        for i, (module, shape) in enumerate(nets):
            res = _meta_count(module, shape)
            times = [base.op_time(r)[0] for r in res.ops]
            mm = sum(t for r, t in zip(res.ops, times) if uses_matmul_scale(r))
            n = sum(1 for r in res.ops if not r.is_free)
            # measured = s x the other ops + s_mm x the matmuls + 2 us per op + module calls x 1 us
            t = s * (sum(times) - mm) + s_mm * mm + 2e-6 * n + (len(module) + 1) * 1e-6
            out.append({"label": f"c{i}", "ops": [asdict(r) for r in res.ops], "module_calls": len(module) + 1,
                        "seconds": t, "seconds_min": t})
        return out

    linears = [(nn.Sequential(*[nn.Linear(w, w) for _ in range(d)]), (1, w)) for w, d in ((64, 2), (256, 3), (512, 2))]
    mixed = [(nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128)), (1, 128))]
    relus = [(nn.Sequential(*[nn.ReLU() for _ in range(d)]), (1, 2**14)) for d in (2, 5)]
    att = _meta_count(_Call(lambda q, k, v: F.scaled_dot_product_attention(q, k, v)), *[(1, 2, 64, 32)] * 3)
    assert uses_matmul_scale(next(o for o in att.ops if o.family == "attention"))
    assert not any(uses_matmul_scale(r) for r in _meta_count(*relus[0]).ops)

    prof = MachineProfile.synthetic(calibration=cal, module_overhead_s=1e-6,
                                    chains=chains(linears + mixed + relus, 1.1, 1.3))
    pred = Predictor(prof)
    assert pred.scale == pytest.approx(1.1) and pred.matmul_scale == pytest.approx(1.3)
    assert pred.per_op_s == pytest.approx(2e-6)
    assert all(c["fitted_s"] == pytest.approx(c["measured_s"]) for c in pred.chain_fit)
    net = _meta_count(nn.Sequential(nn.Linear(100, 100), nn.ReLU()), (1, 100))
    out = predict(net, prof)
    lin, relu = [base.op_time(r)[0] for r in net.ops if not r.is_free]
    assert out.latency_s == pytest.approx(1.3 * lin + 1.1 * relu + 2 * 2e-6 + 3 * 1e-6)
    assert out.matmul_scale == pytest.approx(1.3) and out.to_dict()["sequence_fit"]["matmul_scale"] == out.matmul_scale

    # chains that are all matmuls (or too few chains) cannot tell the two apart: one scale
    only = Predictor(MachineProfile.synthetic(calibration=cal, module_overhead_s=1e-6,
                                              chains=chains(linears + linears, 1.2, 1.2)))
    assert only.matmul_scale == only.scale == pytest.approx(1.2)
    few = Predictor(MachineProfile.synthetic(calibration=cal, module_overhead_s=1e-6,
                                             chains=chains(linears[:2] + relus, 1.1, 1.3)))
    assert few.matmul_scale == few.scale
