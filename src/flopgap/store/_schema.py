"""The results store's tables (SQLAlchemy Core) and its migration steps.

Schema version 1::

    meta(key PK, value)                       -- 'schema_version' lives here
    runs(id PK, kind, name, config JSON, config_hash, machine JSON, machine_fingerprint,
         status, started, finished, schema_version, flopgap_version)
    measurements(id PK, run_id FK, model, kind, key, payload JSON, created,
                 UNIQUE(run_id, model, kind, key))
    indexes: runs(kind, config_hash), runs(machine_fingerprint),
             measurements(model, kind), measurements(run_id)

Timestamps are ISO 8601 UTC strings (portable across SQLite and PostgreSQL, sortable).
A migration is one function ``(connection) -> None`` appended to ``MIGRATIONS`` with the
version it upgrades *to*; opening a store applies the missing steps in order, inside one
transaction, and refuses a database written by a newer flopgap.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import (JSON, Column, ForeignKey, Index, Integer, MetaData, String, Table, Text,
                        UniqueConstraint)
from sqlalchemy.engine import Connection

__all__ = ["SCHEMA_VERSION", "metadata", "meta", "runs", "measurements", "MIGRATIONS"]

SCHEMA_VERSION = 1

metadata = MetaData()

meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs", metadata,
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

measurements = Table(
    "measurements", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("model", String(500), nullable=False),
    Column("kind", String(32), nullable=False),             # count, time, explain, model, claim, ...
    Column("key", String(200), nullable=False, default=""),
    Column("payload", JSON, nullable=False),
    Column("created", String(40), nullable=False),
    UniqueConstraint("run_id", "model", "kind", "key", name="uq_measurement"),
    Index("ix_measurements_model_kind", "model", "kind"),
    Index("ix_measurements_run", "run_id"),
)


def _v1(conn: Connection) -> None:
    """Version 1: the initial tables (created from ``metadata``)."""
    metadata.create_all(conn, tables=[runs, measurements], checkfirst=True)


# (version reached, step); append only, never edit a released step
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _v1),
]
assert MIGRATIONS[-1][0] == SCHEMA_VERSION
