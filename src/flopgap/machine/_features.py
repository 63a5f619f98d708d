"""Shape features of one counted op, shared by calibration (here) and prediction
(``flopgap.explain``) so that both sides describe an op the same way.

``op_key(record)`` picks the calibration model an op is predicted with, from the
counting registry's family of the op (``OpRecord.family``), so every op the counting
stage files under ``conv`` or ``matmul`` (einsum, mv, ``_int_mm`` ...) is seen the same way:

- ``conv:dense`` / ``conv:depthwise`` (``conv:depthwise:ragged`` when the channels
  are not a multiple of 16) / ``conv:grouped`` (family ``conv``, not transposed) and
  ``matmul`` (family ``matmul`` with two matrix operands):
  a k-nearest-neighbour model of achieved FLOP/s over log2 shape features;
- ``matmul:int8``: a quantized linear (``quantized.linear*``), the same features, its
  own model (int8 kernels run at another rate than float ones);
- any other calibrated op name (``aten.relu_.default`` ...): a 1-D curve of time over
  bytes moved;
- anything else falls back to its family (see ``flopgap.explain._predict``).
"""

from __future__ import annotations

import math

import torch

__all__ = ["op_key", "op_features", "weight_bytes", "channels", "is_conv", "is_quantized_linear"]


def is_conv(r) -> bool:
    """A forward convolution as the counting stage files it (transposed ones have
    another weight layout and are left to the roofline)."""
    return r.family == "conv" and "transpose" not in r.op


def is_quantized_linear(r) -> bool:
    """A ``torch.ao`` quantized linear (its weight is packed: not among the inputs)."""
    return r.family == "quantized" and r.op.startswith("quantized.linear")


def _lg(x: float) -> float:
    return math.log2(max(float(x), 1.0))


