"""Where a study's items run: in this process (:class:`LocalExecutor`, the default) or
on the nodes of a Ray cluster (:class:`flopgap.study.RayExecutor`). Studies hand an
executor a :class:`Job` and a list of ``(item, target)`` pairs and get one
:class:`ItemOutcome` per pair; they never know where an item ran.

Every worker, wherever it runs, does the same for one item (:func:`work_item`)::

    claim the item for its target in the store (a lease of job.lease_s seconds)
        done / failed in this invocation      -> report it, measure nothing
        busy (another worker holds it)     -> the executor asks again later
    measure it, renewing the lease every lease/3 s from a heartbeat thread; while the
        timing stage says the machine was disturbed, re-time it (job.retime)
    store result + mark the claim done in one transaction (a result already stored is kept)
    on an exception: store an error row, mark the claim failed (a later --resume retries it)
    on Ctrl-C: release the lease at once and stop

So an item is measured into a run once per target, whichever workers, processes or
machines share the run (two ``--resume`` of one study, or a Ray worker that died and
whose item another node takes over when its lease runs out).

``target`` is a kind of machine (a ``--machines`` label), ``""`` for "any": one machine,
or an unlabelled cluster.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from flopgap._workers import worker_id
from flopgap.errors import FlopgapError, one_line

__all__ = ["Job", "ItemOutcome", "Executor", "LocalExecutor", "NodeContext", "work_item", "default_threads",
           "DEFAULT_LEASE_S"]

DEFAULT_LEASE_S = 60.0   # a dead worker's item waits at most this long before another worker takes it
_POLL_MAX_S = 5.0        # re-ask about an item another worker holds at least this often


@dataclass(frozen=True)
class Job:
    """What to do with each item of one study phase (picklable when it goes to a cluster).

    ``measure(item) -> payload`` runs where the item runs; ``timing`` says whether it
    times anything (then a node runs one such item at a time, with all its cores);
    ``prepare()`` (optional) runs once per node before its first item, alone on it
    (e.g. measuring or loading the machine profile) and returns a summary dict.
    ``open_store()`` opens the results store on a node (the driver's URL).
    ``threads``: torch intra-op threads on a node (``None``: torch's default there).
    ``devices``: ``(target, device)`` pairs for kinds of machine that time on a device
    other than the CPU; a measurement (and a prepare step) with an ``on_device(device)``
    method is run through it there. ``retime`` (:class:`flopgap.study.Retime`): how often
    a measurement whose payload says ``disturbed`` is taken again.
    """

    run_id: int
    kind: str
    measure: Callable[[Any], dict]
    timing: bool = True
    invocation: str = ""
    lease_s: float = DEFAULT_LEASE_S
    prepare: Callable[[], dict] | None = None
    open_store: Callable[[], Any] | None = None
    threads: int | None = None
    devices: tuple = ()
    retime: Any = None

    def device(self, target: str) -> str | None:
        """The device items of kind ``target`` time on (``None``: the CPU)."""
        return dict(self.devices).get(target)

    def measure_for(self, target: str) -> Callable[[Any], dict]:
        return _on_device(self.measure, self.device(target))

    def prepare_for(self, target: str) -> Callable[[], dict] | None:
        return None if self.prepare is None else _on_device(self.prepare, self.device(target))


def _on_device(fn, device: str | None):
    if device is None:
        return fn
    if not hasattr(fn, "on_device"):
        raise FlopgapError(f"this study cannot time on {device}: its measurement has no device")
    return fn.on_device(device)


@dataclass(frozen=True)
class ItemOutcome:
    """What became of one item on one target: ``measured`` (this worker stored it, after
    ``timings`` timings, ``disturbed`` still), ``done`` (stored by another worker),
    ``failed`` (``error`` says why) or ``busy`` (another worker holds it until ``expires``;
    executors ask again)."""

    model: str
    key: str
    target: str
    status: str
    error: str = ""
    node: str = ""
    machine_fingerprint: str = ""
    expires: float = 0.0
    attempts: int = 0
    wall_s: float = 0.0
    timings: int = 1
    disturbed: bool = False


@dataclass
class NodeContext:
    """Where a worker runs: a node name, its machine metadata and fingerprint, and the
    owner name under which it claims items."""

    name: str
    owner: str
    metadata: dict = field(default_factory=dict)
    fingerprint: str = ""


class Executor(Protocol):
    """Runs a study's items somewhere. ``targets`` are the kinds of machine each item is
    measured on (``("",)``: once, anywhere); ``machine()`` is the run's machine record."""

    name: str

    def targets(self) -> tuple[str, ...]: ...

    def machine(self) -> dict: ...

    def run(self, job: Job, work: Sequence[tuple[Any, str]], store,
            on_outcome: Callable[[ItemOutcome], None] | None = None,
            on_start: Callable[..., None] | None = None) -> list[ItemOutcome]: ...


class _Heartbeat:
    """Renews a claim every ``lease_s / 3`` seconds while the item is measured."""

    def __init__(self, store, job: Job, item, target: str, owner: str):
        self._args = (job.run_id, item.model, job.kind, item.key, target)
        self._store, self._owner, self._lease = store, owner, job.lease_s
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._loop, name="flopgap-lease", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._lease / 3):
            try:
                if not self._store.renew(*self._args, owner=self._owner, lease_s=self._lease):
                    self.lost = True  # another worker took it over; our result will not replace its
                    return
            except Exception:  # noqa: BLE001  (a database hiccup: the next beat tries again)
                continue

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _disturbance_reasons(payload) -> list[str]:
    """The sentinel's reasons anywhere in a payload (``disturbance.reasons`` of each timing),
    strings only, each once."""
    found: list[str] = []

    def walk(v) -> None:
        if isinstance(v, dict):
            d = v.get("disturbance")
            if isinstance(d, dict) and isinstance(d.get("reasons"), (list, tuple)):
                found.extend(r for r in d["reasons"] if isinstance(r, str) and r not in found)
            for k, x in v.items():
                if k != "disturbance":
                    walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(payload)
    return found


def _measure(job: Job, item, target: str, note: Callable[[str], None] | None) -> tuple[dict, int]:
    """(payload, timings): measure, and re-time while the payload says ``disturbed``."""
    measure = job.measure_for(target)
    payload, timings = measure(item), 1
    retime = job.retime
    while retime is not None and payload.get("disturbed") and timings < retime.attempts:
        if note is not None:
            why = _disturbance_reasons(payload)
            note(f"re-timing: machine disturbed (attempt {timings + 1})" + (f": {'; '.join(why)}" if why else ""))
        retime.sleep(retime.pause_s)
        timings += 1
        payload = measure(item)
    return payload, timings


def work_item(job: Job, item, target: str, store, node: NodeContext,
              note: Callable[[str], None] | None = None) -> ItemOutcome:
    """Claim, measure and store one item on this worker (see the module docstring);
    ``note`` hears why it takes longer (a re-time)."""
    base = dict(model=item.model, key=item.key, target=target, node=node.name, machine_fingerprint=node.fingerprint)
    c = store.claim(job.run_id, item.model, job.kind, item.key, target, owner=node.owner, invocation=job.invocation,
                    lease_s=job.lease_s, node=node.name, machine=node.fingerprint)
    if c.status != "claimed":
        return ItemOutcome(**base, status=c.status, expires=c.expires, attempts=c.attempts)
    t0 = time.perf_counter()
    try:
        with _Heartbeat(store, job, item, target, node.owner):
            payload, timings = _measure(job, item, target, note)
    except (KeyboardInterrupt, SystemExit):
        store.release(job.run_id, owner=node.owner)  # a resume may take it at once
        raise
    except Exception as e:  # the failure is stored and shown, never a result; --resume retries it
        error = one_line(e)
        store.fail(job.run_id, item.model, job.kind, {"error": error, "kind": job.kind, "node": node.name}, item.key,
                   target, owner=node.owner, machine=node.fingerprint)
        return ItemOutcome(**base, status="failed", error=error, attempts=c.attempts,
                           wall_s=time.perf_counter() - t0)
    payload = dict(payload)
    wall = time.perf_counter() - t0
    payload.setdefault("wall_s", wall)
    if timings > 1:
        payload["attempts"] = timings
    wrote = store.complete(job.run_id, item.model, job.kind, payload, item.key, target, owner=node.owner,
                           machine=node.fingerprint)
    return ItemOutcome(**base, status="measured" if wrote else "done", attempts=c.attempts, wall_s=wall,
                       timings=timings, disturbed=bool(payload.get("disturbed")))


def local_node(store, metadata: dict | None = None) -> NodeContext:
    """This process as a worker: its host, machine metadata (registered in the store)
    and a fresh owner name."""
    if metadata is None:
        from flopgap.timing import environment

        metadata = environment()
    fp = store.register_machine(metadata)
    return NodeContext(socket.gethostname(), worker_id(), metadata, fp)


class LocalExecutor:
    """Runs every item in this process, one after the other (the default).

    An item another process holds (two ``--resume`` of one run) is asked about again
    every ``lease/4`` seconds (at most 5 s) until it is stored, failed, or its lease ran
    out (then it is measured here). ``clock``/``sleep`` are replaceable for tests.
    """

    name = "local"

    def __init__(self, *, machine: dict | None = None, device: str | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self._machine, self._device = machine, device
        self._clock, self._sleep = clock, sleep
        self._prepared: set[str] = set()

    def targets(self) -> tuple[str, ...]:
        return ("",)

    def machine(self) -> dict:
        if self._machine is None:
            from flopgap.timing import environment

            self._machine = environment(self._device)
        return self._machine

    def run(self, job: Job, work: Sequence[tuple[Any, str]], store,
            on_outcome: Callable[[ItemOutcome], None] | None = None,
            on_start: Callable[..., None] | None = None) -> list[ItemOutcome]:
        """Run ``work`` here; ``on_start(name, note="")`` hears which item is under way."""
        node = local_node(store, self.machine())
        for target in {t for _, t in work}:
            prepare = job.prepare_for(target)
            if prepare is not None and repr(prepare) not in self._prepared:
                prepare()
                self._prepared.add(repr(prepare))
        poll = max(0.05, min(job.lease_s / 4, _POLL_MAX_S))
        queue: deque = deque(work)
        waiting: list[tuple[float, Any, str]] = []
        out: list[ItemOutcome] = []
        while queue or waiting:
            if not queue:
                wake = min(t for t, _, _ in waiting)
                delay = wake - self._clock()
                if delay > 0:
                    self._sleep(delay)
                now = self._clock()
                due = [w for w in waiting if w[0] <= now]
                waiting = [w for w in waiting if w[0] > now]
                queue.extend((it, t) for _, it, t in due)
                continue
            item, target = queue.popleft()
            name = " ".join(x for x in (item.model, item.key) if x)
            if on_start is not None:
                on_start(name)
            outcome = work_item(job, item, target, store, node,
                                note=None if on_start is None else (lambda text, n=name: on_start(n, text)))
            if outcome.status == "busy":
                waiting.append((min(outcome.expires, self._clock() + poll), item, target))
                continue
            out.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
        return out


_DEFAULT_THREADS: list[int] = []


def default_threads() -> int:
    """torch's intra-op thread count for a fresh process on this machine, as a user's
    own shell would get it (Ray caps ``OMP_NUM_THREADS`` in its workers to the CPUs a
    task asked for; that cap is left out here). Measured once per process."""
    if not _DEFAULT_THREADS:
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        try:
            p = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                               capture_output=True, text=True, timeout=300)
            _DEFAULT_THREADS.append(int(p.stdout.strip()))
        except (OSError, ValueError, subprocess.SubprocessError):
            _DEFAULT_THREADS.append(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                    else os.cpu_count() or 1)
    return _DEFAULT_THREADS[0]
