"""Claims (leases on study items) and per-machine keys, on SQLite and on a real PostgreSQL
server: exact lease logic with a fake clock, concurrent claimants in separate processes,
and the migration of an existing schema-1 store."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from fleet_support import any_url, new_database, pg_server, pg_url  # noqa: F401  (fixtures)
from flopgap.store import SCHEMA_VERSION, Store, machine_fingerprint
from flopgap._workers import worker_id
from flopgap.store._schema import MIGRATIONS

MACHINE = {"cpu_model": "Test CPU", "logical_cores": 2}
T0 = 1_000_000.0  # a fake wall clock: leases are compared with the `now` each call passes


@pytest.fixture
def store(any_url):
    s = Store(any_url)
    yield s
    s.close()


def test_one_claimant_at_a_time_and_expired_leases_move_on(store):
    rid = store.start_run("zoo", {}, MACHINE)
    item = (rid, "seed:ex1-small", "model", "b1", "alpha")
    first = store.claim(*item, owner="w1", invocation="s1", lease_s=10, now=T0)
    assert (first.status, first.attempts, first.expires) == ("claimed", 1, T0 + 10)
    busy = store.claim(*item, owner="w2", invocation="s1", lease_s=10, now=T0 + 5)
    assert (busy.status, busy.owner, busy.expires) == ("busy", "w1", T0 + 10)
    assert store.renew(*item, owner="w1", lease_s=10, now=T0 + 8)          # a heartbeat: lease to T0 + 18
    assert store.claim(*item, owner="w2", invocation="s1", lease_s=10, now=T0 + 15).status == "busy"
    # w1 stops renewing (its node died): once the lease has run out w2 takes the item over
    taken = store.claim(*item, owner="w2", invocation="s1", lease_s=10, now=T0 + 18.5)
    assert (taken.status, taken.attempts) == ("claimed", 2)
    assert not store.renew(*item, owner="w1", lease_s=10, now=T0 + 19)     # w1 learns it lost the item
    assert store.complete(*item[:3], {"median": 1.0}, key="b1", target="alpha", owner="w2", machine="fp-2")
    # the late w1 finishes too: its result is not stored twice
    assert not store.complete(*item[:3], {"median": 2.0}, key="b1", target="alpha", owner="w1", machine="fp-1")
    assert store.claim(*item, owner="w3", invocation="s2", lease_s=10, now=T0 + 20).status == "done"
    (row,) = store.measurements(rid, kind="model")
    assert (row.payload, row.target, row.machine_fingerprint) == ({"median": 1.0}, "alpha", "fp-2")
    (c,) = store.claims(rid)
    assert (c["state"], c["owner"], c["attempts"]) == ("done", "w2", 2)


def test_targets_are_separate_items(store):
    rid = store.start_run("zoo", {}, MACHINE)
    for target in ("alpha", "beta"):
        assert store.claim(rid, "m", "model", "b1", target, owner="w", invocation="s", lease_s=5, now=T0).status == "claimed"
        assert store.complete(rid, "m", "model", {"t": target}, "b1", target, owner="w", machine=f"fp-{target}")
    assert store.targets(rid) == ["alpha", "beta"]
    assert store.done(rid, "model", "alpha") == {("m", "b1")} and store.done(rid, "model") == set()
    assert [m.payload for m in store.measurements(rid, target="beta")] == [{"t": "beta"}]
    # put keeps its old contract per target, and fills in the run's machine by default
    assert store.put(rid, "m", "model", {"t": ""}, key="b1")
    assert store.measurements(rid, target="")[0].machine_fingerprint == store.run(rid).machine_fingerprint


def test_a_failure_is_tried_once_per_invocation_and_retried_by_the_next(store):
    rid = store.start_run("zoo", {}, MACHINE)
    item = (rid, "m", "model", "b1", "")
    assert store.claim(*item, owner="w1", invocation="s1", lease_s=5, now=T0).status == "claimed"
    store.fail(*item[:3], {"error": "RuntimeError: boom"}, "b1", "", owner="w1")
    assert store.claim(*item, owner="w2", invocation="s1", lease_s=5, now=T0 + 1).status == "failed"
    assert store.peek(*item, invocation="s1", now=T0 + 1).status == "failed"
    assert store.peek(*item, invocation="s2", now=T0 + 1).status == "open"
    again = store.claim(*item, owner="w3", invocation="s2", lease_s=5, now=T0 + 2)   # a --resume
    assert (again.status, again.attempts) == ("claimed", 2)
    store.fail(*item[:3], {"error": "RuntimeError: boom again"}, "b1", "", owner="w3")
    (err,) = store.measurements(rid, kind="error")                          # replaced, not duplicated
    assert err.payload == {"error": "RuntimeError: boom again"}


def test_release_ends_an_invocations_leases_at_once(store):
    rid = store.start_run("zoo", {}, MACHINE)
    store.claim(rid, "a", "model", "", "", owner="w1", invocation="s1", lease_s=60, now=T0)
    store.claim(rid, "b", "model", "", "", owner="w2", invocation="s2", lease_s=60, now=T0)
    assert store.release(rid, invocation="s1") == 1
    assert store.claim(rid, "a", "model", "", "", owner="w3", invocation="s3", lease_s=60, now=T0 + 1).status == "claimed"
    assert store.claim(rid, "b", "model", "", "", owner="w3", invocation="s3", lease_s=60, now=T0 + 1).status == "busy"


def test_a_dead_owner_on_this_host_is_recognised_before_its_lease_ends(store, any_url):
    rid = store.start_run("zoo", {}, MACHINE)
    code = textwrap.dedent("""
        import os, sys
        from flopgap.store import Store
        from flopgap._workers import worker_id
        s = Store(sys.argv[1])
        r = s.claim(int(sys.argv[2]), "m", "model", "", "", owner=worker_id(), invocation="dead", lease_s=3600)
        assert r.status == "claimed"
        os._exit(9)   # like kill -9: nothing released
    """)
    p = subprocess.run([sys.executable, "-c", code, any_url, str(rid)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 9, p.stderr
    again = store.claim(rid, "m", "model", "", "", owner=worker_id(), invocation="next", lease_s=60)
    assert (again.status, again.attempts) == ("claimed", 2)
    # a live owner elsewhere (another host) keeps its lease
    store.claim(rid, "n", "model", "", "", owner="otherhost/abcd:1:x", invocation="s", lease_s=60)
    assert store.claim(rid, "n", "model", "", "", owner=worker_id(), invocation="next", lease_s=60).status == "busy"


CLAIMANT = textwrap.dedent("""
    import sys, time
    from flopgap.store import Store
    from flopgap._workers import worker_id
    url, rid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s, me = Store(url), worker_id()
    mine = []
    for i in range(n):
        r = s.claim(rid, f"m{i}", "model", "b1", "", owner=me, invocation="race", lease_s=60)
        if r.status == "claimed":
            s.complete(rid, f"m{i}", "model", {"by": me}, "b1", "", owner=me, machine="fp")
            mine.append(i)
    print(",".join(map(str, mine)))
