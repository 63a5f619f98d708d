"""Was the machine disturbed while we timed? Evidence from the machine, never a guess.

A median with a tight CI can still describe a machine that was busy the whole time:
bursty noise widens a CI, steady competition only shifts it. So every measurement
carries a :class:`Disturbance` record built from three independent witnesses:

1. **Competition for the cores.** Every ``interval_s`` of the run (between blocks, never
   inside one) the sentinel reads how many threads of *other* processes are runnable
   (Linux: ``/proc/loadavg``'s running count less this process's own running threads, and
   those of a measuring child it waits on, :func:`own_process`; the
   least of ``PROBE_READS`` reads a fraction of a millisecond apart, so that a kernel
   thread's or daemon's blip is not taken for a competitor).
   A probe is *contended* when those threads plus the timing's own threads exceed the
   logical cores: an intra-op thread that loses its core stalls every op at the next
   barrier. Disturbed when at least ``CONTENDED_SHARE`` of the probes, and at least
   ``MIN_CONTENDED_PROBES`` of them, were contended.
2. **CPU steal.** The hypervisor's steal time over the run (``/proc/stat``) as a share of
   all CPU time. Disturbed above ``STEAL_SHARE``.
3. **A reference kernel re-timed before and after.** A fixed workload in four parts,
   each timed apart (median of 5): *dispatch* (a chain of tiny ops), *compute* (a GEMM
   split over the run's threads), *memory* (a 16 MiB copy, on one thread: a
   multi-threaded copy on a small VM is bimodal, one thread waking late, and would be
   noise, not evidence) and *handoff* (three small inverted-residual blocks on the run's
   threads, each op reading what the threads wrote in the op before; a host that places a
   VM's threads apart, or a neighbour in their shared cache, slows it while the other
   three parts do not move, and every small-op model with it). It runs before the cold
   call and after the last sample and is
   compared, part by part, with this machine's **calm reference**: the 25th percentile of
   the last ``CALM_WINDOW`` readings that were taken while no other process competed for
   the cores and were not themselves slow, kept per CPU, core count, torch version and
   thread count in the cache folder. A quantile, not the fastest reading ever: a single
   lucky reading would otherwise make every later one look slow. A reading before the run
   slower than ``REFERENCE_RATIO`` times the calm time in some part is taken again at once
   and each part keeps the faster of the two (a spell over before the run began did not
   touch it). Disturbed when a part of the before (confirmed) or after reading is that slow
   (``HANDOFF_RATIO`` for the handoff part). This catches
   what (1) cannot: a memory-bandwidth hog on another core (it slows the memory part about
   2x), a VM neighbour, a thermal or power cap.

Each witness that fires adds one sentence with its numbers to ``reasons``. Where a
witness cannot see (no ``/proc``, no calm reference yet), it says nothing and the record
says which witnesses looked (``probes``, ``steal_share is None``, ``calm_reference_s is
None``). The sources are replaceable (:class:`LoadSource`): tests drive every decision
with :class:`FakeLoad`.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol, Sequence

__all__ = ["Disturbance", "LoadSource", "SystemLoad", "FakeLoad", "Sentinel", "others_runnable",
           "CONTENDED_SHARE", "STEAL_SHARE", "REFERENCE_RATIO", "HANDOFF_RATIO", "PARTS", "SINGLE_OP_PARTS",
           "PROBE_INTERVAL_S"]

# A quiet machine has short blips (a daemon waking, the kernel's own threads): a few
# percent of probes at most. Steady competition contends most of them.
CONTENDED_SHARE = 0.2
# ... and a single contended probe is a blip whatever the share: a run of 0.2 s has only 4
MIN_CONTENDED_PROBES = 2
# Steal is zero on a dedicated host; 5% of CPU time taken by the hypervisor is a
# neighbour slowing every op by about as much.
STEAL_SHARE = 0.05
# On a calm machine each part of a reading stays within 1.3x of its calm time (the 25th
# percentile) in 99% of readings; a memory-bandwidth hog doubles the memory part, and a
# VM's slow spells, which slow every small-op model, put the dispatch part at 1.6-1.7x.
REFERENCE_RATIO = 1.5
# The handoff part is steadier than the others and its spells smaller (about 1.4x and up,
# benchmarks/handoff_spells.py, with small-op models slower by a smaller factor): a tighter bound.
HANDOFF_RATIO = 1.3
CALM_WINDOW = 50      # readings kept per key: a few minutes of measuring, so one spell cannot own it
CALM_QUANTILE = 0.25  # the calm time of a part: robust to lucky outliers and to a minority of slow readings
PARTS = ("dispatch", "compute", "memory", "handoff")
# the parts that time no data handed from thread to thread: a caller whose work is known
# to be untouched by handoff spells may judge on these alone (Sentinel(parts=...))
SINGLE_OP_PARTS = ("dispatch", "compute", "memory")
PROBE_INTERVAL_S = 0.05  # one load probe per 50 ms of run: dense enough, and cheap (one read when quiet)
# A probe is the least of this many reads, PROBE_READ_GAP_S apart: a kernel thread or a
# daemon runs for microseconds, a competing process stays runnable (a quiet VM shows such
# blips in a few percent of single reads, far fewer in the least of three).
PROBE_READS = 3
PROBE_READ_GAP_S = 0.0005
_REFERENCE_REPEATS = 5   # median of 5 runs of the reference kernel per reading
_CALM_FILE = "sentinel.json"


@dataclass(frozen=True)
class Disturbance:
    """The sentinel's evidence for one run (see the module docstring for each figure)."""

    disturbed: bool
    reasons: tuple[str, ...] = ()
    threads: int | None = None
    cores: int | None = None
    probes: int = 0
    contended: int = 0
    others_max: int | None = None
    others_median: float | None = None
    steal_share: float | None = None
    reference_before_s: tuple[float, ...] | None = None   # seconds per part (PARTS)
    reference_after_s: tuple[float, ...] | None = None
    calm_reference_s: tuple[float, ...] | None = None

    @property
    def contended_share(self) -> float | None:
        return self.contended / self.probes if self.probes else None

    @property
    def reference_ratios(self) -> dict[str, float] | None:
        """Per part, the slower reading over its calm time (``None``: no calm reference or no reading)."""
        readings = [r for r in (self.reference_before_s, self.reference_after_s) if r is not None]
        if not readings or not self.calm_reference_s:
            return None
        return {name: max(r[i] for r in readings) / calm for i, (name, calm) in
                enumerate(zip(PARTS, self.calm_reference_s)) if calm > 0 and all(len(r) > i for r in readings)}

    @property
    def reference_ratio(self) -> float | None:
        """The worst part's ratio (``None``: no calm reference or no reading)."""
        ratios = self.reference_ratios
        return max(ratios.values()) if ratios else None

    @property
    def summary(self) -> str:
        """One line: "machine disturbed: <reasons>" or what the witnesses saw."""
        if self.disturbed:
            return "machine disturbed: " + "; ".join(self.reasons)
        parts = []
        if self.probes:
            parts.append(f"{self.contended} of {self.probes} load probes contended")
        if self.reference_ratio is not None:
            parts.append(f"reference kernel {self.reference_ratio:.2f}x its calm time")
        if self.steal_share is not None:
            parts.append(f"steal {100 * self.steal_share:.1f}%")
        return "quiet: " + ", ".join(parts) if parts else "not watched"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        d["contended_share"] = self.contended_share
        d["reference_ratio"] = self.reference_ratio
        d["reference_ratios"] = self.reference_ratios
        d["reference_parts"] = list(PARTS)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "Disturbance | None":
        if not isinstance(d, dict):
            return None
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["reasons"] = tuple(known.get("reasons") or ())
        for k in ("reference_before_s", "reference_after_s", "calm_reference_s"):
            known[k] = as_reading(known.get(k))
        return cls(**known)


