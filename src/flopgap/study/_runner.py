"""The loop every study shares: measure items, commit each as soon as it is done.

Pseudocode::

    run = store.find_resumable(kind, config, machine) if resume else None
    run = run or store.start_run(kind, config, machine)
    for target in executor.targets():                   # kinds of machine ("" on one machine)
        skip every (item.model, item.key) already stored for target     # resume, no duplicates
    executor.run(job, the rest), and for each item, wherever it runs:
        claim it in the store (a lease; another worker's item is left to it)
        payload = measure(item)                                          # may take seconds
        while payload["disturbed"] and attempts < retime.attempts:       # the sentinel saw a busy machine
            sleep(retime.pause_s); payload = measure(item)               # re-time it
        store it + close the claim                                       # one transaction
    (Ctrl-C: the run is marked 'interrupted'; kill -9: it stays 'running'; both resumable)

Items are claimed before they are measured (:mod:`flopgap.study.executor`), so two
processes resuming one run, or many cluster nodes sharing it, measure each item once.
A model that fails (it raises any exception but Ctrl-C) is recorded as an ``error`` row
and reported; it never turns into a result. A resumed run retries it. An item still
disturbed after ``retime.attempts`` timings is stored as measured, with ``disturbed:
true`` and its attempts: the analyses leave it out of every verdict and correlation and
list it, so nothing rests on it and nothing is hidden.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Sequence

from flopgap.errors import FlopgapError, RunInterrupted
from flopgap.study.executor import DEFAULT_LEASE_S, ItemOutcome, Job, LocalExecutor

__all__ = ["Item", "StudyWarnings", "Retime", "NO_RETIME", "Progress", "RunOutcome", "open_run", "run_items", "close_run",
           "stored_rows"]


@dataclass(frozen=True)
class Item:
    """One thing a study measures: ``model`` (a label) and ``key`` (e.g. ``b1``)."""

    model: str
    key: str = ""
    spec: str = ""
    batch: int | None = None
    kwargs: tuple = ()  # sorted (name, value) pairs, hashable
    seq: int | None = None  # token length of transformers inputs (None: the model's default)

    @property
    def kwargs_dict(self) -> dict:
        return dict(self.kwargs)


class StudyWarnings:
    """``warnings`` of a study's result: its failed items, then the items timed on a
    disturbed machine (``_disturbed_items()``: name, row), which no verdict uses."""

    failures: dict

    def _disturbed_items(self) -> list[tuple[str, dict]]:
        return []

    @property
    def warnings(self) -> list[str]:
        out = [f"{k} failed: {v}" for k, v in self.failures.items()]
        disturbed = [name for name, _ in self._disturbed_items()]
        if disturbed:
            out.append(f"{len(disturbed)} item(s) timed on a disturbed machine, left out: {', '.join(disturbed[:6])}"
                       + (" ..." if len(disturbed) > 6 else ""))
        return out


@dataclass(frozen=True)
class Retime:
    """What a study does with a measurement the disturbance sentinel flagged: time it
    again, up to ``attempts`` timings in all, ``pause_s`` apart (a passing burst of load
    may end meanwhile). ``sleep`` is replaceable for tests."""

    attempts: int = 3
    pause_s: float = 2.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.pause_s < 0:
            raise FlopgapError(f"Retime needs attempts >= 1 and pause_s >= 0, got {self.attempts}, {self.pause_s}")


NO_RETIME = Retime(attempts=1)


@dataclass
class RunOutcome:
    """What one invocation did: ``measured`` here, ``skipped`` (stored before it began),
    ``elsewhere`` (stored meanwhile by another process or node), ``failed`` (name -> error),
    ``disturbed`` (still disturbed after every re-time), ``retimed`` (name -> timings)."""

    run_id: int
    resumed: bool
    measured: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    disturbed: list[str] = field(default_factory=list)   # still disturbed after every re-time
    retimed: dict[str, int] = field(default_factory=dict)  # item -> timings it took
    elsewhere: list[str] = field(default_factory=list)
    executor: str = "local"

    def merge(self, other: "RunOutcome") -> None:
        self.measured += other.measured
        self.skipped += other.skipped
        self.elsewhere += other.elsewhere
        self.failed.update(other.failed)
        self.disturbed += other.disturbed
        self.retimed.update(other.retimed)


def open_run(store, kind: str, config: dict, machine: dict, *, resume: bool, name: str = "") -> tuple[int, bool]:
    """(run id, resumed?): the latest unfinished matching run when ``resume``, else a new one."""
    if resume:
        found = store.find_resumable(kind, config, machine)
        if found is not None:
            store.set_status(found.id, "running")
            return found.id, True
    return store.start_run(kind, config, machine, name=name), False


@dataclass(frozen=True)
class Progress:
    """What a study is doing, for a progress display: ``done`` of ``total`` items of the
    part ``label`` are finished, ``item`` is the one under way (empty when all are done)
    and ``note`` says why it takes longer (a re-time)."""

    label: str
    done: int
    total: int
    item: str = ""
    note: str = ""


def _name(model: str, key: str, target: str) -> str:
    return " ".join(x for x in (model, key, f"@{target}" if target else "") if x)


def run_items(store, run_id: int, items: Sequence[Item], measure: Callable[[Item], dict], *, kind: str,
              progress: Callable[[Progress], None] | None = None, label: str = "measuring", resumed: bool = False,
              retime: Retime = Retime(), executor=None, timing: bool = True,
              prepare: Callable[[], dict] | None = None, threads: int | None = None,
              lease_s: float = DEFAULT_LEASE_S, devices: dict[str, str] | None = None) -> RunOutcome:
    """Measure every item not yet stored in ``run_id`` (on each of the executor's kinds of
    machine; default: here) and commit each one as it finishes; an item whose payload says
    ``disturbed`` is re-timed as ``retime`` says. ``progress`` receives a :class:`Progress`
    before each item, at each re-time and at the end. ``timing``: the measurement times
    something, so a node runs one such item at a time; ``prepare`` runs once per node
    first; ``devices``: the device each kind of machine times on (unnamed: the CPU)."""
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
              devices=tuple(sorted((devices or {}).items())), retime=retime)
    say = progress or (lambda event: None)
    finished = 0

    def started(name: str, note: str = "") -> None:
        say(Progress(label, finished, len(work), name, note))

    def record(o: ItemOutcome) -> None:
        nonlocal finished
        name = _name(o.model, o.key, o.target)
        if o.status == "measured":
            outcome.measured.append(name)
            if o.timings > 1:
                outcome.retimed[name] = o.timings
            if o.disturbed:
                outcome.disturbed.append(name)
        elif o.status == "done":
            outcome.elsewhere.append(name)
        elif o.status == "failed":
            outcome.failed[name] = o.error or "failed in this invocation"
        finished += 1
        say(Progress(label, finished, len(work)))

    try:
        executor.run(job, work, store, record, on_start=started)
    except KeyboardInterrupt:
        store.set_status(run_id, "interrupted")
        # still a KeyboardInterrupt, now saying what the run keeps (the CLI says how to resume)
        raise RunInterrupted(run_id, store.url, store.run(run_id).measurements) from None
    except BaseException:  # a cluster that lost every node of a kind: resumable too
        store.set_status(run_id, "interrupted")
        raise
    say(Progress(label, len(work), len(work)))
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


def stored_rows(store, run_id, kind: str, row: Callable[[str, dict], dict],
                target: str = "") -> tuple[object, list[dict], dict]:
    """``(run, rows, failures)`` of a stored study run of ``kind``: one row per measured
    model (``row(model, payload)``, with ``label`` and ``batch``), and the errors of the
    models that never succeeded, by ``"model key"``; of one kind of machine (``target``)."""
    run = store.run(run_id)
    if run.kind != kind:
        from flopgap.errors import UsageError

        raise UsageError(f"run {run.id} is a {run.kind} run, not a {kind} study")
    rows = [row(m.model, m.payload) for m in store.measurements(run.id, kind="model", target=target)]
    ok = {(r["label"], f"b{r['batch']}") for r in rows}
    failures = {f"{m.model} {m.key}": m.payload.get("error", "")
                for m in store.measurements(run.id, kind="error", target=target) if (m.model, m.key) not in ok}
    return run, rows, failures
