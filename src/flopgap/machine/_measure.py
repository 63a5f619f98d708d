"""Measuring a profile request: the ceilings, the chains and a set of grid cases, each
watched by the disturbance sentinel, with their spread, re-measured where it matters.

Order of work (one :class:`Request`)::

    ceilings                        (micro-benchmarks, if asked)
    chains: count, round 1          (if asked; their ops' cases join the request; CPU
                                     chains are built, counted and timed in a child
                                     process of their own, which runs nothing else)
    cases, most sensitive first     (count + time_blocks each, in watched chunks)
    chains: round 2
    re-measure pass                 (cases whose blocks spread beyond SPREAD_REMEASURE,
                                     and the cases that serve SENSITIVE_SHARE or more of
                                     the predicted time: a second, later attempt)
    chains: round 3

**Noise.** A case keeps its fastest block over all attempts (``seconds``: what the
machine does undisturbed; on a shared 2-core machine one preempted OpenMP thread turns
a 10 us op into milliseconds), and the spread of the attempt that gave it
(``spread`` = that attempt's median / fastest - 1), which the prediction's interval
reads. **Disturbance.** Every chunk of about :data:`CHUNK_S` of work, the ceilings and
every chain round run under a :class:`~flopgap.timing._sentinel.Sentinel` (competing
runnable threads, CPU steal, a reference kernel against its calm time). A disturbed
chunk is measured again, up to :data:`RETRIES` times; what is still disturbed after
that carries the sentinel's summary (``disturbed``) and is never written to the cache
(:mod:`flopgap.machine._profile`).

Progress goes to ``progress(done, total, label)`` in estimated milliseconds of work, so
that a caller's rate-based estimate of the time left is an ETA.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from flopgap.machine._bench import time_blocks
from flopgap.machine import _grid
from flopgap.machine._grid import Case, chain_needs
from flopgap.machine._keys import CalKey, op_features, op_key

__all__ = ["Sample", "Request", "Measured", "run_request", "SPREAD_REMEASURE", "SENSITIVE_SHARE", "RETRIES",
           "CHUNK_S", "FRESH_CHAINS"]

# a single op's blocks on a quiet machine sit within a few percent of their fastest;
# 10% above it means something interfered with at least half of them
SPREAD_REMEASURE = 0.10
# cases serving 2% or more of a model's predicted time get a second, later attempt
# whatever their spread: the prediction is most sensitive to them
SENSITIVE_SHARE = 0.02
# a disturbed chunk is measured again at most twice: a competing burst on a shared host
# lasts seconds, a third disturbed attempt says the machine is busy, not unlucky
RETRIES = 2
# seconds of estimated work watched by one sentinel: short enough that a disturbed
# stretch is cheap to redo, long enough that the sentinel's two reference-kernel
# readings (~15 ms together) stay about 1% of it
CHUNK_S = 2.0
RETRY_WAIT_S = 0.5     # pause before re-measuring a disturbed chunk (let a burst pass)
# CPU chains timed in a child that ran nothing else: in a process that had run the
# calibration's cases, a varied inverted-residual chain ran 1.30x its time in a fresh one
# (median of 6 pairs, benchmarks/chain_history.py)
FRESH_CHAINS = True


@dataclass(frozen=True)
class Sample:
    """One measured calibration case (see the module docstring for the statistics)."""

    case: str
    op: str
    key: CalKey
    features: tuple
    flops: int
    bytes: int
    seconds: float
    seconds_median: float
    spread: float = 0.0
    attempts: int = 1
    per_channel: bool = True
    disturbed: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["key"] = str(self.key)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Sample":
        key = d["key"] if isinstance(d["key"], CalKey) else CalKey.parse(d["key"])
        if d.get("cold"):
            key = key.as_cold()
        seconds = float(d["seconds"])
        return cls(d.get("case") or d.get("label", ""), d.get("op", ""), key, tuple(d.get("features") or ()),
                   int(d.get("flops", 0)), int(d.get("bytes", 0)), seconds, float(d.get("seconds_median", seconds)),
                   float(d.get("spread", 0.0)), int(d.get("attempts", 1)), bool(d.get("per_channel", True)),
                   str(d.get("disturbed", "")))


@dataclass(frozen=True)
class Request:
    """What to measure: the ceilings, the chains (and the cases their ops need), and grid
    case ids with their weights (share of a prediction's time they serve)."""

    ceilings: bool = False
    chains: bool = False
    cases: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return {"ceilings": self.ceilings, "chains": self.chains, "cases": list(self.cases),
                "weights": list(self.weights)}

    @classmethod
    def from_dict(cls, d: dict) -> "Request":
        return cls(bool(d.get("ceilings")), bool(d.get("chains")), tuple(d.get("cases") or ()),
                   tuple(d.get("weights") or ()))


@dataclass
class Measured:
    """What one request measured. ``ceilings``: the profile's ceiling fields (or None);
    ``chains``: chain results (or None); ``samples``; ``sections``: per section
    (``ceilings``, ``chains``, ``cases``) when it ran, how long, and the sentinel's
    verdicts."""

    ceilings: dict | None = None
    chains: list[dict] | None = None
    samples: list[Sample] = field(default_factory=list)
    sections: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"ceilings": self.ceilings, "chains": self.chains, "samples": [s.to_dict() for s in self.samples],
                "sections": self.sections, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> "Measured":
        return cls(d.get("ceilings"), d.get("chains"), [Sample.from_dict(s) for s in d.get("samples") or []],
                   d.get("sections") or {}, float(d.get("seconds", 0.0)))


class _Cases(dict):
    """Cases by id, resolved on first use: the lattice's, or an op's own
    (:func:`flopgap.machine._grid.case_by_id`); an id that is neither is absent."""

    def __init__(self, quick: bool):
        super().__init__()
        self.quick = quick

    def __missing__(self, case_id: str):
        c = _grid.case_by_id(case_id, self.quick)
        if c is None:
            raise KeyError(case_id)
        self[case_id] = c
        return c

    def __contains__(self, case_id) -> bool:
        try:
            self[case_id]
        except KeyError:
            return False
        return True


class _Watch:
    """One sentinel over a stretch of work (``poll`` between steps); ``None`` source: unwatched.
    Every section is judged on every part of the reference kernel, the handoff part too:
    a single op repeated alone hands nothing from thread to thread, yet in a handoff spell
    the calibration cases of 2-thread ops ran slow with it (a profile measured in one
    predicted the models of ``benchmarks/predict_accuracy.py`` a median 19% slow, where
    the same code's profile measured outside one erred by a median 5.4% on the tuned set)."""

    def __init__(self, source, clock):
        from flopgap.timing import Sentinel

        self.clock = clock
        self.sentinel = Sentinel(source) if source is not None else None
        if self.sentinel is not None:
            self.sentinel.start(clock(), torch.get_num_threads())

    def poll(self) -> None:
        if self.sentinel is not None:
            self.sentinel.poll(self.clock())

    def finish(self):
        return self.sentinel.finish() if self.sentinel is not None else None


class _Progress:
    def __init__(self, cb, total_s: float):
        self.cb, self.total, self.done = cb, max(total_s, 1e-3), 0.0

    def step(self, seconds: float, label: str) -> None:
        self.done += seconds
        self.total = max(self.total, self.done)
        if self.cb is not None:
            self.cb(int(1000 * self.done), int(1000 * self.total), label)

    def grow(self, seconds: float) -> None:
        self.total += seconds


def _measure_case(case: Case, clock) -> tuple[Sample | None, np.ndarray | None]:
    """Count one case and time it; None where it dispatches nothing to time."""
    from flopgap.count import count
    from flopgap.machine._grid import _Call, per_channel

    with warnings.catch_warnings():  # deprecation notes of quantized ops: not our user's concern
        warnings.simplefilter("ignore")
        fn, inputs = case.build()
        with torch.inference_mode():
            res = count(_Call(fn), inputs, model=case.id, python=False)
    ops = res.kernel_ops or list(res.ops)
    if not ops:
        return None, None
    rec = max(ops, key=lambda r: (r.flops, r.bytes))  # the op that did the work
    times = _time_case(case, fn, inputs, clock)
    key = op_key(rec).as_cold(case.key.cold)
    fast, med = float(times.min()), float(np.median(times))
    return Sample(case.id, rec.op, key, tuple(op_features(rec)), int(rec.flops), int(rec.bytes), fast, med,
                  med / fast - 1.0 if fast > 0 else 0.0, 1, per_channel(case)), times


def _time_case(case: Case, fn, inputs, clock) -> np.ndarray:
    """Seconds per call of one case, one per block (tests replace this)."""
    return time_blocks(lambda: fn(*inputs), clock=clock)


def _retime(case: Case, clock) -> np.ndarray:
    fn, inputs = case.build()
    return _time_case(case, fn, inputs, clock)


def _better(s: Sample, times: np.ndarray) -> Sample:
    """Keep the attempt with the fastest block (its median and spread with it)."""
    fast, med = float(times.min()), float(np.median(times))
    if fast < s.seconds:
        return replace(s, seconds=fast, seconds_median=med, spread=med / fast - 1.0, attempts=s.attempts + 1)
    return replace(s, attempts=s.attempts + 1)


def _chunks(cases: list[Case]) -> list[list[Case]]:
    out, cur, t = [], [], 0.0
    for c in cases:
        cur.append(c)
        t += c.cost_s
        if t >= CHUNK_S:
            out.append(cur)
            cur, t = [], 0.0
    if cur:
        out.append(cur)
    return out


def run_request(req: Request, *, quick: bool = False, device=None, progress: Callable[[int, int, str], None] | None = None,
                load=None, clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep,
                llc_bytes: int | None = None, fresh_chains: bool | None = None) -> Measured:
    """Measure ``req`` now, in this process (see the module docstring). ``load``: the
    sentinel's source (default the real machine; ``flopgap.timing.FakeLoad`` in tests;
    ``False``: unwatched). ``fresh_chains`` (default :data:`FRESH_CHAINS`): CPU chains
    are timed in a child process of their own, which ran nothing else (``ChainTimer``,
    ``fresh_process``)."""
    from flopgap.machine._chains import ChainTimer

    dev = torch.device(device or "cpu")
    fresh = FRESH_CHAINS if fresh_chains is None else fresh_chains
    timer = ChainTimer(quick, fresh_process=fresh) if req.chains and dev.type == "cpu" else None
    try:
        return _run(req, timer, quick, dev, progress, load, clock, sleep, llc_bytes)
    finally:
        if timer is not None:
            timer.close()


def _run(req: Request, timer, quick: bool, dev: torch.device, progress, load, clock, sleep,
         llc_bytes: int | None) -> Measured:
    from flopgap.machine._ceilings import CEILINGS_EST_S, llc_bytes as sys_llc, measure_ceilings
    from flopgap.timing import system_load

    source = None if load is False else (load if load is not None else system_load())
    llc = llc_bytes or sys_llc()
    t0 = clock()
    by_id = _Cases(quick)
    weights = dict(zip(req.cases, req.weights or (0.0,) * len(req.cases)))
    out = Measured()
    from flopgap.machine._chains import CHAIN_ROUNDS, chain_cases, python_version

    chain_est = (0.05 if quick else 0.2) + 0.05 * len(chain_cases(quick)) if req.chains else 0.0
    prog = _Progress(progress, (CEILINGS_EST_S[quick] if req.ceilings else 0.0) + chain_est
                     + sum(by_id[i].cost_s for i in req.cases if i in by_id))

    chain_rounds: list = []
    if timer is not None:
        need = chain_needs(timer.op_records(), llc_bytes=llc, quick=quick)
        for cid, wt in need.weights.items():
            if cid not in weights and cid in by_id:
                weights[cid] = 0.0
                prog.grow(by_id[cid].cost_s)
    if req.ceilings:
        prog.step(0.0, "ceilings: peak FLOP/s, bandwidth, dispatch")
        verdicts = []
        for attempt in range(RETRIES + 1):
            w = _Watch(source, clock)
            ceilings = measure_ceilings(dev, quick)
            d = w.finish()
            verdicts.append(d.summary if d is not None else "not watched")
            if d is None or not d.disturbed:
                break
            sleep(RETRY_WAIT_S)
        out.ceilings = ceilings
        out.sections["ceilings"] = {"attempts": len(verdicts), "verdicts": verdicts,
                                    "disturbed": verdicts[-1] if d is not None and d.disturbed else ""}
        prog.step(CEILINGS_EST_S[quick], "ceilings measured")

    cases = sorted((by_id[i] for i in weights if i in by_id), key=lambda c: (-weights[c.id], c.id))

    def chain_round(label: str) -> None:
        w = _Watch(source, clock)
        timer._between = w.poll
        timer.time_round()
        d = w.finish()
        chain_rounds.append(d.summary if d is not None else "not watched")
        if d is not None and d.disturbed:
            chain_rounds[-1] = "disturbed: " + d.summary
        prog.step(chain_est / CHAIN_ROUNDS, label)

    if timer is not None:
        chain_round("chains: round 1")

    # the cases, most sensitive first, in watched chunks
    samples: dict[str, Sample] = {}
    verdicts: dict[str, str] = {}
    for chunk in _chunks(cases):
        todo = list(chunk)
        for attempt in range(RETRIES + 1):
            w = _Watch(source, clock)
            for c in todo:
                if c.id in samples:
                    samples[c.id] = _better(samples[c.id], _retime(c, clock))
                else:
                    s, _ = _measure_case(c, clock)
                    if s is not None:
                        samples[c.id] = s
                w.poll()
                if attempt == 0:
                    prog.step(c.cost_s, f"calibrating {c.id}")
            d = w.finish()
            if d is None or not d.disturbed:
                for c in todo:
                    verdicts.pop(c.id, None)
                break
            for c in todo:
                verdicts[c.id] = d.summary
            if attempt < RETRIES:
                prog.grow(sum(c.cost_s for c in todo))
                sleep(RETRY_WAIT_S)

    if timer is not None:
        chain_round("chains: round 2")

    # re-measure pass: noisy cases, and the ones the prediction leans on most
    again = [c for c in cases if c.id in samples and c.id not in verdicts
             and (samples[c.id].spread > SPREAD_REMEASURE or weights.get(c.id, 0.0) >= SENSITIVE_SHARE)]
    prog.grow(sum(c.cost_s for c in again))
    for chunk in _chunks(again):
        w = _Watch(source, clock)
        fresh = {}
        for c in chunk:
            fresh[c.id] = _retime(c, clock)
            w.poll()
            prog.step(c.cost_s, f"re-measuring {c.id}")
        d = w.finish()
        if d is None or not d.disturbed:   # a disturbed re-measure is dropped: the first attempt stands
            for cid, times in fresh.items():
                samples[cid] = _better(samples[cid], times)

    if timer is not None:
        chain_round("chains: round 3")
        out.chains = timer.results()
        calm = [v for v in chain_rounds if not v.startswith("disturbed")]
        out.sections["chains"] = {"rounds": chain_rounds, "python_opcode_s": timer.python_opcode_s,
                                  "python": python_version(),
                                  "disturbed": "" if calm else chain_rounds[-1][len("disturbed: "):]}
    elif req.chains:   # CUDA: the chains run on the GPU, back to back
        from flopgap.machine._chains import python_opcode_seconds, run_chains

        out.chains = run_chains(quick=quick, device=dev)
        out.sections["chains"] = {"rounds": ["not watched"] * CHAIN_ROUNDS, "disturbed": "",
                                  "python": python_version(),
                                  "python_opcode_s": python_opcode_seconds(0.05 if quick else 0.2)}

    out.samples = [replace(s, disturbed=verdicts.get(cid, "")) for cid, s in samples.items()]
    n_dist = sum(1 for s in out.samples if s.disturbed)
    out.sections["cases"] = {"measured": len(out.samples), "remeasured": len(again), "disturbed": n_dist}
    out.seconds = clock() - t0
    return out


def estimate_s(req: Request, quick: bool = False) -> float:
    """A-priori seconds to measure ``req`` (without the chains' own cases)."""
    from flopgap.machine._ceilings import CEILINGS_EST_S

    by_id = _Cases(quick)
    return ((CEILINGS_EST_S[quick] if req.ceilings else 0.0) + (1.0 if req.chains else 0.0)
            + sum(by_id[i].cost_s for i in req.cases if i in by_id))
