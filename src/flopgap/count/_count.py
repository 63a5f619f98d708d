"""``count()``: one forward pass under the recorder, then formulas and aggregation."""

from __future__ import annotations

import contextlib
import functools
import gc
import warnings

import torch
from torch import nn

from flopgap.count import _formulas  # noqa: F401  (fills the registry)
from flopgap.count import _formulas_train  # noqa: F401  (fills the registry)
from flopgap.count._mode import _ALIAS_RETURN, record_calls, schema_flags
from flopgap.count._registry import Cost, Meta, lookup
from flopgap.count._result import FREE_KINDS, CountResult, ModuleStats, OpRecord, aggregate
from flopgap.models import Inputs, bind_inputs, call_model, describe_inputs

__all__ = ["count", "cost_of_call", "count_params"]

_ARG_CACHE: dict = {}


def _arg_names(func):
    hit = _ARG_CACHE.get(id(func))
    if hit is not None and hit[0] is func:
        return hit[1]
    arguments = func._schema.arguments
    defaults = {a.name: a.default_value for a in arguments if a.has_default_value()}
    cached = ([a.name for a in arguments], defaults)
    _ARG_CACHE[id(func)] = (func, cached)
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


def _packed(sub: nn.Module) -> bool:
    """Whether ``sub`` holds packed quantized weights (``quantize_dynamic``'s Linear)."""
    children = sub._modules
    if type(children) is dict:  # a dict lookup, not getattr: nn.Module.__getattr__ on a miss costs microseconds
        return children.get("_packed_params") is not None
    # TorchScript modules keep their children in an OrderedModuleDict (no .get)
    return "_packed_params" in children


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
        if _packed(sub) and callable(getattr(sub, "weight", None)):
            with contextlib.suppress(Exception):
                n += sub.weight().numel()
                b = sub.bias()
                n += b.numel() if b is not None else 0
        totals[name] = n
    # children after their parents in named_modules: add each subtree to its parent, bottom up
    for name in reversed(list(totals)):
        if name and totals[name]:
            parent = name.rpartition(".")[0]
            totals[parent] = totals.get(parent, 0) + totals[name]
    return totals


def count_params(module: nn.Module) -> int:
    return _module_params(module).get("", 0)


def count(module: nn.Module, inputs: tuple, *, model: str = "model", grad: bool = False,
          meta: bool = False, tensor_groups=None, backward: bool = False, python: bool = True) -> CountResult:
    """Count FLOPs, MACs, bytes and ops of one forward pass of ``module(*inputs)``
    (``module(*inputs, **inputs.kwargs)`` for :class:`flopgap.models.Inputs`).

    Runs under ``torch.inference_mode()`` unless ``grad=True``. With ``meta=True`` the
    inputs are moved to the meta device and no real kernel runs (the module's
    parameters must already be on the meta device: ``load_model(spec, meta=True)``).

    ``tensor_groups`` (a callable returning ``{group: [tensors]}``) splits each op's
    bytes by the tensors it reads and writes (e.g. weights, KV cache); see
    :func:`attribute_groups`. The callable is evaluated before and after the pass, so
    tensors the pass creates (a cache grown by concatenation) belong to their group too.

    ``backward=True`` counts a training step's forward and backward: the module in
    training mode (restored after), a forward with autograd on, then one backward from a
    gradient of ones on every output that requires grad (no loss function, no optimizer
    step). Each record carries its ``phase``; :meth:`CountResult.phase` splits them.
    Gradients are computed for parameters, and for inputs only where the caller passes
    inputs that require grad.

    ``python``: in inference mode, with no module in training mode, run one more plain
    forward (no hooks, no recorder) and count the Python bytecode instructions it
    executes (``CountResult.python_opcodes``, priced by ``flopgap.explain.predict``). Pass
    ``False`` for a module whose forward changes state (a generation step appending to a
    key/value cache) or when only the counts matter.
    """
    kwargs = dict(getattr(inputs, "kwargs", None) or {})
    if meta:
        if any(p.device.type != "meta" for p in module.parameters()):
            from flopgap.errors import UsageError

            raise UsageError("meta counting needs a module built on the meta device (load_model(spec, meta=True))")
        inputs = Inputs([t.to("meta") if isinstance(t, torch.Tensor) else t for t in inputs],
                        {k: t.to("meta") if isinstance(t, torch.Tensor) else t for k, t in kwargs.items()})
    else:
        inputs = Inputs(inputs, kwargs)
    # the pass allocates a few small tuples per op; the cyclic collector would otherwise
    # walk every live object (a whole transformers import) many times over: paused, as
    # timeit does, and restored after
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        res = _count(module, inputs, model, grad, meta, tensor_groups, backward)
        if python and not (grad or backward) and not any(m.training for m in module.modules()):
            res.python_opcodes = _python_work(module, inputs, model)
        return res
    finally:
        if gc_was_enabled:
            gc.enable()


