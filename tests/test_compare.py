"""flopgap compare: results as files or runs, matched by model, refused when settings differ."""

import json
import subprocess

import pytest

from flopgap.errors import UsageError
from flopgap.store import Store
from flopgap.study import run_zoo
from flopgap.study.compare import compare_sources, load_source
from flopgap.timing import FakeClock, FakeLoad, TimerOptions, compare, measure

MS = 1e-3


def _measurement(ms, name="seed:ex2-deep", threads=1, jitter=0.05, seed=0, load=None, env=None, **opts):
    clock = FakeClock(ms * MS, jitter=jitter, seed=seed)
    m = measure(clock.model, (), TimerOptions(threads=threads, min_time=0, precision=0.01, **opts), name=name,
                clock=clock, load=load or FakeLoad.quiet())
    d = m.to_dict()
    d["spec"]["inputs"] = ["1x100:float32"]
    d["environment"].update(env or {})
    return d


def _write(tmp_path, name, payload):
    p = tmp_path / name
    p.write_text(json.dumps(payload))
    return str(p)


def test_two_time_files_give_a_ratio_with_a_bootstrap_ci_and_a_flag(tmp_path):
    a = _write(tmp_path, "a.json", _measurement(1.0))
    b = _write(tmp_path, "b.json", _measurement(1.5, seed=1))
    cmp = compare_sources(load_source(a), load_source(b))
    (row,) = cmp.rows
    assert row.a.model == "seed:ex2-deep" and row.a.batch == 1
    assert row.ratio == pytest.approx(1.5, rel=0.03) and row.ci_low < row.ratio < row.ci_high
    assert row.flag == "regression" and cmp.regressions == 1
    assert row.ci_method.startswith("bootstrap")
    back = compare_sources(load_source(b), load_source(a))
    assert back.rows[0].flag == "improvement"
    same = compare_sources(load_source(a), load_source(_write(tmp_path, "c.json", _measurement(1.01, seed=2))))
    assert same.rows[0].flag == "no change"


@pytest.mark.parametrize("change, words", [
    (dict(threads=2), "threads 1 vs 2"),
    (dict(env={"cpu_model": "Other CPU"}), "machine cpu"),
    (dict(env={"torch": "2.0.0"}), "torch version"),
    (dict(precision_b=0.05), "precision 0.01 vs 0.05"),
])
def test_different_settings_are_refused_unless_forced(tmp_path, change, words):
    a = _write(tmp_path, "a.json", _measurement(1.0))
    kw = {"threads": change.get("threads", 1), "env": change.get("env")}
    d = _measurement(1.0, seed=1, **kw)
    if "precision_b" in change:
        d["spec"]["precision"] = change["precision_b"]
    b = _write(tmp_path, "b.json", d)
    with pytest.raises(UsageError, match=words):
        compare_sources(load_source(a), load_source(b))
    forced = compare_sources(load_source(a), load_source(b), force=True)
    assert words.split()[0] in forced.warnings[0] and len(forced.rows) == 1


def test_a_disturbed_side_flags_inconclusive(tmp_path):
    a = _write(tmp_path, "a.json", _measurement(1.0))
    b = _write(tmp_path, "b.json", _measurement(3.0, seed=1, load=FakeLoad.busy()))
    cmp = compare_sources(load_source(a), load_source(b))
    assert cmp.rows[0].flag == "inconclusive (disturbed)" and cmp.regressions == 0
    assert "disturbed machine" in cmp.warnings[0]


