"""Lazy, incremental calibration: which cases a model needs, that a lazy profile predicts
exactly what the full grid does, noise and disturbance handling, progress. Every
timing here is scripted (a fake per-case timer, FakeLoad for the sentinel), but one
test's that starts the real chain child (its figures are only checked to be positive)."""

from __future__ import annotations

import json
import math
import sys
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from flopgap.count import count
from flopgap.explain import predict
from flopgap.machine import CalKey, MachineProfile, needs_for, profile_machine
from flopgap.machine import _chains, _ceilings, _grid, _measure, _profile
from flopgap.machine._grid import _Call, cases_for, grid
from flopgap.machine._keys import op_features, op_key
from flopgap.timing import FakeLoad


def _meta_count(module, *shapes):
    return count(module.to("meta"), tuple(torch.empty(s, device="meta") for s in shapes), meta=True)


def test_case_descriptions_match_what_the_counting_pass_gives():
    # the key and features a case declares before it runs are the counted op's, exactly
    cases = [c for c in grid(quick=True) if c.est_s < 2e-4 and c.kind != "qlinear"]
    for case in cases[::5]:
        fn, inputs = case.build()
        with torch.inference_mode():
            res = count(_Call(fn), inputs)
        rec = max(res.kernel_ops or res.ops, key=lambda r: (r.flops, r.bytes))
        assert op_key(rec).as_cold(case.key.cold) == case.key, case.id
        if case.key.shape_model:
            assert tuple(op_features(rec)) == pytest.approx(case.features), case.id


def test_calibration_keys_round_trip_through_their_text():
    keys = [CalKey("conv:depthwise", ragged=True, cold=True), CalKey("aten.max_pool2d.default", window=9,
                                                                     stride1=True), CalKey("matmul"),
            CalKey("aten.relu_.default"), CalKey("attention")]
    assert [str(k) for k in keys] == ["conv:depthwise:ragged cold", "aten.max_pool2d.default:w9:s1", "matmul",
                                      "aten.relu_.default", "attention"]
    assert [CalKey.parse(str(k)) for k in keys] == keys
    assert {c.key for c in grid()} >= set(keys[:4])


def test_a_model_needs_the_nearest_cases_of_its_keys_and_the_fallbacks():
    res = _meta_count(nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(),
                                    nn.Linear(64 * 14 * 14, 10)), (1, 32, 14, 14))
    needs = cases_for(res.ops, llc_bytes=1 << 40)             # a huge cache: a hot model
    by_id = {i: _grid.case_by_id(i) for i in needs.ids}
    keys = {by_id[i].key for i in needs.ids}
    assert CalKey("conv:dense") in keys and CalKey("matmul") in keys and CalKey("aten.relu_.default") in keys
    assert CalKey("aten.flatten.using_ints") in keys and CalKey("aten.add.Tensor") in keys  # views, fallbacks
    assert not any(k.cold for k in keys)
    dense = {by_id[i].id for i in needs.ids if by_id[i].key == CalKey("conv:dense")}
    # the conv's own shape + the case of fewest FLOPs (the fixed cost): a squeeze-excitation 1x1 conv
    assert dense == {"conv 32->64 k3 s1 g1 @14", "conv 16->8 k1 s1 g1 @1"}
    linear = {by_id[i].id for i in needs.ids if by_id[i].key == CalKey("matmul")}
    assert linear == {"linear 1x12544->10", "linear 1x8->8"}
    relu = [c for c in grid() if c.key == CalKey("aten.relu_.default")]
    assert all(c.id in needs.ids for c in relu)                # a curve: all of its cases
    assert sum(needs.weights.values()) == pytest.approx(1.0)    # shares of the model's time
    cold = cases_for(res.ops, llc_bytes=1)                      # a tiny cache: the cold twins too
    assert {_grid.case_by_id(i).key for i in cold.ids} >= {CalKey("conv:dense", cold=True), CalKey("matmul", cold=True)}
    assert "conv 32->64 k3 s1 g1 @14 cold" in cold.ids          # a cold model reads its conv's cold twin
    assert len(needs) < len(grid()) / 10


