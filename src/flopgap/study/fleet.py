"""One model zoo (or the seed's claims) on several machines, side by side.

The input is a list of *machines*, each the rows one machine measured: every kind of
machine (``--machines`` label) of a multi-machine run, or several single-machine runs
(one machine each). Per batch the comparison gives:

- per machine: latency with its 95% CI (or the prediction, marked, where nothing was
  timed), the zoo analysis of :func:`flopgap.study.analyze_zoo` (correlations of params,
  FLOPs, bytes, kernel ops and the prediction with latency, inversions), and which count
  ranks latency best there (highest Spearman rho; "tied" when the runner-up's rho lies
  inside the best one's CI);
- per pair of machines: the rank correlation of the models' latencies between them, the
  models whose rank moves most, *swaps* (A significantly faster than B on one machine,
  B significantly faster than A on the other: both CIs disjoint on both) and the FLOPs
  inversions significant on one machine and not on the other (both models timed on both);
- seed runs: every claim's verdict per machine, and whether the verdicts differ.

Honesty: a measurement whose payload says ``disturbed: true`` (or whose timing says so)
is left out of every correlation, inversion, swap and verdict and listed apart, with the
reason the timing stage gave; a claim whose comparison was disturbed is "inconclusive:
machine disturbed" on that machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from flopgap.errors import UsageError
from flopgap.study._stats import correlate, inversions

__all__ = ["MachineRows", "MachineComparison", "FleetResult", "compare_machines", "machines_from_runs",
           "fleet_result", "disturbed_reason", "SETTINGS_KEYS"]

# run settings that must agree before two runs' latencies are compared (models may differ:
# the comparison matches them by name)
SETTINGS_KEYS = ("batches", "max_time", "precision", "threads", "explain", "profile", "time", "study", "claims")
_TOP = 10  # rows kept in each "most" list (rank moves, swaps, one-machine inversions)


def disturbed_reason(payload) -> str:
    """Why a stored measurement is disturbed ("" if it is not): ``disturbed: true`` on the
    payload, its timing, or either side of a comparison; the reason is the timing stage's
    own words (its "machine disturbed ..." warning) where it gave them."""
    if not isinstance(payload, dict):
        return ""
    places = [p for p in (payload, payload.get("time"), payload.get("a"), payload.get("b")) if isinstance(p, dict)]
    if not any(p.get("disturbed") for p in places):
        return ""
    for p in places:
        for w in p.get("warnings") or ():
            if isinstance(w, str) and w.startswith("machine disturbed"):
                return w
    attempts = payload.get("attempts", 1)
    return "machine disturbed while timing" + (f" ({attempts} attempts)" if attempts > 1 else "")


@dataclass(frozen=True)
class MachineRows:
    """What one machine measured: ``rows`` as the zoo study makes them (``label``,
    ``batch``, ``params``, ``flops``, ``bytes``, ``ops``, ``prediction``, ``median``,
    ``ci_low``, ``ci_high``) plus ``disturbed`` (reason or ""); ``claims`` for seed runs."""

    name: str
    run_id: int
    target: str = ""
    fingerprints: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)
    rows: tuple = ()
    claims: tuple = ()
    kinds: int = 1  # distinct machines (ignoring host names) behind the rows


@dataclass
class MachineComparison:
    """The comparison of :func:`compare_machines` (see the module docstring)."""

    machines: list[MachineRows]
    batches: dict[int, dict]
    claims: list[dict]
    excluded: list[dict]
    notes: list[str]

    def to_dict(self) -> dict:
        return {"schema": "flopgap.study.machines/1",
                "machines": [{"name": m.name, "run": m.run_id, "target": m.target,
                              "fingerprints": list(m.fingerprints), "metadata": m.metadata,
                              "rows": len(m.rows), "kinds": m.kinds} for m in self.machines],
                "batches": {str(b): v for b, v in self.batches.items()}, "claims": self.claims,
                "excluded": self.excluded, "notes": self.notes}


# ------------------------------------------------------------------ analysis
def _latency(row: dict) -> tuple[float | None, float | None, float | None, bool]:
    """(value, ci_low, ci_high, measured?): the measured median, else the prediction."""
    if row.get("median"):
        return row["median"], row.get("ci_low"), row.get("ci_high"), True
    return row.get("prediction"), None, None, False


def _faster(a: dict, b: dict) -> bool:
    """a is significantly faster than b: a's latency CI lies wholly below b's."""
    return a.get("ci_high") is not None and b.get("ci_low") is not None and a["ci_high"] < b["ci_low"]


def _best_metric(corr: dict, skip: tuple[str, ...]) -> dict:
    scored = [(k, v["spearman"]) for k, v in corr.items()
              if k not in skip and v["spearman"]["r"] is not None and math.isfinite(v["spearman"]["r"])]
    if not scored:
        return {"metric": None}
    scored.sort(key=lambda kv: -kv[1]["r"])
    (name, best), rest = scored[0], scored[1:]
    out = {"metric": name, "rho": best["r"], "ci_low": best["ci_low"], "ci_high": best["ci_high"], "tied_with": []}
    if best["ci_low"] is not None and math.isfinite(best["ci_low"]):
        out["tied_with"] = [k for k, v in rest if v["r"] >= best["ci_low"]]
    return out


def _pair(x: MachineRows, y: MachineRows, rx: dict, ry: dict, *, n_boot: int) -> dict:
    """Rank changes, swaps and one-machine inversions between two machines' rows of one
    batch (``rx``/``ry``: label -> row, disturbed rows already left out)."""
    common = sorted(m for m in set(rx) & set(ry) if _latency(rx[m])[0] and _latency(ry[m])[0])
    lx = [_latency(rx[m])[0] for m in common]
    ly = [_latency(ry[m])[0] for m in common]
    corr = correlate(lx, ly, n_boot=n_boot)["spearman"] if len(common) >= 3 else None

    def ranks(vals):
        order = sorted(range(len(vals)), key=lambda i: vals[i])
        r = [0] * len(vals)
        for pos, i in enumerate(order, 1):
            r[i] = pos
        return r

    moves = []
    if common:
        kx, ky = ranks(lx), ranks(ly)
        moves = sorted(({"model": m, "rank_a": a, "rank_b": b, "shift": b - a, "latency_a": va, "latency_b": vb}
                        for m, a, b, va, vb in zip(common, kx, ky, lx, ly)), key=lambda d: (-abs(d["shift"]), d["model"]))
    timed = [m for m in common if _latency(rx[m])[3] and _latency(ry[m])[3]]
    swaps = []
    for i, a in enumerate(timed):
        for b in timed[i + 1:]:
            for p, q in ((a, b), (b, a)):
                if _faster(rx[p], rx[q]) and _faster(ry[q], ry[p]):
                    swaps.append({"faster_on_a": p, "faster_on_b": q,
                                  "ratio_a": rx[q]["median"] / rx[p]["median"],
                                  "ratio_b": ry[p]["median"] / ry[q]["median"]})
    swaps.sort(key=lambda s: -(math.log(s["ratio_a"]) + math.log(s["ratio_b"])))

    def inv(rows):
        found = inversions(rows, by="flops", top=len(rows) ** 2)["top"]
        return {(p["fewer"], p["more"]): p for p in found}

    ix, iy = inv([rx[m] for m in timed]), inv([ry[m] for m in timed])
    only_a = [p for k, p in ix.items() if k not in iy]
    only_b = [p for k, p in iy.items() if k not in ix]
    return {"a": x.name, "b": y.name, "common": len(common), "timed_on_both": len(timed), "rank_correlation": corr,
            "moves": [m for m in moves if m["shift"]][:_TOP], "moved": sum(1 for m in moves if m["shift"]),
            "swaps": swaps[:_TOP], "swap_count": len(swaps),
            "inversions_only_a": only_a[:_TOP], "inversions_only_a_count": len(only_a),
            "inversions_only_b": only_b[:_TOP], "inversions_only_b_count": len(only_b)}


def compare_machines(machines: Sequence[MachineRows], *, n_boot: int = 2000) -> MachineComparison:
    """Compare what several machines measured (see the module docstring)."""
    from flopgap.study.zoo import analyze_zoo

    if len(machines) < 2:
        raise UsageError(f"comparing machines needs at least two, got {len(machines)}")
    excluded, notes = [], []
    clean: dict[str, list[dict]] = {}
    for m in machines:
        for r in m.rows:
            if r.get("disturbed"):
                why = r["disturbed"] if isinstance(r["disturbed"], str) else "machine disturbed while timing"
                excluded.append({"machine": m.name, "model": r["label"], "batch": r.get("batch"), "reason": why})
        clean[m.name] = [r for r in m.rows if not r.get("disturbed")]
        if m.kinds > 1:
            notes.append(f"{m.name}: its rows come from {m.kinds} different machines (CPU, cores, threads or "
                         "versions differ): latencies of different machines are mixed under one name")
        if m.rows and not any(r.get("median") for r in m.rows):
            notes.append(f"{m.name}: nothing was timed (a counting-and-prediction run): its latencies are "
                         "explain's predictions, without CIs; swaps and inversions need timing")
    batches: dict[int, dict] = {}
    all_batches = sorted({r.get("batch") for m in machines for r in m.rows}, key=lambda b: (b is None, b))
    for batch in all_batches:
        per_machine, rows_by, all_by = {}, {}, {}
        for m in machines:
            rows = [r for r in clean[m.name] if r.get("batch") == batch]
            all_by[m.name] = {r["label"]: r for r in m.rows if r.get("batch") == batch}
            # timed or not is the run's nature, whether or not its timings were disturbed
            measured = any(r.get("median") for r in all_by[m.name].values())
            use = [r if measured else {**r, "median": r.get("prediction"), "ci_low": None, "ci_high": None}
                   for r in rows]
            rows_by[m.name] = {r["label"]: r for r in rows}
            analysis = analyze_zoo(use, n_boot=n_boot) if use else {}
            a = analysis.get(batch, {})
            corr = dict(a.get("correlations", {}))
            if not measured:  # the prediction against itself says nothing
                corr.pop("prediction", None)
            per_machine[m.name] = {
                "n": len(rows), "latency": "measured" if measured else "predicted",
                "correlations": corr,
                "best": _best_metric(corr, ()),
                "inversions": {k: v for k, v in (a.get("inversions") or {}).items() if k != "top"},
            }
        # the table shows every row, a disturbed one marked (it is left out of everything else)
        models = sorted({label for rows in all_by.values() for label in rows},
                        key=lambda lab: min((all_by[n][lab].get("flops") or math.inf) for n in all_by
                                            if lab in all_by[n]))
        table = []
        for label in models:
            row = {"model": label, "flops": next((all_by[n][label].get("flops") for n in all_by
                                                  if label in all_by[n]), None), "latency": {}}
            for m in machines:
                r = all_by[m.name].get(label)
                if r is not None:
                    v, lo, hi, measured = _latency(r)
                    row["latency"][m.name] = {"value": v, "ci_low": lo, "ci_high": hi, "measured": measured,
                                              "disturbed": bool(r.get("disturbed"))}
            table.append(row)
        pairs = [_pair(x, y, rows_by[x.name], rows_by[y.name], n_boot=n_boot)
                 for i, x in enumerate(machines) for y in machines[i + 1:]]
        batches[batch] = {"machines": per_machine, "table": table, "pairs": pairs}
    return MachineComparison(list(machines), batches, _claims_by_machine(machines), excluded, notes)


def _claims_by_machine(machines: Sequence[MachineRows]) -> list[dict]:
    """One row per seed claim: its verdict (ratio and CI) on each machine."""
    if not any(m.claims for m in machines):
        return []
    ids = []
    for m in machines:
        for c in m.claims:
            if c["id"] not in ids:
                ids.append(c["id"])
    out = []
    for cid in ids:
        row = {"id": cid, "verdicts": {}}
        for m in machines:
            c = next((c for c in m.claims if c["id"] == cid), None)
            if c is None:
                continue
            row.update(example=c.get("example"), claim=c.get("claim"), metric=c.get("metric"))
            row["verdicts"][m.name] = {k: c.get(k) for k in ("verdict", "ratio", "ci_low", "ci_high", "disturbed")}
        verdicts = {v["verdict"] for v in row["verdicts"].values()}
        row["differs"] = len(verdicts) > 1
        out.append(row)
    return out


# ------------------------------------------------------------------ from the store
def _zoo_rows(store, run, target: str) -> list[dict]:
    from flopgap.study.zoo import _row

    rows = []
    for m in store.measurements(run.id, kind="model", target=target):
        row = _row(m.model, m.payload)
        row["disturbed"] = disturbed_reason(m.payload)
        row["machine_fingerprint"] = m.machine_fingerprint
        rows.append(row)
    return rows


def _seed_claims(store, run, target: str) -> list[dict]:
    """The seed's claims on one machine; a pair timed on a disturbed machine already has
    the verdict "inconclusive: machine disturbed" (the seed study's rule), and its reason."""
    from flopgap.study.seed import seed_result

    res = seed_result(store, run.id, target=target)
    claims = []
    for c in res.claims:
        why = disturbed_reason(res.comparisons.get(f"{c['a']}|{c['b']}"))
        claims.append({**c, "verdict": str(c["verdict"]), "disturbed": why})
    return claims


def _kind_signature(metadata: dict) -> tuple:
    keys = ("cpu_model", "logical_cores", "physical_cores", "torch_threads", "torch", "device", "gpu")
    return tuple(metadata.get(k) for k in keys)


def machines_from_runs(store, run_ids: Sequence[int | str], *, allow_different_settings: bool = False
                       ) -> list[MachineRows]:
    """The machines in stored zoo or seed runs: each kind of machine of a multi-machine
    run, and each single-machine run. Runs must be of one kind and, unless
    ``allow_different_settings``, agree on their settings (:data:`SETTINGS_KEYS`)."""
    from flopgap.study.zoo import run_targets

    runs = [store.run(r) for r in run_ids]
    kinds = {r.kind for r in runs}
    if not kinds <= {"zoo", "seed"}:
        bad = next(r for r in runs if r.kind not in ("zoo", "seed"))
        raise UsageError(f"run {bad.id} is a {bad.kind} run: study machines compares zoo and seed runs")
    if len(kinds) > 1:
        raise UsageError("these runs mix zoo and seed studies: compare runs of one kind")
    if len({r.id for r in runs}) != len(runs):
        raise UsageError("a run is named twice")
    if not allow_different_settings:
        first = runs[0]
        for r in runs[1:]:
            diff = [k for k in SETTINGS_KEYS if first.config.get(k) != r.config.get(k)]
            if diff:
                raise UsageError(f"runs {first.id} and {r.id} differ in {', '.join(diff)} "
                                 f"({', '.join(f'{k}={first.config.get(k)!r} vs {r.config.get(k)!r}' for k in diff)}): "
                                 "their latencies are not comparable (--allow-different-settings to compare anyway)")
    out: list[MachineRows] = []
    for run in runs:
        for target in run_targets(run):
            if run.kind == "zoo":
                rows, claims = _zoo_rows(store, run, target), []
                fps = tuple(sorted({r.pop("machine_fingerprint") or run.machine_fingerprint for r in rows}))
            else:
                rows, claims = [], _seed_claims(store, run, target)
                fps = tuple(sorted({m.machine_fingerprint or run.machine_fingerprint
                                    for m in store.measurements(run.id, kind="comparison", target=target)}))
            known = store.machines(fps) if fps else {}
            metas = [known.get(fp) or run.machine for fp in fps] or [run.machine]
            out.append(MachineRows(target or _machine_name(metas[0], fps, run), run.id, target, fps, metas[0],
                                   tuple(rows), tuple(claims), len({_kind_signature(md) for md in metas})))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        out = [MachineRows(f"{m.name} (run {m.run_id})", m.run_id, m.target, m.fingerprints, m.metadata, m.rows,
                           m.claims, m.kinds) for m in out]
    if len(out) < 2:
        raise UsageError(f"run {runs[0].id} is one machine: name two or more runs, or a run measured with "
                         "--machines LABEL,LABEL")
    return out


def _machine_name(metadata: dict, fps: tuple[str, ...], run) -> str:
    cpu = (metadata or {}).get("cpu_model") or (metadata or {}).get("executor") or "machine"
    gpu = (metadata or {}).get("gpu")
    fp = (fps[0] if fps else run.machine_fingerprint)[:8]
    return f"{gpu or cpu} [{fp}]"


# ------------------------------------------------------------------ a multi-machine run
@dataclass
class FleetResult:
    """A study run over several kinds of machine: each one's own result and the comparison."""

    run: object
    results: dict[str, object]
    comparison: MachineComparison
    failures: dict[str, str] = field(default_factory=dict)
    outcome: object = None

    def to_dict(self) -> dict:
        return {"schema": "flopgap.study.fleet/1", "run": self.run.to_dict(),
                "results": {t: r.to_dict() for t, r in self.results.items()},
                "comparison": self.comparison.to_dict(), "failures": self.failures}


def fleet_result(store, run_id: int | str, *, outcome=None, n_boot: int = 2000) -> FleetResult:
    """Rebuild a multi-machine run's results (one per kind of machine) and their comparison."""
    from flopgap.study.seed import seed_result
    from flopgap.study.zoo import run_targets, zoo_result

    run = store.run(run_id)
    build = {"zoo": lambda t: zoo_result(store, run.id, target=t, n_boot=n_boot),
             "seed": lambda t: seed_result(store, run.id, target=t)}.get(run.kind)
    if build is None:
        raise UsageError(f"run {run.id} is a {run.kind} run, not a zoo or seed study")
    results = {t: build(t) for t in run_targets(run)}
    for r in results.values():
        r.outcome = outcome
    failures = {f"{name} @{t}": err for t, r in results.items() for name, err in r.failures.items()}
    comparison = compare_machines(machines_from_runs(store, [run.id]), n_boot=n_boot)
    return FleetResult(run, results, comparison, failures, outcome)
