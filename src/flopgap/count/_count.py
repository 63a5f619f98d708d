"""``count()``: one forward pass under the recorder, then formulas and aggregation."""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from flopgap.count import _formulas  # noqa: F401  (fills the registry)
from flopgap.count._mode import _ALIAS_RETURN, record_calls, schema_flags
from flopgap.count._registry import Cost, Meta, lookup
from flopgap.count._result import CountResult, ModuleStats, OpRecord
from flopgap.models import call_model, describe_inputs

__all__ = ["count", "cost_of_call", "count_params"]

_ARG_CACHE: dict = {}


def _arg_names(func):
    cached = _ARG_CACHE.get(func)
    if cached is None:
        arguments = func._schema.arguments
        defaults = {a.name: a.default_value for a in arguments if a.has_default_value()}
        cached = _ARG_CACHE[func] = ([a.name for a in arguments], defaults)
    return cached


def normalize_args(func, args: tuple, kwargs: dict) -> dict:
    """Arguments by schema name, defaults filled in (what formulas read)."""
    names, defaults = _arg_names(func)
    a = dict(defaults)
    a.update(zip(names, args))
    a.update(kwargs)
    return a


def _tensor_bytes(values) -> int:
    total = 0
    for v in values:
        if isinstance(v, Meta):
            total += v.nbytes
        elif isinstance(v, (list, tuple)):
            total += _tensor_bytes(v)
    return total


_FREE = Cost(0, 0, 0, 0)


def cost_of_call(func, args: tuple, kwargs: dict, outs: tuple, noop: bool = False,
                 copied: bool = False) -> tuple[str, str, Cost]:
    """(family, kind, cost) for one recorded call; bytes resolved to integers."""
    if noop:
        return "noop", "noop", _FREE
    entry = lookup(func)
    if entry is not None and entry.formula is None:
        return entry.family, entry.family, _FREE
    if schema_flags(func) & _ALIAS_RETURN and not copied:
        return "view", "view", _FREE  # aliasing op that did not copy
    read = _tensor_bytes(args) + (_tensor_bytes(kwargs.values()) if kwargs else 0)
    written = _tensor_bytes(outs)
    if entry is not None:
        family = entry.family
        try:
            cost = entry.formula(normalize_args(func, args, kwargs), outs)
        except Exception:  # a formula that cannot read these arguments: FLOPs unknown, bytes known
            return "uncovered", "uncovered", Cost(0, 0, read, written)
        if cost.noop:
            return "noop", "noop", _FREE
        kind = "data-movement" if family in ("data-movement", "embedding") and cost.flops == 0 else "compute"
    elif torch.Tag.pointwise in getattr(func, "tags", ()):
        family, kind = "pointwise", "compute"
        cost = _formulas.pointwise({}, outs)
    else:
        return "uncovered", "uncovered", Cost(0, 0, read, written)
    return family, kind, Cost(
        cost.flops, cost.macs,
        read if cost.bytes_read is None else cost.bytes_read,
        written if cost.bytes_written is None else cost.bytes_written,
    )


_DTYPE_NAMES: dict = {}


