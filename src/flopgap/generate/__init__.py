"""Stage 5b of the pipeline: LLM generation, prefill against decode.

A causal LM (``hf:llama``, ``hf:gpt2``, ...) prefills ``P`` prompt tokens and decodes
new tokens one step at a time with transformers' own KV cache classes. Each phase is
counted (FLOPs, bytes split into weights, KV read, KV written and activations, kernel
ops, per token), timed with the rigorous timer (time to first token, ms per output
token, tokens/s, each with its CI) and set against this machine's measured ceilings
(memory-bandwidth and compute floors, MBU, MFU), over a sweep of batch sizes and
context lengths. See docs/generate.md.
"""

from flopgap.generate._phases import Floors, PhaseCount, count_phase, floors_for
from flopgap.generate._run import (GENERATE_SCHEMA, GenerateOptions, GenerationPoint, GenerationResult,
                                   machine_profile, run_generation, sweep_rows)
from flopgap.generate._session import CACHE_KINDS, LMSession, session_for
from flopgap.generate._timed import PhaseTiming

__all__ = ["run_generation", "GenerateOptions", "GenerationResult", "GenerationPoint", "PhaseCount", "PhaseTiming",
           "Floors", "LMSession", "session_for", "count_phase", "floors_for", "sweep_rows", "CACHE_KINDS",
           "GENERATE_SCHEMA", "machine_profile"]
