"""The counting pass: a ``TorchDispatchMode`` that records every dispatched aten op and
the module that was running when it was dispatched.

The hot path only records (op, module, argument metadata, two flags); formulas run
after the forward pass, so counting costs little more than a plain forward.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from flopgap.count._registry import Meta, lookup

__all__ = ["record_calls"]

_MUTABLE, _ALIAS_RETURN, _CHECK_COPY = 1, 2, 4


_FLAGS: dict = {}


def schema_flags(func) -> int:
    """``_MUTABLE`` / ``_ALIAS_RETURN`` bits of an op's schema (cached per op, by identity:
    an OpOverload's ``__hash__`` is Python code on the hot path)."""
    hit = _FLAGS.get(id(func))
    if hit is not None and hit[0] is func:
        return hit[1]
    flags = _schema_flags(func)
    _FLAGS[id(func)] = (func, flags)
    return flags


def _schema_flags(func) -> int:
    schema = func._schema
    flags = _MUTABLE if schema.is_mutable else 0
    if not schema.is_mutable and any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns):
        flags |= _ALIAS_RETURN
        entry = lookup(func)
        if entry is None or entry.formula is not None:
            flags |= _CHECK_COPY  # may alias or copy (reshape, contiguous, to): look at the storage
    return flags


_Tensor = torch.Tensor


def _meta(x):
    """Tensor -> Meta; packed quantized params -> tuple of Metas; lists recurse; other as is."""
    if isinstance(x, _Tensor):
        try:
            return Meta(x.shape, x.dtype, x.stride())
        except RuntimeError:  # sparse / nested tensors have no strides
            if x.is_nested:  # nested tensors have no single shape either (the encoder's padding-mask fast path)
                parts = tuple(tuple(p) for p in x._nested_tensor_size().tolist())
                return Meta((sum(math.prod(p) for p in parts),), x.dtype, None, parts)
            return Meta(x.shape, x.dtype, None)
    if type(x) is list or type(x) is tuple:
        for v in x:
            if isinstance(v, _Tensor):
                return [_meta(v) for v in x]
        return x
    if isinstance(x, torch.ScriptObject) and hasattr(x, "unpack"):
        try:
            return tuple(_meta(t) for t in x.unpack() if isinstance(t, torch.Tensor) or t is None)
        except Exception:  # an unknown packed type: formula will not find weights
            return x
    return x


def _storage_key(t: torch.Tensor):
    try:
        return t.untyped_storage().data_ptr()
    except Exception:  # meta/fake tensors: treat as aliasing
        return None




class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []
        self.stack: list[str] = [""]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **kwargs) if kwargs else func(*args)
        hit = _FLAGS.get(id(func))
        flags = hit[1] if hit is not None and hit[0] is func else schema_flags(func)
        noop = copied = False
        tensor_out = isinstance(out, _Tensor)
        if tensor_out and not flags & _MUTABLE:
            for a in args:
                if a is out:
                    noop = True  # returned its input unchanged (contiguous(), dropout(train=False))
                    break
            if not noop and flags & _CHECK_COPY and args and isinstance(args[0], _Tensor):
                key = _storage_key(out)
                copied = key is not None and key != _storage_key(args[0])  # reshape that had to copy
        # the hot path: a plain tensor's metadata straight into a Meta tuple (every other
        # kind of argument, and tensors without strides, go through _meta)
        try:
            margs = tuple([_new(Meta, (a.shape, a.dtype, a.stride(), None)) if isinstance(a, _Tensor)
                           else a if type(a) in _PLAIN else _meta(a) for a in args])
            mouts = (_new(Meta, (out.shape, out.dtype, out.stride(), None)),) if type(out) is _Tensor else \
                tuple([_meta(o) for o in (out if isinstance(out, (tuple, list)) else (out,))])
        except RuntimeError:  # a nested or sparse tensor among them
            margs = tuple([_meta(a) for a in args])
            mouts = tuple([_meta(o) for o in (out if isinstance(out, (tuple, list)) else (out,))])
        self.calls.append((func, self.stack[-1], margs, {k: _meta(v) for k, v in kwargs.items()} if kwargs else {},
                           mouts, noop, copied))
        return out


_new = tuple.__new__
_PLAIN = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout,
                    torch.memory_format})  # arguments recorded as they are


# the ops that turn a tensor into a Python scalar (under inference_mode, is_nonzero and
# item reach the dispatcher whole)
_SCALAR_OPS = frozenset({torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default,
                         torch.ops.aten.item.default})


