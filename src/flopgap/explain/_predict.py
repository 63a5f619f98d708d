"""Latency prediction from a count and a machine profile alone (the model is not run).

Per op (every dispatched op, views included: each one costs a dispatch)::

    conv / matmul (k-NN on shape):  t = O_key + max(F / R_hat, W / mem_bandwidth)
        key    = the op's calibration key (:class:`~flopgap.machine._keys.CalKey`:
                 conv:dense, conv:depthwise, conv:grouped, matmul, attention ...);
                 when what the model touches per call (conv/linear weights plus the
                 activations its ops write) exceeds half the last-level cache, the
                 cases timed with a *cold* weight (each call reads its weight from
                 memory, see ``flopgap.machine._grid.weight``) and W = 0: inside such a model an
                 op's weight was evicted since its last call (mobilenet_v3_large's
                 1280x1000 classifier: 60 us hot, 270 us cold); between half a cache
                 and a whole one (:func:`cold_share` k below 1) the hot and cold times
                 weighed k : 1 - k (a 16.5 MiB MLP on a 32 MiB cache ran at its hot rate)
        O_key  = time of the key's calibrated case of fewest FLOPs (fixed per-call cost)
        R_hat  = exp(weighted mean of log R_i over the 4 calibrated cases nearest in
                 log2 shape features, weights 1/(d + 0.25)^2; a convolution, linear
                 layer or fused attention whose own shape was calibrated, see ``flopgap.machine._grid.exact_case``,
                 takes that case's rate alone, method ``own:KEY`` rather than ``knn:KEY``:
                 rates jump between neighbouring widths), where
                 R_i = F_i / max(t_i - O_key, 0.1 t_i) is case i's rate net of overhead;
        W      = (profiles without cold cases) the op's weight bytes when they exceed
                 the L2 cache and the model is cold as above, else 0
    calibrated memory op:           t = interpolation of log t over log bytes on that
                                    op's curve; beyond the largest case t scales with bytes;
                                    for ops timed at several channel counts (batch norm,
                                    pooling, ...), log-linear in log2 channels between
                                    the curves of the two nearest counts; other ops
                                    (elementwise, layer norm) by bytes alone
    other memory-like op:           the ``aten.add.Tensor`` curve at the op's bytes
    copy reading in short runs:     (``gather_run``: a transposed or patch-unfolded input copied
                                    to row-major) the ``gather`` curve of its run length at its bytes
    free op (view, no-op):          the median ``flatten`` (a view) time
    anything else:                  roofline = max(F / peak, B / bandwidth, O)

a memory op reading a scattered input adds the gather's cost beyond an in-order clone of
its output's bytes (:meth:`Predictor.gather_extra`); then the in-sequence correction ``t' = s * t + c + b * A (+ e * k * t)`` for every non-free
op, with ``s_mm`` in place of ``s`` for a float matmul or fused attention
(:data:`MATMUL_SCALE_KEYS`; views are scaled by ``s``)
(``A``: the activation bytes it reads, :func:`handoff_bytes`; ``e * k * t`` only for a
memory-class op, :func:`is_memory_class`, where ``k`` is the model's :func:`cold_share`:
0 up to a footprint of half the last-level cache, 1 from a whole cache on, linear
between), plus the
page faults every call pays whatever the allocator's state (:func:`fault_s`; not for an op
predicted from its own case, method ``own:KEY``, whose timing paid them), plus the model's
Python: ``Y * python_opcode_s``, the bytecode instructions one plain forward executes
(``CountResult.python_opcodes``, counted with the model) times the measured cost of one
instruction of module code (``MachineProfile.python_opcode_s``). Libraries that issue the
same kernels differ here: a timm inverted-residual block ran about twice the instructions
of torchvision's (its norm-and-activation wrapper is Python). When the count has no
instruction count (``count(..., python=False)``, a module in training mode) ``Y`` is its
ops times the chains' median instructions per op, and the prediction says so
(``python_estimated``). A profile without the instruction's cost (synthetic, or cached
before it was measured) uses ``module_overhead_s`` per module that ran ops instead, with
``Y * python_opcode_s`` replaced by that product in the fit below. ``s``, ``s_mm``, ``c``
and ``b`` are fitted (robust least squares: soft-L1 loss on relative errors, so that a chain
disturbed by another process does not drag the fit; 1 <= s, s_mm <= 4, 0 <= c <= 50 us,
0 <= b <= 1 s/GB) on the profile's synthetic chains:
T_chain - Y_chain * python_opcode_s = s * sum(t of other ops) + s_mm * sum(t of matmuls and
attention) + c * ops + b * sum(A) + e * k_chain * sum(t of memory-class ops), 0 <= e <= 4
(T_chain: the chain's median in its least-disturbed round, as a model is scored by its
median in its least-disturbed pass; the single-op cases use their fastest block). ``b`` is the cost
of handing data from op to op: an op repeated alone finds its input in its own
threads' caches, in a model the input was just written by another op, partitioned
across the threads another way. With fewer than 4 chains, or no cold chain with
memory-class ops, e = 0; with fewer than 3, b = 0 too; with fewer than 2, s = 1 and c = 0;
``s_mm`` is fitted apart only on a calibrated profile with at least 5 chains, some with
matmuls or attention and some without (else ``s_mm = s``).
The calibration cases are single ops on a fixed grid (``flopgap.machine._grid``),
never the models being predicted. With no calibration (a synthetic or CUDA profile)
every op uses the roofline term.

**The interval** (:class:`Interval`, 90% by default) around the prediction ``P`` is::

    [P * exp(q_lo - d_cal - d_ext),  P * exp(q_hi + d_cal + d_ext)]

- ``q_lo, q_hi``: the method's own error, the 5th and 95th percentiles of
  ``log(measured / predicted)`` of the profile's chains, each predicted by a sequence
  fit made *without* it (leave-one-out; computed from the profile on this machine),
  widened to at least the shipped held-out error distribution when one ships with
  the code (:data:`METHOD_ERROR`, with its provenance);
- ``d_cal``: the calibration's noise: 1.645 x the root sum of squares of each op's
  share of ``P`` times ``log(1 + spread)`` of the cases it was predicted from (their
  blocks' median over their fastest);
- ``d_ext``: the extrapolated ops' share of ``P`` times ``log(EXTRAPOLATION_FACTOR)``:
  ops predicted by a fallback (no calibration model of their own) or from cases far
  from their shape (:data:`FAR_LOG2`), listed in ``Prediction.extrapolated``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from flopgap._units import fmt_seconds
from flopgap._summary import summary_html, summary_repr
from flopgap.explain._roofline import classify, op_dtype
from flopgap.machine import cold_share as _cold_share
from flopgap.machine import (GATHER, CalKey, chain_reference_s, channels, gather_run, is_conv, itemsize,
                             model_is_cold, op_features, op_key, pool_keeps_size, pool_window, weight_bytes)

__all__ = ["Prediction", "PredictionCheck", "Interval", "predict", "Predictor", "PREDICT_SCHEMA", "METHOD_ERROR"]

PREDICT_SCHEMA = "flopgap.predict/3"  # 2: interval, extrapolated ops, typed keys; 3: sequence_fit.matmul_scale
_K = 4
# s >= 1: a chain's median cannot beat its ops' fastest single-op blocks; a fit below 1
# only says the single ops were timed in a slower spell than the chains
_SCALE_MIN, _SCALE_MAX, _PER_OP_MAX_US = 1.0, 4.0, 50.0
_PER_GB_MAX_S = 1.0  # handoff at no less than 1 GB/s
_COLD_MEMORY_MAX = 4.0
# kernels that run at their FLOP rate: dense and grouped convs, matmuls (float and int8)
# and fused attention (its two matmuls; a ViT-tiny's attention alone: 212 us, as a
# memory-class op of a cold model: 429 us predicted, profiled inside the model: 231 us)
_DENSE_KEYS = ("conv:dense", "conv:grouped", "matmul", "matmul:int8", "attention")
# float matmuls and fused attention slow down more in a sequence than the other ops (a
# linear repeated alone keeps its weight in the core's caches): their own in-sequence
# scale s_mm; one shared s under-fits the linear-heavy chains and over-fits the conv ones
# (docs/predict.md, "In sequence")
MATMUL_SCALE_KEYS = ("matmul", "attention")
_MEMORY_FAMILIES = ("pointwise", "norm", "pool", "softmax", "reduction", "data-movement", "embedding", "uncovered")
_ADD = CalKey("aten.add.Tensor")
_GATHER = CalKey(GATHER)
_CLONE = CalKey("aten.clone.default")
_FLATTEN = CalKey("aten.flatten.using_ints")

# features equal to this (log2 units): the op's own shape was calibrated (a convolution's,
# linear layer's or fused attention's own case, flopgap.machine._grid.exact_case), and its
# rate is used alone
_EXACT = 1e-9
# an op whose nearest calibrated case is more than a factor 2 away in one shape
# dimension (or sqrt 2 in two) is extrapolated: the k-NN rate is then a neighbour's rate
FAR_LOG2 = 1.0
# a curve op more than 2x beyond its calibrated bytes (or channels) is extrapolated
CURVE_FAR = 2.0
# an extrapolated op (a fallback, or far from its cases) can be off by this factor either
# way: uncalibrated elementwise ops on the add curve ran 0.5-2x their own time
EXTRAPOLATION_FACTOR = 2.0
INTERVAL_LEVEL = 0.90
_Z90 = 1.645          # two-sided 90% normal quantile, for the calibration-noise term
# with fewer chains than this, the leave-one-out quantiles say little: +-25% stands in
_MIN_LOO_CHAINS = 5
_DEFAULT_LOG_ERR = math.log(1.25)



def _shipped_method_error() -> dict | None:
    """The method's error on held-out models, shipped with the code: the 5th and 95th
    percentiles of log(measured / predicted) on the development set of
    ``benchmarks/heldout.py``, written by ``benchmarks/predict_accuracy.py
    --write-method-error`` from a run with no disturbed model (``method_error.json``
    beside this file, with its provenance). None when no such file ships: the interval
    then rests on the profile's own chains alone."""
    try:
        d = json.loads(Path(__file__).with_name("method_error.json").read_text())
        return {"q_lo": float(d["q_lo"]), "q_hi": float(d["q_hi"]), "provenance": str(d["provenance"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


METHOD_ERROR: dict | None = _shipped_method_error()


@dataclass(frozen=True)
class Interval:
    """A stated interval of the predicted latency and what it is made of (see the
    module docstring): ``low_s``/``high_s`` at ``level``, the method's error quantiles
    ``q_lo``/``q_hi`` (log) and where they come from, the calibration-noise and
    extrapolation terms (log)."""

    low_s: float
    high_s: float
    level: float
    q_lo: float
    q_hi: float
    method_source: str
    calibration_log: float
    extrapolation_log: float

    def contains(self, seconds: float) -> bool:
        return self.low_s <= seconds <= self.high_s

    def to_dict(self) -> dict:
        return {"low_s": self.low_s, "high_s": self.high_s, "level": self.level,
                "method_error": {"q_lo": self.q_lo, "q_hi": self.q_hi, "source": self.method_source},
                "calibration_noise_log": self.calibration_log, "extrapolation_log": self.extrapolation_log}


@dataclass
class Prediction:
    model: str
    latency_s: float
    roofline_s: float
    module_overhead_s: float
    module_calls: int
    ops: list[dict]
    profile: dict = field(default_factory=dict)
    calibrated: bool = True
    scale: float = 1.0
    matmul_scale: float = 1.0   # s_mm: the in-sequence scale of float matmuls and fused attention
    per_op_s: float = 0.0
    per_byte_s: float = 0.0
    cold_memory_extra: float = 0.0
    cold: bool = False  # the model's footprint exceeds half the last-level cache (weights_are_cold)
    chain_fit: list[dict] = field(default_factory=list)
    interval: Interval | None = None
    profile_warnings: list[str] = field(default_factory=list)  # the machine profile's own caveats
    python_s: float = 0.0                 # the model's Python: instructions x seconds per instruction
    python_opcodes: int | None = None     # None: the profile prices module calls instead
    python_estimated: bool = False        # instructions estimated from the op count (not counted)

    __repr__ = summary_repr
    _repr_html_ = summary_html

    @property
    def warnings(self) -> list[str]:
        """What the prediction stands on less than a calibrated profile measured at rest."""
        out = list(self.profile_warnings)
        if not self.calibrated:
            out.append("no calibration in the machine profile: per-op floors (roofline, or the host's cost of a tiny "
                       "op of the family)" + (" with the chain fit" if self.chain_fit else " only"))
        if self.python_opcodes is None and self.profile.get("python_opcode_s"):
            out.append("the machine profile's chains lack instruction counts: the model's Python priced per module "
                       "call instead (`--refresh-machine` measures them again)")
        if self.python_estimated:
            out.append("the model's Python was not counted (a stateful or training-mode forward): its bytecode "
                       "instructions estimated from its op count")
        return out

    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        iv = (f" (90% interval {fmt_seconds(self.interval.low_s)} .. {fmt_seconds(self.interval.high_s)})"
              if self.interval is not None else "")
        return self.model, [("predicted", fmt_seconds(self.latency_s) + iv + " (never timed)"),
                            ("roofline sum", fmt_seconds(self.roofline_s)), ("ops", str(len(self.ops))),
                            ("calibrated", "yes" if self.calibrated else "no"), ("threads", str(self.threads))]

    @property
    def threads(self) -> int | None:
        """The thread count of the machine profile this prediction stands on."""
        return (self.profile.get("fingerprint") or {}).get("threads") if isinstance(self.profile, dict) else None

    @property
    def extrapolated(self) -> list[dict]:
        """The ops predicted outside the calibrated region (or by a fallback), largest first."""
        rows = [{"index": o["index"], "op": o["op"], "module": o["module"], "key": o["key"], "method": o["method"],
                 "why": o["extrapolated"], "predicted_s": o["predicted_s"]} for o in self.ops if o.get("extrapolated")]
        return sorted(rows, key=lambda r: -r["predicted_s"])

    @property
    def extrapolated_share(self) -> float:
        return sum(r["predicted_s"] for r in self.extrapolated) / self.latency_s if self.latency_s else 0.0

    def by_method(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for o in self.ops:
            row = out.setdefault(o["method"], {"ops": 0, "predicted_s": 0.0})
            row["ops"] += 1
            row["predicted_s"] += o["predicted_s"]
        return out

    def to_dict(self) -> dict:
        return {"schema": PREDICT_SCHEMA, "model": self.model, "latency_s": self.latency_s,
                "interval": self.interval.to_dict() if self.interval else None,
                "roofline_s": self.roofline_s, "module_overhead_s": self.module_overhead_s,
                "module_calls": self.module_calls, "python_s": self.python_s, "python_opcodes": self.python_opcodes,
                "python_estimated": self.python_estimated, "calibrated": self.calibrated, "threads": self.threads,
                "extrapolated": self.extrapolated, "extrapolated_share": self.extrapolated_share,
                "warnings": list(self.warnings),
                "sequence_fit": {"scale": self.scale, "matmul_scale": self.matmul_scale, "per_op_s": self.per_op_s,
                                 "per_byte_s": self.per_byte_s,
                                 "cold_memory_extra": self.cold_memory_extra, "cold_model": self.cold,
                                 "chains": self.chain_fit},
                "by_method": self.by_method(), "ops": self.ops, "machine": self.profile}


@dataclass(frozen=True)
class PredictionCheck:
    """A prediction held against a rigorous measurement of the same model.

    ``error`` (predicted / measured - 1) exists only when the measurement can bear it:
    a CI exists (6 samples or more), the machine was not disturbed, and the timing ran
    with the thread count the prediction's profile was measured for; otherwise
    ``reason`` says why it is left out. ``inside`` says whether the measured median
    lies in the prediction's interval (same conditions)."""

    predicted_s: float
    predicted_threads: int | None
    measurement: object  # flopgap.timing.Measurement
    interval: Interval | None = None

    @property
    def reason(self) -> str:
        m = self.measurement
        if m.disturbed:
            return m.disturbance.summary
        if not math.isfinite(m.ci_low):
            return f"only {m.n_samples} sample(s): no CI to compare against"
        if self.predicted_threads is not None and m.spec.threads != self.predicted_threads:
            return (f"timed with {m.spec.threads} threads, predicted for {self.predicted_threads}: "
                    "not the same setting")
        return ""

    @property
    def error(self) -> float | None:
        return None if self.reason else self.predicted_s / self.measurement.median - 1.0

    @property
    def inside(self) -> bool | None:
        if self.reason or self.interval is None:
            return None
        return self.interval.contains(self.measurement.median)

    @classmethod
    def of(cls, prediction: "Prediction", measurement) -> "PredictionCheck":
        return cls(prediction.latency_s, prediction.threads, measurement, prediction.interval)

    def to_dict(self) -> dict:
        d = self.measurement.to_dict()
        return {"predicted_s": self.predicted_s, "predicted_threads": self.predicted_threads,
                "error": self.error, "inside_interval": self.inside, "error_left_out_because": self.reason or None,
                "measurement": {k: v for k, v in d.items() if k not in ("samples", "warmup_samples",
                                                                       "dispatch_samples", "device_samples")}}


@dataclass(frozen=True)
class _Knn:
    overhead: float
    feats: np.ndarray
    log_rates: np.ndarray
    log_spread: np.ndarray


@dataclass(frozen=True)
class _Curve:
    log_bytes: np.ndarray
    log_seconds: np.ndarray
    log_spread: float


class Predictor:
    """Per-op time model fitted on a profile's calibration cases."""

    def __init__(self, profile):
        self.profile = profile
        self.knn: dict[CalKey, _Knn] = {}
        self.curves: dict[CalKey, dict[float, _Curve]] = {}   # key -> {log2 channels: curve}
        by_key: dict[CalKey, list] = {}
        for s in profile.calibration:   # in grid order: k-NN ties break the same lazily or in full
            by_key.setdefault(s.key, []).append(s)
        for key, rows in by_key.items():
            if key.shape_model:
                # the fixed cost: the time of the key's case of fewest FLOPs (the same case
                # whether the profile is lazy or full, see flopgap.machine._grid.cases_for)
                overhead = min(rows, key=lambda r: r.flops).seconds
                feats = np.array([r.features for r in rows], dtype=float)
                rates = np.array([r.flops / max(r.seconds - overhead, 0.1 * r.seconds) for r in rows])
                self.knn[key] = _Knn(overhead, feats, np.log(np.maximum(rates, 1.0)),
                                     np.log1p(np.array([max(r.spread, 0.0) for r in rows])))
            else:
                # an op whose time depends on bytes alone (elementwise, layer norm ...) was
                # calibrated at two base widths only: one curve over all of its cases
                per_channel = any(r.per_channel for r in rows)
                by_c: dict[float, list] = {}
                for r in rows:
                    c = r.features[1] if per_channel and len(r.features) > 1 else 0.0
                    by_c.setdefault(c, []).append((max(r.bytes, 1), r.seconds, max(r.spread, 0.0)))
                curves = {}
                for c, pts in by_c.items():
                    if len(pts) < 2:
                        continue  # one point is no curve
                    pts.sort()
                    curves[c] = _Curve(np.log(np.array([p[0] for p in pts], dtype=float)),
                                       np.log(np.array([p[1] for p in pts], dtype=float)),
                                       float(np.mean(np.log1p([p[2] for p in pts]))))
                if curves:
                    self.curves[key] = curves
        flat = self.curves.get(_FLATTEN)
        self.view_s = (float(np.exp(np.median(np.concatenate([v.log_seconds for v in flat.values()]))))
                       if flat is not None else None)
        self.scale, self.per_op_s, self.per_byte_s, self.cold_memory_extra = 1.0, 0.0, 0.0, 0.0
        self.matmul_scale = 1.0
        # the model's Python priced per bytecode instruction when the profile measured the
        # instruction and counted its chains' instructions; else per module call
        k = getattr(profile, "python_opcode_s", None)
        self.python_opcode_s = k if k and profile.chains and all(c.get("python_opcodes") for c in profile.chains) \
            else None
        self._rows = self._chain_rows(profile.chains)
        # a count without instructions gets the chains' median per non-free op
        per_op = [c["python_opcodes"] / max(1, row[2]) for c, row in zip(profile.chains, self._rows)] \
            if self.python_opcode_s else []
        self.opcodes_per_op = float(np.median(per_op)) if per_op else 0.0
        self.chain_fit = self._fit_chains()
        self.loo_log_errors = self._leave_one_out()

    # ------------------------------------------------------------ in-sequence fit
    def _chain_rows(self, chains: list[dict]) -> list[tuple]:
        from flopgap.count import OpRecord

        rows = []
        for ch in chains:
            recs = [OpRecord(**d) for d in ch["ops"]]
            share = cold_share(recs, self.profile)
            times = [self.op_time(r, share)[0] if self.calibrated else self.uncalibrated_time(r)[0] for r in recs]
            p = sum(times)
            pm = sum(t for r, t in zip(recs, times) if uses_matmul_scale(r))
            m = share * sum(t for r, t in zip(recs, times) if is_memory_class(r))
            n = sum(1 for r in recs if not r.is_free)
            a = sum(handoff_bytes(r) for r in recs)
            # the chain's median in its least-disturbed round: a model is scored by its
            # median in its least-disturbed pass, and the single ops by their fastest
            # block, so that all three describe this machine undisturbed
            t = chain_reference_s(ch)
            target = t - (ch["python_opcodes"] * self.python_opcode_s if self.python_opcode_s
                          else ch["module_calls"] * self.profile.module_overhead_s)
            rows.append((ch["label"], p, n, a, m, target, t, pm))
        return rows

    def _solve(self, rows: list[tuple]) -> tuple[float, float, float, float, float]:
        """(s, c, b, e, s_mm) fitted on ``rows`` (identity with fewer than 2 chains)."""
        if len(rows) < 2:
            return 1.0, 0.0, 0.0, 0.0, 1.0
        p_ = np.array([r[1] for r in rows])
        pm_ = np.array([r[7] for r in rows])
        n_ = np.array([r[2] for r in rows], dtype=float)
        a_ = np.array([r[3] for r in rows], dtype=float)
        m_ = np.array([r[4] for r in rows])
        tg = np.maximum(np.array([r[5] for r in rows]), 1e-9)
        # each extra term needs one more chain (and, for the last, a cold chain with
        # memory-class ops) to be told apart from the others; without a calibration
        # (CUDA) the per-op times are floors (roofline, host cost of a tiny op): s and c only
        b_max = _PER_GB_MAX_S if len(rows) >= 3 and self.calibrated else 0.0
        e_max = _COLD_MEMORY_MAX if len(rows) >= 4 and m_.any() and self.calibrated else 0.0
        # s_mm apart: one more chain again, and chains with and without matmuls to tell them apart
        split = len(rows) >= 5 and self.calibrated and bool((pm_ > 0).any()) and bool((pm_ < p_).any())

        def resid(x):  # relative error of each chain; c in us and b in s/GB for conditioning
            s_mm = x[4] if split else x[0]
            return (x[0] * (p_ - pm_) + s_mm * pm_ + x[1] * 1e-6 * n_ + x[2] * 1e-9 * a_ + x[3] * m_ - tg) / tg

        fit = least_squares(resid, x0=[1.0, 0.0, 0.0, 0.0, 1.0],
                            bounds=([_SCALE_MIN, 0.0, 0.0, 0.0, _SCALE_MIN],
                                    [_SCALE_MAX, _PER_OP_MAX_US, max(b_max, 1e-12), max(e_max, 1e-12),
                                     _SCALE_MAX if split else _SCALE_MIN + 1e-12]),
                            loss="soft_l1", f_scale=0.1, xtol=1e-12, ftol=1e-12, gtol=1e-12)
        # sub-nanosecond per-op terms (and sub-1e-15 s per byte) are solver round-off of a zero bound
        return (float(fit.x[0]), round(float(fit.x[1]) * 1e-6, 12),
                round(float(fit.x[2]) * 1e-9, 15) if b_max else 0.0, round(float(fit.x[3]), 9) if e_max else 0.0,
                float(fit.x[4]) if split else float(fit.x[0]))

    @staticmethod
    def fitted(params: tuple, row: tuple) -> float:
        """A chain's time under the fit ``params`` (:meth:`_solve`'s tuple), its Python included."""
        s, c, b, e, s_mm = params
        _, p, n, a, m, tg, t, pm = row
        return s * (p - pm) + s_mm * pm + c * n + b * a + e * m + (t - tg)

    def _fit_chains(self) -> list[dict]:
        params = self._solve(self._rows)
        self.scale, self.per_op_s, self.per_byte_s, self.cold_memory_extra, self.matmul_scale = params
        return [{"label": row[0], "per_op_sum_s": row[1], "matmul_sum_s": row[7], "ops": row[2],
                 "handoff_bytes": row[3], "cold_memory_s": row[4], "measured_s": row[6],
                 "fitted_s": self.fitted(params, row)}
                for row in self._rows]

    def _leave_one_out(self) -> list[float]:
        """log(measured / predicted) of each chain under a fit made without it."""
        if len(self._rows) < _MIN_LOO_CHAINS:
            return []
        out = []
        for i, row in enumerate(self._rows):
            pred, t = self.fitted(self._solve(self._rows[:i] + self._rows[i + 1:]), row), row[6]
            if pred > 0 and t > 0:
                out.append(math.log(t / pred))
        return out

    def method_error(self) -> tuple[float, float, str]:
        """(q_lo, q_hi, source) of log(measured / predicted) at the interval's level."""
        lo_q, hi_q = (1 - INTERVAL_LEVEL) / 2, 1 - (1 - INTERVAL_LEVEL) / 2
        sources = []
        if len(self.loo_log_errors) >= _MIN_LOO_CHAINS:
            q_lo, q_hi = (float(np.quantile(self.loo_log_errors, lo_q)), float(np.quantile(self.loo_log_errors, hi_q)))
            sources.append(f"leave-one-out over this profile's {len(self.loo_log_errors)} chains")
        else:
            q_lo, q_hi = -_DEFAULT_LOG_ERR, _DEFAULT_LOG_ERR
            sources.append(f"+-{math.exp(_DEFAULT_LOG_ERR) - 1:.0%} (fewer than {_MIN_LOO_CHAINS} chains)")
        if METHOD_ERROR is not None:
            q_lo, q_hi = min(q_lo, METHOD_ERROR["q_lo"]), max(q_hi, METHOD_ERROR["q_hi"])
            sources.append(f"at least the held-out error shipped with the code ({METHOD_ERROR['provenance']})")
        return min(q_lo, 0.0), max(q_hi, 0.0), "; ".join(sources)

    @property
    def calibrated(self) -> bool:
        return bool(self.knn or self.curves)

    # ------------------------------------------------------------ per-op models
    def _knn(self, key: CalKey, feats: list[float], flops: float, weight_bytes: int = 0,
             cold_weights: bool = False) -> tuple[float, float, str, bool]:
        """(seconds, log spread of the cases used, why extrapolated or '', own): ``own`` when
        this very shape was calibrated (its rate is then that case's alone, and the case's
        time holds all the op pays per call, page faults too)."""
        m = self.knn[key]
        d = np.sqrt(((m.feats - np.asarray(feats)) ** 2).sum(axis=1))
        order = np.argsort(d, kind="stable")[:_K]
        own = bool(d[order[0]] < _EXACT)
        if own:   # its own rate, not its neighbours'
            order = order[:1]
        w = 1.0 / (d[order] + 0.25) ** 2
        rate = math.exp(float((w * m.log_rates[order]).sum() / w.sum()))
        cold = (weight_bytes / self.profile.mem_bandwidth
                if cold_weights and weight_bytes > self.profile.l2_bytes else 0.0)
        far = float(d[order[0]])
        why = f"nearest calibrated shape {far:.1f} log2 units away" if far > FAR_LOG2 else ""
        return m.overhead + max(flops / rate, cold), float((w * m.log_spread[order]).sum() / w.sum()), why, own

    @staticmethod
    def _on_curve(curve: _Curve, nbytes: float) -> float:
        xs, ys = curve.log_bytes, curve.log_seconds
        x = math.log(max(nbytes, 1.0))
        if x >= xs[-1]:
            return math.exp(ys[-1]) * max(nbytes, 1.0) / math.exp(xs[-1])
        return math.exp(float(np.interp(x, xs, ys)))

    def _curve_time(self, key: CalKey, nbytes: float, log2_channels: float | None = None) -> float:
        """Time at ``nbytes`` on the op's curve; with several channel counts calibrated,
        log-linear between the two curves of nearest channel count (clamped at the ends)."""
        curves = self.curves[key]
        cs = sorted(curves)
        if log2_channels is None or len(cs) == 1:
            c = cs[0] if log2_channels is None else min(cs, key=lambda v: abs(v - log2_channels))
            return self._on_curve(curves[c], nbytes)
        if log2_channels <= cs[0]:
            return self._on_curve(curves[cs[0]], nbytes)
        if log2_channels >= cs[-1]:
            return self._on_curve(curves[cs[-1]], nbytes)
        hi = next(i for i, c in enumerate(cs) if c >= log2_channels)
        c0, c1 = cs[hi - 1], cs[hi]
        w = (log2_channels - c0) / (c1 - c0)
        t0, t1 = self._on_curve(curves[c0], nbytes), self._on_curve(curves[c1], nbytes)
        return math.exp((1 - w) * math.log(t0) + w * math.log(t1))

    def _curve_far(self, key: CalKey, nbytes: float, log2_channels: float) -> str:
        """Why an op lies beyond its curve's calibrated region ('' when inside)."""
        curves = self.curves[key]
        lo = min(float(c.log_bytes[0]) for c in curves.values())
        hi = max(float(c.log_bytes[-1]) for c in curves.values())
        x = math.log(max(nbytes, 1.0))
        if x > hi + math.log(CURVE_FAR) or x < lo - math.log(CURVE_FAR):
            return f"{nbytes / 1e6:.3g} MB outside the calibrated {math.exp(lo) / 1e6:.3g}-{math.exp(hi) / 1e6:.3g} MB"
        cs = sorted(curves)
        if len(cs) > 1 and (log2_channels > cs[-1] + math.log2(CURVE_FAR) or log2_channels < cs[0] - math.log2(CURVE_FAR)):
            return f"{2 ** log2_channels:.0f} channels outside the calibrated {2 ** cs[0]:.0f}-{2 ** cs[-1]:.0f}"
        return ""

    def _nearest_window(self, r) -> CalKey | None:
        w = pool_window(r)
        if w is None:
            return None
        keys = [k for k in self.curves if k.name == r.op and k.window]
        # the same stride class when calibrated (a profile without stride-1 cases: the others)
        same = [k for k in keys if k.stride1 == pool_keeps_size(r)] or keys
        if not same:
            return None
        return min(same, key=lambda k: abs(math.log(k.window / w)))

    def uncalibrated_time(self, r) -> tuple[float, str]:
        """(seconds, method) of an op on a profile without calibration (CUDA, synthetic):
        the roofline, floored by the host's measured cost of a tiny op of its family
        (CUDA: ``op_overhead_s``); free ops their roofline (0)."""
        roof = 0.0 if r.is_free else classify(r.flops, r.bytes, self.profile, op_dtype(r)).time
        if r.is_free:
            return roof, "free"
        floor = self.profile.op_overhead_s.get(r.family, 0.0)
        if floor > roof:
            return floor, "op overhead"   # CUDA: the host's cost per op
        return roof, "roofline"

    def op_time(self, r, cold_weights: float = 0.0) -> tuple[float, str]:
        """(seconds, method) for one count record; ``cold_weights``: the model's
        :func:`cold_share` (``True``: wholly cold), how much of the weights' last-level
        cache residency its footprint takes away."""
        t, method, _, _ = self.op_detail(r, cold_weights)
        return t, method

    def op_detail(self, r, cold_weights: float = 0.0) -> tuple[float, str, float, str]:
        """(seconds, method, log spread of the cases used, why extrapolated or ''). A
        conv or matmul of a partly cold model (``0 < cold_weights < 1``) takes its hot and
        cold-weight times weighed by the share. A memory op that reads a scattered input
        (:func:`~flopgap.machine.gather_run`; an add of a transposed tensor to a
        contiguous one) adds what gathering that input costs beyond copying it in order
        (:meth:`gather_extra`); a copy that gathers is priced on the gather curves itself."""
        t, method, spread, why = self._op_detail(r, cold_weights)
        extra = self.gather_extra(r)
        if extra > 0:
            return t + extra, method + "+gather", spread, why
        return t, method, spread, why

    def gather_extra(self, r) -> float:
        """Seconds a memory op pays for reading its most scattered input in runs of
        ``gather_run(r)`` elements rather than in order: the gather curve's time at that
        run less the clone curve's time, both at the bytes a copy of its output moves; 0
        for an op read in order, a copy (its key is the gather itself), a conv, matmul or
        attention (shape models: their kernels pack their operands themselves), or a
        profile without the two curves."""
        run = gather_run(r)
        key = op_key(r)
        if run is None or key.name == GATHER or key.shape_model or _GATHER not in self.curves \
                or _CLONE not in self.curves:
            return 0.0
        out = r.output_shapes[0] if r.output_shapes and r.output_shapes[0] else None
        if not out or not all(isinstance(d, int) for d in out):
            return 0.0
        dtype = r.input_dtypes[0] if r.input_dtypes else ""
        nbytes = 2 * math.prod(out) * itemsize(dtype)
        return max(0.0, self._curve_time(_GATHER, nbytes, math.log2(run)) - self._curve_time(_CLONE, nbytes))

    def _op_detail(self, r, cold_weights: float = 0.0) -> tuple[float, str, float, str]:
        share = float(cold_weights)
        key = op_key(r)
        fallback = ""
        if key.ragged and key not in self.knn:  # a profile without ragged cases
            key, fallback = key.aligned(), "no ragged-channel cases: the aligned ones"
        if share > 0 and key.as_cold() in self.knn and r.flops > 0:
            t, sp, why, own = self._knn(key.as_cold(), op_features(r), r.flops)
            if share < 1 and key in self.knn:
                t_hot, sp_hot, why_hot, own_hot = self._knn(key, op_features(r), r.flops)
                t, sp, why, own = share * t + (1 - share) * t_hot, max(sp, sp_hot), why or why_hot, own and own_hot
            return t, f"{'own' if own else 'knn'}:{key.as_cold()}", sp, why or fallback
        if key in self.knn and r.flops > 0:
            t, sp, why, own = self._knn(key, op_features(r), r.flops, weight_bytes(r), cold_weights)
            return t, f"{'own' if own else 'knn'}:{key}", sp, why or fallback
        if key in self.curves:
            c = op_features(r)[1]
            t = self._curve_time(key, r.bytes, c)
            return t, "curve", self._curve_spread(key), self._curve_far(key, r.bytes, c)
        near = self._nearest_window(r)
        if near is not None:  # a pool window that was not calibrated: the nearest one that was
            return (self._curve_time(near, r.bytes, op_features(r)[1]), f"curve:{near}", self._curve_spread(near),
                    f"window {pool_window(r)} not calibrated: the {near.window}-element one")
        if r.is_free:
            if self.view_s is not None:
                return self.view_s, "view", 0.0, ""
            return 0.0, "free", 0.0, ""
        if r.family in _MEMORY_FAMILIES and _ADD in self.curves:
            c = math.log2(max(channels(r), 1))
            return (self._curve_time(_ADD, r.bytes, c), "curve:add", self._curve_spread(_ADD),
                    "not calibrated: the add curve at its bytes")
        return (classify(r.flops, r.bytes, self.profile, op_dtype(r)).time, "roofline", 0.0,
                "not calibrated: the roofline")

    def _curve_spread(self, key: CalKey) -> float:
        return float(np.mean([c.log_spread for c in self.curves[key].values()]))


_MMAP_MAX = 32 * 2**20  # glibc's largest mmap threshold (64-bit): larger blocks always get fresh pages


def fault_s(r, profile) -> float:
    """Seconds of minor page faults an op pays on every call, whatever the allocator's
    state: glibc serves each block above 32 MiB (its largest mmap threshold) with fresh
    pages, one fault per 4 KiB; such blocks are the op's outputs of that size, and for a
    convolution its weight, which oneDNN reorders into a temporary block on every call
    (a 1024x1024x3x3 conv: 36 MiB, 9,217 faults per call, measured)."""
    if not profile.page_fault_s:
        return 0.0
    out = _allocated_bytes(r)
    big = out if out > _MMAP_MAX else 0
    w = weight_bytes(r) if is_conv(r) else 0
    if w > _MMAP_MAX:
        big += w
    return big / 4096 * profile.page_fault_s


def _allocated_bytes(r) -> int:
    """Bytes an op allocates for its result: what it writes, unless it is free (a view)
    or in place (``aten.relu_``: it writes into its input)."""
    parts = r.op.split(".")
    if r.is_free or (len(parts) > 1 and parts[1].endswith("_")):
        return 0
    return r.bytes_written


def uses_matmul_scale(r) -> bool:
    """A float matmul or fused attention (:data:`MATMUL_SCALE_KEYS`): scaled by ``s_mm``."""
    return not r.is_free and op_key(r).name in MATMUL_SCALE_KEYS


def is_memory_class(r) -> bool:
    """An op that runs at memory or overhead speed, not at a dense kernel's FLOP rate:
    not free, not a pool, and not a dense or grouped conv, a matmul or a fused attention
    (depthwise convs, norms, activations, adds ...). In a model that streams more than the cache per
    call, such ops lose most to evicted code, parameters and buffers: streaming 32 MB
    between two calls made a batch norm 2.5-3.5x and a depthwise conv 2.5x slower, a
    1x1 conv 1.35-1.5x (one thread). Pools are left out: profiled inside models, max
    and average pools took 1.00-1.02x their single-op time (their kernels, not memory,
    set their pace)."""
    return not r.is_free and r.family != "pool" and op_key(r).name not in _DENSE_KEYS


def handoff_bytes(r) -> int:
    """Bytes of activations an op reads: what it reads less its weight (0 for free ops).
    In a model these were just written by other ops, on other threads' cores and in
    other layouts; an op repeated alone finds its input where it left it. 0 for pools,
    which ran at their single-op time inside models (see :func:`is_memory_class`)."""
    return 0 if r.is_free or r.family == "pool" else max(r.bytes_read - weight_bytes(r), 0)


def cold_share(records, profile) -> float:
    """How much of its data a model finds evicted between calls
    (:func:`flopgap.machine.cold_share` on the profile's last-level cache): 0 at a
    footprint of half the cache or less (:func:`weights_are_cold` false), 1 from
    ``FULLY_COLD`` caches on, linear between."""
    return _cold_share(records, profile.llc_bytes)


def weights_are_cold(records, profile) -> bool:
    """The model's footprint per call exceeds half the last-level cache
    (:func:`flopgap.machine._keys.model_is_cold` on the profile's cache size)."""
    return model_is_cold(records, profile.llc_bytes)


def _module_calls(count_result) -> int:
    return sum(1 for m in count_result.modules if m.ops_all > 0)


def predict(count_result, profile) -> Prediction:
    """Predicted latency (seconds per call) of the counted model on ``profile``'s machine,
    with its interval and the ops it extrapolates."""
    pred = Predictor(profile)
    share = cold_share(count_result.ops, profile)
    cold = share > 0   # weights_are_cold, from the same footprint
    ops = []
    total = roof_total = 0.0
    spreads = []
    for r in count_result.ops:
        key = op_key(r)
        roof = 0.0 if r.is_free else classify(r.flops, r.bytes, profile, op_dtype(r)).time
        if pred.calibrated:
            t, method, spread, why = pred.op_detail(r, share)
        else:
            (t, method), spread, why = pred.uncalibrated_time(r), 0.0, ""
        # an op timed at its own shape paid its page faults in its case already
        faults = 0.0 if method.startswith("own:") else fault_s(r, profile)
        # the in-sequence terms (identity without chains: s = 1, c = b = e = 0); a free op
        # (a view: its dispatch only) is scaled, nothing more
        if r.is_free:
            t = pred.scale * t
        else:
            extra = pred.cold_memory_extra * share * t if is_memory_class(r) else 0.0
            scale = pred.matmul_scale if key.name in MATMUL_SCALE_KEYS else pred.scale
            t = scale * t + extra + pred.per_op_s + pred.per_byte_s * handoff_bytes(r)
        t += faults
        total += t
        roof_total += roof
        spreads.append((t, spread))
        ops.append({"index": r.index, "op": r.op, "module": r.module, "key": str(key), "method": method,
                    "predicted_s": t, "roofline_s": roof, "page_faults_s": faults, "extrapolated": why or None})
    calls = _module_calls(count_result)
    opcodes, estimated, py_s = None, False, 0.0
    if pred.python_opcode_s:
        opcodes = getattr(count_result, "python_opcodes", None)
        if not opcodes:   # not counted (or a count of 0, which no forward through a module has)
            opcodes, estimated = round(pred.opcodes_per_op * sum(1 for r in count_result.ops if not r.is_free)), True
        py_s = opcodes * pred.python_opcode_s
        mod_s = 0.0
    else:
        mod_s = calls * profile.module_overhead_s
    latency = total + mod_s + py_s
    out = Prediction(count_result.model, latency, roof_total, mod_s, calls, ops,
                     {"fingerprint": profile.fingerprint, "quick": profile.quick, "source": profile.source,
                      "python_opcode_s": getattr(profile, "python_opcode_s", None)},
                     calibrated=pred.calibrated, scale=pred.scale, matmul_scale=pred.matmul_scale,
                     per_op_s=pred.per_op_s,
                     per_byte_s=pred.per_byte_s, cold_memory_extra=pred.cold_memory_extra, cold=cold,
                     chain_fit=pred.chain_fit, profile_warnings=list(profile.warnings), python_s=py_s,
                     python_opcodes=opcodes, python_estimated=estimated)
    if latency > 0:
        q_lo, q_hi, source = pred.method_error()
        cal = _Z90 * math.sqrt(sum((t / latency * s) ** 2 for t, s in spreads))
        ext = out.extrapolated_share * math.log(EXTRAPOLATION_FACTOR)
        out.interval = Interval(latency * math.exp(q_lo - cal - ext), latency * math.exp(q_hi + cal + ext),
                                INTERVAL_LEVEL, q_lo, q_hi, source, cal, ext)
    return out
