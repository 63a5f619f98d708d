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
- ``calibration``: single-op timings over a grid of shapes (:mod:`flopgap.machine._grid`),
  convs and linears with hot and with cold weights, each with its spread
  (:class:`~flopgap.machine._measure.Sample`), what :func:`flopgap.explain.predict` fits
  its per-op-family model on;
- ``chains``: 24 small synthetic networks (inverted-residual, basic, bottleneck,
  depthwise-separable, conv-bn-relu, SE, MLP and transformer stacks, three varied stacks whose
  blocks all differ, two deep stacks of distinct blocks, and four whole networks with
  stem, head and classifier: two mobile nets, a ViT, an LLM-style decoder;
  none of them a model flopgap is evaluated on), counted and timed, from which the
  predictor fits how ops cost in sequence and inside modules;
- ``llc_bytes`` / ``l2_bytes``: cache sizes from sysfs;
- ``page_fault_s`` (CPU, POSIX): seconds per 4 KiB page of first touch of freshly
  mapped memory (a minor page fault), from filling a new 64 MiB tensor against a reused one.

Cached as JSON per machine fingerprint (CPU model, cores, threads, torch version,
device) in ``$FLOPGAP_CACHE_DIR`` or ``~/.cache/flopgap/``; nothing is read from the
working directory. A quick profile (fewer, shorter benchmarks) is cached apart and
is never used in place of a full one.

**Lazy and incremental.** ``profile_machine(needs=...)`` measures only what a
prediction reads and the cache lacks: the ceilings and chains once, then the grid cases
near the model's ops (:func:`flopgap.machine._grid.cases_for`); each run adds its cases
to the cached file. ``profile_machine()`` without ``needs`` completes the whole grid (a
full profile). What was measured on a disturbed machine (the sentinel's verdict, see
:mod:`flopgap.machine._measure`) is used for the run that measured it, said in
``warnings``, and never written to the cache, so the next run measures it again.
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

import torch

from flopgap._cache import cache_dir
from flopgap.errors import FlopgapError, UsageError, one_line
from flopgap.machine._bench import Figure
from flopgap.machine._ceilings import L3_FALLBACK_BYTES, llc_bytes
from flopgap.machine import _grid
from flopgap.machine._grid import Needs, cases_for, chain_needs, grid_index
from flopgap.machine._measure import Measured, Request, Sample
from flopgap.timing import check_device, cpu_model

__all__ = ["MachineProfile", "profile_machine", "fingerprint", "cache_dir", "cache_path", "MACHINE_SCHEMA", "needs_for",
           "check_profile_dict"]

MACHINE_SCHEMA = "flopgap.machine/3"  # 3: lazily measured sections, typed keys, samples with spread
_CEILING_FIELDS = ("peak_flops", "mem_bandwidth", "cache_bandwidth", "cache_bytes", "dispatch_overhead_s",
                   "module_overhead_s", "launch_latency_s", "llc_bytes", "l2_bytes", "page_fault_s", "spreads",
                   "stream", "op_overhead_s")


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
            and _number(c.get("seconds_median", c["seconds"]), strict=True) and _number(c.get("spread", 0.0))
            and _count(c.get("attempts", 1), positive=True) and isinstance(c.get("case", ""), str)
            and isinstance(c.get("disturbed", ""), str)
            and isinstance(c.get("cold", False), bool) and isinstance(c.get("per_channel", True), bool))


def _is(kind):
    return lambda v: isinstance(v, kind)


# an OpRecord (flopgap.count) as a chain stores it: required fields, then the counts
_OP_FIELDS = {"index": _count, "op": _is(str), "module": _is(str), "family": _is(str), "kind": _is(str),
              "input_shapes": _is(list), "input_dtypes": _is(list), "output_shapes": _is(list),
              "flops": _count, "macs": _count, "bytes_read": _count, "bytes_written": _count,
              "groups": lambda v: v is None or isinstance(v, dict), "phase": lambda v: v in ("forward", "backward"),
              "inner_run": _count}
_OP_REQUIRED = set(list(_OP_FIELDS)[:8])


def _op_ok(r) -> bool:
    return (isinstance(r, dict) and _OP_REQUIRED <= set(r) <= set(_OP_FIELDS)
            and all(_OP_FIELDS[k](v) for k, v in r.items()))


