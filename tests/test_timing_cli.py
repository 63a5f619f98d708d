"""``flopgap time`` end to end: the real CLI in a subprocess (exit code, JSON, stderr).

No assertion here depends on how fast anything ran: the machine is shared and noisy.
"""

import json
import subprocess

import pytest

from conftest import FLOPGAP

from flopgap.cli import main


def _run(*args, timeout=120):
    return subprocess.run([FLOPGAP, "time", *args], capture_output=True, text=True, timeout=timeout)


def test_time_json_to_stdout():
    r = _run("seed:ex2-deep", "--max-time", "1", "--json", "-")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    d = json.loads(r.stdout)
    assert d["schema"] == "flopgap.time/1" and d["kind"] == "measurement"
    assert d["spec"]["name"] == "seed:ex2-deep" and d["spec"]["inputs"] == ["1x100:float32"]
    assert d["spec"]["grad"] is False and d["spec"]["threads"] == d["environment"]["torch_threads"]
    assert len(d["samples"]) == d["n_samples"] >= 1
    assert d["calls"] == d["n_samples"] * d["block_size"]
    assert d["ci_low"] <= d["median"] <= d["ci_high"]
    assert d["cold_s"] > 0 and d["warmup_calls"] >= 1
    assert d["ci_method"].startswith("order-statistic")


def test_time_vs_json():
    r = _run("seed:ex2-deep", "--vs", "seed:ex2-wide", "--max-time", "1", "--threads", "1", "--json", "-")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    d = json.loads(r.stdout)
    assert d["kind"] == "comparison"
    assert d["a"]["spec"]["name"] == "seed:ex2-deep" and d["b"]["spec"]["name"] == "seed:ex2-wide"
    assert d["a"]["spec"]["threads"] == 1
    assert len(d["a"]["samples"]) == len(d["b"]["samples"])  # paired rounds
    assert d["ci_low"] <= d["ratio"] <= d["ci_high"]


def test_time_table(capsys):
    with pytest.raises(SystemExit) as e:
        main(["time", "seed:ex2-wide", "--max-time", "0.3"])
    out, err = capsys.readouterr()
    assert e.value.code == 0 and err == ""
    for text in ("seed:ex2-wide", "median", "95% CI", "cold (first call)", "warm-up", "inference_mode"):
        assert text in out


@pytest.mark.slow  # several CLI processes end to end: the slow tier (make test-slow, CI)
def test_time_processes_reports_spread():
    r = _run("seed:ex2-wide", "--processes", "2", "--max-time", "0.3", "--json", "-")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["kind"] == "processes" and d["completed"] == 2 and len(d["results"]) == 2
    # the summary is made of the children's own results: each value is that process's median
    assert d["values"] == [r["median"] for r in d["results"]]
    assert d["cold_s"] == [r["cold_s"] for r in d["results"]]
    assert d["median"] == pytest.approx(sum(d["values"]) / 2)   # the median of two values
    assert d["spread"] == pytest.approx(max(d["values"]) / min(d["values"]))
    assert d["failure"] is None and d["interrupted"] is False


@pytest.mark.parametrize("args, msg", [  # in-process through cli.main: the same path, without a torch import each
    (["seed:nope"], "unknown seed model"),
    (["seed:ex2-deep", "--precision", "2"], "--precision"),
    (["seed:ex2-deep", "--max-time", "0"], "--max-time"),
    (["seed:ex2-deep", "--threads", "0"], "--threads"),
    (["seed:ex2-deep", "--processes", "0"], "--processes"),
    (["seed:ex2-deep", "--device", "tpu"], "--device"),
    (["seed:ex2-deep", "--input", "1x7"], "raised on its first call"),
])
def test_bad_input_exits_2_with_one_line(args, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(["time", *args])
    out, err = capsys.readouterr()
    assert e.value.code == 2, (out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0]
