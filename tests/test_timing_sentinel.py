"""The disturbance sentinel, driven by a fake clock and a fake machine (FakeLoad): every
threshold and every witness decided exactly, nothing read from the real machine."""

import json
import os

import pytest

from flopgap.timing import Disturbance, FakeClock, FakeLoad, Measurement, TimerOptions, measure
from flopgap.timing._sentinel import (CONTENDED_SHARE, REFERENCE_RATIO, STEAL_SHARE, Sentinel, SystemLoad, judge,
                                      others_runnable)

MS = 1e-3


def _run(load, **opts):
    clock = FakeClock(1 * MS)
    opts.setdefault("min_time", 0.0)
    return measure(clock.model, (), TimerOptions(**opts), clock=clock, load=load)


def test_quiet_machine_is_not_disturbed_and_says_what_it_saw():
    m = _run(FakeLoad.quiet(), max_time=0.5)
    d = m.disturbance
    assert not m.disturbed and d.probes >= 2 and d.contended == 0
    assert d.reference_ratio == pytest.approx(1.0) and d.steal_share == 0.0
    assert d.summary.startswith("quiet: 0 of") and m.warnings == []


def test_competing_threads_flag_the_run_and_come_first_in_the_warnings():
    m = _run(FakeLoad(others=(3,), n_cores=2), max_time=0.5, threads=1)
    assert m.disturbed
    (reason,) = m.disturbance.reasons
    assert reason.startswith("other processes had up to 3 runnable threads on 2 logical cores while timing with "
                             "1 thread(s)")
    assert m.warnings[0].startswith("machine disturbed: other processes")
    d = m.to_dict()
    assert d["disturbed"] is True and d["disturbance"]["others_max"] == 3
    back = Measurement.from_dict(json.loads(json.dumps(d)))
    assert back.disturbed and back.disturbance == m.disturbance


def test_one_other_thread_does_not_contend_a_one_thread_run_on_two_cores():
    assert not _run(FakeLoad(others=(1,), n_cores=2), threads=1).disturbed   # 1 + 1 <= 2
    assert _run(FakeLoad(others=(1,), n_cores=2), threads=2).disturbed       # 1 + 2 > 2


def test_contention_counts_only_from_the_stated_share_of_probes():
    # probes: start, then every 50 ms of fake time while sampling, then finish
    def share(contended, probes):
        return judge(2, 2, [1] * contended + [0] * (probes - contended), None, None, None, None, None)

    assert CONTENDED_SHARE == 0.2
    assert not share(1, 10).disturbed        # a 10% blip: a daemon waking
    assert share(2, 10).disturbed            # 20%: steady competition
    assert not share(1, 4).disturbed         # one probe of a short run: a blip, not a share
    assert share(2, 2).disturbed
    assert share(2, 10).contended_share == pytest.approx(0.2)


def test_steal_above_its_threshold_flags_the_run():
    assert STEAL_SHARE == 0.05
    assert not _run(FakeLoad(steal_ticks=50, total_ticks=1000)).disturbed   # 5.0%: not above
    m = _run(FakeLoad(steal_ticks=60, total_ticks=1000))
    assert m.disturbed and m.disturbance.reasons == ("the hypervisor stole 6.0% of CPU time",)


def test_a_slow_reference_part_flags_what_core_counts_cannot_see():
    # a memory-bandwidth hog on the other core: no contention, but the memory part ran 2x its calm time
    calm = (1e-4, 3e-4, 5e-4, 6e-4)
    load = FakeLoad(others=(0,), references=(calm, (1e-4, 3e-4, 1e-3, 6e-4)), calm=calm)
    m = _run(load, threads=1)
    assert m.disturbed
    assert m.disturbance.reasons == ("the reference kernel ran slow against its calm time (memory 2.00x; after "
                                     "the run)",)
    assert m.disturbance.reference_ratios == {"dispatch": 1.0, "compute": 1.0, "memory": pytest.approx(2.0),
                                                  "handoff": 1.0}
    assert REFERENCE_RATIO == 1.5
    ok = _run(FakeLoad(references=(1.25e-3,), calm=1e-3))   # 1.25x: within a calm machine's spread
    assert not ok.disturbed and ok.disturbance.reference_ratio == pytest.approx(1.25)


