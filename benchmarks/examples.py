"""Run the example commands the README and the handbook show, and keep their output.

Every example output in ``README.md`` and ``docs/*.md`` sits between markers
``<!-- summary:examples.ID -->`` and is written by ``benchmarks/summarize.py`` from
``benchmarks/results/examples.json``, which this script writes: the command line, its
exit status, its full output (stdout and stderr, as a user sees them), how long it took,
and the machine and commit it ran on. No example output in a doc is typed by hand.

    python benchmarks/examples.py                 # every example (a few minutes on 2 cores)
    python benchmarks/examples.py --only count    # re-run some, keep the others
    python benchmarks/summarize.py                # then rewrite the docs' blocks

The commands run in a scratch folder (their files go there, not into the repository), at
100 columns as when piped, with Python's own warnings silenced (torch's deprecation
notices are not flopgap output). Run it on a quiet machine: the output is what a user of
that machine would see, disturbance warnings included.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

FLOPGAP = [sys.executable, "-m", "flopgap"]

_PYTEST_EXAMPLE = '''\
import torch, torchvision

def test_resnet18_latency(flopgap_latency):
    model = torchvision.models.resnet18().eval()
    flopgap_latency(model, (torch.randn(1, 3, 224, 224),), max_ms=60)
'''


_REPR_EXAMPLE = '''\
import torch
from flopgap.count import count
from flopgap.timing import TimerOptions, measure

model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
x = (torch.randn(8, 256),)
print(repr(count(model, x)))
print(repr(measure(model, x, TimerOptions(threads=2, max_time=1))))
'''


@dataclass(frozen=True)
class Example:
    """One command, and which of its output lines a doc shows (``head`` first lines and
    ``tail`` last ones; None keeps every line)."""

    id: str
    argv: tuple[str, ...]
    head: int | None = None
    tail: int = 0
    files: dict[str, str] = field(default_factory=dict)  # written into the scratch folder first
    shown_as: str | None = None                           # the command line a doc prints


EXAMPLES = (
    Example("count", ("count", "torchvision:mobilenet_v3_small"), head=24),
    Example("time", ("time", "seed:ex2-deep", "--vs", "seed:ex2-wide", "--threads", "2")),
    Example("explain", ("explain", "seed:ex2-deep", "--threads", "2", "--trace", "ex2-deep.trace.json")),
    Example("explain-resnet50", ("explain", "torchvision:resnet50", "--threads", "2"), head=12, tail=12),
    Example("explain-mobilenet", ("explain", "torchvision:mobilenet_v3_large", "--threads", "2"), head=12,
            tail=14),
    Example("predict", ("predict", "torchvision:resnet18", "--threads", "2", "--measure")),
    Example("variants", ("variants", "seed:ex3-float", "--try", "int8-dynamic,bf16,channels_last", "--batch", "1,32",
                         "--threads", "2")),
    Example("generate", ("generate", "hf:llama", "--kwargs", '{"num_hidden_layers": 4, "hidden_size": 512, '
                         '"intermediate_size": 1408, "num_attention_heads": 8, "num_key_value_heads": 2}',
                         "--prompt", "128", "--new-tokens", "32", "--threads", "2"), head=40),
    Example("study-seed", ("study", "seed", "--threads", "2", "--db", "examples.db")),
    # each side repeated in 5 fresh processes: the ratio's CI then holds the variation between processes
    Example("compare-a", ("time", "torchvision:mobilenet_v3_small", "--threads", "2", "--processes", "5",
                          "--json", "a.json"), head=6),
    Example("compare-b", ("time", "torchvision:mobilenet_v3_small", "--threads", "2", "--processes", "5",
                          "--json", "b.json"), head=6),
    Example("compare", ("compare", "a.json", "b.json")),
    Example("pytest", ("pytest",), files={"test_latency.py": _PYTEST_EXAMPLE},
            shown_as="pytest test_latency.py"),
    Example("repr", ("python",), files={"repr_example.py": _REPR_EXAMPLE}, shown_as="python repr_example.py"),
)


def _argv(ex: Example) -> list[str]:
    if ex.argv[0] == "pytest":
        return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_latency.py"]
    if ex.argv[0] == "python":
        return [sys.executable, *ex.files]
    return [*FLOPGAP, *ex.argv]


def _shown(ex: Example) -> str:
    if ex.shown_as:
        return ex.shown_as
    return "flopgap " + " ".join(a if a.replace(":", "").replace("-", "").replace(",", "").replace(".", "")
                                 .replace("_", "").isalnum() else f"'{a}'" for a in ex.argv)


def run(ex: Example, cwd: Path) -> dict:
    for name, text in ex.files.items():
        (cwd / name).write_text(text)
    env = {**os.environ, "COLUMNS": "100", "PYTHONWARNINGS": "ignore", "TERM": "dumb"}
    t0 = time.perf_counter()
    r = subprocess.run(_argv(ex), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    from _results import _commit
    from flopgap.timing import environment

    return {"command": _shown(ex), "rc": r.returncode, "wall_s": wall, "output": r.stdout,
            "head": ex.head, "tail": ex.tail, "commit": _commit(), "time": environment()["time"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated example ids to re-run (default: all)")
    args = ap.parse_args()
    from _results import load, save

    ids = [e.id for e in EXAMPLES]
    only = set(args.only.split(",")) if args.only else set(ids)
    if only - set(ids):
        print(f"error: unknown example(s) {', '.join(sorted(only - set(ids)))}; known: {', '.join(ids)}",
              file=sys.stderr)
        return 2
    old = (load("examples") or {}).get("figures", {}) if args.only else {}
    out = dict(old)
    with tempfile.TemporaryDirectory(prefix="flopgap-examples-") as tmp:
        for ex in EXAMPLES:
            if ex.id not in only:
                continue
            res = run(ex, Path(tmp))
            out[ex.id] = res
            print(f"# {ex.id}: exit {res['rc']} in {res['wall_s']:.0f} s", flush=True)
    path = save("examples", {k: out[k] for k in ids if k in out})
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