def _chain_ok(c) -> bool:
    return (isinstance(c, dict) and isinstance(c.get("label"), str) and isinstance(c.get("ops"), list)
            and all(_op_ok(r) for r in c["ops"]) and _count(c.get("module_calls"))
            and _number(c.get("seconds"), strict=True)
            and (c.get("python_opcodes") is None or _count(c["python_opcodes"]))
            and all(_number(x, strict=True) for x in (c.get("round_seconds") or [])))


# field: (check, what it must be): the ceilings, required when the profile has them
# (``sections["ceilings"]``); optional fields may also be missing
_FIELDS = {
    "peak_flops": (lambda v: bool(v) and _str_keyed(v, lambda x: _number(x, strict=True)),
                   "an object of positive FLOP/s per dtype"),
    "mem_bandwidth": (lambda v: _number(v, strict=True), "a positive number of bytes/s"),
    "cache_bandwidth": (lambda v: _number(v, strict=True), "a positive number of bytes/s"),
    "cache_bytes": (lambda v: _count(v, positive=True), "a positive integer"),
    "dispatch_overhead_s": (lambda v: _number(v, strict=True), "a positive number of seconds"),
}
_OPTIONAL = {
    "sections": (lambda v: _str_keyed(v, lambda x: isinstance(x, dict)), "an object of measured sections"),
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
    if not _str_keyed(d.get("fingerprint"), lambda x: True):
        raise FlopgapError("machine profile field 'fingerprint' is not an object")
    for name, (ok, what) in _OPTIONAL.items():
        if name in d and not ok(d[name]):
            raise FlopgapError(f"machine profile field {name!r} is not {what}")
    if "ceilings" not in (d.get("sections") or {}):
        return
    for name, (ok, what) in _FIELDS.items():
        if name not in d:
            raise FlopgapError(f"machine profile field {name!r} is missing")
        if not ok(d[name]):
            raise FlopgapError(f"machine profile field {name!r} is not {what}")


@dataclass
class MachineProfile:
    """Measured ceilings of one machine (see module docstring for each figure).

    ``sections`` says what was measured, when and how (``ceilings``, ``chains``: each
    with ``measured_at``, ``seconds`` and the sentinel's verdict); ``calibration`` holds
    the measured grid cases in grid order, however many of them a lazy profile has."""

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
    calibration: list[Sample] = field(default_factory=list)
    chains: list[dict] = field(default_factory=list)
    llc_bytes: int = L3_FALLBACK_BYTES
    l2_bytes: int = 2**20
    page_fault_s: float | None = None
    quick: bool = False
    measured_at: str = ""
    seconds: float = 0.0
    source: str = "measured"   # measured | cache | cache+measured | synthetic
    allocator: dict | None = None  # glibc malloc variables set while measuring (see _isolated)
    op_overhead_s: dict = field(default_factory=dict)  # CUDA: host seconds per tiny op, by op family
    sections: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)     # how this process got the profile (not saved)
    measured_now: int = 0                              # cases measured by this process (not saved)

    def __post_init__(self) -> None:
        self.calibration = [s if isinstance(s, Sample) else Sample.from_dict(s) for s in self.calibration]

    # ------------------------------------------------------------ what it holds
    @property
    def has_ceilings(self) -> bool:
        return "ceilings" in self.sections

    @property
    def has_chains(self) -> bool:
        return "chains" in self.sections

    @property
    def python_opcode_s(self) -> float | None:
        """Seconds per Python bytecode instruction of module code, measured with the chains
        in their process (``sections["chains"]["python_opcode_s"]``); None when absent."""
        v = self.sections.get("chains", {}).get("python_opcode_s")
        return float(v) if _number(v, strict=True) else None

    @property
    def is_synthetic(self) -> bool:
        """Built by :meth:`synthetic` (tests, what-if): it stands as it is, nothing is measured into it."""
        return any(v.get("synthetic") for v in self.sections.values())

    @property
    def case_ids(self) -> frozenset[str]:
        return frozenset(s.case for s in self.calibration)

    @property
    def complete(self) -> bool:
        """Ceilings, chains and every grid case measured (a full profile)."""
        if self.is_synthetic:
            return True
        ids = self.case_ids
        return self.has_ceilings and self.has_chains and all(c.id in ids for c in _grid.grid(self.quick))

    @property
    def disturbed_parts(self) -> dict[str, str]:
        """What was measured on a disturbed machine (section or case id -> the sentinel's summary)."""
        out = {k: v["disturbed"] for k, v in self.sections.items() if v.get("disturbed")}
        out.update({s.case: s.disturbed for s in self.calibration if s.disturbed})
        return out

    @property
    def warnings(self) -> list[str]:
        """Why this profile may not describe the machine, then how it was obtained."""
        out = []
        parts = self.disturbed_parts
        if parts:
            cases = [k for k in parts if k not in self.sections]
            named = [k for k in parts if k in self.sections]
            what = ", ".join(named + ([f"{len(cases)} calibration case(s)"] if cases else []))
            out.append(f"the machine was busy while measuring {what} ({next(iter(parts.values()))}), even after "
                       "re-measuring: used for this run only, not cached; the next run measures them again")
        return out + list(self.notes)

    def peak(self, dtype: str = "float32") -> float:
        """Peak FLOP/s for a tensor dtype name (``float32``, ``bfloat16``, ``qint8`` ...)."""
        key = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "int8": "int8",
               "qint8": "int8", "quint8": "int8"}.get(dtype, dtype)
        return self.peak_flops.get(key) or self.peak_flops.get("fp32") or max(self.peak_flops.values())

    def bandwidth_for(self, nbytes: float) -> float:
        """Cache bandwidth when the op's bytes fit the cache-resident test, else main memory."""
        return self.cache_bandwidth if nbytes <= self.cache_bytes else self.mem_bandwidth

    # ------------------------------------------------------------ JSON
    def to_dict(self, *, cacheable: bool = False) -> dict:
        """The profile as JSON; ``cacheable`` leaves out what was measured on a disturbed
        machine (the cache never holds it)."""
        cal = [s for s in self.calibration if not (cacheable and s.disturbed)]
        sections = {k: v for k, v in self.sections.items() if not (cacheable and v.get("disturbed"))}
        d = {"schema": MACHINE_SCHEMA, "fingerprint": self.fingerprint, "quick": self.quick,
             "measured_at": self.measured_at, "seconds": self.seconds, "source": self.source,
             "allocator": self.allocator, "sections": sections}
        if "ceilings" in sections or not cacheable:   # a cached profile without ceilings has no such fields
            d.update({k: getattr(self, k) for k in _CEILING_FIELDS})
        d["chains"] = self.chains if "chains" in sections or not cacheable else []
        d["calibration"] = [s.to_dict() for s in cal]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MachineProfile":
        """A profile from its JSON form; every field's type and value is checked
        (:func:`check_profile_dict`), so a damaged or edited cache file is refused here
        (and measured anew by :func:`profile_machine`), never used."""
        check_profile_dict(d)
        return cls(d["fingerprint"], d.get("peak_flops") or {}, d.get("mem_bandwidth") or 0.0,
                   d.get("cache_bandwidth") or 0.0, d.get("cache_bytes") or 0, d.get("dispatch_overhead_s") or 0.0,
                   d.get("module_overhead_s") or 0.0, d.get("launch_latency_s"), d.get("spreads") or {},
                   d.get("stream") or {}, [Sample.from_dict(s) for s in d.get("calibration") or []],
                   d.get("chains") or [], d.get("llc_bytes") or L3_FALLBACK_BYTES, d.get("l2_bytes") or 2**20,
                   d.get("page_fault_s"), d.get("quick", False), d.get("measured_at", ""), d.get("seconds", 0.0),
                   d.get("source", "measured"), d.get("allocator"), d.get("op_overhead_s") or {},
                   d.get("sections") or {})

    @classmethod
    def synthetic(cls, *, peak: float = 1e11, mem_bandwidth: float = 1e10, cache_bandwidth: float = 5e10,
                  cache_bytes: int = 100_000, dispatch_overhead_s: float = 5e-6, module_overhead_s: float = 1e-6,
                  calibration: list | None = None, chains: list[dict] | None = None,
                  peak_flops: dict | None = None, device=None,
                  quick: bool = True) -> "MachineProfile":
        """A profile with given ceilings and no spread (tests, what-if arithmetic);
        ``calibration`` as samples or their dicts."""
        return cls(fingerprint(device), dict(peak_flops or {"fp32": peak}), mem_bandwidth, cache_bandwidth,
                   cache_bytes, dispatch_overhead_s, module_overhead_s, None, {}, {}, list(calibration or []),
                   list(chains or []), quick=quick, source="synthetic",   # page_fault_s unknown: None
                   sections={"ceilings": {"synthetic": True}, "chains": {"synthetic": True}})

    def save(self, path: Path | None = None, *, merge: bool = True) -> Path:
        """Write the cacheable part of the profile as JSON (default: the cache file for its
        fingerprint), merged with what that file already holds (another process may have
        added cases meanwhile); ``merge=False`` replaces it (a re-measured profile: what it
        measured on a disturbed machine is then measured again, never taken from before)."""
        path = Path(path) if path is not None else cache_path(self.fingerprint, self.quick)
        on_disk, _ = _read_cache(path) if merge and path.exists() else (None, "")
        merged = self
        if on_disk is not None and on_disk.fingerprint == self.fingerprint and on_disk.quick == self.quick:
            merged = _merge(on_disk, self)
        from flopgap._files import write_atomic

        return write_atomic(path, json.dumps(merged.to_dict(cacheable=True), indent=1),
                            what=f"machine profile {str(path)!r}")

    def figures(self) -> dict[str, Figure]:
        return {k: Figure.from_dict(v) for k, v in self.spreads.items()}