def test_a_time_file_matches_the_same_model_in_a_study_run(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    timing = _measurement(1.0)

    def fake(it):
        d = _measurement(1.2, name=it.model, seed=3)
        return {"count": {"flops": 1}, "median": d["median"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                "batch": it.batch, "time": d, "disturbed": False}

    run_zoo(store=store, models=["seed:ex2-deep", "seed:ex2-wide"], machine=timing["environment"], measure=fake,
            n_boot=20)
    cmp = compare_sources(load_source(_write(tmp_path, "t.json", timing)), load_source("1", store))
    (row,) = cmp.rows
    assert row.a.model == row.b.model == "seed:ex2-deep" and row.ratio == pytest.approx(1.2, rel=0.03)
    assert cmp.only_b == ["seed:ex2-wide (batch 1)"]
    store.close()


def test_comparison_and_variants_files_are_read(tmp_path):
    clock = FakeClock(1 * MS)
    c = compare(clock.model, (), clock.model, (), TimerOptions(min_time=0), names=("x", "y"), clock=clock,
                load=FakeLoad.quiet())
    src = load_source(_write(tmp_path, "vs.json", c.to_dict()))
    assert sorted(t.model for t in src.timed) == ["x", "y"]
    variants = {"schema": "flopgap.variants/1", "model": "m", "device": "cpu", "settings": {"precision": 0.02},
                "rows": [{"variant": "eager", "batch": 1, "latency_s": 1e-3, "latency_ci": [0.99e-3, 1.01e-3],
                          "n_samples": 30, "measured_threads": 2, "timing": {"eager": {}}},
                         {"variant": "bf16", "batch": 1, "latency_s": 2e-3, "latency_ci": [1.98e-3, 2.02e-3],
                          "n_samples": 30, "measured_threads": 2, "timing": {"bf16": {}}}]}
    src = load_source(_write(tmp_path, "v.json", variants))
    assert sorted(t.model for t in src.timed) == ["m [bf16]", "m [eager]"]


def test_nothing_in_common_is_a_usage_error(tmp_path):
    a = _write(tmp_path, "a.json", _measurement(1.0, name="x"))
    b = _write(tmp_path, "b.json", _measurement(1.0, name="y"))
    with pytest.raises(UsageError, match="no model was timed in both"):
        compare_sources(load_source(a), load_source(b))
    with pytest.raises(UsageError, match="not a flopgap JSON result"):
        load_source(_write(tmp_path, "bad.json", [1, 2]))


def test_cli_refuses_with_exit_2_and_one_line(flopgap_cmd, tmp_path):
    a = _write(tmp_path, "a.json", _measurement(1.0))
    b = _write(tmp_path, "b.json", _measurement(1.0, threads=2, seed=1))
    p = subprocess.run([*flopgap_cmd, "compare", a, b], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == "" and p.stderr.count("\n") == 1
    assert p.stderr.startswith("error: ") and "threads 1 vs 2" in p.stderr and "--force" in p.stderr
    p = subprocess.run([*flopgap_cmd, "compare", a, b, "--force", "--json", "-"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["schema"] == "flopgap.compare/1" and d["differences"] == ["threads 1 vs 2"]


def _with_reference(d, memory_s):
    d["disturbance"]["reference_before_s"] = [1e-4, 3e-4, memory_s]
    d["disturbance"]["reference_after_s"] = [1e-4, 3e-4, memory_s]
    return d


def test_a_flag_the_machine_drift_could_explain_carries_a_warning(tmp_path):
    a = _write(tmp_path, "a.json", _with_reference(_measurement(1.0), 5e-4))
    b = _write(tmp_path, "b.json", _with_reference(_measurement(1.1, seed=1), 6e-4))   # memory part 1.2x slower
    cmp = compare_sources(load_source(a), load_source(b))
    (row,) = cmp.rows
    assert row.flag == "regression" and row.b.reference_s == pytest.approx((1e-4, 3e-4, 6e-4))
    assert any("reference kernel ran 1.20x" in w and "re-time both sides" in w for w in cmp.warnings)
    calm = _write(tmp_path, "c.json", _with_reference(_measurement(1.1, seed=1), 5.1e-4))   # machine steady
    assert not any("reference kernel" in w for w in compare_sources(load_source(a), load_source(calm)).warnings)


@pytest.mark.parametrize("value", ["1e400", "1" + "0" * 400, "true", "\"fast\"", "-1"])
def test_odd_reference_readings_are_ignored_and_odd_medians_refused(tmp_path, value):
    d = _measurement(1.0)
    d["disturbance"]["reference_after_s"] = "ODD"
    text = json.dumps(d).replace('"ODD"', "[%s, 1, 1]" % value)
    p = tmp_path / "odd.json"
    p.write_text(text)
    t = load_source(str(p)).timed[0]
    assert t.reference_s is None
    huge = json.dumps(d).replace('"median": ', '"median": 1' + "0" * 400 + ', "was": ', 1)
    p.write_text(huge)
    with pytest.raises(UsageError, match="not a flopgap JSON result"):
        load_source(str(p))


def test_a_side_from_few_processes_states_the_confidence_of_its_interval(tmp_path):
    from flopgap.report.study_view import compare_sections

    def processes(ms, seed):
        runs = [_measurement(ms, seed=seed + i) for i in range(2)]
        return {"schema": runs[0]["schema"], "kind": "processes", "results": runs, "ci_low": ms * 0.99e-3,
                "ci_high": ms * 1.01e-3, "ci_confidence": 0.5}

    a = _write(tmp_path, "a.json", processes(1.0, 0))
    b = _write(tmp_path, "b.json", processes(1.0, 5))
    cmp = compare_sources(load_source(a), load_source(b))
    assert cmp.rows[0].a.ci_level == 0.5 and cmp.rows[0].a.n == 2
    table = compare_sections(cmp)[0].blocks[-1]
    assert table.rows[0][2].endswith("(50% CI)")
