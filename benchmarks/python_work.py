"""How much Python a model runs between its kernels, and does the prediction price it?

The prediction adds a model's Python as bytecode instructions (counted with the model,
``CountResult.python_opcodes``) times the cost of one instruction of module code
(``flopgap.machine._chains.python_opcode_seconds``, measured here in this process).
This benchmark takes blocks of models from timm, torchvision and transformers, each on
the input it gets inside its model, and times, with ``flopgap.timing.measure`` (2% CI,
the disturbance sentinel on), the block called as the model calls it and a replay of
the ATen ops it dispatched (recorded once, then called back to back from a Python loop
with the recorded arguments: the kernels without the block's own Python, plus the
loop's few instructions per op). The block's time beyond the replay is its Python;
beside it, the block's instructions and instructions x cost.

    .venv/bin/python benchmarks/python_work.py [--threads 2] [--allocator pinned|default] [--no-save]

The process re-runs itself with glibc's allocator thresholds pinned, as the machine
profile is measured (``--allocator default``: glibc as it comes). Figures go to ``benchmarks/results/python_work.json`` with the machine's metadata.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (model, block): library blocks of the same kind, written with more or less Python
BLOCKS = (
    ("timm:semnasnet_075", "blocks.3.1"),         # inverted residual, norm+act wrapper modules
    ("timm:semnasnet_075", "blocks.5.1"),         # the same with squeeze-excitation
    ("torchvision:mnasnet0_5", "layers.9.0"),     # inverted residual, plain torch.nn
    ("torchvision:mobilenet_v3_large", "features.5"),   # with squeeze-excitation
    ("torchvision:resnet18", "layer1.0"),         # basic block: few, large kernels
    ("timm:levit_128s", "stages.1.blocks.0"),     # attention with BatchNorm'd linears
    ("hf:qwen2-gqa-tiny", "model.model.layers.0"),  # decoder layer: RMS norm, rotary, GQA
)


def _block(model: str, part: str):
    """(block, args, kwargs) as the model calls it, from one forward of the model."""
    import torch
    from predict_accuracy import _build

    from flopgap.models import bind_inputs

    module, x = _build(model)
    module.eval()
    call, args = bind_inputs(module, x)
    block = module.get_submodule(part)
    got = {}
    hook = block.register_forward_pre_hook(lambda m, a, k: got.setdefault("in", (a, k)), with_kwargs=True)
    try:
        with torch.inference_mode():
            call(*args)
    finally:
        hook.remove()
    a, k = got["in"]
    return block, a, k


def _replay(block, args, kwargs):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    ops = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, a=(), k=None):
            ops.append((func, a, k or {}))
            return func(*a, **(k or {}))

    with torch.inference_mode(), Record():
        block(*args, **kwargs)

    def replay():
        for func, a, k in ops:
            func(*a, **k)

    return replay, len(ops)


def main(argv: list[str] | None = None) -> int:
    from _results import threads_args

    args = threads_args(__doc__, argv, __file__)
    if args is None:
        return 2
    if isinstance(args, int):   # re-run with the allocator pinned
        return args
    import torch
    from predict_accuracy import _timing

    from flopgap.count import python_opcodes
    from flopgap.machine._chains import python_opcode_seconds

    k = python_opcode_seconds(0.2)
    print(f"one bytecode instruction of module code: {k * 1e9:.2f} ns ({args.threads} threads, cpu; "
          "a tree of kernel-free modules, median call / instructions)")

    def timed(fn, name):
        return _timing(fn, (), name, 2.0, args.threads)

    rows = []
    for model, part in BLOCKS:
        block, a, kw = _block(model, part)
        replay, n_ops = _replay(block, a, kw)
        with torch.inference_mode():
            instr = python_opcodes(lambda: block(*a, **kw))
        t_block = timed(lambda: block(*a, **kw), f"{model} {part}")
        t_replay = timed(replay, f"{model} {part} replay")
        beyond = t_block["median_s"] - t_replay["median_s"]
        row = {"model": model, "part": part, "ops": n_ops, "instructions": instr, "block": t_block,
               "replay": t_replay, "beyond_replay_s": beyond, "priced_s": instr * k,
               "disturbed": t_block["disturbed"] or t_replay["disturbed"]}
        rows.append(row)
        flag = "DISTURBED (not used): " if row["disturbed"] else ""
        print(f"{flag}{model} {part}: block {t_block['median_s'] * 1e6:.1f} us (n={t_block['samples']}, CI "
              f"{t_block['ci_low_s'] * 1e6:.1f}..{t_block['ci_high_s'] * 1e6:.1f}), replay of its {n_ops} ops "
              f"{t_replay['median_s'] * 1e6:.1f} us (n={t_replay['samples']}, CI {t_replay['ci_low_s'] * 1e6:.1f}.."
              f"{t_replay['ci_high_s'] * 1e6:.1f}); beyond the replay {beyond * 1e6:.1f} us; {instr} instructions "
              f"x {k * 1e9:.2f} ns = {instr * k * 1e6:.1f} us ({args.threads} threads, cpu)", flush=True)
    figures = {"threads": args.threads, "allocator": args.allocator, "instruction_s": k, "blocks": rows}
    if not args.no_save:
        from _results import save

        print(f"wrote {save('python_work', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