class LoadSource(Protocol):
    """Where the sentinel's evidence comes from (the real machine, or a fake)."""

    def cores(self) -> int | None: ...

    def others_runnable(self) -> int | None: ...

    def cpu_ticks(self) -> tuple[int, int] | None: ...       # (steal, total) since boot

    def reference_s(self, threads: int) -> tuple[float, ...] | None: ...  # time the reference kernel now

    def calm_reference_s(self, threads: int) -> tuple[float, ...] | None: ...

    def record_reference(self, threads: int, reading: tuple[float, ...]) -> None: ...


def as_reading(v) -> tuple[float, ...] | None:
    """A reading of the reference kernel, seconds per part (a single number: every part).
    A reading stored before the handoff part existed has the first three parts only and
    is compared on those."""
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return (float(v),) * len(PARTS)
    v = tuple(float(x) for x in v)
    return v if len(v) in (len(PARTS), len(SINGLE_OP_PARTS)) else None


def part_ratio(part: str) -> float:
    """The factor over its calm time at which a part's reading is slow."""
    return HANDOFF_RATIO if part == "handoff" else REFERENCE_RATIO


_OWN_PIDS: set[int] = set()


def own_process(pid: int, own: bool = True) -> None:
    """Count process ``pid``'s running threads as this run's own work (``own=False``:
    no longer). Only for a child that measures *for* this run, while this process waits
    on it: the machine profile's chain timer, whose OpenMP workers still spin for a
    moment after each burst. Other children (a user's data-loader workers) stay
    competitors."""
    (_OWN_PIDS.add if own else _OWN_PIDS.discard)(int(pid))


