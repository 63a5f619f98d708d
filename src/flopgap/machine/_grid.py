"""The calibration grid: single ops over a fixed lattice of shapes, and which of them a
model needs.

Every case is one functional call (``F.conv2d``, ``F.linear``, ``torch.relu_``,
``F.scaled_dot_product_attention`` ...) on random inputs. A case is described before
it is run (:class:`Case`: its id, the :class:`~flopgap.machine._keys.CalKey` its op
gets, and for k-NN keys its shape features), so the cases near a model's ops can be
chosen from the model's count without running anything (:func:`cases_for`). When a
case is measured it is also counted (:func:`flopgap.count.count`), so its FLOPs, bytes
and features are exactly what the counting pass gives a model's op; a test holds the
description to the count.

The grid covers the shapes CNNs, MLPs and transformers use (1x1/3x3/strided dense
convs, patchify stems, 1x1 convs on 1x1 maps (squeeze-excitation), depthwise 3x3 to
9x9, grouped convs of group width 8-64, linears from 1x8x8 to 512x768x3072, fused
attention from single-token decode to 512x512 causal, elementwise, norm, pool and
reduction ops from 1 KB to 13 MB); it is a lattice chosen once, never built from the
models that are later predicted.

Lazily calibrating a model measures only the cases :func:`cases_for` picks: for each
distinct k-NN op, the :data:`NEIGHBOURS` grid cases nearest to it in shape features
(more than the predictor's k = 4, so that the predictor's neighbours among *measured*
cases are its neighbours in the whole grid) plus the key's smallest case (its fixed
cost); for each curve op, every case of its key. A prediction from a lazily
calibrated profile is therefore the prediction the full grid gives.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flopgap.machine._keys import (GATHER, SIMD_FLOATS, CalKey, _attention_dims, _matmul_dims, cold_share,
                                   conv_features, gather_run, op_features, op_key)

__all__ = ["Case", "grid", "grid_index", "cases_for", "chain_needs", "per_channel", "weight", "Needs", "NEIGHBOURS",
           "COLD_BYTES", "exact_case", "case_by_id"]

# more than the predictor's k = 4 nearest cases: the measured neighbourhood then holds
# the predictor's neighbours even when a model's op sits between two lattice rows
NEIGHBOURS = 6
COLD_BYTES = 64 * 2**20   # cold weights rotate over 2x a 32 MiB last-level cache
_MAX_COPIES = 4096        # views of a cold weight at most (a tiny weight stays cache-resident anyway)


@dataclass(frozen=True)
class Case:
    """One calibration case: ``id`` (its cache key), ``key`` (the op's calibration model),
    ``kind`` and ``params`` (what :meth:`build` makes), ``features`` (log2 shape features
    of k-NN keys, as :func:`~flopgap.machine._keys.op_features` gives them), and
    ``est_s``, a rough a-priori time of one call (to order work and show an ETA)."""

    id: str
    key: CalKey
    kind: str
    params: tuple
    features: tuple = ()
    est_s: float = 1e-5

    def build(self) -> tuple[Callable, tuple]:
        """(fn, inputs): tensors are made only when a case runs."""
        return _BUILDERS[self.kind](*self.params, cold=self.key.cold)

    @property
    def cost_s(self) -> float:
        """Estimated seconds to count and time this case (:func:`flopgap.machine._bench.time_blocks`)."""
        return 4e-3 + 2 * self.est_s + 5 * max(1e-3, self.est_s)


class _Call(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


# ------------------------------------------------------------------ weights
@lru_cache(maxsize=1)
def _cold_pool() -> torch.Tensor:
    """One random buffer of :data:`COLD_BYTES`, shared by every cold case of a process."""
    return torch.randn(COLD_BYTES // 4)


def weight(shape: tuple, cold: bool) -> Callable[[], torch.Tensor]:
    """The weight for each call: the same tensor (hot: it stays in cache when the op is
    repeated alone), or, ``cold``, views taken in turn over a buffer larger than the
    last-level cache, so that each call reads its weight from memory, as a conv or
    linear does inside a model whose weights do not fit the cache. The input stays hot,
    as it does in a model (the previous op just wrote it). A weight of half the buffer or
    more is cold by its size alone and is used as it is."""
    n = math.prod(shape)
    pool = _cold_pool() if cold else None
    if pool is None or 2 * n > pool.numel():
        w = torch.randn(*shape)
        return lambda: w
    stride = max(-(-n // 64) * 64, pool.numel() // _MAX_COPIES // 64 * 64)   # 256-byte aligned views
    inner = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    views = torch.as_strided(pool, (pool.numel() // stride, *shape), (stride, *inner)).unbind(0)
    return itertools.cycle(views).__next__


def _conv(n, cin, cout, hw, k, stride, groups, cold=False):
    x = torch.randn(n, cin, hw, hw)
    w = weight((cout, cin // groups, k, k), cold)
    b = torch.randn(cout)
    pad = k // 2 if stride == 1 or k % 2 else 0
    return (lambda x: F.conv2d(x, w(), b, stride, pad, 1, groups)), (x,)


def _linear(m, k, n, cold=False):
    x = torch.randn(m, k)
    w = weight((n, k), cold)
    b = torch.randn(n)
    return (lambda x: F.linear(x, w(), b)), (x,)


def _qlinear(m, k, n, cold=False):
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(nn.Sequential(nn.Linear(k, n)), {nn.Linear}, dtype=torch.qint8)[0]
    # its forward, as every other case is a bare op: the module call (nn.Module.__call__)
    # is predicted apart, once per module
    return q.forward, (torch.randn(m, k),)


def _sdpa(h, L, S, e, causal, cold=False):
    q, k, v = torch.randn(1, h, L, e), torch.randn(1, h, S, e), torch.randn(1, h, S, e)
    return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)), (q, k, v)


def _nchw(n_el: int, c: int) -> torch.Tensor:
    hw = max(1, int(math.sqrt(n_el / c)))
    return torch.randn(1, c, hw, hw)


def _tokens(n_el: int, d: int) -> torch.Tensor:
    return torch.randn(1, max(1, n_el // d), d)


def _memory(name: str, n_el: int, c: int, cold=False):
    fn, make = _MEMORY_OPS[name][:2]
    return fn, make(n_el, c)


def _bn_fn():
    def f(x):
        c = x.shape[1]
        return F.batch_norm(x, torch.zeros(c), torch.ones(c), torch.ones(c), torch.zeros(c), False, 0.1, 1e-5)
    return f


def _unary(x_of):
    return lambda n_el, c: (x_of(n_el, c),)


def _binary(x_of):
    return lambda n_el, c: (x_of(n_el, c), x_of(n_el, c))


_X = _unary(_nchw)
_XX = _binary(_nchw)
_T = _unary(_tokens)


def _embedding_inputs(n_el: int, d: int) -> tuple:
    rows = max(1, n_el // d)
    return torch.randint(0, 4 * rows, (1, rows)), torch.randn(4 * rows, d)


# name -> (fn, inputs(n_el, c), CalKey of the counted op, per channel). Per-channel work
# (batch-norm scale/shift, pooling per channel) makes an op's time depend on the channel
# count, not only on bytes: those ops are timed at several widths (_CHANNELS)
_MEMORY_OPS: dict[str, tuple] = {
    "add": (lambda x, y: torch.add(x, y), _XX, CalKey("aten.add.Tensor"), True),
    "add_": (lambda x, y: x.add_(y), _XX, CalKey("aten.add_.Tensor"), False),
    "sub": (lambda x, y: torch.sub(x, y), _XX, CalKey("aten.sub.Tensor"), False),
    "mul": (lambda x, y: torch.mul(x, y), _XX, CalKey("aten.mul.Tensor"), True),
    "div": (lambda x, y: torch.div(x, y), _XX, CalKey("aten.div.Tensor"), False),
    "relu": (lambda x: torch.relu(x), _X, CalKey("aten.relu.default"), False),
    "relu_": (lambda x: torch.relu_(x), _X, CalKey("aten.relu_.default"), True),
    "relu6": (lambda x: F.relu6(x), _X, CalKey("aten.relu6.default"), False),
    "hardtanh_": (lambda x: F.hardtanh(x, 0.0, 6.0, inplace=True), _X, CalKey("aten.hardtanh_.default"), False),
    "hardswish": (lambda x: F.hardswish(x), _X, CalKey("aten.hardswish.default"), False),
    "hardswish_": (lambda x: F.hardswish(x, inplace=True), _X, CalKey("aten.hardswish_.default"), True),
    "hardsigmoid": (lambda x: F.hardsigmoid(x), _X, CalKey("aten.hardsigmoid.default"), False),
    "hardsigmoid_": (lambda x: F.hardsigmoid(x, inplace=True), _X, CalKey("aten.hardsigmoid_.default"), False),
    "silu": (lambda x: F.silu(x), _X, CalKey("aten.silu.default"), False),
    "silu_": (lambda x: F.silu(x, inplace=True), _X, CalKey("aten.silu_.default"), False),
    "sigmoid": (lambda x: torch.sigmoid(x), _X, CalKey("aten.sigmoid.default"), False),
    "sigmoid_": (lambda x: x.sigmoid_(), _X, CalKey("aten.sigmoid_.default"), False),
    "tanh": (lambda x: torch.tanh(x), _X, CalKey("aten.tanh.default"), False),
    "gelu": (lambda x: F.gelu(x), _X, CalKey("aten.gelu.default"), False),
    "mish": (lambda x: F.mish(x), _X, CalKey("aten.mish.default"), False),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), _X, CalKey("aten.leaky_relu.default"), False),
    "exp": (lambda x: torch.exp(x), _X, CalKey("aten.exp.default"), False),
    "neg": (lambda x: torch.neg(x), _X, CalKey("aten.neg.default"), False),
    "pow": (lambda x: x.pow(2), _X, CalKey("aten.pow.Tensor_Scalar"), False),
    "rsqrt": (lambda x: torch.rsqrt(x), _X, CalKey("aten.rsqrt.default"), False),
    "clone": (lambda x: x.clone(), _X, CalKey("aten.clone.default"), False),
    "batch_norm": (_bn_fn(), _X, CalKey("aten.batch_norm.default"), True),
    # layer norm over the last dimension of rows of c features (tokens in transformers,
    # channels-last pixels in ConvNeXt), timed at several row lengths: from 128 KiB up,
    # rows of 16 took 2.1-2.7x the time per byte of rows of 256 on the reference VM
    "layer_norm_rows": (lambda x: F.layer_norm(x, x.shape[-1:]), _T, CalKey("aten.layer_norm.default"), True),
    "group_norm": (lambda x: F.group_norm(x, 4), _X, CalKey("aten.group_norm.default"), False),
    "softmax": (lambda x: torch.softmax(x, -1), _X, CalKey("aten.softmax.int"), False),
    "cat": (lambda x, y: torch.cat([x, y], 1), _XX, CalKey("aten.cat.default"), False),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, 1), _X, CalKey("aten.max_pool2d.default", window=9), True),
    "max_pool2d_s1": (lambda x: F.max_pool2d(x, 3, 1, 1), _X,
                      CalKey("aten.max_pool2d.default", window=9, stride1=True), True),
    "max_pool2d_k5_s1": (lambda x: F.max_pool2d(x, 5, 1, 2), _X,   # YOLO's spatial pyramid pools
                         CalKey("aten.max_pool2d.default", window=25, stride1=True), False),
    "max_pool2d_k2": (lambda x: F.max_pool2d(x, 2, 2), _X, CalKey("aten.max_pool2d.default", window=4), True),
    "avg_pool2d_k2": (lambda x: F.avg_pool2d(x, 2, 2), _X, CalKey("aten.avg_pool2d.default", window=4), True),
    "avg_pool2d_s1": (lambda x: F.avg_pool2d(x, 3, 1, 1), _X,
                      CalKey("aten.avg_pool2d.default", window=9, stride1=True), False),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, 1), _X, CalKey("aten.adaptive_avg_pool2d.default"),
                            True),
    "mean": (lambda x: x.mean((2, 3), keepdim=True), _X, CalKey("aten.mean.dim"), True),
    "sum": (lambda x: x.sum((2, 3)), _X, CalKey("aten.sum.dim_IntList"), False),
    "upsample_nearest": (lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest"), _X,
                         CalKey("aten.upsample_nearest2d.vec"), False),
    "embedding": (lambda i, t: F.embedding(i, t), lambda n_el, c: _embedding_inputs(n_el, 64),
                  CalKey("aten.embedding.default"), False),
    "flatten": (lambda x: torch.flatten(x, 1), _X, CalKey("aten.flatten.using_ints"), False),
}
# memory ops whose inputs are 2x2 maps or more (a 2x2 window needs them)
_NEEDS_2X2 = ("max_pool2d_k2", "avg_pool2d_k2")
_SIZES = (256, 2048, 16384, 65536, 200704, 802816, 3211264)  # elements: 1 KB .. 12.8 MB in fp32
_QUICK_SIZES = (256, 65536, 3211264)
_CHANNELS = (16, 64, 256, 1024)

# gathers (a copy reading its input in short runs, see flopgap.machine._keys.GATHER_MAX_RUN):
# runs of 1 (a transposed matrix), 2 (MobileViT's 2x2 patches unfolded), 4, 8 and 32 (a
# head dimension), each at a range of sizes; a run between two of them is interpolated
_GATHER_RUNS = (1, 2, 4, 8, 32)
_QUICK_GATHER_RUNS = (1, 2, 8, 32)
_GATHER_SIZES = (2048, 16384, 65536, 262144, 1048576)   # elements: 8 KB .. 4 MB in fp32
_QUICK_GATHER_SIZES = (2048, 65536, 1048576)


def _gather(n_el: int, run: int, cold=False):
    """``x.contiguous()`` of a view that holds ``n_el`` elements in contiguous runs of
    ``run`` (a transposed matrix for 1; else ``(p, q, run)`` with its first two dims
    swapped)."""
    bits = n_el.bit_length() - 1
    if run == 1:
        a = 1 << (bits // 2)
        x = torch.randn(a, n_el // a).t()
    else:
        rest = n_el // run
        p = 1 << ((rest.bit_length() - 1) // 2)
        x = torch.randn(p, rest // p, run).transpose(0, 1)
    return (lambda t: t.contiguous()), (x,)


def _gather_cases(sizes, runs) -> Iterator[Case]:
    for n_el in sizes:
        for run in runs:
            yield Case(f"gather {n_el} r{run}", CalKey(GATHER), "gather", (n_el, run), (),
                       2e-6 + 8 * n_el / 2e10 * (8 if run < 8 else 2))


_BUILDERS: dict[str, Callable] = {"conv": _conv, "linear": _linear, "qlinear": _qlinear, "sdpa": _sdpa,
                                  "memory": _memory, "gather": _gather}


# ------------------------------------------------------------------ the lattice
def _conv_case(n, cin, cout, hw, k, stride=1, groups=1, cold=False) -> Case:
    pad = k // 2 if stride == 1 or k % 2 else 0
    out = (hw + 2 * pad - k) // stride + 1
    if groups == 1:
        key = CalKey("conv:dense")
    elif groups == cin == cout:
        key = CalKey("conv:depthwise", ragged=bool(cin % SIMD_FLOATS))
    else:
        key = CalKey("conv:grouped")
    flops = 2 * n * (cin // groups) * cout * k * k * out * out + n * cout * out * out   # FMA = 2, bias 1
    label = f"conv {cin}->{cout} k{k} s{stride} g{groups} @{hw}" + (f" n{n}" if n != 1 else "")
    feats = tuple(conv_features(n, cin // groups, cout // groups, hw * hw, out * out, k * k, groups))
    return Case(label + (" cold" if cold else ""), key.as_cold(cold), "conv", (n, cin, cout, hw, k, stride, groups),
                feats, 5e-6 + flops / 1e11)


_CONV_ID = re.compile(r"conv (\d+)->(\d+) k(\d+) s(\d+) g(\d+) @(\d+)(?: n(\d+))?( cold)?")


_LINEAR_ID = re.compile(r"linear (\d+)x(\d+)->(\d+)( cold)?")
_SDPA_ID = re.compile(r"sdpa h(\d+) (\d+)x(\d+) e(\d+)( causal)?")


def exact_case(r, cold: bool = False) -> Case | None:
    """The calibration case of exactly this convolution's shape (batch, widths, groups,
    square kernel and map, stride, the padding ``_conv_case`` gives), this
    ``aten.linear``'s (rows, inputs, outputs) or this fused attention's (batch x heads,
    queries, keys, head dim, causal or not), or None when the op is none of them.

    oneDNN and the BLAS pick their algorithm and blocking per shape, so rates jump
    between neighbouring widths (a few channels more can make a 1x1 conv several times
    slower): the nearest lattice cases cannot say what this shape costs, a case of its
    own can. ``cold``: the case's cold twin (its weight read from memory on every
    call), for a model whose footprint exceeds the cache."""
    key = op_key(r)
    if key.cold or r.flops <= 0:
        return None
    if key.name == "attention":
        return _exact_sdpa(r)
    if key.name == "matmul" and r.op == "aten.linear.default":
        dims = _matmul_dims(r)
        c = _linear_case(*dims, cold) if dims is not None and min(dims) >= 1 else None
        return c if c is not None and c.features == tuple(op_features(r)) and c.key == key.as_cold(cold) else None
    if not key.name.startswith("conv:"):
        return None
    x, w = (r.input_shapes[0], r.input_shapes[1]) if len(r.input_shapes) >= 2 else ([], [])
    y = r.output_shapes[0] if r.output_shapes else []
    if not (isinstance(x, list) and isinstance(w, list) and isinstance(y, list)) or len(x) != 4 or len(w) != 4 \
            or len(y) != 4 or x[2] != x[3] or w[2] != w[3] or y[2] != y[3] or not all(isinstance(v, int) for v in x + w):
        return None
    n, cin, hw, cout, k = x[0], x[1], x[2], w[0], w[2]
    groups = cin // max(w[1], 1)
    for stride in range(1, k + 2):
        c = _conv_case(n, cin, cout, hw, k, stride, groups, cold)
        if c.features == tuple(op_features(r)) and c.key == key.as_cold(cold):
            return c
    return None


def _exact_sdpa(r) -> Case | None:
    """A fused attention's own case: its batch x heads, queries, keys and head dim,
    causal when the count computed a causal mask's share of the pairs; None for float
    kinds the cases do not time (another dtype, fewer key than query heads, a mask tensor)."""
    d = _attention_dims(r)
    if d is None or any(t not in ("", "float32") for t in r.input_dtypes[:3]):
        return None
    k = r.input_shapes[1]
    bh, L, S, e, _ = d
    masked = len(r.input_shapes) > 3 and bool(r.input_shapes[3])   # an attn_mask tensor: another kernel
    if masked or math.prod(k[:-2]) != bh or r.input_shapes[2][-1] != e:
        return None
    feats = tuple(op_features(r))
    for causal in (False, True):
        c = _sdpa_case(bh, L, S, e, causal)
        if max(abs(a - b) for a, b in zip(c.features, feats)) < _SAME_FEATURES:
            return c
    return None


# log2 features closer than this are the same shape (float round-off of a share)
_SAME_FEATURES = 1e-10


def case_by_id(case_id: str, quick: bool = False) -> Case | None:
    """A case by its id: the lattice's, or an op's own case (:func:`exact_case`), whose
    id names its shape."""
    hit = _by_id(quick).get(case_id)
    if hit is not None:
        return hit
    m = _SDPA_ID.fullmatch(case_id)
    if m is not None:
        h, L, S, e = (int(v) for v in m.groups()[:4])
        return _sdpa_case(h, L, S, e, bool(m.group(5))) if min(h, L, S, e) >= 1 else None
    m = _LINEAR_ID.fullmatch(case_id)
    if m is not None:
        m_, k, n = (int(v) for v in m.groups()[:3])
        return _linear_case(m_, k, n, bool(m.group(4))) if min(m_, k, n) >= 1 else None
    m = _CONV_ID.fullmatch(case_id)
    if m is None:
        return None
    cin, cout, k, stride, groups, hw = (int(v) for v in m.groups()[:6])
    n = int(m.group(7) or 1)
    if min(cin, cout, k, stride, groups, hw, n) < 1 or cin % groups or cout % groups:
        return None
    return _conv_case(n, cin, cout, hw, k, stride, groups, bool(m.group(8)))


@lru_cache(maxsize=2)
def _by_id(quick: bool) -> dict[str, Case]:
    return {c.id: c for c in grid(quick)}


def _conv_shapes() -> Iterator[tuple]:
    yield 1, 8, 8, 4, 1                     # the smallest: dispatch + oneDNN setup
    pairs = [(16, 16), (32, 32), (64, 64), (128, 128), (256, 256), (512, 512), (24, 144), (144, 24),
             (64, 256), (256, 64), (512, 128), (128, 512), (1024, 256), (256, 1024), (2048, 512), (512, 2048)]
    # narrow, unequal widths: expansions and projections by 3-6x (inverted residuals)
    # run 1x1 convs far from the square pairs' rates, and 4x growth or reduction in 3x3
    # convs (DenseNet style) too
    expand = [(8, 24), (24, 8), (16, 48), (48, 16), (16, 96), (96, 16), (24, 72), (72, 24), (32, 192), (192, 32),
              (40, 240), (240, 40), (64, 384), (384, 64), (96, 576), (576, 96), (160, 960), (960, 160)]
    grow = [(128, 32), (32, 128), (16, 64), (64, 16), (48, 192), (192, 48)]
    for k, extra in ((1, expand + grow), (3, grow)):
        for cin, cout in pairs + extra:
            for hw in (7, 14, 28, 56, 112):
                flops = 2 * cin * cout * k * k * hw * hw
                if 2e5 <= flops <= 1.0e9:
                    yield 1, cin, cout, hw, k
    for cin, cout, hw, k in [(3, 64, 224, 7), (3, 32, 224, 3), (3, 16, 224, 3), (3, 24, 224, 3),
                             (64, 64, 56, 3), (128, 128, 28, 3), (256, 256, 14, 3), (32, 64, 112, 3)]:
        yield 1, cin, cout, hw, k, 2
    # patchify stems (ViT 16x16, ConvNeXt 4x4) and 2x2 stride-2 downsampling between stages
    for p, c in [(16, 192), (16, 384), (16, 768), (4, 64), (4, 96), (4, 128)]:
        yield 1, 3, c, 224, p, p
    for cin, hw in [(64, 56), (96, 56), (192, 28), (384, 14), (128, 56), (256, 28)]:
        yield 1, cin, 2 * cin, hw, 2, 2
    # 1x1 convs at stride 2: the shortcut projections of ResNet and RegNet blocks
    for cin, cout in [(16, 32), (32, 64), (64, 128), (128, 256), (256, 512), (512, 1024), (1024, 2048),
                      (64, 256), (48, 104), (104, 208), (208, 440), (64, 160), (160, 400), (128, 288), (288, 672)]:
        for hw in (14, 28, 56, 112):
            if 2e4 <= cin * hw * hw <= 3.3e6 and 2 * cin * cout * (hw // 2) ** 2 <= 5e8:
                yield 1, cin, cout, hw, 1, 2
    for c in (16, 64, 240, 576, 960):               # squeeze-excitation: 1x1 convs on a 1x1 map
        yield 1, c, max(c // 4, 8), 1, 1
        yield 1, max(c // 4, 8), c, 1, 1
    # depthwise: channel counts that fill whole 16-float vectors, and ragged ones; kernels
    # 3 to 9 (mixed-kernel and ConvNeXt-style blocks use 7 and 9)
    for c in (16, 32, 64, 96, 144, 240, 384, 576, 960, 24, 40, 58, 72, 88, 116, 120, 200, 232, 1000):
        for hw in (7, 14, 28, 56, 112):
            if 2e4 <= c * hw * hw <= 2.5e6:
                for k, s in ((3, 1), (5, 1), (3, 2), (5, 2), (7, 1), (9, 1), (7, 2)):
                    yield 1, c, c, hw, k, s, c
    for width in (8, 16, 32, 64):
        for c in (64, 128, 256, 512, 1024):
            for hw in (7, 14, 28, 56):
                if c > width and 1e4 <= c * hw * hw <= 1.6e6:
                    yield 1, c, c, hw, 3, 1, c // width


def _linear_case(m, k, n, cold=False) -> Case:
    return Case(f"linear {m}x{k}->{n}" + (" cold" if cold else ""), CalKey("matmul", cold=cold), "linear", (m, k, n),
                (math.log2(m), math.log2(k), math.log2(n)), 5e-6 + (2 * m * k * n + m * n) / 1e11)


def _linear_shapes() -> Iterator[tuple]:
    yield 1, 8, 8
    for m in (1, 8, 32, 64, 128, 197, 256, 512):
        for k, n in [(64, 64), (100, 100), (256, 256), (512, 512), (1000, 1000), (1024, 1024), (2048, 1000),
                     (1280, 1000), (576, 1024), (768, 768), (768, 3072), (3072, 768), (4096, 4096), (9216, 4096),
                     (100, 500), (1000, 10), (10, 1000),
                     # transformer widths: attention projections (GQA's narrow k/v ones too) and MLPs
                     (192, 576), (192, 768), (768, 192), (384, 1152), (384, 1536), (1536, 384), (256, 1024),
                     (1024, 256), (512, 2048), (2048, 512), (512, 128), (256, 64), (512, 1536), (1536, 512)]:
            if m * k * n <= (2.5e8 if m < 128 else 6e8):
                yield m, k, n


def _qlinear_case(m, k, n) -> Case:
    return Case(f"qlinear {m}x{k}->{n}", CalKey("matmul:int8"), "qlinear", (m, k, n),
                (math.log2(m), math.log2(k), math.log2(n)), 1e-5 + 2 * m * k * n / 4e11)


def _sdpa_case(h, L, S, e, causal) -> Case:
    share = (L * (L + 1) / 2) / (L * S) if causal and L == S else 1.0
    full = 2 * h * L * S * 2 * e + 6 * h * L * S
    return Case(f"sdpa h{h} {L}x{S} e{e}" + (" causal" if causal else ""), CalKey("attention"), "sdpa",
                (h, L, S, e, causal),
                (math.log2(h), math.log2(L), math.log2(S), math.log2(e), math.log2(share) if causal else 0.0),
                1e-5 + share * full / 5e10)


def _sdpa_shapes() -> Iterator[tuple]:
    for h in (2, 4, 8, 12):
        for e in (32, 64):
            for L in (16, 64, 128, 256, 512):      # prefill / encoders: self-attention, causal or not
                for causal in (False, True):
                    yield h, L, L, e, causal
            for S in (16, 128, 512):               # one-token decode against a cache of S
                yield h, 1, S, e, False


def _memory_cases(sizes) -> Iterator[Case]:
    for n_el in sizes:
        base = 16 if n_el < 4096 else 64
        for name, (_, _, key, per_channel) in _MEMORY_OPS.items():
            widths = [base] + ([c for c in _CHANNELS if c != base and n_el >= c] if per_channel else [])
            for c in widths:
                if name in _NEEDS_2X2 and n_el < 4 * c:
                    continue
                yield Case(f"{name} {n_el} c{c}", key, "memory", (name, n_el, c), (), 2e-6 + 8 * n_el / 2e10)


@lru_cache(maxsize=2)
def grid(quick: bool = False) -> tuple[Case, ...]:
    """Every case, in a fixed order; every conv and linear shape twice, with a hot and a
    cold weight (see :func:`weight`). ``quick`` keeps every 4th conv/linear/attention
    case and 3 of the 7 sizes of each memory op (about a quarter of the cases)."""
    shapes = list(_conv_shapes())
    conv = [_conv_case(*s) for s in shapes] + [_conv_case(*s, cold=True) for s in shapes]
    lin_shapes = list(_linear_shapes())
    lin = [_linear_case(*s) for s in lin_shapes] + [_linear_case(*s, cold=True) for s in lin_shapes]
    q = [_qlinear_case(m, k, n) for m, k, n in [(1, 100, 100), (1, 1000, 10), (1, 1000, 1000), (8, 512, 512),
                                                 (64, 768, 768)]]
    att = [_sdpa_case(*s) for s in _sdpa_shapes()]
    if not quick:
        return (*conv, *lin, *q, *att, *_memory_cases(_SIZES), *_gather_cases(_GATHER_SIZES, _GATHER_RUNS))
    return (*conv[::4], *lin[::4], *q[::2], *att[::4], *_memory_cases(_QUICK_SIZES),
            *_gather_cases(_QUICK_GATHER_SIZES, _QUICK_GATHER_RUNS))


@lru_cache(maxsize=2)
def _index(quick: bool) -> dict[str, int]:
    return {c.id: i for i, c in enumerate(grid(quick))}


def grid_index(case_id: str, quick: bool = False) -> int:
    """A case's place in the grid (cases no longer in the grid sort last)."""
    return _index(quick).get(case_id, 1 << 30)


