"""The generation study with injected fake measurements (analysis, verdicts, resume), the
hf/timm zoos' items, and one real model measured end to end (slow)."""

from __future__ import annotations

import pytest

from flopgap.store import Store
from flopgap.study import result_for_run, zoo_items
from flopgap.study.generation import GENERATION_MODELS, analyze_generation, run_generation_study

MACHINE = {"cpu_model": "fake CPU", "logical_cores": 2}
# label -> (decode FLOPs per token, step seconds at batch 1, step seconds at batch 4)
FAKE = {"llama-2L-256": (5e6, 1.0e-3, 1.2e-3), "llama-4L-512": (4e7, 4.0e-3, 4.4e-3),
        "llama-6L-768": (1.2e8, 9.0e-3, 1.0e-2), "llama-8L-1024": (2.5e8, 8.5e-3, 9.0e-3)}


def fake_payload(item, *, precise: bool = True) -> dict:
    flops, t1, t4 = FAKE[item.model]
    step = t1 if item.batch == 1 else t4
    b = item.batch
    count = {"tokens": b, "weights": int(flops * 2), "per_token": {"flops": flops, "bytes": flops * 2.1,
                                                                   "kv_read": flops * 0.05, "kv_written": flops * 0.05}}
    time = {"median_s": step, "ci_low_s": step * 0.99, "ci_high_s": step * 1.01, "n_samples": 20,
            "precision_met": precise, "warnings": [], "threads": 1}
    return {"points": [{"batch": b, "context": 143,
                        "decode": {"count": count, "floors": {"memory_s": step / 4, "compute_s": step / 40},
                                   "time": time, "utilisation": {"mbu": 0.25, "mfu": 0.02}},
                        "prefill": {"time": {"median_s": step * 10}}}]}


def test_generation_study_analysis_and_verdicts(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    r = run_generation_study(store=store, batches=(1, 4), measure=fake_payload, machine=MACHINE)
    assert len(r.rows) == 2 * len(GENERATION_MODELS)
    b1 = r.analysis["batches"][1]
    # llama-8L-1024 has more FLOPs per token than llama-6L-768 yet is faster: not an inversion
    # (inversions need fewer FLOPs AND slower); llama-6L-768 vs 8L is one (fewer FLOPs, slower)
    assert b1["inversions"]["count"] == 1
    assert b1["inversions"]["top"][0]["fewer"] == "llama-6L-768"
    verdicts = {(v["model"], v["batch"]): v["verdict"] for v in r.analysis["batching"]}
    # 4 tokens for 1.2x the step: under half of 4 single steps, beyond the CIs: holds
    assert verdicts[("llama-2L-256", 4)] == "holds"
    assert b1["correlations"]["flops"]["spearman"]["r"] == pytest.approx(0.8)
    again = result_for_run(store, r.run.id)  # rebuilt from the store
    assert again.rows == r.rows


def test_imprecise_timings_make_verdicts_inconclusive(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    r = run_generation_study(store=store, batches=(1, 4), machine=MACHINE,
                             measure=lambda it: fake_payload(it, precise=False))
    assert {v["verdict"] for v in r.analysis["batching"]} == {"inconclusive"}
    assert r.analysis["batches"][1]["inversions"]["count"] == 0  # no evidence from untrustworthy rows
    assert len(r.analysis["batches"][1]["untrustworthy"]) == len(GENERATION_MODELS)


def test_analysis_of_no_rows_is_empty():
    assert analyze_generation([]) == {"batches": {}, "batching": []}


def test_hf_and_timm_zoo_items_carry_config_and_sequence_length():
    items = zoo_items("hf", batches=(1,))
    by_label = {it.model: it for it in items}
    assert by_label["bert-base s512"].seq == 512 and by_label["bert-base s512"].spec == "hf:bert"
    assert dict(by_label["llama-4L GQA s128"].kwargs)["num_key_value_heads"] == 2
    assert dict(by_label["llama-4L MHA s128"].kwargs)["num_key_value_heads"] == 8
    timm_items = zoo_items("timm", batches=(1, 8))
    assert len(timm_items) == 2 * 21 and all(it.spec.startswith("timm:") for it in timm_items)


@pytest.mark.slow
def test_generation_study_measures_a_real_model(tmp_path):
    pytest.importorskip("transformers")
    from flopgap.machine import MachineProfile

    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    r = run_generation_study(store=store, models=GENERATION_MODELS[:1], batches=(1,), prompt=16, new_tokens=4,
                             max_time=0.3, threads=1, machine=MACHINE, profile=MachineProfile.synthetic())
    row = r.rows[0]
    assert row["label"] == "llama-2L-256" and row["median"] > 0 and row["flops"] > 0