# ------------------------------------------------------------------ a small world
def _fake_seconds(case_id: str) -> float:
    """A deterministic 'measured' time per case: 2-20 us."""
    return 2e-6 * (1 + zlib.crc32(case_id.encode()) % 10)


@pytest.fixture
def world(monkeypatch, tmp_path):
    """A small grid, scripted timings, fake ceilings and two tiny chains, measured in
    this process under a FakeLoad (quiet unless a test says otherwise)."""
    monkeypatch.setenv("FLOPGAP_CACHE_DIR", str(tmp_path))
    small = tuple(c for c in grid(quick=True) if c.est_s < 1e-4 and c.kind in ("conv", "linear", "memory"))
    monkeypatch.setattr(_grid, "grid", lambda quick=False: small)
    for f in (_grid._by_key, _grid._index, _grid._by_id):
        f.cache_clear()
    timed = []

    def time_case(case, fn, inputs, clock):
        timed.append(case.id)
        t = _fake_seconds(case.id)
        return np.array([t, t * 1.01, t * 1.02, t * 1.01, t * 1.03])

    monkeypatch.setattr(_measure, "_time_case", time_case)
    p = MachineProfile.synthetic(peak=1e11)
    p.page_fault_s = 1e-7
    monkeypatch.setattr(_ceilings, "measure_ceilings",
                        lambda dev, quick=False: {k: getattr(p, k) for k in _profile._CEILING_FIELDS})
    specs = [("mlp", lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)), (1, 64)),
             ("conv", lambda: nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True)), (1, 16, 14, 14))]
    monkeypatch.setattr(_chains, "chain_cases", lambda quick=False: [
        (label, lambda make=make, shape=shape: (make().eval(), (torch.randn(*shape),))) for label, make, shape in specs])
    monkeypatch.setattr(_chains, "time_call", lambda fn, **kw: np.array([50e-6, 52e-6]))
    monkeypatch.setattr(_measure, "RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(_measure, "FRESH_CHAINS", False)   # the fakes above live in this process
    yield {"grid": small, "timed": timed}
    for f in (_grid._by_key, _grid._index, _grid._by_id):
        f.cache_clear()


def _model():
    return nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(32, 10)).eval()


def test_a_lazy_profile_predicts_exactly_what_the_full_one_does(world):
    model, x = _model(), torch.randn(1, 16, 14, 14)
    res = count(model, (x,))
    lazy = profile_machine(needs=needs_for(res), load=FakeLoad.quiet())
    assert lazy.source == "measured" and not lazy.complete
    n_lazy = len(world["timed"])
    assert 0 < len(lazy.calibration) < len(world["grid"])
    full = profile_machine(load=FakeLoad.quiet())            # completes the cache: the rest of the grid
    assert full.complete and full.source == "cache+measured"
    assert set(world["timed"][n_lazy:]) == full.case_ids - lazy.case_ids    # nothing twice
    n_full = len(world["timed"])
    a, b = predict(res, lazy), predict(res, full)
    assert a.latency_s == b.latency_s and [o["predicted_s"] for o in a.ops] == [o["predicted_s"] for o in b.ops]
    assert a.interval == b.interval
    # a second lazy request for the same model measures nothing
    again = profile_machine(needs=needs_for(res), load=FakeLoad.quiet())
    assert again.source == "cache" and len(world["timed"]) == n_full


def test_a_cached_profile_whose_chain_set_changed_gets_its_chains_measured_again(world, monkeypatch):
    mlp = _meta_count(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), (1, 64))
    first = profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet())
    assert [c["label"] for c in first.chains] == ["mlp", "conv"]
    assert profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet()).source == "cache"
    old = _chains.chain_cases(False)
    extra = ("mlp wide", lambda: (nn.Sequential(nn.Linear(64, 128), nn.ReLU()).eval(), (torch.randn(1, 64),)))
    monkeypatch.setattr(_chains, "chain_cases", lambda quick=False: [*old, extra])
    again = profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet())
    assert again.source == "cache+measured"
    assert [c["label"] for c in again.chains] == ["mlp", "conv", "mlp wide"]
    # new chains measured disturbed still replace a stale set (and are measured again next run)
    new = MachineProfile.from_dict(again.to_dict())
    new.sections["chains"] = {**new.sections["chains"], "disturbed": "machine disturbed: a test"}
    assert [c["label"] for c in _profile._merge(first, new).chains] == ["mlp", "conv", "mlp wide"]
    assert [c["label"] for c in _profile._merge(again, new).chains] == ["mlp", "conv", "mlp wide"]
    monkeypatch.setattr(_chains, "chain_cases", lambda quick=False: old)
    assert [c["label"] for c in _profile._merge(first, new).chains] == ["mlp", "conv"]   # current: kept


