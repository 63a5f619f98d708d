"""``flopgap generate``: prefill vs decode of a causal LM, counted, timed and explained."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from flopgap.cli._app import app
from flopgap.cli._common import DbOpt, HtmlOpt, JsonOpt, KwargsOpt, ModelArg, console, err_console, keep, write_json
from flopgap.errors import UsageError


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{what} takes integers separated by commas, e.g. 1,4,16; got {text!r}") from None
    if not values:
        raise UsageError(f"{what} is empty")
    return values


@app.command()
def generate(
    model: ModelArg,
    prompt: Annotated[int, typer.Option("--prompt", help="prompt length P in tokens (prefill)")] = 128,
    new_tokens: Annotated[int, typer.Option("--new-tokens", help="tokens N to generate (decode steps)")] = 32,
    batch: Annotated[str, typer.Option("--batch", "-b", help="batch sizes, comma-separated: 1 or 1,4,16 (a sweep)")] = "1",
    contexts: Annotated[Optional[str], typer.Option("--contexts", help="decode cache lengths of the sweep, comma-separated (default: the mean over the N steps, P+(N-1)//2)")] = None,
    kwargs: KwargsOpt = None,
    cache: Annotated[str, typer.Option("--cache", help="transformers cache class: dynamic (DynamicCache, what generate() uses) or static (StaticCache)")] = "dynamic",
    threads: Annotated[Optional[int], typer.Option("--threads", help="intra-op threads (default: torch's, stated in the output)")] = None,
    precision: Annotated[float, typer.Option("--precision", help="target half-width of the 95% CI of each timing")] = 0.02,
    max_time: Annotated[float, typer.Option("--max-time", help="seconds of timing per phase and sweep point")] = 2.0,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda[:N]")] = "cpu",
    cuda_graph: Annotated[bool, typer.Option("--cuda-graph", help="also time the decode step captured in a CUDA graph (needs --cache static)")] = False,
    no_time: Annotated[bool, typer.Option("--no-time", help="count and floors only, no timing")] = False,
    full_machine: Annotated[bool, typer.Option("--full-machine", help="use (and measure once, about a minute) the full machine profile; default: the full one when cached, else the quick one")] = False,
    json_path: JsonOpt = None,
    html: HtmlOpt = None,
    db: DbOpt = None,
) -> None:
    """Prefill P prompt tokens and decode N new ones with a KV cache (transformers'
    DynamicCache or StaticCache), at one or more batch sizes.

    Each phase is counted (FLOPs per token, bytes per token split into weights, KV cache
    read and written, and activations; intensity; kernel ops per token), timed with the
    rigorous timer (time to first token, ms per output token, tokens/s, each with its
    95% CI) and set against this machine's measured ceilings (memory-bandwidth and
    compute floors, MBU, MFU). FLOPs: a fused multiply-add = 2. A decode step is timed
    at a fixed cache length: the cache is reset before each timed call.
    """
    from flopgap.generate import GenerateOptions, run_generation
    from flopgap.generate import machine_profile
    from flopgap.models import parse_kwargs
    from flopgap.report.generate_view import render_generation
    from flopgap.timing import check_device

    device = check_device(device, what="--device")
    options = GenerateOptions(prompt=prompt, new_tokens=new_tokens, batches=_ints(batch, "--batch"),
                              contexts=_ints(contexts, "--contexts"), cache=cache, threads=threads,
                              precision=precision, max_time=max_time, device=device, time=not no_time,
                              cuda_graph=cuda_graph)
    show = json_path != "-"
    progress = (lambda msg: err_console.print(f"[dim]{msg}[/dim]")) if show and err_console.is_terminal else None
    def profile():  # measured (or read from the cache) once the model has loaded
        from flopgap.cli.machine import print_profile_warnings

        prof = machine_profile(device, quick=False if full_machine else None)
        print_profile_warnings(prof)
        return prof

    result = run_generation(model, options=options, kwargs=parse_kwargs(kwargs), profile=profile, progress=progress)
    if show:
        render_generation(result, console)
    data = result.to_dict()
    if json_path:
        write_json(json_path, data)
    if html or db:
        keep("generate", result.model, data, html=html, db=db,
             config={"model": result.model, "kwargs": kwargs, "prompt": prompt, "new_tokens": new_tokens,
                     "batches": list(options.batches), "cache": cache, "device": device})