def _dtype_name(dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


def _shapes(values) -> tuple[list, list]:
    """Shapes and dtypes in the profiler's layout: ``[]`` for a non-tensor argument."""
    shapes, dtypes = [], []
    for v in values:
        if type(v) is Meta:
            shapes.append(list(v.shape))
            dtypes.append(_dtype_name(v.dtype))
        elif type(v) is list and v and type(v[0]) is Meta:
            shapes.append([list(x.shape) for x in v if type(x) is Meta])
            dtypes.append(_dtype_name(v[0].dtype))
        else:
            shapes.append([])
            dtypes.append("")
    return shapes, dtypes


def _prefixes(name: str) -> list[str]:
    """``"a.b.c"`` -> ``["", "a", "a.b", "a.b.c"]``: the module and its ancestors."""
    if not name:
        return [""]
    parts = name.split(".")
    return [""] + [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _module_params(module: nn.Module, named: list | None = None) -> dict[str, int]:
    """Parameter count of every module (recursive, shared tensors once), packed
    quantized weights included (``quantize_dynamic`` hides them from named_parameters)."""
    totals: dict[str, int] = {}
    seen: set[int] = set()
    for name, sub in (module.named_modules() if named is None else named):
        n = 0
        for p in sub._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        # a dict lookup, not getattr: nn.Module.__getattr__ on a missing name costs microseconds
        if sub._modules.get("_packed_params") is not None and callable(getattr(sub, "weight", None)):
            with contextlib.suppress(Exception):
                n += sub.weight().numel()
                b = sub.bias()
                n += b.numel() if b is not None else 0
        totals.setdefault(name, 0)
        if n:
            for key in _prefixes(name):
                totals[key] = totals.get(key, 0) + n
    return totals


def count_params(module: nn.Module) -> int:
    return _module_params(module).get("", 0)


def count(module: nn.Module, inputs: tuple, *, model: str = "model", grad: bool = False,
          meta: bool = False) -> CountResult:
    """Count FLOPs, MACs, bytes and ops of one forward pass of ``module(*inputs)``.

    Runs under ``torch.inference_mode()`` unless ``grad=True``. With ``meta=True`` the
    inputs are moved to the meta device and no real kernel runs (the module's
    parameters must already be on the meta device: ``load_model(spec, meta=True)``).
    """
    inputs = tuple(inputs)
    if meta:
        if any(p.device.type != "meta" for p in module.parameters()):
            from flopgap.errors import UsageError

            raise UsageError("meta counting needs a module built on the meta device (load_model(spec, meta=True))")
        inputs = tuple(t.to("meta") if isinstance(t, torch.Tensor) else t for t in inputs)
    named = list(module.named_modules())  # one traversal serves params, hooks and aggregation
    params = _module_params(module, named)
    grad_ctx = contextlib.nullcontext() if grad else torch.inference_mode()
    with grad_ctx, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with record_calls(module, named) as rec:
            call_model(module, inputs, model)
    records = []
    for i, (func, mod, args, kwargs, outs, noop, copied) in enumerate(rec.calls):
        family, kind, cost = cost_of_call(func, args, kwargs, outs, noop, copied)
        in_shapes, in_dtypes = _shapes(args)
        out_shapes, _ = _shapes(outs)
        records.append(OpRecord(i, _op_name(func), mod, family, kind, in_shapes, in_dtypes, out_shapes,
                                cost.flops, cost.macs, cost.bytes_read, cost.bytes_written))
    modules = _aggregate(named, records, params)
    return CountResult(model, describe_inputs(inputs), params.get("", 0), records, modules,
                       mode="grad" if grad else "inference", meta=meta, environment=_environment())


_OP_NAMES: dict = {}


def _op_name(func) -> str:
    name = _OP_NAMES.get(func)
    if name is None:
        name = _OP_NAMES[func] = str(func)
    return name


def _aggregate(named: list, records: list[OpRecord], params: dict[str, int]) -> list[ModuleStats]:
    stats: dict[str, ModuleStats] = {}
    for name, sub in named:
        stats[name] = ModuleStats(name, type(sub).__name__, 0 if not name else name.count(".") + 1,
                                  params=params.get(name, 0))
    chains: dict[str, list[ModuleStats]] = {}
    for r in records:
        chain = chains.get(r.module)
        if chain is None:
            chain = chains[r.module] = [stats[k] for k in _prefixes(r.module) if k in stats]
        for s in chain:
            s.flops += r.flops
            s.macs += r.macs
            s.bytes_read += r.bytes_read
            s.bytes_written += r.bytes_written
            s.ops_all += 1
            if not r.is_free:
                s.ops += 1
            if r.kind == "uncovered":
                s.uncovered += 1
    return list(stats.values())


def _environment() -> dict:
    """What a count depends on: the torch build decides which ops dispatch (counts do not
    depend on the machine; timing results carry the full machine metadata)."""
    import platform

    return {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "flopgap": _version()}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("flopgap")
    except Exception:  # running from a source tree that is not installed
        return ""
