"""Scattered reads: the run a count records per op, the gather key and cases, and their price."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flopgap.count import count
from flopgap.explain import predict
from flopgap.explain._predict import Predictor
from flopgap.machine import CalKey, MachineProfile, gather_run, op_features, op_key
from flopgap.machine import _grid


class _F(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def _kernels(fn, *shapes, meta=False):
    dev = "meta" if meta else "cpu"
    xs = tuple(torch.ones(s, device=dev) for s in shapes)
    with torch.inference_mode():
        return count(_F(fn).to(dev), xs, python=False, meta=meta).kernel_ops


def test_the_run_is_walked_in_the_outputs_memory_order():
    def run(fn, *shapes):
        (r,) = _kernels(fn, *shapes)
        return r.inner_run

    assert run(lambda x: x.t().contiguous(), (16, 32)) == 1                     # innermost dim strided
    assert run(lambda x: x.view(4, 8, 16).transpose(0, 1).contiguous(), (32, 16)) == 16   # runs of 16, then a jump
    assert run(lambda x: x.view(64, 4, 2).transpose(0, 1).reshape(-1), (64, 8)) == 2      # a copying reshape
    assert run(lambda x, y: x.t() + y, (16, 16), (16, 16)) == 1                 # layouts that disagree
    assert run(lambda x: x.t() + x.t(), (16, 16)) == 0                           # both transposed: the output too
    assert run(lambda x: x.t().clone(), (16, 32)) == 0                           # clone keeps the layout
    assert run(lambda x: x + 1, (16, 32)) == 0
    assert run(lambda x: x[:, :8] + 1, (16, 32)) == 8                             # a slice: runs of its width
    assert run(lambda x: torch.nn.functional.layer_norm(x.t(), (16,)), (16, 32)) == 1
    # a broadcast dim ends the run: rows of 8 repeated 3 times, then the next row
    assert run(lambda x: x[:, None].expand(4, 3, 8).reshape(12, 8), (4, 8)) == 8


def test_meta_tensors_carry_their_strides_into_the_run():
    # (on meta tensors a copy cannot be told from a view, so only a compute op is checked)
    (add,) = _kernels(lambda x, y: x.t() + y, (16, 16), (16, 16), meta=True)
    assert add.inner_run == 1


def test_views_carry_no_run_and_reads_in_order_none():
    ops = count(_F(lambda x: x.t().contiguous()), (torch.ones(8, 8),), python=False).ops
    assert [(r.op, r.inner_run) for r in ops] == [("aten.t.default", 0), ("aten.contiguous.default", 1)]


def test_copies_with_short_runs_are_gathers_and_other_ops_keep_their_key():
    (copy,) = _kernels(lambda x: x.view(64, 4, 2).transpose(0, 1).contiguous(), (64, 8))
    assert gather_run(copy) == 2 and op_key(copy) == CalKey("gather")
    assert op_features(copy) == [math.log2(copy.bytes), 1.0]
    (add,) = _kernels(lambda x, y: x.t() + y, (16, 16), (16, 16))
    assert gather_run(add) == 1 and op_key(add) == CalKey("aten.add.Tensor")
    (long,) = _kernels(lambda x: x.view(2, 4, 64).transpose(0, 1).contiguous(), (8, 64))
    assert long.inner_run == 64 and gather_run(long) is None and op_key(long) == CalKey("aten.contiguous.default")


def test_each_gather_case_reads_in_the_runs_it_is_named_for():
    cases = [c for c in _grid.grid() if c.kind == "gather"]
    assert {c.params[1] for c in cases} == {1, 2, 4, 8, 32} and all(c.key == CalKey("gather") for c in cases)
    for c in cases:
        if c.params[0] > 16384:
            continue   # the large ones only cost time here; the builder is the same
        fn, xs = c.build()
        (r,) = count(_F(fn), xs, python=False).kernel_ops
        assert (r.inner_run, op_key(r), r.bytes) == (c.params[1], CalKey("gather"), 8 * c.params[0])
        assert _grid.per_channel(c)


def _curve(op, key, pts, run=None):
    return [{"label": f"{op} {b}", "op": op, "key": key, "features": [0.0, math.log2(run) if run else 0.0],
             "flops": 0, "bytes": b, "seconds": t, "per_channel": run is not None} for b, t in pts]


def test_a_gather_is_priced_on_its_runs_curve_and_a_scattered_add_pays_the_gather_beyond_a_clone():
    cal = (_curve("aten.contiguous.default", "gather", [(1e3, 4e-6), (1e6, 4e-3)], run=1)
           + _curve("aten.contiguous.default", "gather", [(1e3, 2e-6), (1e6, 2e-3)], run=4)
           + _curve("aten.clone.default", "aten.clone.default", [(1e3, 1e-6), (1e6, 1e-3)])
           + _curve("aten.add.Tensor", "aten.add.Tensor", [(1e3, 1e-6), (1e6, 1e-3)]))
    p = Predictor(MachineProfile.synthetic(calibration=cal))
    (copy,) = _kernels(lambda x: x.view(256, 2, 2).transpose(0, 1).contiguous(), (256, 4))   # runs of 2
    t, method = p.op_time(copy)
    assert method == "curve" and t == pytest.approx(math.sqrt(4e-6 * 2e-6) * copy.bytes / 1e3)   # halfway in log2 runs
    (add,) = _kernels(lambda x, y: x.t() + y, (64, 64), (64, 64))     # runs of 1; a copy of the output: 32 KB
    plain = p._curve_time(CalKey("aten.add.Tensor"), add.bytes)
    t, method = p.op_time(add)
    assert method == "curve+gather" and t == pytest.approx(plain + (4e-6 - 1e-6) * 32768 / 1e3)
    (inorder,) = _kernels(lambda x, y: x + y, (64, 64), (64, 64))
    assert p.op_time(inorder) == (pytest.approx(plain), "curve")
    # a profile without the gather curves (cached before them) prices as before
    old = Predictor(MachineProfile.synthetic(calibration=[c for c in cal if c["key"] != "gather"]))
    assert old.gather_extra(add) == 0.0 and old.op_time(add)[1] == "curve"


def test_a_model_that_gathers_asks_the_lazy_profile_for_the_gather_and_clone_curves():
    res = count(_F(lambda x: torch.nn.functional.layer_norm(x.transpose(1, 2), (16,))), (torch.ones(1, 16, 64),),
                python=False)
    ids = _grid.cases_for(res.ops, llc_bytes=32 * 2**20).ids
    assert {c.id for c in _grid.grid() if c.kind == "gather"} <= ids
    assert any(i.startswith("clone ") for i in ids)
    plain = count(_F(lambda x: torch.nn.functional.layer_norm(x, (16,))), (torch.ones(1, 64, 16),), python=False)
    assert not any(i.startswith("gather ") for i in _grid.cases_for(plain.ops, llc_bytes=32 * 2**20).ids)


def test_a_prediction_shows_the_gather_per_op():
    cal = (_curve("aten.contiguous.default", "gather", [(1e3, 4e-6), (1e6, 4e-3)], run=1)
           + _curve("aten.clone.default", "aten.clone.default", [(1e3, 1e-6), (1e6, 1e-3)])
           + _curve("aten.add.Tensor", "aten.add.Tensor", [(1e3, 1e-6), (1e6, 1e-3)]))
    res = count(_F(lambda x, y: x.t() + y), (torch.ones(64, 64), torch.ones(64, 64)), python=False)
    pred = predict(res, MachineProfile.synthetic(calibration=cal))
    assert [o["method"] for o in pred.ops if o["op"] == "aten.add.Tensor"] == ["curve+gather"]