@lru_cache(maxsize=2)
def _by_key(quick: bool) -> dict[CalKey, tuple[tuple[Case, ...], np.ndarray | None]]:
    out: dict[CalKey, list[Case]] = {}
    for c in grid(quick):
        out.setdefault(c.key, []).append(c)
    return {k: (tuple(v), np.array([c.features for c in v], dtype=float) if k.shape_model else None)
            for k, v in out.items()}


@dataclass
class Needs:
    """What a prediction needs measured: grid case ids with a weight each (the share of
    the predicted time of the ops they serve, an a-priori estimate), and whether the
    profile's ceilings and chains are needed (always, for a prediction)."""

    weights: dict[str, float] = field(default_factory=dict)

    def add(self, case_id: str, weight: float) -> None:
        self.weights[case_id] = self.weights.get(case_id, 0.0) + weight

    def merge(self, other: "Needs") -> "Needs":
        out = Needs(dict(self.weights))
        for k, w in other.weights.items():
            out.add(k, w)
        return out

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self.weights)

    def __len__(self) -> int:
        return len(self.weights)


def _rough_time(r) -> float:
    """A-priori seconds of one op (to weigh its cases before anything is measured): a
    fixed cost plus work at typical CPU rates (100 GFLOP/s, 20 GB/s)."""
    return 0.0 if r.is_free else 3e-6 + max(r.flops / 1e11, r.bytes / 2e10)


