"""The loop every study shares: measure items one by one, commit each as soon as it is done.

Pseudocode::

    run = store.find_resumable(kind, config, machine) if resume else None
    run = run or store.start_run(kind, config, machine)
    for item in items:
        if (item.model, item.key) already stored in run: skip          # resume, no duplicates
        payload = measure(item)                                          # may take seconds
        store.put(run, item.model, kind, payload, key=item.key)          # its own transaction
    (Ctrl-C: the run is marked 'interrupted'; kill -9: it stays 'running'; both resumable)

A model that fails (it raises any exception but Ctrl-C) is recorded as
an ``error`` row and reported; it never turns into a result. A resumed run retries it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from flopgap.errors import FlopgapError, one_line

__all__ = ["Item", "RunOutcome", "open_run", "run_items", "stored_rows"]


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


@dataclass
class RunOutcome:
    run_id: int
    resumed: bool
    measured: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def open_run(store, kind: str, config: dict, machine: dict, *, resume: bool, name: str = "") -> tuple[int, bool]:
    """(run id, resumed?): the latest unfinished matching run when ``resume``, else a new one."""
    if resume:
        found = store.find_resumable(kind, config, machine)
        if found is not None:
            store.set_status(found.id, "running")
            return found.id, True
    return store.start_run(kind, config, machine, name=name), False


def run_items(store, run_id: int, items: Sequence[Item], measure: Callable[[Item], dict], *, kind: str,
              progress: bool = False, label: str = "measuring", resumed: bool = False,
              console=None) -> RunOutcome:
    """Measure every item not yet stored in ``run_id`` and commit each one as it finishes."""
    outcome = RunOutcome(run_id, resumed)
    done = store.done(run_id, kind)
    todo = [it for it in items if (it.model, it.key) not in done]
    outcome.skipped = [f"{it.model} {it.key}".strip() for it in items if (it.model, it.key) in done]

    bar = None
    if progress and todo:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                       console=console, transient=True)
        bar.start()
        task = bar.add_task(label, total=len(todo))
    try:
        for it in todo:
            name = f"{it.model} {it.key}".strip()
            if bar is not None:
                bar.update(task, description=f"{label} {name[:48]}")
            t0 = time.perf_counter()
            try:
                payload = measure(it)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:
                # keep going with the other models; the failure is stored and shown, never a result,
                # and retried on --resume
                outcome.failed[name] = one_line(e)
                store.put(run_id, it.model, "error", {"error": one_line(e), "kind": kind}, key=it.key,
                          on_conflict="replace")
            else:
                payload = dict(payload)
                payload.setdefault("wall_s", time.perf_counter() - t0)
                # skip, not error: a second process resuming the same run may have stored it meanwhile
                store.put(run_id, it.model, kind, payload, key=it.key, on_conflict="skip")
                outcome.measured.append(name)
            if bar is not None:
                bar.advance(task)
    except KeyboardInterrupt:
        store.set_status(run_id, "interrupted")
        raise
    finally:
        if bar is not None:
            bar.stop()
    return outcome


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
    return result


def stored_rows(store, run_id, kind: str, row: Callable[[str, dict], dict]) -> tuple[object, list[dict], dict]:
    """``(run, rows, failures)`` of a stored study run of ``kind``: one row per measured
    model (``row(model, payload)``, with ``label`` and ``batch``), and the errors of the
    models that never succeeded, by ``"model key"``."""
    run = store.run(run_id)
    if run.kind != kind:
        from flopgap.errors import UsageError

        raise UsageError(f"run {run.id} is a {run.kind} run, not a {kind} study")
    rows = [row(m.model, m.payload) for m in store.measurements(run.id, kind="model")]
    ok = {(r["label"], f"b{r['batch']}") for r in rows}
    failures = {f"{m.model} {m.key}": m.payload.get("error", "") for m in store.measurements(run.id, kind="error")
                if (m.model, m.key) not in ok}
    return run, rows, failures
