"""The seed case study with fake measurements: one verdict per claim, from the ratio's CI."""

from __future__ import annotations

import pytest

from flopgap.store import Store
from flopgap.study import CLAIMS, run_seed, seed_result

MACHINE = {"cpu_model": "fake CPU"}
FLOPS = {"seed:ex1-small": 42_001, "seed:ex1-large": 2_004_001, "seed:ex2-deep": 201_000,
         "seed:ex2-wide": 201_100, "seed:ex3-float": 20_010, "seed:ex3-int8-as-written": 20_010,
         "seed:ex3-int8": 20_010}
# fake latency ratios a/b with their CIs, per pair
RATIOS = {"seed:ex1-small|seed:ex1-large": (0.25, 0.24, 0.26),
          "seed:ex2-deep|seed:ex2-wide": (3.2, 3.0, 3.4),
          "seed:ex3-int8-as-written|seed:ex3-float": (1.0, 0.99, 1.01),
          "seed:ex3-int8|seed:ex3-float": (1.1, 0.8, 1.4)}


def fake_model(item):
    return {"spec": item.spec, "count": {"params": 1, "flops": FLOPS[item.spec], "bytes_read": 1, "bytes_written": 1,
                                         "ops": 1}, "one_shot_s": 1e-3,
            "quantized": item.spec == "seed:ex3-int8", "module_type": "torch.nn.Linear",
            "findings": [{"kind": "dominant", "title": "", "text": f"why {item.spec}"},
                         {"kind": "overhead", "title": "", "text": f"launches of {item.spec}"}]}


def fake_pair(item):
    a, b = item.model.split("|")
    r, lo, hi = RATIOS[item.model]
    def m(name, med):
        return {"spec": {"name": name}, "median": med, "ci_low": med * 0.99, "ci_high": med * 1.01}
    return {"ratio": r, "ci_low": lo, "ci_high": hi, "a": m(a, 1e-4 * r), "b": m(b, 1e-4)}


def test_seed_verdicts(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    r = run_seed(store=store, machine=MACHINE, measure_model=fake_model, measure_pair=fake_pair)
    v = {c["id"]: c for c in r.claims}
    assert [c["id"] for c in r.claims] == [c.id for c in CLAIMS]
    # Ex.1: the small model is 4x faster, so "it may be slower" does not hold ...
    assert v["ex1"]["verdict"] == "does not hold" and v["ex1"]["reason"] == "why seed:ex1-small"
    # ... but per FLOP it is 0.25 * 2004001 / 42001 = 11.9x slower: the title question holds
    assert v["ex1-per-flop"]["ratio"] == pytest.approx(0.25 * 2_004_001 / 42_001)
    assert v["ex1-per-flop"]["ci_low"] == pytest.approx(0.24 * 2_004_001 / 42_001)
    assert v["ex1-per-flop"]["verdict"] == "holds"
    assert v["ex2"]["verdict"] == "holds"
    assert v["ex2"]["reason"] == "launches of seed:ex2-deep"  # the claim is about launches: that finding answers it
    # as written: same model, ratio within +-5% of 1 -> the claimed speed-up is absent
    assert v["ex3-as-written"]["verdict"] == "does not hold"
    assert "not quantized" in v["ex3-as-written"]["notes"]
    assert v["ex3-int8"]["verdict"] == "inconclusive at this noise"
    assert r.run.status == "finished"
    stored = {m.model: m.payload["verdict"] for m in store.measurements(r.run.id, kind="claim")}
    assert stored == {k: c["verdict"] for k, c in v.items()}
    assert seed_result(store, r.run.id).claims == r.claims


def test_seed_resume_measures_only_what_is_missing(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    calls = []

    def flaky_pair(item):
        calls.append(item.model)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fake_pair(item)

    with pytest.raises(KeyboardInterrupt):
        run_seed(store=store, machine=MACHINE, measure_model=fake_model, measure_pair=flaky_pair)
    models_calls = []

    def count_models(item):
        models_calls.append(item.model)
        return fake_model(item)

    calls.clear()
    r = run_seed(store=store, machine=MACHINE, measure_model=count_models, measure_pair=lambda it: (calls.append(it.model), fake_pair(it))[1],
                 resume=True)
    assert models_calls == []  # all seven models were stored before the interrupt
    assert calls == list(RATIOS)[1:]
    assert len(store.measurements(r.run.id, kind="comparison")) == 4
    assert all(c["verdict"] != "not measured" for c in r.claims)
