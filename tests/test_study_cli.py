"""The study commands through the real CLI (subprocess): exit codes, rows, HTML, stderr."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest

from flopgap.store import Store
from flopgap.study import run_zoo
from flopgap.timing import TimerOptions


def run(cmd, *args, cwd=None):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.mark.slow  # several CLI processes end to end: the slow tier (make test-slow, CI)
def test_study_zoo_end_to_end(flopgap_cmd, tmp_path, synthetic_machine):
    db = tmp_path / "x.db"
    html = tmp_path / "r.html"
    p = run(flopgap_cmd, "study", "zoo", "--models", "seed:ex2-deep,seed:ex2-wide", "--max-time", "0.3",
            "--quick-profile", "--db", f"sqlite:///{db}", "--html", str(html), "--json", "-", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    # side notes go to stderr (on a busy machine, a warning may precede the report line) ...
    assert p.stderr.strip().splitlines()[-1] == f"wrote report {html}"
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr
    data = json.loads(p.stdout)  # ... so stdout is strict JSON (NaN written as null)
    assert data["run"]["id"] == 1 and data["run"]["status"] == "finished"
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT model, key, kind FROM measurements ORDER BY model").fetchall()
        assert rows == [("seed:ex2-deep", "b1", "model"), ("seed:ex2-wide", "b1", "model")]
        assert con.execute("SELECT kind, status FROM runs").fetchall() == [("zoo", "finished")]
    text = html.read_text()
    assert "<td>seed:ex2-deep</td>" in text and "Spearman rho" in text and "data:image/png;base64," in text
    assert not (tmp_path / "flopgap.db").exists() and not (tmp_path / "reports").exists()  # only what was asked

    p = run(flopgap_cmd, "runs", "--db", str(db))
    assert p.returncode == 0 and p.stderr == "" and "zoo" in p.stdout


def _fake_store(path):
    store = Store(str(path))
    for scale in (1.0, 1.5):
        def measure(it, scale=scale):
            lat = {"a": 1e-3, "b": 2e-3, "<script>alert(1)</script>": 3e-4}[it.model] * scale
            return {"count": {"params": 10, "flops": 1000 * len(it.model), "bytes_read": 5, "bytes_written": 5,
                              "ops": 3}, "median": lat, "ci_low": lat * 0.99, "ci_high": lat * 1.01,
                    "prediction": {"latency_s": lat}, "batch": 1}
        run_zoo(store=store, models=["a", "b", "<script>alert(1)</script>"], machine={"cpu_model": "fake"},
                measure=measure, n_boot=50, timer=TimerOptions(max_time=scale))
    store.close()


@pytest.mark.slow  # several CLI processes end to end: the slow tier (make test-slow, CI)
def test_runs_report_and_compare(flopgap_cmd, tmp_path):
    db = tmp_path / "f.db"
    _fake_store(db)
    p = run(flopgap_cmd, "runs", "--db", str(db))
    assert p.returncode == 0 and p.stderr == ""
    rows = [ln.split("│")[1].strip() for ln in p.stdout.splitlines() if ln.startswith("│")]
    assert [r for r in rows if r] == ["2", "1"]  # newest first

    out = tmp_path / "rep" / "run1.html"
    p = run(flopgap_cmd, "report", "1", "--db", str(db), "--out", str(out), "--csv", str(tmp_path / "csv"))
    # files written are named on stderr, as by every command
    assert p.returncode == 0 and all(ln.startswith("wrote ") for ln in p.stderr.splitlines()), p.stderr
    text = out.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert (tmp_path / "csv" / "correlations_b1.csv").read_text().startswith("metric,n,Spearman rho [95% CI]")

    p = run(flopgap_cmd, "compare", "1", "2", "--db", str(db), "--fail-on-regression")
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stdout.count("regression") >= 3 and "1.5 [" in p.stdout
    assert p.stderr.strip() == "error: 3 regression(s) beyond 5%"
    p = run(flopgap_cmd, "compare", "2", "1", "--db", str(db))
    assert p.returncode == 0 and p.stdout.count("improvement") == 3


@pytest.mark.parametrize("args, message", [
    (["report", "7"], "no run 7 in"),
    (["compare", "1", "x"], "run id must be a number"),
    (["study", "zoo", "imagenet"], "unknown zoo 'imagenet'"),
    (["study", "zoo", "--models", "torchvision:resnet19"], "unknown model 'torchvision:resnet19'"),
    (["study", "zoo", "seed", "--db", "nosuchdialect://x"], "cannot use --db URL"),
    (["study", "shufflenet-v2", "--guideline", "G9"], "unknown guideline"),
])
def test_usage_errors_are_one_line_exit_2(tmp_path, capsys, args, message):
    # in-process (flopgap.cli.main, as the console script calls it): the subprocess path is
    # covered above; this keeps the error table fast
    from flopgap.cli import main

    db = tmp_path / "f.db"
    _fake_store(db)
    if "--db" not in args:
        args = [*args, "--db", str(db)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_read_commands_do_not_create_a_store(flopgap_cmd, tmp_path):
    p = run(flopgap_cmd, "runs", cwd=tmp_path)
    assert p.returncode == 2 and "no results store at 'flopgap.db'" in p.stderr
    assert not (tmp_path / "flopgap.db").exists()
