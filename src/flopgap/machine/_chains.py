"""Synthetic chains: small networks (not any model flopgap is evaluated on) counted and
timed whole, from which the predictor fits how ops cost in sequence and inside
``nn.Module`` calls compared with alone (``flopgap.explain._predict``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flopgap.machine._bench import time_call

__all__ = ["chain_cases", "ChainTimer", "chain_reference_s", "run_chains", "CHAIN_ROUNDS", "python_opcode_seconds",
           "python_version"]


class _PyLeaf(nn.Module):
    """Module code without a kernel: the attribute reads, flag tests and rebinding that a
    norm or activation wrapper runs around its op."""

    def __init__(self):
        super().__init__()
        self.flag, self.eps = True, 1e-5

    def forward(self, x):
        if self.training and self.flag:
            x = x + self.eps
        return x if self.flag else None


class _PyTree(nn.Module):
    """Blocks of leaves and identities called through ``nn.Module.__call__``, as a network
    of small modules is: what a bytecode instruction of a model's Python costs."""

    def __init__(self, blocks: int = 16):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(_PyLeaf(), nn.Identity(), _PyLeaf()) for _ in range(blocks)])

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def python_version() -> str:
    """The interpreter's minor version: bytecode, and so instruction counts, change with it."""
    import sys

    return "%d.%d" % sys.version_info[:2]


def python_opcode_seconds(burst_s: float) -> float:
    """Seconds per Python bytecode instruction of module code on this machine: a tree of
    kernel-free modules (:class:`_PyTree`) timed in one burst (median call), divided by the
    instructions one call executes (:func:`flopgap.count.python_opcodes`)."""
    from flopgap.count import python_opcodes

    tree, x = _PyTree().eval(), torch.zeros(1)
    n = python_opcodes(lambda: tree(x))
    with torch.inference_mode():
        times = time_call(lambda: tree(x), min_run_time=burst_s, min_blocks=1)
    return float(np.median(times)) / max(n, 1)


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


