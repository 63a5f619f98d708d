"""``flopgap variants``: which remedy pays on this machine, and which silently does nothing."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from flopgap.cli._app import app
from flopgap._terminal import printable
from flopgap.cli._common import (DbOpt, HtmlOpt, InputOpt, JsonOpt, KwargsOpt, PrecisionOpt, console, err_console, keep,
                                 open_db, say, write_json)
from flopgap.errors import UsageError
from flopgap.timing import DEFAULT_PRECISION


def _int_list(text: str, what: str, allow_default: bool = False) -> list:
    out = []
    for part in text.split(","):
        part = part.strip()
        if allow_default and part in ("default", "none"):
            out.append(None)
            continue
        try:
            value = int(part)
        except ValueError:
            raise UsageError(f"{what} must be comma-separated positive integers, got {text!r}") from None
        if value <= 0:
            raise UsageError(f"{what} must be comma-separated positive integers, got {text!r}")
        out.append(value)
    return out


@app.command()
def variants(
    model: Annotated[Optional[str], typer.Argument(help="model spec: torchvision:NAME, seed:NAME, zoo:NAME, "
                                                   "pkg.mod:callable, or a .pt2/.pt file")] = None,
    try_: Annotated[Optional[str], typer.Option("--try", help="comma-separated variants (default: every variant that "
                                                "applies); eager is always run as the baseline")] = None,
    batch: Annotated[str, typer.Option("--batch", "-b", help="comma-separated batch sizes, e.g. 1,8,32")] = "1",
    threads: Annotated[str, typer.Option("--threads", help="comma-separated intra-op thread counts, e.g. 1,2 "
                                         "('default': leave torch's setting)")] = "default",
    input: InputOpt = None,
    kwargs: KwargsOpt = None,
    precision: PrecisionOpt = DEFAULT_PRECISION,
    max_time: Annotated[float, typer.Option("--max-time", help="seconds of timing per variant x batch x threads")] = 2.0,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N]")] = "cpu",
    explain: Annotated[bool, typer.Option("--explain", help="run flopgap explain on eager and on each slower variant "
                                           "to say why (profiles the machine once if not cached)")] = False,
    list_: Annotated[bool, typer.Option("--list", help="list the variants and exit")] = False,
    plot: Annotated[Optional[str], typer.Option("--plot", help="write latency and throughput vs batch size (.png/.svg/.pdf)")] = None,
    json_path: JsonOpt = None,
    html: HtmlOpt = None,
    db: DbOpt = None,
) -> None:
    """Time variants of a model against eager: int8 dynamic quantization (torchao, else
    the deprecated torch.ao), torch.compile modes, bf16/fp16, channels_last.

    For each variant x batch x threads: latency with 95% CI, speed-up vs eager (eager /
    variant, timed alternately) with CI, throughput, max abs/rel error vs eager outputs,
    peak memory, kernel-op counts. A variant that changes nothing is flagged no-op; one
    that fails is reported with its reason and the others still run. Ctrl-C keeps the
    rows already measured.
    """
    from flopgap.timing import TimerOptions
    from flopgap.variants import get_variant, plot_variants, run_variants, variant_names

    if list_:
        for name in variant_names():
            console.print(f"{name:22s} {get_variant(name).description}", soft_wrap=True)
        return
    if model is None:
        raise UsageError("missing MODEL: flopgap variants MODEL [--try ...] (flopgap variants --list lists variants)")
    if plot and not plot.lower().endswith((".png", ".svg", ".pdf")):
        raise UsageError(f"--plot must end in .png, .svg or .pdf, got {plot!r}")
    names = None
    if try_ is not None:
        names = [n.strip() for n in try_.split(",") if n.strip()]
        for n in names:
            get_variant(n)  # unknown names fail before any model is built
    batches = _int_list(batch, "--batch")
    thread_counts = _int_list(threads, "--threads", allow_default=True)
    timer = TimerOptions(precision=precision, max_time=max_time)
    from flopgap.cli._common import load

    store = open_db(db)
    loaded, _, _ = load(model, input, None, kwargs)
    show = err_console.is_terminal
    progress = (lambda msg: err_console.print(printable(msg), style="dim", markup=False)) if show else None
    result = run_variants(loaded, variants=names, batches=batches, threads=thread_counts, input_specs=input,
                          timer=timer, device=device, explain=explain,
                          progress=progress)
    if json_path != "-":
        from flopgap.report.variants_view import render_variants

        render_variants(result, console)
    if json_path:
        write_json(json_path, result.to_dict())
    if plot:
        path = plot_variants(result, plot)
        say(f"wrote {path}")
    if html or db:  # rows measured before a Ctrl-C are kept too
        figures = []
        if html:
            import tempfile
            from pathlib import Path

            with tempfile.TemporaryDirectory() as tmp:
                png = plot_variants(result, Path(tmp) / "variants.png")
                figures.append((Path(png).read_bytes(), "latency and throughput vs batch size per variant"))
        keep("variants", loaded.spec, result.to_dict(), html=html, db=store, figures=figures,
             interrupted=result.interrupted,
             config={"model": loaded.spec, "try": try_, "batch": batch, "threads": threads, "inputs": input,
                     "precision": precision, "max_time": max_time, "device": device})
    if result.interrupted:
        err_console.print(f"error: interrupted; the {len(result.rows)} row(s) measured so far are kept above")
        raise typer.Exit(130)
