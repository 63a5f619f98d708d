"""The Python interpreter's share of a forward pass, counted as bytecode instructions.

A model's time on the CPU is its kernels plus the Python that issues them: module calls,
framework wrappers (``torch.nn.functional``), and the library's own forward code (timm's
``BatchNormAct2d``, transformers' mask and rotary helpers). That share differs between
libraries that issue the same kernels, so it is counted per model, not assumed per op.
:func:`python_opcodes` counts the bytecode instructions one call executes
(``sys.settrace`` with opcode events); the machine profile
prices one instruction of module code (``flopgap.machine``), and the prediction adds
their product.
"""

from __future__ import annotations

import sys
from typing import Callable

__all__ = ["python_opcodes"]


def python_opcodes(fn: Callable[[], object]) -> int:
    """Bytecode instructions executed by the calls ``fn()`` makes, ``fn``'s own frame left
    out: pass a thin wrapper (``lambda: model(x)``), whose few instructions are the
    caller's, not the model's. The return value is dropped; any tracer already set (a
    debugger, coverage) is put back after."""
    n = 0
    wrapper = getattr(fn, "__code__", None)

    def local(frame, event, arg):
        nonlocal n
        if event == "opcode":
            n += 1
        return local

    def trace(frame, event, arg):
        if frame.f_code is wrapper:
            return None   # the wrapper: calls out of it are traced all the same
        frame.f_trace_opcodes = True
        return local

    before = sys.gettrace()
    # Python 3.12 turns opcode events on at settrace only once some frame has asked for
    # them (CPython gh-114480): this frame asks (it is not traced itself)
    sys._getframe().f_trace_opcodes = True
    sys.settrace(trace)
    try:
        fn()
    finally:
        sys.settrace(before)
    return n
