"""The formulas. Conventions (also in the README and ``flopgap count --help``):

- A fused multiply-add is **2 FLOPs** and **1 MAC**. ``flops = 2 * macs`` for the
  contraction part of matmul, conv, attention and RNN gates; bias adds are +1 FLOP
  per output element (0 MACs).
- Element-wise ops and activations: 1 FLOP per output element, whatever the function
  (``gelu`` counts as ``add``). Selections (``where``, ``masked_fill``) move data: 0.
  Dropout: 0 in eval (a no-op), 2 per element in training (mask + scale).
  Interpolation (linear/bilinear/bicubic/trilinear upsampling): 8 per output element;
  nearest: 0 (data movement). Reductions: 1 FLOP per input element (var/std: 3,
  vector norm: 2, logsumexp: 4; sort/topk/median are counted as reductions too).
  Softmax / log-softmax: 5 per element (max, subtract, exp, sum, divide).
- Norms that compute statistics (layer/group/instance/batch-norm in training): 5 FLOPs
  per element with an affine transform, 4 without; RMS norm 4 with weight, 3 without;
  batch norm with running statistics (inference): 2 per element (folded scale + shift).
- Pooling: one FLOP per window element per output (max: compare, avg: add); adaptive
  pools use their exact window sizes.
- Attention: ``2*B*P*(E + Ev)`` for the two matmuls plus 6 per score (scale + softmax),
  where ``P`` is the number of attended query-key pairs: ``L*S``, or for
  ``is_causal`` the unmasked lower triangle ``sum_i min(i+1, S)`` (``L(L+1)/2`` when
  ``L == S``, i.e. about half).
- Data movement (copy, cat, pad, gather, embedding): 0 FLOPs, bytes counted; embedding
  and gathers read only the rows they touch (``embedding_bag`` adds 1 FLOP per summed
  element). A one-operand ``einsum`` (permutation or reduction) counts 0 FLOPs.
- Quantized ops: integer multiply-adds are counted as FLOPs/MACs like float ones;
  bytes use the real element sizes (int8 weights are 1 byte).
"""

from __future__ import annotations

import math

import torch

from flopgap.count._registry import ZERO, Cost, Meta, declare_free, register_formula



class _Ops:
    """``aten.name`` that yields ``None`` for ops this torch build lacks (skipped on registration)."""

    def __getattr__(self, name):
        try:
            return getattr(torch.ops.aten, name)
        except (AttributeError, RuntimeError):
            return None


aten = _Ops()

__all__: list[str] = []  # formulas are reached through the registry, not imported


def _prod(xs) -> int:
    return math.prod(int(x) for x in xs)


def _out(outs) -> Meta:
    return outs[0]


def _bias_flops(a: dict, key: str, out: Meta) -> int:
    return out.numel if isinstance(a.get(key), Meta) else 0


def _mm_cost(macs: int, extra: int = 0) -> Cost:
    return Cost(flops=2 * macs + extra, macs=macs)


# ---------------------------------------------------------------- matmul family
@register_formula(aten.mm, aten._int_mm, family="matmul")
def _mm(a, outs):
    m, k = a["self"].shape
    n = a["mat2"].shape[1]
    return _mm_cost(m * n * k)  # 2*m*n*k FLOPs


@register_formula(aten.addmm, family="matmul")
def _addmm(a, outs):
    m, k = a["mat1"].shape
    n = a["mat2"].shape[1]
    return _mm_cost(m * n * k, m * n)  # + bias add per output


@register_formula(aten.bmm, family="matmul")
def _bmm(a, outs):
    b, m, k = a["self"].shape
    n = a["mat2"].shape[2]
    return _mm_cost(b * m * n * k)


@register_formula(aten.baddbmm, family="matmul")
def _baddbmm(a, outs):
    b, m, k = a["batch1"].shape
    n = a["batch2"].shape[2]
    return _mm_cost(b * m * n * k, b * m * n)


def matmul_macs(x: tuple, y: tuple) -> int:
    """MACs of ``torch.matmul`` for shapes ``x @ y`` with numpy broadcasting rules."""
    if len(x) == 1 and len(y) == 1:
        return x[0]
    xs = (1, *x) if len(x) == 1 else tuple(x)
    ys = (*y, 1) if len(y) == 1 else tuple(y)
    m, k = xs[-2], xs[-1]
    n = ys[-1]
    batch = torch.broadcast_shapes(torch.Size(xs[:-2]), torch.Size(ys[:-2]))
    return _prod(batch) * m * n * k


