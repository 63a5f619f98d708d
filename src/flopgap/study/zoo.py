"""The zoo correlation study: do params, FLOPs, bytes, op count or the explain-stage
prediction rank models by their latency on this machine?

For each model (and batch): count (params, FLOPs, bytes, kernel ops), time it
(adaptive, warmed-up median with a CI), predict its latency from the machine profile,
and keep explain's top finding. Across the zoo, per batch: Spearman, Kendall and
log-log Pearson of each count with latency (bootstrap CIs), the inversions (fewer
FLOPs yet significantly slower), and the outliers of a FLOPs-only fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from flopgap.errors import UsageError
from flopgap.machine import profile_machine
from flopgap.study._runner import Item, Retime, RunOutcome, close_run, open_run, run_items
from flopgap.study._stats import correlate, flops_fit, inversions
from flopgap.timing import TimerOptions, environment, measure, threads_context

__all__ = ["ZOOS", "METRICS", "DEMO_MODELS", "ZooResult", "zoo_items", "measure_zoo_model", "run_zoo",
           "zoo_result", "analyze_zoo", "study_profile", "STUDY_MAX_TIME"]

ZOOS = ("seed", "torchvision", "transformers")
# what is correlated with latency, in table order: (payload field, column name)
METRICS = (("params", "params"), ("flops", "FLOPs"), ("bytes", "bytes"), ("ops", "kernel ops"),
           ("prediction", "prediction"))
# the small zoo of `flopgap demo` / `benchmarks/zoo_study.py --quick`: a few minutes on 2 cores
DEMO_MODELS = ("torchvision:resnet18", "torchvision:mobilenet_v2", "torchvision:mobilenet_v3_small",
               "torchvision:squeezenet1_1", "torchvision:shufflenet_v2_x0_5", "torchvision:mnasnet0_5")
KIND = "zoo"
STUDY_MAX_TIME = 2.0  # seconds of timing per model or pair: a 2% CI for models up to ~50 ms


def _zoo_specs(zoo: str) -> list[str]:
    if zoo == "seed":
        from flopgap.models.seed import SEED_MODELS

        return [f"seed:{k}" for k in SEED_MODELS]
    if zoo == "torchvision":
        try:
            import torchvision.models as tvm
        except ImportError:
            raise UsageError("the torchvision zoo needs torchvision: pip install 'flopgap[vision]'") from None
        return [f"torchvision:{n}" for n in tvm.list_models(module=tvm)]
    if zoo == "transformers":
        from flopgap.models.zoo import ZOO_MODELS

        return [f"zoo:{k}" for k in ZOO_MODELS]
    raise UsageError(f"unknown zoo {zoo!r}: choose one of {', '.join(ZOOS)} (or --models SPEC,SPEC)")


def _check_spec(spec: str) -> None:
    """Reject a misspelt built-in or torchvision name before any measuring starts."""
    prefix, sep, name = spec.partition(":")
    if not sep:
        return
    if prefix == "seed":
        from flopgap.models.seed import SEED_MODELS

        known = SEED_MODELS
    elif prefix == "zoo":
        from flopgap.models.zoo import ZOO_MODELS

        known = ZOO_MODELS
    elif prefix == "torchvision":
        try:
            import torchvision.models as tvm
        except ImportError:
            raise UsageError("torchvision is not installed: pip install 'flopgap[vision]'") from None
        known = tvm.list_models(module=tvm)
    else:
        return
    if name not in known:
        raise UsageError(f"unknown model {spec!r} in --models ({'flopgap models' if prefix != 'torchvision' else 'flopgap models --source torchvision'} lists them)")


def zoo_items(zoo: str | None = None, models: Sequence[str] | None = None,
              batches: Sequence[int] = (1,)) -> list[Item]:
    """The items of a study: every model of ``zoo`` (or the user's ``models``) at every batch."""
    if not batches or any(int(b) <= 0 for b in batches):
        raise UsageError(f"--batch values must be positive integers, got {list(batches)}")
    if models:
        specs = [m.strip() for m in models if m.strip()]
        if not specs:
            raise UsageError("--models is empty")
        for s in specs:
            _check_spec(s)
    elif zoo:
        specs = _zoo_specs(zoo)
    else:
        raise UsageError("name a zoo (seed, torchvision, transformers) or pass --models SPEC,SPEC")
    seen, items = set(), []
    for spec in specs:
        for b in batches:
            if (spec, b) not in seen:
                seen.add((spec, b))
                items.append(Item(model=spec, key=f"b{int(b)}", spec=spec, batch=int(b)))
    return items


def _prediction(prediction) -> dict:
    """The prediction's totals (its per-op rows stay out of the store)."""
    out = {"latency_s": float(prediction.latency_s)}
    for k in ("roofline_s", "module_overhead_s", "module_calls", "calibrated"):
        if hasattr(prediction, k):
            out[k] = getattr(prediction, k)
    return out


def findings_payload(explanation, n: int = 5) -> list[dict]:
    """explain's first ``n`` findings as ``{kind, title, text}`` (numbers and op lists left out)."""
    return [{"kind": f.kind, "title": f.title, "text": f.text} for f in explanation.findings[:n]]


def _top_finding(explanation) -> str:
    return next((f.text for f in explanation.findings if f.text), "")


def measure_zoo_model(item: Item, *, timer: TimerOptions, with_explain: bool = True, profile=None,
                      load=None) -> dict:
    """Count, time, predict and explain one model; returns the stored payload.

    Everything runs with ``timer.threads`` intra-op threads, and ``profile`` must be the
    machine profile for that thread count (:func:`study_profile`)."""
    from flopgap.count import count
    from flopgap.explain import explain, predict
    from flopgap.models import load_model, make_inputs, resolve_inputs

    loaded = load_model(item.spec, item.kwargs_dict)
    specs = resolve_inputs(loaded, None, item.batch)
    inputs = make_inputs(specs)
    with threads_context(timer.threads):
        counted = count(loaded.module, inputs, model=item.model)
        if profile is None:
            profile = profile_machine()
        timed = measure(loaded.module, inputs, timer, name=item.model, load=load)
        if timed.interrupted:
            # timing stops on Ctrl-C and returns what it had: in a study that ends the run,
            # and a partial measurement is not stored as a finished one
            raise KeyboardInterrupt
        prediction = predict(counted, profile)
        payload = {
            "spec": item.spec, "batch": item.batch, "inputs": [str(s) for s in specs],
            "count": counted.totals(),
            "time": {k: v for k, v in timed.to_dict().items() if k != "environment"},
            "median": timed.median, "ci_low": timed.ci_low, "ci_high": timed.ci_high,
            "n_samples": timed.n_samples, "threads": timed.spec.threads, "precision_met": timed.precision_met,
            "disturbed": timed.disturbed, "warnings": timed.warnings,
            "prediction": _prediction(prediction),
        }
        if with_explain:
            # measure=False: the model was just timed above; explain adds the profiler's view
            exp = explain(loaded.module, inputs, name=item.model, count_result=counted, profile=profile,
                          measure=False, timer=timer, load=load)
            payload["finding"] = _top_finding(exp)
            payload["findings"] = findings_payload(exp)
    return payload


@dataclass
class ZooResult:
    """A zoo run's rows (one per model and batch) and, per batch, the analysis."""

    run: object  # flopgap.store.RunInfo
    rows: list[dict]
    analysis: dict[int, dict]
    failures: dict[str, str] = field(default_factory=dict)
    outcome: RunOutcome | None = None

    def to_dict(self) -> dict:
        return {"schema": "flopgap.study.zoo/1", "run": self.run.to_dict(), "rows": self.rows,
                "analysis": {str(b): a for b, a in self.analysis.items()}, "failures": self.failures}


def _row(model: str, payload: dict) -> dict:
    c = payload.get("count", {})
    return {
        "label": model, "batch": payload.get("batch"), "spec": payload.get("spec", model),
        "params": c.get("params"), "flops": c.get("flops"),
        "bytes": (c.get("bytes_read") or 0) + (c.get("bytes_written") or 0) if "bytes_read" in c else c.get("bytes"),
        "ops": c.get("ops"), "coverage": c.get("coverage"),
        "prediction": (payload.get("prediction") or {}).get("latency_s"),
        "median": payload.get("median"), "ci_low": payload.get("ci_low"), "ci_high": payload.get("ci_high"),
        "n_samples": payload.get("n_samples", (payload.get("time") or {}).get("n_samples")),
        "threads": payload.get("threads", ((payload.get("time") or {}).get("spec") or {}).get("threads")),
        "precision_met": payload.get("precision_met", (payload.get("time") or {}).get("precision_met")),
        "disturbed": bool(payload.get("disturbed", (payload.get("time") or {}).get("disturbed"))),
        "attempts": payload.get("attempts", 1),
        "finding": payload.get("finding", ""),
    }


def analyze_zoo(rows: Sequence[dict], *, n_boot: int = 2000, seed: int = 0, top: int = 10) -> dict[int, dict]:
    """Per batch: correlations of every metric with latency, inversions, FLOPs-fit outliers.

    Rows timed on a disturbed machine are left out of all three and listed under
    ``excluded`` with the reason: no correlation rests on a busy machine."""
    out: dict[int, dict] = {}
    for batch in sorted({r["batch"] for r in rows}, key=lambda b: (b is None, b)):
        all_rs = [r for r in rows if r["batch"] == batch]
        rs = [r for r in all_rs if not r.get("disturbed")]
        excluded = [{"label": r["label"], "reason": "machine disturbed while timing"
                     + (f" ({r['attempts']} attempts)" if r.get("attempts", 1) > 1 else "")}
                    for r in all_rs if r.get("disturbed")]
        lat = [r["median"] for r in rs]
        corr = {}
        for key, _ in METRICS:
            corr[key] = correlate([r[key] for r in rs], lat, n_boot=n_boot, seed=seed)
        out[batch] = {
            "n": len(rs),
            "excluded": excluded,
            "correlations": corr,
            "inversions": inversions(rs, by="flops", top=top),
            "inversions_params": inversions(rs, by="params", top=top),
            "fit": flops_fit(rs, by="flops"),
        }
    return out


def zoo_result(store, run_id: int | str, *, outcome: RunOutcome | None = None, n_boot: int = 2000) -> ZooResult:
    """Rebuild a zoo run's result (and analysis) from the store."""
    run = store.run(run_id)
    if run.kind != KIND:
        raise UsageError(f"run {run.id} is a {run.kind} run, not a zoo study")
    rows = [_row(m.model, m.payload) for m in store.measurements(run.id, kind="model")]
    ok = {(r["label"], f"b{r['batch']}") for r in rows}
    failures = {f"{m.model} {m.key}": m.payload.get("error", "") for m in store.measurements(run.id, kind="error")
                if (m.model, m.key) not in ok}
    return ZooResult(run, rows, analyze_zoo(rows, n_boot=n_boot), failures, outcome)


def study_profile(timer: TimerOptions, *, quick: bool = False, progress=None):
    """The machine profile a study predicts with: the one for ``timer.threads`` threads."""
    with threads_context(timer.threads):
        return profile_machine(quick=quick, progress=progress)


def run_zoo(zoo: str | None = None, *, store, models: Sequence[str] | None = None, batches: Sequence[int] = (1,),
            timer: TimerOptions | None = None, with_explain: bool = True, resume: bool = False, progress=None,
            n_boot: int = 2000, quick_profile: bool = False, profile=None,
            measure: Callable[[Item], dict] | None = None, machine: dict | None = None,
            retime: Retime = Retime(), load=None) -> ZooResult:
    """Run (or resume) a zoo study into ``store`` and return its analysed result.

    ``timer`` (:class:`~flopgap.timing.TimerOptions`, default a 2 s budget per model) times
    every model, with its thread count for the profile and prediction too. ``profile``
    is the machine profile to predict with (default: :func:`study_profile`, the quick
    one with ``quick_profile``). A model the sentinel finds disturbed is re-timed as
    ``retime`` says; one still disturbed is kept, flagged and left out of the analysis.
    ``progress(event)`` receives :class:`~flopgap.study.Progress` events. ``measure``
    replaces the per-model measurement (tests inject a fake); ``machine`` replaces the
    machine metadata (default: ``flopgap.timing.environment()``); ``load`` is the
    sentinel's evidence source (tests pass a fake).
    """
    timer = timer if timer is not None else TimerOptions(max_time=STUDY_MAX_TIME)
    items = zoo_items(zoo, models, batches)
    config = {"zoo": zoo if not models else "custom", "models": [it.model for it in items],
              "batches": [int(b) for b in batches], "max_time": timer.max_time, "precision": timer.precision,
              "threads": timer.threads, "explain": with_explain, "profile": "quick" if quick_profile else "full"}
    if machine is None:
        machine = environment()
    if measure is None:
        if profile is None:
            profile = study_profile(timer, quick=quick_profile)

        def measure(it: Item) -> dict:
            return measure_zoo_model(it, timer=timer, with_explain=with_explain, profile=profile, load=load)

    run_id, resumed = open_run(store, KIND, config, machine, resume=resume,
                               name=zoo if not models else f"{len(set(i.model for i in items))} models")
    outcome = run_items(store, run_id, items, measure, kind="model", progress=progress, label="zoo",
                        resumed=resumed, retime=retime)
    result = zoo_result(store, run_id, outcome=outcome, n_boot=n_boot)
    return close_run(store, run_id, result, measured=bool(result.rows), nothing="every model failed")
