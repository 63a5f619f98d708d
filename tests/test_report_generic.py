"""--html and --db on every command: the generic report of a result and single-command runs."""

import json
import sqlite3
import subprocess

import pytest

from conftest import FLOPGAP
from flopgap.report.generic import sections_from_result
from flopgap.report.html import Plot, Para, Table, render_html


def test_generic_sections_layout():
    data = {
        "schema": "flopgap.x/1", "model": "<b>m</b>", "median": 1.23456789e-05, "samples": [1.0] * 500,
        "totals": {"flops": 10, "ratio": 0.5, "nested": [{"a": 1, "b": [1, 2]}, {"a": 2, "c": None}]},
        "ops": [{"op": "aten.mm", "flops": 7}] * 3,
        "findings": [{"text": "overhead dominates: 63%", "numbers": {"share": 0.63}}],
    }
    sections = sections_from_result("count: m", data, figures=[(b"\x89PNG", "plot")], max_rows=2)
    titles = [s.title for s in sections]
    assert titles == ["count: m", "totals", "ops", "findings", "plots"]
    summary = sections[0].blocks[1]
    assert isinstance(summary, Table)
    assert ["median", "1.235e-05"] in summary.rows and ["samples", "500 values"] in summary.rows
    nested = sections[1].blocks[1]
    assert nested.columns == ["a", "b", "c"] and nested.rows == [[1, "1, 2", None], [2, None, None]]
    ops = sections[2].blocks[0]
    assert len(ops.rows) == 2 and "first 2 of 3" in ops.caption
    assert isinstance(sections[3].blocks[0], Para) and "63%" in sections[3].blocks[0].text
    assert isinstance(sections[4].blocks[0], Plot)
    page = render_html("t", sections)
    assert "&lt;b&gt;m&lt;/b&gt;" in page and "<b>m</b>" not in page


def run(*args, cwd):
    return subprocess.run([FLOPGAP, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.slow  # several CLI processes end to end: the slow tier (make test-slow, CI)
def test_count_and_time_keep_html_and_store_runs_that_report_and_compare(tmp_path):
    p = run("count", "seed:ex2-deep", "--db", "k.db", "--html", "c.html", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == ["wrote report c.html", "stored as run 1 (count, finished) in sqlite:///k.db"]
    page = (tmp_path / "c.html").read_text()
    assert "count: seed:ex2-deep" in page and "linear.default" in page and 'th scope="col"' in page
    for _ in range(2):
        p = run("time", "seed:ex3-float", "--max-time", "0.3", "--db", "k.db", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
    with sqlite3.connect(tmp_path / "k.db") as con:
        assert con.execute("SELECT id, kind, status FROM runs ORDER BY id").fetchall() == [
            (1, "count", "finished"), (2, "time", "finished"), (3, "time", "finished")]
        assert con.execute("SELECT run_id, model, kind FROM measurements ORDER BY run_id").fetchall() == [
            (1, "seed:ex2-deep", "count"), (2, "seed:ex3-float", "time"), (3, "seed:ex3-float", "time")]
    p = run("compare", "2", "3", "--db", "k.db", cwd=tmp_path)
    assert p.returncode == 0 and "seed:ex3" in p.stdout and "B / A" in p.stdout
    p = run("compare", "2", "3", "--db", "k.db", "--json", "-", cwd=tmp_path)
    (row,) = json.loads(p.stdout)["rows"]
    # the flag follows from the ratio's CI and the 5% threshold (or the sentinel's word)
    expected = ("inconclusive (disturbed)" if row["a"]["disturbed"] or row["b"]["disturbed"] else
                "regression" if row["ci_low"] > 1.05 else "improvement" if row["ci_high"] < 1 / 1.05 else "no change")
    assert row["model"] == "seed:ex3-float" and row["flag"] == expected
    assert row["ci_low"] <= row["ratio"] <= row["ci_high"]
    p = run("report", "1", "--db", "k.db", "--out", "r.html", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == ""
    assert (tmp_path / "r.html").read_text().count("linear.default") == page.count("linear.default")
