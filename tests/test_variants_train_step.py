"""The ``train-step`` variant: one training step timed against an inference call."""

from __future__ import annotations

import copy
import json
import subprocess

import pytest
import torch
from torch import nn

from conftest import FLOPGAP
from flopgap.count import count
from flopgap.timing import FakeLoad, TimerOptions
from flopgap.variants import get_variant, run_variants
from flopgap.variants._train import TRAIN_STEP_LR, TrainStep


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def test_one_step_is_forward_backward_sgd_update_and_frees_gradients():
    model = _mlp()
    before = copy.deepcopy(model)
    x = torch.randn(2, 4)
    step = TrainStep(model)
    with torch.inference_mode():  # the timer's context: the step turns autograd on inside
        outs = step(x)
    assert model.training and len(outs) == 1 and outs[0].shape == (2, 3)
    # SGD: w' = w - lr * grad, the gradient of the MSE against the step's fixed target
    ref = copy.deepcopy(before).train()
    out = ref(x)
    nn.functional.mse_loss(out, step._targets[next(iter(step._targets))][0]).backward()
    for p, q, r in zip(model.parameters(), before.parameters(), ref.parameters()):
        assert torch.allclose(p, q - TRAIN_STEP_LR * r.grad)
        assert p.grad is None  # zero_grad(set_to_none=True) ends the step


def test_counting_a_step_sees_backward_and_optimizer_ops():
    step = TrainStep(_mlp())
    c = count(step, (torch.randn(2, 4),))
    ops = [r.op for r in c.kernel_ops]
    assert {"aten.threshold_backward.default", "aten.mse_loss.default", "aten.mse_loss_backward.default"} <= set(ops)
    # the SGD update: one in-place add per parameter tensor (4), 8*4 + 8 + 3*8 + 3 elements
    updates = [r.flops for r in c.kernel_ops if r.op == "aten.add_.Tensor"]
    assert updates == [32, 8, 24, 3]
    assert c.uncovered() == []


def test_thousands_of_steps_keep_weights_finite_and_away_from_zero():
    model = _mlp()
    step = TrainStep(model)
    x = torch.randn(2, 4)
    with torch.inference_mode():
        for _ in range(2000):
            step(x)
    w = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.isfinite(w).all() and w.abs().max() > 1e-3


def test_train_step_row_is_a_cost_not_a_speedup():
    assert get_variant("train-step").default is False and get_variant("train-step").remedy is False
    result = run_variants(_mlp(), variants=["train-step"], input_specs=["2x4"],
                          timer=TimerOptions(max_time=0.3, precision=0.2), load=FakeLoad())
    eager, row = result.rows
    assert (row.variant, row.status) == ("train-step", "ok")
    assert row.max_abs_err is None and row.ops > eager.ops  # forward + backward + update
    (finding,) = [f for f in result.findings if f.variant == "train-step"]
    assert finding.kind == "cost" and "an eager inference call" in finding.text
    assert abs(finding.numbers["cost"] * row.speedup - 1) < 1e-9


@pytest.mark.slow
def test_cli_train_step():
    p = subprocess.run([FLOPGAP, "variants", "seed:ex2-wide", "--try", "train-step", "--max-time", "0.3",
                        "--json", "-"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stderr == ""
    d = json.loads(p.stdout)
    assert [r["variant"] for r in d["rows"]] == ["eager", "train-step"]
    # a cost in inference calls, or "inconclusive" when the sentinel saw this shared machine busy
    assert d["rows"][1]["status"] == "ok"
    assert [f["kind"] for f in d["findings"] if f.get("variant") == "train-step"] in (["cost"], ["inconclusive"])
