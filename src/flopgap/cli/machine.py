"""``flopgap machine``, and the machine profile every predicting command loads."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from flopgap.cli._app import app
from flopgap._terminal import printable
from flopgap.cli._common import JsonOpt, ThreadsOpt, console, err_console, write_json
from flopgap.cli._interrupt import phase

_CACHE_NOTE = ("The machine profile is cached per machine fingerprint (CPU model, cores, threads, torch "
               "version, device) as JSON in $FLOPGAP_CACHE_DIR, or ~/.cache/flopgap/ when that is unset; "
               "nothing is read from the working directory. A prediction measures only what it reads and the "
               "cache lacks (the ceilings and chains once, then the calibration cases near the model's ops), "
               "with progress and an ETA on a terminal; what was measured on a busy machine is not cached "
               "(--quick-machine: a smaller, faster profile).")

DeviceOpt = Annotated[str, typer.Option("--device", help="cpu or cuda")]
RefreshOpt = Annotated[bool, typer.Option("--refresh-machine", help="re-measure the machine profile instead of using the cache")]
QuickOpt = Annotated[bool, typer.Option("--quick-machine", help="use a quick machine profile (fewer, shorter micro-benchmarks; cached apart from the full one)")]


class _ProfileProgress:
    """The machine profile's progress on stderr: on a terminal a bar with the time left
    (the library reports work in estimated milliseconds, so its rate gives an ETA);
    elsewhere one line when measuring starts and one when it ends. Nothing is drawn
    when the profile comes from the cache."""

    def __init__(self):
        self.bar = None
        self.task = None
        self.started = None

    def __call__(self, done: int, total: int, label: str) -> None:
        import time

        from rich.markup import escape

        if self.started is None:
            self.started = time.monotonic()
            if sys.stderr.isatty():
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

                self.bar = Progress(TextColumn("machine profile"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                    TextColumn("{task.description}"), console=err_console, transient=True)
                self.bar.start()
                self.task = self.bar.add_task("", total=total)
            else:
                err_console.print(f"measuring the machine profile (about {total / 1000:.0f} s of work on a quiet "
                                  "machine; cached afterwards)", markup=False, highlight=False)
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total, description=escape(label[:48]))

    def close(self) -> None:
        import time

        if self.bar is not None:
            self.bar.stop()
        if self.started is not None:
            err_console.print(f"measured the machine profile in {time.monotonic() - self.started:.0f} s",
                              markup=False, highlight=False)


def _profile(device: str, refresh: bool, quick: bool, threads: int | None = None, count_result=None):
    """The machine profile for ``threads`` intra-op threads (profiles are kept per thread
    count), completed with what a prediction of ``count_result`` reads (None: the full
    profile)."""
    from flopgap.machine import needs_for, profile_machine
    from flopgap.timing import threads_context

    bar = _ProfileProgress()
    try:
        with threads_context(threads), phase("loading or measuring the machine profile (what one run measures is "
                                             "cached when that run completes)"):
            needs = needs_for(count_result, quick=quick) if count_result is not None else None
            prof = profile_machine(refresh=refresh, device=device, quick=quick, progress=bar, needs=needs)
    finally:
        bar.close()
    print_profile_warnings(prof)
    return prof


def print_profile_warnings(prof) -> None:
    """The profile's caveats on stderr, one line each (the library never prints)."""
    for w in prof.warnings:
        err_console.print(printable(f"flopgap: warning: {w}"), style="yellow", markup=False, highlight=False,
                          soft_wrap=True)


@app.command(help=f"""Measure this machine's ceilings: peak matmul FLOP/s per dtype (fp32, bf16, int8
where supported), main-memory bandwidth (STREAM copy/add/triad), cache-resident bandwidth,
eager dispatch overhead (a tiny op), module-call overhead, CUDA kernel-launch latency, and
a per-op calibration grid used by `flopgap predict` (the whole grid: a full profile). Each
figure with its spread (IQR).

{_CACHE_NOTE} --refresh re-measures.""")
def machine(
    refresh: Annotated[bool, typer.Option("--refresh", help="re-measure even if a cached profile exists")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="quick profile: smaller arrays, shorter runs, a quarter of the calibration grid")] = False,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    json_path: JsonOpt = None,
) -> None:
    from flopgap.machine import cache_path
    from flopgap.report.explain_view import render_machine

    prof = _profile(device, refresh, quick, threads)
    if json_path != "-":
        render_machine(prof, console, path=str(cache_path(prof.fingerprint, prof.quick)))
    if json_path:
        write_json(json_path, prof.to_dict())


