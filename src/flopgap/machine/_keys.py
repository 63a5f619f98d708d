"""The vocabulary calibration and prediction share: which calibration model an op is
predicted with (:class:`CalKey`) and the shape features it is placed by.

Calibration (``flopgap.machine``) files every single-op case under the key its counted
op gets here, and the predictor (``flopgap.explain``) looks an op of a model up by the
same key, so both sides describe an op the same way. The key is picked from the
counting registry's family of the op (``OpRecord.family``), so every op the counting
stage files under ``conv`` or ``matmul`` (einsum, mv, ``_int_mm`` ...) is seen the same way:

- ``conv:dense`` / ``conv:depthwise`` (``ragged`` when the channels are not a multiple
  of 16) / ``conv:grouped`` (family ``conv``, not transposed), ``matmul`` (family
  ``matmul`` with two matrix operands) and ``attention`` (fused scaled dot-product
  attention): a k-nearest-neighbour model of achieved FLOP/s over log2 shape features;
- ``matmul:int8``: a quantized linear (``quantized.linear*``), the same features, its
  own model (int8 kernels run at another rate than float ones);
- ``gather``: a copy (``contiguous``, a reshape that cannot be a view ...) that reads its
  input in short scattered runs (``OpRecord.inner_run`` below :data:`GATHER_MAX_RUN`):
  curves of time over bytes, one per run length;
- any other op name (``aten.relu_.default`` ...): a curve of time over bytes moved;
  windowed pools carry their window (``window``) and whether they keep the map's size
  (``stride1``);
- ``cold``: the same op timed with a weight read from memory at every call (see
  ``flopgap.machine._grid``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

__all__ = ["CalKey", "op_key", "op_features", "weight_bytes", "channels", "is_conv", "is_quantized_linear",
           "pool_window", "pool_keeps_size", "itemsize", "footprint_bytes", "model_is_cold", "cold_share", "FULLY_COLD",
           "SIMD_FLOATS", "GATHER", "GATHER_MAX_RUN", "gather_run", "COPY_OPS"]

SIMD_FLOATS = 16   # fp32 lanes of an AVX-512 register: oneDNN blocks channels by it
# reads in contiguous runs of this many elements (256 bytes of fp32: four cache lines) or
# more stream at close to the rate of an in-order copy; shorter runs, down to a transposed
# matrix's runs of 1, take several times as long per byte (the profile's gather curves
# against its clone curve show by how much on a machine): they are priced on the gather curves
GATHER_MAX_RUN = 64
GATHER = "gather"
# ops that only copy their input (into another layout or shape): a scattered one is a gather
COPY_OPS = frozenset({"aten.clone.default", "aten.contiguous.default", "aten.reshape.default",
                      "aten._unsafe_view.default", "aten.flatten.using_ints", "aten.copy_.default",
                      "aten._to_copy.default", "aten.to.dtype", "aten.view_copy.default", "aten._reshape_copy.default"})
_SHAPE_MODELS = ("conv:dense", "conv:depthwise", "conv:grouped", "matmul", "matmul:int8", "attention")


@dataclass(frozen=True, order=True)
class CalKey:
    """Which calibration model predicts an op (see the module docstring).

    ``name`` is a shape-model family (``conv:dense`` ...) or an aten op name. ``ragged``:
    a depthwise conv whose channels are not a multiple of :data:`SIMD_FLOATS` (on an
    AVX-512 EPYC such convs, 58, 72, 88, 116 channels, ran 1.2-1.7x slower than the rate
    of their aligned neighbours, so they have cases of their own). ``window``: elements
    per window of a max/avg pool (a 2x2 pool: 4). ``stride1``: a windowed pool whose
    output keeps its input's map size. ``cold``: timed with a cold weight.
    """

    name: str
    ragged: bool = False
    window: int | None = None
    stride1: bool = False
    cold: bool = False

    @property
    def shape_model(self) -> bool:
        """Predicted by k-NN over shape features (else by a curve over bytes)."""
        return self.name in _SHAPE_MODELS

    def as_cold(self, cold: bool = True) -> "CalKey":
        return replace(self, cold=cold)

    def aligned(self) -> "CalKey":
        return replace(self, ragged=False)

    def __str__(self) -> str:
        return (self.name + (":ragged" if self.ragged else "") + (f":w{self.window}" if self.window else "")
                + (":s1" if self.stride1 else "") + (" cold" if self.cold else ""))

    @classmethod
    def parse(cls, text: str) -> "CalKey":
        """The key :meth:`__str__` wrote (the JSON edge)."""
        cold = text.endswith(" cold")
        body = text[:-len(" cold")] if cold else text
        ragged = window = stride1 = None
        parts = body.split(":")
        # an aten name has no colon; family names (conv:dense) keep theirs
        while len(parts) > 1 and (parts[-1] in ("ragged", "s1") or (parts[-1][:1] == "w" and parts[-1][1:].isdigit())):
            tail = parts.pop()
            if tail == "ragged":
                ragged = True
            elif tail == "s1":
                stride1 = True
            else:
                window = int(tail[1:])
        return cls(":".join(parts), bool(ragged), window, bool(stride1), cold)


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
    if r.op in ("aten.addmm.default", "aten.baddbmm.default"):
        shapes = shapes[1:]
    if len(shapes) < 2:
        return None
    a, b = shapes[0], shapes[1]
    if len(a) < 2 or len(b) < 2:
        return None
    return math.prod(a[:-1]), a[-1], b[-1]


def _attention_dims(r) -> tuple | None:
    """(batch x heads, queries, keys, head dim, unmasked share) of a fused attention:
    q is ``[..., L, E]``, k ``[..., S, E]``; the share of query-key pairs computed is
    read off the count (a causal mask computes about half of them)."""
    shapes = [s for s in r.input_shapes[:3] if s and all(isinstance(d, int) for d in s)]
    if r.family != "attention" or len(shapes) < 3 or len(shapes[0]) < 3 or len(shapes[1]) < 3:
        return None
    q, k, v = shapes
    bh, L, e, S, ev = math.prod(q[:-2]), q[-2], q[-1], k[-2], v[-1]
    full = 2 * bh * L * S * (e + ev) + 6 * bh * L * S
    return bh, L, S, e, (r.flops / full if full and r.flops else 1.0)


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
    curve, googlenet's 3x3 stride-1 max pools were predicted at 0.5x their time."""
    if not r.input_shapes or not r.output_shapes or not r.input_shapes[0] or not r.output_shapes[0]:
        return False
    a, b = r.input_shapes[0], r.output_shapes[0]
    return len(a) >= 3 and len(a) == len(b) and list(a[-2:]) == list(b[-2:])