@register_formula(aten.matmul, family="matmul")
def _matmul(a, outs):
    return _mm_cost(matmul_macs(a["self"].shape, a["other"].shape))


@register_formula(aten.mv, aten.dot, aten.vdot, family="matmul")
def _mv(a, outs):
    return _mm_cost(a["self"].numel)  # m*n for mv, n for dot


@register_formula(aten.addmv, family="matmul")
def _addmv(a, outs):
    return _mm_cost(a["mat"].numel, a["mat"].shape[0])


@register_formula(aten.linear, family="matmul")
def _linear(a, outs):
    x, w = a["input"], a["weight"]
    rows = x.numel // x.shape[-1]
    out_features = w.shape[0] if len(w.shape) == 2 else 1
    macs = rows * out_features * w.shape[-1]
    return _mm_cost(macs, rows * out_features if isinstance(a.get("bias"), Meta) else 0)


def einsum_macs(equation: str, shapes: list[tuple]) -> int:
    """MACs of ``einsum``: operands contracted left to right, each pairwise step costs
    the product of the sizes of every index it touches (the loop nest it runs).
    ``...`` dimensions broadcast from the right like numpy."""
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    raw_terms = lhs.split(",")
    ranks = [len(shape) - len(t.replace("...", "")) for t, shape in zip(raw_terms, shapes)]
    ell = "".join(chr(0x3B1 + i) for i in range(max([r for r, t in zip(ranks, raw_terms) if "..." in t], default=0)))
    terms = []
    for t, r in zip(raw_terms, ranks):
        terms.append(t.replace("...", ell[len(ell) - r:] if r else "") if "..." in t else t)
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for c, n in zip(term, shape):
            sizes[c] = max(sizes.get(c, 1), int(n))
    if arrow:
        rhs = rhs.replace("...", ell)
    else:
        counts: dict[str, int] = {}
        for t in terms:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        rhs = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    if len(terms) == 1:
        return 0  # a permutation or a reduction: counted as data movement
    macs, current = 0, terms[0]
    for i, nxt in enumerate(terms[1:], start=1):
        later = set("".join(terms[i + 1:])) | set(rhs)
        macs += _prod(sizes[c] for c in set(current) | set(nxt))
        current = "".join(c for c in dict.fromkeys(current + nxt) if c in later)
    return macs


@register_formula(aten.einsum, family="matmul")
def _einsum(a, outs):
    return _mm_cost(einsum_macs(a["equation"], [t.shape for t in a["tensors"]]))


# ---------------------------------------------------------------- convolution family
def conv_macs(x: tuple, w: tuple, out: tuple, transposed: bool) -> int:
    """MACs of a convolution. Normal: every output element needs ``Cin/g * prod(k)``
    MACs; transposed: every *input* element scatters to ``Cout/g * prod(k)`` outputs."""
    kernel = _prod(w[2:])
    if transposed:
        return _prod(x) * w[1] * kernel
    return _prod(out) * w[1] * kernel


@register_formula(aten.convolution, aten._convolution, family="conv")
def _convolution(a, outs):
    out = _out(outs)
    macs = conv_macs(a["input"].shape, a["weight"].shape, out.shape, bool(a["transposed"]))
    return _mm_cost(macs, _bias_flops(a, "bias", out))


@register_formula(aten.conv1d, aten.conv2d, aten.conv3d, aten.mkldnn_convolution, family="conv")
def _conv_nd(a, outs):
    out = _out(outs)
    macs = conv_macs(a["input"].shape if "input" in a else a["self"].shape, a["weight"].shape, out.shape, False)
    return _mm_cost(macs, _bias_flops(a, "bias", out))


@register_formula(aten.conv_transpose1d, aten.conv_transpose2d, aten.conv_transpose3d, family="conv")
def _conv_transpose(a, outs):
    out = _out(outs)
    macs = conv_macs(a["input"].shape, a["weight"].shape, out.shape, True)
    return _mm_cost(macs, _bias_flops(a, "bias", out))


# ---------------------------------------------------------------- attention family
_SCORE_FLOPS = 6  # scale (1) + softmax (5) per query-key score


def attended_pairs(length: int, source: int, causal: bool) -> int:
    """Query-key pairs that attention computes: ``L*S``, or the causal lower triangle
    (top-left aligned, as ``is_causal`` in PyTorch): ``sum_{i<L} min(i+1, S)``."""
    if not causal:
        return length * source
    full = min(length, source)
    # rows 0..full-1 see i+1 keys; the remaining rows see all S keys
    return full * (full + 1) // 2 + (length - full) * source


