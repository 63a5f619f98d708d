"""``flopgap explain`` and ``flopgap predict``."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from flopgap.cli._app import app
from flopgap.cli._common import (BatchOpt, CsvOpt, DbOpt, HtmlOpt, InputOpt, JsonOpt, KwargsOpt, ModelArg,
                                 PrecisionOpt, SeqOpt, ThreadsOpt, console, err_console, keep, load, open_db, say,
                                 write_json)
from flopgap.cli.machine import _CACHE_NOTE, DeviceOpt, QuickOpt, RefreshOpt, _profile
from flopgap.timing import DEFAULT_PRECISION

def _on_device(loaded, tensors, device: str):
    if device == "cpu":
        return loaded.module, tensors
    from flopgap.models import inputs_to

    return loaded.module.to(device), inputs_to(tensors, device)


@app.command(help=f"""Explain why MODEL takes the time it takes on this machine.

Runs the model under torch.profiler and joins each op's measured time to the counting
records (op sequence and shapes); classes each op compute-, memory- or overhead-bound by a
roofline on this machine's measured ceilings: predicted time = max(FLOPs / peak,
bytes / bandwidth, dispatch overhead) (bandwidth: cache-resident when the op's bytes fit the
cache test, else main memory); shows time share against FLOP share per class, the top ops
by time next to the top ops by FLOPs, and findings with numbers (memory access, dispatch
overhead, utilisation, opportunities). A fused multiply-add is 2 FLOPs. Shares are of the
profiled call; the rigorous median (flopgap time) and the profiler overhead are reported.

{_CACHE_NOTE}""")
def explain(
    model: ModelArg,
    input: InputOpt = None,
    batch: BatchOpt = None,
    seq: SeqOpt = None,
    kwargs: KwargsOpt = None,
    device: DeviceOpt = "cpu",
    refresh_machine: RefreshOpt = False,
    quick_machine: QuickOpt = False,
    calls: Annotated[Optional[int], typer.Option(help="profiled calls (default: as many as fit 0.4 s, 3 to 30)")] = None,
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = DEFAULT_PRECISION,
    max_time: Annotated[float, typer.Option(help="seconds for the rigorous median (flopgap.timing.measure)")] = 2.0,
    no_measure: Annotated[bool, typer.Option("--no-measure", help="skip the rigorous median (no reconciliation)")] = False,
    top: Annotated[int, typer.Option(help="ops shown in the top-by-time and top-by-FLOPs tables")] = 10,
    depth: Annotated[int, typer.Option(help="module tree depth shown")] = 1,
    plot: Annotated[Optional[str], typer.Option(help="write the roofline plot to this .png path")] = None,
    trace: Annotated[Optional[str], typer.Option("--trace", help="write the profiled calls as a Chrome/Perfetto trace (.json or .json.gz; torch.profiler's own export) whose op events carry flopgap.flops, .bytes, .intensity and .bound (roofline class) args; open in ui.perfetto.dev or Holistic Trace Analysis")] = None,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    html: HtmlOpt = None,
    db: DbOpt = None,
) -> None:
    from flopgap.errors import UsageError
    from flopgap.explain import explain as run_explain
    from flopgap.explain import roofline_plot
    from flopgap.report.explain_view import render_explanation
    from flopgap.timing import TimerOptions, check_device

    device = check_device(device, what="--device")
    timer = TimerOptions(precision=precision, max_time=max_time, threads=threads)
    if calls is not None and calls < 1:
        raise UsageError(f"--calls must be >= 1, got {calls}")
    if plot is not None and not plot.lower().endswith(".png"):
        raise UsageError(f"--plot must be a .png path, got {plot!r}")
    if trace is not None and not trace.endswith((".json", ".json.gz")):
        raise UsageError(f"--trace must be a .json or .json.gz path (Chrome/Perfetto trace), got {trace!r}")
    store = open_db(db)
    loaded, _, tensors = load(model, input, batch, kwargs, seq=seq)
    module, tensors = _on_device(loaded, tensors, device)
    from flopgap.count import count as run_count
    from flopgap.timing import threads_context

    with threads_context(threads):
        counted = run_count(module, tensors, model=loaded.spec)
    prof = _profile(device, refresh_machine, quick_machine, threads, counted)
    ex = run_explain(module, tensors, name=loaded.spec, count_result=counted, profile=prof, measure=not no_measure,
                     timer=timer, calls=calls, device=device, trace=trace)
    if ex.trace:
        err_console.print(f"wrote trace {ex.trace['path']} ({ex.trace['annotated_op_events']} op events annotated"
                          + (f", {ex.trace['annotated_device_events']} device events" if ex.trace["annotated_device_events"]
                             else "") + ")", markup=False, highlight=False, soft_wrap=True)
    if json_path != "-" and csv_path != "-":  # stdout holds the data asked for, nothing else
        render_explanation(ex, console, top=top, depth=depth)
    if plot:
        roofline_plot(ex, plot)
        say(f"wrote {plot}")
    if json_path:
        write_json(json_path, ex.to_dict())
    if html or db or csv_path:  # the page draws its roofline from the result: report RUN draws the same
        keep("explain", loaded.spec, ex.to_dict(), html=html, db=store, csv=csv_path,
             interrupted=ex.totals.interrupted,
             config={"model": loaded.spec, "inputs": input, "batch": batch, "device": device, "measure": not no_measure,
                     "threads": ex.totals.threads, "precision": precision, "max_time": max_time})
    if ex.totals.interrupted:
        err_console.print("interrupted: reported what was measured before Ctrl-C")
        raise typer.Exit(130)


@app.command(help=f"""Predict MODEL's latency from the counting pass and the machine profile alone,
without timing the model: per op, a fixed cost plus work at the rate this machine reached
on the nearest calibrated single-op shapes (conv, matmul, attention), or a time-over-bytes
curve (elementwise, norm, pool ...), scaled by a fit on synthetic chains, plus a
per-module call cost. Every prediction comes with a 90% interval (the method's own
error on this profile's chains, the calibration's noise, and the ops it extrapolates,
which are listed). The plain roofline sum max(FLOPs / peak, bytes / bandwidth, overhead)
is shown beside it. The profile is the one measured for --threads; the first run
measures what this model needs (under a minute). --measure also times the model (same
threads) and reports the error, unless that measurement was disturbed.

