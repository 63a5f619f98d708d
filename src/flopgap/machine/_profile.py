"""This machine's own ceilings, measured (never read off a spec sheet), and cached.

Every figure is kept with its spread over timed blocks (median, quartiles, min, max).
Ceilings (peak FLOP/s, bandwidths) use the best block, as STREAM does: a ceiling is what
the machine reaches undisturbed. Costs (dispatch, module call, launch) use the median.

- ``peak_flops[dtype]``: FLOP/s of the fastest dense kernel of the build for that dtype:
  a square ``torch.mm`` (int8: ``torch._int_mm`` where supported), a 1x1 convolution
  (oneDNN GEMM, 512x512 weights x 1024 pixels) or a 3x3 convolution (128 channels,
  28x28), FLOPs as counted (direct convolution, FMA = 2); each is kept in ``spreads``
  (``peak_flops.fp32.mm``, ``.conv1x1``, ``.conv3x3``);
- ``mem_bandwidth``: STREAM triad ``a = b + s*c`` on arrays 4x the last-level cache
  (bytes = 3 arrays x size); copy and add are kept in ``stream``;
- ``cache_bandwidth``: the same triad on arrays that fit the per-core L2
  (``cache_bytes`` is the working set of that test); on CUDA on arrays filling half
  the GPU's L2, 20 triads replayed in one CUDA graph (one launch each would time
  the launches);
- ``dispatch_overhead_s``: one tiny eager op (``torch.add`` of two 1-element tensors)
  under ``torch.inference_mode()``;
- ``launch_latency_s`` (CUDA only): seconds per queued tiny kernel (CPU launch cost);
- ``op_overhead_s`` (CUDA only): seconds per call of one tiny op of each family (linear,
  3x3 conv, batch norm, relu, pool, mean, softmax, attention, embedding): the host's
  dispatch-and-launch cost, each family's floor in the CUDA prediction;
- ``module_overhead_s``: one ``nn.Module.__call__`` that dispatches nothing;
- ``calibration``: single-op timings over a grid of shapes, convs and linears with hot
  and with cold weights (``_calibrate``), what
  :func:`flopgap.explain.predict` fits its per-op-family model on;
- ``chains``: 18 small synthetic networks (inverted-residual, basic, bottleneck,
  depthwise-separable, conv-bn-relu, SE and MLP stacks, three varied stacks whose
  blocks all differ, and two deep stacks of distinct blocks;
  none of them a model flopgap is evaluated on), counted and timed, from which the
  predictor fits how ops cost in sequence and inside modules;
- ``llc_bytes`` / ``l2_bytes``: cache sizes from sysfs;
- ``page_fault_s`` (CPU, POSIX): seconds per 4 KiB page of first touch of freshly
  mapped memory (a minor page fault), from filling a new 64 MiB tensor against a reused one.

Cached as JSON per machine fingerprint (CPU model, cores, threads, torch version,
device) in ``$FLOPGAP_CACHE_DIR`` or ``~/.cache/flopgap/``; nothing is read from the
working directory. A quick profile (fewer, shorter benchmarks) is cached apart and
is never used in place of a full one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from flopgap.errors import FlopgapError, UsageError, one_line
from flopgap.machine._bench import Figure, figure_from_times, figure_of_seconds, time_call
from flopgap._cache import cache_dir
from flopgap.timing import check_device, cpu_model, others_runnable

__all__ = ["MachineProfile", "profile_machine", "fingerprint", "cache_dir", "MACHINE_SCHEMA"]

MACHINE_SCHEMA = "flopgap.machine/2"  # 2: cold-weight cases, per_channel flags, pinned allocator
_L3_FALLBACK_BYTES = 32 * 2**20
_L2_WORKING_SET_BYTES = 3 * 64 * 2**10   # 3 arrays x 64 KiB: resident in a 512 KiB+ L2


def _device(device) -> torch.device:
    return torch.device(check_device(None if device is None else str(device)))


def fingerprint(device=None) -> dict:
    """What identifies this machine's profile: CPU model, cores, threads, torch, device."""
    dev = _device(device)
    fp = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
          "torch": torch.__version__, "device": str(dev)}
    if dev.type == "cuda":
        fp["gpu"] = torch.cuda.get_device_name(dev)
    return fp


