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

from flopgap._summary import summary_html, summary_repr
from flopgap.errors import UsageError
from flopgap.machine import profile_machine
from flopgap.study._runner import (Item, Retime, RunOutcome, StudyWarnings, close_run, open_run, run_items,
                                   stored_rows)
from flopgap.study._stats import correlate, flops_fit, inversions
from flopgap.timing import TimerOptions, environment, measure, threads_context

__all__ = ["ZOOS", "METRICS", "DEMO_MODELS", "ZooResult", "ZooMeasure", "ProfilePrepare", "zoo_items",
           "measure_zoo_model", "run_zoo", "zoo_result", "analyze_zoo", "study_profile", "run_targets", "STUDY_MAX_TIME"]

ZOOS = ("seed", "torchvision", "transformers", "hf", "timm")
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
    for k in ("roofline_s", "module_overhead_s", "module_calls", "python_s", "python_opcodes", "calibrated"):
        if hasattr(prediction, k):
            out[k] = getattr(prediction, k)
    return out


def findings_payload(explanation, n: int = 5) -> list[dict]:
    """explain's first ``n`` findings as ``{kind, title, text}`` (numbers and op lists left out)."""
    return [{"kind": f.kind, "title": f.title, "text": f.text} for f in explanation.findings[:n]]


def _top_finding(explanation) -> str:
    return next((f.text for f in explanation.findings if f.text), "")


def measure_zoo_model(item: Item, *, timer: TimerOptions, with_explain: bool = True, profile=None,
                      load=None, timed: bool = True) -> dict:
    """Count, time, predict and explain one model; returns the stored payload.

    Everything runs with ``timer.threads`` intra-op threads, and ``profile`` must be the
    machine profile for that thread count (:func:`study_profile`). ``timed=False`` counts
    and predicts only (nothing is timed or profiled: such items may share a machine). On
    ``timer.device`` ``cuda``, the model is counted on the CPU, then timed and explained
    on the GPU; ``profile`` is then that device's."""
    from flopgap.count import count
    from flopgap.explain import explain, predict
    from flopgap.models import load_model, make_inputs, resolve_inputs

    loaded = load_model(item.spec, item.kwargs_dict)
    specs = resolve_inputs(loaded, None, item.batch, item.seq)
    inputs = make_inputs(specs)
    with threads_context(timer.threads):
        counted = count(loaded.module, inputs, model=item.model)
        if profile is None:
            profile = profile_machine(device=timer.device)
        if not timed:
            return {"spec": item.spec, "batch": item.batch, "inputs": [str(s) for s in specs],
                    "count": counted.totals(), "timed": False, "prediction": _prediction(predict(counted, profile))}
        module = loaded.module
        if timer.device not in (None, "cpu"):
            module, inputs = _to_device(module, inputs, timer.device)
        timed = measure(module, inputs, timer, name=item.model, load=load)
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
            exp = explain(module, inputs, name=item.model, count_result=counted, profile=profile,
                          measure=False, timer=timer, load=load)
            payload["finding"] = _top_finding(exp)
            payload["findings"] = findings_payload(exp)
    return payload


def _to_device(module, inputs, device: str):
    import torch

    return module.to(device), tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs)


_PROFILES: dict = {}  # this process's profiles, by (quick, device, threads, cache folder)


def node_profile(timer: TimerOptions, quick: bool = False):
    """:func:`study_profile` kept in memory for the process: a worker that measures many
    items reads its machine's profile from disk once."""
    import torch

    from flopgap.machine import cache_dir

    with threads_context(timer.threads):
        key = (quick, timer.device or "cpu", torch.get_num_threads(), str(cache_dir()))
    if key not in _PROFILES:
        _PROFILES[key] = study_profile(timer, quick=quick)
    return _PROFILES[key]


