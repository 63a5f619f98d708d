"""A Chrome/Perfetto trace of explain's profiled calls, its op events carrying flopgap's figures.

The trace is ``torch.profiler``'s own export (``prof.export_chrome_trace``: kineto's
JSON, which Perfetto, ``chrome://tracing`` and Holistic Trace Analysis read). flopgap
then adds arguments to the events it joined to the count, and changes nothing else: the
events, their times, the ``External id`` and ``correlation`` arguments and the flow
events (``ph`` ``s``/``f``) that tie each CUDA kernel to the runtime call that launched
it all stay as the profiler wrote them.

Added arguments (``flopgap.`` prefix; Perfetto shows them as one group):

- on each top-level op event joined to a count record (every profiled call):
  ``flopgap.index`` (the record's index in ``flopgap count``), ``flopgap.op``,
  ``flopgap.module``, ``flopgap.flops``, ``flopgap.macs``, ``flopgap.bytes``,
  ``flopgap.intensity`` (FLOP per byte), ``flopgap.bound`` (roofline class:
  ``compute-bound``, ``memory-bound`` or ``overhead-bound``), ``flopgap.roofline_us``
  and ``flopgap.predicted_us`` (this machine's roofline and prediction for the op);
- on each device event (CUDA kernel, memcpy, memset) launched under such an op:
  ``flopgap.index``, ``flopgap.op`` and ``flopgap.module``, so a kernel names its op
  even where the viewer does not follow flows;
- a top-level ``flopgap`` object: schema, model, conventions, and how many events were
  annotated.

The join: the profiler's ``FunctionEvent.id`` is the ``External id`` argument of the
same event in the export. An event is annotated only when both the id and the op name
agree; the rest is counted in ``flopgap.unannotated``. A device event's ``External id``
is that of the CPU op that launched it (the innermost one, e.g. ``aten::addmm`` under
``aten::linear``), so the ids under each joined op are kept to find its kernels. A path
ending in ``.gz`` is written gzip-compressed (as ``export_chrome_trace`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path

from flopgap._files import write_atomic
from flopgap._json import dumps

__all__ = ["TraceJoin", "annotate_trace", "TRACE_SCHEMA"]

TRACE_SCHEMA = "flopgap.trace/1"

# kineto categories of events that run on the device (their "External id" is the CPU op's)
_DEVICE_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset", "cuda_runtime", "cuda_driver",
                                "gpu_user_annotation"})


@dataclass(frozen=True)
class TraceJoin:
    """One profiled top-level op event joined to count record ``record``: its
    ``FunctionEvent.id`` and the ids of every event under it (kernel launches included)."""

    event_id: int
    name: str
    record: int
    descendants: tuple[int, ...] = ()


def _args(row: dict) -> dict:
    flops, nbytes = row["flops"], row["bytes"]
    return {
        "flopgap.index": row["index"], "flopgap.op": row["op"], "flopgap.module": row["module"] or "(model)",
        "flopgap.flops": flops, "flopgap.macs": row.get("macs"), "flopgap.bytes": nbytes,
        "flopgap.intensity": round(flops / nbytes, 4) if nbytes else None,
        "flopgap.bound": f"{row['bound']}-bound",
        "flopgap.roofline_us": _us(row.get("roofline_s")), "flopgap.predicted_us": _us(row.get("predicted_s")),
    }


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e6, 4)


def annotate_trace(path: str | Path, joins: list[TraceJoin], rows: list[dict], *, model: str,
                   conventions: dict) -> dict:
    """Add flopgap's figures to the trace at ``path`` in place; returns the summary that
    is also stored under the trace's top-level ``flopgap`` key.

    ``rows`` are the explanation's op rows (index, op, module, flops, bytes, bound,
    roofline_s, predicted_s), indexed by record; ``joins`` say which event is which.
    """
    p = Path(path)
    data = json.loads(_read(p))
    events = data.get("traceEvents", [])
    by_id: dict[int, list[dict]] = {}
    for ev in events:
        ext = (ev.get("args") or {}).get("External id")
        if isinstance(ext, int):
            by_id.setdefault(ext, []).append(ev)
    annotated = unannotated = device = 0
    for j in joins:
        row = rows[j.record]
        hit = next((ev for ev in by_id.get(j.event_id, ()) if ev.get("ph") == "X" and ev.get("name") == j.name
                    and ev.get("cat") not in _DEVICE_CATEGORIES), None)
        if hit is None:
            unannotated += 1
            continue
        hit["args"].update(_args(row))
        annotated += 1
        short = {"flopgap.index": row["index"], "flopgap.op": row["op"], "flopgap.module": row["module"] or "(model)"}
        for ext in (j.event_id, *j.descendants):
            for ev in by_id.get(ext, ()):
                if ev.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and ev.get("ph") == "X":
                    ev["args"].update(short)
                    device += 1
    summary = {"schema": TRACE_SCHEMA, "model": model, "conventions": conventions,
               "annotated_op_events": annotated, "annotated_device_events": device, "unannotated": unannotated,
               "args": sorted(_args(rows[0]).keys()) if rows else []}
    data["flopgap"] = summary
    _write(p, dumps(data, indent=None))
    return summary


def _read(p: Path) -> str:
    if p.suffix == ".gz":  # torch.profiler writes gzip when the name ends in .gz; HTA reads both
        import gzip

        return gzip.decompress(p.read_bytes()).decode()
    return p.read_text()


def _write(p: Path, text: str) -> None:
    """The trace as one file, written whole (gzip when the name ends in .gz)."""
    import gzip

    write_atomic(p, gzip.compress(text.encode()) if p.suffix == ".gz" else text, what=f"trace {str(p)!r}")
