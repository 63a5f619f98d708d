"""The timer driven by a fake clock: exact warm-up counts, block sizes and stop points.

The model is ``FakeClock.model`` (a no-op that only advances the fake time), so every
duration the timer sees comes from the clock and every decision is exact.
"""

import json
from fractions import Fraction
from math import comb

import pytest
import torch

from flopgap.errors import UsageError
from flopgap.timing import CudaHooks, FakeClock, FakeLoad, Measurement, TimerOptions, TimingSpec
from flopgap.timing import compare as _compare
from flopgap.timing import measure as _measure_api

MS = 1e-3
_RUN_KEYS = ("name", "clock", "cuda_hooks", "load", "progress")


def _split(kw):
    run = {k: kw.pop(k) for k in _RUN_KEYS if k in kw}
    run.setdefault("load", FakeLoad.quiet())  # the real machine's load is not these tests' business
    return TimerOptions(**kw), run


def measure(fn, inputs=(), **kw):
    opts, run = _split(kw)
    return _measure_api(fn, inputs, opts, **run)


def compare(fa, ia, fb, ib, names=("a", "b"), **kw):
    opts, run = _split(kw)
    return _compare(fa, ia, fb, ib, opts, names=names, **run)


def _measure(clock, **kw):
    kw.setdefault("min_time", 0.0)
    return measure(clock.model, (), clock=clock, **kw)


def test_warmup_staircase_exact_count():
    # cold 10 ms, then 5 calls of 4 ms, 5 of 2 ms, 5 of 1.5 ms, then 1.49 ms forever.
    # W = 5, one-sided drift rule median(prev W) - median(last W) <= 2% median(last W):
    #  n=10..17: a window still holds a higher step (drift >= 33%);
    #  n=18: prev = [2, 2, 1.5, 1.5, 1.5] -> 1.5, last = [1.5, 1.5, 1.49, 1.49, 1.49] -> 1.49,
    #        drift 0.01 / 1.49 = 0.67% -> steady after 18 warm-up calls.
    clock = FakeClock([10 * MS] + [4 * MS] * 5 + [2 * MS] * 5 + [1.5 * MS] * 5 + [1.49 * MS])
    m = _measure(clock)
    assert m.cold_s == pytest.approx(10 * MS)
    assert m.steady
    assert m.warmup_calls == 18 and len(m.warmup_samples) == 18
    assert m.block_size == 1  # read_s = 0: no clock cost to amortise
    # constant samples: the CI has zero width, so the first check (n = 10) stops
    assert len(m.samples) == 10 and m.calls == 10
    assert m.samples == pytest.approx([1.49 * MS] * 10, rel=1e-9)
    assert m.precision_met and m.median == pytest.approx(1.49 * MS)
    assert clock.calls == 1 + 18 + 10


def test_warmup_bound_reports_not_steady():
    # keeps getting 10% faster per call: never steady; bound = warmup_max_time = 50 ms
    clock = FakeClock(lambda i: 10 * MS * 0.9 ** i + 1 * MS)
    m = _measure(clock, warmup_max_time=0.05, max_time=1.0)
    assert not m.steady
    spent = sum(m.warmup_samples)
    assert spent >= 0.05 and spent - m.warmup_samples[-1] < 0.05  # stopped at the first sample past the bound


def test_block_size_amortises_clock_cost():
    # a 1 us call and a clock whose reading costs 100 ns: floor = 1e-7 s, block >= 1000 x floor = 100 us.
    # A block of b calls measures b * 1e-6 + 1e-7 s, i.e. 1e-6 + 1e-7 / b per call;
    # b = ceil(1e-4 / (1e-6 + 1e-7 / b)) has the fixed point b = 100 (99.9 -> 100).
    clock = FakeClock(1e-6, read_s=1e-7)
    m = _measure(clock)
    assert m.clock_floor_s == pytest.approx(1e-7)
    assert m.block_size == 100
    assert m.samples[0] == pytest.approx(1.001e-6, rel=1e-9)


def test_block_of_one_for_slow_models():
    clock = FakeClock(50 * MS, read_s=1e-7)  # 100 us minimum block << 50 ms
    m = _measure(clock)
    assert m.block_size == 1


