"""Where inside a model does its prediction miss: the model's parts, each run alone, against the whole.

For models of the development set, each part (the model's children, with containers
(``nn.Sequential``, ``nn.ModuleList``) opened down to a given depth, so that the parts
cover the model: every op runs in one part or in the few lines of the model's own
forward between them) is called on the input it gets inside the model, timed with
``flopgap.timing.measure`` (2% CI, the disturbance sentinel on) and predicted on its own
(``flopgap.count`` of the part, ``flopgap.explain.predict`` on the cached machine profile);
then the whole model, the same two ways. A part whose own error is large is priced wrong
op by op or in sequence; a whole model whose time exceeds the sum of its parts by more
than its prediction does pays something the parts alone do not (weights evicted between
parts, the cold share).

    .venv/bin/python benchmarks/model_parts.py [--threads 2] [--allocator pinned|default] [--no-save]

Everything runs in one process (re-run with glibc's allocator thresholds pinned, as the
machine profile is measured, unless ``--allocator default``), the whole model first; the machine profile is read from
the cache and measured lazily where it lacks what a part needs. Figures go to
``benchmarks/results/model_parts.json`` with the machine's metadata.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (model, how deep containers are opened): development-set models only (the final set stays unseen)
MODELS = (
    ("timm:levit_128s", 2),
    ("timm:mobilevit_xxs", 2),
    ("hf:qwen2-gqa-tiny", 2),
    ("timm:semnasnet_075", 2),
)


def _cover(module, depth: int) -> list[str]:
    """The children of ``module``, each container among them opened into its children
    while above ``depth`` (a ``ModuleList``, which cannot be called, and a wrapper with
    one child, always)."""
    from torch import nn

    out: list[str] = []

    def walk(prefix: str, m, d: int) -> None:
        kids = list(m.named_children())
        for name, child in kids:
            only = len(kids) == 1 and any(True for _ in child.children())   # m wraps child alone
            if isinstance(child, nn.ModuleList) or only or (d < depth and isinstance(child, nn.Sequential)):
                walk(f"{prefix}{name}.", child, d + 1)
            else:
                out.append(f"{prefix}{name}")

    walk("", module, 1)
    return out


def _parts(module, call, args, depth: int):
    """[(name, part, args, kwargs)] for the parts of :func:`_cover` that ran, in run order."""
    import torch

    names = _cover(module, depth)
    seen: dict[str, tuple] = {}
    hooks = [module.get_submodule(n).register_forward_pre_hook(
        lambda m, a, k, n=n: seen.setdefault(n, (a, k)), with_kwargs=True) for n in names]
    try:
        with torch.inference_mode():
            call(*args)
    finally:
        for h in hooks:
            h.remove()
    return [(n, module.get_submodule(n), *seen[n]) for n in seen]


def main(argv: list[str] | None = None) -> int:
    from _results import threads_args

    args = threads_args(__doc__, argv, __file__)
    if args is None:
        return 2
    if isinstance(args, int):   # re-run with the allocator pinned
        return args
    import torch
    from predict_accuracy import _build, _timing

    from flopgap.count import count
    from flopgap.explain import predict
    from flopgap.machine import needs_for, profile_machine
    from flopgap.models import Inputs, bind_inputs

    def timed_and_predicted(fn, fargs, fkwargs, name):
        t = _timing(lambda: fn(*fargs, **fkwargs), (), name, 2.0, args.threads)
        with torch.inference_mode():
            c = count(fn, Inputs(fargs, fkwargs), model=name)
        p = predict(c, profile_machine(needs=needs_for(c)))
        return {**t, "predicted_s": p.latency_s, "ops": len(c.kernel_ops), "cold": p.cold}

    def line(name, r):
        flag = "DISTURBED (not used): " if r["disturbed"] else ""
        return (f"{flag}{name}: measured {r['median_s'] * 1e3:.3f} ms (n={r['samples']}, CI "
                f"{r['ci_low_s'] * 1e3:.3f}..{r['ci_high_s'] * 1e3:.3f}), predicted {r['predicted_s'] * 1e3:.3f} ms, "
                f"error {r['predicted_s'] / r['median_s'] - 1:+.1%}, {r['ops']} ops{', cold' if r['cold'] else ''} "
                f"({args.threads} threads, cpu)")

    out = []
    for model, depth in MODELS:
        module, x = _build(model)
        module.eval()
        call, cargs = bind_inputs(module, x)
        whole = timed_and_predicted(module, tuple(x), dict(getattr(x, "kwargs", None) or {}), model)
        print(line(model, whole), flush=True)
        parts = []
        for name, part, a, k in _parts(module, call, cargs, depth):
            r = timed_and_predicted(part, tuple(a), dict(k), f"{model} {name}")
            print("    " + line(name, r), flush=True)
            parts.append({"part": name, **r})
        sm, sp = sum(p["median_s"] for p in parts), sum(p["predicted_s"] for p in parts)
        disturbed = sum(1 for r in [whole, *parts] if r["disturbed"])
        if disturbed:
            print(f"    sum of parts: inconclusive, {disturbed} of {len(parts) + 1} timings disturbed", flush=True)
        else:
            print(f"    sum of parts: measured {sm * 1e3:.3f} ms, predicted {sp * 1e3:.3f} ms; whole over the sum: "
                  f"measured {whole['median_s'] / sm:.3f}x, predicted {whole['predicted_s'] / sp:.3f}x", flush=True)
        out.append({"model": model, "depth": depth, "whole": whole, "parts": parts, "parts_measured_s": sm,
                    "parts_predicted_s": sp, "disturbed_timings": disturbed})
    figures = {"threads": args.threads, "allocator": args.allocator, "models": out}
    if not args.no_save:
        from _results import save

        print(f"wrote {save('model_parts', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