def test_slow_handoff_flags_a_run_but_not_single_op_work():
    # the host placed the VM's threads apart: ops handing data between threads run 1.45x, nothing else moves
    from flopgap.timing import SINGLE_OP_PARTS, Sentinel
    from flopgap.timing._sentinel import HANDOFF_RATIO, PARTS

    assert PARTS[-1] == "handoff" and HANDOFF_RATIO == 1.3
    calm = (1e-4, 3e-4, 5e-4, 6e-4)
    spell = (1e-4, 3e-4, 5e-4, 8.7e-4)
    m = _run(FakeLoad(others=(0,), references=(calm, spell), calm=calm))
    assert m.disturbed and m.disturbance.reasons == (
        "the reference kernel ran slow against its calm time (handoff 1.45x; after the run): ops handing data "
        "from thread to thread ran slow, as when the host runs this VM's threads apart or a neighbour shares "
        "their cache",)
    assert not _run(FakeLoad(others=(0,), references=(calm, (1e-4, 3e-4, 5e-4, 7.5e-4)), calm=calm)).disturbed
    # a calibration case repeats one op alone: the handoff part is read and reported, never judged
    load = FakeLoad(others=(0,), references=(spell, spell, spell), calm=calm)
    watch = Sentinel(load, parts=SINGLE_OP_PARTS)
    watch.start(0.0, 2)
    d = watch.finish()
    assert not d.disturbed and d.reference_ratios["handoff"] == pytest.approx(1.45)
    assert load.recorded == []   # a reading slow in any part never becomes a calm one


def test_a_reading_from_before_the_handoff_part_is_compared_on_its_three_parts():
    from flopgap.timing import Disturbance
    from flopgap.timing._sentinel import calm_of

    d = Disturbance.from_dict({"disturbed": False, "reference_before_s": [1e-4, 3e-4, 5e-4],
                               "reference_after_s": [1e-4, 3e-4, 6e-4], "calm_reference_s": [1e-4, 3e-4, 5e-4, 6e-4]})
    assert d.reference_ratios == {"dispatch": 1.0, "compute": 1.0, "memory": pytest.approx(1.2)}
    # kept calm readings of three parts are dropped: the calm time needs every part
    assert calm_of([(1e-4, 3e-4, 5e-4)]) is None


def test_calm_readings_are_uncontended_and_not_slow():
    load = FakeLoad(others=(0,), references=(0.9e-3, 2.0e-3), calm=1e-3)
    _run(load, threads=1)
    assert load.recorded == [(0.9e-3,) * 4]          # the slow reading (2x) is evidence, not a calm reading
    busy = FakeLoad(others=(5,), references=(0.5e-3,), calm=None)
    _run(busy, threads=1)
    assert busy.recorded == [] and busy.calm is None   # a contended reading never becomes a calm one


def test_calm_reference_is_a_low_quantile_of_the_kept_readings_not_the_luckiest():
    from flopgap.timing._sentinel import CALM_QUANTILE, CALM_WINDOW, calm_of

    readings = [(1e-3, 2e-3, 3e-3, 4e-3)] * 9 + [(0.5e-3, 1e-3, 1.5e-3, 2e-3)]   # one lucky reading in ten
    assert CALM_QUANTILE == 0.25 and calm_of(readings) == pytest.approx((1e-3, 2e-3, 3e-3, 4e-3))
    assert calm_of([]) is None
    assert CALM_WINDOW == 50


def test_no_witness_no_verdict():
    d = judge(2, None, [], None, None, None, None, None)
    assert not d.disturbed and d.summary == "not watched"


def test_watch_load_off_leaves_no_record():
    m = _run(FakeLoad.busy(), watch_load=False)
    assert m.disturbance is None and not m.disturbed


def test_interrupted_run_has_no_verdict_but_keeps_samples():
    clock = FakeClock(1 * MS)

    def model():
        if clock.calls == 1 + 10 + 7:
            raise KeyboardInterrupt
        clock.model()

    m = measure(model, (), TimerOptions(precision=0.0, min_time=0), clock=clock, load=FakeLoad.busy())
    assert m.interrupted and m.disturbance is None and len(m.samples) == 7


def test_sentinel_probes_at_its_interval_of_the_timer_clock():
    load = FakeLoad()
    s = Sentinel(load, interval_s=0.05)
    s.start(0.0, 2)
    for t in (0.01, 0.04, 0.05, 0.06, 0.11, 0.2):
        s.poll(t)
    d = s.finish()
    assert d.probes == 1 + 3 + 1   # start, polls at 0.05 / 0.11 / 0.2 (each >= 50 ms after the last), finish


