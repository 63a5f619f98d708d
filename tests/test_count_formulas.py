"""Exact closed-form tests: one small module or functional call per formula family,
compared to the integer (arithmetic in the comments)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flopgap.count import Cost, Meta, count, register_formula
from flopgap.count._formulas import adaptive_window_total, attended_pairs, einsum_macs, matmul_macs


class Fn(nn.Module):
    def __init__(self, fn, *mods):
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(mods)

    def forward(self, *xs):
        return self.fn(*xs)


def run(fn, *inputs, grad=False):
    return count(Fn(fn), inputs, grad=grad)


def kernel(result):
    return [r for r in result.kernel_ops]


# ------------------------------------------------------------------ matmul family
def test_linear_with_bias():
    m = nn.Linear(6, 5)
    r = count(m, (torch.randn(4, 6),))
    # MACs 4*6*5 = 120; FLOPs 2*120 + bias 4*5 = 260
    assert (r.macs, r.flops) == (120, 260)
    # bytes read: x 4*6*4 + W 5*6*4 + b 5*4 = 96+120+20 = 236; written 4*5*4 = 80
    assert (r.bytes_read, r.bytes_written) == (236, 80)
    assert r.params == 35


def test_linear_without_bias_3d_input():
    m = nn.Linear(8, 3, bias=False)
    r = count(m, (torch.randn(2, 7, 8),))
    assert (r.macs, r.flops) == (2 * 7 * 8 * 3, 2 * 2 * 7 * 8 * 3)  # 336, 672


def test_matmul_operator_and_functions():
    a, b = torch.randn(3, 4, 5), torch.randn(5, 6)
    # broadcast matmul: 3*4*6*5 = 360 MACs
    assert run(lambda x, y: x @ y, a, b).macs == 360
    assert run(torch.matmul, a, b).flops == 720
    assert run(torch.bmm, torch.randn(2, 3, 4), torch.randn(2, 4, 5)).macs == 2 * 3 * 4 * 5
    # baddbmm adds the bias: 2*(2*3*5*4) + 2*3*5 = 270
    r = run(lambda c, x, y: torch.baddbmm(c, x, y), torch.randn(2, 3, 5), torch.randn(2, 3, 4), torch.randn(2, 4, 5))
    assert (r.macs, r.flops) == (120, 270)
    r = run(lambda c, x, y: torch.addmm(c, x, y), torch.randn(3, 5), torch.randn(3, 4), torch.randn(4, 5))
    assert (r.macs, r.flops) == (60, 135)  # 3*4*5 = 60; 2*60 + 15
    assert run(torch.mm, torch.randn(3, 4), torch.randn(4, 5)).flops == 120


def test_matmul_macs_closed_forms():
    assert matmul_macs((7,), (7,)) == 7
    assert matmul_macs((4,), (4, 3)) == 12
    assert matmul_macs((2, 1, 3, 4), (5, 4, 6)) == 2 * 5 * 3 * 6 * 4
    assert matmul_macs((3, 4), (4,)) == 12


def test_einsum():
    a, b = torch.randn(2, 3, 4), torch.randn(2, 4, 5)
    # bij,bjk->bik loops over b,i,j,k: 2*3*4*5 = 120 MACs
    assert run(lambda x, y: torch.einsum("bij,bjk->bik", x, y), a, b).macs == 120
    assert einsum_macs("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]) == 2 * 3 * 4 + 2 * 4 * 5
    assert einsum_macs("...ij,...jk", [(7, 2, 3), (7, 3, 4)]) == 7 * 2 * 3 * 4


# ------------------------------------------------------------------ convolution
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_conv2d_groups_stride_dilation(groups):
    m = nn.Conv2d(8, 12, kernel_size=3, stride=2, padding=2, dilation=2, groups=groups)
    r = count(m, (torch.randn(2, 8, 11, 11),))
    out = m(torch.randn(2, 8, 11, 11))
    ho, wo = out.shape[-2:]  # (11 + 4 - 4 - 1)//2 + 1 = 6
    assert (ho, wo) == (6, 6)
    macs = 2 * 12 * 6 * 6 * (8 // groups) * 3 * 3  # N*Cout*Ho*Wo*(Cin/g)*k*k
    assert r.macs == macs
    assert r.flops == 2 * macs + 2 * 12 * 6 * 6  # + bias per output


def test_conv1d_and_conv3d():
    r = count(nn.Conv1d(3, 4, 5, bias=False), (torch.randn(1, 3, 20),))
    assert r.macs == 1 * 4 * 16 * 3 * 5  # Lout = 16
    r = count(nn.Conv3d(2, 3, 3, bias=False), (torch.randn(1, 2, 5, 5, 5),))
    assert r.macs == 3 * 27 * 2 * 27  # Cout*Dout*Hout*Wout*Cin*k^3


def test_conv_transpose2d():
    m = nn.ConvTranspose2d(4, 6, kernel_size=3, stride=2, groups=2, bias=False)
    x = torch.randn(1, 4, 5, 5)
    r = count(m, (x,))
    # every input element scatters to Cout/g * k*k outputs: 4*5*5 * 3 * 9 = 2700
    assert r.macs == 2700 and r.flops == 5400


def test_conv_under_grad_decomposes_to_convolution_with_same_count():
    m = nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    inf = count(m, (x,))
    grad = count(m, (x,), grad=True)
    assert inf.flops == grad.flops == 2 * (4 * 36 * 3 * 9) + 4 * 36
    assert {r.op for r in inf.kernel_ops} == {"aten.conv2d.default"}
    assert {r.op for r in grad.kernel_ops} == {"aten.convolution.default"}


# ------------------------------------------------------------------ attention
def test_sdpa_closed_form_full_and_causal():
    b, h, l, e = 2, 3, 8, 4
    q = k = v = torch.randn(b, h, l, e)
    full = run(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), q, k, v)
    # MACs: B*H*L*S*(E+Ev) = 2*3*8*8*8 = 3072; FLOPs 2*3072 + 6*B*H*L*S = 6144 + 2304
    assert (full.macs, full.flops) == (3072, 8448)
    causal = run(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v)
    pairs = l * (l + 1) // 2  # 36 of 64
    assert causal.macs == b * h * pairs * 2 * e  # 1728
    assert causal.flops == 2 * 1728 + 6 * b * h * pairs


def test_attended_pairs_rectangular():
    assert attended_pairs(4, 4, True) == 10
    assert attended_pairs(2, 5, True) == 1 + 2
    assert attended_pairs(5, 2, True) == 1 + 2 + 2 + 2 + 2
    assert attended_pairs(3, 7, False) == 21


def test_transformer_block_with_sdpa_matches_closed_form():
    """A pre-norm block written with F.scaled_dot_product_attention, causal and not."""

    class Block(nn.Module):
        def __init__(self, d, heads, causal):
            super().__init__()
            self.d, self.h, self.causal = d, heads, causal
            self.ln = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln(x)).split(d, dim=-1)
            q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
            return x + self.proj(a.transpose(1, 2).reshape(b, t, d))

    b, t, d, h = 2, 16, 32, 4
    for causal in (False, True):
        r = count(Block(d, h, causal), (torch.randn(b, t, d),))
        pairs = t * (t + 1) // 2 if causal else t * t
        ln = 5 * b * t * d
        qkv = 2 * b * t * d * 3 * d + b * t * 3 * d
        att = 2 * b * h * pairs * 2 * (d // h) + 6 * b * h * pairs
        proj = 2 * b * t * d * d + b * t * d
        residual = b * t * d
        assert r.flops == ln + qkv + att + proj + residual, causal
        assert r.coverage == 1.0


def test_native_mha_fast_path_counted():
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    r = count(Fn(lambda x: mha(x, x, x, need_weights=False)[0], mha), (x,))
    assert [o.op for o in r.kernel_ops] == ["aten._native_multi_head_attention.default"]
    tokens = 2 * 5
    proj = 4 * tokens * 16 * 16  # q, k, v and out projections
    att_pairs = 2 * 4 * 5 * 5
    assert r.macs == proj + att_pairs * 2 * 4
    assert r.flops == 2 * r.macs + 4 * tokens * 16 + 6 * att_pairs


# ------------------------------------------------------------------ element-wise, reductions, softmax
def test_pointwise_and_activation_one_flop_per_output():
    x = torch.randn(3, 7)
    assert run(lambda x: x + 1, x).flops == 21
    assert run(F.gelu, x).flops == 21
    assert run(F.hardswish, x).flops == 21
    assert run(lambda x: torch.relu_(x.clone()), x).flops == 21  # clone is data movement


def test_broadcast_input_bytes_count_once():
    x, bias = torch.randn(64, 32), torch.randn(32)
    r = run(lambda x, b: x + b.expand(64, 32), x, bias)
    add = [o for o in r.ops if o.op == "aten.add.Tensor"][0]
    # x 64*32*4 = 8192 + expanded bias (stride 0 rows) 32*4 = 128
    assert add.bytes_read == 8192 + 128 and add.bytes_written == 8192


def test_reductions_and_softmax():
    x = torch.randn(4, 10)
    assert run(lambda x: x.sum(-1), x).flops == 40
    assert run(lambda x: x.var(-1), x).flops == 120
    assert run(lambda x: torch.softmax(x, -1), x).flops == 200  # 5 per element
    assert run(lambda x: torch.log_softmax(x, -1), x).flops == 200


# ------------------------------------------------------------------ norms
def test_norms():
    x = torch.randn(2, 6, 5, 5)  # 300 elements
    assert count(nn.LayerNorm([5, 5]), (x,)).flops == 5 * 300
    assert count(nn.LayerNorm([5, 5], elementwise_affine=False), (x,)).flops == 4 * 300
    assert count(nn.GroupNorm(3, 6), (x,)).flops == 5 * 300
    assert count(nn.BatchNorm2d(6).eval(), (x,)).flops == 2 * 300  # running stats
    train = count(nn.BatchNorm2d(6).train(), (x,))
    bn = [o for o in train.ops if o.op == "aten.batch_norm.default"][0]
    assert bn.flops == 5 * 300  # computes statistics
    assert train.flops == 5 * 300 + 1  # + num_batches_tracked += 1
    assert count(nn.RMSNorm(5), (torch.randn(3, 5),)).flops == 4 * 15


# ------------------------------------------------------------------ pooling
def test_pooling():
    x = torch.randn(1, 2, 8, 8)
    assert count(nn.MaxPool2d(2), (x,)).flops == 2 * 4 * 4 * 4  # 32 outputs * 4 window
    assert count(nn.AvgPool2d(3, stride=1), (x,)).flops == 2 * 36 * 9
    # adaptive 8 -> 3: windows [0,3) [2,6) [5,8) = 3+4+3 = 10 per dim
    assert adaptive_window_total(8, 3) == 10
    assert count(nn.AdaptiveAvgPool2d(3), (x,)).flops == 2 * 10 * 10
    assert count(nn.AdaptiveAvgPool2d(1), (x,)).flops == 2 * 64


# ------------------------------------------------------------------ embedding, gathers, data movement
def test_embedding_reads_only_rows():
    emb = nn.Embedding(1000, 16)
    idx = torch.randint(0, 1000, (2, 5))
    r = count(emb, (idx,))
    op = r.kernel_ops[0]
    assert op.flops == 0 and op.kind == "data-movement"
    assert op.bytes_read == 10 * 16 * 4 + 10 * 8  # rows touched + int64 indices
    assert op.bytes_written == 10 * 16 * 4
    assert r.params == 16000


def test_cat_and_views():
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    r = run(lambda a, b: torch.cat([a.t(), b.t()]).view(-1), a, b)
    kinds = {o.op: o.kind for o in r.ops}
    assert kinds["aten.t.default"] == "view" and kinds["aten.view.default"] == "view"
    cat = [o for o in r.ops if o.op == "aten.cat.default"][0]
    assert cat.flops == 0 and cat.bytes_read == 48 and cat.bytes_written == 48
    assert len(r.kernel_ops) == 1


def test_reshape_that_copies_is_data_movement_and_returned_input_is_free():
    x = torch.randn(4, 6)
    r = run(lambda x: x.t().reshape(-1), x)  # transposed: reshape must copy
    reshape = [o for o in r.ops if o.op == "aten.reshape.default"][0]
    assert reshape.kind == "data-movement" and reshape.bytes_written == 96
    r = run(lambda x: F.dropout(x, 0.5, training=False) + 0, x)  # eval dropout returns its input
    drop = [o for o in r.ops if o.op == "aten.dropout.default"][0]
    assert drop.kind == "noop" and drop.bytes_read == 0 and drop.flops == 0


# ------------------------------------------------------------------ recurrent
def test_lstm_single_op_closed_form():
    lstm = nn.LSTM(input_size=5, hidden_size=7, num_layers=1).eval()
    x = torch.randn(3, 2, 5)  # T=3, B=2
    r = count(lstm, (x,))
    lstm_ops = [o for o in r.kernel_ops if o.family == "rnn"]
    assert len(lstm_ops) == 1
    macs = 3 * 2 * (4 * 7 * 5 + 4 * 7 * 7)  # T*B*(w_ih + w_hh) = 6*336 = 2016
    assert lstm_ops[0].macs == macs
    assert lstm_ops[0].flops == 2 * macs + 3 * 2 * 7 * (8 + 9)  # biases 2 per gate + 9 pointwise


def test_gru_cell():
    cell = nn.GRUCell(4, 6)
    r = count(cell, (torch.randn(3, 4),))
    op = [o for o in r.kernel_ops if o.family == "rnn"][0]
    assert op.macs == 3 * (18 * 4 + 18 * 6)  # B*(w_ih + w_hh)


# ------------------------------------------------------------------ quantized
def test_dynamic_quantized_linear_counts_int8_weight_bytes():
    from torch.ao.quantization import quantize_dynamic

    q = quantize_dynamic(nn.Sequential(nn.Linear(64, 32)), {nn.Linear}, dtype=torch.qint8)
    r = count(q, (torch.randn(2, 64),))
    op = [o for o in r.kernel_ops if o.family == "quantized"][0]
    assert op.op == "quantized.linear_dynamic.default"
    assert (op.macs, op.flops) == (2 * 64 * 32, 2 * 2 * 64 * 32 + 2 * 32)
    # x fp32 2*64*4 = 512, W int8 32*64 = 2048, bias fp32 32*4 = 128
    assert op.bytes_read == 512 + 2048 + 128
    assert r.params == 64 * 32 + 32


# ------------------------------------------------------------------ never silently zero
def test_uncovered_op_is_reported_with_share_and_module():
    lib = torch.library.Library("flopgaptest", "DEF")
    lib.define("mystery(Tensor x) -> Tensor")
    lib.impl("mystery", lambda x: x * 2, "CPU")

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Fn(lambda x: torch.ops.flopgaptest.mystery(x))

        def forward(self, x):
            return self.inner(x) + 1

    r = count(M(), (torch.randn(4),))
    unc = r.uncovered()
    assert [u["op"] for u in unc] == ["flopgaptest.mystery.default"]
    assert unc[0]["calls"] == 1 and unc[0]["modules"] == {"inner": 1}
    assert unc[0]["share"] == pytest.approx(0.5)
    assert r.coverage == pytest.approx(0.5)
    mystery = [o for o in r.ops if o.kind == "uncovered"][0]
    assert mystery.bytes_read == 16 and mystery.flops == 0  # bytes known, FLOPs unknown


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_formula(torch.ops.aten.mm, family="matmul")(lambda a, o: Cost())


def test_meta_sizes():
    assert Meta((2, 3), torch.float16).nbytes == 12
    assert Meta((4, 5), torch.float32, (0, 1)).nbytes == 20  # broadcast rows count once
