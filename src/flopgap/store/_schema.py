"""The results store's tables (SQLAlchemy Core) and its migration steps.

Schema version 2::

    meta(key PK, value)                       -- 'schema_version' lives here
    runs(id PK, kind, name, config JSON, config_hash, machine JSON, machine_fingerprint,
         status, started, finished, schema_version, flopgap_version)
    measurements(id PK, run_id FK, model, kind, key, target, machine_fingerprint,
                 payload JSON, created,
                 UNIQUE(run_id, model, kind, key, target))
    machines(fingerprint PK, metadata JSON, first_seen, last_seen)
    claims(id PK, run_id FK, model, kind, key, target, state, owner, invocation, node,
           machine_fingerprint, attempts, claimed, expires, finished,
           UNIQUE(run_id, model, kind, key, target))
    indexes: runs(kind, config_hash), runs(machine_fingerprint),
             measurements(model, kind), measurements(run_id), claims(run_id, state)

``target`` is the kind of machine an item was measured for: a ``--machines`` label
(``''`` on one machine or an unlabelled cluster). A run's settings are its config
(``config_hash``), so the unique key reads "one result per run (settings), model, kind,
key and kind of machine". ``machine_fingerprint`` on a measurement is the machine that
measured it (metadata in ``machines``); a claim is one worker's lease on one item
(``state``: claimed, done, failed; ``expires`` in seconds since the epoch).

Timestamps are ISO 8601 UTC strings (portable across SQLite and PostgreSQL, sortable).
A migration is one function ``(connection) -> None`` appended to ``MIGRATIONS`` with the
version it upgrades *to*; opening a store applies the missing steps in order, inside one
transaction, and refuses a database written by a newer flopgap. A step creates the
tables as they were at its version (its own ``MetaData``), never from the live
definitions below, so replaying the steps on an empty database and migrating an old
file give the same schema.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import (JSON, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text,
                        UniqueConstraint, text)
from sqlalchemy.engine import Connection

__all__ = ["SCHEMA_VERSION", "metadata", "meta", "runs", "measurements", "machines", "claims", "MIGRATIONS",
           "TABLES_AT"]

SCHEMA_VERSION = 2

metadata = MetaData()

meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


def _runs_table(md: MetaData) -> Table:
    return Table(
        "runs", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("kind", String(32), nullable=False),            # zoo, seed, shufflenet-v2, ...
        Column("name", String(200), nullable=False, default=""),
        Column("config", JSON, nullable=False),
        Column("config_hash", String(64), nullable=False),
        Column("machine", JSON, nullable=False),
        Column("machine_fingerprint", String(64), nullable=False),
        Column("status", String(16), nullable=False),           # running, finished, interrupted, incomplete, failed
        Column("started", String(40), nullable=False),
        Column("finished", String(40), nullable=True),
        Column("schema_version", Integer, nullable=False),
        Column("flopgap_version", String(40), nullable=False, default=""),
        Index("ix_runs_kind_config", "kind", "config_hash"),
        Index("ix_runs_machine", "machine_fingerprint"),
    )


def _item_columns() -> list[Column]:
    """id and the columns that name an item of a run: run_id, model, kind, key."""
    return [Column("id", Integer, primary_key=True, autoincrement=True),
            Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
            Column("model", String(500), nullable=False),
            Column("kind", String(32), nullable=False),              # count, time, explain, model, claim, ...
            Column("key", String(200), nullable=False, default="")]


def _measurements_v2(md: MetaData, name: str = "measurements") -> Table:
    return Table(
        name, md, *_item_columns(),
        Column("target", String(64), nullable=False, default="", server_default=""),
        Column("machine_fingerprint", String(64), nullable=False, default="", server_default=""),
        Column("payload", JSON, nullable=False),
        Column("created", String(40), nullable=False),
        UniqueConstraint("run_id", "model", "kind", "key", "target", name="uq_measurement_target"),
    )


def _measurement_indexes(table: Table) -> list[Index]:
    return [Index("ix_measurements_model_kind", table.c.model, table.c.kind),
            Index("ix_measurements_run", table.c.run_id)]


runs = _runs_table(metadata)
measurements = _measurements_v2(metadata)
_measurement_indexes(measurements)  # an Index built from a table's columns belongs to that table

machines = Table(
    "machines", metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("metadata", JSON, nullable=False),
    Column("first_seen", String(40), nullable=False),
    Column("last_seen", String(40), nullable=False),
)

claims = Table(
    "claims", metadata, *_item_columns(),
    Column("target", String(64), nullable=False, default=""),
    Column("state", String(16), nullable=False),             # claimed, done, failed
    Column("owner", String(200), nullable=False),            # host/boot:pid:nonce of the worker process
    Column("invocation", String(64), nullable=False),        # one run of a study command (a driver)
    Column("node", String(200), nullable=False, default=""),  # where it runs (a Ray node id, or the host)
    Column("machine_fingerprint", String(64), nullable=False, default=""),
    Column("attempts", Integer, nullable=False),
    Column("claimed", String(40), nullable=False),
    Column("expires", Float, nullable=False),                # lease end, seconds since the epoch
    Column("finished", String(40), nullable=True),
    UniqueConstraint("run_id", "model", "kind", "key", "target", name="uq_claim"),
    Index("ix_claims_run_state", "run_id", "state"),
)


def _v1(conn: Connection) -> None:
    """Version 1: runs and measurements, one result per (run, model, kind, key)."""
    md = MetaData()
    _runs_table(md)
    m = Table(
        "measurements", md, *_item_columns(),
        Column("payload", JSON, nullable=False),
        Column("created", String(40), nullable=False),
        UniqueConstraint("run_id", "model", "kind", "key", name="uq_measurement"),
        Index("ix_measurements_model_kind", "model", "kind"),
        Index("ix_measurements_run", "run_id"),
    )
    md.create_all(conn, tables=[md.tables["runs"], m], checkfirst=True)


def _v2(conn: Connection) -> None:
    """Version 2: results per kind of machine (``target``) with the measuring machine's
    fingerprint, a ``machines`` table, and ``claims`` (leases on items, so that many
    workers share a run without measuring an item twice).

    The unique key of ``measurements`` gains ``target``. PostgreSQL alters the table in
    place; SQLite cannot change a constraint, so the table is rebuilt (copy, drop,
    rename) inside the same transaction. Rows of version 1 get ``target = ''`` and their
    run's machine fingerprint.
    """
    if conn.dialect.name == "sqlite":
        md = MetaData()
        _runs_table(md)
        new = _measurements_v2(md, "measurements_v2")
        new.create(conn)
        conn.execute(text(
            "INSERT INTO measurements_v2 (id, run_id, model, kind, \"key\", target, machine_fingerprint, payload, created) "
            "SELECT m.id, m.run_id, m.model, m.kind, m.\"key\", '', COALESCE(r.machine_fingerprint, ''), m.payload, "
            "m.created FROM measurements m LEFT JOIN runs r ON r.id = m.run_id"))
        conn.execute(text("DROP TABLE measurements"))  # its indexes go with it
        conn.execute(text("ALTER TABLE measurements_v2 RENAME TO measurements"))
        fresh = _measurements_v2(MetaData())
        for ix in _measurement_indexes(fresh):
            ix.create(conn)
    else:
        conn.execute(text("ALTER TABLE measurements ADD COLUMN target VARCHAR(64) NOT NULL DEFAULT ''"))
        conn.execute(text("ALTER TABLE measurements ADD COLUMN machine_fingerprint VARCHAR(64) NOT NULL DEFAULT ''"))
        conn.execute(text("UPDATE measurements SET machine_fingerprint = r.machine_fingerprint FROM runs r "
                          "WHERE r.id = measurements.run_id"))
        conn.execute(text("ALTER TABLE measurements DROP CONSTRAINT uq_measurement"))
        conn.execute(text("ALTER TABLE measurements ADD CONSTRAINT uq_measurement_target "
                          "UNIQUE (run_id, model, kind, \"key\", target)"))
    md = MetaData()
    _runs_table(md)
    for table in (machines, claims):
        table.to_metadata(md).create(conn, checkfirst=True)


_V1_TABLES = {"runs": ["id", "kind", "name", "config", "config_hash", "machine", "machine_fingerprint", "status",
                       "started", "finished", "schema_version", "flopgap_version"],
              "measurements": ["id", "run_id", "model", "kind", "key", "payload", "created"]}
# the columns a store's tables have at a version, checked (where the tables exist) before the
# steps after it run: a table of another program under one of these names is refused, not rebuilt
TABLES_AT: dict[int, dict[str, list[str]]] = {0: _V1_TABLES, 1: _V1_TABLES}

# (version reached, step); append only, never change what a released step does
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _v1),
    (2, _v2),
]
assert MIGRATIONS[-1][0] == SCHEMA_VERSION