@dataclass(frozen=True)
class ZooMeasure:
    """The zoo's per-item measurement as a picklable object (it runs wherever the
    executor puts the item): without ``profile``, the profile of the machine it runs on,
    measured there once and cached (``quick_profile``: the quick one)."""

    timer: TimerOptions
    with_explain: bool = True
    quick_profile: bool = False
    timed: bool = True
    profile: object = None

    def on_device(self, device: str | None) -> "ZooMeasure":
        """The same measurement on ``device`` (a kind of machine's own device)."""
        return replace(self, timer=self.timer.replace(device=device), profile=None)

    def __call__(self, item: Item) -> dict:
        profile = self.profile if self.profile is not None else node_profile(self.timer, self.quick_profile)
        return measure_zoo_model(item, timer=self.timer, with_explain=self.with_explain and self.timed,
                                 profile=profile, timed=self.timed)


@dataclass(frozen=True)
class ProfilePrepare:
    """Run once per node before its items, alone on it: measure (or load) the machine
    profile there, and say what it is."""

    timer: TimerOptions
    quick: bool = False

    def on_device(self, device: str | None) -> "ProfilePrepare":
        return replace(self, timer=self.timer.replace(device=device))

    def __call__(self) -> dict:
        p = node_profile(self.timer, self.quick)
        return {"profile": "quick" if p.quick else "full", "source": getattr(p, "source", ""),
                "device": self.timer.device or "cpu", "peak_fp32_flops": p.peak("float32"),
                "mem_bandwidth": p.mem_bandwidth, "dispatch_overhead_s": p.dispatch_overhead_s,
                "warning": "; ".join(p.warnings)}


@dataclass
class ZooResult(StudyWarnings):
    """A zoo run's rows (one per model and batch) and, per batch, the analysis."""

    run: object  # flopgap.store.RunInfo
    rows: list[dict]
    analysis: dict[int, dict]
    failures: dict[str, str] = field(default_factory=dict)
    outcome: RunOutcome | None = None

    __repr__ = summary_repr
    _repr_html_ = summary_html

    def _disturbed_items(self) -> list[tuple[str, dict]]:
        return [(f"{r['label']} b{r['batch']}", r) for r in self.rows if r.get("disturbed")]

    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        rows = []
        for batch, a in self.analysis.items():
            sp = ((a.get("correlations") or {}).get("flops") or {}).get("spearman") or {}
            rho = (f"{sp['r']:.2f} [{sp['ci_low']:.2f}, {sp['ci_high']:.2f}]" if sp.get("r") is not None
                   and sp.get("ci_low") is not None else "-")
            rows.append((f"batch {batch}", f"{a.get('n')} models, FLOPs vs latency Spearman {rho}, "
                                           f"{(a.get('inversions') or {}).get('count', 0)} inversions"))
        return f"run {self.run.id} ({len(self.rows)} rows)", rows or [("rows", str(len(self.rows)))]

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


def _devices(executor, timer: TimerOptions) -> dict[str, str]:
    """The device of each kind of machine: its own (``label:cuda``), else the timer's, else cpu."""
    own = executor.devices() if hasattr(executor, "devices") else {}
    return {t: own.get(t) or timer.device or "cpu" for t in executor.targets()}


def zoo_result(store, run_id: int | str, *, outcome: RunOutcome | None = None, n_boot: int = 2000,
               target: str | None = None) -> ZooResult:
    """Rebuild a zoo run's result (and analysis) from the store; a run over several kinds
    of machine is read one ``target`` at a time."""
    run = store.run(run_id)
    target = _pick_target(run, target) if run.kind == KIND else ""
    run, rows, failures = stored_rows(store, run.id, KIND, _row, target=target)
    return ZooResult(run, rows, analyze_zoo(rows, n_boot=n_boot), failures, outcome)


def study_profile(timer: TimerOptions, *, quick: bool = False, progress=None):
    """The machine profile a study predicts with: the one for ``timer.threads`` threads
    (and ``timer.device``)."""
    with threads_context(timer.threads):
        return profile_machine(quick=quick, progress=progress, device=timer.device)