def _merge(base: MachineProfile, new: MachineProfile) -> MachineProfile:
    """``base`` with ``new``'s sections and cases laid over it (cases in grid order)."""
    out = MachineProfile.from_dict(base.to_dict())
    for name in ("ceilings", "chains"):
        stale = name == "chains" and name in base.sections and not _chains_current(base)
        if name in new.sections and (stale or not (new.sections[name].get("disturbed") and name in base.sections)):
            out.sections[name] = new.sections[name]
            if name == "ceilings":
                for k in _CEILING_FIELDS:
                    setattr(out, k, getattr(new, k))
            else:
                out.chains = new.chains
    cases = {s.case: s for s in base.calibration}
    for s in new.calibration:
        if not (s.disturbed and s.case in cases and not cases[s.case].disturbed):
            cases[s.case] = s
    out.calibration = sorted(cases.values(), key=lambda s: (grid_index(s.case, out.quick), s.case))
    out.allocator = new.allocator or base.allocator
    out.measured_at, out.seconds = new.measured_at or base.measured_at, base.seconds + new.seconds
    return out


def _allocator() -> dict:
    """glibc's malloc tuning this profile was measured under (the variables that were set)."""
    from flopgap.machine._isolated import PINNED_ALLOCATOR

    return {k: os.environ[k] for k in PINNED_ALLOCATOR if k in os.environ}


