"""Keep the profiler's C++ chatter off the user's terminal, and nothing else.

kineto prints start/stop markers straight to file descriptor 2 from C++. Used by every
stage that runs ``torch.profiler`` (explain's attribution, variants' peak memory): the
descriptor is captured and every line that is not known profiler noise is written back,
so a real error message is never swallowed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

__all__ = ["quiet_profiler"]

@contextlib.contextmanager
def _filter_stderr_fd(noise: tuple[str, ...]):
    """Capture file descriptor 2 and write back every line except known profiler noise
    (kineto prints start/stop markers from C++ straight to the descriptor)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(n in ln for n in noise)]
            if kept:
                sys.stderr.write("".join(kept))


_KINETO_NOISE = ("SyncActivityProfilerHandler", "gpuGetDeviceCount", "DeviceProperties.cpp")


@contextlib.contextmanager
def _kineto_quiet():
    """``KINETO_LOG_LEVEL=5`` (errors only) while the profiler runs, unless the user set
    it; the environment is restored after, so nothing leaks into the caller's process."""
    before = os.environ.get("KINETO_LOG_LEVEL")
    if before is None:
        os.environ["KINETO_LOG_LEVEL"] = "5"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("KINETO_LOG_LEVEL", None)



@contextlib.contextmanager
def quiet_profiler():
    """``KINETO_LOG_LEVEL`` errors-only and known noise filtered from fd 2, both restored after."""
    with _kineto_quiet(), _filter_stderr_fd(_KINETO_NOISE):
        yield