def attention_cost(q: tuple, k: tuple, v: tuple, causal: bool) -> Cost:
    batch = _prod(q[:-2])
    pairs = attended_pairs(q[-2], k[-2], causal)
    macs = batch * pairs * (q[-1] + v[-1])
    return Cost(flops=2 * macs + _SCORE_FLOPS * batch * pairs, macs=macs)


@register_formula(
    aten.scaled_dot_product_attention, aten._scaled_dot_product_flash_attention_for_cpu,
    aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_efficient_attention,
    aten._scaled_dot_product_cudnn_attention, aten._scaled_dot_product_attention_math,
    aten._scaled_dot_product_fused_attention_overrideable,
    family="attention",
)
def _sdpa(a, outs):
    return attention_cost(a["query"].shape, a["key"].shape, a["value"].shape, bool(a.get("is_causal", False)))


def _mha_cost(q: tuple, k: tuple, embed: int, heads: int, qkv_bias: bool, proj_bias: bool) -> tuple[int, int]:
    """(flops, macs) of a packed multi-head attention block (projections included)."""
    b_l = _prod(q[:-1])
    b_s = _prod(k[:-1])
    proj_macs = (b_l + 2 * b_s) * embed * embed + b_l * embed * embed  # q, k, v in; out
    batch = _prod(q[:-2]) * heads
    head_dim = embed // heads
    att = attention_cost((batch, q[-2], head_dim), (batch, k[-2], head_dim), (batch, k[-2], head_dim), False)
    bias = ((b_l + 2 * b_s) * embed if qkv_bias else 0) + (b_l * embed if proj_bias else 0)
    return 2 * proj_macs + bias + att.flops, proj_macs + att.macs


@register_formula(aten._native_multi_head_attention, family="attention")
def _native_mha(a, outs):
    flops, macs = _mha_cost(a["query"].shape, a["key"].shape, int(a["embed_dim"]), int(a["num_head"]),
                            isinstance(a.get("qkv_bias"), Meta), isinstance(a.get("proj_bias"), Meta))
    return Cost(flops=flops, macs=macs)


@register_formula(aten._transformer_encoder_layer_fwd, family="attention")
def _encoder_layer(a, outs):
    if a["src"].parts is not None:
        # nested src (a padding mask turned the batch into sequences of their own lengths):
        # each sequence is a batch of one, attending over its own length only
        total = Cost()
        for part in a["src"].parts:
            c = _encoder_layer({**a, "src": Meta((1, *part), a["src"].dtype)}, outs)
            total = Cost(flops=total.flops + c.flops, macs=total.macs + c.macs)
        return total
    src = a["src"].shape
    d = int(a["embed_dim"])
    tokens = _prod(src[:-1])
    flops, macs = _mha_cost(src, src, d, int(a["num_heads"]), isinstance(a.get("qkv_bias"), Meta),
                            isinstance(a.get("proj_bias"), Meta))
    ffn = a["ffn_weight_1"].shape[0]
    ffn_macs = 2 * tokens * d * ffn
    ffn_flops = 2 * ffn_macs + tokens * (ffn + d)  # + the two biases
    ffn_flops += tokens * ffn  # activation
    norms = 2 * 5 * tokens * d  # two affine layer norms
    residual = 2 * tokens * d
    return Cost(flops=flops + ffn_flops + norms + residual, macs=macs + ffn_macs)


# ---------------------------------------------------------------- recurrent family
def rnn_cost(steps: int, batch: int, weights: list[Meta], gates: int, has_biases: bool,
             pointwise_per_h: int, per_layer: int | None = None) -> Cost:
    """Weights come in groups per layer and direction: ``(w_ih, w_hh[, b_ih, b_hh][, w_hr])``
    (``w_hr`` is the LSTM projection of ``proj_size``). Each time step multiplies the input
    by ``w_ih``, the state by ``w_hh`` and, with a projection, the new state by ``w_hr``.

    ``per_layer`` is the group size (2-5); ``None`` infers it from ``has_biases`` (no
    projection). The hidden size of a group is ``w_hh.shape[0] // gates``: with a
    projection ``w_hh`` is ``[gates*H, proj_size]``, so its second dimension is not ``H``.
    """
    group = per_layer or (4 if has_biases else 2)
    macs = 0
    elementwise = 0
    for i in range(0, len(weights) - group + 1, group):
        w_ih, w_hh = weights[i], weights[i + 1]
        macs += w_ih.numel + w_hh.numel
        if group in (3, 5):  # w_hr: [proj_size, H], applied to h after the gates
            macs += weights[i + group - 1].numel
        elementwise += w_hh.shape[0] // gates
    macs *= steps * batch
    per_elem = (2 * gates if has_biases else 0) + pointwise_per_h
    return Cost(flops=2 * macs + steps * batch * elementwise * per_elem, macs=macs)