def _python_work(module: nn.Module, inputs, model: str) -> int | None:
    """Bytecode instructions of one plain forward (None when it raises: the counted pass
    already ran it, so that is not this function's to report)."""
    from flopgap.count._python import python_opcodes

    fn, args = bind_inputs(module, inputs)   # the module called directly: no wrapper's Python counted
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return python_opcodes(lambda: fn(*args))
    except Exception:
        return None


def _count(module: nn.Module, inputs: tuple, model: str, grad: bool, meta: bool, tensor_groups=None,
           backward: bool = False) -> CountResult:
    named = list(module.named_modules())  # one traversal serves params, hooks and aggregation
    params = _module_params(module, named)
    grad_ctx = torch.enable_grad() if grad or backward else torch.inference_mode()
    train_ctx = _training(named) if backward else contextlib.nullcontext()
    with grad_ctx, train_ctx, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = _group_keys(tensor_groups()) if tensor_groups is not None else None
        with record_calls(module, named, meta=meta, keys=before is not None, backward=backward) as rec:
            out = call_model(module, inputs, model)
            forward_end = len(rec.calls)
            if backward:
                seeds = _seed_gradients(out, model)
                backward_start = len(rec.calls)  # the seed gradients are not the model's work
                torch.autograd.backward(*seeds)
    calls, keys = rec.calls, getattr(rec, "keys", None)
    if backward:  # the seed gradients' own ops left out
        calls = calls[:forward_end] + calls[backward_start:]
        keys = keys[:forward_end] + keys[backward_start:] if keys is not None else None
    records = _records(calls)
    for r in records[forward_end:]:
        r.phase = "backward"
    if before is not None:
        attribute_groups(records, calls, keys, before, _group_keys(tensor_groups()))
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


# ops that copy their input into the row-major layout of a shape of their own (a
# reshape or flatten that cannot be a view): their input is read in row-major order of
# its own shape, whatever the output's shape
_ROW_MAJOR_COPIES = frozenset({"aten.reshape.default", "aten._unsafe_view.default", "aten.flatten.using_ints",
                               "aten.view_copy.default", "aten._reshape_copy.default"})


def inner_run(name: str, args, outs) -> int:
    """Elements per contiguous run in which an op reads its most scattered tensor input:
    the input's dims are walked in the memory order of the output (innermost first; for a
    reshape-like copy, :data:`_ROW_MAJOR_COPIES`, in the row-major order of the input's
    own shape), and the run grows while each dim sits right after the previous one in the
    input's memory. 1: the innermost dim is strided (a transposed matrix copied to
    row-major); 0: every input is read in order (a run of the whole tensor), or the op
    has no input shaped like its output. Size-1 dims are skipped; a broadcast (stride 0)
    dim ends the run, as any other jump does. Such scattered reads run far below the
    streaming rate of the same bytes: the predictor prices them on curves of their own."""
    out = next((o for o in (outs or ()) if type(o) is Meta and o.stride is not None), None)
    if out is None:
        return 0
    row_major = name in _ROW_MAJOR_COPIES
    worst = 0
    for a in args:
        for t in (a if type(a) is list else (a,)):
            if type(t) is not Meta or t.stride is None or len(t.shape) < 2:
                continue
            if row_major:
                order = [d for d in reversed(range(len(t.shape))) if t.shape[d] > 1]
            elif tuple(t.shape) == tuple(out.shape) and len(out.stride) == len(t.shape):
                order = sorted((d for d in range(len(t.shape)) if t.shape[d] > 1),
                               key=lambda d: (out.stride[d], -d))
            else:
                continue
            run, expected = 1, 1
            for d in order:
                if t.stride[d] != expected:
                    break
                run *= t.shape[d]
                expected *= t.shape[d]
            else:
                continue   # read in order, end to end
            if worst == 0 or run < worst:
                worst = run
    return worst


def _records(calls: list) -> list[OpRecord]:
    """One :class:`OpRecord` per recorded call. Calls with the same op and argument
    metadata (a transformer's repeated layers, a network's repeated blocks) share one
    evaluation of the formula within a pass."""
    records = []
    memo: dict = {}
    for i, (func, mod, args, kwargs, outs, noop, copied) in enumerate(calls):
        key = None
        if not kwargs:
            key = (id(func), args, outs, noop, copied)  # every op of the pass is alive: ids are unique
            try:
                done = memo.get(key)
            except TypeError:  # an unhashable argument (a list of tensors): evaluate it
                key = done = None
            if done is not None:
                name, family, kind, in_shapes, in_dtypes, out_shapes, cost, run = done
                records.append(OpRecord(i, name, mod, family, kind, in_shapes, in_dtypes, out_shapes, *cost,
                                        inner_run=run))
                continue
        family, kind, cost = cost_of_call(func, args, kwargs, outs, noop, copied)
        in_shapes, in_dtypes = _shapes(args)
        out_shapes, _ = _shapes(outs)
        totals = (cost.flops, cost.macs, cost.bytes_read, cost.bytes_written)
        name = _op_name(func)
        run = 0 if kind in FREE_KINDS else inner_run(name, args, outs)
        if key is not None:
            memo[key] = (name, family, kind, in_shapes, in_dtypes, out_shapes, totals, run)
        records.append(OpRecord(i, name, mod, family, kind, in_shapes, in_dtypes, out_shapes, *totals,
                                inner_run=run))
    return records


