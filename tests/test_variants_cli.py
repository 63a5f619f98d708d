"""``flopgap variants`` end to end, as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FLOPGAP = str(Path(sys.executable).with_name("flopgap"))


@pytest.mark.slow  # several CLI processes end to end: the slow tier (make test-slow, CI)
def test_cli_json_on_stdout():
    p = subprocess.run([FLOPGAP, "variants", "seed:ex3-float", "--try", "eager,int8-dynamic", "--max-time", "0.5",
                        "--json", "-"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    d = json.loads(p.stdout)
    assert d["schema"] == "flopgap.variants/1" and d["model"] == "seed:ex3-float"
    assert [(r["variant"], r["batch"], r["status"]) for r in d["rows"]] == [("eager", 1, "ok"), ("int8-dynamic", 1, "ok")]
    q = d["rows"][1]
    assert q["max_abs_err"] > 0 and q["max_rel_err"] < 0.05  # the bare Linear really was quantized
    # the speed-up is eager's median over the variant's, both from the one alternating run;
    # its bootstrap CI need not hold the point value and is null with too few rounds
    assert q["speedup"] == pytest.approx(q["eager_latency_s"] / q["latency_s"])
    assert q["speedup"] == pytest.approx(q["timing"]["ratio"])
    lo, hi = q["speedup_ci"]
    assert (lo is None) == (hi is None) and (lo is None or 0 < lo <= hi)
    assert q["ops_eager"] == 1 and q["ops"] > 1


def test_cli_unknown_variant_exit_2():
    p = subprocess.run([FLOPGAP, "variants", "seed:ex3-float", "--try", "eager,int4"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.startswith("error: unknown variant 'int4'; known: eager, int8-dynamic") and p.stderr.count("\n") == 1


def test_cli_bad_batch_exit_2():
    p = subprocess.run([FLOPGAP, "variants", "seed:ex3-float", "--batch", "1,x"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and p.stderr == "error: --batch must be comma-separated positive integers, got '1,x'\n"


def test_cli_list_needs_no_model():
    p = subprocess.run([FLOPGAP, "variants", "--list"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr == ""
    names = [line.split()[0] for line in p.stdout.splitlines()]
    assert names[:3] == ["eager", "int8-dynamic", "int8-legacy"] and "channels_last" in names
