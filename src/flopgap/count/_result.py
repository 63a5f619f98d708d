"""What the counting pass returns: per-op records, per-module aggregates and totals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from flopgap._summary import summary_html, summary_repr
from flopgap._units import fmt_bytes, pct, si

__all__ = ["OpRecord", "ModuleStats", "CountResult", "COUNT_SCHEMA", "PHASES", "aggregate"]

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
    phase: str = "forward"  # or "backward" (count(..., backward=True))
    # elements per contiguous run in which the op reads its most scattered tensor input,
    # walking the output's memory order (a transposed input copied to row-major: 1); 0
    # when every input is read in that order (see flopgap.count._count.inner_run)
    inner_run: int = 0

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


def aggregate(templates: list[ModuleStats], records: list[OpRecord]) -> list[ModuleStats]:
    """Per-module sums of ``records`` over each module's subtree; ``templates`` give the
    modules (name, type, depth, params) in ``named_modules`` order, their sums ignored."""
    stats = {t.name: ModuleStats(t.name, t.type, t.depth, params=t.params) for t in templates}
    # sum the records of each module first, then add each module's sums to its ancestors
    own: dict[str, list[int]] = {}
    for r in records:
        row = own.get(r.module)
        if row is None:
            row = own[r.module] = [0, 0, 0, 0, 0, 0, 0]
        row[0] += r.flops
        row[1] += r.macs
        row[2] += r.bytes_read
        row[3] += r.bytes_written
        row[4] += 1
        if r.kind not in FREE_KINDS:
            row[5] += 1
            if r.kind == "uncovered":
                row[6] += 1
    # named_modules lists parents before children: walking it backwards, each module's
    # subtree sums are complete when they are added to its parent
    order = list(stats) + [m for m in own if m not in stats]
    for name in reversed(order):
        row = own.get(name)
        if row is None:
            continue
        s = stats.get(name)
        if s is not None:
            s.flops, s.macs, s.bytes_read, s.bytes_written = row[0], row[1], row[2], row[3]
            s.ops_all, s.ops, s.uncovered = row[4], row[5], row[6]
        if name:
            parent = own.get(name.rpartition(".")[0])
            if parent is None:
                own[name.rpartition(".")[0]] = list(row)
            else:
                for k in range(7):
                    parent[k] += row[k]
    return list(stats.values())


PHASES = ("forward", "backward")
BACKWARD_CONVENTION = (
    "backward: the model in training mode, one forward with autograd on, then one backward from a gradient "
    "of ones on every output that requires grad (no loss function, no optimizer step); every op autograd "
    "dispatches is counted with its own formula, never as a multiple of the forward; parameter gradients "
    "always, input gradients only for inputs that require grad (the first layer's input gradient is not "
    "computed in training)")


@dataclass
class CountResult:
    """The counting pass over one model and one set of inputs.

    Totals and module aggregates cover every counted op; with ``backward=True`` that is
    the forward and the backward pass (``mode == "train"``), and :meth:`phase` gives
    either alone.
    """

    __repr__ = summary_repr
    _repr_html_ = summary_html

    model: str
    inputs: list[str]
    params: int
    ops: list[OpRecord]
    modules: list[ModuleStats]
    mode: str = "inference"
    meta: bool = False
    environment: dict = field(default_factory=dict)
    # Python bytecode instructions of one plain forward (flopgap.count._python); None
    # when not counted (count(..., python=False), a training step, a module in training mode)
    python_opcodes: int | None = None

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

    @property
    def backward(self) -> bool:
        return self.mode == "train"

    @property
    def warnings(self) -> list[str]:
        """Ops with no formula (their FLOPs are unknown, not zero), with their share."""
        unc = self.uncovered()
        if not unc:
            return []
        return [f"no formula for {pct(1 - self.coverage)} of kernel ops (their FLOPs are unknown, not zero): "
                + ", ".join(f"{u['op']} x{u['calls']}" for u in unc[:5]) + (" ..." if len(unc) > 5 else "")]

    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        rows = [("params", si(self.params)), ("FLOPs", si(self.flops, "FLOP")), ("MACs", si(self.macs, "MAC")),
                ("bytes", fmt_bytes(self.bytes_read + self.bytes_written)), ("kernel ops", str(len(self.kernel_ops))),
                ("intensity", f"{self.intensity:.2f} FLOP/B"), ("formula coverage", pct(self.coverage)),
                ("mode", self.mode + (", meta tensors" if self.meta else ""))]
        if self.backward:
            fwd, bwd = self.phase("forward").flops, self.phase("backward").flops
            rows[2:2] = [("forward", si(fwd, "FLOP")), ("backward", si(bwd, "FLOP"))]
        return f"{self.model} ({', '.join(self.inputs)})", rows

    def phase(self, name: str) -> "CountResult":
        """The ops of one phase (``forward`` or ``backward``) with their own module sums."""
        if name not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {name!r}")
        ops = [r for r in self.ops if r.phase == name]
        return CountResult(self.model, self.inputs, self.params, ops, aggregate(self.modules, ops), mode=self.mode,
                           meta=self.meta, environment=self.environment,
                           python_opcodes=self.python_opcodes if name == "forward" else None)

    def phase_totals(self) -> dict[str, dict]:
        """``{"forward": totals, "backward": totals}`` (``backward`` only when counted)."""
        return {p: self.phase(p).totals() for p in (PHASES if self.backward else PHASES[:1])}

    def to_dict(self) -> dict:
        conventions = {"flops": "a fused multiply-add is 2 FLOPs; macs counted separately",
                       "bytes": "every tensor input read once (weights included), every output written once; "
                                "views free"}
        if self.backward:
            conventions["backward"] = BACKWARD_CONVENTION
        return {
            "schema": COUNT_SCHEMA,
            "model": self.model,
            "inputs": self.inputs,
            "mode": self.mode,
            "meta": self.meta,
            "conventions": conventions,
            "totals": self.totals(),
            **({"phases": self.phase_totals()} if self.backward else {}),
            "modules": [{**asdict(m), "intensity": m.intensity} for m in self.modules],
            "ops": [asdict(r) for r in self.ops],
            "uncovered": self.uncovered(),
            "environment": self.environment,
            "python_opcodes": self.python_opcodes,
        }