def test_a_cached_profile_without_the_python_instructions_cost_gets_its_chains_measured_again(world, tmp_path):
    mlp = _meta_count(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), (1, 64))
    first = profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet())
    assert first.python_opcode_s > 0 and all(c["python_opcodes"] > 0 for c in first.chains)
    (path,) = tmp_path.glob("machine-*.json")
    d = json.loads(path.read_text())
    del d["sections"]["chains"]["python_opcode_s"]
    for c in d["chains"]:
        del c["python_opcodes"]
    path.write_text(json.dumps(d))
    again = profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet())
    assert again.source == "cache+measured" and again.python_opcode_s == first.python_opcode_s
    assert [c["python_opcodes"] for c in again.chains] == [c["python_opcodes"] for c in first.chains]
    assert profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet()).source == "cache"
    d = json.loads(path.read_text())
    d["sections"]["chains"]["python"] = "2.7"   # counted by another interpreter: other bytecode
    path.write_text(json.dumps(d))
    assert profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet()).source == "cache+measured"


def test_the_cache_grows_incrementally_per_model(world, tmp_path):
    mlp = _meta_count(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), (1, 64))
    conv = _meta_count(nn.Sequential(nn.Conv2d(16, 16, 1), nn.Hardswish()), (1, 16, 14, 14))
    first = profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet())
    (path,) = tmp_path.glob("machine-*.json")
    on_disk = json.loads(path.read_text())
    assert {s["case"] for s in on_disk["calibration"]} == first.case_ids
    assert set(on_disk["sections"]) == {"ceilings", "chains"}
    before = len(world["timed"])
    second = profile_machine(needs=needs_for(conv), load=FakeLoad.quiet())
    assert second.case_ids > first.case_ids
    assert set(world["timed"][before:]) == second.case_ids - first.case_ids   # only what was missing
    assert {s["case"] for s in json.loads(path.read_text())["calibration"]} == second.case_ids


def test_a_profile_measured_on_a_busy_machine_is_re_measured_then_refused_by_the_cache(world, tmp_path):
    mlp = _meta_count(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), (1, 64))
    busy = FakeLoad.busy()
    prof = profile_machine(needs=needs_for(mlp), load=busy)
    # every chunk was measured 1 + RETRIES times before it was given up on
    n = len(prof.calibration)
    assert all(s.disturbed.startswith("machine disturbed") for s in prof.calibration)
    assert all(s.attempts == 1 + _measure.RETRIES for s in prof.calibration)
    assert prof.sections["ceilings"]["disturbed"] and prof.sections["chains"]["disturbed"]
    assert any("busy while measuring ceilings, chains" in w and "not cached" in w for w in prof.warnings)
    (path,) = tmp_path.glob("machine-*.json")
    on_disk = json.loads(path.read_text())
    assert on_disk["calibration"] == [] and on_disk["sections"] == {}     # nothing disturbed is cached
    # on a quiet machine the next run measures it all again, and caches it
    before = len(world["timed"])
    calm = profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet())
    assert len(set(world["timed"][before:])) == n and not calm.disturbed_parts and not calm.warnings
    assert len(json.loads(path.read_text())["calibration"]) == len(calm.calibration)


def test_a_refreshed_profile_replaces_the_cache_and_never_falls_back_on_it(world, tmp_path):
    mlp = _meta_count(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), (1, 64))
    first = profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet())
    (path,) = tmp_path.glob("machine-*.json")
    assert len(json.loads(path.read_text())["calibration"]) == len(first.calibration) > 0
    # re-measured on a busy machine: nothing of it is cached, and nothing from before survives
    again = profile_machine(refresh=True, needs=needs_for(mlp), load=FakeLoad.busy())
    assert again.disturbed_parts
    assert json.loads(path.read_text())["calibration"] == []
    # so the next run measures it all anew rather than reading the old cases
    before = len(world["timed"])
    calm = profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet())
    assert len(set(world["timed"][before:])) == len(calm.calibration) and not calm.disturbed_parts


