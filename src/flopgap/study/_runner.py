"""The loop every study shares: measure items, commit each as soon as it is done.

Pseudocode::

    run = store.find_resumable(kind, config, machine) if resume else None
    run = run or store.start_run(kind, config, machine)
    for target in executor.targets():                   # kinds of machine ("" on one machine)
        skip every (item.model, item.key) already stored for target     # resume, no duplicates
    executor.run(job, the rest)       # each item: claim, measure, store + mark done, one transaction
    (Ctrl-C: the run is marked 'interrupted'; kill -9: it stays 'running'; both resumable)

Items are claimed in the store before they are measured (:mod:`flopgap.study.executor`),
so two processes resuming one run, or many cluster nodes sharing it, measure each item
once. A model that fails (it raises any exception but Ctrl-C) is recorded as an
``error`` row and reported; it never turns into a result. A resumed run retries it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable, Sequence

from flopgap.errors import FlopgapError
from flopgap.study.executor import DEFAULT_LEASE_S, ItemOutcome, Job, LocalExecutor

__all__ = ["Item", "RunOutcome", "open_run", "run_items"]


@dataclass(frozen=True)
class Item:
    """One thing a study measures: ``model`` (a label) and ``key`` (e.g. ``b1``)."""

    model: str
    key: str = ""
    spec: str = ""
    batch: int | None = None
    kwargs: tuple = ()  # sorted (name, value) pairs, hashable

    @property
    def kwargs_dict(self) -> dict:
        return dict(self.kwargs)


@dataclass
class RunOutcome:
    """What one invocation did: ``measured`` here, ``skipped`` (stored before it began),
    ``elsewhere`` (stored meanwhile by another process or node), ``failed`` (name -> error)."""

    run_id: int
    resumed: bool
    measured: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    elsewhere: list[str] = field(default_factory=list)
    executor: str = "local"

    def merge(self, other: "RunOutcome") -> None:
        self.measured += other.measured
        self.skipped += other.skipped
        self.elsewhere += other.elsewhere
        self.failed.update(other.failed)


def open_run(store, kind: str, config: dict, machine: dict, *, resume: bool, name: str = "") -> tuple[int, bool]:
    """(run id, resumed?): the latest unfinished matching run when ``resume``, else a new one."""
    if resume:
        found = store.find_resumable(kind, config, machine)
        if found is not None:
            store.set_status(found.id, "running")
            return found.id, True
    return store.start_run(kind, config, machine, name=name), False


def _name(model: str, key: str, target: str) -> str:
    return " ".join(x for x in (model, key, f"@{target}" if target else "") if x)


def run_items(store, run_id: int, items: Sequence[Item], measure: Callable[[Item], dict], *, kind: str,
              progress: bool = False, label: str = "measuring", resumed: bool = False,
              console=None, executor=None, timing: bool = True, prepare: Callable[[], dict] | None = None,
              threads: int | None = None, lease_s: float = DEFAULT_LEASE_S,
              devices: dict[str, str] | None = None) -> RunOutcome:
    """Measure every item not yet stored in ``run_id`` (on each of the executor's targets)
    and commit each one as it finishes. ``timing``: the measurement times something, so
    a node runs one such item at a time; ``prepare`` runs once per node first;
    ``devices``: the device each kind of machine times on (unnamed: the CPU)."""
    executor = executor or LocalExecutor()
    outcome = RunOutcome(run_id, resumed, executor=executor.name)
    work = []
    for target in executor.targets():
        done = store.done(run_id, kind, target)
        for it in items:
            if (it.model, it.key) in done:
                outcome.skipped.append(_name(it.model, it.key, target))
            else:
                work.append((it, target))
    job = Job(run_id, kind, measure, timing=timing, invocation=uuid.uuid4().hex[:16], lease_s=lease_s,
              prepare=prepare, open_store=_store_opener(store), threads=threads,
              devices=tuple(sorted((devices or {}).items())))

    bar = None
    if progress and work:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                       console=console, transient=True)
        bar.start()
        task = bar.add_task(label, total=len(work))

    def record(o: ItemOutcome) -> None:
        name = _name(o.model, o.key, o.target)
        if o.status == "measured":
            outcome.measured.append(name)
        elif o.status == "done":
            outcome.elsewhere.append(name)
        elif o.status == "failed":
            outcome.failed[name] = o.error or "failed in this invocation"
        if bar is not None:
            bar.update(task, description=f"{label} {name[:48]}")
            bar.advance(task)

    try:
        executor.run(job, work, store, record)
    except BaseException:  # Ctrl-C, or a cluster that lost every node of a kind: resumable
        store.set_status(run_id, "interrupted")
        raise
    finally:
        if bar is not None:
            bar.stop()
    return outcome


def _store_opener(store):
    """How a worker elsewhere opens the same store: the store's class at its URL, a SQLite
    file by its absolute path and never created anew (a worker whose host cannot see the
    file fails instead of filling a store of its own)."""
    from functools import partial
    from pathlib import Path

    from sqlalchemy.engine import make_url

    if not hasattr(store, "url"):
        return None
    url = make_url(store.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        url = url.set(database=str(Path(url.database).expanduser().resolve()))
    return partial(type(store), url.render_as_string(hide_password=False), create=False)


def close_run(store, run_id: int, result, *, measured: bool, nothing: str):
    """End a study run: ``failed`` (and a one-line error naming the first failure) when
    nothing was measured, ``incomplete`` when some items failed (listed, and --resume
    retries them), else ``finished``; ``result.run`` is refreshed from the store."""
    if not measured:
        store.set_status(run_id, "failed")
        name, err = next(iter(result.failures.items()), ("", "nothing measured"))
        raise FlopgapError(f"{nothing}; first failure: {name}: {err}")
    store.set_status(run_id, "incomplete" if result.failures else "finished")
    result.run = store.run(run_id)
    for per_machine in getattr(result, "results", {}).values():  # a run over several kinds of machine
        per_machine.run = result.run
    return result
