"""The seed case study: the article's three examples, measured rigorously, one verdict per claim.

The article ("Can low parameter count and FLOPs correlate with high inference time in
PyTorch?") times one call of each model with ``time.time()`` and no
warm-up. Here each pair is timed alternately with :func:`flopgap.timing.compare`
(warmed-up medians, paired bootstrap CI of the latency ratio), each model is counted,
and explain gives its reason. The article's own method (one call of a freshly built
model, no warm-up) is recorded beside the median to show how far it lands.

Verdict per claim (see :func:`flopgap.study._stats.ratio_verdict`): an effect counts
beyond 5%. *holds* if the 95% CI of the ratio lies wholly beyond +-5% of 1 on the
claimed side; *does not hold* if it lies wholly on the other side of 1 or wholly within
+-5% of 1 (the claimed effect is absent); otherwise *inconclusive at this noise*. A pair
timed on a disturbed machine (re-timed up to three times) is *inconclusive: machine
disturbed*, and one whose CIs missed their precision target *inconclusive: precision not
reached*: no verdict rests on either.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

from flopgap._summary import summary_html, summary_repr
from flopgap.errors import UsageError
from flopgap.study._runner import Item, Retime, RunOutcome, StudyWarnings, close_run, open_run, run_items
from flopgap.study._stats import Verdict, ratio_verdict
from flopgap.timing import TimerOptions, environment

__all__ = ["Claim", "CLAIMS", "SeedResult", "run_seed", "seed_result", "measure_seed_model", "compare_pair",
           "comparison_payload", "SeedModelMeasure", "PairMeasure"]

KIND = "seed"
SEED_MAX_TIME = 3.0  # seconds per pair: both models of a pair share it


@dataclass(frozen=True)
class Claim:
    """One claim of the article about the latency ratio ``a / b``."""

    id: str
    example: str
    text: str
    a: str
    b: str
    expect: str          # "greater": the article says a is slower; "less": a is faster
    metric: str
    per_flop: bool = False  # divide the latency ratio by the FLOPs ratio (latency per FLOP)
    reason: tuple[str, ...] = ("dominant",)  # explain finding kinds that answer this claim, best first


CLAIMS: tuple[Claim, ...] = (
    Claim("ex1", "Ex.1", "Model 1 (fewer FLOPs, 'scattered' weights) may be slower than Model 2",
          "seed:ex1-small", "seed:ex1-large", "greater", "latency ratio ex1-small / ex1-large"),
    Claim("ex1-per-flop", "Ex.1", "Low FLOPs do not buy proportionally low latency (title question)",
          "seed:ex1-small", "seed:ex1-large", "greater",
          "latency-per-FLOP ratio ex1-small / ex1-large (latency ratio / FLOPs ratio)", per_flop=True,
          reason=("utilisation", "dominant")),
    Claim("ex2", "Ex.2", "Ten small layers are slower than two larger ones at comparable FLOPs (kernel launches)",
          "seed:ex2-deep", "seed:ex2-wide", "greater", "latency ratio ex2-deep / ex2-wide",
          reason=("overhead", "dominant")),
    Claim("ex3-as-written", "Ex.3 as written",
          "quantize_dynamic(nn.Linear(1000,10)) as written is faster than the float layer",
          "seed:ex3-int8-as-written", "seed:ex3-float", "less", "latency ratio as-written / float"),
    Claim("ex3-int8", "Ex.3 as intended",
          "Dynamic int8 quantization (really applied) makes Linear(1000,10) faster at batch 1",
          "seed:ex3-int8", "seed:ex3-float", "less", "latency ratio int8 / float"),
)

SEED_SPECS = ("seed:ex1-small", "seed:ex1-large", "seed:ex2-deep", "seed:ex2-wide", "seed:ex3-float",
              "seed:ex3-int8-as-written", "seed:ex3-int8")


def _pairs() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for c in CLAIMS:
        if (c.a, c.b) not in out:
            out.append((c.a, c.b))
    return out


def _load(spec: str):
    from flopgap.models import load_model, make_inputs, resolve_inputs

    with warnings.catch_warnings():
        # torch.ao.quantization's deprecation notice: the study reports it once, in its notes
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        loaded = load_model(spec)
    return loaded, make_inputs(resolve_inputs(loaded))


def _is_quantized(module) -> bool:
    return any("quantized" in type(m).__module__ for m in module.modules())


def measure_seed_model(item: Item, *, with_explain: bool = True, profile=None, timer: TimerOptions | None = None,
                       load=None) -> dict:
    """Count one seed model, time it the article's way (one cold call), explain it (with
    ``timer.threads`` threads and the profile for them)."""
    from flopgap.count import count

    loaded, inputs = _load(item.spec)
    # the article's method: a freshly built model, one call, no warm-up
    t0 = time.perf_counter()
    loaded.module(*inputs)
    one_shot = time.perf_counter() - t0
    counted = count(loaded.module, inputs, model=item.spec)
    payload = {"spec": item.spec, "count": counted.totals(), "one_shot_s": one_shot,
               "module_type": type(loaded.module).__module__ + "." + type(loaded.module).__qualname__,
               "quantized": _is_quantized(loaded.module)}
    if with_explain:
        from flopgap.explain import explain
        from flopgap.study.zoo import findings_payload

        # measure=False: the pair comparison times it; explain adds the profiler's view
        exp = explain(loaded.module, inputs, name=item.spec, count_result=counted, profile=profile, measure=False,
                      timer=timer, load=load)
        payload["findings"] = findings_payload(exp, n=8)
    return payload


def compare_pair(item: Item, *, timer: TimerOptions, load=None) -> dict:
    """Time the pair ``item.model = "A|B"`` alternately; returns the comparison payload
    (``disturbed`` at its top: the study re-times a disturbed pair)."""
    from flopgap.timing import compare

    a_spec, b_spec = item.model.split("|")
    a, ia = _load(a_spec)
    b, ib = _load(b_spec)
    comp = compare(a.module, ia, b.module, ib, timer, names=(a_spec, b_spec), load=load)
    return comparison_payload(comp)


def comparison_payload(comp) -> dict:
    """A comparison as a study stores it (sample lists kept, machine metadata left to the run)."""
    if comp.interrupted:  # Ctrl-C while timing: end the study, store nothing partial
        raise KeyboardInterrupt
    d = comp.to_dict()
    for side in ("a", "b"):
        d[side] = {k: v for k, v in d[side].items() if k != "environment"}
    d["precise"] = comp.a.precision_met and comp.b.precision_met
    d["threads"] = comp.a.spec.threads
    return d


@dataclass(frozen=True)
class SeedModelMeasure:
    """:func:`measure_seed_model` as a picklable object (it runs wherever the executor
    puts the item): without ``profile``, the profile of the machine it runs on."""

    timer: TimerOptions
    with_explain: bool = True
    quick_profile: bool = False
    profile: object = None

    def __call__(self, item: Item) -> dict:
        profile = self.profile
        if self.with_explain and profile is None:
            from flopgap.study.zoo import node_profile

            profile = node_profile(self.timer, self.quick_profile)
        return measure_seed_model(item, with_explain=self.with_explain, profile=profile, timer=self.timer)


@dataclass(frozen=True)
class PairMeasure:
    """:func:`compare_pair` as a picklable object."""

    timer: TimerOptions

    def __call__(self, item: Item) -> dict:
        return compare_pair(item, timer=self.timer)


@dataclass
class SeedResult(StudyWarnings):
    run: object
    models: dict[str, dict]
    comparisons: dict[str, dict]
    claims: list[dict]
    failures: dict[str, str] = field(default_factory=dict)
    outcome: RunOutcome | None = None

    __repr__ = summary_repr
    _repr_html_ = summary_html

    def _disturbed_items(self) -> list[tuple[str, dict]]:
        return [(k, c) for k, c in self.comparisons.items() if c.get("disturbed")]

    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        rows = []
        for c in self.claims:
            ratio = (f"{c['ratio']:.3g} [{c['ci_low']:.3g}, {c['ci_high']:.3g}]"
                     if c.get("ratio") is not None and c.get("ci_low") is not None else "-")
            rows.append((f"claim {c['id']} ({c['example']})", f"{ratio}: {getattr(c['verdict'], 'value', c['verdict'])}"))
        return f"run {self.run.id}", rows

    def to_dict(self) -> dict:
        return {"schema": "flopgap.study.seed/1", "run": self.run.to_dict(), "models": self.models,
                "comparisons": self.comparisons, "claims": self.claims, "failures": self.failures}


def _judge(claim: Claim, models: dict[str, dict], comparisons: dict[str, dict]) -> dict:
    comp = comparisons.get(f"{claim.a}|{claim.b}")
    ma, mb = models.get(claim.a, {}), models.get(claim.b, {})
    row = {"id": claim.id, "example": claim.example, "claim": claim.text, "metric": claim.metric,
           "a": claim.a, "b": claim.b, "expect": claim.expect}
    if comp is None:
        return {**row, "ratio": None, "ci_low": None, "ci_high": None, "verdict": Verdict.NOT_MEASURED, "reason": ""}
    ratio, lo, hi = comp["ratio"], comp["ci_low"], comp["ci_high"]
    notes = []
    fa, fb = (ma.get("count") or {}).get("flops"), (mb.get("count") or {}).get("flops")
    if fa and fb:
        notes.append(f"FLOPs {claim.a.split(':')[1]} / {claim.b.split(':')[1]} = {fa / fb:.3g}")
    if claim.per_flop:
        if not (fa and fb):
            return {**row, "ratio": None, "ci_low": None, "ci_high": None, "verdict": Verdict.NOT_MEASURED,
                    "reason": "FLOPs unknown"}
        scale = fb / fa
        ratio = ratio * scale
        lo, hi = (None if v is None else v * scale for v in (lo, hi))  # null CI: too few samples
        notes.append(f"{fb / fa:.3g}x fewer FLOPs but only {1 / comp['ratio']:.3g}x the speed"
                     if comp["ratio"] < 1 else f"{fb / fa:.3g}x fewer FLOPs yet {comp['ratio']:.3g}x slower")
    if claim.id.startswith("ex3"):
        if not ma.get("quantized", True):
            notes.append(f"{claim.a} is not quantized: quantize_dynamic swaps children only, so on a bare "
                         f"nn.Linear it returned the float layer ({ma.get('module_type', '?')}) unchanged")
        elif ma.get("quantized"):
            notes.append(f"{claim.a} runs {ma.get('module_type', '?')} (int8 weights, activations quantized per call)")
    disturbed = bool(comp.get("disturbed"))
    precise = comp.get("precise", comp["a"].get("precision_met", True) and comp["b"].get("precision_met", True))
    verdict = ratio_verdict(lo, hi, claim.expect, disturbed=disturbed, precise=precise)
    if disturbed:
        notes.insert(0, "machine disturbed while timing" + (f" ({comp['attempts']} attempts)"
                                                            if comp.get("attempts", 1) > 1 else "")
                     + ": " + "; ".join(w for w in comp["a"].get("warnings", []) if w.startswith("machine disturbed")))
    elif not precise:
        notes.insert(0, "precision not reached: give it more --max-time")
    return {**row, "ratio": ratio, "ci_low": lo, "ci_high": hi, "verdict": verdict,
            "reason": _reason(ma.get("findings") or [], claim.reason), "notes": "; ".join(notes),
            "latency_a": comp["a"]["median"], "latency_b": comp["b"]["median"],
            "n": comp["a"].get("n_samples"), "threads": comp.get("threads", (comp["a"].get("spec") or {}).get("threads")),
            "disturbed": disturbed}


def _reason(findings: list, kinds: tuple[str, ...]) -> str:
    """The text of the first finding of the preferred kinds (else the first finding)."""
    as_dicts = [f if isinstance(f, dict) else {"kind": "", "text": str(f)} for f in findings]
    for kind in kinds:
        for f in as_dicts:
            if f.get("kind") == kind and f.get("text"):
                return f["text"]
    return as_dicts[0]["text"] if as_dicts else ""


def seed_result(store, run_id: int | str, *, outcome: RunOutcome | None = None,
                target: str | None = None) -> SeedResult:
    """Rebuild a seed run's result (and verdicts) from the store; a run over several kinds
    of machine is read one ``target`` at a time."""
    from flopgap.study.zoo import _pick_target

    run = store.run(run_id)
    if run.kind != KIND:
        raise UsageError(f"run {run.id} is a {run.kind} run, not a seed study")
    target = _pick_target(run, target)
    models = {m.model: m.payload for m in store.measurements(run.id, kind="model", target=target)}
    comparisons = {m.model: m.payload for m in store.measurements(run.id, kind="comparison", target=target)}
    done = set(models) | set(comparisons)
    failures = {m.model: m.payload.get("error", "") for m in store.measurements(run.id, kind="error", target=target)
                if m.model not in done}
    claims = [_judge(c, models, comparisons) for c in CLAIMS]
    return SeedResult(run, models, comparisons, claims, failures, outcome)


def run_seed(*, store, timer: TimerOptions | None = None, with_explain: bool = True, resume: bool = False,
             progress=None, quick_profile: bool = False, profile=None,
             measure_model: Callable[[Item], dict] | None = None, measure_pair: Callable[[Item], dict] | None = None,
             machine: dict | None = None, retime: Retime = Retime(), load=None, executor=None,
             lease_s: float | None = None):
    """Run (or resume) the seed case study into ``store``; fakes can replace both measurements.

    ``timer`` times each pair (default: a 3 s budget per pair); a pair the sentinel finds
    disturbed is re-timed as ``retime`` says, and one still disturbed gets the verdict
    "inconclusive: machine disturbed". ``executor`` says where the items run (default:
    here); with several ``--machines`` labels each claim gets a verdict per kind of
    machine and the result is a :class:`flopgap.study.FleetResult`."""
    from flopgap.study.executor import DEFAULT_LEASE_S, LocalExecutor

    timer = timer if timer is not None else TimerOptions(max_time=SEED_MAX_TIME)
    executor = executor or LocalExecutor(machine=machine)
    on_devices = {t: d for t, d in (executor.devices() if hasattr(executor, "devices") else {}).items() if d != "cpu"}
    if on_devices or timer.device not in (None, "cpu"):
        raise UsageError(f"the seed study times on the CPU (its int8 models run only there): drop "
                         f"'{next(iter(on_devices.values()), timer.device)}' from the options")
    targets = list(executor.targets())
    config = {"study": "seed", "max_time": timer.max_time, "precision": timer.precision, "threads": timer.threads,
              "explain": with_explain, "claims": [c.id for c in CLAIMS],
              "profile": "quick" if quick_profile else "full"}
    if targets != [""]:
        config["machines"] = targets
    if machine is None:
        machine = executor.machine()
    local = executor.name == "local"
    prepare = None
    if measure_model is None:
        if with_explain:
            from flopgap.study.zoo import ProfilePrepare, study_profile

            if local and profile is None:
                profile = study_profile(timer, quick=quick_profile)
            prepare = ProfilePrepare(timer, quick_profile)
        measure_model = SeedModelMeasure(timer, with_explain, quick_profile, profile if local else None)
        if load is not None:  # a test's fake evidence source: only in this process
            def measure_model(it: Item) -> dict:
                return measure_seed_model(it, with_explain=with_explain, profile=profile, timer=timer, load=load)
    if measure_pair is None:
        measure_pair = PairMeasure(timer)
        if load is not None:
            def measure_pair(it: Item) -> dict:
                return compare_pair(it, timer=timer, load=load)

    run_id, resumed = open_run(store, KIND, config, machine, resume=resume, name="seed article")
    common = dict(progress=progress, resumed=resumed, retime=retime, executor=executor, threads=timer.threads,
                  lease_s=lease_s or DEFAULT_LEASE_S, prepare=prepare)
    outcome = run_items(store, run_id, [Item(s, spec=s) for s in SEED_SPECS], measure_model, kind="model",
                        label="seed models", **common)
    outcome.merge(run_items(store, run_id, [Item(f"{a}|{b}") for a, b in _pairs()], measure_pair,
                            kind="comparison", label="seed pairs", **common))
    per_target = {t: seed_result(store, run_id, outcome=outcome, target=t) for t in targets}
    for t, res in per_target.items():
        for claim in res.claims:
            store.put(run_id, claim["id"], "claim", claim, on_conflict="replace", target=t)
    if len(targets) > 1:
        from flopgap.study.fleet import fleet_result

        result = fleet_result(store, run_id, outcome=outcome)
        measured = any(r.comparisons for r in result.results.values())
    else:
        result = per_target[targets[0]]
        measured = bool(result.comparisons)
    return close_run(store, run_id, result, measured=measured, nothing="the seed study measured nothing")