def test_a_slow_handoff_spell_disturbs_the_whole_profile(world, tmp_path):
    # ops handing data between threads run 1.5x their calm time, nothing else moves: the
    # single-op cases are judged on that part too (2-thread ops ran slow in such spells)
    mlp = _meta_count(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), (1, 64))
    calm = (1e-4, 3e-4, 5e-4, 6e-4)
    spell = FakeLoad(others=(0,), references=((1e-4, 3e-4, 5e-4, 9e-4),), calm=calm)
    prof = profile_machine(needs=needs_for(mlp), load=spell)
    assert prof.calibration and all("handoff 1.50x" in s.disturbed for s in prof.calibration)
    assert "handoff 1.50x" in prof.sections["ceilings"]["disturbed"]
    assert "handoff 1.50x" in prof.sections["chains"]["disturbed"]
    on_disk = json.loads(next(tmp_path.glob("machine-*.json")).read_text())
    assert on_disk["calibration"] == [] and not {"ceilings", "chains"} & set(on_disk["sections"])
    assert any("busy" in w or "disturbed" in w for w in prof.warnings)


def test_noisy_and_sensitive_cases_are_measured_again_and_keep_their_fastest_attempt(world, monkeypatch):
    noisy_id = next(c.id for c in world["grid"] if c.kind == "linear")
    calls = {}

    def time_case(case, fn, inputs, clock):
        calls[case.id] = calls.get(case.id, 0) + 1
        t = _fake_seconds(case.id)
        if case.id == noisy_id and calls[case.id] == 1:     # first attempt: blocks 1-2x apart
            return np.array([2 * t, 1.5 * t, 2 * t, 1.6 * t, 2 * t])
        return np.array([t] * 5)

    monkeypatch.setattr(_measure, "_time_case", time_case)
    small = next(c.id for c in world["grid"] if c.kind == "memory")
    req = _measure.Request(False, False, (noisy_id, small), (0.5, 0.001))
    out = _measure.run_request(req, load=FakeLoad.quiet())
    got = {s.case: s for s in out.samples}
    assert got[noisy_id].attempts == 2 and got[noisy_id].seconds == _fake_seconds(noisy_id)
    assert got[noisy_id].spread == 0.0                         # the spread of the attempt kept
    assert got[small].attempts == 1                            # quiet and 0.1% of the time: once
    assert out.sections["cases"]["remeasured"] == 1


def test_progress_is_reported_in_milliseconds_of_estimated_work(world):
    events = []
    mlp = _meta_count(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), (1, 64))
    profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet(), progress=lambda d, t, lb: events.append((d, t, lb)))
    assert events and events[0][:1] == (0,) and events[0][2].startswith("ceilings")
    done = [d for d, _, _ in events]
    assert done == sorted(done) and all(d <= t for d, t, _ in events)
    assert any(lb.startswith("calibrating ") for _, _, lb in events) and events[-1][2] == "chains: round 3"


def test_a_synthetic_profile_in_the_cache_stands_as_it_is(world):
    MachineProfile.synthetic(quick=False).save()
    mlp = _meta_count(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), (1, 64))
    prof = profile_machine(needs=needs_for(mlp), load=FakeLoad.quiet())
    assert prof.source == "cache" and world["timed"] == [] and prof.complete



def test_cold_weights_rotate_over_views_of_one_buffer_larger_than_the_cache():
    w = _grid.weight((64, 64, 3, 3), cold=True)       # 147 kB: 455 views over the 64 MiB buffer
    first = w()
    seen = {first.data_ptr()}
    while (v := w()).data_ptr() != first.data_ptr():
        seen.add(v.data_ptr())
        assert v.shape == (64, 64, 3, 3) and v.is_contiguous()
    assert len(seen) * first.nbytes > 32 * 2**20        # more than a 32 MiB last-level cache per round
    hot = _grid.weight((64, 64, 3, 3), cold=False)
    assert hot().data_ptr() == hot().data_ptr()
    big = _grid.weight((4096, 4096), cold=True)         # 64 MiB: cold by its size, used as it is
    assert big().data_ptr() == big().data_ptr()


