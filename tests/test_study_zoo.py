"""The zoo study with injected fake measurements: analysis, resume after an interrupt or a
hard kill (no duplicates, nothing lost), failures stored and shown, input errors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from flopgap.errors import FlopgapError, UsageError
from flopgap.store import Store
from flopgap.study import run_zoo, zoo_items, zoo_result

MACHINE = {"cpu_model": "fake CPU", "logical_cores": 2}
SPECS = ["seed:ex1-small", "seed:ex1-large", "seed:ex2-deep", "seed:ex2-wide", "seed:ex3-float"]
# fake numbers: FLOPs rank 1..5, latency rank reversed for ex2-deep (an inversion)
FAKE = {"seed:ex1-small": (2e4, 40e-6), "seed:ex1-large": (2e6, 170e-6), "seed:ex2-deep": (2e5, 190e-6),
        "seed:ex2-wide": (2.01e5, 60e-6), "seed:ex3-float": (2e4 + 1, 30e-6)}


def fake_payload(spec: str, batch: int = 1) -> dict:
    flops, lat = FAKE[spec]
    lat *= batch
    return {"spec": spec, "batch": batch, "count": {"params": int(flops / 2), "flops": flops, "bytes_read": flops * 2,
                                                    "bytes_written": 100, "ops": int(flops ** 0.25), "coverage": 1.0},
            "median": lat, "ci_low": lat * 0.98, "ci_high": lat * 1.02, "prediction": {"latency_s": lat * 1.3},
            "finding": f"finding for {spec}"}


class Recorder:
    """A fake per-model measurement that records calls and can fail on the n-th one."""

    def __init__(self, interrupt_at: int | None = None, fail: set[str] = frozenset()):
        self.calls: list[str] = []
        self.interrupt_at = interrupt_at
        self.fail = fail

    def __call__(self, item):
        self.calls.append(item.model)
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        if item.model in self.fail:
            raise FlopgapError(f"{item.model} cannot run")
        return fake_payload(item.spec, item.batch)


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'z.db'}")
    yield s
    s.close()


def _rows_per_model(db) -> dict:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT model || ' ' || key, COUNT(*) FROM measurements WHERE kind = 'model' "
                                "GROUP BY model, key").fetchall())


def test_zoo_analysis_from_fake_measurements(store):
    rec = Recorder()
    r = run_zoo(store=store, models=SPECS, machine=MACHINE, measure=rec, n_boot=200)
    assert rec.calls == SPECS
    assert r.run.status == "finished" and r.failures == {}
    assert [row["label"] for row in r.rows] == SPECS
    a = r.analysis[1]
    assert a["n"] == 5
    assert set(a["correlations"]) == {"params", "flops", "bytes", "ops", "prediction"}
    # prediction = 1.3 x latency exactly: a perfect correlation on every statistic
    assert a["correlations"]["prediction"]["spearman"]["r"] == pytest.approx(1.0)
    assert a["correlations"]["prediction"]["pearson_loglog"]["r"] == pytest.approx(1.0)
    pairs = {(p["fewer"], p["more"]) for p in a["inversions"]["top"]}
    assert ("seed:ex2-deep", "seed:ex2-wide") in pairs  # 2e5 FLOPs at 190 us vs 2.01e5 at 60 us
    top = next(p for p in a["inversions"]["top"] if p["fewer"] == "seed:ex2-deep" and p["more"] == "seed:ex2-wide")
    assert top["finding"] == "finding for seed:ex2-deep"
    assert top["slowdown"] == pytest.approx(190 / 60)
    # the result rebuilt from the store equals the one returned
    again = zoo_result(store, r.run.id, n_boot=200)
    assert again.rows == r.rows and again.analysis == r.analysis


def test_resume_after_interrupt_has_no_duplicates_and_loses_nothing(store, tmp_path):
    first = Recorder(interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_zoo(store=store, models=SPECS, machine=MACHINE, measure=first, n_boot=50)
    (run,) = store.runs()
    assert run.status == "interrupted"
    assert {m.model for m in store.measurements(run.id)} == set(SPECS[:2])  # the two finished ones kept
    second = Recorder()
    r = run_zoo(store=store, models=SPECS, machine=MACHINE, measure=second, resume=True, n_boot=50)
    assert r.run.id == run.id and r.outcome.resumed
    assert second.calls == SPECS[2:]  # only what was missing
    assert r.outcome.skipped == [f"{s} b1" for s in SPECS[:2]]
    assert _rows_per_model(tmp_path / "z.db") == {f"{s} b1": 1 for s in SPECS}
    assert store.run(run.id).status == "finished"
    # resuming a finished run starts a new one; without --resume, always a new one
    third = Recorder()
    r3 = run_zoo(store=store, models=SPECS, machine=MACHINE, measure=third, resume=True, n_boot=50)
    assert r3.run.id != run.id and third.calls == SPECS


def test_resume_after_hard_kill(tmp_path):
    # a real process dies with os._exit (no cleanup, like kill -9) while measuring the 3rd model
    db = tmp_path / "k.db"
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from flopgap.store import Store
        from flopgap.study import run_zoo
        from test_helpers_fake import fake_payload
        calls = []
        def measure(item):
            calls.append(item.model)
            if len(calls) == 3:
                os._exit(9)
            return fake_payload(item.spec)
        run_zoo(store=Store({str(db)!r}), models={SPECS!r}, machine={MACHINE!r}, measure=measure, n_boot=50)
    """)
    (tmp_path / "test_helpers_fake.py").write_text(
        "FAKE = " + repr(FAKE) + "\n" + textwrap.dedent('''
        def fake_payload(spec, batch=1):
            flops, lat = FAKE[spec]
            return {"spec": spec, "batch": batch, "count": {"params": 1, "flops": flops, "bytes_read": 1,
                    "bytes_written": 1, "ops": 1}, "median": lat, "ci_low": lat, "ci_high": lat,
                    "prediction": {"latency_s": lat}}
        '''))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 9, p.stderr
    s = Store(str(db))
    (run,) = s.runs()
    assert run.status == "running"  # nobody could mark it
    assert {m.model for m in s.measurements(run.id)} == set(SPECS[:2])
    rec = Recorder()
    r = run_zoo(store=s, models=SPECS, machine=MACHINE, measure=rec, resume=True, n_boot=50)
    assert r.run.id == run.id and rec.calls == SPECS[2:]
    assert _rows_per_model(db) == {f"{x} b1": 1 for x in SPECS}
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_failed_model_is_stored_shown_and_retried_on_resume(store):
    rec = Recorder(fail={"seed:ex2-deep"})
    r = run_zoo(store=store, models=SPECS, machine=MACHINE, measure=rec, n_boot=50)
    assert r.run.status == "incomplete"
    assert r.failures == {"seed:ex2-deep b1": "FlopgapError: seed:ex2-deep cannot run"}
    assert "seed:ex2-deep" not in [row["label"] for row in r.rows]
    again = Recorder()
    r2 = run_zoo(store=store, models=SPECS, machine=MACHINE, measure=again, resume=True, n_boot=50)
    assert again.calls == ["seed:ex2-deep"] and r2.failures == {} and r2.run.status == "finished"


