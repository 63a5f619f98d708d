"""Two processes writing into one SQLite store at once: nothing lost, nothing corrupted."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

from flopgap.store import SCHEMA_VERSION, Store

WRITER = textwrap.dedent("""
    import sys
    from flopgap.store import Store
    url, run_id, who = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = Store(url)
    for i in range(50):
        s.put(run_id, f"{who}-model-{i}", "model", {"i": i, "who": who, "pad": "x" * 2000}, key="b1")
        if i % 10 == 0:  # interleave reads with the other writer's commits
            s.runs()
    # a second run from each writer, started while the other writes
    s.start_run("zoo", {"who": who}, {"cpu_model": who})
""")


def test_two_writer_processes(tmp_path):
    db = tmp_path / "c.db"
    url = f"sqlite:///{db}"
    s = Store(url)
    rid = s.start_run("zoo", {"test": "concurrency"}, {"cpu_model": "test"})
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(rid), who], stderr=subprocess.PIPE, text=True)
             for who in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    rows = s.measurements(rid)
    assert len(rows) == 100
    assert {r.model for r in rows} == {f"{w}-model-{i}" for w in "ab" for i in range(50)}
    assert len(s.runs()) == 3
    s.close()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == 100
        assert con.execute("SELECT COUNT(*) FROM (SELECT run_id, model, kind, key FROM measurements "
                           "GROUP BY run_id, model, kind, key HAVING COUNT(*) > 1)").fetchone()[0] == 0


def test_two_processes_creating_a_fresh_store(tmp_path):
    # both start on a missing file: the schema is created once, both write their 50 rows
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = textwrap.dedent("""
        import sys
        from flopgap.store import Store
        s = Store(sys.argv[1])
        rid = s.start_run("zoo", {"who": sys.argv[2]}, {})
        for i in range(50):
            s.put(rid, f"m{i}", "model", {"i": i})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, url, who], stderr=subprocess.PIPE, text=True)
             for who in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    s = Store(url)
    assert sorted(r.measurements for r in s.runs()) == [50, 50]
    assert s.schema_version() == SCHEMA_VERSION