def test_a_convolution_gets_a_case_of_its_own_shape_and_its_id_names_it():
    def conv(cin, cout, k, stride, groups, hw, n=1, padding=None):
        c = nn.Conv2d(cin, cout, k, stride, k // 2 if padding is None else padding, groups=groups, bias=False)
        res = _meta_count(c, (n, cin, hw, hw))
        return next(r for r in res.ops if r.op == "aten.conv2d.default")

    for args, want in [((24, 24, 1, 1, 1, 56), "conv 24->24 k1 s1 g1 @56"),
                       ((16, 32, 3, 2, 1, 112), "conv 16->32 k3 s2 g1 @112"),
                       ((40, 40, 5, 1, 40, 28), "conv 40->40 k5 s1 g40 @28"),
                       ((64, 128, 3, 1, 8, 14, 2), "conv 64->128 k3 s1 g8 @14 n2")]:
        r = conv(*args)
        case = _grid.exact_case(r)
        assert case is not None and case.id == want and case.key == op_key(r)
        assert case.features == tuple(op_features(r))                 # the k-NN sees distance 0
        again = _grid.case_by_id(want)
        assert again == case                                            # the id alone rebuilds it (a child process)
        cold = _grid.exact_case(r, cold=True)
        assert cold.id == want + " cold" and cold.key == op_key(r).as_cold() and _grid.case_by_id(cold.id) == cold
    assert _grid.exact_case(conv(16, 16, 3, 1, 1, 14, padding=0)) is None   # padding the lattice cannot build
    assert _grid.case_by_id("conv 3->5 k1 s1 g2 @7") is None and _grid.case_by_id("no such case") is None


def test_a_calibrated_shape_takes_its_own_rate_not_its_neighbours():
    from flopgap.explain._predict import Predictor

    r = next(o for o in _meta_count(nn.Conv2d(24, 24, 1, bias=False), (1, 24, 56, 56)).ops
             if o.op == "aten.conv2d.default")
    own = _grid.exact_case(r)
    key = own.key
    lattice = sorted((c for c in grid() if c.key == key), key=lambda c: c.est_s)[:8]

    def sample(case, rate):   # seconds from a rate over the case's FLOPs (fixed cost: the smallest case)
        flops = int(round((case.est_s - 5e-6) * 1e11))
        return _measure.Sample(case.id, "aten.conv2d.default", key, case.features, flops, 0, flops / rate + 1e-6,
                               flops / rate + 1e-6)

    base = [sample(c, 1e11) for c in lattice]
    without = Predictor(MachineProfile.synthetic(calibration=base))
    with_own = Predictor(MachineProfile.synthetic(calibration=base + [sample(own, 2e10)]))
    t0, _, _, _ = without.op_detail(r)
    t1, method, _, why = with_own.op_detail(r)
    overhead = with_own.knn[key].overhead
    assert method == "own:conv:dense" and not why
    assert t1 == pytest.approx(overhead + r.flops / 2e10, rel=1e-4)   # its own rate, 5x below the lattice's
    assert abs(t0 - t1) > 0.2 * t1                                 # the neighbours alone say otherwise


def test_a_linear_layer_gets_a_case_of_its_own_shape():
    for shape, want in [((16, 1024), "linear 16x1024->1024"), ((2, 64, 1024), "linear 128x1024->1024")]:
        r = next(o for o in _meta_count(nn.Linear(1024, 1024), shape).ops if o.op == "aten.linear.default")
        case = _grid.exact_case(r)
        assert case.id == want and case.key == op_key(r) and case.features == tuple(op_features(r))
        assert _grid.case_by_id(want) == case and _grid.case_by_id(want + " cold") == _grid.exact_case(r, cold=True)
    res = _meta_count(_Call(lambda a: a @ a.transpose(-1, -2)), (4, 8, 16))
    mm = next(o for o in res.ops if "matmul" in str(op_key(o)))
    assert _grid.exact_case(mm) is None                                 # a batched product: the lattice's neighbours
    near = [i for i in cases_for(res.ops, llc_bytes=1 << 40).ids if _grid.case_by_id(i).key == CalKey("matmul")]
    assert len(near) == _grid.NEIGHBOURS + 1                            # and its key's case of fewest FLOPs


def _sdpa_op(q, k, v, **kw):
    import torch.nn.functional as F

    res = _meta_count(_Call(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, **kw)), q, k, v)
    return next(o for o in res.ops if o.family == "attention")


