"""Claims: a worker's lease on one item of a run, so that many workers (the nodes of a
Ray cluster, or two processes resuming one run) share a run and no item is measured
into it twice. Also the ``machines`` table (metadata per machine fingerprint).

One transaction per step; the unique key ``(run_id, model, kind, key, target)`` of
both ``claims`` and ``measurements`` decides every race::

    claim(item):
        a result is stored for it                  -> done
        no claim row: insert one                   -> claimed  (a lost insert race re-reads)
        state done                                 -> done
        failed in this invocation                     -> failed   (an invocation tries an item once;
                                                                a later --resume retries it)
        claimed, lease live and owner not dead     -> busy     (another worker measures it)
        else (lease expired, owner process dead on this host, failed in another invocation):
            compare-and-set on (owner, attempts)   -> claimed  (busy if another worker won)
    measuring: renew(item) every lease/3 s pushes the lease end forward (a heartbeat)
    complete(item, payload): result row (an existing one is kept) + claim done
    fail(item, error):       error row (replaced) + claim failed, if the claim is still ours

A lease is a wall-clock time (seconds since the epoch) written by the claiming worker,
so the machines' clocks must agree to well within a lease (NTP does). A worker killed
with ``kill -9`` on the same host as the next claimant is recognised at once by its
process id (owners are ``host/boot-id:pid:nonce``); elsewhere its lease runs out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from flopgap._json import jsonable as _jsonable
from flopgap._workers import owner_dead
from flopgap.store._schema import claims, machines, measurements

__all__ = ["ClaimResult", "ClaimsMixin", "CLAIM_STATES"]

CLAIM_STATES = ("claimed", "done", "failed")


def _iso(t: float | None = None) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(time.time() if t is None else t, timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class ClaimResult:
    """What :meth:`ClaimsMixin.claim` found: ``status`` is ``claimed`` (measure it now),
    ``done`` (a result is stored), ``busy`` (another worker holds a live lease until
    ``expires``), ``failed`` (this invocation already failed it) or, from :meth:`peek`
    only, ``open`` (nobody holds it)."""

    status: str
    owner: str = ""
    expires: float = 0.0
    attempts: int = 0


def _item_where(table, run_id: int, model: str, kind: str, key: str, target: str):
    return and_(table.c.run_id == run_id, table.c.model == model, table.c.kind == kind, table.c.key == key,
                table.c.target == target)


def _lookup(conn: Connection, run_id: int, model: str, kind: str, key: str, target: str):
    """(a result is stored?, the claim row or None) for one item."""
    stored = conn.execute(select(measurements.c.id).where(
        _item_where(measurements, run_id, model, kind, key, target)).limit(1)).first() is not None
    row = conn.execute(select(claims).where(_item_where(claims, run_id, model, kind, key, target))).mappings().first()
    return stored, row


def _insert_ignore(conn: Connection, table, values: dict) -> bool:
    """Insert a row unless it conflicts with a unique key; True if inserted. PostgreSQL
    and SQLite use ``ON CONFLICT DO NOTHING`` (a failed insert would abort a PostgreSQL
    transaction); other databases a savepoint."""
    name = conn.dialect.name
    if name == "postgresql":  # rowcount is not reliable here: ask for the inserted key
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        q = pg_insert(table).values(**values).on_conflict_do_nothing().returning(*table.primary_key.columns)
        return conn.execute(q).first() is not None
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return conn.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing()).rowcount == 1
    try:
        with conn.begin_nested():
            conn.execute(insert(table).values(**values))
        return True
    except IntegrityError:
        return False


class ClaimsMixin:
    """Claims and machine metadata, mixed into :class:`flopgap.store.Store` (``self.engine``)."""

    engine: Any

    # ------------------------------------------------------------ machines
    def register_machine(self, metadata: dict) -> str:
        """Keep a machine's metadata under its fingerprint (the first writer's metadata stays;
        ``last_seen`` moves on) and return the fingerprint."""
        from flopgap.store._store import machine_fingerprint  # noqa: PLC0415  (one fingerprint rule)

        metadata = _jsonable(metadata)
        fingerprint = machine_fingerprint(metadata)
        now = _iso()
        with self.engine.begin() as conn:
            if not _insert_ignore(conn, machines, dict(fingerprint=fingerprint, metadata=metadata,
                                                      first_seen=now, last_seen=now)):
                conn.execute(update(machines).where(machines.c.fingerprint == fingerprint).values(last_seen=now))
        return fingerprint

    def machines(self, fingerprints=None) -> dict[str, dict]:
        """Metadata by fingerprint (all machines, or those named)."""
        q = select(machines.c.fingerprint, machines.c.metadata)
        if fingerprints is not None:
            q = q.where(machines.c.fingerprint.in_(list(fingerprints)))
        with self.engine.connect() as conn:
            return {fp: md for fp, md in conn.execute(q)}

    def targets(self, run_id: int) -> list[str]:
        """The kinds of machine (``target``) a run has measurements for, sorted."""
        q = select(measurements.c.target).where(measurements.c.run_id == run_id).distinct()
        with self.engine.connect() as conn:
            return sorted(t for (t,) in conn.execute(q))

    # ------------------------------------------------------------ claims
    def claim(self, run_id: int, model: str, kind: str, key: str = "", target: str = "", *, owner: str,
              invocation: str, lease_s: float, node: str = "", machine: str = "", now: float | None = None) -> ClaimResult:
        """Try to take the item for ``lease_s`` seconds (see the module docstring)."""
        for _ in range(5):  # each pass either decides or lost a race that changed the row
            t = time.time() if now is None else now
            with self.engine.begin() as conn:
                stored, row = _lookup(conn, run_id, model, kind, key, target)
                if stored:
                    return ClaimResult("done")
                values = dict(state="claimed", owner=owner, invocation=invocation, node=node, machine_fingerprint=machine,
                              claimed=_iso(t), expires=t + lease_s, finished=None)
                if row is None:
                    if _insert_ignore(conn, claims, dict(run_id=run_id, model=model, kind=kind, key=key,
                                                         target=target, attempts=1, **values)):
                        return ClaimResult("claimed", owner, t + lease_s, 1)
                    continue
                decided = self._decide(row, invocation, t)
                if decided is not None:
                    return decided
                n = conn.execute(update(claims).where(
                    claims.c.id == row["id"], claims.c.owner == row["owner"], claims.c.attempts == row["attempts"],
                    claims.c.state == row["state"]).values(attempts=row["attempts"] + 1, **values)).rowcount
                if n == 1:
                    return ClaimResult("claimed", owner, t + lease_s, row["attempts"] + 1)
        return ClaimResult("busy", "", (time.time() if now is None else now) + lease_s)

    @staticmethod
    def _decide(row, invocation: str, t: float) -> ClaimResult | None:
        """The answer for an existing claim row, or None when it may be taken over."""
        if row["state"] == "done":
            return ClaimResult("done", row["owner"], row["expires"], row["attempts"])
        if row["state"] == "failed":
            if row["invocation"] == invocation:
                return ClaimResult("failed", row["owner"], row["expires"], row["attempts"])
            return None
        if row["expires"] > t and not owner_dead(row["owner"]):
            return ClaimResult("busy", row["owner"], row["expires"], row["attempts"])
        return None

    def peek(self, run_id: int, model: str, kind: str, key: str = "", target: str = "", *, invocation: str,
             now: float | None = None) -> ClaimResult:
        """What :meth:`claim` would answer, without taking anything (``open``: free to claim)."""
        t = time.time() if now is None else now
        with self.engine.connect() as conn:
            stored, row = _lookup(conn, run_id, model, kind, key, target)
        if stored:
            return ClaimResult("done")
        if row is None:
            return ClaimResult("open")
        return self._decide(row, invocation, t) or ClaimResult("open", row["owner"], row["expires"], row["attempts"])

    def renew(self, run_id: int, model: str, kind: str, key: str = "", target: str = "", *, owner: str,
              lease_s: float, now: float | None = None) -> bool:
        """Push the lease end to ``now + lease_s``; False if the claim is no longer ours."""
        t = time.time() if now is None else now
        with self.engine.begin() as conn:
            return conn.execute(update(claims).where(
                _item_where(claims, run_id, model, kind, key, target), claims.c.owner == owner,
                claims.c.state == "claimed").values(expires=t + lease_s)).rowcount == 1

    def complete(self, run_id: int, model: str, kind: str, payload: Any, key: str = "", target: str = "", *,
                 owner: str, machine: str = "") -> bool:
        """Store the item's result and mark its claim done, in one transaction. True if
        this call wrote the result; False if one was already stored (it is kept)."""
        now = _iso()
        with self.engine.begin() as conn:
            wrote = _insert_ignore(conn, measurements, dict(
                run_id=run_id, model=model, kind=kind, key=key, target=target, machine_fingerprint=machine,
                payload=_jsonable(payload), created=now))
            conn.execute(update(claims).where(_item_where(claims, run_id, model, kind, key, target))
                         .values(state="done", finished=now))
        return wrote

    def fail(self, run_id: int, model: str, kind: str, error: dict, key: str = "", target: str = "", *,
             owner: str, machine: str = "") -> None:
        """Store an ``error`` row for the item (replacing an older one) and mark the claim
        failed if ``owner`` still holds it; a stored result is never touched."""
        now = _iso()
        with self.engine.begin() as conn:
            where = and_(measurements.c.run_id == run_id, measurements.c.model == model,
                         measurements.c.kind == "error", measurements.c.key == key, measurements.c.target == target)
            values = dict(payload=_jsonable(error), created=now, machine_fingerprint=machine)
            if not _insert_ignore(conn, measurements, dict(run_id=run_id, model=model, kind="error", key=key,
                                                           target=target, **values)):
                conn.execute(update(measurements).where(where).values(**values))
            conn.execute(update(claims).where(_item_where(claims, run_id, model, kind, key, target),
                                              claims.c.owner == owner, claims.c.state == "claimed")
                         .values(state="failed", finished=now))

    def release(self, run_id: int, *, invocation: str | None = None, owner: str | None = None) -> int:
        """End the live leases of an invocation (or an owner) at once, so a resume need not wait
        for them to run out (after Ctrl-C). Returns how many were released."""
        q = update(claims).where(claims.c.run_id == run_id, claims.c.state == "claimed")
        if invocation is not None:
            q = q.where(claims.c.invocation == invocation)
        if owner is not None:
            q = q.where(claims.c.owner == owner)
        with self.engine.begin() as conn:
            return conn.execute(q.values(expires=0.0)).rowcount

    def claims(self, run_id: int) -> list[dict]:
        """A run's claims (who measured what, how many attempts), in claim order."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(claims).where(claims.c.run_id == run_id)
                                                  .order_by(claims.c.id)).mappings()]