def _group_keys(groups: dict) -> dict:
    """``{storage key: group}`` (the first group listed wins a shared storage)."""
    from flopgap.count._mode import _storage_key

    out: dict = {}
    for group, tensors in groups.items():
        for t in tensors:
            if isinstance(t, torch.Tensor):
                key = _storage_key(t)
                if key is not None:
                    out.setdefault(key, group)
    return out


def _flat_metas(values) -> list:
    out = []
    for v in values:
        if type(v) is Meta:
            out.append(v)
        elif type(v) is list:
            out.extend(m for m in v if type(m) is Meta)
    return out


def _split(total: int, parts: list[tuple[str, int]]) -> dict[str, int]:
    """Share ``total`` bytes among ``(group, generic bytes)`` parts: as they are when the
    formula kept the generic rule; when it overrode the bytes (an embedding reads only
    its rows, an in-place scatter only the rows it touches), the largest tensor's
    group takes what the others' generic bytes leave (scaled down if they exceed it)."""
    out: dict[str, int] = {}
    generic = sum(n for _, n in parts)
    if not parts:
        return out
    if generic == total:
        for group, n in parts:
            out[group] = out.get(group, 0) + n
        return out
    largest = max(range(len(parts)), key=lambda i: parts[i][1])
    others = generic - parts[largest][1]
    scale = 1.0 if others <= total else total / others
    given = 0
    for i, (group, n) in enumerate(parts):
        if i != largest:
            share = int(n * scale)
            out[group] = out.get(group, 0) + share
            given += share
    out[parts[largest][0]] = out.get(parts[largest][0], 0) + total - given
    return out


def attribute_groups(records: list[OpRecord], calls: list, keys: list, before: dict, after: dict,
                     other: str = "other") -> None:
    """Fill ``record.groups`` with each op's bytes read and written per tensor group.

    A storage in ``before`` (alive before the pass: weights, a cache's past) belongs to
    its group everywhere. A storage that only ``after`` knows was created in the pass:
    it belongs to its group from the op that allocated it (its last op that output it
    without reading it) on; an earlier op at the same address saw a freed temporary.
    """
    created: dict = {}
    for i, (arg_keys, out_keys) in enumerate(keys):
        for k in out_keys:
            if k in after and k not in before and k not in arg_keys:
                created[k] = i

    def group_of(k, i):
        g = before.get(k)
        if g is not None:
            return g
        g = after.get(k)
        if g is not None and i >= created.get(k, 0):
            return g
        return other

    for i, r in enumerate(records):
        if r.is_free or not (r.bytes_read or r.bytes_written):
            continue
        _, _, args, kwargs, outs, _, _ = calls[i]
        arg_keys, out_keys = keys[i]
        metas_in = _flat_metas(args) + (_flat_metas(kwargs.values()) if kwargs else [])
        metas_out = _flat_metas(outs)
        if len(metas_in) != len(arg_keys) or len(metas_out) != len(out_keys):
            r.groups = {other: [r.bytes_read, r.bytes_written]}
            continue
        read = _split(r.bytes_read, [(group_of(k, i), m.nbytes) for k, m in zip(arg_keys, metas_in)])
        written = _split(r.bytes_written, [(group_of(k, i), m.nbytes) for k, m in zip(out_keys, metas_out)])
        if not read and r.bytes_read:
            read = {other: r.bytes_read}
        if not written and r.bytes_written:
            written = {other: r.bytes_written}
        r.groups = {g: [read.get(g, 0), written.get(g, 0)] for g in dict.fromkeys([*read, *written])}


_OP_NAMES: dict = {}


def _op_name(func) -> str:
    hit = _OP_NAMES.get(id(func))
    if hit is not None and hit[0] is func:
        return hit[1]
    name = str(func)
    _OP_NAMES[id(func)] = (func, name)
    return name


def _environment() -> dict:
    """What a count depends on: the torch build decides which ops dispatch (counts do not
    depend on the machine; timing results carry the full machine metadata)."""
    return dict(_environment_items())


@functools.cache
def _environment_items() -> tuple:
    import platform

    return (("torch", torch.__version__), ("python", platform.python_version()), ("machine", platform.machine()),
            ("flopgap", _version()))


@functools.cache
def _version() -> str:  # reading the package metadata costs about a millisecond: once per process
    try:
        from importlib.metadata import version

        return version("flopgap")
    except Exception:  # running from a source tree that is not installed
        return ""
