"""Shape features of one counted op, shared by calibration (here) and prediction
(``flopgap.explain``) so that both sides describe an op the same way.

``op_key(record)`` picks the calibration model an op is predicted with:

- ``conv:dense`` / ``conv:depthwise`` / ``conv:grouped`` and ``matmul``: a
  k-nearest-neighbour model of achieved FLOP/s over log2 shape features;
- any other calibrated op name (``aten.relu_.default`` ...): a 1-D curve of time over
  bytes moved;
- anything else falls back to its family (see ``flopgap.explain._predict``).
"""

from __future__ import annotations

import math

__all__ = ["op_key", "op_features", "weight_bytes", "channels", "MATMUL_OPS", "CONV_OPS"]

CONV_OPS = ("aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default", "aten.convolution.default",
            "aten._convolution.default", "aten.mkldnn_convolution.default")
MATMUL_OPS = ("aten.linear.default", "aten.addmm.default", "aten.mm.default", "aten.matmul.default",
              "aten.bmm.default", "aten.baddbmm.default")


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
    shapes = [s for s in r.input_shapes if s and isinstance(s[0], int)]
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
    if r.op in CONV_OPS:
        d = _conv_dims(r)
        if d is not None:
            n, cin, cout, cin_g, groups, k, hw_in, hw_out = d
            if groups == 1:
                return "conv:dense"
            if cin_g == 1 and groups == cin:
                return "conv:depthwise"
            return "conv:grouped"
    if r.op in MATMUL_OPS and _matmul_dims(r) is not None:
        return "matmul"
    return r.op


def op_features(r) -> list[float]:
    """log2 shape features for the k-NN models; ``[log2 bytes, log2 channels]`` for curves."""
    key = op_key(r)
    if key.startswith("conv:"):
        n, cin, cout, cin_g, groups, k, hw_in, hw_out = _conv_dims(r)
        return [_lg(cin_g), _lg(cout // groups), _lg(hw_out), _lg(k), _lg(hw_in / max(hw_out, 1)), _lg(n),
                _lg(groups)]
    if key == "matmul":
        m, kk, n = _matmul_dims(r)
        return [_lg(m), _lg(kk), _lg(n)]
    return [_lg(r.bytes_read + r.bytes_written), _lg(channels(r))]


def channels(r) -> int:
    """The channel dimension of an op's first input when it is NCHW (4-D), else 1."""
    x = r.input_shapes[0] if r.input_shapes else []
    if isinstance(x, list) and len(x) == 4 and isinstance(x[1], int):
        return x[1]
    return 1


_ITEMSIZE = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2, "int8": 1, "qint8": 1, "quint8": 1}


def weight_bytes(r) -> int:
    """Bytes of a conv's or linear's weight (its second tensor input); 0 for other ops."""
    if r.op not in CONV_OPS and r.op != "aten.linear.default":
        return 0
    if len(r.input_shapes) < 2 or not r.input_shapes[1] or not isinstance(r.input_shapes[1][0], int):
        return 0
    dtype = r.input_dtypes[1] if len(r.input_dtypes) > 1 else "float32"
    return math.prod(r.input_shapes[1]) * _ITEMSIZE.get(dtype, 4)
