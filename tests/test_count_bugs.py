"""Counting regressions, each against an exact closed form (arithmetic in the comments):
TorchScript files, LSTM projections, RNNs with autograd on, the encoder's nested-tensor
fast path, ops that accumulate (fold, scatter_add, index_put, cumulative_trapezoid),
in-place metadata ops, and the totals line."""

import subprocess
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import FLOPGAP
from flopgap.count import count


def _script(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated: still what users have on disk
        return torch.jit.script(module)


# ------------------------------------------------------------------ 1. TorchScript files
def test_torchscript_module_counts_like_eager():
    m = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.randn(3, 8)
    eager, scripted = count(m, (x,)), count(_script(m), (x,))
    # 2*3*8*4 + 3*4 (bias) + 3*4 (relu) + 2*3*4*2 + 3*2 = 192 + 12 + 12 + 48 + 6 = 270
    assert eager.flops == scripted.flops == 270
    assert scripted.params == eager.params == 8 * 4 + 4 + 4 * 2 + 2  # 46


def test_torchscript_file_through_the_cli(tmp_path):
    path = tmp_path / "mlp_script.pt"
    torch.jit.save(_script(nn.Sequential(nn.Linear(8, 4)).eval()), str(path))
    p = subprocess.run([FLOPGAP, "count", str(path), "-i", "3x8", "--json", "-"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert '"flops": 204' in p.stdout  # 2*3*8*4 + 3*4 = 204


# ------------------------------------------------------------------ 2. LSTM with proj_size
def test_lstm_with_projection_counts_w_hr():
    m = nn.LSTM(64, 128, num_layers=2, batch_first=True, proj_size=32).eval()
    r = count(m, (torch.randn(4, 50, 64),))
    # per step and sample: layer 0 w_ih 512*64 + w_hh 512*32 + w_hr 32*128 = 32768+16384+4096 = 53248;
    # layer 1 w_ih 512*32 + w_hh 512*32 + w_hr 4096 = 36864; (53248+36864) * 50 steps * 4 = 18,022,400
    assert r.macs == 18_022_400
    # + per hidden unit (H=128, not proj 32) and step: 8 bias adds + 9 gate ops, 2 layers:
    # 2*18,022,400 + 50*4*2*128*17 = 36,044,800 + 870,400
    assert r.flops == 36_915_200
    assert r.coverage == 1.0


# ------------------------------------------------------------------ 3. RNNs with autograd on
def test_lstm_grad_mode_equals_inference():
    m = nn.LSTM(64, 128, num_layers=2, batch_first=True).eval()
    x = torch.randn(4, 50, 64)
    inf, grad = count(m, (x,)), count(m, (x,), grad=True)  # grad: one aten.mkldnn_rnn_layer per layer
    # per step and sample: layer 0 512*(64+128), layer 1 512*(128+128); * 50 steps * 4 = 45,875,200
    assert inf.macs == grad.macs == 45_875_200
    assert grad.flops == inf.flops and grad.coverage == 1.0


def test_gru_grad_mode_decomposes_with_the_same_macs():
    m = nn.GRU(64, 128, num_layers=2, batch_first=True).eval()
    x = torch.randn(4, 50, 64)
    inf, grad = count(m, (x,)), count(m, (x,), grad=True)  # grad: GRU cells as mm/addmm + pointwise ops
    # 384*(64+128) + 384*(128+128) = 172,032 per step and sample; * 200 = 34,406,400
    assert inf.macs == grad.macs == 34_406_400
    assert grad.coverage == 1.0


# ------------------------------------------------------------------ 4. the encoder's nested-tensor path
def test_encoder_with_padding_mask_counts_each_sequence_at_its_length():
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    enc = nn.TransformerEncoder(layer, 2).eval()
    x = torch.randn(2, 10, 64)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[1, 6:] = True  # sequence lengths 10 and 6
    r = count(enc, (x, None, mask))
    # one layer over a sequence of length L (d=64, 4 heads, ffn 128):
    #   projections 2*4L*64*64 + biases 4L*64, scores 2*4*L*L*(16+16) + 6*4*L*L,
    #   ffn 2*2*L*64*128 + biases L*(128+64) + gelu L*128, two norms 2*5*L*64, residuals 2*L*64
    #   = 66,880 L + 280 L^2 -> L=10: 696,800; L=6: 411,360
    # 2 layers * (696,800 + 411,360) = 2,216,320, + 2 logical_not over the 2x10 mask = 40
    assert r.flops == 2_216_360
    assert r.coverage == 1.0


# ------------------------------------------------------------------ 6. ops that accumulate
class _Accumulate(nn.Module):
    def forward(self, cols, idx, src):
        a = F.fold(cols, (8, 8), kernel_size=3)
        b = torch.zeros(4, 10).scatter_add(0, idx, src)
        c = torch.zeros(4, 10).index_put((idx[0],), src[0], accumulate=True)
        d = torch.cumulative_trapezoid(src, dim=1)
        z = torch.zeros(4, 10)
        z.scatter_add_(0, idx, src)
        return a, b, c, d, z


def test_accumulating_ops_count_their_adds():
    r = count(_Accumulate(), (torch.randn(1, 2 * 9, 36), torch.randint(0, 4, (4, 10)), torch.randn(4, 10)))
    flops = {}
    for o in r.kernel_ops:
        flops[o.op] = flops.get(o.op, 0) + o.flops
    assert flops["aten.col2im.default"] == 18 * 36  # fold adds each of the 648 column elements
    assert flops["aten.scatter_add.default"] == 40  # one add per index entry (4x10)
    assert flops["aten.index_put.default"] == 100  # 10 indexed rows x 10 columns, accumulated
    assert flops["aten.cumulative_trapezoid.dx"] == 3 * 4 * 9  # (a+b)*dx/2 + running sum per output
    assert flops["aten.scatter_add_.default"] == 40
    assert r.coverage == 1.0
    # in place, only the 40 touched elements move: read index 40*8 + src 40*4 + old values 40*4, write 40*4
    inplace = next(o for o in r.kernel_ops if o.op == "aten.scatter_add_.default")
    assert (inplace.bytes_read, inplace.bytes_written) == (320 + 160 + 160, 160)


def test_index_put_without_accumulate_is_data_movement():
    class Put(nn.Module):
        def forward(self, x, i, v):
            return x.index_put((i,), v)

    r = count(Put(), (torch.zeros(4, 10), torch.tensor([0, 2]), torch.randn(2, 10)))
    assert r.flops == 0 and r.coverage == 1.0


# ------------------------------------------------------------------ 7. in-place metadata ops
class _InPlaceMeta(nn.Module):
    def forward(self, x):
        y = x * 2
        y.detach_()
        y.transpose_(0, 1)
        y.as_strided_((2, 2), (1, 1))
        return y


def test_in_place_metadata_ops_are_free_not_uncovered():
    r = count(_InPlaceMeta(), (torch.randn(3, 3),))
    assert [o.op for o in r.kernel_ops] == ["aten.mul.Tensor"]
    assert r.coverage == 1.0 and r.flops == 9


def test_totals_line_spaces_units():
    from rich.console import Console

    from flopgap.report.count_view import render_count

    for module, x, expected in ((nn.Linear(100, 100), torch.randn(1, 100), "20.1 kFLOPs, 10 kMACs"),
                                (nn.Identity(), torch.randn(2, 2), "0 FLOPs, 0 MACs")):
        console = Console(record=True, width=200)
        render_count(count(module, (x,)), console)
        assert expected in console.export_text()  # 2*100*100 + 100 bias = 20,100 FLOPs
