"""Per-phase counts and their floors on this machine.

A phase call is counted with :func:`flopgap.count.count` and its bytes split by the
tensors each op reads and writes:

- ``weights``: the model's parameters and buffers;
- ``kv read`` / ``kv written``: the cache's key and value tensors (those before the
  call and those it creates);
- ``activations``: everything else (hidden states, logits, scores, masks).

Per token means per token *processed*: ``B*P`` for a prefill of ``B`` prompts of ``P``
tokens, ``B`` for a decode step.

Floors: the memory-bandwidth floor is the phase's bytes over the measured bandwidth
(the cache-resident bandwidth when all of them fit the last-level cache, main memory
otherwise, as explain's roofline does); the compute floor is its FLOPs over the
measured peak for its dtype. Whichever is larger bounds the phase: no kernel schedule
can beat it. MBU and MFU are the bandwidth and FLOP/s reached over the measured ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["PhaseCount", "Floors", "count_phase", "floors_for"]


@dataclass(frozen=True)
class PhaseCount:
    """What one call of a phase does (counted, exact)."""

    phase: str  # "prefill" | "decode"
    batch: int
    context: int  # prefill: prompt length P; decode: tokens in the cache before the step
    tokens: int  # tokens processed by the call: B*P (prefill) or B (decode)
    flops: int
    macs: int
    weights: int  # bytes of weights read
    kv_read: int
    kv_written: int
    activations: int  # bytes of everything else, read + written
    kernel_ops: int
    coverage: float
    dtype: str = "float32"

    @property
    def bytes(self) -> int:
        return self.weights + self.kv_read + self.kv_written + self.activations

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else 0.0

    def per_token(self) -> dict:
        t = max(self.tokens, 1)
        return {"flops": self.flops / t, "bytes": self.bytes / t, "weights": self.weights / t,
                "kv_read": self.kv_read / t, "kv_written": self.kv_written / t, "activations": self.activations / t,
                "kernel_ops": self.kernel_ops / t}

    def to_dict(self) -> dict:
        return {**asdict(self), "bytes": self.bytes, "intensity": self.intensity, "per_token": self.per_token()}


@dataclass(frozen=True)
class Floors:
    """The roofline floors of one phase call on a machine profile."""

    memory_s: float
    compute_s: float
    bandwidth: float  # bytes/s used for the memory floor
    peak: float  # FLOP/s used for the compute floor

    @property
    def floor_s(self) -> float:
        return max(self.memory_s, self.compute_s)

    @property
    def bound(self) -> str:
        return "memory" if self.memory_s >= self.compute_s else "compute"

    def utilisation(self, seconds: float, count: PhaseCount) -> dict:
        """MBU, MFU and the share of the floor reached at a measured ``seconds`` per call."""
        if not seconds or seconds <= 0:
            return {"mbu": None, "mfu": None, "of_floor": None}
        return {"mbu": count.bytes / seconds / self.bandwidth, "mfu": count.flops / seconds / self.peak,
                "of_floor": self.floor_s / seconds}

    def to_dict(self) -> dict:
        return {**asdict(self), "floor_s": self.floor_s, "bound": self.bound}


def floors_for(count: PhaseCount, profile) -> Floors:
    bandwidth = profile.bandwidth_for(count.bytes)
    peak = profile.peak(count.dtype)
    return Floors(count.bytes / bandwidth, count.flops / peak, bandwidth, peak)


def count_phase(session, phase: str, batch: int, context: int) -> PhaseCount:
    """Count one call of ``phase`` (``prefill`` of ``context`` tokens, or a ``decode``
    step against a cache of ``context`` tokens) at ``batch`` sequences."""
    from flopgap.count import count

    module = session.module
    if phase == "prefill":
        inputs = session.prefill(batch, context)()
        tokens = batch * context
    elif phase == "decode":
        inputs, reset = session.decode(batch, context)
        reset()
        tokens = batch
    else:
        raise ValueError(f"phase must be prefill or decode, got {phase!r}")
    cache = inputs.kwargs[session.cache_arg]
    weights = [*module.parameters(), *module.buffers()]

    def groups():
        return {"weights": weights, "kv": session.cache_tensors(cache)}

    # python=False: a second forward would append to the session's key/value cache
    result = count(module, inputs, model=f"{session.spec} {phase}", tensor_groups=groups, python=False)
    split = result.bytes_by_group()
    other = split.get("other", {"read": 0, "written": 0})
    kv = split.get("kv", {"read": 0, "written": 0})
    w = split.get("weights", {"read": 0, "written": 0})
    dtype = str(next(module.parameters()).dtype).removeprefix("torch.")
    return PhaseCount(phase, batch, context, tokens, result.flops, result.macs, w["read"] + w["written"],
                      kv["read"], kv["written"], other["read"] + other["written"], len(result.kernel_ops),
                      result.coverage, dtype)