def test_a_fused_attention_gets_a_case_of_its_own_shape():
    r = _sdpa_op((1, 3, 197, 64), (1, 3, 197, 64), (1, 3, 197, 64))
    case = _grid.exact_case(r)
    assert case.id == "sdpa h3 197x197 e64" and case.key == CalKey("attention")
    assert _grid.case_by_id(case.id) == case and _grid.exact_case(r, cold=True) == case   # no weight: no cold twin
    causal = _grid.exact_case(_sdpa_op((2, 4, 96, 32), (2, 4, 96, 32), (2, 4, 96, 32), is_causal=True))
    assert causal.id == "sdpa h8 96x96 e32 causal" and _grid.case_by_id(causal.id) == causal
    # fewer key than query heads, or a mask tensor: kernels the cases do not time
    assert _grid.exact_case(_sdpa_op((1, 6, 96, 64), (1, 2, 96, 64), (1, 2, 96, 64), enable_gqa=True)) is None
    import torch.nn.functional as F

    masked = _meta_count(_Call(lambda a, b, c, m: F.scaled_dot_product_attention(a, b, c, attn_mask=m)),
                         (1, 2, 16, 32), (1, 2, 16, 32), (1, 2, 16, 32), (16, 16))
    assert _grid.exact_case(next(o for o in masked.ops if o.family == "attention")) is None


