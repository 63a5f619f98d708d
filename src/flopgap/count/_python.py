"""The Python interpreter's share of a forward pass, counted as bytecode instructions.

A model's time on the CPU is its kernels plus the Python that issues them: module calls,
framework wrappers (``torch.nn.functional``), and the library's own forward code (timm's
``BatchNormAct2d``, transformers' mask and rotary helpers). That share differs between
libraries that issue the same kernels, so it is counted per model, not assumed per op.
:func:`python_opcodes` counts the bytecode instructions one call executes
(``sys.settrace`` with opcode events; flopgap's own frames left out); the machine profile
prices one instruction of module code (``flopgap.machine``), and the prediction adds
their product.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

__all__ = ["python_opcodes"]

_OWN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # src/flopgap


def python_opcodes(fn: Callable[[], object]) -> int:
    """Bytecode instructions executed by ``fn()`` outside flopgap's own code (its return
    value is dropped). Any tracer already set (a debugger, coverage) is put back after."""
    n = 0

    def local(frame, event, arg):
        nonlocal n
        if event == "opcode":
            n += 1
        return local

    def trace(frame, event, arg):
        if frame.f_code.co_filename.startswith(_OWN):
            return None   # flopgap's frames: not the model's work (calls out of them are traced)
        frame.f_trace_opcodes = True
        return local

    before = sys.gettrace()
    sys.settrace(trace)
    try:
        fn()
    finally:
        sys.settrace(before)
    return n
