"""Options that say where a study's items run (``--executor``, ``--address``,
``--machines``, ``--lease``), shared by ``study zoo`` and ``study seed``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from flopgap._terminal import printable
from flopgap.errors import UsageError

__all__ = ["ExecutorOpt", "AddressOpt", "MachinesOpt", "LeaseOpt", "make_executor", "report_nodes"]

ExecutorOpt = Annotated[str, typer.Option("--executor", help="where items run: local (here, one after the other) or ray (the nodes of a Ray cluster offering the flopgap_bench resource; pip install 'flopgap[fleet]')")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", help="Ray cluster address with --executor ray: auto, HOST:PORT or ray://HOST:10001 (default: start a one-node cluster here)")]
MachinesOpt = Annotated[Optional[str], typer.Option("--machines", help="kinds of machine to measure every item on, comma-separated labels, each optionally LABEL:DEVICE (gpu-h200:cuda; zoo study); a node of kind L offers the Ray resource flopgap_machine_L (--executor ray)")]
LeaseOpt = Annotated[float, typer.Option("--lease", help="seconds a worker holds an item without a heartbeat before another worker may take it over (a dead node's item waits this long)")]


def make_executor(executor: str, address: str | None, machines: str | None):
    """The executor the options name; usage errors for combinations that cannot work."""
    from flopgap.study import LocalExecutor, RayExecutor

    kind = executor.strip().lower()
    labels = [m.strip() for m in (machines or "").split(",") if m.strip()]
    if kind == "local":
        if address or labels:
            raise UsageError(f"{'--address' if address else '--machines'} needs --executor ray")
        return LocalExecutor()
    if kind == "ray":
        if machines is not None and not labels:
            raise UsageError("--machines is empty: name one or more labels, e.g. --machines cpu-small,gpu-h200")
        return RayExecutor(address, labels)
    raise UsageError(f"unknown --executor {executor!r}: choose local or ray")


def check_lease(lease: float) -> float:
    if not lease >= 1:
        raise UsageError(f"--lease must be at least 1 second, got {lease}")
    return lease


def report_nodes(executor, console) -> None:
    """One line per cluster node that took part (stderr): kind, CPU, threads, profile."""
    for nid, info in getattr(executor, "nodes", {}).items():
        prep = info.get("prepare") or {}
        profile = f", profile {prep['profile']} ({prep.get('source', '')})" if prep.get("profile") else ""
        console.print(printable(f"node {info.get('host', nid[:8])} [{info['fingerprint'][:8]}]: "
                                f"{info.get('cpu_model', '?')}, {info.get('torch_threads', '?')} threads{profile}"),
                      markup=False, highlight=False)
        if prep.get("warning"):
            console.print(printable(f"  warning: {prep['warning']}"), markup=False, highlight=False)
