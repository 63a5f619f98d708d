"""What a timing runs under: the device (checked once, here, for every stage) and the
number of intra-op threads torch uses (set for a block of code, restored after)."""

from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["check_device", "threads_context"]


def check_device(device: str | None, *, what: str = "device", need_cuda: bool = True) -> str:
    """``device`` normalised (``"cpu"``, ``"cuda"``, ``"cuda:N"``); ``None`` is ``"cpu"``.

    Raises :class:`~flopgap.errors.UsageError` for any other device type, a malformed
    name, or (``need_cuda``) a CUDA device this machine does not have. ``what`` names
    the option in the message (``--device``).
    """
    import torch

    from flopgap.errors import UsageError

    if device is None:
        return "cpu"
    try:
        dev = torch.device(str(device))
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"{what} must be cpu or cuda[:N], got {device!r}") from None
    if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise UsageError(f"{what} must be cpu or cuda[:N], got {device!r}")
    if dev.type == "cpu":
        return "cpu"
    if need_cuda:
        if not torch.cuda.is_available():
            raise UsageError(f"{what} {device!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{what} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(dev)


@contextlib.contextmanager
def threads_context(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` intra-op threads (``None``: leave torch as it is);
    the previous count is restored on exit, exceptions and Ctrl-C included. Yields the
    thread count in effect."""
    import torch

    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
