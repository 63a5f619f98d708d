"""Time attribution: run the model under ``torch.profiler`` and join the measured
per-op times to the counting records.

The join: each profiled call is wrapped in a ``record_function("flopgap::call")``
marker; the *top-level* op events under it (op events with no op event above them)
are what the counting pass's dispatch mode saw, in the same order. They are aligned
to the count records by op name (``aten.conv2d.default`` <-> ``aten::conv2d``) with a
small look-ahead, input shapes breaking ties. An op's time is the median over the
profiled calls of its event's total CPU time (its children included); on CUDA the
larger of CPU time and device time (kernel time), and the kernel launches under it
are counted. On CUDA the profiler also records each marker as a GPU-side annotation
of the same name: only the CPU-side marker events delimit calls.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from flopgap._quiet import quiet_profiler
from flopgap.models._specs import raised_by_model
from flopgap.timing import minor_faults

__all__ = ["LAUNCH_EVENTS", "count_launches", "top_level_ops", "align", "profile_ops", "Attribution",
           "profiler_name"]

LAUNCH_EVENTS = frozenset({"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"})
_MARKER = "flopgap::call"
_EMPTY = "flopgap::empty"
_EMPTY_MARKERS = 5
_FAULT_CALLS = 3


_LOOKAHEAD = 8


def profiler_name(op: str) -> str:
    """``aten.conv2d.default`` -> ``aten::conv2d`` (the profiler's event name)."""
    parts = op.split(".")
    return f"{parts[0]}::{parts[1]}" if len(parts) >= 2 else op


def count_launches(event) -> int:
    """Kernel-launch runtime calls (cudaLaunchKernel, cudaLaunchKernelExC,
    cuLaunchKernel ...) under ``event``, itself included, over ``cpu_children``."""
    n = 1 if event.name in LAUNCH_EVENTS else 0
    for ch in getattr(event, "cpu_children", ()) or ():
        n += count_launches(ch)
    return n


def _is_op(event, namespaces: frozenset[str]) -> bool:
    name = event.name
    return "::" in name and name.split("::", 1)[0] in namespaces


def top_level_ops(root, namespaces: frozenset[str]) -> list:
    """Op events under ``root`` that have no op event between them and ``root``, in order."""
    out = []
    for ch in getattr(root, "cpu_children", ()) or ():
        if _is_op(ch, namespaces):
            out.append(ch)
        else:
            out.extend(top_level_ops(ch, namespaces))
    return out


def _tensor_shapes(shapes) -> list:
    return [list(s) for s in (shapes or []) if s]


def align(records: list, events: list) -> list[int | None]:
    """For each count record, the index of its profiler event (or ``None``).

    Greedy in order: the next event with the record's op name within a look-ahead of
    ``_LOOKAHEAD`` events, preferring one whose tensor input shapes match; events
    skipped over stay unmatched (reported as profiler time the count did not see).
    """
    out: list[int | None] = []
    j = 0
    for r in records:
        want = profiler_name(r.op)
        shapes = _tensor_shapes(r.input_shapes)
        by_name = None
        hit = None
        for k in range(j, min(j + _LOOKAHEAD, len(events))):
            ev = events[k]
            if ev.name != want:
                continue
            if by_name is None:
                by_name = k
            ev_shapes = _tensor_shapes(getattr(ev, "input_shapes", None))
            if not ev_shapes or not shapes or ev_shapes == shapes:
                hit = k
                break
        k = hit if hit is not None else by_name
        out.append(k)
        if k is not None:
            j = k + 1
    return out


@dataclass
class Attribution:
    """Per-record times (seconds, median over profiled calls; ``None``: no event
    matched) and what the profiled calls looked like as a whole."""

    times: list[float | None]
    launches: list[int]
    calls: int
    call_s: float               # median profiled wall time of one call (marker duration less its own cost)
    ops_s: float                # median over calls of the summed matched top-level op times
    unmatched_events: dict[str, int] = field(default_factory=dict)
    unmatched_s: float = 0.0    # median per call of profiler op time that matched no record
    device: str = "cpu"
    marker_s: float = 0.0       # median cost of an empty marker, already subtracted from call_s
    page_faults_per_call: float | None = None  # minor page faults per unprofiled call (POSIX)
    device_times: list[float | None] | None = None  # CUDA: per-record median kernel time (GPU busy)
    device_s: float | None = None                   # CUDA: median per call of all kernel time under the marker
    threads: int | None = None                      # torch intra-op threads during the profiled calls


def _device_time_s(ev) -> float:
    """Kernel time under ``ev`` (its children included), seconds."""
    dev = getattr(ev, "device_time_total", None)
    if dev is None:  # torch < 2.4 named it cuda_time_total
        dev = getattr(ev, "cuda_time_total", 0.0)
    return (dev or 0.0) * 1e-6


def _event_time_s(ev, cuda: bool) -> float:
    cpu = ev.cpu_time_total * 1e-6
    return max(cpu, _device_time_s(ev)) if cuda else cpu


def _host_side(events: list, name: str) -> list:
    """Events named ``name`` recorded on the host: on CUDA the profiler adds a GPU-side
    annotation of each ``record_function`` range, with no CPU children, that is not a call."""
    from torch.autograd import DeviceType

    return [e for e in events if e.name == name and getattr(e, "device_type", DeviceType.CPU) == DeviceType.CPU]


def profile_ops(module, inputs: tuple, records: list, *, calls: int | None = None, warmup: int = 2,
                device: str = "cpu", target_s: float = 0.4, name: str = "model") -> Attribution:
    """Profile ``calls`` forward passes (default: as many as fit ``target_s``, 3 to 30)
    and join them to ``records`` (a count's ``ops``)."""
    from torch.profiler import ProfilerActivity, profile, record_function
    import time as _time

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    namespaces = frozenset(r.op.split(".", 1)[0] for r in records) | {"aten"}
    with torch.inference_mode(), raised_by_model(name):
        t0 = _time.perf_counter()
        for _ in range(max(warmup, 1)):
            module(*inputs)
        sync()
        per_call = (_time.perf_counter() - t0) / max(warmup, 1)
        faults = minor_faults()
        for _ in range(_FAULT_CALLS):
            module(*inputs)
        sync()
        faults_after = minor_faults()
    faults_per_call = ((faults_after - faults) / _FAULT_CALLS
                       if faults is not None and faults_after is not None else None)
    if calls is None:
        calls = int(min(30, max(3, target_s / max(per_call, 1e-6))))
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with quiet_profiler(), torch.inference_mode():
        with profile(activities=acts, record_shapes=True) as prof:
            for _ in range(_EMPTY_MARKERS):  # the marker's own cost, subtracted from each call
                with record_function(_EMPTY):
                    sync()
            with raised_by_model(name):
                for _ in range(calls):
                    with record_function(_MARKER):
                        module(*inputs)
                        sync()
        events = list(prof.events())
    markers = _host_side(events, _MARKER)
    empty = [e.cpu_time_total * 1e-6 for e in _host_side(events, _EMPTY)]
    marker_s = statistics.median(empty) if empty else 0.0
    per_record: list[list[float]] = [[] for _ in records]
    per_record_dev: list[list[float]] = [[] for _ in records]
    device_sums: list[float] = []
    launches = [0] * len(records)
    call_times, op_sums, unmatched_sums = [], [], []
    unmatched: dict[str, int] = {}
    for mi, m in enumerate(markers):
        tops = top_level_ops(m, namespaces)
        idx = align(records, tops)
        used = set()
        s = 0.0
        for ri, k in enumerate(idx):
            if k is None:
                continue
            t = _event_time_s(tops[k], cuda)
            per_record[ri].append(t)
            if cuda:
                per_record_dev[ri].append(_device_time_s(tops[k]))
            s += t
            used.add(k)
            if mi == 0:
                launches[ri] = count_launches(tops[k])
        u = 0.0
        for k, ev in enumerate(tops):
            if k not in used:
                u += _event_time_s(ev, cuda)
                if mi == 0:
                    unmatched[ev.name] = unmatched.get(ev.name, 0) + 1
        call_times.append(max(m.cpu_time_total * 1e-6 - marker_s, s + u))
        op_sums.append(s)
        if cuda:
            device_sums.append(sum(_device_time_s(ev) for ev in tops))
        unmatched_sums.append(u)
    if not markers:
        from flopgap.errors import FlopgapError

        raise FlopgapError("torch.profiler recorded no calls; cannot attribute time")
    times = [statistics.median(v) if v else None for v in per_record]
    dev_times = [statistics.median(v) if v else None for v in per_record_dev] if cuda else None
    return Attribution(times, launches, len(markers), statistics.median(call_times), statistics.median(op_sums),
                       unmatched, statistics.median(unmatched_sums), device, marker_s, faults_per_call,
                       device_times=dev_times, device_s=statistics.median(device_sums) if device_sums else None,
                       threads=torch.get_num_threads())