def own_running(root: str = "/proc", pids=None) -> int:
    """Running threads of this process and of the processes registered with
    :func:`own_process` (``pids``: those instead)."""
    mine = 0
    for pid in ("self", *sorted(_OWN_PIDS if pids is None else pids)):
        try:
            tasks = os.listdir(f"{root}/{pid}/task")
        except OSError:  # the child has ended
            continue
        for task in tasks:
            try:
                with open(f"{root}/{pid}/task/{task}/stat") as f:
                    mine += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:  # the thread ended meanwhile
                continue
    return mine


def others_runnable() -> int | None:
    """Runnable threads of other processes right now (Linux), or ``None`` without ``/proc``.

    ``/proc/loadavg``'s fourth field counts every runnable task on the machine, this
    process's running threads (the one reading, OpenMP workers still spinning) and those
    of a measuring child registered with :func:`own_process` included; they are
    subtracted. (The load average itself cannot tell ours from theirs.)
    """
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        mine = own_running()
    except (OSError, ValueError, IndexError):
        return None
    return max(running - mine, 0)


def _cpu_ticks() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
    except OSError:
        return None
    if not parts or parts[0] != "cpu":
        return None
    values = [int(v) for v in parts[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    total = sum(values[:8])
    steal = values[7] if len(values) > 7 else 0
    return steal, total


class _ReferenceKernel:
    """The fixed workload, timed part by part (see :data:`PARTS`): 32 tiny matmul+tanh pairs
    on a 64-vector (dispatch), one 256x256 GEMM on the run's threads (compute), a 16 MiB
    copy on one thread (memory bandwidth), three inverted-residual blocks (1x1 conv 24 ->
    144, depthwise 3x3, 1x1 conv back, residual add) on a 24x28x28 map on the run's threads
    (handoff: each op splits its work over the threads another way than the op before)."""

    def __init__(self):
        import torch

        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(1, 64, generator=g)
        self.w = torch.randn(64, 64, generator=g) / 8
        self.a = torch.randn(256, 256, generator=g)
        self.b = torch.randn(256, 256, generator=g)
        self.src = torch.randn(4 * 2**20, generator=g)
        self.dst = torch.empty_like(self.src)
        c, e = 24, 6
        self.blocks = [(torch.randn(c * e, c, 1, 1, generator=g) / 5, torch.randn(c * e, 1, 3, 3, generator=g) / 3,
                        torch.randn(c, c * e, 1, 1, generator=g) / 12) for _ in range(3)]
        self.fmap = torch.randn(1, c, 28, 28, generator=g)

    def _handoff(self) -> None:
        import torch.nn.functional as F

        x = self.fmap
        for expand, depthwise, project in self.blocks:
            y = F.relu6(F.conv2d(x, expand))
            y = F.relu6(F.conv2d(y, depthwise, padding=1, groups=depthwise.shape[0]))
            x = x + F.conv2d(y, project)

    def _dispatch(self) -> None:
        import torch

        y = self.x
        for _ in range(32):
            y = torch.tanh(y @ self.w)

    def _compute(self) -> None:
        import torch

        torch.mm(self.a, self.b)

    def _memory(self) -> None:
        self.dst.copy_(self.src)

    @staticmethod
    def _median(fn) -> float:
        fn()  # warm: allocator, OpenMP pool, caches
        readings = []
        for _ in range(_REFERENCE_REPEATS):
            t0 = time.perf_counter()
            fn()
            readings.append(time.perf_counter() - t0)
        return statistics.median(readings)

    def time(self, threads: int) -> tuple[float, float, float, float]:
        import torch

        from flopgap.timing._context import threads_context

        with torch.inference_mode():
            with threads_context(threads):
                dispatch, compute = self._median(self._dispatch), self._median(self._compute)
                handoff = self._median(self._handoff)
            with threads_context(1):
                memory = self._median(self._memory)
        return dispatch, compute, memory, handoff


def calm_of(readings: Sequence[Sequence[float]]) -> tuple[float, ...] | None:
    """The calm time of each part: the :data:`CALM_QUANTILE` of the kept readings."""
    import numpy as np

    rows = [r for r in (as_reading(x) for x in readings) if r is not None and len(r) == len(PARTS)]
    if not rows:
        return None
    return tuple(float(q) for q in np.quantile(np.array(rows), CALM_QUANTILE, axis=0))


class SystemLoad:
    """The real machine: ``/proc`` for runnable threads and steal, the reference kernel
    timed with ``time.perf_counter``, calm readings kept in ``$FLOPGAP_CACHE_DIR``."""

    def __init__(self, cache_file=None):
        self._kernel: _ReferenceKernel | None = None
        self._cache_file = cache_file
        self._calm: dict[str, list] | None = None

    def cores(self) -> int | None:
        return os.cpu_count()

    def others_runnable(self) -> int | None:
        """The least of up to ``PROBE_READS`` reads: a read of 0 ends the probe (the least
        cannot go lower), so a quiet machine pays for one read. A competitor runnable the
        whole time is counted in full; one runnable only part of the time is counted less
        often than a single read would count it."""
        least = None
        for i in range(PROBE_READS):
            if i:
                time.sleep(PROBE_READ_GAP_S)
            r = others_runnable()
            if r is not None:
                least = r if least is None else min(least, r)
                if least == 0:
                    break
        return least

    def cpu_ticks(self) -> tuple[int, int] | None:
        return _cpu_ticks()

    def reference_s(self, threads: int) -> tuple[float, ...] | None:
        try:
            if self._kernel is None:
                self._kernel = _ReferenceKernel()
            return self._kernel.time(threads)
        except (RuntimeError, MemoryError):  # no room for 32 MiB: no reference witness
            return None

    # calm readings: {key: [[dispatch, compute, memory], ...]}, key = CPU, cores, torch, threads
    def _path(self):
        from flopgap._cache import cache_dir

        return self._cache_file or cache_dir() / _CALM_FILE

    @staticmethod
    def _key(threads: int) -> str:
        import torch

        from flopgap.timing._env import cpu_model

        raw = json.dumps([cpu_model(), os.cpu_count(), torch.__version__, threads])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def _load(self) -> dict[str, list]:
        if self._calm is None:
            try:
                data = json.loads(self._path().read_text())
                self._calm = {k: [r for r in (as_reading(x) for x in v)
                                  if r is not None and len(r) == len(PARTS) and min(r) > 0]
                              for k, v in data.items() if isinstance(v, list)}
            except (OSError, ValueError, AttributeError, TypeError):
                self._calm = {}
        return self._calm

    def calm_reference_s(self, threads: int) -> tuple[float, ...] | None:
        return calm_of(self._load().get(self._key(threads), []))

    def record_reference(self, threads: int, reading: tuple[float, ...]) -> None:
        kept = self._load().setdefault(self._key(threads), [])
        kept.append(list(reading))
        del kept[:-CALM_WINDOW]
        try:
            from flopgap._cache import atomic_write_text
            from flopgap._json import dumps

            atomic_write_text(self._path(), dumps(self._calm))
        except OSError:  # a read-only cache: the readings live for this process only
            pass


@dataclass
class FakeLoad:
    """A scripted machine for tests: ``others`` is what successive load probes read (the
    last value repeats), ``steal_ticks`` the steal added over a run of ``total_ticks``,
    ``references`` the successive reference-kernel readings and ``calm`` the calm reference
    (a number: the same for every part; a tuple: per part), ``recorded`` what the
    sentinel offered as calm readings."""

    others: Sequence[int | None] = (0,)
    n_cores: int | None = 2
    steal_ticks: int = 0
    total_ticks: int = 1000
    references: Sequence = (1e-3,)
    calm: float | tuple | None = 1e-3
    recorded: list = field(default_factory=list)
    _probe: int = 0
    _ref: int = 0
    _ticks: int = 0

    def cores(self) -> int | None:
        return self.n_cores

    def others_runnable(self) -> int | None:
        v = self.others[min(self._probe, len(self.others) - 1)]
        self._probe += 1
        return v

    def cpu_ticks(self) -> tuple[int, int] | None:
        self._ticks += 1
        if self._ticks == 1:
            return 0, 0
        return self.steal_ticks, self.total_ticks

    def reference_s(self, threads: int) -> tuple[float, ...] | None:
        v = self.references[min(self._ref, len(self.references) - 1)]
        self._ref += 1
        return as_reading(v)

    def calm_reference_s(self, threads: int) -> tuple[float, ...] | None:
        return as_reading(self.calm)

    def record_reference(self, threads: int, reading: tuple[float, ...]) -> None:
        self.recorded.append(reading)
        if self.calm is None:
            self.calm = reading

    @classmethod
    def quiet(cls) -> "FakeLoad":
        return cls()

    @classmethod
    def busy(cls, others: int = 3) -> "FakeLoad":
        return cls(others=(others,), references=(2e-3,))


_SYSTEM: SystemLoad | None = None


def system_load() -> SystemLoad:
    """The process-wide :class:`SystemLoad` (its reference kernel is built once)."""
    global _SYSTEM
    if _SYSTEM is None:
        _SYSTEM = SystemLoad()
    return _SYSTEM


class Sentinel:
    """Watches one run: ``start`` before the cold call, ``poll`` between blocks, ``finish``
    after the last sample. ``now`` values come from the timer's clock, so a fake clock
    decides when probes happen. ``parts``: the reference kernel's parts that bear on the
    work watched (:data:`SINGLE_OP_PARTS`: those that time no handoff between threads);
    the others are read and reported, never judged."""

    def __init__(self, source: LoadSource, *, interval_s: float = PROBE_INTERVAL_S,
                 parts: Sequence[str] = PARTS):
        self.source = source
        self.interval_s = interval_s
        self.parts = tuple(p for p in PARTS if p in parts)
        self._threads = 1
        self._others: list[int] = []
        self._last: float | None = None
        self._ticks0: tuple[int, int] | None = None
        self._before = None
        self._calm = None

    def _probe(self) -> int | None:
        v = self.source.others_runnable()
        if v is not None:
            self._others.append(int(v))
        return v

    def start(self, now: float, threads: int) -> None:
        self._threads = max(1, int(threads))
        others = self._probe()
        self._calm = self.source.calm_reference_s(self._threads)  # this run is judged against the calm before it
        self._before = self._reference_before(others)
        self._ticks0 = self.source.cpu_ticks()
        self._last = now

    def poll(self, now: float) -> None:
        if self._last is None or now - self._last >= self.interval_s:
            self._probe()
            self._last = now

    def _slow(self, reading) -> bool:
        return bool(slow_parts(reading, self._calm, self.parts))

    def _reference_before(self, others: int | None):
        """The reading before the run; one slower than REFERENCE_RATIO times the calm time in
        some part is taken again at once, and each part keeps the faster of the two: a spell
        that is over before the run begins does not touch it, one that lasts slows both.
        (The reading after the run is never re-taken: a spell that ends just as the run ends
        did touch it.) Only fresh readings join the calm ones, never a part-wise minimum."""
        reading = as_reading(self.source.reference_s(self._threads))
        self._note_reference(reading, others)
        if not self._slow(reading):
            return reading
        again = as_reading(self.source.reference_s(self._threads))
        if again is None:
            return reading
        self._note_reference(again, others)
        return tuple(min(a, b) for a, b in zip(reading, again))

    def _note_reference(self, reading, others: int | None) -> None:
        """A reading taken while no other process competed for the cores, and not itself
        slow against the calm reference, joins the calm readings."""
        cores = self.source.cores()
        if reading is None or others is None or not cores or others + self._threads > cores:
            return
        if self._calm is None or not slow_parts(reading, self._calm):
            self.source.record_reference(self._threads, reading)

    def finish(self) -> Disturbance:
        ticks1 = self.source.cpu_ticks()
        others = self._probe()
        after = as_reading(self.source.reference_s(self._threads))
        self._note_reference(after, others)
        return judge(self._threads, self.source.cores(), self._others, self._ticks0, ticks1,
                     self._before, after, self._calm, parts=self.parts)


def slow_parts(reading, calm, parts: Sequence[str] = PARTS) -> list[str]:
    """The parts among ``parts`` in which ``reading`` is slower than :func:`part_ratio`
    times its calm time."""
    reading, calm = as_reading(reading), as_reading(calm)
    if reading is None or calm is None:
        return []
    return [p for p, r, c in zip(PARTS, reading, calm) if p in parts and r > part_ratio(p) * c]


def judge(threads: int, cores: int | None, others: Sequence[int], ticks0, ticks1, before, after,
          calm, *, parts: Sequence[str] = PARTS) -> Disturbance:
    """The verdict from the witnesses' readings (pure: every threshold is applied here).
    ``before``, ``after`` and ``calm`` are reference readings (seconds per part, or one
    number for every part); only ``parts`` are judged."""
    before, after, calm = as_reading(before), as_reading(after), as_reading(calm)
    reasons = []
    contended = sum(1 for o in others if cores and o + threads > cores)
    if others and cores and contended >= MIN_CONTENDED_PROBES and contended / len(others) >= CONTENDED_SHARE:
        reasons.append(f"other processes had up to {max(others)} runnable threads on {cores} logical cores "
                       f"while timing with {threads} thread(s) ({contended} of {len(others)} load probes "
                       f"contended)")
    steal = None
    if ticks0 is not None and ticks1 is not None and ticks1[1] > ticks0[1]:
        steal = (ticks1[0] - ticks0[0]) / (ticks1[1] - ticks0[1])
        if steal > STEAL_SHARE:
            reasons.append(f"the hypervisor stole {100 * steal:.1f}% of CPU time")
    d = Disturbance(False, (), threads=threads, cores=cores, probes=len(others), contended=contended,
                    others_max=max(others) if others else None,
                    others_median=float(statistics.median(others)) if others else None, steal_share=steal,
                    reference_before_s=before, reference_after_s=after, calm_reference_s=calm)
    slow = {part: r for part, r in (d.reference_ratios or {}).items() if part in parts and r > part_ratio(part)}
    if slow:
        when = [name for name, reading in (("before", before), ("after", after)) if slow_parts(reading, calm, parts)]
        reasons.append("the reference kernel ran slow against its calm time (" + ", ".join(
            f"{part} {r:.2f}x" for part, r in slow.items()) + f"; {' and '.join(when)} the run)"
            + (": ops handing data from thread to thread ran slow, as when the host runs this VM's threads "
               "apart or a neighbour shares their cache" if "handoff" in slow else ""))
    return replace(d, disturbed=bool(reasons), reasons=tuple(reasons))