def _conv_dims(r) -> tuple | None:
    shapes = r.input_shapes
    if len(shapes) < 2 or not shapes[0] or not shapes[1] or not r.output_shapes or not r.output_shapes[0]:
        return None
    x, w, y = shapes[0], shapes[1], r.output_shapes[0]
    if len(x) < 3 or len(w) != len(x):
        return None
    n, cin = x[0], x[1]
    cout, cin_g = w[0], w[1]
    groups = max(1, cin // max(cin_g, 1))
    k = math.prod(w[2:])
    hw_in = math.prod(x[2:])
    hw_out = math.prod(y[2:]) if len(y) == len(x) else hw_in
    return n, cin, cout, cin_g, groups, k, hw_in, hw_out


def _matmul_dims(r) -> tuple | None:
    """(m, k, n) of a matrix product; None where the operands are not two matrices."""
    shapes = [s for s in r.input_shapes if s and isinstance(s[0], int)]
    if is_quantized_linear(r):
        if not shapes or not r.output_shapes or not r.output_shapes[0]:
            return None
        x = shapes[0]
        return math.prod(x[:-1]), x[-1], r.output_shapes[0][-1]
    if r.op == "aten.linear.default":
        if len(shapes) < 2:
            return None
        x, w = shapes[0], shapes[1]
        return math.prod(x[:-1]), x[-1], w[0]
    if r.op in ("aten.addmm.default",):
        shapes = shapes[1:]
    if r.op == "aten.baddbmm.default":
        shapes = shapes[1:]
    if len(shapes) < 2:
        return None
    a, b = shapes[0], shapes[1]
    if len(a) < 2 or len(b) < 2:
        return None
    return math.prod(a[:-1]), a[-1], b[-1]


def op_key(r) -> str:
    if is_conv(r):
        d = _conv_dims(r)
        if d is not None:
            n, cin, cout, cin_g, groups, k, hw_in, hw_out = d
            if groups == 1:
                return "conv:dense"
            if cin_g == 1 and groups == cin:
                return "conv:depthwise" + (RAGGED if cin % SIMD_FLOATS else "")
            return "conv:grouped"
    if r.family == "matmul" and _matmul_dims(r) is not None:
        return "matmul"
    if is_quantized_linear(r) and _matmul_dims(r) is not None:
        return "matmul:int8"
    w = pool_window(r)
    if w is not None:
        return f"{r.op}{WINDOW}{w}" + (STRIDE1 if pool_keeps_size(r) else "")
    return r.op


SIMD_FLOATS = 16   # fp32 lanes of an AVX-512 register: oneDNN blocks channels by it
RAGGED = ":ragged"  # a depthwise conv whose channels are not a multiple of SIMD_FLOATS:
# on this AVX-512 EPYC such convs (58, 72, 88, 116 channels) ran 1.2-1.7x slower than the
# rate of their aligned neighbours (64, 96, 144) predicted, so they have their own cases
WINDOW = ":w"  # key suffix of a windowed pool: elements per window (a 2x2 max pool: ":w4")
STRIDE1 = ":s1"  # ... and of one whose output keeps its input's size (stride 1, "same" padding)


def pool_window(r) -> int | None:
    """Elements per pooling window of a (non-adaptive) max/avg pool, from its count
    (FLOPs = output elements x window): a 2x2 window does under half the work of a 3x3
    one on the same input, which bytes alone do not tell."""
    if r.family != "pool" or "adaptive" in r.op or not r.flops or not r.output_shapes or not r.output_shapes[0]:
        return None
    shape = r.output_shapes[0]
    if not all(isinstance(d, int) for d in shape):
        return None
    n = math.prod(shape)
    return round(r.flops / n) if n else None


def pool_keeps_size(r) -> bool:
    """A windowed pool whose output map is its input's (stride 1, as GoogLeNet's
    inception branches): per byte it does 4x the window work of a stride-2 pool (it reads
    each input once per output, a stride-2 one four inputs per output); on the stride-2
    curve, googlenet's 3x3 stride-1 max pools were predicted at 0.5x their time (192
    channels at 28x28: 1,358 us alone, 666 us predicted)."""
    if not r.input_shapes or not r.output_shapes or not r.input_shapes[0] or not r.output_shapes[0]:
        return False
    a, b = r.input_shapes[0], r.output_shapes[0]
    return len(a) >= 3 and len(a) == len(b) and list(a[-2:]) == list(b[-2:])


def op_features(r) -> list[float]:
    """log2 shape features for the k-NN models; ``[log2 bytes, log2 channels]`` for curves."""
    key = op_key(r)
    if key.startswith("conv:"):
        n, cin, cout, cin_g, groups, k, hw_in, hw_out = _conv_dims(r)
        return [_lg(cin_g), _lg(cout // groups), _lg(hw_out), _lg(k), _lg(hw_in / max(hw_out, 1)), _lg(n),
                _lg(groups)]
    if key.startswith("matmul"):
        m, kk, n = _matmul_dims(r)
        return [_lg(m), _lg(kk), _lg(n)]
    return [_lg(r.bytes_read + r.bytes_written), _lg(channels(r))]


def channels(r) -> int:
    """The channel dimension of an op's first input when it is NCHW (4-D), else 1."""
    x = r.input_shapes[0] if r.input_shapes else []
    if isinstance(x, list) and len(x) == 4 and isinstance(x[1], int):
        return x[1]
    return 1


def itemsize(dtype_name: str) -> int:
    """Bytes per element of a dtype named as the counting records name it (``float32``,
    ``qint8``, ``int64``, ``bool`` ...): torch's own ``dtype.itemsize``. An empty or
    unknown name (no tensor) is taken as float32, the default dtype."""
    dt = getattr(torch, dtype_name, None) if dtype_name else None
    return dt.itemsize if isinstance(dt, torch.dtype) else torch.float32.itemsize


def weight_bytes(r) -> int:
    """Bytes of a conv's or linear's weight (its second tensor input; a quantized
    linear's packed int8 weight: k x n bytes); 0 for other ops."""
    if is_quantized_linear(r):
        d = _matmul_dims(r)
        return d[1] * d[2] * torch.qint8.itemsize if d is not None else 0
    if not is_conv(r) and r.op != "aten.linear.default":
        return 0
    if len(r.input_shapes) < 2 or not r.input_shapes[1] or not isinstance(r.input_shapes[1][0], int):
        return 0
    dtype = r.input_dtypes[1] if len(r.input_dtypes) > 1 else ""
    return math.prod(r.input_shapes[1]) * itemsize(dtype)
