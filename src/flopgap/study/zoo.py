"""The zoo correlation study: do params, FLOPs, bytes, op count or the explain-stage
prediction rank models by their latency on this machine?

For each model (and batch): count (params, FLOPs, bytes, kernel ops), time it
(adaptive, warmed-up median with a CI), predict its latency from the machine profile,
and keep explain's top finding. Across the zoo, per batch: Spearman, Kendall and
log-log Pearson of each count with latency (bootstrap CIs), the inversions (fewer
FLOPs yet significantly slower), and the outliers of a FLOPs-only fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from flopgap.errors import UsageError
from flopgap.study._runner import Item, RunOutcome, close_run, open_run, run_items
from flopgap.study._stats import correlate, flops_fit, inversions

__all__ = ["ZOOS", "METRICS", "DEMO_MODELS", "ZooResult", "ZooMeasure", "zoo_items", "measure_zoo_model", "run_zoo",
           "zoo_result", "analyze_zoo", "run_targets"]

ZOOS = ("seed", "torchvision", "transformers")
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
                      with_explain: bool = True, profile=None, timed: bool = True, device: str | None = None) -> dict:
    """Count, time, predict and explain one model; returns the stored payload.

    ``timed=False`` counts and predicts only (nothing is timed or profiled: such items
    may share a machine). ``device`` (``cuda``, ``cuda:1``): counted on the CPU, then
    timed and explained there; ``profile`` must be that device's."""
    from flopgap.count import count
    from flopgap.models import load_model, make_inputs, resolve_inputs
    from flopgap.study._stages import stage

    measure = stage("flopgap.timing", "measure")
    predict = stage("flopgap.explain", "predict")
    loaded = load_model(item.spec, item.kwargs_dict)
    specs = resolve_inputs(loaded, None, item.batch)
    inputs = make_inputs(specs)
    counted = count(loaded.module, inputs, model=item.model)
    if profile is None:
        profile = stage("flopgap.machine", "profile_machine")()
    if not timed:
        return {"spec": item.spec, "batch": item.batch, "inputs": [str(s) for s in specs], "count": counted.totals(),
                "timed": False, "prediction": _prediction(predict(counted, profile))}
    module = loaded.module
    if device and device != "cpu":
        module, inputs = _to_device(module, inputs, device)
    timed = measure(module, inputs, name=item.model, threads=threads, precision=precision, max_time=max_time,
                    **({"device": device} if device else {}))
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
            exp = explain(module, inputs, name=item.model, count_result=counted, profile=profile,
                          measure=False, **({"device": device} if device else {}))
        payload["finding"] = _top_finding(exp)
        payload["findings"] = findings_payload(exp)
    return payload


def _to_device(module, inputs, device: str):
    import torch

    return module.to(device), tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs)


@dataclass(frozen=True)
class ZooMeasure:
    """The zoo's per-item measurement as a picklable object (it runs wherever the
    executor puts the item): the machine profile is the one of the machine it runs on,
    measured there once and cached (``quick_profile``: the quick one)."""

    max_time: float = 2.0
    precision: float = 0.02
    threads: int | None = None
    with_explain: bool = True
    quick_profile: bool = False
    timed: bool = True
    device: str | None = None

    def on_device(self, device: str | None) -> "ZooMeasure":
        """The same measurement on ``device`` (a kind of machine's own device)."""
        return replace(self, device=device)

    def __call__(self, item: Item) -> dict:
        from flopgap.study._stages import machine_profile

        return measure_zoo_model(item, max_time=self.max_time, precision=self.precision, threads=self.threads,
                                 with_explain=self.with_explain and self.timed, device=self.device,
                                 profile=machine_profile(quick=self.quick_profile, device=self.device),
                                 timed=self.timed)


@dataclass(frozen=True)
class ProfilePrepare:
    """Run once per node before its items, alone on it: measure (or load) the machine
    profile there, and say what it is."""

    quick: bool = False
    device: str | None = None

    def on_device(self, device: str | None) -> "ProfilePrepare":
        return replace(self, device=device)

    def __call__(self) -> dict:
        from flopgap.study._stages import machine_profile

        p = machine_profile(quick=self.quick, device=self.device)
        return {"profile": "quick" if p.quick else "full", "source": getattr(p, "source", ""), "device": self.device,
                "peak_fp32_flops": p.peak("float32"), "mem_bandwidth": p.mem_bandwidth,
                "dispatch_overhead_s": p.dispatch_overhead_s, "warning": p.busy_warning() or ""}


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


def _devices(executor, device: str | None) -> dict[str, str]:
    """The device of each kind of machine: its own (``label:cuda``), else ``device``, else cpu."""
    from flopgap.timing import check_device

    default = check_device(device, what="--device", need_cuda=executor.name == "local") if device else "cpu"
    own = executor.devices() if hasattr(executor, "devices") else {}
    return {t: own.get(t) or default for t in executor.targets()}


