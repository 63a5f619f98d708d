"""Measurements around one variant besides latency: no-op detection (module tree and
counted op sequence), numerical error against eager, peak memory of one call (weight
bytes: :func:`flopgap.explain.weight_bytes`).
"""

from __future__ import annotations


import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from flopgap._quiet import quiet_profiler

__all__ = ["tree_signature", "op_sequence", "output_error", "peak_memory", "op_changes", "NonFiniteOutput"]

PEAK_MEMORY_METHOD = {
    "cpu": "peak of the running sum of CPU allocator events (torch.profiler, profile_memory=True) during one "
           "call, above the level at its start: activations, workspaces and outputs, not weights",
    "cuda": "torch.cuda.max_memory_allocated during one call minus memory allocated before it",
}


def tree_signature(module: nn.Module) -> list[tuple]:
    """The module tree as data: every module's name and type, and every parameter's and
    buffer's name, tensor type, dtype, shape and strides (packed quantized weights show
    as a changed module type)."""
    sig = []
    for name, sub in module.named_modules():
        sig.append((name, type(sub).__module__ + "." + type(sub).__qualname__))
        tensors = list(sub.named_parameters(recurse=False)) + list(sub.named_buffers(recurse=False))
        for tname, t in tensors:
            try:
                stride = tuple(t.stride())
            except RuntimeError:
                stride = None
            sig.append((f"{name}.{tname}", type(t).__name__, str(t.dtype), tuple(t.shape), stride))
    return sig


def op_sequence(count_result) -> list[tuple]:
    """The counted kernel ops (views and no-ops excluded) as (op, input dtypes)."""
    return [(r.op, tuple(r.input_dtypes)) for r in count_result.kernel_ops]


def op_changes(eager_ops: list[tuple], variant_ops: list[tuple]) -> dict:
    """Ops by name the variant runs more (``added``) or fewer (``removed``) times than eager."""
    def tally(ops):
        out: dict[str, int] = {}
        for op, _ in ops:
            out[op] = out.get(op, 0) + 1
        return out

    a, b = tally(eager_ops), tally(variant_ops)
    added = {k: b.get(k, 0) - a.get(k, 0) for k in b if b.get(k, 0) > a.get(k, 0)}
    removed = {k: a[k] - b.get(k, 0) for k in a if a[k] > b.get(k, 0)}
    return {"added": added, "removed": removed}


class NonFiniteOutput(ValueError):
    """The variant's outputs hold NaN or infinity where eager's are finite."""


def output_error(variant_out, eager_out) -> tuple[float, float]:
    """(max abs error, max relative error) of the variant's outputs against eager's.

    Relative error is ``max|variant - eager| / max|eager|`` per output tensor (the
    largest over outputs): relative to the output's scale, so outputs near zero do not
    blow it up. Outputs are compared in float32, over the elements finite in both.
    A NaN or infinity in the variant where eager's value is finite raises
    :class:`NonFiniteOutput` (the variant is broken there: no error figure describes it);
    where eager itself is not finite, the variant is not held to it.
    """
    va, ea = tree_leaves(variant_out), tree_leaves(eager_out)
    va = [t for t in va if isinstance(t, torch.Tensor)]
    ea = [t for t in ea if isinstance(t, torch.Tensor)]
    if len(va) != len(ea):
        raise ValueError(f"variant returned {len(va)} tensors, eager {len(ea)}")
    max_abs = max_rel = 0.0
    for i, (v, e) in enumerate(zip(va, ea)):
        if tuple(v.shape) != tuple(e.shape):
            raise ValueError(f"output shape {tuple(v.shape)} differs from eager {tuple(e.shape)}")
        if v.is_quantized:
            v = v.dequantize()
        v, e = v.detach().float().cpu(), e.detach().float().cpu()
        if not e.numel():
            continue
        e_finite = torch.isfinite(e)
        broken = int((~torch.isfinite(v) & e_finite).sum())
        if broken:
            where = f"output {i}: " if len(va) > 1 else ""
            raise NonFiniteOutput(f"{where}{broken} of {e.numel()} values are NaN or infinite where eager's are "
                                  "finite")
        both = e_finite & torch.isfinite(v)
        if not bool(both.any()):
            continue
        diff = float((v[both] - e[both]).abs().max())
        scale = float(e[both].abs().max())
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale else (0.0 if diff == 0 else float("inf")))
    return max_abs, max_rel


def peak_memory(fn, inputs: tuple) -> tuple[int | None, str]:
    """(peak bytes of one call, method) on the device of the inputs."""
    on_cuda = any(isinstance(t, torch.Tensor) and t.is_cuda for t in inputs)
    if on_cuda:
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            fn(*inputs)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start, PEAK_MEMORY_METHOD["cuda"]
    from torch.profiler import ProfilerActivity, profile

    with quiet_profiler():
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn(*inputs)
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        if e.device_type() != torch.device("cpu").type and str(e.device_type()) != "DeviceType.CPU":
            continue
        live += e.nbytes()
        peak = max(peak, live)
    return peak, PEAK_MEMORY_METHOD["cpu"]