class _Encoder(nn.Module):
    """A transformer layer of plain modules: fused q/k/v projection, fused attention
    (causal or not), output projection and MLP (GELU), each added back to its input, the
    layer norm after the sum (``pre_norm=False``) or before each part."""

    def __init__(self, d: int, heads: int, ffn: int, causal: bool = False, pre_norm: bool = False):
        super().__init__()
        self.heads, self.causal, self.pre_norm = heads, causal, pre_norm
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.act, self.fc2 = nn.Linear(d, ffn), nn.GELU(), nn.Linear(ffn, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def _attend(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(a.transpose(1, 2).reshape(b, n, d))

    def forward(self, x):
        if self.pre_norm:
            x = x + self._attend(self.ln1(x))
            return x + self.fc2(self.act(self.fc1(self.ln2(x))))
        x = self.ln1(x + self._attend(x))
        return self.ln2(x + self.fc2(self.act(self.fc1(x))))


# Whole networks: a stem on the image, a body, a head, pooling and a classifier, with
# in-place activations and residual adds, as the libraries users load build them (none
# of them any model flopgap is scored on), so that the fit sees what stacks of blocks
# lack: benchmarks/chain_fresh.py times every chain in a process of its own and reports
# how a fit without these four predicts them.
class _MBBlock(nn.Module):
    """Inverted residual as timm and torchvision build it: 1x1 expand, depthwise (any
    stride), optional squeeze-excitation (mean, 1x1, activation, 1x1, sigmoid gate),
    1x1 project, a residual when the shape stays; activations in place."""

    def __init__(self, cin: int, cout: int, e: int, k: int, stride: int, act, se: bool):
        super().__init__()
        h = cin * e
        self.expand = nn.Sequential(nn.Conv2d(cin, h, 1, bias=False), nn.BatchNorm2d(h), act(inplace=True))
        self.dw = nn.Sequential(nn.Conv2d(h, h, k, stride, k // 2, groups=h, bias=False), nn.BatchNorm2d(h),
                                act(inplace=True))
        self.se = (nn.Sequential(nn.Conv2d(h, max(8, cin // 4), 1), act(inplace=True),
                                 nn.Conv2d(max(8, cin // 4), h, 1), nn.Sigmoid()) if se else None)
        self.project = nn.Sequential(nn.Conv2d(h, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.dw(self.expand(x))
        if self.se is not None:
            y = y * self.se(y.mean((2, 3), keepdim=True))
        y = self.project(y)
        return x + y if self.skip else y


class _MobileNet(nn.Module):
    """stem (3x3 stride 2 on RGB) -> inverted residuals -> 1x1 head -> mean -> linear."""

    def __init__(self, stem: int, blocks: tuple, head: int, classes: int, act, se: bool):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), act(inplace=True))
        self.blocks = nn.Sequential(*[_MBBlock(a, b, e, k, st, act, se) for a, b, e, k, st in blocks])
        last = blocks[-1][1]
        self.head = nn.Sequential(nn.Conv2d(last, head, 1, bias=False), nn.BatchNorm2d(head), act(inplace=True))
        self.classifier = nn.Linear(head, classes)

    def forward(self, x):
        return self.classifier(self.head(self.blocks(self.stem(x))).mean((2, 3)))


_MB_RELU6 = ((24, 16, 1, 3, 1), (16, 28, 6, 3, 2), (28, 28, 6, 3, 1), (28, 44, 6, 5, 2), (44, 44, 6, 5, 1),
             (44, 88, 6, 3, 2), (88, 88, 6, 3, 1), (88, 120, 6, 5, 1), (120, 120, 6, 5, 1), (120, 200, 6, 5, 2),
             (200, 200, 6, 5, 1), (200, 336, 6, 3, 1))
_MB_SE = ((16, 16, 1, 3, 1), (16, 24, 4, 3, 2), (24, 24, 3, 3, 1), (24, 40, 3, 5, 2), (40, 40, 3, 5, 1),
          (40, 80, 6, 3, 2), (80, 80, 2, 3, 1), (80, 112, 6, 3, 1), (112, 160, 6, 5, 2), (160, 160, 6, 5, 1))


class _RMSNorm(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


def _rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class _GQADecoder(nn.Module):
    """A decoder layer as current LLMs write it: RMS norm in elementwise ops, q/k/v
    projections without bias, rotary position embedding (cat, neg, mul, add), grouped
    key/value heads expanded to the query heads, causal fused attention, SwiGLU MLP."""

    def __init__(self, d: int, heads: int, kv: int, ffn: int, n: int):
        super().__init__()
        self.heads, self.kv, self.hd = heads, kv, d // heads
        self.q, self.o = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.k, self.v = nn.Linear(d, kv * self.hd, bias=False), nn.Linear(d, kv * self.hd, bias=False)
        self.gate, self.up = nn.Linear(d, ffn, bias=False), nn.Linear(d, ffn, bias=False)
        self.down = nn.Linear(ffn, d, bias=False)
        self.norm1, self.norm2 = _RMSNorm(d), _RMSNorm(d)
        t = torch.arange(n, dtype=torch.float32)[:, None] / 10000 ** (torch.arange(0, self.hd, 2) / self.hd)[None]
        emb = torch.cat((t, t), -1)[None, None]
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x):
        b, n, d = x.shape
        h = self.norm1(x)
        q = self.q(h).view(b, n, self.heads, self.hd).transpose(1, 2)
        k = self.k(h).view(b, n, self.kv, self.hd).transpose(1, 2)
        v = self.v(h).view(b, n, self.kv, self.hd).transpose(1, 2)
        q = q * self.cos + _rotate_half(q) * self.sin
        k = k * self.cos + _rotate_half(k) * self.sin
        rep = (b, self.kv, self.heads // self.kv, n, self.hd)
        k = k[:, :, None].expand(rep).reshape(b, self.heads, n, self.hd)
        v = v[:, :, None].expand(rep).reshape(b, self.heads, n, self.hd)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, n, d))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class _ViT(nn.Module):
    """Patchify conv, class token and position embedding, pre-norm encoder layers, final
    norm, linear head on the class token."""

    def __init__(self, d: int, depth: int, heads: int, img: int, patch: int, classes: int):
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, (img // patch) ** 2 + 1, d) * 0.02)
        self.blocks = nn.Sequential(*[_Encoder(d, heads, 4 * d, pre_norm=True) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls.expand(x.shape[0], -1, -1), x), dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def chain_cases(quick: bool = False) -> list[tuple[str, Callable[[], tuple[nn.Module, tuple]]]]:
    """Small synthetic networks (not any model flopgap is evaluated on): stacks of
    inverted-residual, basic, bottleneck, depthwise-separable, conv-bn-relu,
    squeeze-excitation and MLP blocks over a range of widths and resolutions, two
    transformer stacks (post-norm encoder, causal pre-norm decoder), three
    stacks whose blocks all differ (see ``_varied_ir``), two deep ones of distinct
    blocks (inverted-residual and grouped-conv "X" blocks, as many as a whole network),
    and four whole networks (two mobile nets, a ViT, an LLM-style decoder; see
    ``_MobileNet``, ``_ViT``, ``_GQADecoder``). Their measured time against the per-op prediction tells how ops cost in sequence,
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
        # transformer layers: projections, attention, GELU, residual adds and layer norms
        ("encoder d192 h3 L96 x3", lambda: nn.Sequential(*[_Encoder(192, 3, 768) for _ in range(3)]), (1, 96, 192)),
        ("decoder d320 h5 L64 x2 causal pre-norm", lambda: nn.Sequential(
            *[_Encoder(320, 5, 1280, causal=True, pre_norm=True) for _ in range(2)]), (1, 64, 320)),
        # whole networks (see _MobileNet): stem, body, head, pooling, classifier
        ("mobile net relu6 k3/k5 12 blocks @208", lambda: _MobileNet(24, _MB_RELU6, 1152, 600, nn.ReLU6, False),
         (1, 3, 208, 208)),
        ("mobile net se silu 10 blocks @176", lambda: _MobileNet(16, _MB_SE, 960, 500, nn.SiLU, True),
         (1, 3, 176, 176)),
        ("vit d160 h4 patch16 @176 x4", lambda: _ViT(160, 4, 4, 176, 16, 400), (1, 3, 176, 176)),
        ("decoder d192 h6 kv2 L96 x3 rms rotary swiglu", lambda: nn.Sequential(
            *[_GQADecoder(192, 6, 2, 512, 96) for _ in range(3)]), (1, 96, 192)),
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


def build_rows(quick: bool, progress: Callable[[int, int, str], None] | None, device: torch.device,
               built: list) -> list[dict]:
    """Build and count every chain on ``device``; appends ``(module, inputs)`` to ``built``
    and returns one row per chain: label, op records (as dicts), module calls, no blocks."""
    from dataclasses import asdict

    from flopgap.count import count

    cases = chain_cases(quick)
    rows = []
    for i, (label, build) in enumerate(cases):
        if progress is not None:
            progress(i, len(cases), label)
        module, inputs = build()
        if device.type != "cpu":
            module, inputs = module.to(device), tuple(t.to(device) for t in inputs)
        with torch.inference_mode():
            res = count(module, inputs, model=label)
        built.append((module, inputs))
        rows.append({"label": label, "ops": [asdict(r) for r in res.ops],
                     "module_calls": sum(1 for m in res.modules if m.ops_all > 0),
                     "python_opcodes": res.python_opcodes, "blocks": []})
    return rows


class ChainTimer:
    """The synthetic chains, counted once, timed in rounds that the caller may spread
    over time (``time_round``), and their results (``results``). On a CUDA ``device``
    each call is synchronised, so a chain's time is the host's issue time or the GPU's
    work, whichever is longer.

    On a shared host the speed of op sequences moves within a minute while single ops
    barely move, so one burst per chain would fit the in-sequence terms to whichever
    spell it fell in. The machine profile times one round before its calibration
    cases, one after them and one after their re-measuring pass; each chain is fitted
    on its median in its least-disturbed round (:func:`chain_reference_s`).
    ``between()``, when given, is called after each chain (the profile's disturbance
    sentinel polls there).

    ``fresh_process``: build, count and time the chains in a child process of their own
    (:mod:`flopgap.machine._chain_worker`, allocator pinned as the calibration's), not in
    this one. The profile's calibration child has run hundreds of cases by its second
    round; a model is timed in a process that ran little else, and a process's history
    slows sequences of ops with large activations (``benchmarks/chain_history.py``), so
    chains timed beside the cases would fit the in-sequence terms to a slower process
    than the one predicted."""

    def __init__(self, quick: bool = False, progress: Callable[[int, int, str], None] | None = None, *,
                 device: str | torch.device = "cpu", burst_s: float | None = None,
                 between: Callable[[], None] | None = None, fresh_process: bool = False):
        dev = torch.device(device)
        self._sync = torch.cuda.synchronize if dev.type == "cuda" else None
        self.burst_s = burst_s if burst_s is not None else (0.05 if quick else 0.2) / CHAIN_ROUNDS
        self.rounds = 0
        self.python_s: list[float] = []   # seconds per bytecode instruction, one per round
        self._between = between
        self._built, self._worker = [], None
        if fresh_process:
            if dev.type != "cpu":
                raise ValueError("fresh_process: CPU chains only")
            from flopgap.machine._chain_worker import ChainWorker

            self._worker = ChainWorker(quick, self.burst_s, torch.get_num_threads(), progress)
            self._rows = [dict(row, blocks=[]) for row in self._worker.rows]
        else:
            self._rows = build_rows(quick, progress, dev, self._built)

    def time_round(self) -> None:
        """Time every chain once (one burst of ``burst_s`` each), then the cost of a Python
        bytecode instruction (:func:`python_opcode_seconds`) in the same process."""
        for i, row in enumerate(self._rows):
            row["blocks"].append(self.time_one(i))
            if self._between is not None:
                self._between()
        self.python_s.append(self._worker.python() if self._worker is not None else python_opcode_seconds(self.burst_s))
        self.rounds += 1

    @property
    def python_opcode_s(self) -> float | None:
        """Seconds per bytecode instruction in the least-disturbed round (the fastest, as
        each chain's reference is its fastest round median); None before a round."""
        return min(self.python_s) if self.python_s else None

    def time_one(self, i: int) -> list[float]:
        """One burst of chain ``i``: seconds per call, one value per block."""
        if self._worker is not None:
            return self._worker.time(i)
        module, inputs = self._built[i]
        return time_call(lambda: module(*inputs), min_run_time=self.burst_s, min_blocks=1, sync=self._sync).tolist()

    def close(self) -> None:
        """Stop the child process (``fresh_process``); nothing otherwise."""
        if self._worker is not None:
            self._worker.close()

    def __enter__(self) -> "ChainTimer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def labels(self) -> list[str]:
        return [row["label"] for row in self._rows]

    @property
    def rows(self) -> list[dict]:
        """One row per chain: label, op records (as dicts), module calls, blocks so far."""
        return self._rows

    def op_records(self) -> list[list]:
        """Each chain's count records (for the cases its ops need)."""
        from flopgap.count import OpRecord

        return [[OpRecord(**d) for d in row["ops"]] for row in self._rows]

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
               rounds: int | None = None, device: str | torch.device = "cpu",
               fresh_process: bool = False) -> list[dict]:
    """Count and time each synthetic chain (:class:`ChainTimer`) in ``rounds`` rounds back
    to back (default 3; 1 when ``quick``): its op records (as dicts), module calls and
    median seconds per call (a model is timed by its median). ``fresh_process``: in a
    child process of their own, as the CPU profile times them."""
    rounds = rounds or (1 if quick else CHAIN_ROUNDS)
    with ChainTimer(quick, progress, device=device, burst_s=(0.05 if quick else 0.2) / rounds,
                    fresh_process=fresh_process) as timer:
        for _ in range(rounds):
            timer.time_round()
        return timer.results()