def profile_from(measured: Measured, fp: dict, quick: bool) -> MachineProfile:
    """A profile of what one request measured (fields of missing sections are empty)."""
    c = measured.ceilings or {}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sections = {}
    if measured.ceilings is not None:
        sections["ceilings"] = {"measured_at": stamp, **measured.sections.get("ceilings", {})}
    if measured.chains is not None:
        sections["chains"] = {"measured_at": stamp, **measured.sections.get("chains", {})}
    return MachineProfile(
        fp, c.get("peak_flops") or {}, c.get("mem_bandwidth") or 0.0, c.get("cache_bandwidth") or 0.0,
        c.get("cache_bytes") or 0, c.get("dispatch_overhead_s") or 0.0, c.get("module_overhead_s") or 0.0,
        c.get("launch_latency_s"), c.get("spreads") or {}, c.get("stream") or {},
        sorted(measured.samples, key=lambda s: (grid_index(s.case, quick), s.case)), measured.chains or [],
        c.get("llc_bytes") or llc_bytes(), c.get("l2_bytes") or 2**20, c.get("page_fault_s"), quick, stamp,
        measured.seconds, "measured", _allocator(), c.get("op_overhead_s") or {}, sections,
        measured_now=len(measured.samples))


def _measure(device, quick: bool, progress, request: Request, load=None) -> Measured:
    """A CPU request is measured in a child process with glibc's allocator pinned (see
    ``flopgap.machine._isolated``), unless this process already runs so; a CUDA
    profile (no calibration grid) in this process."""
    from flopgap.machine._isolated import allocator_pinned, measure_in_child
    from flopgap.machine._measure import run_request

    if _device(device).type == "cpu" and not allocator_pinned() and load is None:
        return measure_in_child(request, quick=quick, threads=torch.get_num_threads(), progress=progress)
    return run_request(request, quick=quick, device=_device(device), progress=progress, load=load)


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
    """(profile, "") or (None, why it cannot be used). Cases the grid no longer has
    (another version of flopgap cached them) are left out: they are read as nothing."""
    try:
        prof = MachineProfile.from_dict(json.loads(path.read_text()))
        prof.calibration = [s for s in prof.calibration if _grid.case_by_id(s.case, prof.quick) is not None]
        return prof, ""
    except FlopgapError as e:  # not a dict, or another schema version
        return None, str(e)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        return None, one_line(e)