def run_targets(run) -> list[str]:
    """The kinds of machine a study run measures each item on (``[""]``: one, unlabelled)."""
    return list(run.config.get("machines") or [""])


def _pick_target(run, target: str | None) -> str:
    targets = run_targets(run)
    if target is None:
        if len(targets) > 1:
            raise UsageError(f"run {run.id} measured {len(targets)} kinds of machine ({', '.join(targets)}): "
                             f"flopgap study machines {run.id} compares them")
        return targets[0]
    if target not in targets:
        raise UsageError(f"run {run.id} has no machine kind {target!r} (it has: {', '.join(targets) or '-'})")
    return target


def zoo_result(store, run_id: int | str, *, outcome: RunOutcome | None = None, n_boot: int = 2000,
               target: str | None = None) -> ZooResult:
    """Rebuild a zoo run's result (and analysis) from the store; a run over several kinds
    of machine is read one ``target`` at a time."""
    run = store.run(run_id)
    if run.kind != KIND:
        raise UsageError(f"run {run.id} is a {run.kind} run, not a zoo study")
    target = _pick_target(run, target)
    rows = [_row(m.model, m.payload) for m in store.measurements(run.id, kind="model", target=target)]
    ok = {(r["label"], f"b{r['batch']}") for r in rows}
    failures = {f"{m.model} {m.key}": m.payload.get("error", "")
                for m in store.measurements(run.id, kind="error", target=target) if (m.model, m.key) not in ok}
    return ZooResult(run, rows, analyze_zoo(rows, n_boot=n_boot), failures, outcome)


def run_zoo(zoo: str | None = None, *, store, models: Sequence[str] | None = None, batches: Sequence[int] = (1,),
            max_time: float = 2.0, precision: float = 0.02, threads: int | None = None, with_explain: bool = True,
            resume: bool = False, progress: bool = False, console=None, n_boot: int = 2000,
            quick_profile: bool = False, measure: Callable[[Item], dict] | None = None,
            machine: dict | None = None, timed: bool = True, executor=None, lease_s: float | None = None,
            device: str | None = None):
    """Run (or resume) a zoo study into ``store`` and return its analysed result.

    ``quick_profile`` predicts from the machine stage's quick profile (seconds to measure
    instead of about a minute, once per machine). ``timed=False`` counts and predicts
    only. ``device`` times (and profiles) on that device (default: the CPU); on a cluster a
    kind of machine may name its own (``RayExecutor(machines=["gpu:cuda"])``).
    ``executor`` says where the items run (default: here, one after the other;
    :class:`flopgap.study.RayExecutor` for a cluster, where each item is measured once per
    ``--machines`` label and the result is a :class:`flopgap.study.fleet.FleetResult`).
    ``measure`` replaces the per-model measurement (tests inject a fake); ``machine``
    replaces the run's machine record (default: the executor's).
    """
    from flopgap.study.executor import DEFAULT_LEASE_S, LocalExecutor

    items = zoo_items(zoo, models, batches)
    executor = executor or LocalExecutor(machine=machine, device=device)
    targets = list(executor.targets())
    config = {"zoo": zoo if not models else "custom", "models": [it.model for it in items],
              "batches": [int(b) for b in batches], "max_time": max_time, "precision": precision,
              "threads": threads, "explain": with_explain, "profile": "quick" if quick_profile else "full"}
    if not timed:
        config["time"] = False
    if targets != [""]:
        config["machines"] = targets
    devices = _devices(executor, device)
    if any(d != "cpu" for d in devices.values()):
        config["devices"] = devices
    if machine is None:
        machine = executor.machine()
    prepare = None
    if measure is None:
        if executor.name == "local":
            from flopgap.study._stages import machine_profile

            machine_profile(quick=quick_profile, progress=progress, console=console,  # measured once, with a bar
                            device=devices[""] if devices.get("", "cpu") != "cpu" else None)
        measure = ZooMeasure(max_time, precision, threads, with_explain, quick_profile, timed)
        prepare = ProfilePrepare(quick_profile)

    run_id, resumed = open_run(store, KIND, config, machine, resume=resume,
                               name=zoo if not models else f"{len(set(i.model for i in items))} models")
    outcome = run_items(store, run_id, items, measure, kind="model", progress=progress, label="zoo",
                        resumed=resumed, console=console, executor=executor, timing=timed, prepare=prepare,
                        threads=threads, lease_s=lease_s or DEFAULT_LEASE_S,
                        devices={t: d for t, d in devices.items() if d != "cpu"})
    if len(targets) > 1:
        from flopgap.study.fleet import fleet_result

        result = fleet_result(store, run_id, outcome=outcome, n_boot=n_boot)
        measured = any(r.rows for r in result.results.values())
    else:
        result = zoo_result(store, run_id, outcome=outcome, n_boot=n_boot)
        measured = bool(result.rows)
    return close_run(store, run_id, result, measured=measured, nothing="every model failed")
