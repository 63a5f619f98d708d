"""``count()``: one forward pass under the recorder, then formulas and aggregation."""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from flopgap.count import _formulas  # noqa: F401  (fills the registry)
from flopgap.count import _formulas_train  # noqa: F401  (fills the registry)
from flopgap.count._mode import _ALIAS_RETURN, record_calls, schema_flags
from flopgap.count._registry import Cost, Meta, lookup
from flopgap.count._result import CountResult, ModuleStats, OpRecord, _prefixes, aggregate
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
          meta: bool = False, backward: bool = False) -> CountResult:
    """Count FLOPs, MACs, bytes and ops of one forward pass of ``module(*inputs)``.

    Runs under ``torch.inference_mode()`` unless ``grad=True``. With ``meta=True`` the
    inputs are moved to the meta device and no real kernel runs (the module's
    parameters must already be on the meta device: ``load_model(spec, meta=True)``).

    ``backward=True`` counts a training step's forward and backward: the module in
    training mode (restored after), a forward with autograd on, then one backward from a
    gradient of ones on every output that requires grad (no loss function, no optimizer
    step). Each record carries its ``phase``; :meth:`CountResult.phase` splits them.
    Gradients are computed for parameters, and for inputs only where the caller passes
    inputs that require grad.
    """
    inputs = tuple(inputs)
    if meta:
        if any(p.device.type != "meta" for p in module.parameters()):
            from flopgap.errors import UsageError

            raise UsageError("meta counting needs a module built on the meta device (load_model(spec, meta=True))")
        inputs = tuple(t.to("meta") if isinstance(t, torch.Tensor) else t for t in inputs)
    named = list(module.named_modules())  # one traversal serves params, hooks and aggregation
    params = _module_params(module, named)
    grad_ctx = torch.enable_grad() if grad or backward else torch.inference_mode()
    train_ctx = _training(named) if backward else contextlib.nullcontext()
    with grad_ctx, train_ctx, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with record_calls(module, named, backward=backward) as rec:
            out = call_model(module, inputs, model)
            forward_end = len(rec.calls)
            if backward:
                seeds = _seed_gradients(out, model)
                backward_start = len(rec.calls)  # the seed gradients are not the model's work
                torch.autograd.backward(*seeds)
    calls = rec.calls if not backward else rec.calls[:forward_end] + rec.calls[backward_start:]
    records = []
    for i, (func, mod, args, kwargs, outs, noop, copied) in enumerate(calls):
        family, kind, cost = cost_of_call(func, args, kwargs, outs, noop, copied)
        in_shapes, in_dtypes = _shapes(args)
        out_shapes, _ = _shapes(outs)
        records.append(OpRecord(i, _op_name(func), mod, family, kind, in_shapes, in_dtypes, out_shapes,
                                cost.flops, cost.macs, cost.bytes_read, cost.bytes_written,
                                "forward" if i < forward_end else "backward"))
    templates = [ModuleStats(name, type(sub).__name__, 0 if not name else name.count(".") + 1,
                             params=params.get(name, 0)) for name, sub in named]
    mode = "train" if backward else "grad" if grad else "inference"
    return CountResult(model, describe_inputs(inputs), params.get("", 0), records, aggregate(templates, records),
                       mode=mode, meta=meta, environment=_environment())


@contextlib.contextmanager
def _training(named: list):
    """Every module in training mode for the block (batch statistics, active dropout), as
    in a training step after ``zero_grad(set_to_none=True)``: parameters start with no
    gradient, so none is accumulated into. Each module's flag and each parameter's
    ``.grad`` are restored after: counting leaves the model as it was."""
    before = [(sub, sub.training) for _, sub in named]
    grads = [(p, p.grad) for _, sub in named for p in sub._parameters.values() if p is not None]
    for sub, _ in before:
        sub.training = True
    for p, _ in grads:
        p.grad = None
    try:
        yield
    finally:
        for sub, flag in before:
            sub.training = flag
        for p, g in grads:
            p.grad = g


def _seed_gradients(out, model: str) -> tuple[list, list]:
    """(outputs, gradients of ones) for ``torch.autograd.backward``: every floating output
    that requires grad."""
    from torch.utils._pytree import tree_leaves

    outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not outs:
        from flopgap.errors import UsageError

        raise UsageError(f"{model}: no output requires grad (no parameter or input that requires grad reaches "
                         "an output), so there is no backward pass to count")
    return outs, [torch.ones_like(t) for t in outs]


_OP_NAMES: dict = {}


def _op_name(func) -> str:
    name = _OP_NAMES.get(func)
    if name is None:
        name = _OP_NAMES[func] = str(func)
    return name


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