""")


def test_concurrent_claimants_measure_every_item_exactly_once(any_url):
    s = Store(any_url)
    rid = s.start_run("zoo", {}, MACHINE)
    n = 40
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMANT, any_url, str(rid), str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    claimed = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        claimed += [int(x) for x in out.strip().split(",") if x]
    assert sorted(claimed) == list(range(n))            # each item went to exactly one claimant
    rows = s.measurements(rid, kind="model")
    assert sorted(r.model for r in rows) == sorted(f"m{i}" for i in range(n))
    assert {c["attempts"] for c in s.claims(rid)} == {1} and {c["state"] for c in s.claims(rid)} == {"done"}
    s.close()


# ------------------------------------------------------------------ migrations
def _v1_sqlite(path: Path) -> None:
    dump = (Path(__file__).parent / "data" / "store_v1.sql").read_text()
    with sqlite3.connect(path) as con:
        con.executescript(dump)


def test_a_schema_1_sqlite_file_is_migrated_in_place(tmp_path):
    db = tmp_path / "old.db"
    _v1_sqlite(db)
    s = Store(str(db))
    assert s.schema_version() == SCHEMA_VERSION == 2
    runs = {r.id: r for r in s.runs()}
    assert (runs[1].name, runs[1].status, runs[1].measurements) == ("v1 zoo", "incomplete", 2)
    rows = s.measurements(1)
    assert [(m.model, m.kind, m.key, m.target) for m in rows] == [("seed:ex1-small", "model", "b1", ""),
                                                                  ("seed:ex2-deep", "error", "b1", "")]
    assert rows[0].payload["count"] == {"flops": 43000, "params": 22000}
    assert {m.machine_fingerprint for m in rows} == {runs[1].machine_fingerprint}
    assert s.measurements(2)[0].machine_fingerprint == runs[2].machine_fingerprint == "282545b1e9bb25d5"
    # the new key: the same item for another kind of machine is another row; for the same one it is refused
    assert s.put(1, "seed:ex1-small", "model", {"median": 1}, key="b1", target="alpha")
    assert not s.put(1, "seed:ex1-small", "model", {"median": 2}, key="b1", on_conflict="skip")
    assert s.put(1, "seed:ex1-small", "model", {"median": 3}, key="b8")
    insp = inspect(s.engine)
    assert {ix["name"] for ix in insp.get_indexes("measurements")} == {"ix_measurements_model_kind",
                                                                       "ix_measurements_run"}
    assert set(insp.get_table_names()) >= {"meta", "runs", "measurements", "machines", "claims"}
    s.close()
    Store(str(db)).close()  # opening again is a no-op
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        # ids go on after the three copied rows
        assert con.execute("SELECT id, target FROM measurements WHERE id > 3").fetchall() == [(4, "alpha"), (5, "")]


def test_a_schema_1_postgresql_database_is_migrated_in_place(pg_url):
    engine = create_engine(pg_url)
    with engine.begin() as conn:  # what flopgap 0.1 left: the version-1 tables and rows
        MIGRATIONS[0][1](conn)
        conn.execute(text("CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL)"))
        conn.execute(text("INSERT INTO meta VALUES ('schema_version', '1')"))
        conn.execute(text("INSERT INTO runs (kind, name, config, config_hash, machine, machine_fingerprint, status, "
                          "started, schema_version, flopgap_version) VALUES ('zoo', 'old', '{}', 'h', '{}', 'fp-old', "
                          "'finished', '2026-01-01', 1, '0.1.0')"))
        conn.execute(text("INSERT INTO measurements (run_id, model, kind, key, payload, created) "
                          "VALUES (1, 'm', 'model', 'b1', '{\"median\": 1.0}', '2026-01-01')"))
    engine.dispose()
    s = Store(pg_url)
    assert s.schema_version() == 2
    (m,) = s.measurements(1)
    assert (m.payload, m.target, m.machine_fingerprint) == ({"median": 1.0}, "", "fp-old")
    assert s.put(1, "m", "model", {"median": 2.0}, key="b1", target="alpha")
    assert not s.put(1, "m", "model", {"median": 3.0}, key="b1", on_conflict="skip")
    s.close()


def test_many_processes_opening_a_fresh_postgresql_store_at_once(pg_url):
    code = "import sys; from flopgap.store import Store; s = Store(sys.argv[1]); s.start_run('zoo', {}, {})"
    procs = [subprocess.Popen([sys.executable, "-c", code, pg_url], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    s = Store(pg_url)
    assert s.schema_version() == SCHEMA_VERSION and len(s.runs()) == 4


def test_machines_table_keeps_the_first_metadata(store):
    fp1 = store.register_machine({"cpu_model": "A", "load_average": [1, 1, 1]})
    assert store.register_machine({"cpu_model": "A", "load_average": [9, 9, 9]}) == fp1  # load is volatile
    fp2 = store.register_machine({"cpu_model": "B"})
    assert fp2 != fp1 and fp1 == machine_fingerprint({"cpu_model": "A"})
    assert store.machines() == {fp1: {"cpu_model": "A", "load_average": [1, 1, 1]}, fp2: {"cpu_model": "B"}}
    assert store.machines([fp2]) == {fp2: {"cpu_model": "B"}}