def run_zoo(zoo: str | None = None, *, store, models: Sequence[str] | None = None, batches: Sequence[int] = (1,),
            timer: TimerOptions | None = None, with_explain: bool = True, resume: bool = False, progress=None,
            n_boot: int = 2000, quick_profile: bool = False, profile=None,
            measure: Callable[[Item], dict] | None = None, machine: dict | None = None,
            retime: Retime = Retime(), load=None, timed: bool = True, executor=None,
            lease_s: float | None = None):
    """Run (or resume) a zoo study into ``store`` and return its analysed result.

    ``timer`` (:class:`~flopgap.timing.TimerOptions`, default a 2 s budget per model) times
    every model, with its thread count for the profile and prediction too. ``profile``
    is the machine profile to predict with (default: :func:`study_profile`, the quick
    one with ``quick_profile``; on a cluster each node's own). A model the sentinel finds
    disturbed is re-timed as ``retime`` says; one still disturbed is kept, flagged and
    left out of the analysis. ``timed=False`` counts and predicts only. ``progress(event)``
    receives :class:`~flopgap.study.Progress` events. ``executor`` says where the items
    run (default: here, one after the other; :class:`flopgap.study.RayExecutor` for a
    cluster, where each item is measured once per ``--machines`` label and the result is
    a :class:`flopgap.study.FleetResult`). ``measure`` replaces the per-model measurement
    (tests inject a fake); ``machine`` replaces the run's machine record (default: the
    executor's, ``flopgap.timing.environment()`` here); ``load`` is the sentinel's
    evidence source (tests pass a fake).
    """
    from flopgap.study.executor import DEFAULT_LEASE_S, LocalExecutor

    timer = timer if timer is not None else TimerOptions(max_time=STUDY_MAX_TIME)
    items = zoo_items(zoo, models, batches)
    executor = executor or LocalExecutor(machine=machine, device=timer.device)
    targets = list(executor.targets())
    config = {"zoo": zoo if not models else "custom", "models": [it.model for it in items],
              "batches": [int(b) for b in batches], "max_time": timer.max_time, "precision": timer.precision,
              "threads": timer.threads, "explain": with_explain, "profile": "quick" if quick_profile else "full"}
    if not timed:
        config["time"] = False
    if targets != [""]:
        config["machines"] = targets
    devices = _devices(executor, timer)
    if any(d != "cpu" for d in devices.values()):
        config["devices"] = devices
    if machine is None:
        machine = executor.machine()
    prepare = None
    if measure is None:
        local = executor.name == "local"
        if local and profile is None:
            profile = study_profile(timer, quick=quick_profile)
        measure = ZooMeasure(timer, with_explain, quick_profile, timed, profile if local else None)
        prepare = ProfilePrepare(timer, quick_profile)
        if load is not None:  # a test's fake evidence source: only in this process
            def measure(it: Item, _m=measure) -> dict:
                return measure_zoo_model(it, timer=timer, with_explain=with_explain, profile=_m.profile,
                                         load=load, timed=timed)

    run_id, resumed = open_run(store, KIND, config, machine, resume=resume,
                               name=zoo if not models else f"{len(set(i.model for i in items))} models")
    outcome = run_items(store, run_id, items, measure, kind="model", progress=progress, label="zoo",
                        resumed=resumed, retime=retime, executor=executor, timing=timed, prepare=prepare,
                        threads=timer.threads, lease_s=lease_s or DEFAULT_LEASE_S,
                        devices={t: d for t, d in devices.items() if d != "cpu"})
    if len(targets) > 1:
        from flopgap.study.fleet import fleet_result

        result = fleet_result(store, run_id, outcome=outcome, n_boot=n_boot)
        measured = any(r.rows for r in result.results.values())
    else:
        result = zoo_result(store, run_id, outcome=outcome, n_boot=n_boot)
        measured = bool(result.rows)
    return close_run(store, run_id, result, measured=measured, nothing="every model failed")
