"""Studies on a disturbed machine: re-time, then "inconclusive" and exclusion, never a
verdict or a correlation from a busy machine. Fake measurements and a fake sleep."""

import pytest

from flopgap.store import Store
from flopgap.study import NO_RETIME, Retime, Verdict, run_seed, run_shufflenet, run_zoo
from flopgap.study.seed import CLAIMS


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "noise.db"))
    yield s
    s.close()


def _sleeps():
    waited = []
    return waited, Retime(attempts=3, pause_s=2.0, sleep=waited.append)


def _zoo_payload(lat, flops, disturbed):
    return {"count": {"params": 10, "flops": flops, "bytes_read": 5, "bytes_written": 5, "ops": 3},
            "median": lat, "ci_low": lat * 0.99, "ci_high": lat * 1.01, "n_samples": 50, "threads": 2,
            "precision_met": True, "prediction": {"latency_s": lat}, "batch": 1, "disturbed": disturbed}


def test_a_disturbed_item_is_retimed_until_quiet(store):
    calls = {}
    waited, retime = _sleeps()

    def measure(it):
        calls[it.model] = calls.get(it.model, 0) + 1
        busy = it.model == "b" and calls["b"] < 3     # b: disturbed twice, quiet on the third timing
        return _zoo_payload({"a": 1e-3, "b": 2e-3, "c": 3e-3}[it.model], {"a": 1, "b": 2, "c": 3}[it.model] * 1000,
                            busy)

    r = run_zoo(store=store, models=["a", "b", "c"], machine={"cpu_model": "fake"}, measure=measure, n_boot=50,
                retime=retime)
    assert calls == {"a": 1, "b": 3, "c": 1} and waited == [2.0, 2.0]
    assert r.outcome.retimed == {"b b1": 3} and r.outcome.disturbed == []
    row = next(x for x in r.rows if x["label"] == "b")
    assert row["attempts"] == 3 and not row["disturbed"]
    assert r.analysis[1]["n"] == 3 and r.analysis[1]["excluded"] == []


def test_still_disturbed_items_are_kept_flagged_and_left_out_of_correlations(store):
    waited, retime = _sleeps()
    lat = {"a": 1e-3, "b": 2e-3, "c": 3e-3, "d": 4e-3, "busy": 9e-4}

    def measure(it):
        return _zoo_payload(lat[it.model], {"a": 1, "b": 2, "c": 3, "d": 4, "busy": 5}[it.model] * 1000,
                            it.model == "busy")

    r = run_zoo(store=store, models=list(lat), machine={"cpu_model": "fake"}, measure=measure, n_boot=50,
                retime=retime)
    assert waited == [2.0, 2.0]                   # 3 timings in all for the busy one, then kept as it is
    assert r.outcome.disturbed == ["busy b1"]
    a = r.analysis[1]
    assert a["n"] == 4 and a["excluded"] == [{"label": "busy", "reason": "machine disturbed while timing (3 attempts)"}]
    # with the busy row (most FLOPs, fastest) rho would be 0.6; without it, 1.0
    assert a["correlations"]["flops"]["spearman"]["r"] == pytest.approx(1.0)
    assert all("busy" not in (p["fewer"], p["more"]) for p in a["inversions"]["top"])
    busy = next(x for x in r.rows if x["label"] == "busy")
    assert busy["disturbed"] and busy["median"] == 9e-4   # shown, not hidden


def _comparison(ratio, disturbed=False, precise=True):
    side = {"median": 1e-3, "ci_low": 0.99e-3, "ci_high": 1.01e-3, "n_samples": 40, "precision_met": precise,
            "spec": {"threads": 2}, "warnings": ["machine disturbed: fake"] if disturbed else []}
    return {"ratio": ratio, "ci_low": ratio * 0.97, "ci_high": ratio * 1.03, "disturbed": disturbed,
            "precise": precise, "threads": 2, "a": dict(side), "b": dict(side)}