def test_block_size_capped_and_explicit_min_block():
    clock = FakeClock(0.0, read_s=1e-7)  # a free call: only the clock costs; the block would grow forever
    assert _measure(clock, max_block=50).block_size == 50
    clock = FakeClock(1e-6)
    assert _measure(clock, min_block_s=1e-3).block_size == 1000  # 1 ms / 1 us


def _ranks(n):
    """Order-statistic 95% ranks from exact binomial sums (independent of the code under test)."""
    lo = 0
    while Fraction(sum(comb(n, i) for i in range(lo + 1)), 2 ** n) <= Fraction(1, 40):
        lo += 1
    return lo, n + 1 - lo


def test_stops_at_first_check_where_order_statistic_ci_meets_precision():
    # samples cycle 0.9, 1.0, 1.1 ms: the CI is within 5% only once both order statistics
    # are a 1.0 ms sample. Checks happen at n = 10, then every max(1, n // 20) samples.
    clock = FakeClock(lambda i: (0.9, 1.0, 1.1)[i % 3] * MS)
    m = _measure(clock, precision=0.05)
    schedule, n = [], 10
    while n <= len(m.samples):
        schedule.append(n)
        n += max(1, n // 20)
    expected = None
    for n in schedule:
        lo, hi = _ranks(n)
        s = sorted(m.samples[:n])
        if s[lo - 1] == pytest.approx(1.0 * MS) and s[hi - 1] == pytest.approx(1.0 * MS):
            expected = n
            break
    assert expected is not None and len(m.samples) == expected
    assert m.precision_met and m.median == pytest.approx(1.0 * MS)


def test_stops_at_max_time_when_precision_unreachable():
    # alternating 0.9 / 1.1 ms: half the samples on each side of any median, so the CI
    # always spans both values (+-10%) and only max_time stops sampling
    clock = FakeClock(lambda i: 0.9 * MS if i % 2 else 1.1 * MS)
    m = _measure(clock, max_time=0.5)
    assert not m.precision_met
    elapsed = sum(m.warmup_samples) + sum(m.samples)  # read_s = 0: the clock moved only in calls
    assert elapsed >= 0.5 and elapsed - m.samples[-1] < 0.5


def test_min_time_keeps_sampling_after_target_met():
    # constant 1 ms: met at n = 10, but min_time = 45.5 ms counts from the cold call's end
    # and the 10 warm-up calls took 10 ms, so sampling runs to n = 36 (10 + 36 = 46 ms)
    clock = FakeClock(1 * MS)
    m = _measure(clock, min_time=0.0455)
    assert m.warmup_calls == 10 and len(m.samples) == 36


def test_jittered_fake_clock_is_reproducible():
    a = _measure(FakeClock(1 * MS, jitter=0.2, seed=3))
    b = _measure(FakeClock(1 * MS, jitter=0.2, seed=3))
    assert a.samples == b.samples and a.warmup_calls == b.warmup_calls


def test_inference_mode_threads_and_grad():
    seen = []
    before = torch.get_num_threads()
    m = measure(lambda: seen.append((torch.is_inference_mode_enabled(), torch.get_num_threads())), (),
                threads=1, clock=FakeClock(1 * MS), max_time=0.1, min_time=0)
    assert set(seen) == {(True, 1)}
    assert m.spec.threads == 1 and torch.get_num_threads() == before
    seen.clear()
    measure(lambda: seen.append(torch.is_grad_enabled()), (), grad=True, clock=FakeClock(1 * MS), max_time=0.1)
    assert set(seen) == {True}


def test_ctrl_c_during_sampling_keeps_samples():
    clock = FakeClock(1 * MS)

    def model():
        if clock.calls == 1 + 10 + 7:  # cold + 10 warm-up + 7 samples, then Ctrl-C
            raise KeyboardInterrupt
        clock.model()

    m = measure(model, (), clock=clock, precision=0.0, min_time=0)
    assert m.interrupted and len(m.samples) == 7 and not m.precision_met


def test_ctrl_c_during_warmup_propagates():
    clock = FakeClock(1 * MS)

    def model():
        if clock.calls == 3:
            raise KeyboardInterrupt
        clock.model()

    with pytest.raises(KeyboardInterrupt):
        measure(model, (), clock=clock)


def test_model_error_is_one_line_usage_error():
    def bad(x):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied\n(more)")

    with pytest.raises(UsageError, match=r"^m raised on its first call: RuntimeError: mat1 and mat2 shapes cannot be multiplied$"):
        measure(bad, (torch.zeros(1),), name="m", clock=FakeClock())


@pytest.mark.parametrize("kw, msg", [
    (dict(precision=1.5), "--precision"),
    (dict(precision=-0.1), "--precision"),
    (dict(max_time=0), "--max-time"),
    (dict(threads=0), "--threads"),
    (dict(device="mps"), "must be cpu or cuda"),
    (dict(device="cuda:x"), "must be cpu or cuda"),
])
def test_bad_options(kw, msg):
    with pytest.raises(UsageError, match=msg):
        measure(lambda: None, (), clock=FakeClock(), **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_gpu_is_usage_error():
    with pytest.raises(UsageError, match="CUDA is not available"):
        measure(lambda: None, (), device="cuda")


def test_json_round_trip_keeps_all_samples():
    m = _measure(FakeClock(lambda i: (0.9, 1.0, 1.1)[i % 3] * MS), name="x", precision=0.05)
    d = json.loads(json.dumps(m.to_dict()))
    assert d["schema"] == "flopgap.time/1" and d["kind"] == "measurement"
    assert len(d["samples"]) == d["n_samples"] == len(m.samples)
    back = Measurement.from_dict(d)
    assert back.spec == m.spec and hash(back.spec) == hash(m.spec)
    assert (back.median, back.ci_low, back.ci_high, back.precision_met) == (m.median, m.ci_low, m.ci_high, m.precision_met)
    for key in ("cpu_model", "logical_cores", "physical_cores", "torch_threads", "torch", "cuda", "cudnn", "blas",
                "gpu", "gpu_driver", "hostname_hash", "time"):
        assert key in d["environment"]
    with pytest.raises(UsageError, match="flopgap.time/1"):
        Measurement.from_dict({"schema": "flopgap.count/1"})


def test_timing_spec_is_frozen_and_hashable():
    s = TimingSpec("m", ("1x100:float32",), "cpu", 2, TimerOptions(precision=0.01, threads=2))
    with pytest.raises(AttributeError):
        s.name = "x"
    assert {s: 1}[TimingSpec.from_dict(s.to_dict())] == 1
    # records written before the options object existed still load
    old = TimingSpec.from_dict({"name": "m", "inputs": ["1x100:float32"], "device": "cpu", "threads": 2,
                                "grad": False, "precision": 0.01, "max_time": 10.0})
    assert old.precision == 0.01 and old.threads == 2 and old.options.threads is None


# ------------------------------------------------------------------ compare

def test_compare_interleaves_abba_and_gets_exact_ratio():
    clock = FakeClock()
    order = []

    def a():
        order.append("a")
        clock.advance(2 * MS)

    def b():
        order.append("b")
        clock.advance(1 * MS)

    c = compare(a, (), b, (), names=("A", "B"), clock=clock, min_time=0)
    warm = 1 + c.a.warmup_calls + 1 + c.b.warmup_calls
    rounds = order[warm:]
    assert rounds[:8] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(c.a.samples) == len(c.b.samples) == 10  # constant: met at the first check
    assert c.ratio == pytest.approx(2.0)
    assert (c.ci_low, c.ci_high) == (pytest.approx(2.0), pytest.approx(2.0))
    assert c.excludes_one
    d = json.loads(json.dumps(c.to_dict()))
    assert d["kind"] == "comparison" and d["a"]["spec"]["name"] == "A" and d["ratio"] == pytest.approx(2.0)


def test_compare_ctrl_c_keeps_complete_rounds():
    clock = FakeClock()
    state = {"b_calls": 0}

    def a():
        clock.advance(1 * MS)

    def b():
        state["b_calls"] += 1
        if state["b_calls"] == 1 + 10 + 5:  # cold + warm-up + 5th round
            raise KeyboardInterrupt
        clock.advance(1 * MS)

    c = compare(a, (), b, (), clock=clock, precision=0.0, min_time=0)
    assert c.interrupted
    assert len(c.a.samples) == len(c.b.samples) == 4  # round 5 (order B, A... ) dropped: incomplete


# ------------------------------------------------------------------ CUDA path with fakes

class _FakeGpu:
    """Host time from a FakeClock; a GPU queue that runs each launched call for ``device_s``."""

    def __init__(self, clock, host_s, device_s):
        self.clock, self.host_s, self.device_s = clock, host_s, device_s
        self.free_at = 0.0
        self.syncs = 0
        self.peak = 0

    def launch(self, *args):
        self.clock.advance(self.host_s)  # host-side dispatch
        self.free_at = max(self.free_at, self.clock.now) + self.device_s

    def synchronize(self):
        self.syncs += 1
        self.clock.now = max(self.clock.now, self.free_at)

    def event(self):
        gpu = self

        class Event:
            def record(self):
                self.t = max(gpu.free_at, gpu.clock.now)  # reached when the queue drains to it

            def elapsed_time(self, end):
                return (end.t - self.t) * 1e3  # milliseconds, like torch.cuda.Event

        return Event()


def test_cuda_path_reports_device_dispatch_and_memory():
    clock = FakeClock()
    gpu = _FakeGpu(clock, host_s=10e-6, device_s=100e-6)
    hooks = CudaHooks(event_factory=gpu.event, synchronize=gpu.synchronize,
                      max_memory_allocated=lambda: 123456, reset_peak_memory_stats=lambda: None)
    m = measure(gpu.launch, (), device="cuda", clock=clock, cuda_hooks=hooks, min_time=0, min_block_s=0)
    assert m.spec.device == "cuda" and m.peak_memory_bytes == 123456
    assert m.block_size == 1
    # start event recorded at t0; the kernel starts after its 10 us launch and runs 100 us
    assert m.dispatch_median == pytest.approx(10e-6)   # host returns after enqueueing
    assert m.device_median == pytest.approx(110e-6)    # GPU time between the events
    assert m.median == pytest.approx(110e-6)           # wall = until synchronize returns
    assert len(m.dispatch_samples) == len(m.device_samples) == len(m.samples)
    assert gpu.syncs >= 2 * (1 + len(m.warmup_samples) + len(m.samples))  # before and after every block


def test_zero_warmup_budget_still_sizes_blocks():
    clock = FakeClock(1e-6, read_s=1e-7)
    m = _measure(clock, warmup_max_time=0.0)
    assert m.warmup_calls == 1 and not m.steady
    assert m.block_size == 91  # ceil(1e-4 / 1.1e-6): the one warm-up call measured 1 us + 100 ns


def test_process_repeats_spread_and_round_trip():
    from flopgap.timing import ProcessRepeats

    runs = [_measure(FakeClock(ms * MS), name="m") for ms in (1.0, 1.1, 1.04)]
    r = ProcessRepeats(["m"], 3, runs)
    assert r.spread == pytest.approx(1.1)          # 1.1 ms / 1.0 ms
    assert r.median == pytest.approx(1.04 * MS)
    back = ProcessRepeats.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.values == pytest.approx(r.values) and back.requested == 3


def test_lone_tensor_is_one_input():
    shapes = []
    x = torch.zeros(3, 4)
    m = measure(lambda t: shapes.append(tuple(t.shape)), x, clock=FakeClock(), max_time=0.01)
    assert set(shapes) == {(3, 4)} and m.spec.inputs == ("3x4:float32",)


def test_process_repeats_spread_needs_two_values():
    from flopgap.timing import ProcessRepeats

    r = ProcessRepeats(["m"], 3, [_measure(FakeClock(1 * MS), name="m")])
    assert r.median == pytest.approx(1 * MS)
    assert r.spread != r.spread                     # NaN: one process has no spread
    d = r.to_dict()
    assert d["spread"] is None and d["values"] == [pytest.approx(1 * MS)]
    json.dumps(d, allow_nan=False)                  # strict JSON


# ------------------------------------------------------------------ fresh processes with fakes

class _FakePopen:
    """Plays back (exit code, stdout, stderr) per child, in order."""

    def __init__(self, script):
        self.script = list(script)
        self.started = 0

    def __call__(self, cmd, **kw):
        code, out, err = self.script[self.started]
        self.started += 1
        outer = self

        class Proc:
            returncode = code

            def communicate(self, timeout=None):
                return out, err

        outer.cmd = cmd
        return Proc()


def _child_json(ms: float) -> str:
    return json.dumps(_measure(FakeClock(ms * MS), name="m").to_dict())


def test_child_usage_error_is_ours_without_a_doubled_prefix():
    from flopgap.timing import repeat_in_processes

    popen = _FakePopen([(2, "", "error: unknown seed model 'nope'\n")])
    with pytest.raises(UsageError) as e:
        repeat_in_processes(["seed:nope"], 3, popen=popen)
    assert str(e.value) == "unknown seed model 'nope'" and popen.started == 1


def test_failed_child_keeps_the_finished_ones_with_a_reason():
    from flopgap.timing import repeat_in_processes

    popen = _FakePopen([(0, _child_json(1.0), ""), (0, _child_json(1.2), ""),
                        (1, "", "Traceback ...\nRuntimeError: out of memory\n"), (0, _child_json(9.0), "")])
    r = repeat_in_processes(["m"], 4, popen=popen)
    assert popen.started == 3                       # nothing runs after a failure
    assert len(r.results) == 2 and r.spread == pytest.approx(1.2)
    assert r.failure == "process 3 of 4 failed (exit 1): RuntimeError: out of memory"
    assert not r.interrupted and r.to_dict()["failure"] == r.failure
    assert popen.cmd[-4:] == ["time", "m", "--json", "-"]


def test_child_without_json_is_a_failure_not_a_crash():
    from flopgap.timing import repeat_in_processes

    r = repeat_in_processes(["m"], 2, popen=_FakePopen([(0, "not json", "")]))
    assert r.results == [] and r.failure.startswith("process 1 of 2 wrote no flopgap.time/1 JSON")


def test_compare_on_cuda_reports_no_shared_peak_memory():
    clock = FakeClock()
    gpu = _FakeGpu(clock, host_s=10e-6, device_s=100e-6)
    resets = []
    hooks = CudaHooks(event_factory=gpu.event, synchronize=gpu.synchronize,
                      max_memory_allocated=lambda: 123456, reset_peak_memory_stats=lambda: resets.append(1))
    c = compare(gpu.launch, (), gpu.launch, (), device="cuda", clock=clock, cuda_hooks=hooks, min_time=0,
                min_block_s=0)
    # one counter for the whole interleaved run: neither model's own peak, so none is reported
    assert c.a.peak_memory_bytes is None and c.b.peak_memory_bytes is None
    assert "peak device memory not reported" in c.a.notes[0] and c.a.notes == c.b.notes
    back = Measurement.from_dict(json.loads(json.dumps(c.a.to_dict())))
    assert back.notes == c.a.notes and back.peak_memory_bytes is None


def test_page_faults_per_call_are_counted_while_sampling():
    import resource  # noqa: F401  (POSIX: the count comes from getrusage)

    n = 16 * 2**20  # 64 MiB of float32: above glibc's largest mmap threshold, fresh pages every call
    m = measure(lambda: torch.empty(n).fill_(1.0), (), precision=0.5, max_time=0.5, min_time=0.0, min_samples=6)
    # 16,384 pages per call, each faulted once (a little more for the interpreter's own)
    assert m.page_faults_per_call >= 0.9 * n * 4 / 4096
    assert any("minor page faults per call" in w for w in m.to_dict()["warnings"])
    reused = torch.empty(n)
    q = measure(lambda: reused.fill_(1.0), (), precision=0.5, max_time=0.5, min_time=0.0, min_samples=6)
    assert q.page_faults_per_call < 50


def test_process_repeats_interval_over_processes():
    from flopgap.timing import ProcessRepeats

    def runs(ms_list):
        return ProcessRepeats(["m"], len(ms_list), [_measure(FakeClock(ms * MS), name="m") for ms in ms_list])

    two = runs([1.0, 1.2])
    lo, hi, conf = two.ci
    assert (lo, hi) == (pytest.approx(1.0 * MS), pytest.approx(1.2 * MS)) and conf == 0.5   # 1 - 2 / 2**2
    five = runs([1.0, 1.1, 1.2, 1.3, 1.4])
    assert five.ci[2] == pytest.approx(1 - 2 / 32)                                            # the range: 93.75%
    six = runs([1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    # n = 6: P(B <= 0) = 1/64 <= 0.025, so ranks (1, 6): the whole range at 96.9% >= 95%
    assert six.ci == (pytest.approx(1.0 * MS), pytest.approx(1.5 * MS), 0.95)
    d = six.to_dict()
    assert d["ci_low"] == pytest.approx(1.0 * MS) and d["ci_confidence"] == 0.95 and d["disturbed_processes"] == 0
    one = runs([1.0])
    assert all(x != x for x in one.ci)   # NaN: no interval from one process
