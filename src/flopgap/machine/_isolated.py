"""Measure the CPU profile in a child process whose allocator is pinned.

Why: glibc's ``malloc`` hands blocks above its mmap threshold fresh pages, and returns
the top of the heap to the kernel once more than its trim threshold is free. Both
thresholds move while a process runs (each freed mmapped block raises them), so
whether an op pays a minor page fault per 4 KiB of output on every call depends on
which ops ran *before* it in the process. Timed in the calibration's fixed order, a
12 MB ``relu`` measured 2.4x slower than the same case timed after a larger op, and a
112x112 depthwise conv 13x slower. A profile must not depend on the order of its own
cases, so it is measured in a child process with both thresholds pinned
(:data:`PINNED_ALLOCATOR`): no trimming, and mmap only above 32 MiB, so ops run on
warm heap pages, as they do in a long-running process after warm-up. The page-fault
micro-benchmark (64 MiB blocks, above the pinned mmap threshold) still measures what
one fault costs. The user's own process is left as it is.

The parent writes the request (:class:`~flopgap.machine._measure.Request`) to a
temporary file; the child measures it, writes what it measured as JSON beside it, and
reports progress on stdout, one ``progress<TAB>done<TAB>total<TAB>label`` line per step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["PINNED_ALLOCATOR", "allocator_pinned", "child_env", "measure_in_child", "print_progress"]

PINNED_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}
_PREFIX = "progress\t"


def allocator_pinned(environ=None) -> bool:
    """True when this process was started with glibc's thresholds pinned as above."""
    env = os.environ if environ is None else environ
    return all(env.get(k) == v for k, v in PINNED_ALLOCATOR.items())


def print_progress(i: int, n: int, label: str, file=None) -> None:
    """A child's progress line on its stdout (or ``file``), as its parent reads it."""
    print(f"{_PREFIX}{i}\t{n}\t{label}", file=file, flush=True)


def child_env() -> dict[str, str]:
    """The environment of a measuring child: this one, glibc's thresholds pinned, and
    ``PYTHONPATH`` led by the directory this very flopgap was imported from (a source
    tree put on ``sys.path`` by hand included)."""
    import flopgap

    root = str(Path(list(flopgap.__path__)[0]).resolve().parent)
    return {**os.environ, **PINNED_ALLOCATOR,
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def measure_in_child(request=None, *, quick: bool, threads: int,
                     progress: Callable[[int, int, str], None] | None = None):
    """Run :func:`flopgap.machine._measure.run_request` (CPU) in a child process with the
    pinned allocator and ``threads`` torch threads; returns what it measured
    (:class:`~flopgap.machine._measure.Measured`). ``request`` defaults to everything."""
    from flopgap.errors import FlopgapError
    from flopgap.machine._measure import Measured, Request

    if request is None:
        from flopgap.machine._grid import grid

        request = Request(True, True, tuple(c.id for c in grid(quick)))
    with tempfile.TemporaryDirectory(prefix="flopgap-machine-") as tmp:
        out = Path(tmp) / "measured.json"
        req = Path(tmp) / "request.json"
        req.write_text(json.dumps(request.to_dict()))
        cmd = [sys.executable, "-m", "flopgap.machine._isolated", str(req), str(out), "--threads", str(threads)]
        if quick:
            cmd.append("--quick")
        env = child_env()
        with open(Path(tmp) / "stderr", "w+") as err:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
            try:
                for line in proc.stdout:
                    if line.startswith(_PREFIX) and progress is not None:
                        _, i, n, label = line.rstrip("\n").split("\t", 3)
                        progress(int(i), int(n), label)
                rc = proc.wait()
            except BaseException:  # Ctrl-C included: the child must not outlive us
                proc.kill()
                proc.wait()
                raise
            err.seek(0)
            lines = [ln for ln in err.read().splitlines() if ln.strip()]
        if rc != 0 or not out.exists():
            raise FlopgapError(f"measuring the machine profile failed (exit {rc}): "
                               f"{lines[-1] if lines else 'no message'}")
        return Measured.from_dict(json.loads(out.read_text()))


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m flopgap.machine._isolated")
    ap.add_argument("request")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from flopgap.machine._measure import Request, run_request

    request = Request.from_dict(json.loads(Path(args.request).read_text()))
    measured = run_request(request, quick=args.quick, progress=print_progress)
    Path(args.out).write_text(json.dumps(measured.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