def test_a_partly_cold_model_needs_the_hot_and_the_cold_case_of_its_own_shapes():
    res = _meta_count(nn.Sequential(nn.Linear(1024, 1024), nn.Linear(1024, 1024)), (16, 1024))
    f = sum(r.bytes_written for r in res.ops if not r.is_free) + 2 * 1024 * 1024 * 4
    own = {"linear 16x1024->1024", "linear 16x1024->1024 cold"}
    assert own & cases_for(res.ops, llc_bytes=4 * f).ids == {"linear 16x1024->1024"}              # hot
    assert own & cases_for(res.ops, llc_bytes=f // 2).ids == {"linear 16x1024->1024 cold"}        # wholly cold
    assert own <= cases_for(res.ops, llc_bytes=int(f * 1.5)).ids                                  # partly: both


def test_layer_norm_is_placed_by_the_length_of_the_rows_it_normalises():
    tokens = next(o for o in _meta_count(nn.LayerNorm(192), (1, 197, 192)).ops if o.op == "aten.layer_norm.default")
    assert op_features(tokens)[1] == math.log2(192)
    cases = [c for c in grid() if c.key == CalKey("aten.layer_norm.default")]
    assert {c.params[2] for c in cases} == {16, 64, 256, 1024} and all(_grid.per_channel(c) for c in cases)


def test_cached_cases_the_grid_no_longer_has_are_read_as_nothing(tmp_path):
    prof = MachineProfile.synthetic(calibration=[
        {"label": "layer_norm 65536 c64", "op": "aten.layer_norm.default", "key": "aten.layer_norm.default",
         "features": [18, 6], "flops": 0, "bytes": 2**19, "seconds": 1e-5},
        {"label": "relu 65536 c64", "op": "aten.relu.default", "key": "aten.relu.default",
         "features": [19, 6], "flops": 0, "bytes": 2**19, "seconds": 1e-5}])
    path = tmp_path / "p.json"
    path.write_text(json.dumps(prof.to_dict()))
    back, why = _profile._read_cache(path)
    assert not why and [s.case for s in back.calibration] == ["relu 65536 c64"]


# ------------------------------------------------------------------ chains in a fresh process
def test_chains_in_a_fresh_process_are_the_ones_built_here_and_come_back_timed():
    from flopgap.machine._chains import ChainTimer, build_rows

    here = build_rows(True, None, torch.device("cpu"), [])
    with ChainTimer(True, fresh_process=True) as timer:
        assert timer.labels == [r["label"] for r in here]
        assert [[(o.op, o.flops, o.bytes, str(o.input_shapes)) for o in ops] for ops in timer.op_records()] == \
            [[(o["op"], o["flops"], o["bytes_read"] + o["bytes_written"], str(o["input_shapes"])) for o in r["ops"]]
             for r in here]
        polls = []
        timer._between = lambda: polls.append(1)
        timer.time_round()
        res = timer.results()
    assert len(polls) == len(here)
    assert all(r["rounds"] == 1 and r["seconds"] > 0 and len(r["round_seconds"]) == 1 for r in res)
    assert all(r["python_opcodes"] > 0 for r in res)
    assert len(timer.python_s) == 1 and 0 < timer.python_opcode_s < 1e-6   # one instruction: well under a us
    assert timer._worker._proc.returncode == 0   # stopped on leaving the block, by its "quit"


def test_a_chain_child_that_fails_says_so_in_one_line(monkeypatch, tmp_path):
    from flopgap.errors import FlopgapError
    from flopgap.machine._chains import ChainTimer

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'RuntimeError: no chains here' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr("sys.executable", str(fake))
    with pytest.raises(FlopgapError, match=r"chains failed \(exit 3\): RuntimeError: no chains here"):
        ChainTimer(True, fresh_process=True)


_FAKE_CHILD = """
import json, sys
print("noise before the protocol", flush=True)   # goes to the pipe: this fake does not redirect
print("rows\\t" + json.dumps([{"label": "a", "ops": [], "module_calls": 0}]), flush=True)
for line in sys.stdin:
    if line.startswith("time"):
        if "{mode}" == "die":
            sys.exit("RuntimeError: chain a blew up")
        print("onednn_verbose,exec,cpu,convolution", flush=True)   # a library printing mid-burst
        print("blocks\\t[0.001, 0.002]", flush=True)
    elif line.startswith("quit"):
        break
"""


_PYTHON = sys.executable   # before any test patches it


def _fake_python(tmp_path, mode):
    script = tmp_path / f"child_{mode}.py"
    script.write_text(_FAKE_CHILD.replace("{mode}", mode))
    exe = tmp_path / f"python_{mode}"
    exe.write_text(f"#!/bin/sh\nexec {_PYTHON} {script}\n")
    exe.chmod(0o755)
    return str(exe)


def test_the_chain_childs_protocol_skips_stray_lines_and_a_child_that_dies_says_why(monkeypatch, tmp_path):
    from flopgap.errors import FlopgapError
    from flopgap.machine._chain_worker import ChainWorker
    from flopgap.timing import _sentinel

    monkeypatch.setattr("sys.executable", _fake_python(tmp_path, "ok"))
    w = ChainWorker(True, 0.01, 1)
    assert [r["label"] for r in w.rows] == ["a"] and w._proc.pid in _sentinel._OWN_PIDS
    assert w.time(0) == [0.001, 0.002]
    w.close()
    assert w._proc.returncode == 0 and w._proc.pid not in _sentinel._OWN_PIDS
    monkeypatch.setattr("sys.executable", _fake_python(tmp_path, "die"))
    w = ChainWorker(True, 0.01, 1)
    with pytest.raises(FlopgapError, match=r"failed \(exit 1\): RuntimeError: chain a blew up"):
        w.time(0)
    w.close()


def test_the_profile_times_its_chains_in_a_fresh_process_and_stops_it_whatever_happens(monkeypatch):
    made = []

    class Timer:
        def __init__(self, quick, fresh_process=False):
            made.append({"fresh": fresh_process, "closed": False})

        def op_records(self):
            raise RuntimeError("stop here")

        def close(self):
            made[-1]["closed"] = True

    monkeypatch.setattr(_chains, "ChainTimer", Timer)
    with pytest.raises(RuntimeError, match="stop here"):
        _measure.run_request(_measure.Request(False, True, ()), load=False)
    assert made == [{"fresh": True, "closed": True}]
    with pytest.raises(RuntimeError):
        _measure.run_request(_measure.Request(False, True, ()), load=False, fresh_chains=False)
    assert made[-1] == {"fresh": False, "closed": True}
