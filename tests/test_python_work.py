"""The model's Python, counted as bytecode instructions and priced by the machine profile."""

import sys
from dataclasses import asdict

import pytest
import torch
from torch import nn

from flopgap.count import count, python_opcodes
from flopgap.explain import predict
from flopgap.explain._predict import Predictor
from flopgap.machine import MachineProfile


def _loop(n):
    s = 0
    for i in range(n):
        s += i
    return s


def test_instructions_grow_linearly_with_the_work_and_any_tracer_is_put_back():
    a, b, c = (python_opcodes(lambda n=n: _loop(n)) for n in (10, 20, 30))
    assert c - b == b - a > 0

    def other(frame, event, arg):
        return None

    before = sys.gettrace()
    sys.settrace(other)
    try:
        python_opcodes(lambda: _loop(3))
        assert sys.gettrace() is other
    finally:
        sys.settrace(before)


def test_the_wrappers_own_frame_is_left_out_and_everything_it_calls_is_counted():
    from flopgap._units import fmt_seconds

    assert python_opcodes(lambda: None) == 0
    assert python_opcodes(lambda: _loop(10)) == python_opcodes(lambda: [_loop(10)][0])   # wrappers of any size
    assert python_opcodes(lambda: fmt_seconds(1.5e-3)) > 10   # code that lives in flopgap counts like any other


class _Counted(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        self.calls += 1
        return torch.relu(self.lin(x))


def test_count_counts_one_plain_forward_and_only_when_that_cannot_change_state():
    m, x = _Counted().eval(), torch.randn(1, 8)
    res = count(m, (x,), model="m")
    assert m.calls == 2                                 # the counted pass, then the plain one
    assert res.python_opcodes == python_opcodes(lambda: m(x)) > 0   # the same forward
    assert res.to_dict()["python_opcodes"] == res.python_opcodes
    assert count(m, (x,), model="m", python=False).python_opcodes is None and m.calls == 4
    assert count(m, (x,), model="m", grad=True).python_opcodes is None and m.calls == 5
    assert count(m.train(), (x,), model="m").python_opcodes is None and m.calls == 6   # training mode: no second
    assert count(m, (x,), model="m", backward=True).python_opcodes is None


def _meta_count(module, *shapes):
    return count(module.to("meta"), tuple(torch.empty(s, device="meta") for s in shapes), meta=True)


def _knn_sample(key, feats, flops, seconds):
    return {"key": key, "features": feats, "flops": flops, "bytes": 0, "seconds": seconds, "case": ""}


K = 1e-8   # seconds per instruction in these profiles


def _python_profile():
    """Chains whose measured time is 1.5 x their ops + 3 us per op + K per instruction."""
    cal = [_knn_sample("matmul", [0, 3, 3], 2e4, 2e-6), _knn_sample("matmul", [0, 8, 8], 1e9, 2e-6 + 1e-2)]
    base = Predictor(MachineProfile.synthetic(calibration=cal))
    chains = []
    for w, d, opc in ((64, 4, 900), (256, 8, 3000), (1024, 2, 500), (128, 6, 4000)):
        res = _meta_count(nn.Sequential(*[nn.Linear(w, w) for _ in range(d)]), (1, w))
        p = sum(base.op_time(r)[0] for r in res.ops)
        n = sum(1 for r in res.ops if not r.is_free)
        t = 1.5 * p + 3e-6 * n + K * opc
        chains.append({"label": f"mlp {w}x{d}", "ops": [asdict(r) for r in res.ops], "module_calls": d + 1,
                       "python_opcodes": opc, "seconds": t, "seconds_min": t})
    prof = MachineProfile.synthetic(calibration=cal, chains=chains, module_overhead_s=1e-6)
    prof.sections["chains"]["python_opcode_s"] = K
    return prof, base


def test_the_prediction_prices_the_models_instructions_and_the_fit_takes_the_chains_off_first():
    prof, base = _python_profile()
    pred = Predictor(prof)
    assert pred.python_opcode_s == K
    assert pred.scale == pytest.approx(1.5) and pred.per_op_s == pytest.approx(3e-6)
    assert pred.per_byte_s == pytest.approx(0.0, abs=1e-15)
    res = _meta_count(nn.Sequential(nn.Linear(128, 128), nn.Linear(128, 128)), (1, 128))
    res.python_opcodes = 1234
    out = predict(res, prof)
    ops_sum = sum(base.op_time(r)[0] for r in res.ops)
    assert out.python_s == pytest.approx(1234 * K) and out.module_overhead_s == 0.0
    assert out.latency_s == pytest.approx(1.5 * ops_sum + 2 * 3e-6 + 1234 * K, rel=1e-6)
    d = out.to_dict()
    assert d["python_opcodes"] == 1234 and not d["python_estimated"] and not out.warnings


@pytest.mark.parametrize("counted", [None, 0])
def test_a_count_without_instructions_gets_the_chains_median_per_op_and_says_so(counted):
    prof, _ = _python_profile()
    res = _meta_count(nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128)), (1, 128))
    res.python_opcodes = counted
    out = predict(res, prof)
    per_op = sorted([900 / 4, 3000 / 8, 500 / 2, 4000 / 6])
    assert out.python_estimated and out.python_opcodes == round((per_op[1] + per_op[2]) / 2 * 3)
    assert any("not counted" in w for w in out.warnings)


def test_chains_without_instruction_counts_fall_back_to_module_calls_and_say_so():
    prof, _ = _python_profile()
    prof.chains[1]["python_opcodes"] = None      # its plain forward could not be traced
    res = _meta_count(nn.Sequential(nn.Linear(128, 128), nn.Linear(128, 128)), (1, 128))
    res.python_opcodes = 1234
    out = predict(res, prof)
    assert out.python_opcodes is None and out.module_overhead_s == pytest.approx(out.module_calls * 1e-6)
    assert any("lack instruction counts" in w for w in out.warnings)


def test_a_profile_without_the_instructions_cost_prices_module_calls_as_before():
    prof, _ = _python_profile()
    del prof.sections["chains"]["python_opcode_s"]
    res = _meta_count(nn.Sequential(nn.Linear(128, 128), nn.Linear(128, 128)), (1, 128))
    out = predict(res, prof)
    assert out.python_opcodes is None and out.python_s == 0.0
    assert out.module_overhead_s == pytest.approx(out.module_calls * 1e-6)
