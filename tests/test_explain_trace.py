"""``explain --trace``: torch.profiler's own Chrome trace, op events carrying flopgap's figures."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import FLOPGAP
from flopgap.count import count
from flopgap.explain import explain
from flopgap.explain._trace import TraceJoin, annotate_trace
from flopgap.machine import MachineProfile

_CLASSES = {"compute-bound", "memory-bound", "overhead-bound"}


def _hta_shape(data: dict) -> list[dict]:
    """What Holistic Trace Analysis reads (hta/common/trace_parser.py): a ``traceEvents``
    list whose complete events (``ph: X``) have name, cat, pid, tid, numeric ts and dur,
    and a dict of args; every other top-level key is metadata. Returns the X events."""
    assert isinstance(data["traceEvents"], list)
    xs = [e for e in data["traceEvents"] if e.get("ph") == "X"]
    assert xs
    for e in xs:
        assert {"name", "cat", "pid", "tid", "ts", "dur"} <= e.keys()
        assert isinstance(e["ts"], (int, float)) and isinstance(e["dur"], (int, float)) and e["dur"] >= 0
        assert isinstance(e.get("args", {}), dict)
    return xs


def test_trace_op_events_carry_flops_bytes_intensity_and_class(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()
    x = torch.randn(1, 3, 8, 8)
    c = count(model, (x,))
    path = tmp_path / "deep" / "trace.json"
    ex = explain(model, (x,), name="tiny", count_result=c, profile=MachineProfile.synthetic(quick=True),
                 measure=False, calls=3, trace=path)
    data = json.loads(path.read_text())
    xs = _hta_shape(data)
    annotated = [e for e in xs if "flopgap.flops" in e["args"]]
    matched = [op for op in ex.ops if op.matched]
    # every op joined to the count (the four layers), in each of the 3 profiled calls
    assert len(matched) == 4 and len(annotated) == 3 * len(matched) == ex.trace["annotated_op_events"]
    by_index = {r.index: r for r in c.ops}
    for e in annotated:
        a = e["args"]
        r = by_index[a["flopgap.index"]]
        assert e["name"] == "aten::" + r.op.split(".")[1] and e["cat"] == "cpu_op"
        assert (a["flopgap.flops"], a["flopgap.macs"], a["flopgap.bytes"]) == (r.flops, r.macs, r.bytes)
        assert a["flopgap.intensity"] == (pytest.approx(r.flops / r.bytes, rel=1e-3) if r.bytes else None)
        assert a["flopgap.bound"] in _CLASSES and a["flopgap.module"] == (r.module or "(model)")
        assert "External id" in a  # the profiler's own args stay
    conv = next(e for e in annotated if e["name"] == "aten::conv2d")
    assert conv["args"]["flopgap.flops"] == 2 * 8 * 6 * 6 * 27 + 8 * 6 * 6  # 2*MACs + bias
    meta = data["flopgap"]
    assert meta["schema"] == "flopgap.trace/1" and meta["model"] == "tiny" and meta["unannotated"] == 0
    assert "flops" in meta["conventions"] and data["traceName"]  # the profiler's metadata stays too


def test_gzip_trace_and_bad_suffix(tmp_path):
    from flopgap.errors import UsageError

    model = nn.Linear(4, 4).eval()
    x = torch.randn(2, 4)
    prof = MachineProfile.synthetic(quick=True)
    path = tmp_path / "t.json.gz"
    explain(model, (x,), profile=prof, measure=False, calls=3, trace=path)
    data = json.loads(gzip.decompress(path.read_bytes()))
    assert sum("flopgap.flops" in e.get("args", {}) for e in _hta_shape(data)) == 3
    with pytest.raises(UsageError, match="--trace must be a .json or .json.gz"):
        explain(model, (x,), profile=prof, measure=False, trace=tmp_path / "t.txt")


def test_cuda_kernels_keep_their_links_and_name_their_op(tmp_path):
    """A trace shaped like kineto's CUDA export (no GPU here): the op event gets the
    figures, the kernel launched under it (its External id is the inner aten::addmm's)
    names the op, and the runtime call, flow events and correlation ids are untouched."""
    events = [
        {"ph": "X", "cat": "cpu_op", "name": "aten::linear", "pid": 1, "tid": 1, "ts": 0.0, "dur": 20.0,
         "args": {"External id": 10}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::addmm", "pid": 1, "tid": 1, "ts": 2.0, "dur": 15.0,
         "args": {"External id": 12}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 5.0, "dur": 4.0,
         "args": {"External id": 12, "correlation": 99}},
        {"ph": "s", "cat": "ac2g", "name": "ac2g", "id": 99, "pid": 1, "tid": 1, "ts": 5.0, "bp": "e"},
        {"ph": "X", "cat": "kernel", "name": "void gemm<float>", "pid": 0, "tid": 7, "ts": 30.0, "dur": 8.0,
         "args": {"External id": 12, "correlation": 99, "stream": 7}},
        {"ph": "f", "cat": "ac2g", "name": "ac2g", "id": 99, "pid": 0, "tid": 7, "ts": 30.0, "bp": "e"},
    ]
    path = tmp_path / "cuda.json"
    path.write_text(json.dumps({"traceEvents": events, "deviceProperties": [{"id": 0}]}))
    before = json.loads(path.read_text())["traceEvents"]
    row = {"index": 3, "op": "aten.linear.default", "module": "fc", "flops": 2000, "macs": 1000, "bytes": 500,
           "bound": "memory", "roofline_s": 1e-6, "predicted_s": 2e-6}
    summary = annotate_trace(path, [TraceJoin(10, "aten::linear", 0, (12,))], [row], model="m", conventions={})
    after = json.loads(path.read_text())["traceEvents"]
    assert summary["annotated_op_events"] == 1 and summary["annotated_device_events"] == 1
    assert after[0]["args"]["flopgap.bound"] == "memory-bound" and after[0]["args"]["flopgap.intensity"] == 4.0
    kernel = after[4]["args"]
    assert (kernel["flopgap.index"], kernel["flopgap.op"], kernel["flopgap.module"]) == (3, "aten.linear.default", "fc")
    assert kernel["correlation"] == 99 and kernel["External id"] == 12
    for i in (1, 2, 3, 5):  # inner op, runtime call and the flow pair: as the profiler wrote them
        assert after[i] == before[i]


@pytest.mark.slow
def test_cli_trace(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "FLOPGAP_CACHE_DIR": str(cache)}
    old = os.environ.get("FLOPGAP_CACHE_DIR")
    os.environ["FLOPGAP_CACHE_DIR"] = str(cache)
    try:
        MachineProfile.synthetic(quick=True).save()
    finally:
        os.environ["FLOPGAP_CACHE_DIR"] = old or ""
        if old is None:
            os.environ.pop("FLOPGAP_CACHE_DIR")
    out = tmp_path / "ex2.json"
    p = subprocess.run([FLOPGAP, "explain", "seed:ex2-deep", "--quick-machine", "--no-measure", "--calls", "3",
                        "--trace", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == f"wrote trace {out} (30 op events annotated)"
    data = json.loads(out.read_text())
    assert sum(e.get("args", {}).get("flopgap.flops") == 20100 for e in _hta_shape(data)) == 30
    bad = subprocess.run([FLOPGAP, "explain", "seed:ex2-deep", "--trace", str(tmp_path / "t.csv")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --trace must be") and bad.stderr.count("\n") == 1
