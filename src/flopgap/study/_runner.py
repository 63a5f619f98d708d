"""The loop every study shares: measure items one by one, commit each as soon as it is done.

Pseudocode::

    run = store.find_resumable(kind, config, machine) if resume else None
    run = run or store.start_run(kind, config, machine)
    for item in items:
        if (item.model, item.key) already stored in run: skip          # resume, no duplicates
        payload = measure(item)                                          # may take seconds
        while payload["disturbed"] and attempts < retime.attempts:       # the sentinel saw a busy machine
            sleep(retime.pause_s); payload = measure(item)               # re-time it
        store.put(run, item.model, kind, payload, key=item.key)          # its own transaction
    (Ctrl-C: the run is marked 'interrupted'; kill -9: it stays 'running'; both resumable)

A model that fails (it raises any exception but Ctrl-C) is recorded as
an ``error`` row and reported; it never turns into a result. A resumed run retries it.
An item still disturbed after ``retime.attempts`` timings is stored as measured, with
``disturbed: true`` and its attempts: the analyses leave it out of every verdict and
correlation and list it, so nothing rests on it and nothing is hidden.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from flopgap.errors import FlopgapError, RunInterrupted, one_line

__all__ = ["Item", "Retime", "NO_RETIME", "Progress", "RunOutcome", "open_run", "run_items", "close_run"]


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
    run_id: int
    resumed: bool
    measured: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    disturbed: list[str] = field(default_factory=list)   # still disturbed after every re-time
    retimed: dict[str, int] = field(default_factory=dict)  # item -> timings it took


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


def run_items(store, run_id: int, items: Sequence[Item], measure: Callable[[Item], dict], *, kind: str,
              progress: Callable[[Progress], None] | None = None, label: str = "measuring", resumed: bool = False,
              retime: Retime = Retime()) -> RunOutcome:
    """Measure every item not yet stored in ``run_id`` and commit each one as it finishes;
    an item whose payload says ``disturbed`` is re-timed as ``retime`` says. ``progress``
    receives a :class:`Progress` before each item, at each re-time and at the end."""
    outcome = RunOutcome(run_id, resumed)
    done = store.done(run_id, kind)
    todo = [it for it in items if (it.model, it.key) not in done]
    outcome.skipped = [f"{it.model} {it.key}".strip() for it in items if (it.model, it.key) in done]
    say = progress or (lambda event: None)
    try:
        for i, it in enumerate(todo):
            name = f"{it.model} {it.key}".strip()
            say(Progress(label, i, len(todo), name))
            t0 = time.perf_counter()
            try:
                payload = measure(it)
                attempts = 1
                while payload.get("disturbed") and attempts < retime.attempts:
                    say(Progress(label, i, len(todo), name, f"re-timing: machine disturbed (attempt {attempts + 1})"))
                    retime.sleep(retime.pause_s)
                    attempts += 1
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
                if attempts > 1:
                    payload["attempts"] = attempts
                    outcome.retimed[name] = attempts
                if payload.get("disturbed"):
                    outcome.disturbed.append(name)
                # skip, not error: a second process resuming the same run may have stored it meanwhile
                store.put(run_id, it.model, kind, payload, key=it.key, on_conflict="skip")
                outcome.measured.append(name)
        say(Progress(label, len(todo), len(todo)))
    except KeyboardInterrupt:
        store.set_status(run_id, "interrupted")
        # still a KeyboardInterrupt, now saying what the run keeps (the CLI says how to resume)
        raise RunInterrupted(run_id, store.url, store.run(run_id).measurements) from None
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