def _fp_hash(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def _number(v, *, low: float = 0.0, strict: bool = False) -> bool:
    """A finite real number (not a bool) at least ``low`` (above it when ``strict``)."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and (v > low if strict else v >= low))


def _count(v, *, positive: bool = False) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and (v > 0 if positive else v >= 0)


def _str_keyed(v, value_ok) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and value_ok(x) for k, x in v.items())


def _figure_ok(f) -> bool:
    return (isinstance(f, dict) and all(_number(f.get(k), low=-math.inf) for k in ("value", "p25", "p75", "min", "max"))
            and isinstance(f.get("unit"), str) and _count(f.get("samples")))


def _calibration_ok(c) -> bool:
    return (isinstance(c, dict) and isinstance(c.get("key"), str) and isinstance(c.get("features"), list)
            and all(_number(x, low=-math.inf) for x in c["features"]) and _number(c.get("flops"))
            and _number(c.get("bytes")) and _number(c.get("seconds"), strict=True)
            and isinstance(c.get("cold", False), bool) and isinstance(c.get("per_channel", True), bool))


def _is(kind):
    return lambda v: isinstance(v, kind)


# an OpRecord (flopgap.count) as a chain stores it: required fields, then the counts
_OP_FIELDS = {"index": _count, "op": _is(str), "module": _is(str), "family": _is(str), "kind": _is(str),
              "input_shapes": _is(list), "input_dtypes": _is(list), "output_shapes": _is(list),
              "flops": _count, "macs": _count, "bytes_read": _count, "bytes_written": _count,
              "groups": lambda v: v is None or isinstance(v, dict), "phase": lambda v: v in ("forward", "backward")}
_OP_REQUIRED = set(list(_OP_FIELDS)[:8])


def _op_ok(r) -> bool:
    return (isinstance(r, dict) and _OP_REQUIRED <= set(r) <= set(_OP_FIELDS)
            and all(_OP_FIELDS[k](v) for k, v in r.items()))


def _chain_ok(c) -> bool:
    return (isinstance(c, dict) and isinstance(c.get("label"), str) and isinstance(c.get("ops"), list)
            and all(_op_ok(r) for r in c["ops"]) and _count(c.get("module_calls"))
            and _number(c.get("seconds"), strict=True)
            and all(_number(x, strict=True) for x in (c.get("round_seconds") or [])))


# field: (check, what it must be); optional fields may also be missing
_FIELDS = {
    "fingerprint": (lambda v: _str_keyed(v, lambda x: True), "an object"),
    "peak_flops": (lambda v: bool(v) and _str_keyed(v, lambda x: _number(x, strict=True)),
                   "an object of positive FLOP/s per dtype"),
    "mem_bandwidth": (lambda v: _number(v, strict=True), "a positive number of bytes/s"),
    "cache_bandwidth": (lambda v: _number(v, strict=True), "a positive number of bytes/s"),
    "cache_bytes": (lambda v: _count(v, positive=True), "a positive integer"),
    "dispatch_overhead_s": (lambda v: _number(v, strict=True), "a positive number of seconds"),
}
_OPTIONAL = {
    "module_overhead_s": (_number, "a number of seconds >= 0"),
    "launch_latency_s": (lambda v: v is None or _number(v), "null or a number of seconds >= 0"),
    "spreads": (lambda v: _str_keyed(v, _figure_ok), "an object of figures"),
    "stream": (lambda v: _str_keyed(v, _number), "an object of bandwidths >= 0"),
    "calibration": (lambda v: isinstance(v, list) and all(_calibration_ok(c) for c in v), "a list of timed cases"),
    "chains": (lambda v: isinstance(v, list) and all(_chain_ok(c) for c in v), "a list of timed chains"),
    "llc_bytes": (lambda v: _count(v, positive=True), "a positive integer"),
    "l2_bytes": (lambda v: _count(v, positive=True), "a positive integer"),
    "page_fault_s": (lambda v: v is None or _number(v), "null or a number of seconds >= 0"),
    "quick": (lambda v: isinstance(v, bool), "true or false"),
    "measured_at": (lambda v: isinstance(v, str), "a string"),
    "seconds": (_number, "a number of seconds >= 0"),
    "source": (lambda v: isinstance(v, str), "a string"),
    "competing": (lambda v: v is None or (isinstance(v, list) and all(x is None or _count(x) for x in v)),
                  "null or a list of thread counts"),
    "allocator": (lambda v: v is None or _str_keyed(v, lambda x: isinstance(x, str)), "null or an object"),
    "op_overhead_s": (lambda v: v is None or _str_keyed(v, _number), "an object of seconds >= 0 per op family"),
}


def check_profile_dict(d) -> None:
    """Raise :class:`~flopgap.errors.FlopgapError` naming the first field of a profile's
    JSON form whose type or value a measured profile cannot have (a bandwidth of 0, a
    negative cost, a string where a number belongs, a malformed calibration case)."""
    if not isinstance(d, dict):
        raise FlopgapError(f"a machine profile is a JSON object, got {type(d).__name__}")
    if d.get("schema") != MACHINE_SCHEMA:
        raise FlopgapError(f"machine profile schema {d.get('schema')!r} is not {MACHINE_SCHEMA!r}")
    for name, (ok, what) in _FIELDS.items():
        if name not in d:
            raise FlopgapError(f"machine profile field {name!r} is missing")
        if not ok(d[name]):
            raise FlopgapError(f"machine profile field {name!r} is not {what}")
    for name, (ok, what) in _OPTIONAL.items():
        if name in d and not ok(d[name]):
            raise FlopgapError(f"machine profile field {name!r} is not {what}")


@dataclass
class MachineProfile:
    """Measured ceilings of one machine (see module docstring for each figure)."""

    fingerprint: dict
    peak_flops: dict[str, float]
    mem_bandwidth: float
    cache_bandwidth: float
    cache_bytes: int
    dispatch_overhead_s: float
    module_overhead_s: float = 0.0
    launch_latency_s: float | None = None
    spreads: dict[str, dict] = field(default_factory=dict)
    stream: dict[str, float] = field(default_factory=dict)
    calibration: list[dict] = field(default_factory=list)
    chains: list[dict] = field(default_factory=list)
    llc_bytes: int = _L3_FALLBACK_BYTES
    l2_bytes: int = 2**20
    page_fault_s: float | None = None
    quick: bool = False
    measured_at: str = ""
    seconds: float = 0.0
    source: str = "measured"   # measured | cache | synthetic
    competing: list | None = None  # other processes' runnable threads, sampled while measuring
    allocator: dict | None = None  # glibc malloc variables set while measuring (see _isolated)
    op_overhead_s: dict = field(default_factory=dict)  # CUDA: host seconds per tiny op, by op family
    notes: list[str] = field(default_factory=list)     # how this process got the profile (not saved)

    @property
    def warnings(self) -> list[str]:
        """Why this profile may not describe the machine, then how it was obtained."""
        busy = self.busy_warning()
        return ([busy] if busy else []) + list(self.notes)

    def busy_warning(self) -> str | None:
        """Why this profile may not describe the machine, if other processes competed for
        the cores while it was measured (timings then run up to ~100x slow)."""
        threads = (self.fingerprint or {}).get("threads") or 1
        cores = (self.fingerprint or {}).get("cores") or os.cpu_count() or 1
        samples = [x for x in (self.competing or []) if x is not None]
        if not samples:
            return None
        others = max(samples)
        if others + threads > cores:
            return (f"the machine profile was measured while {others} thread(s) of other processes were "
                    f"runnable ({cores} logical cores, {threads} threads here): its ceilings and calibration, "
                    "and so predictions, may be off; re-measure on a quiet machine with --refresh-machine")
        return None

    def peak(self, dtype: str = "float32") -> float:
        """Peak FLOP/s for a tensor dtype name (``float32``, ``bfloat16``, ``qint8`` ...)."""
        key = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "int8": "int8",
               "qint8": "int8", "quint8": "int8"}.get(dtype, dtype)
        return self.peak_flops.get(key) or self.peak_flops.get("fp32") or max(self.peak_flops.values())

    def bandwidth_for(self, nbytes: float) -> float:
        """Cache bandwidth when the op's bytes fit the cache-resident test, else main memory."""
        return self.cache_bandwidth if nbytes <= self.cache_bytes else self.mem_bandwidth

    def to_dict(self) -> dict:
        return {"schema": MACHINE_SCHEMA, "fingerprint": self.fingerprint, "peak_flops": self.peak_flops,
                "mem_bandwidth": self.mem_bandwidth, "cache_bandwidth": self.cache_bandwidth,
                "cache_bytes": self.cache_bytes, "dispatch_overhead_s": self.dispatch_overhead_s,
                "module_overhead_s": self.module_overhead_s, "launch_latency_s": self.launch_latency_s,
                "llc_bytes": self.llc_bytes, "l2_bytes": self.l2_bytes, "page_fault_s": self.page_fault_s,
                "spreads": self.spreads, "stream": self.stream, "quick": self.quick,
                "measured_at": self.measured_at, "seconds": self.seconds, "source": self.source,
                "competing": self.competing, "allocator": self.allocator, "op_overhead_s": self.op_overhead_s,
                "calibration": self.calibration, "chains": self.chains}

    @classmethod
    def from_dict(cls, d: dict) -> "MachineProfile":
        """A profile from its JSON form; every field's type and value is checked
        (:func:`check_profile_dict`), so a damaged or edited cache file is refused here
        (and re-measured by :func:`profile_machine`), never used."""
        check_profile_dict(d)
        return cls(d["fingerprint"], d["peak_flops"], d["mem_bandwidth"], d["cache_bandwidth"], d["cache_bytes"],
                   d["dispatch_overhead_s"], d.get("module_overhead_s", 0.0), d.get("launch_latency_s"),
                   d.get("spreads", {}), d.get("stream", {}), d.get("calibration", []), d.get("chains", []),
                   d.get("llc_bytes", _L3_FALLBACK_BYTES), d.get("l2_bytes", 2**20), d.get("page_fault_s"),
                   d.get("quick", False),
                   d.get("measured_at", ""), d.get("seconds", 0.0), d.get("source", "measured"),
                   d.get("competing"), d.get("allocator"), d.get("op_overhead_s") or {})

    @classmethod
    def synthetic(cls, *, peak: float = 1e11, mem_bandwidth: float = 1e10, cache_bandwidth: float = 5e10,
                  cache_bytes: int = 100_000, dispatch_overhead_s: float = 5e-6, module_overhead_s: float = 1e-6,
                  calibration: list[dict] | None = None, chains: list[dict] | None = None,
                  peak_flops: dict | None = None, device=None,
                  quick: bool = True) -> "MachineProfile":
        """A profile with given ceilings and no spread (tests, what-if arithmetic)."""
        return cls(fingerprint(device), dict(peak_flops or {"fp32": peak}), mem_bandwidth, cache_bandwidth,
                   cache_bytes, dispatch_overhead_s, module_overhead_s, None, {}, {}, list(calibration or []),
                   list(chains or []), quick=quick, source="synthetic")  # page_fault_s unknown: None

    def save(self, path: Path | None = None) -> Path:
        """Write the profile as JSON (default: the cache file for its fingerprint), through
        a uniquely named temporary file and one atomic rename, so that processes writing
        the same profile at once all succeed and a reader never sees half a file."""
        from flopgap._files import write_atomic

        path = Path(path) if path is not None else cache_path(self.fingerprint, self.quick)
        return write_atomic(path, json.dumps(self.to_dict(), indent=1), what=f"machine profile {str(path)!r}")

    def figures(self) -> dict[str, Figure]:
        return {k: Figure.from_dict(v) for k, v in self.spreads.items()}


# ------------------------------------------------------------------ micro-benchmarks
def _llc_bytes() -> int:
    try:
        sizes = []
        for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            s = (idx / "size").read_text().strip()
            mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(s[-1], 1)
            sizes.append(int(s[:-1] if s[-1] in "KMG" else s) * mult)
        return max(sizes) if sizes else _L3_FALLBACK_BYTES
    except (OSError, ValueError):
        return _L3_FALLBACK_BYTES


def _l2_bytes() -> int:
    try:
        for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            if (idx / "level").read_text().strip() == "2":
                s = (idx / "size").read_text().strip()
                mult = {"K": 2**10, "M": 2**20}.get(s[-1], 1)
                return int(s[:-1] if s[-1] in "KM" else s) * mult
    except (OSError, ValueError):
        pass
    return 2**20


def _sync_for(dev: torch.device):
    return torch.cuda.synchronize if dev.type == "cuda" else None


def _matmul_peak(dtype: str, dev: torch.device, n: int, min_run: float, kernel: str = "mm") -> Figure | None:
    sync = _sync_for(dev)
    if kernel in ("conv1x1", "conv3x3"):
        # convolutions run by oneDNN, which on some CPUs is several times faster than the
        # BLAS behind torch.mm: a 1x1 conv is a GEMM (n x n weights times n x 1024 pixels);
        # a 3x3 conv (n/4 channels, 28x28) is the densest op of most CNNs
        td = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
        if td is None:
            return None
        if kernel == "conv1x1":
            x = torch.randn(1, n, 32, 32, device=dev).to(td)
            w = torch.randn(n, n, 1, 1, device=dev).to(td)
            fn = lambda: torch.nn.functional.conv2d(x, w)  # noqa: E731
            work = 2.0 * n * n * 1024
        else:
            c = n // 4
            x = torch.randn(1, c, 28, 28, device=dev).to(td)
            w = torch.randn(c, c, 3, 3, device=dev).to(td)
            fn = lambda: torch.nn.functional.conv2d(x, w, padding=1)  # noqa: E731
            work = 2.0 * c * c * 9 * 28 * 28
    elif dtype == "int8":
        a = torch.randint(-100, 100, (n, n), dtype=torch.int8, device=dev)
        b = torch.randint(-100, 100, (n, n), dtype=torch.int8, device=dev)
        fn = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        td = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        a = torch.randn(n, n, device=dev).to(td)
        b = torch.randn(n, n, device=dev).to(td)
        fn = lambda: torch.mm(a, b)  # noqa: E731
    if kernel == "mm":
        work = 2.0 * n**3
    try:
        fn()
    except (RuntimeError, NotImplementedError):
        return None  # not supported by this build/device: reported as absent, not as zero
    return figure_from_times(time_call(fn, min_run_time=min_run, sync=sync), work, "FLOP/s")


def _stream(n_el: int, dev: torch.device, min_run: float) -> dict[str, Figure]:
    sync = _sync_for(dev)
    a = torch.zeros(n_el, device=dev)
    b = torch.randn(n_el, device=dev)
    c = torch.randn(n_el, device=dev)
    nb = 4 * n_el
    return {
        "copy": figure_from_times(time_call(lambda: a.copy_(b), min_run_time=min_run, sync=sync), 2 * nb, "B/s"),
        "add": figure_from_times(time_call(lambda: torch.add(b, c, out=a), min_run_time=min_run, sync=sync),
                                 3 * nb, "B/s"),
        "triad": figure_from_times(time_call(lambda: torch.add(b, c, alpha=3.0, out=a), min_run_time=min_run,
                                             sync=sync), 3 * nb, "B/s"),
    }


def _cuda_l2_triad(dev: torch.device, min_run: float, reps: int = 20) -> tuple[Figure, int]:
    """GPU L2-resident bandwidth: a triad over three arrays filling half the L2, run
    ``reps`` times inside one CUDA graph so that the launch latency (several us, longer
    than one such kernel) is not what is timed. Falls back to plain launches where
    graph capture fails. Returns the figure and the working set in bytes."""
    l2 = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0) or 2**22)
    n_el = max(l2 // 2 // 3 // 4, 2**14)
    a = torch.zeros(n_el, device=dev)
    b = torch.randn(n_el, device=dev)
    c = torch.randn(n_el, device=dev)

    def body():
        for _ in range(reps):
            torch.add(b, c, alpha=3.0, out=a)

    fn = body
    try:
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            body()  # warm-up on a side stream, as graph capture requires
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body()
        fn = graph.replay
    except RuntimeError:  # capture not supported here: launches are then part of the time
        pass
    times = time_call(fn, min_run_time=min_run, sync=torch.cuda.synchronize)
    return figure_from_times(times, reps * 3 * 4 * n_el, "B/s"), 3 * 4 * n_el


def _op_overheads(dev: torch.device, min_run: float) -> dict[str, Figure]:
    """Seconds per call of one tiny op of each family (a few KB, far below any ceiling):
    on a GPU what the host spends dispatching and launching it, which is what an op costs
    when the GPU waits on the host (batch 1, small layers). The CUDA profile has no
    calibration grid; the predictor uses these as each family's floor there."""
    F = torch.nn.functional
    x = torch.randn(1, 16, 8, 8, device=dev)
    v = torch.randn(1, 64, device=dev)
    w = torch.randn(64, 64, device=dev)
    b = torch.randn(64, device=dev)
    cw = torch.randn(16, 16, 3, 3, device=dev)
    c16 = torch.ones(16, device=dev)
    q = torch.randn(1, 2, 16, 32, device=dev)
    table = torch.randn(100, 64, device=dev)
    idx = torch.arange(8, device=dev)
    cases = {
        "matmul": lambda: F.linear(v, w, b),
        "conv": lambda: F.conv2d(x, cw, padding=1),
        "norm": lambda: F.batch_norm(x, c16, c16, c16, c16, False),
        "pointwise": lambda: torch.relu(x),
        "pool": lambda: F.max_pool2d(x, 2),
        "reduction": lambda: x.mean((2, 3)),
        "softmax": lambda: torch.softmax(v, -1),
        "attention": lambda: F.scaled_dot_product_attention(q, q, q),
        "embedding": lambda: F.embedding(idx, table),
    }
    return {fam: figure_of_seconds(time_call(fn, min_run_time=min_run)) for fam, fn in cases.items()}


def _tiny_op(dev: torch.device, min_run: float) -> Figure:
    x = torch.ones(1, device=dev)
    y = torch.ones(1, device=dev)
    return figure_of_seconds(time_call(lambda: torch.add(x, y), min_run_time=min_run))


def _module_call(min_run: float) -> Figure:
    n = 32
    seq = torch.nn.Sequential(*[torch.nn.Identity() for _ in range(n)])
    x = torch.ones(1)
    # the Sequential's own call is one of the n + 1 calls
    return figure_of_seconds(time_call(lambda: seq(x), min_run_time=min_run) / (n + 1))


def _page_fault(min_run: float) -> Figure | None:
    """Seconds per 4 KiB page of first touch of freshly mapped memory (a minor page
    fault): filling a new 64 MiB tensor (allocated with mmap) each call, minus filling a
    reused one, over the pages. None where ``resource`` is unavailable."""
    try:
        import resource  # noqa: F401  (POSIX only)
    except ImportError:
        return None
    n = 16 * 2**20  # floats: 64 MiB, always above glibc's mmap threshold
    reused = torch.empty(n)
    fresh = time_call(lambda: torch.empty(n).fill_(1.0), min_run_time=min_run)
    warm = time_call(lambda: reused.fill_(1.0), min_run_time=min_run)
    pages = 4 * n / 4096
    return figure_of_seconds(np.maximum(fresh - float(np.median(warm)), 0.0) / pages)


def _launch_latency(dev: torch.device, min_run: float) -> Figure:
    """Seconds per launch of a tiny kernel, many queued then one sync (CUDA only)."""
    x = torch.ones(1, device=dev)
    n = 200

    def burst():
        for _ in range(n):
            x.add_(1.0)

    times = time_call(burst, min_run_time=min_run, sync=torch.cuda.synchronize)
    return figure_of_seconds(times / n)


def measure_profile(device=None, *, quick: bool = False,
                    progress: Callable[[int, int, str], None] | None = None) -> MachineProfile:
    """Run every micro-benchmark now (no cache). ``quick`` uses smaller arrays, shorter
    runs and a quarter of the calibration grid (seconds instead of a minute)."""
    from flopgap.machine._calibrate import ChainTimer, run_calibration, run_chains

    dev = _device(device)
    t0 = time.perf_counter()
    competing = [_others_running()]
    min_run = 0.05 if quick else 0.2
    fp = fingerprint(dev)
    spreads: dict[str, dict] = {}
    peaks: dict[str, float] = {}
    n = 512 if quick else 1024
    if dev.type == "cuda":
        n *= 4
    for dt in ("fp32", "bf16", "int8") + (("fp16",) if dev.type == "cuda" else ()):
        best = None
        for kernel in ("mm", "conv1x1", "conv3x3"):
            f = _matmul_peak(dt, dev, n if kernel == "mm" else 512, min_run, kernel)
            if f is not None:
                spreads[f"peak_flops.{dt}.{kernel}"] = f.to_dict()
                if best is None or f.max > best.max:
                    best = f
        if best is not None:  # the fastest GEMM kernel this build has for the dtype
            peaks[dt] = best.max
            spreads[f"peak_flops.{dt}"] = best.to_dict()
    llc = _llc_bytes()
    big = max(4 * llc // 4, 2**22) if not quick else max(2 * llc // 4, 2**21)  # elements (fp32)
    main = _stream(big if dev.type == "cpu" else 2**26, dev, min_run)
    for k, f in main.items():
        spreads[f"stream.{k}"] = f.to_dict()
    if dev.type == "cuda":
        cache_fig, cache_set = _cuda_l2_triad(dev, min_run)
    else:
        cache_fig, cache_set = _stream(_L2_WORKING_SET_BYTES // 3 // 4, dev, min_run)["triad"], _L2_WORKING_SET_BYTES
    spreads["cache_bandwidth"] = cache_fig.to_dict()
    tiny = _tiny_op(dev, min_run)
    spreads["dispatch_overhead_s"] = tiny.to_dict()
    mod = _module_call(min_run)
    spreads["module_overhead_s"] = mod.to_dict()
    fault = _page_fault(min_run) if dev.type == "cpu" else None
    if fault is not None:
        spreads["page_fault_s"] = fault.to_dict()
    launch = None
    op_overhead: dict[str, float] = {}
    if dev.type == "cuda":
        lf = _launch_latency(dev, min_run)
        spreads["launch_latency_s"] = lf.to_dict()
        launch = lf.value
        for fam, f in _op_overheads(dev, min_run).items():
            spreads[f"op_overhead_s.{fam}"] = f.to_dict()
            op_overhead[fam] = f.value
    competing.append(_others_running())
    if dev.type == "cpu":
        # the chains' rounds spread over the grid: one before it and one after each pass
        timer = ChainTimer(quick, progress)
        timer.time_round()

        def after_pass(_p: int) -> None:
            timer.time_round()
            competing.append(_others_running())

        calibration = run_calibration(quick=quick, progress=progress, after_pass=after_pass)
        chains = timer.results()
    else:
        calibration = []
        chains = run_chains(quick=quick, progress=progress, device=dev)
    competing.append(_others_running())
    return MachineProfile(
        fingerprint=fp, peak_flops=peaks, mem_bandwidth=main["triad"].max,
        cache_bandwidth=cache_fig.max, cache_bytes=cache_set,
        dispatch_overhead_s=tiny.value, module_overhead_s=mod.value, launch_latency_s=launch,
        chains=chains, llc_bytes=llc, l2_bytes=_l2_bytes(), page_fault_s=fault.value if fault is not None else None,
        spreads=spreads, stream={k: f.value for k, f in main.items()}, calibration=calibration, quick=quick,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), seconds=time.perf_counter() - t0,
        competing=competing, allocator=_allocator(), op_overhead_s=op_overhead,
    )


def _allocator() -> dict:
    """glibc's malloc tuning this profile was measured under (the variables that were set)."""
    from flopgap.machine._isolated import PINNED_ALLOCATOR

    return {k: os.environ[k] for k in PINNED_ALLOCATOR if k in os.environ}


def _others_running(samples: int = 5) -> int | None:
    """Runnable threads of other processes (:func:`flopgap.timing._sentinel.others_runnable`),
    the smallest of a few samples 10 ms apart, so that a passing blip does not count;
    ``None`` where ``/proc`` is not there."""
    counts = []
    for _ in range(samples):
        n = others_runnable()
        if n is None:
            return None
        counts.append(n)
        time.sleep(0.01)
    return min(counts)


def _measure(device, quick: bool, progress) -> MachineProfile:
    """A CPU profile is measured in a child process with glibc's allocator pinned (see
    ``flopgap.machine._isolated``), unless this process already runs so; a CUDA
    profile (no calibration grid) in this process."""
    from flopgap.machine._isolated import allocator_pinned, measure_in_child

    if _device(device).type == "cpu" and not allocator_pinned():
        return measure_in_child(quick=quick, threads=torch.get_num_threads(), progress=progress)
    return measure_profile(device, quick=quick, progress=progress)


def cache_path(fp: dict, quick: bool) -> Path:
    return cache_dir() / f"machine-{_fp_hash(fp)}{'-quick' if quick else ''}.json"


def _check_cache_path(path: Path) -> None:
    """A one-line :class:`~flopgap.errors.UsageError` when the profile could not be
    cached at ``path`` (a folder in its place, a file where the cache folder belongs,
    no permission to write there)."""
    hint = "remove it, or set FLOPGAP_CACHE_DIR to a writable folder"
    if path.exists() and not path.is_file():
        raise UsageError(f"the machine-profile cache {str(path)!r} is not a file: {hint}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"the machine-profile cache folder {str(folder)!r} is not a folder: {hint}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the machine-profile cache in {str(folder)!r}: set FLOPGAP_CACHE_DIR "
                         "to a writable folder")


def _read_cache(path: Path) -> tuple[MachineProfile | None, str]:
    """(profile, "") or (None, why it cannot be used)."""
    try:
        return MachineProfile.from_dict(json.loads(path.read_text())), ""
    except FlopgapError as e:  # not a dict, or another schema version
        return None, str(e)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        return None, one_line(e)


def profile_machine(refresh: bool = False, device=None, *, quick: bool = False,
                    progress: Callable[[int, int, str], None] | None = None) -> MachineProfile:
    """This machine's profile: from the cache for this fingerprint, else measured now
    and cached (``refresh=True`` always re-measures). A quick profile is cached apart.

    A cache file that cannot be used (unreadable, not JSON, not a profile, another
    schema version or fingerprint) is stale: it is re-measured and replaced, and the
    profile's ``warnings`` say why (with any sign that the machine was busy while it
    was measured); nothing is printed.
    """
    fp = fingerprint(device)
    path = cache_path(fp, quick)
    _check_cache_path(path)  # before a minute of measuring, not after it
    note = None
    if not refresh and path.exists():
        prof, why = _read_cache(path)
        if prof is not None and prof.fingerprint == fp:
            prof.source = "cache"
            return prof
        if prof is not None:
            why = "it is for another machine fingerprint"
        note = f"re-measured the machine profile: cached {path} was stale ({why})"
    prof = _measure(device, quick, progress)
    prof.save(path)
    if note:
        prof.notes.append(note)
    return prof