def test_every_model_failing_is_an_error(store):
    with pytest.raises(FlopgapError, match="every model failed"):
        run_zoo(store=store, models=SPECS[:2], machine=MACHINE, measure=Recorder(fail=set(SPECS)), n_boot=50)
    assert store.runs()[0].status == "failed"


def test_several_batches_are_analysed_apart(store):
    r = run_zoo(store=store, models=SPECS, batches=(1, 8), machine=MACHINE, measure=Recorder(), n_boot=50)
    assert sorted(r.analysis) == [1, 8]
    assert r.analysis[8]["n"] == 5 and len(r.rows) == 10


def test_zoo_items_and_input_errors():
    items = zoo_items("seed", batches=(1, 4))
    assert len(items) == 14 and items[0].key == "b1" and items[1].key == "b4"
    assert [i.model for i in zoo_items("transformers")][:2] == ["zoo:bert-tiny", "zoo:bert-mini"]
    tv = zoo_items("torchvision")
    assert len(tv) > 50 and all(i.spec.startswith("torchvision:") for i in tv)
    with pytest.raises(UsageError, match="unknown zoo 'imagenet'"):
        zoo_items("imagenet")
    with pytest.raises(UsageError, match="unknown model 'torchvision:resnet19'"):
        zoo_items(models=["torchvision:resnet19"])
    with pytest.raises(UsageError, match="unknown model 'seed:nope'"):
        zoo_items(models=["seed:nope"])
    with pytest.raises(UsageError, match="positive"):
        zoo_items("seed", batches=(0,))


def test_ctrl_c_inside_timing_ends_the_study_without_storing_a_partial_row(store, monkeypatch):
    # flopgap.timing returns what it had on Ctrl-C (interrupted=True); a study must stop there
    import flopgap.study.zoo
    from flopgap.study._runner import Item
    from flopgap.study.zoo import measure_zoo_model
    from flopgap.timing import TimerOptions

    class Partial:
        interrupted = True

    monkeypatch.setattr(flopgap.study.zoo, "measure", lambda *a, **k: Partial())
    with pytest.raises(KeyboardInterrupt):
        measure_zoo_model(Item("seed:ex3-float", "b1", "seed:ex3-float", 1), profile=object(), with_explain=False,
                          timer=TimerOptions())
