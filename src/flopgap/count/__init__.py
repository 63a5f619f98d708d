"""Stage 2 of the pipeline: count parameters, FLOPs, MACs, bytes and ops at the dispatcher.

Conventions: a fused multiply-add is **2 FLOPs** (and 1 MAC, reported separately);
bytes are every tensor input read once (weights included) plus every output written
once, views and no-ops free. See ``flopgap.count._formulas`` for every formula.
"""

from flopgap.count._count import count, count_params
from flopgap.count._python import python_opcodes
from flopgap.count._registry import Cost, Meta, register_formula
from flopgap.count._result import COUNT_SCHEMA, CountResult, ModuleStats, OpRecord

__all__ = ["count", "count_params", "CountResult", "ModuleStats", "OpRecord", "Cost", "Meta",
           "register_formula", "COUNT_SCHEMA", "python_opcodes"]