def gather_run(r) -> int | None:
    """The run length (elements) in which an op reads its most scattered input when it is
    short enough to set the op's pace (below :data:`GATHER_MAX_RUN`), else None."""
    run = getattr(r, "inner_run", 0) or 0
    return run if 0 < run < GATHER_MAX_RUN and not r.is_free else None


def op_key(r) -> CalKey:
    """The calibration model of one count record (never ``cold``: the predictor decides that)."""
    if r.op in COPY_OPS and gather_run(r) is not None:
        return CalKey(GATHER)
    if is_conv(r):
        d = _conv_dims(r)
        if d is not None:
            n, cin, cout, cin_g, groups, k, hw_in, hw_out = d
            if groups == 1:
                return CalKey("conv:dense")
            if cin_g == 1 and groups == cin:
                return CalKey("conv:depthwise", ragged=bool(cin % SIMD_FLOATS))
            return CalKey("conv:grouped")
    if r.family == "matmul" and _matmul_dims(r) is not None:
        return CalKey("matmul")
    if is_quantized_linear(r) and _matmul_dims(r) is not None:
        return CalKey("matmul:int8")
    if _attention_dims(r) is not None:
        return CalKey("attention")
    w = pool_window(r)
    if w is not None:
        return CalKey(r.op, window=w, stride1=pool_keeps_size(r))
    return CalKey(r.op)


def op_features(r) -> list[float]:
    """log2 shape features for the k-NN models; ``[log2 bytes, log2 channels]`` for curves
    (for a layer norm the length of the rows it normalises instead of channels, for a
    gather its run length)."""
    key = op_key(r)
    if key.name.startswith("conv:"):
        n, cin, cout, cin_g, groups, k, hw_in, hw_out = _conv_dims(r)
        return conv_features(n, cin_g, cout // groups, hw_in, hw_out, k, groups)
    if key.name.startswith("matmul"):
        return [_lg(d) for d in _matmul_dims(r)]
    if key.name == "attention":
        bh, L, S, e, share = _attention_dims(r)
        return [_lg(bh), _lg(L), _lg(S), _lg(e), math.log2(max(share, 1e-3))]
    if key.name == GATHER:
        return [_lg(r.bytes_read + r.bytes_written), _lg(gather_run(r))]
    return [_lg(r.bytes_read + r.bytes_written), _lg(_row_length(r) if key.name in _ROW_OPS else channels(r))]


# ops whose time per byte depends on the length of the last dimension they reduce over
_ROW_OPS = ("aten.layer_norm.default",)


def _row_length(r) -> int:
    """The last dimension of an op's first input (1 when it has none)."""
    x = r.input_shapes[0] if r.input_shapes else []
    return x[-1] if isinstance(x, list) and x and isinstance(x[-1], int) else 1


def conv_features(n: int, cin_g: int, cout_g: int, hw_in: int, hw_out: int, k: int, groups: int) -> list[float]:
    """cin/group, cout/group, output pixels, kernel area, stride area, batch, groups (log2)."""
    return [_lg(cin_g), _lg(cout_g), _lg(hw_out), _lg(k), _lg(hw_in / max(hw_out, 1)), _lg(n), _lg(groups)]


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


def footprint_bytes(records) -> int:
    """What a model touches in one call: its conv/linear weights plus what its ops write."""
    return sum(weight_bytes(r) + (0 if r.is_free else r.bytes_written) for r in records)


def model_is_cold(records, llc_bytes: int) -> bool:
    """True when a model's footprint per call (:func:`footprint_bytes`) exceeds half the
    last-level cache: between two calls of an op the rest of the model streams that much
    data through the cache, so the op's weight has been evicted (mobilenet_v3_small:
    10 MB of weights, 18 MB of activations; its 1024x1000 classifier runs at the
    cold-weight rate inside it). Half: a shared, set-associative cache (shared with
    other tenants on a VM) holds less than its size of one program's data."""
    return footprint_bytes(records) > llc_bytes / 2


# a footprint of this many last-level caches evicts all of an op's data between its calls
# (half a cache, model_is_cold's bound, none of it): what depends on it grows linearly in
# between rather than jumping at the bound
FULLY_COLD = 1.0


def cold_share(records, llc_bytes: int) -> float:
    """How much of its data a model finds evicted between two calls of an op: 0 at a
    footprint (:func:`footprint_bytes`) of half the last-level cache or less
    (:func:`model_is_cold` false), rising linearly to 1 at :data:`FULLY_COLD` times the
    cache. Above zero exactly when :func:`model_is_cold` is true. The predictor weighs
    an op's hot and cold-weight rates by it, and its cold-memory term."""
    f = footprint_bytes(records) / max(llc_bytes, 1)
    return min(1.0, max(0.0, (f - 0.5) / (FULLY_COLD - 0.5)))
