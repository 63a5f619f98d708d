"""``flopgap count`` and ``flopgap models``."""

from __future__ import annotations

from typing import Annotated

import typer

from flopgap.cli._app import app
from flopgap.cli._common import (BatchOpt, CsvOpt, DbOpt, HtmlOpt, InputOpt, JsonOpt, KwargsOpt, ModelArg, console,
                                 keep, load, non_negative, open_db, write_json, write_text)


@app.command()
def count(
    model: ModelArg,
    input: InputOpt = None,
    batch: BatchOpt = None,
    kwargs: KwargsOpt = None,
    grad: Annotated[bool, typer.Option("--grad", help="count with autograd enabled instead of inference_mode")] = False,
    meta: Annotated[bool, typer.Option("--meta", help="count on meta tensors: no real kernels run (for models too large to run)")] = False,
    depth: Annotated[int, typer.Option(help="module tree depth shown")] = 2,
    top: Annotated[int, typer.Option(help="number of top ops by FLOPs shown")] = 10,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    html: HtmlOpt = None,
    db: DbOpt = None,
) -> None:
    """Count params, FLOPs (FMA = 2 FLOPs), MACs, bytes read/written, intensity and ops,
    per op and per module, captured at the dispatcher.

    Bytes: every tensor input read once (weights included), every output written once;
    views and no-ops are free. Ops with no formula are listed with their share, never
    counted as a silent zero.
    """
    from flopgap.count import count as run_count
    from flopgap.report.count_view import count_csv, render_count

    non_negative("--depth", depth)
    non_negative("--top", top)
    store = open_db(db)
    loaded, _, tensors = load(model, input, batch, kwargs, meta=meta)
    result = run_count(loaded.module, tensors, model=loaded.spec, grad=grad, meta=meta)
    if json_path != "-" and csv_path != "-":
        render_count(result, console, depth=depth, top=top)
    if json_path:
        write_json(json_path, result.to_dict())
    if csv_path:
        write_text(csv_path, count_csv(result))
    if html or db:
        data = result.to_dict()
        keep("count", loaded.spec, data, html=html, db=store, interrupted=False,
             config={"model": loaded.spec, "inputs": data["inputs"], "grad": grad, "meta": meta})


@app.command()
def models(
    source: Annotated[str, typer.Option(help="builtin (seed:*, zoo:*) or torchvision")] = "builtin",
) -> None:
    """List model specs: the built-ins (seed:*, zoo:*) or torchvision's classification models."""
    from flopgap.errors import UsageError
    from flopgap.models import builtin_models

    if source == "torchvision":
        import torchvision.models as tvm

        for name in tvm.list_models(module=tvm):
            console.print(f"torchvision:{name}")
    elif source == "builtin":
        for spec, desc in builtin_models().items():
            console.print(f"{spec:28s} {desc}")
        console.print("torchvision:NAME             any torchvision classification model (flopgap models --source torchvision)")
    else:
        raise UsageError(f"--source must be builtin or torchvision, got {source!r}")
