"""Machine profile: figures with spreads, fingerprint, cache per fingerprint, quick mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flopgap.errors import FlopgapError, UsageError
from flopgap.machine import MachineProfile, cache_dir, fingerprint, profile_machine
from flopgap.machine import _profile
from flopgap.machine._bench import figure_from_times, time_call
from flopgap.machine._calibrate import calibration_cases, run_calibration


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOPGAP_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def fake_measure(monkeypatch):
    calls = []

    def measure(device=None, *, quick=False, progress=None):
        calls.append(quick)
        p = MachineProfile.synthetic(peak=1e11 * (len(calls)), quick=quick)
        p.source = "measured"
        return p

    monkeypatch.setattr(_profile, "measure_profile", measure)
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


def test_corrupt_cache_is_an_error_not_a_silent_remeasure(cache, fake_measure):
    _profile.cache_path(fingerprint(), True).write_text("{not json")
    with pytest.raises(FlopgapError, match="--refresh"):
        profile_machine(quick=True)


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
    assert times.size >= 1 and (times > 0).all()
    tiny = _profile._tiny_op(torch.device("cpu"), 0.002)
    assert tiny.unit == "s" and tiny.min <= tiny.value <= tiny.max
    stream = _profile._stream(4096, torch.device("cpu"), 0.002)
    assert set(stream) == {"copy", "add", "triad"} and all(f.value > 0 for f in stream.values())
    peak = _profile._matmul_peak("fp32", torch.device("cpu"), 64, 0.002)
    assert peak.unit == "FLOP/s" and peak.value > 0


def test_calibration_quick_grid_and_samples():
    full, quick = calibration_cases(), calibration_cases(quick=True)
    assert len(quick) < len(full) / 2
    labels = [c[0] for c in quick]
    assert any(l.startswith("conv ") for l in labels) and any(l.startswith("linear ") for l in labels)
    subset = [c for c in quick if c[0] in ("linear 1x8->8", "relu_ 256 c16", "conv 8->8 k1 s1 g1 @4")]
    samples = run_calibration(cases=subset)
    assert [s["key"] for s in samples] == ["conv:dense", "matmul", "aten.relu_.default"]
    assert samples[1]["flops"] == 2 * 1 * 8 * 8 + 8   # matmul + bias
    assert samples[1]["features"] == [0.0, 3.0, 3.0]
    assert all(s["seconds"] > 0 for s in samples)
