"""Where every benchmark keeps its figures: versioned JSON in ``benchmarks/results/``.

``save(name, figures)`` writes ``benchmarks/results/<name>.json`` (the latest run, which
``benchmarks/summarize.py`` turns into the tables the docs show) and a dated copy under
``benchmarks/results/history/``. Each file carries the schema, the benchmark's name, the
git commit it ran on, the command line, and the machine (``flopgap.timing.environment()``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA = "flopgap.bench/1"


def _commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                           cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0 or not r.stdout.strip():
        return None
    try:  # a run from a tree with uncommitted changes to the code says so
        d = subprocess.run(["git", "status", "--porcelain", "--", ":/src", ":/benchmarks/*.py"], capture_output=True,
                           text=True, timeout=10, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return r.stdout.strip()
    return r.stdout.strip() + ("+dirty" if d.returncode == 0 and d.stdout.strip() else "")


def save(name: str, figures: dict, *, environment: dict | None = None) -> Path:
    """Write the figures of one benchmark run; returns the path of the latest-run file."""
    from flopgap._json import dumps
    from flopgap.timing import environment as env

    machine = environment if environment is not None else env()
    payload = {"schema": SCHEMA, "benchmark": name, "commit": _commit(), "argv": sys.argv[1:],
               "machine": machine, "figures": figures}
    RESULTS.mkdir(parents=True, exist_ok=True)
    latest = RESULTS / f"{name}.json"
    latest.write_text(dumps(payload) + "\n")
    stamp = str(machine.get("time", "")).replace(":", "").replace("-", "")[:15] or "undated"
    hist = RESULTS / "history"
    hist.mkdir(exist_ok=True)
    (hist / f"{name}-{stamp}.json").write_text(dumps(payload) + "\n")
    return latest


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def allocator_option(ap) -> None:
    """``--allocator pinned|default`` on a benchmark that times models against the machine profile."""
    ap.add_argument("--allocator", choices=("pinned", "default"), default="pinned",
                    help="pinned (default): re-run with glibc's mmap/trim thresholds pinned, as the machine profile "
                         "is measured; default: glibc as it comes")


def rerun_pinned(allocator: str, script: str, argv: list[str] | None) -> int | None:
    """The exit status of ``script`` re-run with glibc's allocator thresholds pinned
    (``flopgap.machine._isolated.PINNED_ALLOCATOR``, as the machine profile is measured)
    when ``allocator`` is ``"pinned"`` and this process is not; None when it already runs
    as asked. Unpinned, whether a model's large activations get fresh pages (a page fault
    per 4 KiB) on every call depends on what the process allocated before, so its time
    would not describe the state the profile was measured in."""
    import os

    from flopgap.machine._isolated import PINNED_ALLOCATOR, allocator_pinned

    if allocator != "pinned" or allocator_pinned():
        return None
    argv_ = sys.argv[1:] if argv is None else list(argv)
    return subprocess.call([sys.executable, script, *argv_], env={**os.environ, **PINNED_ALLOCATOR})


def threads_args(doc: str, argv: list[str] | None, script: str | None = None):
    """``--threads N`` (default 2), ``--no-save`` and (with ``script``) ``--allocator``,
    parsed for a benchmark whose description is the first paragraph of ``doc``, torch set
    to N threads, transformers kept offline; None after one error line when N < 1; with
    ``script`` and a pinned allocator asked for in an unpinned process, the exit status of
    ``script`` re-run pinned (:func:`rerun_pinned`), an int."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-save", action="store_true")
    if script is not None:
        allocator_option(ap)
    args = ap.parse_args(argv)
    if args.threads < 1:
        print("error: --threads >= 1", file=sys.stderr)
        return None
    if script is not None:
        rc = rerun_pinned(args.allocator, script, argv)
        if rc is not None:
            return rc
    import os

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    return args
