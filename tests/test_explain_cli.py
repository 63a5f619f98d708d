"""The real CLI as a subprocess: exit code, JSON on stdout, empty stderr.

The machine profile is a synthetic one written to a temporary cache dir, so the
classification does not depend on this machine's timings; the profiler run is real.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flopgap.machine import MachineProfile
from flopgap.timing import FakeClock, FakeLoad, TimerOptions
from flopgap.timing import measure as real_measure   # bound now: tests below replace flopgap.timing.measure

FLOPGAP = Path(sys.executable).with_name("flopgap")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    e = {**os.environ, "FLOPGAP_CACHE_DIR": str(cache), "COLUMNS": "200"}
    old = os.environ.get("FLOPGAP_CACHE_DIR")
    os.environ["FLOPGAP_CACHE_DIR"] = str(cache)
    try:  # peak 100 GFLOP/s, 10 GB/s memory, 50 GB/s cache (<= 100 kB), 5 us per op
        MachineProfile.synthetic(quick=True).save()
    finally:
        if old is None:
            os.environ.pop("FLOPGAP_CACHE_DIR")
        else:
            os.environ["FLOPGAP_CACHE_DIR"] = old
    return e


def run(env, *args):
    return subprocess.run([str(FLOPGAP), *args], capture_output=True, text=True, env=env, timeout=120)


def test_explain_seed_ex2_deep_json(env):
    p = run(env, "explain", "seed:ex2-deep", "--quick-machine", "--max-time", "0.3", "--json", "-")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    d = json.loads(p.stdout)
    assert d["schema"] == "flopgap.explain/2" and d["model"] == "seed:ex2-deep"
    assert [o["op"] for o in d["ops"]] == ["aten.linear.default"] * 10
    assert all(o["time_s"] > 0 and o["bound"] == "overhead" for o in d["ops"])
    dominant = next(f for f in d["findings"] if f["kind"] == "dominant")
    assert dominant["numbers"]["class"] == "overhead"
    overhead = next(f for f in d["findings"] if f["kind"] == "overhead")
    assert overhead["numbers"]["ops"] == 10 and overhead["numbers"]["dispatch_overhead_s"] == 5e-6
    assert d["totals"]["unmatched_records"] == 0
    m = d["measurement"]
    assert m["n_samples"] > 0 and m["spec"]["threads"] == d["totals"]["threads"]
    # a busy machine (the sentinel's word) is reported, never used to reconcile
    if m["disturbed"]:
        assert d["totals"]["measured_median_s"] is None and d["findings"][0]["kind"] == "disturbed"
    else:
        assert d["totals"]["measured_median_s"] == m["median"] > 0
    assert d["machine"]["source"] == "cache"


def main(env, capsys, *args) -> tuple[int, str, str]:
    """The CLI in this process (cheaper than a subprocess): exit code, stdout, stderr."""
    from flopgap.cli import main as cli_main

    old = os.environ.get("FLOPGAP_CACHE_DIR")
    os.environ["FLOPGAP_CACHE_DIR"] = env["FLOPGAP_CACHE_DIR"]
    try:
        with pytest.raises(SystemExit) as exc:
            cli_main(list(args))
    finally:
        if old is None:
            os.environ.pop("FLOPGAP_CACHE_DIR")
        else:
            os.environ["FLOPGAP_CACHE_DIR"] = old
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_explain_table_output_and_plot(env, capsys, tmp_path):
    png = tmp_path / "roof.png"
    rc, out, err = main(env, capsys, "explain", "seed:ex2-wide", "--quick-machine", "--no-measure", "--calls", "3",
                        "--plot", str(png))
    assert rc == 0, err
    assert err.strip() == f"wrote {png}"
    assert "roofline classes" in out and "Dominant cost" in out and "top 10 ops by FLOPs" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_json(env):
    p = run(env, "predict", "seed:ex2-deep", "--quick-machine", "--json", "-")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    d = json.loads(p.stdout)
    assert d["schema"] == "flopgap.predict/3" and not d["calibrated"]
    # 10 overhead-bound linears at 5 us + 11 module calls at 1 us
    assert d["latency_s"] == pytest.approx(10 * 5e-6 + 11 * 1e-6)
    # no chains: the method error is the stand-in +-25%, widened to the shipped held-out error
    # where that is wider; nothing calibrated, so nothing extrapolated
    from flopgap.explain._predict import METHOD_ERROR

    q_lo, q_hi = -math.log(1.25), math.log(1.25)
    if METHOD_ERROR is not None:
        q_lo, q_hi = min(q_lo, METHOD_ERROR["q_lo"]), max(q_hi, METHOD_ERROR["q_hi"])
    iv = d["interval"]
    assert iv["level"] == 0.9 and iv["low_s"] == pytest.approx(d["latency_s"] * math.exp(q_lo))
    assert iv["high_s"] == pytest.approx(d["latency_s"] * math.exp(q_hi))
    assert "fewer than 5 chains" in iv["method_error"]["source"]
    assert d["extrapolated"] == [] and d["extrapolated_share"] == 0.0 and d["warnings"] == [
        "no calibration in the machine profile: per-op floors (roofline, or the host's cost of a tiny op of the family) only"]


def test_predict_table_states_the_interval(env, capsys, monkeypatch):
    monkeypatch.setattr("flopgap.explain._predict.METHOD_ERROR", None)   # the stand-in alone, exactly
    rc, out, err = main(env, capsys, "predict", "seed:ex2-deep", "--quick-machine")
    assert rc == 0 and err == ""
    first = out.splitlines()[0]
    assert first.startswith("seed:ex2-deep  predicted 61 us  90% interval 48.8 us .. 76.3 us  for ")
    assert "interval: method error -20% .. +25% (+-25% (fewer than 5 chains))" in out


def test_machine_reads_the_cache(env, capsys):
    rc, out, err = main(env, capsys, "machine", "--quick", "--json", "-")
    assert rc == 0, err
    assert err == ""
    d = json.loads(out)
    assert d["schema"] == "flopgap.machine/3" and d["source"] == "cache" and d["peak_flops"] == {"fp32": 1e11}


@pytest.mark.parametrize("command", ["machine", "explain", "predict"])
def test_help_states_the_cache_location(env, capsys, command):
    rc, out, _ = main(env, capsys, command, "--help")
    assert rc == 0
    assert "FLOPGAP_CACHE_DIR" in out and "~/.cache/flopgap/" in out


@pytest.mark.parametrize("args", [["--calls", "0"], ["--plot", "x.svg"], ["--max-time", "0"]])
def test_bad_options_are_usage_errors(env, capsys, args):
    rc, out, err = main(env, capsys, "explain", "seed:ex2-deep", "--quick-machine", *args)
    assert rc == 2
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1


def _interrupted_measure(*args, **kwargs):
    """What flopgap.timing.measure returns when Ctrl-C stops its sampling."""
    clock = FakeClock(1e-3)   # 1 ms per call
    m = real_measure(clock.model, (), TimerOptions(max_time=0.05, min_time=0), clock=clock, load=FakeLoad.quiet())
    m.interrupted = True
    return m


def test_predict_measure_ctrl_c_exits_130_after_reporting(env, capsys, monkeypatch):
    monkeypatch.setattr("flopgap.timing.measure", _interrupted_measure)
    rc, out, err = main(env, capsys, "predict", "seed:ex2-deep", "--quick-machine", "--measure", "--json", "-")
    assert rc == 130
    d = json.loads(out)
    m = d["check"]["measurement"]
    assert m["interrupted"] is True and m["median"] == pytest.approx(1e-3)
    assert d["check"]["error"] == pytest.approx(d["latency_s"] / 1e-3 - 1)
    assert err.startswith("interrupted")


def test_explain_ctrl_c_in_timing_exits_130_after_reporting(env, capsys, monkeypatch):
    monkeypatch.setattr("flopgap.timing.measure", _interrupted_measure)
    rc, out, err = main(env, capsys, "explain", "seed:ex2-wide", "--quick-machine", "--calls", "3")
    assert rc == 130
    assert "roofline classes" in out and "interrupted" in out
    assert err.startswith("interrupted")
