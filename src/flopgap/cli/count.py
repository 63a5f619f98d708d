"""``flopgap count`` and ``flopgap models``."""

from __future__ import annotations

from typing import Annotated

import typer

from flopgap.cli._app import app
from flopgap.cli._common import (BatchOpt, CsvOpt, DbOpt, HtmlOpt, InputOpt, JsonOpt, KwargsOpt, ModelArg, SeqOpt,
                                 console, keep, load, non_negative, open_db, write_json)


@app.command()
def count(
    model: ModelArg,
    input: InputOpt = None,
    batch: BatchOpt = None,
    seq: SeqOpt = None,
    kwargs: KwargsOpt = None,
    grad: Annotated[bool, typer.Option("--grad", help="count with autograd enabled instead of inference_mode")] = False,
    backward: Annotated[bool, typer.Option("--backward", help="count a training step's forward + backward, per phase: the model in training mode, one backward from gradients of ones on the outputs (no loss, no optimizer step); every backward op counted with its own formula")] = False,
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

    --backward: training FLOPs, counted at the dispatcher op by op (the forward in
    training mode, then the backward: weight gradients always, input gradients where
    autograd needs them), reported per phase with the backward/forward ratio.
    """
    from flopgap.count import count as run_count
    from flopgap.report.count_view import render_count

    non_negative("--depth", depth)
    non_negative("--top", top)
    store = open_db(db)
    loaded, _, tensors = load(model, input, batch, kwargs, meta=meta, seq=seq)
    result = run_count(loaded.module, tensors, model=loaded.spec, grad=grad, meta=meta, backward=backward)
    if json_path != "-" and csv_path != "-":  # stdout holds the data asked for, nothing else
        render_count(result, console, depth=depth, top=top)
    if json_path:
        write_json(json_path, result.to_dict())
    if html or db or csv_path:
        data = result.to_dict()
        keep("count", loaded.spec, data, html=html, db=store, interrupted=False, csv=csv_path,
             config={"model": loaded.spec, "inputs": data["inputs"], "grad": grad, "meta": meta,
                     "backward": backward})


@app.command()
def models(
    source: Annotated[str, typer.Option(help="builtin (seed:*, zoo:*), torchvision, timm or hf")] = "builtin",
) -> None:
    """List model specs: the built-ins (seed:*, zoo:*), torchvision's classification
    models, timm's models, or the transformers architectures hf: builds from a config."""
    from flopgap.errors import UsageError
    from flopgap.models import builtin_models

    if source == "hf":
        from flopgap.models import HF_ARCHS

        for name, arch in HF_ARCHS.items():
            console.print(f"hf:{name:26s} {arch.description}", markup=False)
        console.print("hf:PATH/config.json          any transformers config file on disk (no download)")
    elif source == "timm":
        from flopgap.models import timm_models

        for name in timm_models():
            console.print(f"timm:{name}", markup=False)
    elif source == "torchvision":
        import torchvision.models as tvm

        for name in tvm.list_models(module=tvm):
            console.print(f"torchvision:{name}")
    elif source == "builtin":
        for spec, desc in builtin_models().items():
            console.print(f"{spec:28s} {desc}")
        console.print("torchvision:NAME             any torchvision classification model (flopgap models --source torchvision)")
        console.print("timm:NAME                    any timm model (flopgap models --source timm)")
        console.print("hf:ARCH                      a transformers model from its config (flopgap models --source hf)")
    else:
        raise UsageError(f"--source must be builtin, torchvision, timm or hf, got {source!r}")
