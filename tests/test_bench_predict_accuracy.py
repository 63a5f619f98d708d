"""The accuracy benchmark's own arithmetic (its scores and how far the measured side repeats)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import predict_accuracy  # noqa: E402


def test_scores_count_errors_against_the_measured_median():
    s = predict_accuracy.scores(np.array([1.05, 0.8, 2.0]), np.array([1.0, 1.0, 1.0]),
                                np.array([0.9, 0.7, 1.5]), np.array([1.1, 0.9, 2.5]))
    assert s["n"] == 3 and s["within_10"] == pytest.approx(1 / 3) and s["within_25"] == pytest.approx(2 / 3)
    assert s["median_abs_error"] == pytest.approx(0.2) and s["interval_coverage"] == pytest.approx(1 / 3)


def test_pass_spread_is_the_slowest_undisturbed_pass_over_the_fastest():
    rows = [{"passes_s": [1.0, 1.05, 1.02]}, {"passes_s": [2.0, 2.4]}, {"passes_s": [3.0]}, {"passes_s": []}]
    spread = predict_accuracy.pass_spread(rows)
    assert spread["models"] == 2 and spread["median"] == pytest.approx(0.125) and spread["over_10"] == 0.5
    assert predict_accuracy.pass_spread([{"passes_s": [1.0]}]) == {"models": 0, "median": None, "over_10": None}


def test_the_method_error_is_written_from_the_development_rows_only_when_all_were_measured(tmp_path, monkeypatch):
    import json

    out = tmp_path / "method_error.json"
    monkeypatch.setattr(predict_accuracy, "METHOD_ERROR_FILE", out)
    rows = [{"set": "heldout-dev", "model": f"m{i}", "measured_s": m, "predicted_s": 1.0}
            for i, m in enumerate(np.linspace(0.8, 1.2, 21))]
    rows.append({"set": "heldout-final", "measured_s": 5.0, "predicted_s": 1.0})   # never used
    assert predict_accuracy.write_method_error(rows, "cpu", 2, "today") == 0
    d = json.loads(out.read_text())
    assert d["q_lo"] == pytest.approx(np.quantile(np.log(np.linspace(0.8, 1.2, 21)), 0.05))
    assert d["q_hi"] == pytest.approx(np.quantile(np.log(np.linspace(0.8, 1.2, 21)), 0.95))
    assert d["provenance"] == "21 held-out development models (21 measurements), cpu, 2 threads, today"
    out.unlink()
    assert predict_accuracy.write_method_error(rows + [{"set": "heldout-dev", "model": "x", "measured_s": None,
                                                        "predicted_s": 1.0}],
                                               "cpu", 2, "today") == 2 and not out.exists()


def test_an_isolated_timing_builds_and_times_one_model():
    out = predict_accuracy.time_isolated("seed:ex1-small", 0.05, 1)
    assert set(out) == {"median_s", "ci_low_s", "ci_high_s", "samples", "disturbed", "summary"} and out["median_s"] > 0
    assert out["summary"] == "" or out["disturbed"]


def test_process_history_times_targets_before_and_after_other_models(capsys):
    import process_history

    assert process_history.main(["--targets", "seed:ex1-small", "--others", "seed:ex2-deep", "--max-time", "0.05",
                                 "--after", "1", "--allocator", "default", "--no-save"]) == 0
    out = capsys.readouterr().out
    assert "fresh process" in out and "after / fresh" in out and "built, ran 3x and freed 1 other models" in out
    assert process_history.main(["--targets", "", "--allocator", "default", "--no-save"]) == 2


def test_chain_fresh_names_the_four_whole_network_chains_and_refits_without_them():
    """benchmarks/chain_fresh.py tells the whole networks from the stacks by label; its
    second fit leaves exactly those out."""
    import chain_fresh
    from dataclasses import asdict

    import torch

    from flopgap.count import count
    from flopgap.machine import MachineProfile
    from flopgap.machine._chains import chain_cases

    labels = [lb for lb, _ in chain_cases()]
    assert sum(lb.startswith(chain_fresh.WHOLE_NETWORKS) for lb in labels) == 4
    # a profile without calibration: the fits read the chains' floors; the stacks are
    # 1.0x their floors and the whole networks 1.5x, so only the full fit moves
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU())
    with torch.inference_mode():
        res = count(net, (torch.randn(4, 64),), model="n")
    ops = [asdict(r) for r in res.ops]
    prof = MachineProfile.synthetic(module_overhead_s=0.0)
    from flopgap.explain._predict import Predictor

    floor = sum(Predictor(prof).uncalibrated_time(r)[0] for r in res.ops)
    chains = [{"label": lb, "ops": ops, "module_calls": 0, "seconds": floor * (1.5 if i % 6 == 0 else 1.0)}
              for i, lb in enumerate(["mobile net a", "s1", "s2", "s3", "s4", "s5", "vit b", "s6", "s7", "s8"])]
    prof.chains = chains
    got, full, stacks = chain_fresh._fits(prof)
    assert got == [c["label"] for c in chains]
    assert stacks["s1"] == pytest.approx(floor, rel=1e-3) and stacks["mobile net a"] == pytest.approx(floor, rel=1e-3)
    assert full["mobile net a"] > stacks["mobile net a"]


def test_a_pass_counts_only_when_the_chains_ran_at_their_profile_time_before_and_after_it():
    d = [{"median": m} for m in (1.02, 1.30, 0.97, 1.01)]
    assert predict_accuracy.matched_passes({"median": 0.99}, d) == [True, False, False, True]
    assert predict_accuracy.matched_passes(None, d[:1]) == [False]
    assert predict_accuracy.matched_passes({"median": 1.0}, [None, {"median": 1.0}]) == [False, False]


def test_a_pass_is_out_of_the_profiles_state_when_its_cold_chains_moved_though_the_median_did_not():
    ratios = {f"s{i}": 1.0 for i in range(10)} | {"cold a": 0.86, "cold b": 0.88, "cold c": 0.9}
    d = predict_accuracy.drift_of(ratios, {"cold a", "cold b", "cold c"})
    assert d["median"] == 1.0 and d["hot_median"] == 1.0 and d["cold_median"] == 0.88
    assert d["min"] == 0.86 and d["max"] == 1.0
    assert not predict_accuracy._calm(d)
    assert predict_accuracy._calm(predict_accuracy.drift_of(ratios | {"cold a": 1.03, "cold b": 0.97}, {"cold a",
                                                                                                    "cold b"}))
    only_hot = predict_accuracy.drift_of({"s1": 1.02, "s2": 0.99}, set())
    assert "cold_median" not in only_hot and predict_accuracy._calm(only_hot)
    assert predict_accuracy._calm({"median": 1.01}) and not predict_accuracy._calm(None)
    assert predict_accuracy.drift_of({}, set()) is None


def test_model_parts_cover_a_model_with_its_children_opening_containers_and_lone_wrappers():
    from torch import nn

    import model_parts

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
            self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(8, 8, 1), nn.Sequential(nn.ReLU())) for _ in range(2)])
            self.head = nn.Linear(8, 2)

    wrapped = nn.Sequential(Net())   # a wrapper with one child is opened whatever the depth
    assert model_parts._cover(wrapped, 1) == ["0.stem", "0.blocks.0", "0.blocks.1", "0.head"]
    assert model_parts._cover(Net(), 2) == ["stem.0", "stem.1", "blocks.0", "blocks.1", "head"]
    assert model_parts._cover(Net(), 3) == ["stem.0", "stem.1", "blocks.0.0", "blocks.0.1", "blocks.1.0", "blocks.1.1",
                                            "head"]


def test_the_block_benchmarks_refuse_a_thread_count_below_one(capsys):
    import model_parts
    import python_work

    assert python_work.main(["--threads", "0"]) == 2 and model_parts.main(["--threads", "0"]) == 2
    assert capsys.readouterr().err.count("error: --threads >= 1") == 2


def test_a_timing_benchmark_reruns_itself_with_the_allocator_pinned(monkeypatch):
    import _results

    from flopgap.machine._isolated import PINNED_ALLOCATOR

    calls = []
    monkeypatch.setattr(_results.subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 7)
    for k in PINNED_ALLOCATOR:
        monkeypatch.delenv(k, raising=False)
    assert _results.rerun_pinned("default", "x.py", ["--no-save"]) is None and not calls
    assert _results.rerun_pinned("pinned", "x.py", ["--no-save"]) == 7
    (cmd, env), = calls
    assert cmd[1:] == ["x.py", "--no-save"] and all(env[k] == v for k, v in PINNED_ALLOCATOR.items())
    for k, v in PINNED_ALLOCATOR.items():
        monkeypatch.setenv(k, v)
    assert _results.rerun_pinned("pinned", "x.py", []) is None and len(calls) == 1


def test_the_gather_effect_benchmark_refuses_a_thread_count_below_one(capsys):
    import gather_effect

    assert gather_effect.main(["--threads", "0"]) == 2
    assert "error: --threads >= 1" in capsys.readouterr().err