_RNN_GATES = {"lstm": (4, 9), "gru": (3, 9), "rnn_tanh": (1, 1), "rnn_relu": (1, 1)}


def _rnn_formula(kind: str):
    gates, pointwise = _RNN_GATES[kind]

    def formula(a, outs):
        x = a["input"].shape if "input" in a else a["data"].shape
        params = [p for p in a["params"]]
        if "batch_sizes" in a:  # packed sequence: data is [sum of lengths, I]
            steps, batch = x[0], 1
        elif len(x) == 2:  # unbatched [T, I]
            steps, batch = x[0], 1
        else:
            steps, batch = (x[1], x[0]) if a.get("batch_first") else (x[0], x[1])
        groups = int(a["num_layers"]) * (2 if a.get("bidirectional") else 1)
        return rnn_cost(steps, batch, params, gates, bool(a["has_biases"]), pointwise,
                        per_layer=len(params) // groups)

    return formula


for _kind in _RNN_GATES:
    register_formula(getattr(aten, _kind), family="rnn")(_rnn_formula(_kind))


_MKLDNN_MODES = {0: "rnn_relu", 1: "rnn_tanh", 2: "lstm", 3: "gru"}  # oneDNN's algorithm kinds


@register_formula(aten.mkldnn_rnn_layer, family="rnn")
def _mkldnn_rnn_layer(a, outs):
    """One layer and direction of an RNN on oneDNN (what ``nn.LSTM`` dispatches with
    autograd on): same cost as that layer's share of ``aten.lstm``."""
    gates, pointwise = _RNN_GATES[_MKLDNN_MODES[int(a["mode"])]]
    x = a["input"].shape
    if len(x) == 2:
        steps, batch = x[0], 1
    else:
        steps, batch = (x[1], x[0]) if a.get("batch_first") else (x[0], x[1])
    has_biases = bool(a["has_biases"])
    weights = [a["weight0"], a["weight1"]] + ([a["weight2"], a["weight3"]] if has_biases else [])
    return rnn_cost(steps, batch, weights, gates, has_biases, pointwise)


def _cell_formula(kind: str):
    gates, pointwise = _RNN_GATES[kind]

    def formula(a, outs):
        x = a["input"].shape
        batch = x[0] if len(x) == 2 else 1
        w_ih, w_hh = a["w_ih"], a["w_hh"]
        macs = batch * (w_ih.numel + w_hh.numel)
        hidden = w_hh.shape[1]
        bias = 2 * gates if isinstance(a.get("b_ih"), Meta) else 0
        return Cost(flops=2 * macs + batch * hidden * (bias + pointwise), macs=macs)

    return formula


for _kind, _op in (("lstm", aten.lstm_cell), ("gru", aten.gru_cell), ("rnn_tanh", aten.rnn_tanh_cell),
                   ("rnn_relu", aten.rnn_relu_cell)):
    register_formula(_op, family="rnn")(_cell_formula(_kind))


# ---------------------------------------------------------------- element-wise / activations
def _per_output(factor: int):
    def formula(a, outs):
        return Cost(flops=factor * sum(o.numel for o in outs if isinstance(o, Meta)))

    return formula


pointwise = _per_output(1)  # also the fallback for ops tagged ``torch.Tag.pointwise``
register_formula(
    aten.hardswish, aten.hardswish_, aten.hardsigmoid, aten.hardsigmoid_, aten.gelu_, aten.mish, aten.mish_,
    aten.softplus, aten.elu, aten.elu_, aten.selu, aten.selu_, aten.celu, aten.prelu, aten._prelu_kernel,
    aten.relu6, aten.hardtanh, aten.hardtanh_, aten.leaky_relu, aten.leaky_relu_, aten.silu, aten.silu_,
    aten.glu, aten.logit, aten.threshold, aten.square, aten.addcmul, aten.addcdiv, aten.lerp, aten.clamp_min, aten.clamp_max,
    aten.clamp_, aten.clamp_min_, aten.clamp_max_, aten.sign, aten.quantize_per_tensor,
    aten.quantize_per_tensor_dynamic, aten.quantize_per_channel, aten.dequantize, aten.fake_quantize_per_tensor_affine,
    aten.native_dropout, aten.diff, family="pointwise",
)(pointwise)


@register_formula(aten.dropout, aten.dropout_, aten.feature_dropout, aten.feature_dropout_, aten.alpha_dropout,
                  aten.alpha_dropout_, aten.feature_alpha_dropout, aten.feature_alpha_dropout_, family="pointwise")
def _dropout(a, outs):
    if not a.get("train", True):
        return Cost(noop=True)  # eval mode: returns (or leaves) its input untouched
    return Cost(flops=2 * _out(outs).numel)  # mask draw + scale


@register_formula(aten.upsample_bilinear2d, aten._upsample_bilinear2d_aa, aten.upsample_bicubic2d,
                  aten.upsample_linear1d, aten.upsample_trilinear3d, family="pointwise")
def _interpolate(a, outs):
    # 2-D bilinear: 4 weighted taps, multiply + add each (bicubic counted the same)
    return Cost(flops=8 * _out(outs).numel)


# ---------------------------------------------------------------- reductions
def _per_input(factor: int, key: str = "self"):
    def formula(a, outs):
        x = a.get(key)
        return Cost(flops=factor * (x.numel if isinstance(x, Meta) else 0))

    return formula


register_formula(
    aten.sum, aten.mean, aten.amax, aten.amin, aten.max, aten.min, aten.argmax, aten.argmin, aten.prod,
    aten.any, aten.all, aten.cumsum, aten.cumprod, aten.nansum, aten.count_nonzero, aten.topk, aten.sort,
    aten.aminmax, aten.median, aten.mode, aten.kthvalue, aten.logcumsumexp, aten.nanmean,
    family="reduction",
)(_per_input(1))
register_formula(aten.var, aten.std, aten.var_mean, aten.std_mean, family="reduction")(_per_input(3))
register_formula(aten.linalg_vector_norm, aten.norm, aten.frobenius_norm, family="reduction")(_per_input(2))
register_formula(aten.logsumexp, family="reduction")(_per_input(4))


# ---------------------------------------------------------------- softmax
register_formula(aten.softmax, aten._softmax, aten.log_softmax, aten._log_softmax, aten._safe_softmax,
                 family="softmax")(_per_input(5))


@register_formula(aten._masked_softmax, family="softmax")
def _masked_softmax(a, outs):
    return Cost(flops=5 * a["self"].numel)


# ---------------------------------------------------------------- norms
def _norm_flops(x: Meta, affine: bool) -> int:
    return (5 if affine else 4) * x.numel


@register_formula(aten.layer_norm, aten.native_layer_norm, family="norm")
def _layer_norm(a, outs):
    return Cost(flops=_norm_flops(a["input"], isinstance(a.get("weight"), Meta)))


@register_formula(aten.group_norm, aten.native_group_norm, aten.instance_norm, family="norm")
def _group_norm(a, outs):
    return Cost(flops=_norm_flops(a["input"], isinstance(a.get("weight"), Meta)))


@register_formula(aten.rms_norm, aten._fused_rms_norm, family="norm")
def _rms_norm(a, outs):
    return Cost(flops=(4 if isinstance(a.get("weight"), Meta) else 3) * a["input"].numel)


@register_formula(aten.batch_norm, aten.native_batch_norm, aten._native_batch_norm_legit,
                  aten._batch_norm_impl_index, aten.cudnn_batch_norm, aten.miopen_batch_norm,
                  aten._batch_norm_with_update, aten.batch_norm_stats, family="norm")
def _batch_norm(a, outs):
    x = a["input"]
    training = bool(a.get("training", True))
    if not training or a.get("running_mean") is not None and "training" not in a:
        return Cost(flops=2 * x.numel)
    return Cost(flops=_norm_flops(x, isinstance(a.get("weight"), Meta)))


@register_formula(aten._native_batch_norm_legit_no_training, aten._batch_norm_no_update, family="norm")
def _batch_norm_eval(a, outs):
    return Cost(flops=2 * a["input"].numel)  # running stats: y = x * scale + shift


# ---------------------------------------------------------------- pooling
def _ints(value, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    return value * n if len(value) == 1 else value


def _window_pool(dims: int):
    def formula(a, outs):
        out = _out(outs)
        kernel = _ints(a["kernel_size"], dims)
        return Cost(flops=out.numel * _prod(kernel))

    return formula


for _dims, _ops in ((1, (aten.max_pool1d, aten.avg_pool1d, aten.max_pool1d_with_indices)),
                    (2, (aten.max_pool2d, aten.avg_pool2d, aten.max_pool2d_with_indices, aten.mkldnn_max_pool2d)),
                    (3, (aten.max_pool3d, aten.avg_pool3d, aten.max_pool3d_with_indices, aten.mkldnn_max_pool3d))):
    register_formula(*_ops, family="pool")(_window_pool(_dims))


def adaptive_window_total(in_size: int, out_size: int) -> int:
    """Sum of the adaptive pooling window lengths along one dimension
    (window i spans ``floor(i*in/out)`` to ``ceil((i+1)*in/out)``)."""
    return sum(-(-((i + 1) * in_size) // out_size) - (i * in_size) // out_size for i in range(out_size))


def _adaptive(dims: int):
    def formula(a, outs):
        x = a["self"] if "self" in a else a["input"]
        out = _out(outs)
        lead = _prod(x.shape[:-dims])
        total = lead
        for i_s, o_s in zip(x.shape[-dims:], out.shape[-dims:]):
            total *= adaptive_window_total(i_s, o_s)
        return Cost(flops=total)

    return formula


for _dims, _ops in ((1, (aten.adaptive_avg_pool1d, aten.adaptive_max_pool1d)),
                    (2, (aten.adaptive_avg_pool2d, aten._adaptive_avg_pool2d, aten.adaptive_max_pool2d,
                         aten.mkldnn_adaptive_avg_pool2d)),
                    (3, (aten.adaptive_avg_pool3d, aten._adaptive_avg_pool3d, aten.adaptive_max_pool3d))):
    register_formula(*_ops, family="pool")(_adaptive(_dims))


# ---------------------------------------------------------------- embedding and gathers
@register_formula(aten.embedding, family="embedding")
def _embedding(a, outs):
    w, idx = a["weight"], a["indices"]
    out = _out(outs)
    # only the rows looked up are read, plus the indices
    return Cost(bytes_read=idx.numel * w.shape[-1] * w.itemsize + idx.nbytes, bytes_written=out.nbytes)


@register_formula(aten.embedding_bag, aten._embedding_bag, family="embedding")
def _embedding_bag(a, outs):
    w, idx = a["weight"], a["indices"]
    rows = idx.numel * w.shape[-1]
    return Cost(flops=rows, bytes_read=rows * w.itemsize + idx.nbytes, bytes_written=_out(outs).nbytes)


@register_formula(aten.index, aten.index_select, aten.gather, aten.take, aten.take_along_dim,
                  aten.masked_select, family="data-movement")
def _gather(a, outs):
    out = _out(outs)
    index_bytes = 0
    for key in ("indices", "index"):
        value = a.get(key)
        if isinstance(value, Meta):
            index_bytes += value.nbytes
        elif isinstance(value, (list, tuple)):
            index_bytes += sum(v.nbytes for v in value if isinstance(v, Meta))
    return Cost(bytes_read=out.nbytes + index_bytes, bytes_written=out.nbytes)


# ---------------------------------------------------------------- data movement (0 FLOPs, bytes)
register_formula(
    aten.cat, aten.stack, aten.hstack, aten.vstack, aten.clone, aten.copy_, aten._to_copy, aten.copy,
    aten.constant_pad_nd, aten.pad, aten.reflection_pad1d, aten.reflection_pad2d, aten.reflection_pad3d,
    aten.replication_pad1d, aten.replication_pad2d, aten.replication_pad3d, aten.roll, aten.flip,
    aten.repeat, aten.tile, aten.repeat_interleave, aten.masked_scatter, aten.channel_shuffle,
    aten.native_channel_shuffle, aten.pixel_shuffle, aten.pixel_unshuffle, aten.upsample_nearest1d,
    aten.upsample_nearest2d, aten.upsample_nearest3d, aten._upsample_nearest_exact2d, aten.tril, aten.triu,
    aten.slice_scatter, aten.select_scatter, aten.diagonal_scatter, aten.im2col,
    aten.contiguous, aten.to, aten.reshape, aten.flatten,
    aten.unflatten, aten.type_as, aten._reshape_alias, aten.masked_fill, aten.masked_fill_, aten.where,
    aten.lift_fresh_copy, aten._nested_tensor_from_mask, aten.to_padded_tensor,
    aten.resize_, aten.set_, aten.matrix_H, aten.block_diag, aten.diag_embed, aten.new_tensor,
    family="data-movement",
)(lambda a, outs: ZERO)


# ---------------------------------------------------------------- scatters that may accumulate
def _index_bytes(value) -> int:
    if isinstance(value, Meta):
        return value.nbytes
    if isinstance(value, (list, tuple)):
        return sum(v.nbytes for v in value if isinstance(v, Meta))
    return 0


def _scatter_cost(touched: int, itemsize: int, extra_read: int, accumulate: bool, in_place: bool,
                  out: Meta) -> Cost:
    """``touched`` elements are written (and, accumulating, read and added: 1 FLOP each).
    In place, only the touched elements move; out of place the result is a full copy
    of ``self`` with the touched elements replaced (the generic rule)."""
    flops = touched if accumulate else 0
    if not in_place:
        return Cost(flops=flops)
    read = extra_read + (touched * itemsize if accumulate else 0)
    return Cost(flops=flops, bytes_read=read, bytes_written=touched * itemsize)


def _scatter_formula(accumulate_always: bool, in_place: bool, source_key: str = "src"):
    """``scatter``/``scatter_add``/``scatter_reduce``/``index_add``/``index_copy``
    families: the elements touched are the index's (scatter) or the source's (index_*)."""

    def formula(a, outs):
        x = a["self"]
        index = a["index"]
        src = a.get(source_key)
        if source_key == "src":  # scatter: one element per index entry
            touched = index.numel
        else:  # index_add/index_copy/index_reduce: the whole source slab
            touched = src.numel if isinstance(src, Meta) else index.numel
        accumulate = accumulate_always or a.get("reduce") is not None
        extra = index.nbytes + (touched * x.itemsize if isinstance(src, Meta) else 0)
        return _scatter_cost(touched, x.itemsize, extra, accumulate, in_place, _out(outs))

    return formula


register_formula(aten.scatter_add, aten.scatter_reduce, family="scatter")(_scatter_formula(True, False))
register_formula(aten.scatter_add_, aten.scatter_reduce_, family="scatter")(_scatter_formula(True, True))
register_formula(aten.scatter, family="scatter")(_scatter_formula(False, False))
register_formula(aten.scatter_, family="scatter")(_scatter_formula(False, True))
register_formula(aten.index_add, aten.index_reduce, family="scatter")(_scatter_formula(True, False, "source"))
register_formula(aten.index_add_, aten.index_reduce_, family="scatter")(_scatter_formula(True, True, "source"))
register_formula(aten.index_copy, family="scatter")(_scatter_formula(False, False, "source"))
register_formula(aten.index_copy_, family="scatter")(_scatter_formula(False, True, "source"))


def indexed_elements(self_shape: tuple, indices) -> int:
    """Elements addressed by advanced indexing ``self[indices]``: the broadcast shape of
    the index tensors times every dimension they leave alone (``None`` entries and the
    trailing dimensions). A boolean mask counts every element it covers (an upper bound:
    how many are set is data, not shape)."""
    shapes, covered = [], set()
    dim = 0
    for i in indices:
        if isinstance(i, Meta):
            width = len(i.shape) if i.dtype == torch.bool else 1
            covered.update(range(dim, dim + width))
            shapes.append(torch.Size(i.shape) if i.dtype != torch.bool else torch.Size([_prod(i.shape)]))
            dim += width
        else:
            dim += 1
    rest = _prod(d for k, d in enumerate(self_shape) if k not in covered)
    return (_prod(torch.broadcast_shapes(*shapes)) if shapes else 1) * rest


def _index_put_formula(in_place: bool):
    def formula(a, outs):
        x = a["self"]
        touched = indexed_elements(tuple(x.shape), list(a["indices"]))
        accumulate = bool(a.get("accumulate", False))
        extra = _index_bytes(a["indices"]) + a["values"].nbytes
        return _scatter_cost(touched, x.itemsize, extra, accumulate, in_place, _out(outs))

    return formula


register_formula(aten.index_put, family="scatter")(_index_put_formula(False))
register_formula(aten.index_put_, aten._index_put_impl_, family="scatter")(_index_put_formula(True))


@register_formula(aten.put, family="scatter")
def _put(a, outs):
    return Cost(flops=a["index"].numel if a.get("accumulate") else 0)


@register_formula(aten.put_, family="scatter")
def _put_(a, outs):
    x, n = a["self"], a["index"].numel
    acc = bool(a.get("accumulate"))
    return _scatter_cost(n, x.itemsize, a["index"].nbytes + a["source"].nbytes, acc, True, _out(outs))


@register_formula(aten.col2im, family="scatter")
def _col2im(a, outs):
    # fold: every column element is added into its place of the (zeroed) output, and
    # overlapping patches sum: 1 FLOP per input element
    return Cost(flops=a["self"].numel)


@register_formula(aten.cumulative_trapezoid, family="reduction")
def _cumulative_trapezoid(a, outs):
    # per output element: (y[i] + y[i+1]) * dx / 2, then the running sum: 3 FLOPs;
    # with sample points x, dx = x[i+1] - x[i] adds a subtraction
    return Cost(flops=(4 if isinstance(a.get("x"), Meta) else 3) * _out(outs).numel)


@register_formula(aten.zeros, aten.ones, aten.full, aten.arange, aten.range, aten.linspace, aten.eye,
                  aten.zeros_like, aten.ones_like, aten.full_like, aten.new_zeros, aten.new_ones,
                  aten.new_full, aten.rand, aten.randn, aten.randint, aten.rand_like, aten.randn_like,
                  aten.fill_, aten.zero_, aten.fill, aten.normal_, aten.uniform_, aten.bernoulli_,
                  aten.scalar_tensor, aten.tensor, family="data-movement")
def _create(a, outs):
    return Cost(bytes_read=0, bytes_written=sum(o.nbytes for o in outs if isinstance(o, Meta)))


# ---------------------------------------------------------------- quantized (torch.ao) kernels
@register_formula("quantized.linear_dynamic", "quantized.linear_relu_dynamic", "quantized.linear_dynamic_fp16",
                  "quantized.linear", "quantized.linear_relu", family="quantized")
def _qlinear(a, outs):
    x = a.get("X") if "X" in a else next(v for v in a.values() if isinstance(v, Meta))
    packed = next(v for v in a.values() if isinstance(v, tuple) and v and isinstance(v[0], Meta))
    w, b = packed[0], packed[1] if len(packed) > 1 else None
    rows = x.numel // x.shape[-1]
    macs = rows * w.shape[0] * w.shape[1]
    extra = rows * w.shape[0] if isinstance(b, Meta) else 0
    read = x.nbytes + w.nbytes + (b.nbytes if isinstance(b, Meta) else 0)
    return Cost(flops=2 * macs + extra, macs=macs, bytes_read=read,
                bytes_written=sum(o.nbytes for o in outs if isinstance(o, Meta)))


@register_formula("quantized.conv1d", "quantized.conv2d", "quantized.conv3d", "quantized.conv1d_relu",
                  "quantized.conv2d_relu", "quantized.conv3d_relu", family="quantized")
def _qconv(a, outs):
    x = next(v for v in a.values() if isinstance(v, Meta))
    packed = next(v for v in a.values() if isinstance(v, tuple) and v and isinstance(v[0], Meta))
    w, b = packed[0], packed[1] if len(packed) > 1 else None
    out = _out(outs)
    macs = conv_macs(x.shape, w.shape, out.shape, False)
    extra = out.numel if isinstance(b, Meta) else 0
    read = x.nbytes + w.nbytes + (b.nbytes if isinstance(b, Meta) else 0)
    return Cost(flops=2 * macs + extra, macs=macs, bytes_read=read, bytes_written=out.nbytes)


register_formula("quantized.add", "quantized.add_relu", "quantized.mul", "quantized.cat", "quantized.relu6",
                 family="quantized")(pointwise)


# ---------------------------------------------------------------- declared free
declare_free(aten.detach, aten.lift_fresh, aten.alias, aten._unsafe_view, aten.view, aten.t,
             aten.expand, aten.as_strided, aten.transpose, aten.permute, aten.squeeze, aten.unsqueeze,
             aten.slice, aten.select, aten.split, aten.split_with_sizes, aten.chunk, aten.unbind,
             aten.narrow, aten.view_as, aten.expand_as, aten.unfold, aten.diagonal, aten.movedim,
             aten.swapaxes, aten.numpy_T, aten.mT, aten.real, aten.view_as_real, aten.view_as_complex,
             aten._conj, aten._neg_view, aten.unsafe_split, aten.tensor_split, family="view")
declare_free(aten.sym_size, aten.sym_stride, aten.sym_numel, aten.sym_storage_offset, aten.is_same_size,
             aten._local_scalar_dense, aten.item, aten.size, aten.stride, aten.dim, aten.is_nonzero,
             aten.equal, aten._assert_async, aten._assert_tensor_metadata, aten._functional_assert_async,
             aten.record_stream, aten._nested_tensor_from_mask_left_aligned, family="metadata")
# in-place metadata changes: they rewrite a tensor's sizes/strides (or autograd flag), never its data
declare_free(aten.detach_, aten.as_strided_, aten.transpose_, aten.t_, aten.squeeze_, aten.unsqueeze_,
             aten.swapaxes_, aten.swapdims_, aten.requires_grad_, family="metadata")
declare_free(aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.new_empty_strided,
             aten.empty_permuted, family="alloc")
