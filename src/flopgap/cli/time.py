"""``flopgap time``: steady-state latency with a confidence interval."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated, Optional

import typer

from flopgap.cli._app import app
from flopgap._terminal import markup
from flopgap.cli._common import (BatchOpt, CsvOpt, DbOpt, HtmlOpt, InputOpt, JsonOpt, KwargsOpt, ModelArg,
                                 PrecisionOpt, SeqOpt, ThreadsOpt, console, err_console, keep, load, open_db,
                                 write_json)
from flopgap.errors import FlopgapError, UsageError
from flopgap.timing import DEFAULT_MAX_TIME, DEFAULT_PRECISION


def _child_args(model, vs, input, batch, kwargs, threads, grad, precision, max_time, device,
                seq=None) -> list[str]:
    args = [model] + (["--seq", str(seq)] if seq is not None else [])
    if vs:
        args += ["--vs", vs]
    for spec in input or []:
        args += ["--input", spec]
    if batch is not None:
        args += ["--batch", str(batch)]
    if kwargs:
        args += ["--kwargs", kwargs]
    if threads is not None:
        args += ["--threads", str(threads)]
    if grad:
        args.append("--grad")
    if device:
        args += ["--device", device]
    return args + ["--precision", repr(precision), "--max-time", repr(max_time)]


def _load_on(model, input, batch, kwargs, device, seq=None):
    from flopgap.models import inputs_to

    loaded, _, tensors = load(model, input, batch, kwargs, seq=seq)
    if device and device.startswith("cuda"):
        loaded.module.to(device)
        tensors = inputs_to(tensors, device)
    return loaded, tensors


def _progress():
    """A status line on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        return None, None
    status = err_console.status("timing ...")

    def update(phase: str, info: dict) -> None:
        if phase == "cold":
            status.update(f"{markup(info['name'])}: first call {info['cold_s'] * 1e3:.3g} ms; warming up ...")
        elif phase == "warmup":
            status.update(f"{markup(info['name'])}: warm-up {info['calls']} calls, block of {info['block']}; sampling ...")
        elif phase == "sampling":
            hw = ", ".join(f"+-{100 * h:.2f}%" for h in info["half_width"])
            status.update(f"sampling: {info['samples']} samples, CI {hw}, "
                          f"{info['elapsed']:.1f} of {info['max_time']:g} s (Ctrl-C keeps what is measured)")

    return status, update


@app.command("time")
def time_(
    model: ModelArg,
    vs: Annotated[Optional[str], typer.Option("--vs", help="a second model spec, timed alternately with MODEL in the same run; reports the ratio MODEL/VS with its 95% CI (--input, --batch, --kwargs apply to both)")] = None,
    input: InputOpt = None,
    batch: BatchOpt = None,
    seq: SeqOpt = None,
    kwargs: KwargsOpt = None,
    threads: ThreadsOpt = None,
    grad: Annotated[bool, typer.Option("--grad", help="time with autograd enabled instead of inference_mode")] = False,
    precision: PrecisionOpt = DEFAULT_PRECISION,
    max_time: Annotated[float, typer.Option("--max-time", help="seconds to spend at most per run (warm-up included)")] = DEFAULT_MAX_TIME,
    processes: Annotated[int, typer.Option("--processes", help="repeat the whole measurement in N fresh processes and report the spread between them")] = 1,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu or cuda[:N] (default: cpu)")] = None,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    html: HtmlOpt = None,
    db: DbOpt = None,
) -> None:
    """Time a model: cold first call, warm-up to steady state, then adaptive samples
    until the 95% CI of the median is within --precision (or --max-time runs out).

    Latency is the median of steady-state samples under torch.inference_mode(); each
    sample is a block of calls long enough that the clock's cost is under 0.1% of it
    (1 call for slow models). The CI is the distribution-free order-statistic interval
    from the binomial. --vs times two models alternately and reports their ratio with a
    paired-bootstrap CI. Ctrl-C reports what was measured so far (exit 130).
    """
    from flopgap.report.time_view import render_comparison, render_measurement, render_repeats
    from flopgap.timing import TimerOptions, check_device, compare, measure, repeat_in_processes

    if processes < 1:
        raise UsageError(f"--processes must be a positive integer, got {processes}")
    if device is not None:
        device = check_device(device, what="--device")
    # validated here, before the slow part (model load or child processes)
    options = TimerOptions(precision=precision, max_time=max_time, threads=threads, grad=grad, device=device)
    show = json_path != "-" and csv_path != "-"  # stdout holds the data asked for, nothing else
    store = open_db(db)

    if processes > 1:
        # what the children would reject, rejected here before the first one starts
        # (without --input the model's own inputs are known only once it is built: --batch
        # is then checked on a one-element input, which catches the absurd values)
        from flopgap.models import InputSpec, parse_input_spec, parse_kwargs, with_batch

        with_batch(tuple(parse_input_spec(s) for s in input or ()) or (InputSpec((1,)),), batch)
        parse_kwargs(kwargs)
        args = _child_args(model, vs, input, batch, kwargs, threads, grad, precision, max_time, device, seq)
        if show and sys.stderr.isatty():
            err_console.print(f"running {processes} fresh processes one after another ...")
        result = repeat_in_processes(args, processes)
        if show:
            render_repeats(result, console)
    else:
        from flopgap.models import bind_inputs

        loaded, tensors = _load_on(model, input, batch, kwargs, device, seq)
        status, update = _progress()
        if vs:
            loaded_b, tensors_b = _load_on(vs, input, batch, kwargs, device, seq)
            with status or contextlib.nullcontext():
                fn_a, args_a = bind_inputs(loaded.module, tensors)
                fn_b, args_b = bind_inputs(loaded_b.module, tensors_b)
                result = compare(fn_a, args_a, fn_b, args_b, options,
                                 names=(loaded.spec, loaded_b.spec), progress=update)
            if show:
                render_comparison(result, console)
        else:
            with status or contextlib.nullcontext():
                fn, args = bind_inputs(loaded.module, tensors)
                result = measure(fn, args, options, name=loaded.spec, progress=update)
            if show:
                render_measurement(result, console)
    if json_path:
        write_json(json_path, result.to_dict())
    if html or db or csv_path:  # an interrupted run is kept too: it says so in its payload
        label = f"{model} vs {vs}" if vs else model
        keep("time", label, result.to_dict(), html=html, db=store, interrupted=result.interrupted, csv=csv_path,
             config={"model": model, "vs": vs, "inputs": input, "batch": batch, "threads": threads, "grad": grad,
                     "precision": precision, "max_time": max_time, "processes": processes, "device": device})
    if result.interrupted:
        err_console.print("interrupted: reported what was measured before Ctrl-C")
        raise typer.Exit(130)
    if getattr(result, "failure", None):  # --processes: what finished is reported above
        raise FlopgapError(result.failure)