def test_disturbance_round_trip_and_unknown_keys():
    d = Disturbance(True, ("x",), threads=2, cores=2, probes=4, contended=4, others_max=3, others_median=3.0,
                    steal_share=0.0, reference_before_s=(1e-3, 1e-3, 1e-3), reference_after_s=(1e-3, 2e-3, 1e-3),
                    calm_reference_s=(1e-3, 1e-3, 1e-3))
    back = Disturbance.from_dict({**json.loads(json.dumps(d.to_dict())), "from_a_later_version": 1})
    assert back == d and back.reference_ratio == pytest.approx(2.0)
    assert back.reference_ratios == {"dispatch": 1.0, "compute": 2.0, "memory": 1.0}
    assert Disturbance.from_dict(None) is None


def test_only_a_registered_measuring_child_counts_as_this_runs_own_work(tmp_path):
    from flopgap.timing._sentinel import own_process, own_running

    def task(pid, tid, state):
        d = tmp_path / str(pid) / "task" / str(tid)
        d.mkdir(parents=True)
        (d / "stat").write_text(f"{tid} (py thon) {state} 1 2 3\n")

    task("self", 10, "R")
    task("self", 11, "S")
    task(20, 20, "S")              # the chain timer's main thread waits on its pipe ...
    task(20, 21, "R")              # ... while an OpenMP worker still spins
    task(30, 30, "R")              # a data-loader worker of the user's: a competitor
    assert own_running(root=str(tmp_path), pids=()) == 1
    own_process(20)
    own_process(99)                # registered, then ended: nothing to read
    try:
        assert own_running(root=str(tmp_path)) == 2
    finally:
        own_process(20, False)
        own_process(99, False)
    assert own_running(root=str(tmp_path)) == 1


def test_system_load_reads_this_machine_and_keeps_the_fastest_calm_reading(tmp_path):
    n = others_runnable()
    if os.path.exists("/proc/loadavg"):
        assert isinstance(n, int) and n >= 0
    else:
        assert n is None
    load = SystemLoad(cache_file=tmp_path / "sentinel.json")
    assert load.calm_reference_s(1) is None
    for ms in (2, 3, 4, 5):
        load.record_reference(1, (ms * 1e-3,) * 4)
    # the 25th percentile of 2, 3, 4, 5 ms is 2.75 ms, kept across processes
    assert SystemLoad(cache_file=tmp_path / "sentinel.json").calm_reference_s(1) == pytest.approx((2.75e-3,) * 4)
    assert SystemLoad(cache_file=tmp_path / "sentinel.json").calm_reference_s(2) is None   # per thread count
    (tmp_path / "sentinel.json").write_text("{not json")
    assert SystemLoad(cache_file=tmp_path / "sentinel.json").calm_reference_s(1) is None   # a broken cache is empty


def test_a_slow_reading_before_the_run_is_taken_again_and_a_spell_over_by_then_is_not_evidence():
    calm = (1e-4, 3e-4, 5e-4, 6e-4)
    slow = (1e-4, 3e-4, 1.5e-3, 6e-4)
    # before the run: slow, then calm again at once: the spell was over before the run began
    passing = FakeLoad(others=(0,), references=(slow, calm, calm), calm=calm)
    m = _run(passing, threads=1)
    assert not m.disturbed and m.disturbance.reference_before_s == pytest.approx(calm)
    assert passing.recorded == [calm, calm]          # fresh calm readings only, never a part-wise minimum
    # slow twice before the run: confirmed, flagged with the faster reading of each part
    lasting = FakeLoad(others=(0,), references=(slow, (1e-4, 3e-4, 1.2e-3, 6e-4), calm), calm=calm)
    m = _run(lasting, threads=1)
    assert m.disturbed and m.disturbance.reference_ratios["memory"] == pytest.approx(2.4)
    assert "before the run" in m.disturbance.reasons[0]
    # slow after the run: never re-taken (a spell ending as the run ends did touch it)
    after = FakeLoad(others=(0,), references=(calm, slow, calm), calm=calm)
    m = _run(after, threads=1)
    assert m.disturbed and "after the run" in m.disturbance.reasons[0]


def test_a_load_probe_is_the_least_of_several_reads(monkeypatch):
    from flopgap.timing import _sentinel

    reads = iter([1, 0, 2, 2, 3, 0])
    monkeypatch.setattr(_sentinel, "others_runnable", lambda: next(reads))
    monkeypatch.setattr(_sentinel.time, "sleep", lambda s: None)
    src = SystemLoad()
    assert _sentinel.PROBE_READS == 3
    assert src.others_runnable() == 0      # a blip in one read is not a competitor; a read of 0 ends the probe
    assert src.others_runnable() == 2      # runnable in every read: it competes
    assert src.others_runnable() == 0      # a quiet machine pays for one read
