"""The transactional results store: runs and their measurements, through SQLAlchemy.

Every write is its own transaction, so a study killed between two models (Ctrl-C or
``kill -9``) keeps every measurement it had finished. SQLite files run in WAL mode with
a busy timeout and take the write lock at ``BEGIN`` (``BEGIN IMMEDIATE``), so two
processes writing to one file queue instead of failing or corrupting it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import create_engine, event, func, insert, inspect, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError, SQLAlchemyError

from flopgap._json import jsonable as _jsonable  # one JSON rule for files and the store
from flopgap.errors import FlopgapError, UsageError
from flopgap.store._schema import MIGRATIONS, SCHEMA_VERSION, measurements, meta, runs

__all__ = ["Store", "RunInfo", "StoredMeasurement", "DEFAULT_URL", "config_hash", "machine_fingerprint"]

DEFAULT_URL = "sqlite:///flopgap.db"
_BUSY_TIMEOUT_MS = 60_000  # a second writer waits up to a minute for the lock
_VOLATILE = ("time", "date", "load", "pid", "uptime", "free", "available", "temperature", "timestamp")
RUN_STATUSES = ("running", "finished", "interrupted", "incomplete", "failed")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")

def config_hash(config: dict) -> str:
    """Stable hash of a run's configuration (key order does not matter)."""
    text = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def machine_fingerprint(machine: dict) -> str:
    """Hash of the stable part of machine metadata (volatile keys like load or time dropped)."""

    def stable(d):
        if isinstance(d, dict):
            return {k: stable(v) for k, v in d.items() if not any(w in str(k).lower() for w in _VOLATILE)}
        return d

    if isinstance(machine, dict) and machine.get("fingerprint"):
        return str(machine["fingerprint"])[:64]
    text = json.dumps(_jsonable(stable(machine)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunInfo:
    """One run as stored: what was run (kind, config), where (machine) and its state."""

    id: int
    kind: str
    name: str
    config: dict
    config_hash: str
    machine: dict
    machine_fingerprint: str
    status: str
    started: str
    finished: str | None
    schema_version: int
    flopgap_version: str = ""
    measurements: int = 0

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class StoredMeasurement:
    run_id: int
    model: str
    kind: str
    key: str
    payload: Any
    created: str = field(compare=False, default="")


def _normalize_url(url: str | None) -> str:
    if url is None or url == "":
        return DEFAULT_URL
    if "://" not in url:
        if re.match(r"^[A-Za-z][\w+.-]*:", url):  # a scheme without '//': a mistyped URL, not a path
            raise UsageError(f"bad --db URL {url!r}: expected e.g. sqlite:///flopgap.db or postgresql://user@host/db")
        return f"sqlite:///{url}"  # a bare path means a SQLite file
    return _sqlite_uri_options(url)


def _sqlite_uri_options(url: str) -> str:
    """``sqlite:///x.db?mode=ro`` as SQLite reads it: options like ``mode`` only work in
    SQLite's URI form (``sqlite:///file:x.db?mode=ro&uri=true``), and the pysqlite driver
    would otherwise drop them with a warning and open the file read-write."""
    if not url.startswith("sqlite") or "?" not in url:
        return url
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # reported by Store()
    query = dict(parsed.query)
    if "mode" not in query or str(query.get("uri", "")).lower() == "true" or not parsed.database:
        return url
    database = parsed.database if parsed.database.startswith("file:") else f"file:{parsed.database}"
    options = "&".join(f"{k}={v}" for k, v in {**query, "uri": "true"}.items())
    return f"{parsed.drivername}:///{database}?{options}"


def _sqlite_file(parsed) -> Path | None:
    """The file a SQLite URL names (its ``file:`` URI form included); ``None`` for memory."""
    database = parsed.database or ""
    if parsed.query.get("uri", "").lower() == "true" and database.startswith("file:"):
        database = database.removeprefix("file:").split("?", 1)[0]
    if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
        return None
    return Path(database).expanduser()


def _flopgap_version() -> str:
    try:
        from importlib.metadata import version

        return version("flopgap")
    except Exception:  # not installed (running from a source tree)
        return ""


def _retry_locked(statement, budget_s: float = _BUSY_TIMEOUT_MS / 1000) -> None:
    """Run ``statement`` until SQLite stops answering "database is locked".

    Switching a fresh file to WAL needs an exclusive lock and SQLite answers BUSY at
    once instead of waiting on ``busy_timeout``, so two processes creating one store
    at the same moment must retry here.
    """
    import sqlite3
    import time

    deadline = time.monotonic() + budget_s
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Store:
    """A results store at a SQLAlchemy URL (``sqlite:///flopgap.db`` by default).

    ``Store(url)`` opens (creating and migrating as needed; ``create=False`` refuses a
    missing SQLite file) and raises :class:`~flopgap.errors.UsageError` for a URL it
    cannot open.
    """

    def __init__(self, url: str | None = None, *, create: bool = True):
        self.url = _normalize_url(url)
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise UsageError(f"bad --db URL {self.url!r}: expected e.g. sqlite:///flopgap.db or "
                             "postgresql://user@host/db") from None
        self._sqlite = parsed.get_backend_name() == "sqlite"
        self.file = _sqlite_file(parsed) if self._sqlite else None
        self.read_only = self._sqlite and parsed.query.get("mode") == "ro"
        if self.file is not None:
            parent = self.file.parent
            if not parent.is_dir():
                raise UsageError(f"bad --db URL {self.url!r}: directory {str(parent)!r} does not exist")
            if self.file.exists() and not self.file.is_file():
                raise UsageError(f"--db {self.url!r}: {str(self.file)!r} is not a file")
            if (not create or self.read_only) and not self.file.is_file():
                raise UsageError(f"no results store at {str(self.file)!r} (run a study first, or pass --db URL)")
        try:
            kwargs: dict = {"future": True}
            if self._sqlite:
                kwargs["connect_args"] = {"timeout": _BUSY_TIMEOUT_MS / 1000}
            self.engine: Engine = create_engine(self.url, **kwargs)
        except (NoSuchModuleError, ModuleNotFoundError, ImportError, ArgumentError) as e:
            raise UsageError(f"cannot use --db URL {self.url!r}: {str(e).splitlines()[0]}") from None
        if self._sqlite:  # a read-only open leaves the file as it is (no switch to WAL)
            self._sqlite_setup(self.engine, wal=create and not self.read_only)
        try:
            self._migrate(create=create and not self.read_only)
        except OperationalError as e:
            raise UsageError(f"cannot open --db {self.url!r}: {str(e.orig).splitlines()[0]}") from None

    # ------------------------------------------------------------ set-up
    @staticmethod
    def _sqlite_setup(engine: Engine, wal: bool = True) -> None:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - trivial
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (pysqlite's is deferred and late)
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            if wal:
                _retry_locked(lambda: cur.execute("PRAGMA journal_mode=WAL"))  # readers never block the writer
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # pragma: no cover - trivial
            # take the write lock up front: two writers queue on busy_timeout instead of
            # deadlocking on a read->write upgrade
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _migrate(self, create: bool = True) -> None:
        """Bring the schema up to date. ``create=False`` (commands that only read) never
        writes a schema into a database that has none: it is refused instead."""
        if not create:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table("meta"):
                    raise UsageError(f"{self.url} is not a flopgap results store (no flopgap schema in it)")
        with self.engine.begin() as conn:
            if create:
                meta.create(conn, checkfirst=True)
            row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
            current = _schema_number(row[0]) if row else 0
            if current is None:
                raise UsageError(f"{self.url} has a schema_version {row[0]!r} that is not a number: "
                                 "not a flopgap results store")
            if current > SCHEMA_VERSION:
                raise UsageError(f"{self.url} has results schema version {current}, newer than this "
                                 f"flopgap understands ({SCHEMA_VERSION}): upgrade flopgap")
            if current == 0 and (not create or inspect(conn).has_table("runs")):
                raise UsageError(f"{self.url} has {'a runs table but ' if create else ''}no flopgap schema "
                                 "version: not a flopgap results store")
            if current < SCHEMA_VERSION and self.read_only:
                raise UsageError(f"{self.url} has results schema version {current} and is opened read-only "
                                 f"(mode=ro): open it writable once to upgrade it to {SCHEMA_VERSION}")
            for version, step in MIGRATIONS:
                if version > current:
                    step(conn)
                    if row is None:
                        conn.execute(insert(meta).values(key="schema_version", value=str(version)))
                        row = (str(version),)
                    else:
                        conn.execute(update(meta).where(meta.c.key == "schema_version").values(value=str(version)))
            _check_tables(conn, self.url)

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one())

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ runs
    def start_run(self, kind: str, config: dict, machine: dict | None = None, *, name: str = "") -> int:
        """Record a new run (status ``running``) and return its id."""
        machine = _jsonable(machine or {})
        with self.engine.begin() as conn:
            result = conn.execute(insert(runs).values(
                kind=kind, name=name, config=_jsonable(config), config_hash=config_hash(config),
                machine=machine, machine_fingerprint=machine_fingerprint(machine), status="running",
                started=_now(), finished=None, schema_version=SCHEMA_VERSION,
                flopgap_version=_flopgap_version(),
            ))
            return int(result.inserted_primary_key[0])

    def set_status(self, run_id: int, status: str) -> None:
        """Mark a run ``finished``, ``interrupted``, ``incomplete`` (some items failed) or ``failed``
        (``running`` reopens it)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        finished = None if status == "running" else _now()
        with self.engine.begin() as conn:
            n = conn.execute(update(runs).where(runs.c.id == run_id).values(status=status, finished=finished)).rowcount
        if n == 0:
            raise UsageError(f"no run {run_id} in {self.url}")

    def finish_run(self, run_id: int) -> None:
        self.set_status(run_id, "finished")

    def find_resumable(self, kind: str, config: dict, machine: dict | None = None) -> RunInfo | None:
        """The latest unfinished run of ``kind`` with the same config (and machine, when given)."""
        q = (select(runs).where(runs.c.kind == kind, runs.c.config_hash == config_hash(config),
                                runs.c.status != "finished").order_by(runs.c.id.desc()))
        if machine is not None:
            q = q.where(runs.c.machine_fingerprint == machine_fingerprint(_jsonable(machine)))
        with self.engine.connect() as conn:
            row = conn.execute(q.limit(1)).mappings().first()
        return self._run_info(row) if row else None

    def run(self, run_id: int | str) -> RunInfo:
        """One run by id (``latest`` or ``-1`` for the newest); :class:`UsageError` if unknown."""
        rid = self._resolve_id(run_id)
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == rid)).mappings().first()
            if row is None:
                raise UsageError(f"no run {run_id} in {self.url} (flopgap runs lists them)")
            n = conn.execute(select(func.count()).select_from(measurements)
                             .where(measurements.c.run_id == rid)).scalar_one()
        return self._run_info(row, n)

    def runs(self, kind: str | None = None, limit: int | None = None) -> list[RunInfo]:
        """Runs, newest first, each with its number of measurements."""
        counts = (select(measurements.c.run_id, func.count().label("n"))
                  .group_by(measurements.c.run_id).subquery())
        q = (select(runs, counts.c.n).select_from(runs.outerjoin(counts, counts.c.run_id == runs.c.id))
             .order_by(runs.c.id.desc()))
        if kind:
            q = q.where(runs.c.kind == kind)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [self._run_info(r, r["n"] or 0) for r in conn.execute(q).mappings()]

    def _resolve_id(self, run_id: int | str) -> int:
        if isinstance(run_id, str):
            text = run_id.strip().lower()
            if text in ("latest", "last", "-1"):
                with self.engine.connect() as conn:
                    rid = conn.execute(select(func.max(runs.c.id))).scalar_one()
                if rid is None:
                    raise UsageError(f"no runs in {self.url} yet")
                return int(rid)
            if not text.isdigit():
                raise UsageError(f"run id must be a number or 'latest', got {run_id!r}")
            return int(text)
        return int(run_id)

    @staticmethod
    def _run_info(row, n: int = 0) -> RunInfo:
        return RunInfo(
            id=row["id"], kind=row["kind"], name=row["name"], config=row["config"], config_hash=row["config_hash"],
            machine=row["machine"], machine_fingerprint=row["machine_fingerprint"], status=row["status"],
            started=row["started"], finished=row["finished"], schema_version=row["schema_version"],
            flopgap_version=row["flopgap_version"] or "", measurements=int(n),
        )

    # ------------------------------------------------------------ measurements
    def put(self, run_id: int, model: str, kind: str, payload: Any, *, key: str = "",
            on_conflict: str = "error") -> bool:
        """Store one measurement in its own transaction; True if a row was written.

        ``(run_id, model, kind, key)`` is unique. On a conflict ``on_conflict`` decides:
        ``error`` raises :class:`FlopgapError`, ``skip`` keeps the stored row (returns
        False), ``replace`` overwrites it.
        """
        if on_conflict not in ("error", "skip", "replace"):
            raise ValueError(f"on_conflict must be error, skip or replace, got {on_conflict!r}")
        values = dict(run_id=run_id, model=model, kind=kind, key=key, payload=_jsonable(payload), created=_now())
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(measurements).values(**values))
            return True
        except IntegrityError:
            if on_conflict == "skip":
                return False
            if on_conflict == "error":
                with self.engine.connect() as conn:
                    exists = conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first()
                if exists is None:
                    raise UsageError(f"no run {run_id} in {self.url}") from None
                raise FlopgapError(f"run {run_id} already has {kind} {key!r} for {model!r}; "
                                   "not overwritten") from None
        with self.engine.begin() as conn:
            conn.execute(update(measurements).where(
                measurements.c.run_id == run_id, measurements.c.model == model,
                measurements.c.kind == kind, measurements.c.key == key,
            ).values(payload=values["payload"], created=values["created"]))
        return True

    def measurements(self, run_id: int, *, kind: str | None = None, model: str | None = None) -> list[StoredMeasurement]:
        """A run's measurements in the order they were stored."""
        q = select(measurements).where(measurements.c.run_id == run_id).order_by(measurements.c.id)
        if kind is not None:
            q = q.where(measurements.c.kind == kind)
        if model is not None:
            q = q.where(measurements.c.model == model)
        with self.engine.connect() as conn:
            return [StoredMeasurement(r["run_id"], r["model"], r["kind"], r["key"], r["payload"], r["created"])
                    for r in conn.execute(q).mappings()]

    def done(self, run_id: int, kind: str) -> set[tuple[str, str]]:
        """``(model, key)`` pairs of ``kind`` already stored in a run (what resume skips)."""
        q = select(measurements.c.model, measurements.c.key).where(
            measurements.c.run_id == run_id, measurements.c.kind == kind)
        with self.engine.connect() as conn:
            return {(m, k) for m, k in conn.execute(q)}

    def history(self, model: str, kind: str) -> list[StoredMeasurement]:
        """Every stored measurement of one model and kind, across runs (uses the (model, kind) index)."""
        q = (select(measurements).where(measurements.c.model == model, measurements.c.kind == kind)
             .order_by(measurements.c.id))
        with self.engine.connect() as conn:
            return [StoredMeasurement(r["run_id"], r["model"], r["kind"], r["key"], r["payload"], r["created"])
                    for r in conn.execute(q).mappings()]

    def put_many(self, run_id: int, rows: Iterable[tuple[str, str, str, Any]]) -> int:
        """Store ``(model, kind, key, payload)`` rows one transaction each; returns rows written."""
        return sum(self.put(run_id, m, k, p, key=key) for m, k, key, p in rows)


def _schema_number(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _check_tables(conn, url: str) -> None:
    """Refuse tables named like flopgap's that are not flopgap's (another program's
    ``measurements``): every column flopgap reads must be there."""
    found = inspect(conn)
    for table in (runs, measurements):
        if not found.has_table(table.name):
            raise UsageError(f"{url} has no {table.name!r} table: not a flopgap results store")
        have = {c["name"] for c in found.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in have]
        if missing:
            raise UsageError(f"table {table.name!r} in {url} is not flopgap's (no column "
                             f"{', '.join(missing)}): not a flopgap results store")


def open_store(url: str | None, *, create: bool = True, writable: bool = False) -> Store:
    """Open a store, turning any database error into a one-line :class:`UsageError`.

    ``create=False`` refuses to create a missing SQLite file or to write a schema into a
    database without one (for commands that only read). ``writable=True`` (commands that
    save results) refuses, before anything is measured, a SQLite store opened read-only
    (``?mode=ro``) or whose file or folder this user cannot write.
    """
    try:
        store = Store(url, create=create)
    except SQLAlchemyError as e:
        raise UsageError(f"cannot open --db {_normalize_url(url)!r}: {str(e).splitlines()[0]}") from None
    if writable:
        import os

        reason = ("it is opened read-only (mode=ro)" if store.read_only else
                  f"{str(store.file)!r} is read-only for this user" if store.file is not None
                  and not os.access(store.file, os.W_OK) else
                  f"its folder {str(store.file.parent)!r} is read-only for this user (SQLite writes a journal "
                  "beside the file)" if store.file is not None and not os.access(store.file.parent, os.W_OK)
                  else None)
        if reason:
            store.close()
            raise UsageError(f"cannot save results in --db {store.url!r}: {reason}")
    return store