{_CACHE_NOTE}""")
def predict(
    model: ModelArg,
    input: InputOpt = None,
    batch: BatchOpt = None,
    seq: SeqOpt = None,
    kwargs: KwargsOpt = None,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    refresh_machine: RefreshOpt = False,
    quick_machine: QuickOpt = False,
    measure: Annotated[bool, typer.Option("--measure", help="also time the model (flopgap.timing.measure) and report the error")] = False,
    precision: PrecisionOpt = DEFAULT_PRECISION,
    max_time: Annotated[float, typer.Option(help="seconds for --measure")] = 2.0,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    html: HtmlOpt = None,
    db: DbOpt = None,
) -> None:
    from flopgap.count import count as run_count
    from flopgap.explain import PredictionCheck
    from flopgap.explain import predict as run_predict
    from flopgap.report.explain_view import render_prediction
    from flopgap.timing import TimerOptions, check_device, threads_context

    device = check_device(device, what="--device")
    timer = TimerOptions(precision=precision, max_time=max_time, threads=threads,
                         device=device if device.startswith("cuda") else None)
    store = open_db(db)
    loaded, _, tensors = load(model, input, batch, kwargs, seq=seq)
    module, tensors = _on_device(loaded, tensors, device)
    with threads_context(threads):
        result = run_count(module, tensors, model=loaded.spec)
    prof = _profile(device, refresh_machine, quick_machine, threads, result)
    pred = run_predict(result, prof)
    data = pred.to_dict()
    check = None
    if measure:
        from flopgap.timing import measure as timing_measure

        check = PredictionCheck.of(pred, timing_measure(module, tensors, timer, name=loaded.spec))
        data["check"] = check.to_dict()
    if json_path != "-" and csv_path != "-":  # stdout holds the data asked for, nothing else
        render_prediction(pred, console, check=check)
    if json_path:
        write_json(json_path, data)
    if html or db or csv_path:
        keep("predict", loaded.spec, data, html=html, db=store, csv=csv_path,
             interrupted=check is not None and check.measurement.interrupted,
             config={"model": loaded.spec, "inputs": input, "batch": batch, "device": device, "measure": measure,
                     "threads": pred.threads, "precision": precision, "max_time": max_time})
    if check is not None and check.measurement.interrupted:
        err_console.print("interrupted: reported what was measured before Ctrl-C")
        raise typer.Exit(130)