def test_seed_verdicts_are_inconclusive_when_disturbed_or_imprecise(store):
    waited, retime = _sleeps()
    timings = {}

    def pair(it):
        timings[it.model] = timings.get(it.model, 0) + 1
        if it.model.startswith("seed:ex2-deep"):
            return _comparison(3.3, disturbed=True)     # stays disturbed through every re-time
        if it.model.startswith("seed:ex1-small"):
            return _comparison(0.25, precise=False)
        return _comparison(1.0)

    def model(it):
        return {"spec": it.spec, "count": {"flops": 1000}, "quantized": "int8" in it.spec}

    r = run_seed(store=store, machine={"cpu_model": "fake"}, measure_model=model, measure_pair=pair, retime=retime)
    v = {c["id"]: c for c in r.claims}
    assert v["ex2"]["verdict"] == Verdict.DISTURBED and v["ex2"]["disturbed"]
    assert v["ex2"]["notes"].startswith("machine disturbed while timing (3 attempts): machine disturbed: fake")
    assert timings["seed:ex2-deep|seed:ex2-wide"] == 3 and len(waited) == 2
    assert v["ex1"]["verdict"] == v["ex1-per-flop"]["verdict"] == Verdict.IMPRECISE
    assert v["ex3-int8"]["verdict"] == Verdict.DOES_NOT_HOLD       # quiet, precise, ratio 1.0 within +-5%
    assert {c.id for c in CLAIMS} == set(v)


def test_shufflenet_guideline_leaves_disturbed_configurations_out(store):
    def measure(it):
        g, name = it.model.split(" ", 1)
        ratio = 1.5
        disturbed = name.startswith("1:6")
        return {"guideline": g, "config": name, "base": "x", "disturbed": disturbed,
                "count": {"config": {"flops": 100}, "base": {"flops": 100}},
                "comparison": _comparison(ratio, disturbed=disturbed)}

    r = run_shufflenet(store=store, guidelines=("G1",), machine={"cpu_model": "fake"}, measure=measure,
                       retime=NO_RETIME)
    g1 = next(g for g in r.guidelines if g["guideline"] == "G1")
    assert g1["verdict"] == "holds; 1 configuration(s) left out (1 disturbed, 0 imprecise)"
    assert g1["measured"] == 2 and g1["disturbed"] == 1
    row = next(x for x in r.rows if x["config"].startswith("1:6"))
    assert row["verdict"] == Verdict.DISTURBED and row["disturbed"]


def test_all_disturbed_guideline_is_inconclusive(store):
    def measure(it):
        g, name = it.model.split(" ", 1)
        return {"guideline": g, "config": name, "base": "x", "disturbed": True,
                "count": {"config": {"flops": 100}, "base": {"flops": 100}},
                "comparison": _comparison(1.5, disturbed=True)}

    r = run_shufflenet(store=store, guidelines=("G3",), machine={"cpu_model": "fake"}, measure=measure,
                       retime=NO_RETIME)
    g3 = next(g for g in r.guidelines if g["guideline"] == "G3")
    assert g3["verdict"] == "inconclusive: machine disturbed"


def test_a_re_time_note_names_the_sentinels_reasons_and_odd_payloads_cannot_break_it(store):
    from flopgap.study.executor import _disturbance_reasons

    notes = []
    waited, retime = _sleeps()
    calls = {}

    def measure(it):
        calls[it.model] = calls.get(it.model, 0) + 1
        p = _zoo_payload(1e-3, 1000, calls[it.model] == 1)
        p["time"] = {"disturbance": {"reasons": ["the hypervisor stole 9.0% of CPU time"]}}
        return p

    run_zoo(store=store, models=["a"], machine={"cpu_model": "fake"}, measure=measure, n_boot=50, retime=retime,
            progress=lambda p: p.note and notes.append(p.note))
    assert notes == ["re-timing: machine disturbed (attempt 2): the hypervisor stole 9.0% of CPU time"]
    odd = {"disturbance": {"reasons": "slow"}, "x": [{"disturbance": {"reasons": [1, None, "r", "r"]}},
                                                     {"disturbance": {"reasons": ["r"]}}, {"disturbance": "x"}]}
    assert _disturbance_reasons(odd) == ["r"]
