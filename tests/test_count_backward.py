"""Backward counting: exact closed forms for the gradients autograd computes, per phase."""

import json
import subprocess

import pytest
import torch
from torch import nn

from conftest import FLOPGAP
from flopgap.count import count


def _phase(result, name):
    return result.phase(name)


def test_linear_weight_and_bias_gradients_only_when_input_needs_none():
    torch.manual_seed(0)
    lin = nn.Linear(4, 8)
    c = count(lin, (torch.randn(2, 4),), backward=True)
    assert c.mode == "train" and c.backward
    # forward addmm: 2*2*4*8 + 2*8 (bias) = 144
    assert _phase(c, "forward").flops == 144
    bwd = _phase(c, "backward")
    # weight gradient mm (8x2 @ 2x4): 2*8*2*4 = 128; bias gradient sum over 2x8: 16
    assert bwd.flops == 128 + 16 and bwd.macs == 64
    assert sorted(r.op for r in bwd.kernel_ops) == ["aten.mm.default", "aten.sum.dim_IntList"]
    assert c.flops == 144 + 144


def test_linear_input_gradient_when_the_input_requires_grad():
    lin = nn.Linear(4, 8)
    x = torch.randn(2, 4, requires_grad=True)
    bwd = count(lin, (x,), backward=True).phase("backward")
    # + input gradient mm (2x8 @ 8x4): 2*2*8*4 = 128
    assert bwd.flops == 128 + 16 + 128 and bwd.macs == 128


def test_conv2d_weight_input_and_bias_gradients():
    conv = nn.Conv2d(3, 4, 3)
    # out 2x4x6x6 = 288 elements, each 3*3*3 = 27 MACs: 7776 MACs
    c = count(conv, (torch.randn(2, 3, 8, 8),), backward=True)
    assert c.phase("forward").flops == 2 * 7776 + 288
    bwd = c.phase("backward")
    assert [r.op for r in bwd.kernel_ops] == ["aten.convolution_backward.default"]
    assert bwd.flops == 2 * 7776 + 288 and bwd.macs == 7776  # weight gradient + bias gradient
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    bwd = count(conv, (x,), backward=True).phase("backward")
    assert bwd.flops == 2 * 2 * 7776 + 288 and bwd.macs == 2 * 7776  # + the input gradient


def test_mlp_backward_is_counted_not_assumed():
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    c = count(mlp, (torch.randn(2, 4),), backward=True)
    # forward: 2*2*4*8 + 16 = 144; relu 16; 2*2*8*3 + 6 = 102
    assert c.phase("forward").flops == 144 + 16 + 102
    bwd = c.phase("backward")
    # layer 2: input gradient 2*2*3*8 = 96, weight gradient 96, bias 6; relu backward 16;
    # layer 1: weight gradient 2*8*2*4 = 128, bias 16, no input gradient
    assert bwd.flops == 96 + 96 + 6 + 16 + 128 + 16 == 358
    per_module = {m.name: m.flops for m in bwd.modules}
    assert per_module == {"": 358, "0": 144, "1": 16, "2": 198}
    assert c.phase_totals()["backward"]["flops"] == 358
    assert {r.phase for r in c.ops} == {"forward", "backward"}


def test_batch_norm_backward_in_training_mode_and_modes_restored():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    c = count(model, (torch.randn(2, 3, 8, 8),), backward=True)
    bn_fwd = [r for r in c.phase("forward").kernel_ops if "batch_norm" in r.op]
    bn_bwd = [r for r in c.phase("backward").kernel_ops if "batch_norm" in r.op]
    # 2x4x6x6 = 288 elements: batch statistics forward 5 each, backward 5 + 4 (input gradient)
    assert [r.flops for r in bn_fwd] == [5 * 288] and [r.flops for r in bn_bwd] == [9 * 288]
    assert not model.training and not model[1].training  # each module's flag restored


def test_no_output_requires_grad_is_a_usage_error():
    from flopgap.errors import UsageError

    lin = nn.Linear(3, 3).requires_grad_(False)
    with pytest.raises(UsageError, match="no output requires grad"):
        count(lin, (torch.randn(1, 3),), backward=True)


def test_cli_backward_json_and_table(tmp_path):
    out = tmp_path / "c.json"
    p = subprocess.run([FLOPGAP, "count", "seed:ex2-wide", "--backward", "--json", str(out)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0 and p.stderr == f"wrote {out}\n"
    data = json.loads(out.read_text())
    # Linear(100,500) and Linear(500,100) at batch 1: forward 2*(50000 + 50000) + 500 + 100
    assert data["mode"] == "train" and data["phases"]["forward"]["flops"] == 200600
    # backward: two weight gradients (2*50000 each), biases (500 + 100), one input gradient (2*50000)
    assert data["phases"]["backward"]["flops"] == 300600
    assert "backward" in data["conventions"]
    assert {op["phase"] for op in data["ops"]} == {"forward", "backward"}
    assert "backward / forward: 1.50x FLOPs" in p.stdout and "per phase" in p.stdout


def test_a_machine_profile_keeps_chains_of_counted_records():
    """A profile's synthetic chains store count records as dicts (their phase included)
    and must load back: the cache check knows every OpRecord field."""
    from dataclasses import asdict

    from flopgap.machine import MachineProfile

    c = count(nn.Linear(4, 4), (torch.randn(1, 4),))
    chain = {"label": "x", "ops": [asdict(r) for r in c.ops], "module_calls": 1, "seconds": 1e-5,
             "round_seconds": [1e-5]}
    prof = MachineProfile.synthetic(chains=[chain])
    again = MachineProfile.from_dict(prof.to_dict())
    assert again.chains[0]["ops"][0]["phase"] == "forward"
