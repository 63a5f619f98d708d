"""Access to the stages a study joins (timing, machine profile, explain), imported late.

Studies import these inside functions so ``flopgap.study`` imports even where a stage is
missing; using a missing stage fails with one clear line instead of silently skipping it.
"""

from __future__ import annotations

import importlib

from flopgap.errors import FlopgapError

__all__ = ["stage", "machine_metadata", "machine_profile"]


def stage(module: str, *names: str):
    """``stage("flopgap.timing", "measure", "compare")`` -> the attributes, or a clear error."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise FlopgapError(f"this study needs {module}, which is not available ({e})") from None
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        raise FlopgapError(f"this study needs {module}.{', '.join(missing)}, which is not available")
    values = tuple(getattr(mod, n) for n in names)
    return values[0] if len(values) == 1 else values


def machine_metadata(device: str | None = None) -> dict:
    """Machine metadata of this run (``flopgap.timing.environment(device)``: a CUDA device
    adds the GPU and its driver)."""
    environment = stage("flopgap.timing", "environment")
    return dict(environment(device) if device else environment())


_PROFILES: dict = {}  # this process's profiles, by (quick, device, torch threads, cache folder)


def machine_profile(*, quick: bool = False, progress: bool = False, console=None, device: str | None = None):
    """This machine's profile (cached by the machine stage; measured once, about a minute,
    or seconds with ``quick``), with a transient progress bar when ``progress``. Kept in
    memory for the process, so a worker reads it from disk once."""
    import torch

    profile_machine, cache_dir = stage("flopgap.machine", "profile_machine", "cache_dir")
    key = (quick, device or "cpu", torch.get_num_threads(), str(cache_dir()))
    if key not in _PROFILES:
        _PROFILES[key] = _profile(profile_machine, quick, progress, console, device)
    return _PROFILES[key]


def _profile(profile_machine, quick: bool, progress: bool, console, device):
    if not progress:
        return profile_machine(quick=quick, device=device)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("machine profile (measured once, then cached)", total=None)

        def update(done: int, total: int, label: str = "") -> None:
            bar.update(task, completed=done, total=total)

        return profile_machine(quick=quick, progress=update, device=device)
