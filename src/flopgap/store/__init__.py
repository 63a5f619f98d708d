"""The results store: runs and measurements, saved through SQLAlchemy.

SQLite file ``flopgap.db`` by default (any SQLAlchemy URL, e.g. PostgreSQL, with
``--db``). Schema-versioned with migrations; each measurement is committed in its own
transaction, so an interrupted study keeps everything it finished.
"""

from flopgap.store._schema import SCHEMA_VERSION
from flopgap.store._store import (DEFAULT_URL, RunInfo, Store, StoredMeasurement, config_hash, machine_fingerprint,
                                  open_store)

__all__ = ["Store", "open_store", "RunInfo", "StoredMeasurement", "SCHEMA_VERSION", "DEFAULT_URL",
           "config_hash", "machine_fingerprint"]
