"""Names of worker processes, shared by the store (claims) and the executors.

An owner is ``host/boot-id:pid:nonce``: the boot id (Linux) tells two boots of one
host apart, so a process id is only trusted on the host and boot that wrote it.
"""

from __future__ import annotations

import os
import socket
import uuid

__all__ = ["worker_id", "owner_dead"]


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8]
    except OSError:
        return ""


_HOST = f"{socket.gethostname()}/{_boot_id()}"


def worker_id() -> str:
    """A new owner name for this process: ``host/boot-id:pid:nonce``."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_dead(owner: str) -> bool:
    """True only when ``owner`` ran on this host in this boot and its process is gone
    (unknown hosts, other boots and live or reused process ids count as alive)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != _HOST or _HOST.endswith("/"):
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, owned by another user
        return False
    return False
