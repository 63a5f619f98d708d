"""The real CLI as a subprocess: exit codes, stdout, one-line errors, empty stderr."""

import csv
import io
import json
import subprocess
import sys

import pytest

from conftest import FLOPGAP


def run(*args, cwd=None):
    return subprocess.run([FLOPGAP, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_count_json_schema_and_totals():
    p = run("count", "seed:ex2-deep", "--json", "-")
    assert p.returncode == 0 and p.stderr == ""
    data = json.loads(p.stdout)
    assert data["schema"] == "flopgap.count/1"
    assert data["model"] == "seed:ex2-deep" and data["inputs"] == ["1x100:float32"]
    # ten Linear(100,100) at batch 1: 10*(2*100*100 + 100) FLOPs, 10*100*100 MACs
    t = data["totals"]
    assert (t["params"], t["flops"], t["macs"], t["ops"]) == (101000, 201000, 100000, 10)
    assert t["bytes_read"] == 10 * (400 + 40000 + 400) and t["bytes_written"] == 10 * 400
    assert [m["name"] for m in data["modules"]][:3] == ["", "0", "1"]
    assert len(data["ops"]) == 10 and data["uncovered"] == []


def test_count_table_output_and_batch_override():
    p = run("count", "seed:ex1-small", "--batch", "4")
    assert p.returncode == 0 and p.stderr == ""
    assert "4x1000:float32" in p.stdout
    assert "formula coverage: 100%" in p.stdout
    assert "fused multiply-add = 2 FLOPs" in p.stdout


def test_count_csv(tmp_path):
    out = tmp_path / "tables"  # --csv is a folder of tables, as on every command
    p = run("count", "seed:ex2-wide", "--csv", str(out))
    assert p.returncode == 0
    rows = list(csv.DictReader(io.StringIO((out / "ops.csv").read_text())))
    assert [r["op"] for r in rows] == ["aten.linear.default"] * 2
    assert [int(r["macs"]) for r in rows] == [100 * 500, 500 * 100]


def test_count_explicit_inputs_for_torchvision_and_meta():
    p = run("count", "torchvision:resnet18", "--meta", "--input", "2x3x64x64", "--json", "-")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["meta"] is True and data["inputs"] == ["2x3x64x64:float32"]


@pytest.mark.parametrize("args,needle", [
    (["count", "torchvision:nope"], "unknown torchvision"),
    (["count", "nosuchpkg_abc.m:f"], "cannot import"),
    (["count", "seed:ex2-deep", "--input", "1xq"], "bad input spec"),
    (["count", "seed:ex2-deep", "--input", "1x7"], "raised on inputs"),
    (["count", "seed:ex2-deep", "--kwargs", "{bad"], "not valid JSON"),
    (["count", "seed:ex2-deep", "--bogus"], "No such option"),
    (["count"], "Missing argument"),
    (["count", "missing.pt2"], "does not exist"),
    (["nosuchcommand"], "No such command"),
    (["count", "seed:ex2-deep", "--top", "-1"], "--top must be >= 0"),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    p = run(*args)
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], p.stderr


def test_callable_returning_non_module_and_corrupt_file(tmp_path):
    (tmp_path / "facts.py").write_text("def make():\n    return 'not a module'\n")
    p = run("count", "facts:make", "--input", "1x3", cwd=tmp_path)
    assert p.returncode == 2 and "not an nn.Module" in p.stderr and len(p.stderr.splitlines()) == 1
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    p = run("count", str(tmp_path / "junk.pt"), "--input", "1x3")
    assert p.returncode == 2 and "not a TorchScript archive" in p.stderr and len(p.stderr.splitlines()) == 1


def test_models_lists_seed_examples():
    p = run("models")
    assert p.returncode == 0
    for name in ("seed:ex1-small", "seed:ex1-large", "seed:ex2-deep", "seed:ex2-wide", "seed:ex3-float"):
        assert name in p.stdout


def test_python_m_flopgap_cli_is_the_same_cli():
    # `python -m flopgap.cli` (used where the console script is not installed, e.g. a GPU
    # image running from src/) gives the same exit codes and one-line errors
    r = subprocess.run([sys.executable, "-m", "flopgap.cli", "count", "torchvision:no_such_model"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no_such_model" in r.stderr
