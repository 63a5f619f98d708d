"""The typed records an explanation is made of (dicts only at the JSON edge, ``to_dict``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum

__all__ = ["Bound", "ExplainedOp", "ModuleTime", "ClassShare", "Totals", "OpRef", "Finding"]


class Bound(str, Enum):
    """Which roofline term bounds an op: its FLOPs, its bytes, or the fixed cost of a call."""

    COMPUTE = "compute"
    MEMORY = "memory"
    OVERHEAD = "overhead"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ExplainedOp:
    """One counted op joined to its profiled time and its roofline on this machine.

    ``time_s`` is the profiler's median over the profiled calls (``None``: no event
    matched); ``share`` is of the profiled call; ``efficiency`` is achieved FLOP/s over
    the machine's peak for the op's dtype; ``predicted_s`` is the prediction's time for it."""

    index: int
    op: str
    module: str
    family: str
    kind: str
    free: bool
    flops: int
    bytes: int
    time_s: float | None
    share: float | None
    achieved_flops_s: float | None
    achieved_bytes_s: float | None
    efficiency: float | None
    launches: int
    device_time_s: float | None
    bound: Bound
    t_compute: float
    t_memory: float
    t_overhead: float
    roofline_s: float
    predicted_s: float
    inner_run: int = 0   # the count's OpRecord.inner_run: contiguous run of its most scattered input (0: in order)

    @property
    def matched(self) -> bool:
        return self.time_s is not None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bound"] = str(self.bound)
        d["matched"] = self.matched
        return d


@dataclass(frozen=True)
class ModuleTime:
    """A module's subtree: its ops' summed profiled time, FLOPs, bytes and kernel launches."""

    name: str
    type: str
    depth: int
    flops: int
    bytes: int
    ops: int
    time_s: float
    launches: int
    share: float
    achieved_flops_s: float | None
    achieved_bytes_s: float | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClassShare:
    """What one roofline class takes: its ops, their time and share, their FLOPs and bytes."""

    ops: int
    time_s: float
    time_share: float
    flops: int
    flop_share: float
    bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Totals:
    """The whole call. Shares are of ``call_s``, the profiled call (marker less its own
    cost); ``outside_s`` is its part outside any op and ``outside_python_s`` that part
    less the profiler's own cost (profiled call - rigorous median), when a trustworthy
    median exists (``measured_median_s``: enough samples, machine not disturbed)."""

    call_s: float
    ops_s: float
    outside_s: float
    outside_share: float
    outside_python_s: float
    profiled_calls: int
    marker_s: float
    unmatched_events: dict
    unmatched_s: float
    unmatched_records: int
    measured_median_s: float | None
    profiler_overhead: float | None
    predicted_s: float
    roofline_s: float
    prediction_error: float | None
    interrupted: bool
    disturbed: bool
    threads: int | None
    flops: int
    bytes: int
    weight_bytes: int
    ops: int
    achieved_flops_s: float
    efficiency: float
    ridge_intensity: float
    batch: int
    launches: int
    device: str
    device_s: float | None
    gpu_idle_share: float | None
    page_faults_per_call: float | None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class OpRef:
    """An op a finding points at, with the figure that ranked it (time or efficiency)."""

    index: int
    op: str
    module: str
    time_s: float | None = None
    efficiency: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("index", "op", "module")}


@dataclass(frozen=True)
class Finding:
    """One finding in the seed's terms: ``kind`` (machine-readable), ``title``, ``text``
    with its numbers written out, the ``numbers`` themselves, and the ops it concerns."""

    kind: str
    title: str
    text: str
    numbers: dict = field(default_factory=dict)
    ops: tuple[OpRef, ...] = ()

    def to_dict(self) -> dict:
        return {"kind": self.kind, "title": self.title, "text": self.text, "numbers": dict(self.numbers),
                "ops": [o.to_dict() for o in self.ops]}