def needs_for(count_result, *, quick: bool = False) -> Needs:
    """The grid cases a prediction of ``count_result`` reads (on this machine's cache sizes)."""
    return cases_for(count_result.ops, llc_bytes=llc_bytes(), quick=quick)


def _chains_current(prof: MachineProfile) -> bool:
    """The profile holds this version's chains (the same chain labels, in order, their
    ops counted with their read layout, ``inner_run``): a cached profile whose chain set
    or chain records have changed since gets its chains measured again, and the new ones
    replace the old even when they were measured disturbed (which the next run measures
    again)."""
    from flopgap.machine._chains import chain_cases, python_version

    return (prof.has_chains and [c.get("label") for c in prof.chains] == [lb for lb, _ in chain_cases(prof.quick)]
            and prof.python_opcode_s is not None and prof.sections["chains"].get("python") == python_version()
            and all((c.get("python_opcodes") or 0) > 0 and all("inner_run" in d for d in c.get("ops") or [{}])
                    for c in prof.chains))


def _request(prof: MachineProfile | None, needs: Needs | None, quick: bool, cuda: bool) -> Request:
    """What the cache lacks: every section and case a prediction (or a full profile) reads."""
    have = set() if prof is None else {s.case for s in prof.calibration if not s.disturbed}
    weights: dict[str, float] = {}
    if not cuda:
        want = needs.weights if needs is not None else {c.id: 0.0 for c in _grid.grid(quick)}
        if prof is not None and _chains_current(prof):   # the chains' own cases (else the child adds them)
            from flopgap.count import OpRecord

            ops = [[OpRecord(**d) for d in ch["ops"]] for ch in prof.chains]
            want = {**{k: 0.0 for k in chain_needs(ops, llc_bytes=prof.llc_bytes, quick=quick).weights}, **want}
        weights = {k: w for k, w in want.items() if k not in have}
    order = sorted(weights, key=lambda k: (-weights[k], k))
    return Request(ceilings=prof is None or not prof.has_ceilings or bool(prof.sections["ceilings"].get("disturbed")),
                   chains=prof is None or not _chains_current(prof) or bool(prof.sections["chains"].get("disturbed")),
                   cases=tuple(order), weights=tuple(weights[k] for k in order))


def profile_machine(refresh: bool = False, device=None, *, quick: bool = False,
                    progress: Callable[[int, int, str], None] | None = None, needs: Needs | None = None,
                    load=None) -> MachineProfile:
    """This machine's profile for the current thread count, from the cache for this
    fingerprint, completed by measuring what it lacks (``refresh=True``: re-measured).

    ``needs`` (:func:`needs_for` a count): measure only the sections and grid cases a
    prediction of that model reads; ``None``: the full profile (every grid case).
    ``progress(done, total, label)`` reports in estimated milliseconds of work.
    ``load``: the disturbance sentinel's source (tests pass a ``FakeLoad``; measuring
    then runs in this process).

    A cache file that cannot be used (unreadable, not JSON, not a profile, another
    schema version or fingerprint) is stale: it is measured anew and replaced, and the
    profile's ``warnings`` say why; nothing is printed.
    """
    fp = fingerprint(device)
    path = cache_path(fp, quick)
    _check_cache_path(path)  # before any measuring, not after it
    cuda = _device(device).type == "cuda"
    note = None
    cached = None
    if not refresh and path.exists():
        prof, why = _read_cache(path)
        if prof is not None and prof.fingerprint == fp:
            cached = prof
        else:
            if prof is not None:
                why = "it is for another machine fingerprint"
            note = f"re-measured the machine profile: cached {path} was stale ({why})"
    req = Request() if cached is not None and cached.is_synthetic else _request(cached, needs, quick, cuda)
    if cached is not None and not (req.ceilings or req.chains or req.cases):
        cached.source = "cache"
        return cached
    measured = _measure(device, quick, progress, req, load)
    new = profile_from(measured, fp, quick)
    prof = _merge(cached, new) if cached is not None else new
    prof.measured_now = len(measured.samples)
    prof.source = "cache+measured" if cached is not None else "measured"
    prof.save(path, merge=not refresh)
    if note:
        prof.notes.append(note)
    return prof
