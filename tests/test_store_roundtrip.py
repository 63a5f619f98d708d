"""The results store: exact round-trip, uniqueness, schema version, errors, indexes."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import inspect

from flopgap.errors import FlopgapError, UsageError
from flopgap.store import SCHEMA_VERSION, Store, StoredMeasurement, config_hash, machine_fingerprint, open_store

MACHINE = {"cpu_model": "Test CPU", "logical_cores": 2, "torch": "2.x", "time": "2026-01-01T00:00:00",
           "load_average": [0.5, 0.4, 0.3]}
PAYLOAD = {
    "median": 1.2345678901234567e-05, "ci": [1.2e-05, 1.3e-05], "n": 123, "ok": True, "none": None,
    "name": "résumé <b>&\"'", "nested": {"a": [1, 2.5, {"b": "c"}], "empty": {}}, "big": 2 ** 53 + 1,
    "neg": -0.0001, "tiny": 5e-324,
}


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'r.db'}")
    yield s
    s.close()


def test_round_trip_is_exact(store, tmp_path):
    rid = store.start_run("zoo", {"models": ["a", "b"], "max_time": 0.5}, MACHINE, name="test run")
    assert store.put(rid, "torchvision:resnet18", "model", PAYLOAD, key="b1")
    store.finish_run(rid)
    store.close()
    reopened = Store(str(tmp_path / "r.db"))  # a bare path is a SQLite file
    (m,) = reopened.measurements(rid)
    assert m == StoredMeasurement(rid, "torchvision:resnet18", "model", "b1", PAYLOAD)
    assert m.payload == PAYLOAD and type(m.payload["big"]) is int
    run = reopened.run(rid)
    assert (run.kind, run.name, run.status, run.measurements) == ("zoo", "test run", "finished", 1)
    assert run.config == {"models": ["a", "b"], "max_time": 0.5}
    assert run.machine == MACHINE
    assert run.config_hash == config_hash({"max_time": 0.5, "models": ["a", "b"]})  # key order irrelevant
    assert run.schema_version == SCHEMA_VERSION and run.finished is not None
    reopened.close()


def test_non_finite_floats_and_tuples_are_stored_as_json(store):
    rid = store.start_run("zoo", {}, MACHINE)
    store.put(rid, "m", "model", {"nan": float("nan"), "inf": float("inf"), "t": (1, 2)})
    assert store.measurements(rid)[0].payload == {"nan": None, "inf": None, "t": [1, 2]}


def test_unique_measurement_per_run_model_kind_key(store):
    rid = store.start_run("zoo", {}, MACHINE)
    assert store.put(rid, "m", "model", {"v": 1}, key="b1")
    with pytest.raises(FlopgapError, match="already has"):
        store.put(rid, "m", "model", {"v": 2}, key="b1")
    assert store.put(rid, "m", "model", {"v": 3}, key="b1", on_conflict="skip") is False
    assert store.put(rid, "m", "model", {"v": 4}, key="b8")  # another key is another row
    assert [m.payload for m in store.measurements(rid)] == [{"v": 1}, {"v": 4}]
    store.put(rid, "m", "model", {"v": 5}, key="b1", on_conflict="replace")
    assert [m.payload for m in store.measurements(rid, model="m")] == [{"v": 5}, {"v": 4}]
    assert store.done(rid, "model") == {("m", "b1"), ("m", "b8")}


def test_runs_listing_resume_lookup_and_status(store):
    cfg = {"zoo": "seed", "max_time": 1.0}
    a = store.start_run("zoo", cfg, MACHINE)
    b = store.start_run("seed", {"x": 1}, MACHINE)
    store.put(a, "m1", "model", {})
    store.put(a, "m2", "model", {})
    assert [(r.id, r.measurements) for r in store.runs()] == [(b, 0), (a, 2)]
    assert [r.id for r in store.runs(kind="zoo")] == [a]
    assert store.run("latest").id == b
    assert store.find_resumable("zoo", cfg, MACHINE).id == a
    # volatile machine keys (time, load) do not make it another machine; another CPU does
    assert store.find_resumable("zoo", cfg, {**MACHINE, "time": "later", "load_average": [9, 9, 9]}).id == a
    assert store.find_resumable("zoo", cfg, {**MACHINE, "cpu_model": "Other"}) is None
    assert store.find_resumable("zoo", {**cfg, "max_time": 2.0}, MACHINE) is None
    store.set_status(a, "interrupted")
    assert store.find_resumable("zoo", cfg, MACHINE).status == "interrupted"
    store.finish_run(a)
    assert store.find_resumable("zoo", cfg, MACHINE) is None
    assert machine_fingerprint(MACHINE) == machine_fingerprint({**MACHINE, "time": "x"})


def test_schema_version_indexes_and_wal(store, tmp_path):
    assert store.schema_version() == SCHEMA_VERSION
    insp = inspect(store.engine)
    names = {ix["name"]: ix["column_names"] for ix in insp.get_indexes("measurements")}
    assert names["ix_measurements_model_kind"] == ["model", "kind"]
    assert names["ix_measurements_run"] == ["run_id"]
    assert {ix["name"] for ix in insp.get_indexes("runs")} >= {"ix_runs_kind_config", "ix_runs_machine"}
    uniques = insp.get_unique_constraints("measurements")
    assert any(u["column_names"] == ["run_id", "model", "kind", "key", "target"] for u in uniques)
    with sqlite3.connect(tmp_path / "r.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'n.db'}"
    Store(url).close()
    with sqlite3.connect(tmp_path / "n.db") as con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(FlopgapError, match="newer than this flopgap"):
        Store(url)


def test_foreign_database_is_refused(tmp_path):
    with sqlite3.connect(tmp_path / "f.db") as con:
        con.execute("CREATE TABLE runs (x INTEGER)")
    with pytest.raises(FlopgapError, match="not a flopgap results store"):
        Store(str(tmp_path / "f.db"))


@pytest.mark.parametrize("url, message", [
    ("nosuchdialect://x/y", "cannot use --db URL"),
    ("sqlite:////no/such/dir/x.db", "does not exist"),
    ("://nothing", "bad --db URL"),
    ("sqlite:/x.db", "bad --db URL"),
])
def test_bad_urls_are_usage_errors(url, message):
    with pytest.raises(UsageError, match=message):
        open_store(url)


def test_unknown_run_and_missing_store(store, tmp_path):
    with pytest.raises(UsageError, match="no run 42"):
        store.run(42)
    with pytest.raises(UsageError, match="must be a number"):
        store.run("abc")
    with pytest.raises(UsageError, match="no results store"):
        open_store(str(tmp_path / "missing.db"), create=False)
    assert not (tmp_path / "missing.db").exists()
