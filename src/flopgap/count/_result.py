"""What the counting pass returns: per-op records, per-module aggregates and totals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["OpRecord", "ModuleStats", "CountResult", "COUNT_SCHEMA"]

COUNT_SCHEMA = "flopgap.count/1"

# kinds of op record; only "uncovered" means "we do not know its FLOPs"
COMPUTE_KINDS = ("compute", "data-movement")
FREE_KINDS = ("view", "noop", "metadata", "alloc")


@dataclass(slots=True)
class OpRecord:
    """One dispatched aten op. ``kind`` is ``compute``, ``data-movement`` (0 FLOPs but
    bytes), ``view``/``noop``/``metadata``/``alloc`` (free on purpose) or ``uncovered``
    (no formula: FLOPs unknown, reported, never silently zero)."""

    index: int
    op: str
    module: str
    family: str
    kind: str
    input_shapes: list
    input_dtypes: list
    output_shapes: list
    flops: int = 0
    macs: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    # with count(..., tensor_groups=...): {group: [bytes read, bytes written]} for this op;
    # bytes of tensors in no group are under "other"
    groups: dict | None = None

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def is_free(self) -> bool:
        return self.kind in FREE_KINDS


@dataclass(slots=True)
class ModuleStats:
    """Aggregates for one module and everything below it (``name`` is state_dict style)."""

    name: str
    type: str
    depth: int
    params: int = 0
    flops: int = 0
    macs: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    ops: int = 0          # non-free ops (the ones that run kernels)
    ops_all: int = 0      # every dispatched op, views included
    uncovered: int = 0

    @property
    def intensity(self) -> float:
        b = self.bytes_read + self.bytes_written
        return self.flops / b if b else 0.0


@dataclass
class CountResult:
    """The counting pass over one model and one set of inputs."""

    model: str
    inputs: list[str]
    params: int
    ops: list[OpRecord]
    modules: list[ModuleStats]
    mode: str = "inference"
    meta: bool = False
    environment: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ totals
    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.ops)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.ops)

    @property
    def bytes_read(self) -> int:
        return sum(r.bytes_read for r in self.ops)

    @property
    def bytes_written(self) -> int:
        return sum(r.bytes_written for r in self.ops)

    @property
    def intensity(self) -> float:
        b = self.bytes_read + self.bytes_written
        return self.flops / b if b else 0.0

    @property
    def kernel_ops(self) -> list[OpRecord]:
        """Ops that do work (everything but views, no-ops, metadata and allocation)."""
        return [r for r in self.ops if not r.is_free]

    def uncovered(self) -> list[dict]:
        """Ops with no formula: name, calls, share of non-free ops, and where they ran."""
        kernel_ops = self.kernel_ops
        table: dict[str, dict] = {}
        for r in kernel_ops:
            if r.kind != "uncovered":
                continue
            row = table.setdefault(r.op, {"op": r.op, "calls": 0, "modules": {}})
            row["calls"] += 1
            row["modules"][r.module] = row["modules"].get(r.module, 0) + 1
        for row in table.values():
            row["share"] = row["calls"] / len(kernel_ops) if kernel_ops else 0.0
        return sorted(table.values(), key=lambda r: -r["calls"])

    @property
    def coverage(self) -> float:
        """Share of non-free ops (by count) that had a formula."""
        kernel_ops = self.kernel_ops
        if not kernel_ops:
            return 1.0
        return 1.0 - sum(r.kind == "uncovered" for r in kernel_ops) / len(kernel_ops)

    def totals(self) -> dict:
        return {
            "params": self.params, "flops": self.flops, "macs": self.macs,
            "bytes_read": self.bytes_read, "bytes_written": self.bytes_written,
            "intensity": self.intensity, "ops": len(self.kernel_ops), "ops_all": len(self.ops),
            "coverage": self.coverage,
        }

    def bytes_by_group(self) -> dict[str, dict]:
        """``{group: {"read": bytes, "written": bytes}}`` over every op, when the count
        was asked for ``tensor_groups`` (empty otherwise)."""
        out: dict[str, dict] = {}
        for r in self.ops:
            for group, (read, written) in (r.groups or {}).items():
                row = out.setdefault(group, {"read": 0, "written": 0})
                row["read"] += read
                row["written"] += written
        return out

    def by_family(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for r in self.ops:
            row = out.setdefault(r.family, {"ops": 0, "flops": 0, "bytes": 0})
            row["ops"] += 1
            row["flops"] += r.flops
            row["bytes"] += r.bytes
        return out

    def to_dict(self) -> dict:
        return {
            "schema": COUNT_SCHEMA,
            "model": self.model,
            "inputs": self.inputs,
            "mode": self.mode,
            "meta": self.meta,
            "conventions": {"flops": "a fused multiply-add is 2 FLOPs; macs counted separately",
                            "bytes": "every tensor input read once (weights included), every output written once; views free"},
            "totals": self.totals(),
            "modules": [{**asdict(m), "intensity": m.intensity} for m in self.modules],
            "ops": [asdict(r) for r in self.ops],
            "uncovered": self.uncovered(),
            "environment": self.environment,
        }
