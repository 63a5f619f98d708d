"""Per-op calibration: time single ops over a grid of shapes on this machine.

Every case is one functional call (``F.conv2d``, ``F.linear``, ``torch.relu_`` ...). It is
counted with :func:`flopgap.count.count` (so its FLOPs, bytes and shape features are
exactly what the counting pass gives a model's op) and timed with
``blocked_autorange``. The grid covers the shapes torchvision-style CNNs, MLPs and
transformers use (1x1/3x3/strided dense convs, 1x1 convs on 1x1 maps (squeeze-excitation), depthwise 3x3/5x5, grouped convs of
group width 8-64, linears from 1x8x8 to 197x3072x768, elementwise ops from 1 KB to
24 MB); it is never built from the models that are later predicted.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flopgap.machine._bench import time_call
from flopgap.machine._features import op_features, op_key

__all__ = ["calibration_cases", "run_calibration"]


class _Call(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


# (label, build) where build() -> (fn, inputs): tensors are made only when a case runs
Case = tuple[str, Callable[[], tuple[Callable, tuple]]]


_COLD_BYTES = 64 * 2**20   # cold weights rotate over 2x a 32 MiB last-level cache
_MAX_COPIES = 4096
COLD = " cold"             # label suffix of a case whose weight is cold at every call


def _weight(shape: tuple, cold: bool) -> Callable[[], torch.Tensor]:
    """The weight for each call: the same tensor (hot: it stays in cache when the op is
    repeated alone), or, ``cold``, copies taken in turn whose total exceeds the
    last-level cache, so that each call reads its weight from memory, as a conv or
    linear does inside a model whose weights do not fit the cache. The input stays hot,
    as it does in a model (the previous op just wrote it)."""
    w = torch.randn(*shape)
    if not cold:
        return lambda: w
    copies = int(min(_MAX_COPIES, max(2, math.ceil(_COLD_BYTES / max(w.nbytes, 1)))))
    return itertools.cycle([w.clone() for _ in range(copies)]).__next__


def _conv(n, cin, cout, hw, k, stride=1, groups=1, cold=False) -> Case:
    def build():
        x = torch.randn(n, cin, hw, hw)
        w = _weight((cout, cin // groups, k, k), cold)
        b = torch.randn(cout)
        return (lambda x: F.conv2d(x, w(), b, stride, k // 2, 1, groups)), (x,)
    return f"conv {cin}->{cout} k{k} s{stride} g{groups} @{hw}{COLD if cold else ''}", build


def _linear(m, k, n, cold=False) -> Case:
    def build():
        x = torch.randn(m, k)
        w = _weight((n, k), cold)
        b = torch.randn(n)
        return (lambda x: F.linear(x, w(), b)), (x,)
    return f"linear {m}x{k}->{n}{COLD if cold else ''}", build


def _conv_cases(cold: bool = False) -> Iterator[Case]:
    yield from (_conv(*a, cold=cold) for a in _conv_shapes())


def _conv_shapes() -> Iterator[tuple]:
    yield 1, 8, 8, 4, 1                     # the smallest: dispatch + oneDNN setup
    pairs = [(16, 16), (32, 32), (64, 64), (128, 128), (256, 256), (512, 512), (24, 144), (144, 24),
             (64, 256), (256, 64), (512, 128), (128, 512), (1024, 256), (256, 1024), (2048, 512), (512, 2048)]
    # narrow, unequal widths: expansions and projections by 3-6x (inverted residuals,
    # MobileNet/MnasNet/EfficientNet style) run 1x1 convs far from the square pairs'
    # rates (24->72 at 56x56 took 2x what its square neighbours predicted), and 4x growth
    # or reduction in 3x3 convs (DenseNet style: 128->32 ran 0.8x its neighbours' estimate)
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
    # 1x1 convs at stride 2: the shortcut projections of ResNet and RegNet blocks. oneDNN
    # subsamples the input first; with no such case, their nearest neighbours (1x1 at
    # stride 1, 3x3 at stride 2) put a 64->160 one at 28x28 at 27 us, a third of its 81 us
    for cin, cout in [(16, 32), (32, 64), (64, 128), (128, 256), (256, 512), (512, 1024), (1024, 2048),
                      (64, 256), (48, 104), (104, 208), (208, 440), (64, 160), (160, 400), (128, 288), (288, 672)]:
        for hw in (14, 28, 56, 112):
            if 2e4 <= cin * hw * hw <= 3.3e6 and 2 * cin * cout * (hw // 2) ** 2 <= 5e8:
                yield 1, cin, cout, hw, 1, 2
    for c in (16, 64, 240, 576, 960):               # squeeze-excitation: 1x1 convs on a 1x1 map
        yield 1, c, max(c // 4, 8), 1, 1
        yield 1, max(c // 4, 8), c, 1, 1
    # depthwise: channel counts that fill whole 16-float vectors, and ragged ones
    for c in (16, 32, 64, 96, 144, 240, 384, 576, 960, 24, 40, 58, 72, 88, 116, 120, 200, 232, 1000):
        for hw in (7, 14, 28, 56, 112):
            if 2e4 <= c * hw * hw <= 2.5e6:
                for k, s in ((3, 1), (5, 1), (3, 2), (5, 2)):
                    yield 1, c, c, hw, k, s, c
    for width in (8, 16, 32, 64):
        for c in (64, 128, 256, 512, 1024):
            for hw in (7, 14, 28, 56):
                if c > width and 1e4 <= c * hw * hw <= 1.6e6:
                    yield 1, c, c, hw, 3, 1, c // width


def _linear_cases(cold: bool = False) -> Iterator[Case]:
    yield from (_linear(*a, cold=cold) for a in _linear_shapes())


def _linear_shapes() -> Iterator[tuple]:
    yield 1, 8, 8
    for m in (1, 8, 64, 197):
        for k, n in [(64, 64), (100, 100), (256, 256), (512, 512), (1000, 1000), (1024, 1024), (2048, 1000),
                     (1280, 1000), (576, 1024), (768, 768), (768, 3072), (3072, 768), (4096, 4096), (9216, 4096),
                     (100, 500), (1000, 10), (10, 1000)]:
            if m * k * n <= 2.5e8:
                yield m, k, n


def _qlinear(m, k, n) -> Case:
    def build():
        import warnings

        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = quantize_dynamic(nn.Sequential(nn.Linear(k, n)), {nn.Linear}, dtype=torch.qint8)[0]
        # its forward, as every other case is a bare op: the module call (nn.Module.__call__)
        # is predicted apart, once per module (it had been counted twice: +0.7 us of 14)
        return q.forward, (torch.randn(m, k),)
    return f"qlinear {m}x{k}->{n}", build


def _qlinear_cases() -> Iterator[Case]:
    for m, k, n in [(1, 100, 100), (1, 1000, 10), (1, 1000, 1000), (8, 512, 512), (64, 768, 768)]:
        yield _qlinear(m, k, n)


_SIZES = (256, 2048, 16384, 65536, 200704, 802816, 3211264)  # elements: 1 KB .. 12.8 MB in fp32


# per-channel work (batch-norm scale/shift, pooling per channel) makes an op's time depend
# on the channel count, not only on bytes: the memory ops are timed at several widths
_CHANNELS = (16, 64, 256, 1024)
_CHANNEL_OPS = ("add", "relu_", "hardswish_", "mul", "batch_norm", "adaptive_avg_pool2d", "mean", "max_pool2d",
                "max_pool2d_s1", "max_pool2d_k2", "avg_pool2d_k2")


def _per_channel(label: str) -> bool:
    """Whether a case's time is modelled per channel count (its op is timed at several
    widths); the other memory ops are timed at two base widths and modelled by bytes alone."""
    return label.split(" ", 1)[0] in _CHANNEL_OPS


def _nchw(n_el: int, c: int) -> torch.Tensor:
    hw = max(1, int(math.sqrt(n_el / c)))
    return torch.randn(1, c, hw, hw)


def _memory_ops(n_el: int, c: int) -> dict[str, Callable[[], tuple[Callable, tuple]]]:
    def x_():
        return _nchw(n_el, c)

    def bn():
        x = x_()
        c = x.shape[1]
        rm, rv, g, b = torch.randn(c), torch.rand(c) + 0.5, torch.randn(c), torch.randn(c)
        return (lambda x: F.batch_norm(x, rm, rv, g, b, False, 0.1, 1e-5)), (x,)

    def ln():
        x = x_()
        w, b = torch.randn(x.shape[-1]), torch.randn(x.shape[-1])
        return (lambda x: F.layer_norm(x, x.shape[-1:], w, b)), (x,)

    def unary(f):
        return lambda: (f, (x_(),))

    def binary(f):
        return lambda: (f, (x_(), x_()))

    return {
        "add": binary(lambda x, y: torch.add(x, y)),
        "add_": binary(lambda x, y: x.add_(y)),
        "mul": binary(lambda x, y: torch.mul(x, y)),
        "relu": unary(lambda x: torch.relu(x)),
        "relu_": unary(lambda x: torch.relu_(x)),
        "hardtanh_": unary(lambda x: F.hardtanh(x, 0.0, 6.0, inplace=True)),
        "hardswish_": unary(lambda x: F.hardswish(x, inplace=True)),
        "hardsigmoid": unary(lambda x: F.hardsigmoid(x)),
        "silu_": unary(lambda x: F.silu(x, inplace=True)),
        "sigmoid": unary(lambda x: torch.sigmoid(x)),
        "gelu": unary(lambda x: F.gelu(x)),
        "batch_norm": bn,
        "layer_norm": ln,
        "softmax": unary(lambda x: torch.softmax(x, -1)),
        "cat": binary(lambda x, y: torch.cat([x, y], 1)),
        "max_pool2d": unary(lambda x: F.max_pool2d(x, 3, 2, 1)),     # ResNet's stem
        "max_pool2d_s1": unary(lambda x: F.max_pool2d(x, 3, 1, 1)),  # GoogLeNet's inception branches
        "max_pool2d_k2": unary(lambda x: F.max_pool2d(x, 2, 2)),      # VGG's, and most U-Nets'
        "avg_pool2d_k2": unary(lambda x: F.avg_pool2d(x, 2, 2)),      # DenseNet's transitions
        "adaptive_avg_pool2d": unary(lambda x: F.adaptive_avg_pool2d(x, 1)),
        "mean": unary(lambda x: x.mean((2, 3), keepdim=True)),
        "contiguous": unary(lambda x: x.transpose(2, 3).contiguous()),
        "flatten": unary(lambda x: torch.flatten(x, 1)),
    }


_NEEDS_2X2 = ("max_pool2d_k2", "avg_pool2d_k2")  # a 2x2 window needs a map of 2x2 or more


def _memory_cases(sizes) -> Iterator[Case]:
    for n_el in sizes:
        base = 16 if n_el < 4096 else 64
        for name, build in _memory_ops(n_el, base).items():
            if name not in _NEEDS_2X2 or n_el >= 4 * base:
                yield f"{name} {n_el} c{base}", build
        for c in _CHANNELS:
            if c != base and n_el >= c:
                ops = _memory_ops(n_el, c)
                for name in _CHANNEL_OPS:
                    if name not in _NEEDS_2X2 or n_el >= 4 * c:
                        yield f"{name} {n_el} c{c}", ops[name]


_QUICK_SIZES = (256, 65536, 3211264)


def calibration_cases(quick: bool = False) -> list[Case]:
    """The grid; every conv and linear shape twice, with a hot and a cold weight (see
    :func:`_weight`); ``quick`` keeps every 4th conv/linear case and 3 of the 7 sizes
    of each memory op (about a quarter of the cases, for tests and a first look)."""
    conv, lin = [*_conv_cases(), *_conv_cases(cold=True)], [*_linear_cases(), *_linear_cases(cold=True)]
    if not quick:
        return [*conv, *lin, *_qlinear_cases(), *_memory_cases(_SIZES)]
    return [*conv[::4], *lin[::4], *list(_qlinear_cases())[::2], *_memory_cases(_QUICK_SIZES)]


CALIBRATION_PASSES = 2


def run_calibration(quick: bool = False, progress: Callable[[int, int, str], None] | None = None,
                    cases: list[Case] | None = None, passes: int | None = None,
                    after_pass: Callable[[int], None] | None = None) -> list[dict]:
    """Count and time every case (default: :func:`calibration_cases`); one sample dict
    per case (op, key, features, flops, bytes, seconds per call).

    ``seconds`` is the *fastest* timed block (``seconds_median`` the median of the first
    pass's): a single op repeated is what the machine can do undisturbed, and the fastest
    block is the estimate least hurt by other processes (on a shared 2-core machine one
    preempted OpenMP thread turns a 10 us op into milliseconds). The grid is timed in
    ``passes`` passes (default 2; 1 when ``quick``), the second after the whole first,
    and each case keeps its fastest block of all: a slow spell can outlast every block of
    one case (two full profiles ten minutes apart: 5% of their 1,603 cases differed by
    more than 1.7x, one 1x1 conv by 9.6x, 105 against 1,010 us), rarely both passes.
    ``after_pass(p)`` is called after pass ``p`` (the profile times a round of its chains
    there).
    """
    from flopgap.count import count

    cases = calibration_cases(quick) if cases is None else cases
    passes = passes or (1 if quick else CALIBRATION_PASSES)
    min_run = 0.004 if quick else 0.01

    def build(i: int):
        with warnings.catch_warnings():  # deprecation notes of quantized ops: not our user's concern
            warnings.simplefilter("ignore")
            return cases[i][1]()

    def time_case(fn, inputs) -> np.ndarray:
        with torch.inference_mode():
            t0 = time.perf_counter()
            fn(*inputs)
            once = time.perf_counter() - t0
        # enough blocks that the fastest one is likely undisturbed: >= ~8 for slow ops
        return time_call(lambda: fn(*inputs), min_run_time=min(max(min_run, 8 * once), 0.15), min_blocks=1)

    samples: list[dict] = []
    timed: list[int] = []  # the case index of each sample (cases with no op to time have none)
    for i, (label, _) in enumerate(cases):
        if progress is not None:
            progress(i, len(cases) * passes, label)
        fn, inputs = build(i)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            res = count(_Call(fn), inputs, model=label)
        ops = res.kernel_ops or [r for r in res.ops]
        if not ops:
            continue
        rec = max(ops, key=lambda r: (r.flops, r.bytes))  # the op that did the work
        times = time_case(fn, inputs)
        timed.append(i)
        samples.append({"label": label, "op": rec.op, "key": op_key(rec), "features": op_features(rec),
                        "flops": rec.flops, "bytes": rec.bytes, "ops": len(ops),
                        "per_channel": _per_channel(label), "cold": label.endswith(COLD),
                        "seconds": float(times.min()), "seconds_median": float(np.median(times))})
    if after_pass is not None:
        after_pass(0)
    for p in range(1, passes):
        for s, i in zip(samples, timed):
            if progress is not None:
                progress(p * len(cases) + i, len(cases) * passes, s["label"])
            s["seconds"] = min(s["seconds"], float(time_case(*build(i)).min()))
        if after_pass is not None:
            after_pass(p)
    return samples


# ---------------------------------------------------------------- synthetic chains
class _InvertedResidual(nn.Module):
    """MobileNetV2's block at stride 1: 1x1 expand, depthwise, 1x1 project, plus the
    residual (the block's input is read again after the three convs)."""

    def __init__(self, c: int, e: int, k: int, act):
        super().__init__()
        h = c * e
        self.body = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), act(),
                                  nn.Conv2d(h, h, k, padding=k // 2, groups=h, bias=False), nn.BatchNorm2d(h), act(),
                                  nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.body(x)


def _inverted_residual(c: int, e: int, k: int, act) -> nn.Module:
    return _InvertedResidual(c, e, k, act)


def _basic(c: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                         nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))


class _Bottleneck(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        m = c // 4
        self.body = nn.Sequential(nn.Conv2d(c, m, 1, bias=False), nn.BatchNorm2d(m), nn.ReLU(inplace=True),
                                  nn.Conv2d(m, m, 3, padding=1, bias=False), nn.BatchNorm2d(m), nn.ReLU(inplace=True),
                                  nn.Conv2d(m, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(self.body(x) + x)


def _conv_bn_relu(cin: int, cout: int, k: int = 3, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def _ir_stage(cin: int, cout: int, e: int, k: int, stride: int) -> nn.Module:
    """An inverted-residual block that changes width and may downsample (no residual)."""
    h = cin * e
    return nn.Sequential(nn.Conv2d(cin, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                         nn.Conv2d(h, h, k, stride, k // 2, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                         nn.Conv2d(h, cout, 1, bias=False), nn.BatchNorm2d(cout))


# Varied stacks: every block differs (width, kernel 3 or 5, expansion 6 or 3, stride 2 on
# every other block), as in real networks, which rarely repeat a shape. Ops whose shape
# did not run a moment ago cost more in sequence: here a stack of 8 distinct
# inverted-residual blocks ran 1.33x its ops' summed times alone, 4 identical blocks
# 1.12x (one thread). Chains of repeated blocks alone would miss that.
def _varied_ir(widths: tuple[int, ...]) -> nn.Module:
    return nn.Sequential(*[_ir_stage(a, b, 6 if i % 2 == 0 else 3, 3 if i % 2 == 0 else 5, 2 if i % 2 == 0 else 1)
                           for i, (a, b) in enumerate(zip(widths, widths[1:]))])


def _varied_ir_deep(widths: tuple[int, ...], down: tuple[int, ...]) -> nn.Module:
    """Many distinct inverted-residual blocks, downsampling only at the blocks in ``down``
    (as a whole mobile network does over its depth), expansion 6 or 3, kernel 3 or 5."""
    return nn.Sequential(*[_ir_stage(a, b, 6 if i % 2 == 0 else 3, 3 if i % 3 else 5, 2 if i in down else 1)
                           for i, (a, b) in enumerate(zip(widths, widths[1:]))])


class _XBlock(nn.Module):
    """1x1 -> grouped 3x3 (group width 16) -> 1x1 with a residual: the ResNeXt/RegNet block."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(cin, cout, 1),
                                  nn.Conv2d(cout, cout, 3, stride, 1, groups=cout // 16, bias=False),
                                  nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                  nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


def _varied_x(widths: tuple[int, ...], down: tuple[int, ...]) -> nn.Module:
    return nn.Sequential(*[_XBlock(a, b, 2 if i in down else 1) for i, (a, b) in enumerate(zip(widths, widths[1:]))])


def _varied_dense(widths: tuple[int, ...]) -> nn.Module:
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers += [nn.Conv2d(a, b, 3, 2 if i % 2 == 0 else 1, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _varied_dw_separable(widths: tuple[int, ...]) -> nn.Module:
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers += [nn.Conv2d(a, a, 3, 2 if i % 2 == 0 else 1, 1, groups=a, bias=False), nn.BatchNorm2d(a),
                   nn.ReLU(inplace=True), *_conv_bn_relu(a, b, 1)]
    return nn.Sequential(*layers)


class _SE(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // 4, 1)
        self.fc2 = nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))


def chain_cases(quick: bool = False) -> list[tuple[str, Callable[[], tuple[nn.Module, tuple]]]]:
    """Small synthetic networks (not any model flopgap is evaluated on): stacks of
    inverted-residual, basic, bottleneck, depthwise-separable, conv-bn-relu,
    squeeze-excitation and MLP blocks over a range of widths and resolutions, three
    stacks whose blocks all differ (see ``_varied_ir``), and two deep ones of distinct
    blocks (inverted-residual and grouped-conv "X" blocks, as many as a whole network).
    Their measured time against the per-op prediction tells how ops cost in sequence,
    inside ``nn.Module`` calls, compared with alone."""
    specs = [
        ("ir c16 e4 k3 @56 x3", lambda: nn.Sequential(*[_inverted_residual(16, 4, 3, nn.ReLU) for _ in range(3)]),
         (1, 16, 56, 56)),
        ("ir c40 e6 k5 @14 x3", lambda: nn.Sequential(*[_inverted_residual(40, 6, 5, nn.Hardswish) for _ in range(3)]),
         (1, 40, 14, 14)),
        ("ir c96 e6 k3 @7 x2", lambda: nn.Sequential(*[_inverted_residual(96, 6, 3, nn.ReLU6) for _ in range(2)]),
         (1, 96, 7, 7)),
        ("basic c64 @28 x2", lambda: nn.Sequential(_basic(64), _basic(64)), (1, 64, 28, 28)),
        ("basic c256 @7", lambda: _basic(256), (1, 256, 7, 7)),
        ("se c96 @14 x4", lambda: nn.Sequential(*[_SE(96) for _ in range(4)]), (1, 96, 14, 14)),
        ("mlp 256 x8", lambda: nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(256, 256), nn.ReLU())]),
         (1, 256)),
        ("ir c24 e6 k3 @28 x3", lambda: nn.Sequential(*[_inverted_residual(24, 6, 3, nn.ReLU6) for _ in range(3)]),
         (1, 24, 28, 28)),
        ("bottleneck c256 @14 x2", lambda: nn.Sequential(_Bottleneck(256), _Bottleneck(256)), (1, 256, 14, 14)),
        ("ir c64 e4 k5 @14 x2", lambda: nn.Sequential(*[_inverted_residual(64, 4, 5, nn.Hardswish) for _ in range(2)]),
         (1, 64, 14, 14)),
        ("conv-bn-relu c32 @112 x2", lambda: nn.Sequential(*_conv_bn_relu(32, 32), *_conv_bn_relu(32, 32)),
         (1, 32, 112, 112)),
        ("dw-separable c128 @28 x3", lambda: nn.Sequential(*[m for _ in range(3) for m in
                                                             (*_conv_bn_relu(128, 128, 3, 128),
                                                              *_conv_bn_relu(128, 128, 1))]),
         (1, 128, 28, 28)),
        ("ir varied 16..256 x8 @112", lambda: _varied_ir((16, 24, 32, 48, 64, 96, 128, 192, 256)), (1, 16, 112, 112)),
        ("dense varied 32..512 x5 @112", lambda: _varied_dense((32, 48, 96, 160, 320, 512)), (1, 32, 112, 112)),
        ("dw-separable varied 32..512 x6 @112", lambda: _varied_dw_separable((32, 64, 96, 128, 256, 384, 512)),
         (1, 32, 112, 112)),
        # deep: as many distinct blocks as a whole mobile network, 112 -> 7 over the depth
        ("ir varied deep 16..320 x14 @112", lambda: _varied_ir_deep(
            (16, 24, 24, 32, 32, 40, 64, 64, 80, 96, 112, 160, 192, 240, 320), (0, 2, 5, 9)), (1, 16, 112, 112)),
        ("x-block varied 32..448 x9 @56", lambda: _varied_x((32, 48, 48, 96, 112, 208, 224, 400, 432, 448),
                                                            (0, 3, 6)), (1, 32, 56, 56)),
        ("mlp 2048 x4 -> 1000", lambda: nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(4)], nn.Linear(2048, 1000)),
         (1, 2048)),
    ]
    if quick:
        specs = specs[::2]
    out = []
    for label, make, shape in specs:
        def build(make=make, shape=shape):
            torch.manual_seed(0)
            return make().eval(), (torch.randn(*shape),)
        out.append((label, build))
    return out


CHAIN_ROUNDS = 3


class ChainTimer:
    """The synthetic chains, counted once, timed in rounds that the caller may spread
    over time (``time_round``), and their results (``results``). On a CUDA ``device``
    each call is synchronised, so a chain's time is the host's issue time or the GPU's
    work, whichever is longer.

    ``seconds`` is the median over all of a chain's blocks of all rounds: on a shared
    host the speed of op sequences moves within a minute (a bottleneck chain took
    0.74 ms, then 0.51 ms one round later), and one burst per chain fits the in-sequence
    terms to whichever spell it fell in. The machine profile spreads its rounds over
    the calibration grid (before, between and after its passes, minutes apart): in a
    profile whose three rounds ran back to back in one slow spell, the chains later ran
    0.75x their profile time and every model was over-predicted, vgg11 by 15%."""

    def __init__(self, quick: bool = False, progress: Callable[[int, int, str], None] | None = None, *,
                 device: str | torch.device = "cpu", burst_s: float | None = None):
        from dataclasses import asdict

        from flopgap.count import count

        dev = torch.device(device)
        self._sync = torch.cuda.synchronize if dev.type == "cuda" else None
        self.burst_s = burst_s if burst_s is not None else (0.05 if quick else 0.2) / CHAIN_ROUNDS
        cases = chain_cases(quick)
        self._built, self._rows = [], []
        for i, (label, build) in enumerate(cases):
            if progress is not None:
                progress(i, len(cases), label)
            module, inputs = build()
            if dev.type != "cpu":
                module, inputs = module.to(dev), tuple(t.to(dev) for t in inputs)
            with torch.inference_mode():
                res = count(module, inputs, model=label)
            self._built.append((module, inputs))
            self._rows.append({"label": label, "ops": [asdict(r) for r in res.ops],
                               "module_calls": sum(1 for m in res.modules if m.ops_all > 0), "blocks": []})
        self.rounds = 0

    def time_round(self) -> None:
        """Time every chain once (one burst of ``burst_s`` each)."""
        for row, (module, inputs) in zip(self._rows, self._built):
            row["blocks"].append(time_call(lambda: module(*inputs), min_run_time=self.burst_s, min_blocks=1,
                                           sync=self._sync).tolist())
        self.rounds += 1

    def results(self) -> list[dict]:
        """Per chain: ``seconds`` (median of all blocks), ``seconds_min`` (fastest block) and
        ``round_seconds`` (each round's median, in order)."""
        out = []
        for row in self._rows:
            times = np.concatenate([np.asarray(b) for b in row["blocks"]])
            out.append({k: v for k, v in row.items() if k != "blocks"}
                       | {"seconds": float(np.median(times)), "seconds_min": float(times.min()),
                          "round_seconds": [float(np.median(b)) for b in row["blocks"]], "rounds": self.rounds})
        return out


def chain_reference_s(chain: dict) -> float:
    """A profiled chain's time as the in-sequence fit uses it: its median in its
    least-disturbed round (its median over all blocks when it was timed in one round)."""
    rounds = chain.get("round_seconds") or []
    return min(rounds) if len(rounds) >= 2 else chain["seconds"]


def run_chains(quick: bool = False, progress: Callable[[int, int, str], None] | None = None, *,
               rounds: int | None = None, device: str | torch.device = "cpu") -> list[dict]:
    """Count and time each synthetic chain (:class:`ChainTimer`) in ``rounds`` rounds back
    to back (default 3; 1 when ``quick``): its op records (as dicts), module calls and
    median seconds per call (a model is timed by its median)."""
    rounds = rounds or (1 if quick else CHAIN_ROUNDS)
    timer = ChainTimer(quick, progress, device=device, burst_s=(0.05 if quick else 0.2) / rounds)
    for _ in range(rounds):
        timer.time_round()
    return timer.results()
