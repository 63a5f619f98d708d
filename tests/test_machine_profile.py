"""Machine profile: figures with spreads, fingerprint, cache per fingerprint, quick mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flopgap.count import OpRecord
from flopgap.errors import FlopgapError, UsageError
from flopgap.machine import MachineProfile, cache_dir, fingerprint, profile_machine
from flopgap.machine import _profile
from flopgap.machine._bench import figure_from_times, time_call


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOPGAP_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def fake_measure(monkeypatch):
    calls = []

    def measure(device, quick, progress, request, load=None):
        from flopgap.machine._measure import Measured

        calls.append(quick)
        p = MachineProfile.synthetic(peak=1e11 * (len(calls)), quick=quick)
        ceilings = {k: getattr(p, k) for k in _profile._CEILING_FIELDS}
        return Measured(ceilings=ceilings, chains=[], samples=[], sections={})

    monkeypatch.setattr(_profile, "_measure", measure)
    monkeypatch.setattr(_profile, "_request", lambda prof, needs, quick, cuda: _profile.Request(
        ceilings=prof is None, chains=prof is None))
    return calls


def test_figure_from_times_is_rate_statistics():
    f = figure_from_times(np.array([1.0, 2.0, 4.0, 4.0, 8.0]), 8.0, "FLOP/s")   # rates 8, 4, 2, 2, 1
    assert (f.value, f.min, f.max, f.samples, f.unit) == (2.0, 1.0, 8.0, 5, "FLOP/s")
    assert (f.p25, f.p75) == (2.0, 4.0)
    assert f.rel_spread == 1.0


def test_fingerprint_fields():
    fp = fingerprint()
    assert set(fp) == {"cpu", "cores", "threads", "torch", "device"}
    assert fp["threads"] == torch.get_num_threads() and fp["torch"] == torch.__version__ and fp["device"] == "cpu"


def test_cache_dir_from_env(cache):
    assert cache_dir() == cache


def test_cache_dir_default_is_home_not_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("FLOPGAP_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "flopgap"


def test_profile_is_cached_per_fingerprint_and_refresh_remeasures(cache, fake_measure):
    first = profile_machine(quick=True)
    assert first.source == "measured" and fake_measure == [True]
    (path,) = cache.glob("machine-*-quick.json")
    again = profile_machine(quick=True)
    assert again.source == "cache" and fake_measure == [True]
    assert again.peak_flops == first.peak_flops
    fresh = profile_machine(quick=True, refresh=True)
    assert fake_measure == [True, True] and fresh.peak_flops["fp32"] == 2e11
    assert json.loads(path.read_text())["peak_flops"]["fp32"] == 2e11


def test_quick_profile_never_stands_in_for_a_full_one(cache, fake_measure):
    profile_machine(quick=True)
    full = profile_machine(quick=False)
    assert fake_measure == [True, False] and not full.quick
    assert len(list(cache.glob("machine-*.json"))) == 2


def test_other_fingerprint_is_not_reused(cache, fake_measure):
    p = MachineProfile.synthetic(quick=True)
    p.fingerprint = {**p.fingerprint, "threads": 999}
    p.save(_profile.cache_path(fingerprint(), True))   # a profile of another thread count at this path
    assert profile_machine(quick=True).source == "measured"


@pytest.mark.parametrize("text, why", [
    ("{not json", "JSONDecodeError"),
    ("[1, 2]", "a machine profile is a JSON object, got list"),
    ('{"schema": "flopgap.machine/0"}', "machine profile schema 'flopgap.machine/0' is not 'flopgap.machine/3'"),
])
def test_unusable_cache_is_remeasured_and_said(cache, fake_measure, capsys, text, why):
    path = _profile.cache_path(fingerprint(), True)
    path.write_text(text)
    prof = profile_machine(quick=True)
    assert prof.source == "measured" and fake_measure == [True]
    assert capsys.readouterr().err == ""          # the library never prints: the profile says why
    (note,) = prof.warnings
    assert "re-measured the machine profile" in note and why in note and str(path) in note
    assert json.loads(path.read_text())["schema"] == "flopgap.machine/3"   # replaced by the new profile
    assert profile_machine(quick=True).source == "cache" and fake_measure == [True]


def test_round_trip_and_schema_check():
    p = MachineProfile.synthetic(peak_flops={"fp32": 1e11, "int8": 4e11})
    q = MachineProfile.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q.to_dict() == p.to_dict()
    bad = {**p.to_dict(), "schema": "flopgap.machine/0"}
    with pytest.raises(FlopgapError, match="schema"):
        MachineProfile.from_dict(bad)


def test_bad_device_is_a_usage_error():
    with pytest.raises(UsageError):
        fingerprint("tpu")


def test_real_micro_benchmarks_run_and_report_spreads():
    times = time_call(lambda: torch.add(torch.ones(4), 1.0), min_run_time=0.002)
    assert times.size >= 3 and (times > 0).all()   # at least 3 blocks, so a spread means something
    from flopgap.machine import _ceilings

    tiny = _ceilings._tiny_op(torch.device("cpu"), 0.002)
    stream = _ceilings._stream(4096, torch.device("cpu"), 0.002)
    peak = _ceilings._matmul_peak("fp32", torch.device("cpu"), 64, 0.002)
    assert set(stream) == {"copy", "add", "triad"}
    figures = [tiny, peak, *stream.values()]
    for f in figures:  # a spread is ordered and made of the blocks it claims
        assert 0 < f.min <= f.p25 <= f.value <= f.p75 <= f.max and f.samples >= 3
        assert f.to_dict() == type(f).from_dict(f.to_dict()).to_dict()
    assert [f.unit for f in figures] == ["s", "FLOP/s", "B/s", "B/s", "B/s"]
    # units sane: seconds per tiny op, not milliseconds or calls; rates per second, not per call
    assert 1e-8 < tiny.value < 1e-2
    assert 1e6 < peak.value < 1e14 and all(1e6 < f.value < 1e13 for f in stream.values())


def _rec(op, family, shapes, dtypes, out):
    return OpRecord(0, op, "", family, "compute", shapes, dtypes, out, 0, 0, 0, 0)


def test_op_keys_follow_the_counting_family():
    from flopgap.machine._keys import itemsize, op_features, op_key, weight_bytes

    int_mm = _rec("aten._int_mm.default", "matmul", [[8, 64], [64, 32]], ["int8", "int8"], [[8, 32]])
    assert str(op_key(int_mm)) == "matmul" and op_features(int_mm) == [3.0, 6.0, 5.0]
    mv = _rec("aten.mv.default", "matmul", [[8, 64], [64]], ["float32", "float32"], [[8]])
    assert str(op_key(mv)) == "aten.mv.default"        # matrix x vector: no (m, k, n) shape model
    qlin = _rec("quantized.linear_dynamic.default", "quantized", [[4, 16], [], []], ["float32", "", ""], [[4, 8]])
    assert str(op_key(qlin)) == "matmul:int8" and op_features(qlin) == [2.0, 4.0, 3.0]
    assert weight_bytes(qlin) == 16 * 8           # packed int8 weight, one byte each
    conv = _rec("aten.conv2d.default", "conv", [[1, 8, 4, 4], [8, 8, 3, 3]], ["float32", "float64"], [[1, 8, 4, 4]])
    assert str(op_key(conv)) == "conv:dense" and weight_bytes(conv) == 8 * 8 * 3 * 3 * 8   # float64: 8 bytes
    convt = _rec("aten.conv_transpose2d.input", "conv", [[1, 8, 4, 4], [8, 8, 3, 3]], ["float32"] * 2, [[1, 8, 6, 6]])
    assert str(op_key(convt)) == "aten.conv_transpose2d.input" and weight_bytes(convt) == 0
    assert (itemsize("int64"), itemsize("bool"), itemsize("bfloat16"), itemsize("qint8"), itemsize("")) == (8, 1, 2, 1, 4)


def test_allocator_pinned_needs_both_thresholds():
    from flopgap.machine._isolated import PINNED_ALLOCATOR, allocator_pinned

    assert allocator_pinned(dict(PINNED_ALLOCATOR))
    assert not allocator_pinned({})
    assert not allocator_pinned({"MALLOC_TRIM_THRESHOLD_": PINNED_ALLOCATOR["MALLOC_TRIM_THRESHOLD_"]})


def test_cpu_profile_is_measured_in_a_pinned_child_unless_already_pinned(monkeypatch):
    from flopgap.machine import _isolated

    calls = []
    from flopgap.machine import _measure

    monkeypatch.setattr(_isolated, "measure_in_child", lambda req, **kw: calls.append(("child", kw["quick"])) or "c")
    monkeypatch.setattr(_measure, "run_request", lambda req, **kw: calls.append(("here", kw["quick"])) or "h")
    for k in _isolated.PINNED_ALLOCATOR:
        monkeypatch.delenv(k, raising=False)
    assert _profile._measure(None, True, None, _profile.Request()) == "c"
    for k, v in _isolated.PINNED_ALLOCATOR.items():
        monkeypatch.setenv(k, v)
    assert _profile._measure(None, False, None, _profile.Request()) == "h"
    assert calls == [("child", True), ("here", False)]


def test_a_failing_child_is_one_clear_error():
    from flopgap.errors import FlopgapError
    from flopgap.machine._isolated import measure_in_child

    # torch.set_num_threads(0) raises in the child, after it imported flopgap
    with pytest.raises(FlopgapError, match=r"^measuring the machine profile failed \(exit 1\): RuntimeError: "
                                           r"set_num_threads expects a positive integer$"):
        measure_in_child(_profile.Request(), quick=True, threads=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_cache_bandwidth_is_l2_resident_and_beats_launches():
    dev = torch.device("cuda")
    from flopgap.machine import _ceilings

    fig, working_set = _ceilings._cuda_l2_triad(dev, 0.02)
    l2 = torch.cuda.get_device_properties(dev).L2_cache_size
    assert working_set <= l2 // 2 and fig.unit == "B/s" and fig.samples >= 3
    # one triad per launch over the same arrays is bounded by the launch latency; the
    # graph-replayed figure must beat it (it did by several times on an H100)
    plain = _ceilings._stream(working_set // 12, dev, 0.02)["triad"]
    assert fig.value > plain.value


# A cache file with the right fingerprint whose fields a measured profile cannot have:
# each one is stale (re-measured, the field named on stderr), never used.
_BAD_FIELDS = [
    ("mem_bandwidth", 0.0),                       # a bandwidth of 0 (division by zero later)
    ("dispatch_overhead_s", -1e-6),               # a negative cost
    ("peak_flops", {"fp32": "fast"}),             # a string where a rate belongs
    ("peak_flops", {}),                           # no peak at all
    ("cache_bytes", 1.5),                         # a size that is not an integer
    ("cache_bandwidth", float("inf")),            # written as Infinity by a hand edit
    ("calibration", [{"key": "aten.mm.default"}]),  # a case without features or seconds
    ("chains", [{"label": "c", "ops": [{"op": 1}], "module_calls": 0, "seconds": 1e-3}]),
    ("spreads", {"x": {"value": 1.0}}),           # a figure without its quartiles
    ("quick", "yes"),
    ("fingerprint", ["cpu"]),
]


@pytest.mark.parametrize("field, value", _BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(_BAD_FIELDS)])
def test_cache_with_impossible_fields_is_remeasured(cache, fake_measure, capsys, field, value):
    good = MachineProfile.synthetic(quick=True).to_dict()
    path = _profile.cache_path(fingerprint(), True)
    path.write_text(json.dumps({**good, field: value}))   # Infinity is what json writes for inf
    prof = profile_machine(quick=True)
    assert prof.source == "measured" and fake_measure == [True]
    (note,) = prof.warnings
    assert f"field {field!r}" in note and "re-measured the machine profile" in note
    assert json.loads(path.read_text())[field] != value or field == "quick"


def test_a_folder_at_the_cache_path_is_one_line_before_measuring(cache, fake_measure):
    _profile.cache_path(fingerprint(), True).mkdir(parents=True)
    with pytest.raises(UsageError, match="is not a file"):
        profile_machine(quick=True)
    assert fake_measure == []   # refused before any measuring


def test_a_file_where_the_cache_folder_belongs_is_one_line(tmp_path, monkeypatch, fake_measure):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("FLOPGAP_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(UsageError, match="not a folder"):
        profile_machine(quick=True)
    assert fake_measure == []


def _save_many(path: str, n: int, seed: int) -> int:
    """Write the profile n times and read it back in between; return the failures."""
    from pathlib import Path

    failures = 0
    for i in range(n):
        p = MachineProfile.synthetic(peak=1e11 + seed * 1000 + i, quick=True)
        try:
            p.save(Path(path))
            MachineProfile.from_dict(json.loads(Path(path).read_text()))
        except Exception:  # noqa: BLE001 - counted: the test asserts there are none
            failures += 1
    return failures


def test_concurrent_cache_writers_never_fail_or_leave_partial_files(tmp_path):
    import multiprocessing

    path = tmp_path / "machine-x-quick.json"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        failures = pool.starmap(_save_many, [(str(path), 60, s) for s in range(4)])
    assert failures == [0, 0, 0, 0]
    assert MachineProfile.from_dict(json.loads(path.read_text())).quick
    assert [p.name for p in tmp_path.iterdir()] == [path.name]   # no temporary file left behind
