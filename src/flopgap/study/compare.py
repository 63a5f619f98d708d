"""Compare the latencies two results hold: stored runs or JSON files of any command.

What ``flopgap compare A B`` does, in order:

1. **Read** each side (:func:`load_source`): a run id in a results store, or a JSON file
   written by ``--json`` of any command (``time``, ``time --vs``, ``time --processes``,
   ``explain``, ``predict --measure``, ``variants``, ``study ...``). Every latency in it
   is found by its record (a ``flopgap.time/1`` measurement; a variants row) and becomes a
   :class:`Timed`: model, batch, median, CI, samples, thread count, inputs, device,
   precision target, disturbed. A model timed several times in one result (a seed model
   in two pairs) keeps its most precise timing.
2. **Match** the same model at the same batch across the two sides, whatever command
   timed it (a ``time`` run and a study run included).
3. **Refuse** (pyperf's rule: numbers from different settings are not a comparison) when
   a matched pair differs in thread count, inputs (shape, dtype), device or precision
   target, or the two sides ran on different machines (CPU, cores, host, GPU) or torch
   versions: one line naming every difference, exit 2. ``force=True`` compares anyway
   and says what differs first.
4. **Ratio** B / A per model with a 95% CI: a percentile bootstrap of the ratio of
   medians over the two sides' samples resampled independently (the runs were not
   interleaved); where a side kept no samples, the two CIs combined in log space
   (``se = (log hi - log lo) / 3.92`` each, added in quadrature). Flag: *regression*
   when the CI lies wholly above ``1 + threshold``, *improvement* when wholly below
   ``1 / (1 + threshold)``, *no change* otherwise, and *inconclusive (disturbed)* when
   either side was timed on a disturbed machine.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flopgap._summary import summary_html, summary_repr
from flopgap.errors import UsageError
from flopgap.timing import TIME_SCHEMA

__all__ = ["Timed", "Source", "ComparedModel", "Comparison", "load_source", "compare_sources", "FLAGS",
           "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.05  # flag changes beyond 5%: rigorous timing resolves less, but less is rarely worth a flag
FLAGS = ("regression", "improvement", "no change", "inconclusive (disturbed)")
_Z95 = 1.96
_RESAMPLES = 2000


@dataclass(frozen=True)
class Timed:
    """One latency a result holds, with the settings it was taken under."""

    model: str
    batch: int | None
    median: float
    ci_low: float | None
    ci_high: float | None
    n: int | None
    threads: int | None
    inputs: tuple[str, ...] = ()
    device: str | None = "cpu"
    precision: float | None = None
    disturbed: bool = False
    samples: tuple[float, ...] | None = None
    reference_s: tuple[float, ...] | None = None   # the sentinel's reference kernel, per part: the slower reading
    ci_level: float = 0.95   # the confidence of ci_low .. ci_high (fewer than 6 processes: their range, less)

    @property
    def key(self) -> tuple[str, int | None]:
        return self.model, self.batch

    @property
    def settings(self) -> dict:
        return {"threads": self.threads, "inputs": ", ".join(self.inputs) or None, "device": self.device,
                "precision": self.precision}


@dataclass(frozen=True)
class Source:
    """One side of a comparison: where it came from, the machine, and its latencies."""

    label: str
    kind: str
    machine: dict
    timed: tuple[Timed, ...]

    @property
    def machine_identity(self) -> dict:
        m = self.machine or {}
        return {"cpu": m.get("cpu_model") or m.get("cpu"), "cores": m.get("logical_cores") or m.get("cores"),
                "host": m.get("hostname_hash"), "gpu": m.get("gpu"), "torch": m.get("torch")}


@dataclass(frozen=True)
class ComparedModel:
    a: Timed
    b: Timed
    ratio: float
    ci_low: float
    ci_high: float
    flag: str
    ci_method: str

    def to_dict(self) -> dict:
        def side(t: Timed) -> dict:
            return {"median": t.median, "ci_low": t.ci_low, "ci_high": t.ci_high, "n": t.n, "threads": t.threads,
                    "device": t.device, "disturbed": t.disturbed}

        return {"model": self.a.model, "batch": self.a.batch, "a": side(self.a), "b": side(self.b),
                "ratio": self.ratio, "ci_low": self.ci_low, "ci_high": self.ci_high, "flag": self.flag,
                "ci_method": self.ci_method}


@dataclass
class Comparison:
    a: Source
    b: Source
    rows: list[ComparedModel]
    threshold: float
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)   # settings that differ (compared anyway: force)

    __repr__ = summary_repr
    _repr_html_ = summary_html

    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        def ci(r):
            return f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if math.isfinite(r.ci_low) else "[no CI]"

        return f"{self.b.label} / {self.a.label}", [
            (r.a.model + (f" b{r.a.batch}" if r.a.batch is not None else ""), f"{r.ratio:.3f} {ci(r)} {r.flag}")
            for r in self.rows]

    @property
    def regressions(self) -> int:
        return sum(r.flag == "regression" for r in self.rows)

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.differences:
            out.append("compared despite different settings (--force): " + "; ".join(self.differences))
        disturbed = [r.a.model for r in self.rows if r.flag == FLAGS[3]]
        if disturbed:
            out.append(f"{len(disturbed)} model(s) timed on a disturbed machine on one side or both: "
                       f"{', '.join(disturbed)}; no flag rests on them")
        out += [w for w in (machine_drift(r) for r in self.rows) if w]
        return out

    def to_dict(self) -> dict:
        return {"schema": "flopgap.compare/1", "a": {"label": self.a.label, "kind": self.a.kind},
                "b": {"label": self.b.label, "kind": self.b.kind}, "threshold": self.threshold,
                "ratio": "B / A", "rows": [r.to_dict() for r in self.rows], "only_a": self.only_a,
                "only_b": self.only_b, "differences": self.differences, "warnings": self.warnings,
                "regressions": self.regressions}


# ------------------------------------------------------------------------ reading

def _batch(inputs) -> int | None:
    for text in inputs or ():
        head = str(text).split(":", 1)[0].split("=", 1)[-1]
        dims = head.split("x")
        if dims and dims[0].isdigit() and len(dims) > 1:
            return int(dims[0])
    return None


def _from_measurement(d: dict, model: str | None = None, batch: int | None = None) -> Timed | None:
    median = d.get("median")
    if not isinstance(median, (int, float)) or not median > 0:
        return None
    spec = d.get("spec") or {}
    inputs = tuple(spec.get("inputs") or ())
    samples = d.get("samples")
    return Timed(model or spec.get("name") or "model", batch if batch is not None else _batch(inputs), float(median),
                 d.get("ci_low"), d.get("ci_high"), d.get("n_samples"), spec.get("threads"), inputs,
                 spec.get("device") or "cpu", spec.get("precision"), bool(d.get("disturbed")),
                 tuple(samples) if isinstance(samples, list) and samples else None,
                 _reference_s(d.get("disturbance")))


def _reference_s(d) -> tuple[float, ...] | None:
    """Per part, the slower of the reference kernel's readings before and after the run
    (None unless both readings are lists of the same length of positive finite numbers)."""
    if not isinstance(d, dict):
        return None
    readings = [d.get("reference_before_s"), d.get("reference_after_s")]
    if not all(isinstance(r, list) and r and all(_positive(x) for x in r) for r in readings) \
            or len(readings[0]) != len(readings[1]):
        return None
    return tuple(max(float(a), float(b)) for a, b in zip(*readings))


def _positive(v) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v)) and v > 0
    except OverflowError:  # an integer too large for a float
        return False


def _worst(parts: list[tuple[float, ...] | None]) -> tuple[float, ...] | None:
    """Per part, the slowest reading over several timings (None if any lacks one)."""
    if not parts or any(p is None for p in parts) or len({len(p) for p in parts}) != 1:
        return None
    return tuple(max(p[i] for p in parts) for i in range(len(parts[0])))


def _walk(value, out: list[Timed]) -> None:
    """Every flopgap.time/1 measurement inside ``value``, at any depth."""
    if isinstance(value, dict):
        if value.get("schema") == TIME_SCHEMA and value.get("kind", "measurement") == "measurement" and "spec" in value:
            t = _from_measurement(value)
            if t is not None:
                out.append(t)
            return
        for v in value.values():
            _walk(v, out)
    elif isinstance(value, list):
        for v in value:
            _walk(v, out)


def _variants(d: dict) -> list[Timed]:
    out = []
    for r in d.get("rows") or []:
        if not r.get("latency_s"):
            continue
        lo, hi = (r.get("latency_ci") or (None, None))
        out.append(Timed(f"{d.get('model')} [{r['variant']}]", r.get("batch"), float(r["latency_s"]), lo, hi,
                         r.get("n_samples"), r.get("measured_threads"), (), d.get("device") or "cpu",
                         (d.get("settings") or {}).get("precision"), bool(r.get("disturbed"))))
    return out


def _zoo_rows(d: dict) -> list[Timed]:
    out = []
    for r in d.get("rows") or []:
        if isinstance(r.get("median"), (int, float)) and r["median"] > 0:
            out.append(Timed(r.get("label") or r.get("spec"), r.get("batch"), float(r["median"]), r.get("ci_low"),
                             r.get("ci_high"), r.get("n_samples"), r.get("threads"), (), None,
                             (d.get("run") or {}).get("config", {}).get("precision"), bool(r.get("disturbed"))))
    return out


def _timed_in(payload) -> list[Timed]:
    schema = str(payload.get("schema", "")) if isinstance(payload, dict) else ""
    if schema.startswith("flopgap.variants/"):
        return _variants(payload)
    if schema.startswith("flopgap.study.zoo/"):
        return _zoo_rows(payload)
    found: list[Timed] = []
    _walk(payload, found)
    if isinstance(payload, dict) and payload.get("kind") == "processes" and found:
        # fresh processes: each process is one draw, so the per-process medians are the samples
        values = [t.median for t in found]
        first = found[0]
        lo, hi = (payload.get("ci_low"), payload.get("ci_high"))
        level = payload.get("ci_confidence")
        return [Timed(first.model, first.batch, float(np.median(values)), lo, hi, len(values), first.threads,
                      first.inputs, first.device, first.precision, any(t.disturbed for t in found), tuple(values),
                      _worst([t.reference_s for t in found]),
                      float(level) if _positive(level) and level < 1 else 0.95)]
    return found


def _best(timed: list[Timed]) -> list[Timed]:
    """One timing per (model, batch): the most precise (narrowest relative CI)."""
    best: dict[tuple, Timed] = {}
    for t in timed:
        width = ((t.ci_high - t.ci_low) / t.median if t.ci_low is not None and t.ci_high is not None
                 and math.isfinite(t.ci_low) and math.isfinite(t.ci_high) else math.inf)
        old = best.get(t.key)
        if old is None or width < ((old.ci_high - old.ci_low) / old.median if old.ci_low is not None
                                   and old.ci_high is not None and math.isfinite(old.ci_low)
                                   and math.isfinite(old.ci_high) else math.inf):
            best[t.key] = t
    return list(best.values())


def _machine_of(payload: dict) -> dict:
    for key in ("environment",):
        if isinstance(payload.get(key), dict):
            return payload[key]
    run = payload.get("run")
    if isinstance(run, dict) and isinstance(run.get("machine"), dict):
        return run["machine"]
    for side in ("a", "results"):
        sub = payload.get(side)
        if isinstance(sub, list) and sub and isinstance(sub[0], dict):
            sub = sub[0]
        if isinstance(sub, dict) and isinstance(sub.get("environment"), dict):
            return sub["environment"]
    prof = payload.get("machine")
    if isinstance(prof, dict) and isinstance(prof.get("fingerprint"), dict):
        return prof["fingerprint"]
    return {}


def _checked(t: Timed, ref: str) -> Timed:
    """``t`` if every field has a type and value a measurement can have, else a one-line
    :class:`UsageError` naming the file."""
    def number(v, *, positive: bool = False) -> bool:
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (v > 0 if positive else True))

    def count(v) -> bool:
        return v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)

    ok = (isinstance(t.model, str) and count(t.batch) and number(t.median, positive=True)
          and all(v is None or number(v) for v in (t.ci_low, t.ci_high, t.precision)) and count(t.n)
          and count(t.threads) and all(isinstance(x, str) for x in t.inputs)
          and (t.device is None or isinstance(t.device, str))
          and (t.samples is None or all(number(x) for x in t.samples)))
    if not ok:
        raise UsageError(f"{ref!r} is not a flopgap JSON result (a timing of {str(t.model)[:60]!r} has fields "
                         "of the wrong type)")
    return t


def load_source(ref: str, store=None) -> Source:
    """One side of a comparison from a JSON file path or a run id (``latest`` too) in ``store``."""
    path = Path(ref)
    if path.suffix.lower() == ".json" or (path.exists() and not ref.isdigit()):
        if not path.is_file():
            raise UsageError(f"no result file {ref!r}")
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError, OverflowError) as e:
            raise UsageError(f"{ref!r} is not a flopgap JSON result ({type(e).__name__})") from None
        if not isinstance(payload, dict):
            raise UsageError(f"{ref!r} is not a flopgap JSON result (a {type(payload).__name__}, not an object)")
        try:  # a file is anyone's: its fields are checked, never trusted (docs/security.md)
            timed = _best([_checked(t, ref) for t in _timed_in(payload)])
            kind = str(payload.get("schema") or payload.get("kind") or "result").removeprefix("flopgap.")
            return Source(str(path), kind, _machine_of(payload), tuple(timed))
        except (AttributeError, TypeError, ValueError, KeyError, RecursionError, OverflowError) as e:
            raise UsageError(f"{ref!r} is not a flopgap JSON result ({type(e).__name__} reading it)") from None
    if store is None:
        raise UsageError(f"{ref!r} is neither a JSON file nor a run id (give --db for a store)")
    run_ref, _, target = ref.partition("@")  # RUN@LABEL: one kind of machine of a multi-machine run
    run = store.run(run_ref)
    targets = list(run.config.get("machines") or [""])
    if not target and len(targets) > 1:
        raise UsageError(f"run {run.id} measured {len(targets)} kinds of machine ({', '.join(targets)}): compare "
                         f"one with {run.id}@{targets[0]}, or all with flopgap study machines {run.id}")
    if target and target not in targets:
        raise UsageError(f"run {run.id} has no machine kind {target!r} (it has: {', '.join(t for t in targets if t) or '-'})")
    rows = store.measurements(run.id, target=target or targets[0])
    machine = run.machine or {}
    if target and rows:
        machine = store.machines([rows[0].machine_fingerprint]).get(rows[0].machine_fingerprint) or machine
    try:
        timed = [_checked(t, f"run {run.id}") for t in _stored_timings(run, rows)]
    except (AttributeError, TypeError, ValueError, KeyError, RecursionError, OverflowError) as e:
        raise UsageError(f"run {run.id} in {store.url} holds a result flopgap cannot read ({type(e).__name__})") from None
    return Source(f"run {run.id}" + (f"@{target}" if target else ""), run.kind, machine, tuple(_best(timed)))


def _stored_timings(run, rows) -> list[Timed]:
    timed: list[Timed] = []
    for m in rows:
        found = _timed_in(m.payload)
        if m.kind == "model" and isinstance(m.payload, dict) and m.payload.get("batch") is not None:
            # a zoo row: the model's label and batch are the store's, the settings the timing's
            found = [Timed(m.model, m.payload["batch"], t.median, t.ci_low, t.ci_high, t.n, t.threads, t.inputs,
                           t.device, t.precision, t.disturbed, t.samples, t.reference_s) for t in found]
            if not found:  # a row stored without its timing record: its summary figures
                found = _zoo_rows({"rows": [{**m.payload, "label": m.model}], "run": {"config": run.config}})
        timed += found
    return timed


# ------------------------------------------------------------------------ comparing

def _differences(a: Source, b: Source, pairs: list[tuple[Timed, Timed]]) -> list[str]:
    out = []
    ma, mb = a.machine_identity, b.machine_identity
    for k in ("cpu", "cores", "host", "gpu", "torch"):
        if ma.get(k) is not None and mb.get(k) is not None and ma[k] != mb[k]:
            out.append(f"{'torch version' if k == 'torch' else 'machine ' + k} {ma[k]} vs {mb[k]}")
    for k in ("threads", "inputs", "device", "precision"):
        diffs = sorted({f"{ta.settings[k]} vs {tb.settings[k]}" for ta, tb in pairs
                        if ta.settings[k] is not None and tb.settings[k] is not None
                        and ta.settings[k] != tb.settings[k]})
        if diffs:
            out.append(f"{k} {', '.join(diffs)}")
    return out


def _ratio_ci(a: Timed, b: Timed) -> tuple[float, float, str]:
    if a.samples and b.samples and len(a.samples) >= 2 and len(b.samples) >= 2:
        rng = np.random.default_rng(0)
        xa, xb = np.asarray(a.samples, float), np.asarray(b.samples, float)
        ra = np.median(xa[rng.integers(0, len(xa), size=(_RESAMPLES, len(xa)))], axis=1)
        rb = np.median(xb[rng.integers(0, len(xb), size=(_RESAMPLES, len(xb)))], axis=1)
        lo, hi = np.quantile(rb / ra, [0.025, 0.975])
        return float(lo), float(hi), "bootstrap of the ratio of medians, sides resampled independently"
    ratio = b.median / a.median
    if None in (a.ci_low, a.ci_high, b.ci_low, b.ci_high) or not all(
            v > 0 for v in (a.ci_low, a.ci_high, b.ci_low, b.ci_high)):
        return math.nan, math.nan, "no CI: a side has no interval"
    se = math.hypot((math.log(a.ci_high) - math.log(a.ci_low)) / (2 * _Z95),
                    (math.log(b.ci_high) - math.log(b.ci_low)) / (2 * _Z95))
    return ratio * math.exp(-_Z95 * se), ratio * math.exp(_Z95 * se), "the two CIs combined in log space"


def machine_drift(row: ComparedModel) -> str | None:
    """A warning when the machine itself changed speed between the two sides by as much as
    the flagged change: a part of the sentinel's reference kernel (dispatch, compute or
    memory, timed around every measurement) ran that much slower, or faster, during B than
    during A. Neither side was disturbed (that would be flagged already), but a flag this
    size may be the machine's state, not the model: re-time both sides, ideally with
    ``--processes``."""
    a, b = row.a, row.b
    if row.flag not in FLAGS[:2] or a.reference_s is None or b.reference_s is None \
            or len(a.reference_s) != len(b.reference_s):
        return None
    drifts = [y / x for x, y in zip(a.reference_s, b.reference_s)]
    drift = max(drifts) if row.flag == FLAGS[0] else min(drifts)
    if (row.flag == FLAGS[0] and drift >= row.ci_low) or (row.flag == FLAGS[1] and drift <= row.ci_high):
        return (f"{a.model}: the machine's reference kernel ran {drift:.2f}x its A-side time while B was timed, "
                f"as much as the {row.flag} itself ({row.ratio:.3f}): it may be the machine's state, not the "
                "model; re-time both sides (--processes N)")
    return None


def _flag(a: Timed, b: Timed, lo: float, hi: float, threshold: float) -> str:
    if a.disturbed or b.disturbed:
        return FLAGS[3]
    if math.isfinite(lo) and lo > 1 + threshold:
        return FLAGS[0]
    if math.isfinite(hi) and hi < 1 / (1 + threshold):
        return FLAGS[1]
    return FLAGS[2]


def compare_sources(a: Source, b: Source, *, threshold: float = DEFAULT_THRESHOLD, force: bool = False) -> Comparison:
    """B / A for every model both sides timed; refuses differing settings unless ``force``."""
    if not threshold >= 0 or not math.isfinite(threshold):
        raise UsageError(f"--threshold must be >= 0, got {threshold}")
    ta, tb = {t.key: t for t in a.timed}, {t.key: t for t in b.timed}
    keys = [k for k in ta if k in tb]
    if not keys:
        raise UsageError(f"no model was timed in both {a.label} ({len(ta)} timed: "
                         f"{', '.join(sorted(m for m, _ in ta)) or 'none'}) and {b.label} ({len(tb)} timed: "
                         f"{', '.join(sorted(m for m, _ in tb)) or 'none'})")
    pairs = [(ta[k], tb[k]) for k in keys]
    differences = _differences(a, b, pairs)
    if differences and not force:
        raise UsageError(f"{a.label} and {b.label} were measured under different settings ({'; '.join(differences)}): "
                         "their ratio would measure that difference, not the change (--force compares anyway)")
    rows = []
    for x, y in pairs:
        lo, hi, method = _ratio_ci(x, y)
        rows.append(ComparedModel(x, y, y.median / x.median, lo, hi, _flag(x, y, lo, hi, threshold), method))

    def name(k):
        return k[0] if k[1] is None else f"{k[0]} (batch {k[1]})"

    return Comparison(a, b, rows, threshold, [name(k) for k in ta if k not in tb],
                      [name(k) for k in tb if k not in ta], differences)
