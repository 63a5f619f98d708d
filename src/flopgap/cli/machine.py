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
               "nothing is read from the working directory. The first run for a fingerprint and thread count "
               "measures it, with progress on a terminal (--quick-machine: a smaller, faster profile).")

DeviceOpt = Annotated[str, typer.Option("--device", help="cpu or cuda")]
RefreshOpt = Annotated[bool, typer.Option("--refresh-machine", help="re-measure the machine profile instead of using the cache")]
QuickOpt = Annotated[bool, typer.Option("--quick-machine", help="use a quick machine profile (fewer, shorter micro-benchmarks; cached apart from the full one)")]


def _progress():
    """A one-line progress callback on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None

    def cb(i: int, n: int, label: str) -> None:
        err_console.print(f"calibrating {i + 1}/{n}: {label:40s}", end="\r")
    return cb


def _profile(device: str, refresh: bool, quick: bool, threads: int | None = None):
    """The machine profile for ``threads`` intra-op threads (profiles are kept per thread count)."""
    from flopgap.machine import profile_machine
    from flopgap.timing import threads_context

    with threads_context(threads), phase("loading or measuring the machine profile (it is cached only once complete)"):
        prof = profile_machine(refresh=refresh, device=device, quick=quick, progress=_progress())
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
a per-op calibration grid used by `flopgap predict`. Each figure with its spread (IQR).

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