class _MetaRecorder(_Recorder):
    """The recorder for meta tensors, where no value exists: a data-dependent scalar
    (``tensor.item()``, ``bool(tensor)``, ``int(tensor)``) reads as 1 (``True``), the
    value an all-ones attention mask gives to the checks models make on it
    (``mask.all()``: no padding, take the causal fast path). Control flow that depends
    on any other value cannot be followed on meta tensors: count such a model for real."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _SCALAR_OPS and args and isinstance(args[0], _Tensor) and args[0].is_meta:
            dtype = args[0].dtype
            value = True if dtype == torch.bool or func.__name__.startswith("is_nonzero") else \
                1.0 if dtype.is_floating_point else 1
            self.calls.append((func, self.stack[-1], (_meta(args[0]),), {}, (value,), False, False))
            return value
        return super().__torch_dispatch__(func, types, args, kwargs)


def _keys(values) -> tuple:
    """Storage keys of the tensors among ``values`` (lists flattened), in order."""
    out = []
    for v in values:
        if isinstance(v, _Tensor):
            out.append(_storage_key(v))
        elif type(v) is list or type(v) is tuple:
            out.extend(_storage_key(t) for t in v if isinstance(t, _Tensor))
    return tuple(out)


class _KeyedRecorder(_Recorder):
    """The recorder that also keeps each call's tensor storages (arguments, then
    outputs), for attributing bytes to tensor groups after the pass."""

    def __init__(self):
        super().__init__()
        self.keys: list[tuple[tuple, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        self.keys.append((_keys(args) + (_keys(kwargs.values()) if kwargs else ()),
                          _keys(out if isinstance(out, (tuple, list)) else (out,))))
        return out


def _grad_tensors(value) -> list:
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor) and t.requires_grad]


def _enter_backward(stack: list[str], name: str) -> None:
    """A module's backward starts: drop entries that are not its ancestors (a module whose
    inputs need no gradient never signals its end), then push it."""
    while len(stack) > 1 and not name.startswith(stack[-1] + "."):
        stack.pop()
    stack.append(name)


def _leave_backward(stack: list[str], name: str) -> None:
    """A module's backward ended (its input gradients are computed): pop it and whatever
    is still open above it."""
    for i in range(len(stack) - 1, 0, -1):
        if stack[i] == name:
            del stack[i:]
            return


@contextlib.contextmanager
def record_calls(module: nn.Module, named: list | None = None, *, meta: bool = False, keys: bool = False,
                 backward: bool = False):
    """Context manager yielding the recorder; module names are ``state_dict`` style.

    ``named`` is ``list(module.named_modules())`` when the caller already has it.
    Module tracking uses the *global* forward hooks: per-module hooks would change
    what runs (``nn.TransformerEncoderLayer`` leaves its fused fast path when a hook is
    attached to it), and counting must see the model exactly as it runs.

    ``backward=True`` also attributes the ops of a later backward pass to modules, as
    ``torch.utils.module_tracker`` does: a module's backward begins when the gradients
    of its outputs are ready and ends when all those of its inputs are
    (``torch.autograd.graph.register_multi_grad_hook`` on each).
    """
    recorder = _MetaRecorder() if meta else _KeyedRecorder() if keys else _Recorder()
    if named is None:
        named = list(module.named_modules())
    names = {id(sub): name for name, sub in named if name}
    stack = recorder.stack
    grad_hooks: list = []

    def pre(mod, args):
        name = names.get(id(mod))
        if name is not None:
            stack.append(name)
            if backward and torch.is_grad_enabled():
                tensors = _grad_tensors(args)
                if tensors:
                    grad_hooks.append(register_multi_grad_hook(tensors, lambda grads: _leave_backward(stack, name)))

    def post(mod, args, output):
        name = names.get(id(mod))
        if name is not None and len(stack) > 1:
            stack.pop()
            if backward and torch.is_grad_enabled():
                tensors = _grad_tensors(output)
                if tensors:
                    # "any": the first output gradient starts it ("all" never fires on the
                    # backward's root: the engine does not count the root as a node it runs)
                    grad_hooks.append(register_multi_grad_hook(tensors, lambda grad: _enter_backward(stack, name),
                                                               mode="any"))

    from torch.autograd.graph import register_multi_grad_hook
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post, always_call=True)]
    try:
        with recorder:
            yield recorder
    finally:
        for h in handles + grad_hooks:
            h.remove()
