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
from flopgap.study._runner import Item, RunOutcome, close_run, open_run, run_items, stored_rows
from flopgap.study._stats import correlate, flops_fit, inversions

__all__ = ["ZOOS", "METRICS", "DEMO_MODELS", "ZooResult", "zoo_items", "measure_zoo_model", "run_zoo",
           "zoo_result", "analyze_zoo"]

ZOOS = ("seed", "torchvision", "transformers", "hf", "timm")
# what is correlated with latency, in table order: (payload field, column name)
METRICS = (("params", "params"), ("flops", "FLOPs"), ("bytes", "bytes"), ("ops", "kernel ops"),
           ("prediction", "prediction"))
# the small zoo of `flopgap demo` / `benchmarks/zoo_study.py --quick`: a few minutes on 2 cores
DEMO_MODELS = ("torchvision:resnet18", "torchvision:mobilenet_v2", "torchvision:mobilenet_v3_small",
               "torchvision:squeezenet1_1", "torchvision:shufflenet_v2_x0_5", "torchvision:mnasnet0_5")
KIND = "zoo"


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
    elif zoo in ("hf", "timm"):  # zoos of labelled entries with config overrides (study/_zoos_more.py)
        from flopgap.study._zoos_more import zoo_entries

        return zoo_entries(zoo, batches)
    elif zoo:
        specs = _zoo_specs(zoo)
    else:
        raise UsageError("name a zoo (seed, torchvision, transformers, hf, timm) or pass --models SPEC,SPEC")
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
    out = []
    for f in (getattr(explanation, "findings", None) or [])[:n]:
        if isinstance(f, dict):
            out.append({k: f.get(k, "") for k in ("kind", "title", "text")})
        else:
            out.append({"kind": "", "title": "", "text": str(f)})
    return out


def _top_finding(explanation) -> str:
    findings = getattr(explanation, "findings", None) or []
    for f in findings:
        text = f.get("text") if isinstance(f, dict) else getattr(f, "text", None)
        if text:
            return str(text)
    return ""


def measure_zoo_model(item: Item, *, max_time: float = 2.0, precision: float = 0.02, threads: int | None = None,
                      with_explain: bool = True, profile=None) -> dict:
    """Count, time, predict and explain one model; returns the stored payload."""
    from flopgap.count import count
    from flopgap.models import load_model, make_inputs, resolve_inputs
    from flopgap.study._stages import stage

    measure = stage("flopgap.timing", "measure")
    predict = stage("flopgap.explain", "predict")
    loaded = load_model(item.spec, item.kwargs_dict)
    specs = resolve_inputs(loaded, None, item.batch, item.seq)
    inputs = make_inputs(specs)
    counted = count(loaded.module, inputs, model=item.model)
    if profile is None:
        profile = stage("flopgap.machine", "profile_machine")()
    timed = measure(loaded.module, inputs, name=item.model, threads=threads, precision=precision, max_time=max_time)
    if getattr(timed, "interrupted", False):
        # timing stops on Ctrl-C and returns what it had: in a study that ends the run,
        # and a partial measurement is not stored as a finished one
        raise KeyboardInterrupt
    prediction = predict(counted, profile)
    payload = {
        "spec": item.spec, "batch": item.batch, "inputs": [str(s) for s in specs],
        "count": counted.totals(),
        "time": {k: v for k, v in timed.to_dict().items() if k != "environment"},
        "median": timed.median, "ci_low": timed.ci_low, "ci_high": timed.ci_high,
        "prediction": _prediction(prediction),
    }
    if with_explain:
        from flopgap.timing import threads_context

        explain = stage("flopgap.explain", "explain")
        # measure=False: the model was just timed above; explain adds the profiler's view,
        # profiled with the same thread count the timing used
        with threads_context(threads):
            exp = explain(loaded.module, inputs, name=item.model, count_result=counted, profile=profile,
                          measure=False)
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
        "finding": payload.get("finding", ""),
    }


def analyze_zoo(rows: Sequence[dict], *, n_boot: int = 2000, seed: int = 0, top: int = 10) -> dict[int, dict]:
    """Per batch: correlations of every metric with latency, inversions, FLOPs-fit outliers."""
    out: dict[int, dict] = {}
    for batch in sorted({r["batch"] for r in rows}, key=lambda b: (b is None, b)):
        rs = [r for r in rows if r["batch"] == batch]
        lat = [r["median"] for r in rs]
        corr = {}
        for key, _ in METRICS:
            corr[key] = correlate([r[key] for r in rs], lat, n_boot=n_boot, seed=seed)
        out[batch] = {
            "n": len(rs),
            "correlations": corr,
            "inversions": inversions(rs, by="flops", top=top),
            "inversions_params": inversions(rs, by="params", top=top),
            "fit": flops_fit(rs, by="flops"),
        }
    return out


def zoo_result(store, run_id: int | str, *, outcome: RunOutcome | None = None, n_boot: int = 2000) -> ZooResult:
    """Rebuild a zoo run's result (and analysis) from the store."""
    run, rows, failures = stored_rows(store, run_id, KIND, _row)
    return ZooResult(run, rows, analyze_zoo(rows, n_boot=n_boot), failures, outcome)


def run_zoo(zoo: str | None = None, *, store, models: Sequence[str] | None = None, batches: Sequence[int] = (1,),
            max_time: float = 2.0, precision: float = 0.02, threads: int | None = None, with_explain: bool = True,
            resume: bool = False, progress: bool = False, console=None, n_boot: int = 2000,
            quick_profile: bool = False, measure: Callable[[Item], dict] | None = None,
            machine: dict | None = None) -> ZooResult:
    """Run (or resume) a zoo study into ``store`` and return its analysed result.

    ``quick_profile`` predicts from the machine stage's quick profile (seconds to measure
    instead of about a minute, once per machine). ``measure`` replaces the per-model
    measurement (tests inject a fake); ``machine`` replaces the machine metadata
    (default: ``flopgap.timing.environment()``).
    """
    items = zoo_items(zoo, models, batches)
    config = {"zoo": zoo if not models else "custom", "models": [it.model for it in items],
              "batches": [int(b) for b in batches], "max_time": max_time, "precision": precision,
              "threads": threads, "explain": with_explain, "profile": "quick" if quick_profile else "full"}
    if machine is None:
        from flopgap.study._stages import machine_metadata

        machine = machine_metadata()
    if measure is None:
        from flopgap.study._stages import machine_profile

        profile = machine_profile(quick=quick_profile, progress=progress, console=console)

        def measure(it: Item) -> dict:
            return measure_zoo_model(it, max_time=max_time, precision=precision, threads=threads,
                                     with_explain=with_explain, profile=profile)

    run_id, resumed = open_run(store, KIND, config, machine, resume=resume,
                               name=zoo if not models else f"{len(set(i.model for i in items))} models")
    outcome = run_items(store, run_id, items, measure, kind="model", progress=progress, label="zoo",
                        resumed=resumed, console=console)
    result = zoo_result(store, run_id, outcome=outcome, n_boot=n_boot)
    return close_run(store, run_id, result, measured=bool(result.rows), nothing="every model failed")