_CLONE = CalKey("aten.clone.default")
# the fallbacks the predictor reads for ops without a model of their own: views take the
# flatten time, other memory-like ops the add curve
_ALWAYS = (CalKey("aten.flatten.using_ints"), CalKey("aten.add.Tensor"))


def cases_for(records, *, llc_bytes: int, quick: bool = False) -> Needs:
    """The grid cases a prediction of these count records reads (see the module
    docstring), each weighted by the estimated share of the model's time of the ops it
    serves; a convolution or linear layer the calibration can build exactly reads its
    own case instead (:func:`exact_case`; its cold twin when the model is cold, both when
    it is partly cold: the predictor weighs the two by
    :func:`~flopgap.machine._keys.cold_share`). Cold twins of the k-NN cases are needed
    when the model is cold (:func:`~flopgap.machine._keys.model_is_cold`)."""
    by_key = _by_key(quick)
    share = cold_share(records, llc_bytes)
    cold = share > 0   # model_is_cold, from the same footprint
    rough = [_rough_time(r) for r in records]
    total = sum(rough) or 1.0
    needs = Needs()
    seen: dict[tuple, float] = {}
    own_keys: set[CalKey] = set()
    for r, t in zip(records, rough):
        exact = exact_case(r, cold)
        if exact is not None:   # its own case: the neighbours would not be read
            needs.add(exact.id, t / total)
            own_keys.add(exact.key)
            if 0 < share < 1:   # partly cold: the hot case too, and its key's fixed cost
                hot = exact_case(r, False)
                needs.add(hot.id, t / total)
                own_keys.add(hot.key)
            continue
        key = op_key(r)
        if key.name != GATHER and not key.shape_model and gather_run(r) is not None:
            # a memory op reading a scattered input: priced with the gather it implies (see
            # the predictor); convs, matmuls and attention pack their operands themselves
            for k in (CalKey(GATHER), _CLONE):
                seen[(k, None)] = seen.get((k, None), 0.0) + t / total
        if key.ragged and key not in by_key:
            key = key.aligned()
        if key.shape_model and r.flops > 0:
            sig = (key, tuple(op_features(r)))
        elif key in by_key:
            sig = (key, None)
        else:
            sig = (_nearest_window(key, by_key), None) if key.window else (None, None)
        seen[sig] = seen.get(sig, 0.0) + t / total
    for k in _ALWAYS:
        if k in by_key:
            seen.setdefault((k, None), 0.0)
    for k in own_keys:   # the key's fixed cost: its case of fewest FLOPs
        if k in by_key:
            needs.add(min(by_key[k][0], key=lambda c: c.est_s).id, 0.0)
    for (key, feats), w in seen.items():
        if key is None:
            continue
        for k in ((key, key.as_cold()) if cold and key.shape_model else (key,)):
            if k not in by_key:
                continue
            cases, xs = by_key[k]
            if feats is None:
                for c in cases:
                    needs.add(c.id, w / len(cases))
                continue
            d = np.sqrt(((xs - np.asarray(feats)) ** 2).sum(axis=1))
            near = [cases[i] for i in np.argsort(d, kind="stable")[:NEIGHBOURS]]
            # fewest FLOPs (est_s is a FLOP count plus a constant per key): the predictor's
            # fixed cost, the first such case in grid order on both sides
            smallest = min(cases, key=lambda c: c.est_s)
            for c in near:
                needs.add(c.id, w / len(near))
            needs.add(smallest.id, 0.0)
    return needs


def _nearest_window(key: CalKey, by_key) -> CalKey | None:
    """A pool window that is not in the grid: the nearest one that is (same stride class first)."""
    keys = [k for k in by_key if k.name == key.name and k.window]
    same = [k for k in keys if k.stride1 == key.stride1] or keys
    if not same:
        return None
    return min(same, key=lambda k: abs(math.log(k.window / key.window)))


def chain_needs(chain_ops: list[list], *, llc_bytes: int, quick: bool = False) -> Needs:
    """The cases the in-sequence fit reads: those of every chain's ops (each chain
    weighs the same)."""
    out = Needs()
    for ops in chain_ops:
        out = out.merge(cases_for(ops, llc_bytes=llc_bytes, quick=quick))
    return out


def per_channel(case: Case) -> bool:
    """Whether a memory case's time is modelled per channel count (its op is timed at
    several widths; a gather's "channels" are its run lengths); the other memory ops are
    modelled by bytes alone."""
    return case.kind == "gather" or (case.kind == "memory" and _MEMORY_OPS[case.params[0]][3])
