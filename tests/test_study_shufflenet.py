"""ShuffleNet V2 micro-benchmarks: equal FLOPs by construction; verdicts from fake timings."""

from __future__ import annotations

import pytest
import torch

from flopgap.count import count
from flopgap.store import Store
from flopgap.study import run_shufflenet
from flopgap.study.shufflenet import CONFIGS, build_config


@pytest.mark.parametrize("guideline, tol", [("G1", 0.06), ("G2", 0.02), ("G3", 0.02)])
def test_configurations_have_equal_flops(guideline, tol):
    # the paper's channel counts: 36 x 432 = 15552 vs 128^2 = 16384 is its own 5% spread in G1
    flops = []
    for c in (c for c in CONFIGS if c.guideline == guideline):
        net, ch = build_config(guideline, c.name)
        flops.append(count(net.eval(), (torch.randn(1, ch, 4, 4),)).flops)
    assert max(flops) / min(flops) - 1 <= tol
    # 16 pixels x 10 blocks x 2 FLOPs per MAC x c^2 (G1: two convs of c1 x c2 = 128 x 128)
    assert flops[0] == 16 * 10 * 2 * 128 * 128 * (2 if guideline == "G1" else 1)


def test_g4_variants_differ_only_by_elementwise_ops():
    outs = {}
    for c in (c for c in CONFIGS if c.guideline == "G4"):
        net, ch = build_config("G4", c.name)
        outs[c.name] = count(net.eval(), (torch.randn(1, ch, 4, 4),))
    conv = {k: sum(r.flops for r in v.ops if "conv" in r.op) for k, v in outs.items()}
    assert len(set(conv.values())) == 1
    assert outs["ReLU + shortcut"].flops > outs["no ReLU, no shortcut"].flops


def fake_measure(speeds):
    def measure(item):
        g, name = item.model.split(" ", 1)
        rel = speeds[item.model]
        ratio = 1 / rel
        return {"guideline": g, "config": name, "base": "x",
                "count": {"config": {"flops": 100}, "base": {"flops": 100}},
                "comparison": {"ratio": ratio, "ci_low": ratio * 0.97, "ci_high": ratio * 1.03,
                               "a": {"median": ratio * 1e-3}, "b": {"median": 1e-3}}}
    return measure


def test_guideline_verdicts(tmp_path):
    speeds = {f"{c.guideline} {c.name}": 0.5 for c in CONFIGS}   # every config 2x slower than the first
    speeds["G2 g=2 c=180"] = 1.5                                   # G2: one faster: mixed
    speeds["G3 2-fragment-series"] = 1.0                            # G3: one no change (within +-5%): mixed
    for name in ("no ReLU", "no shortcut", "no ReLU, no shortcut"):  # G4 expects faster: 2x slower contradicts
        speeds[f"G4 {name}"] = 0.5
    speeds["G4 no ReLU"] = 0.98  # ratio 1.02, CI [0.99, 1.05]: neither side of the band, inconclusive
    store = Store(str(tmp_path / "sh.db"))
    r = run_shufflenet(store=store, machine={"cpu_model": "fake"}, measure=fake_measure(speeds))
    v = {g["guideline"]: g["verdict"] for g in r.guidelines}
    assert v["G1"] == "holds"
    assert v["G2"] == "mixed (2 of 3 configurations hold, 1 against)"
    assert v["G3"] == "mixed (3 of 4 configurations hold, 1 against)"
    assert v["G4"] == "does not hold (2 of 3 configurations against, the rest inconclusive)"
    g1 = [row for row in r.rows if row["guideline"] == "G1"]
    assert g1[0]["verdict"] == "(reference)" and g1[0]["speed"] == 1.0
    assert g1[1]["speed"] == pytest.approx(0.5) and g1[1]["paper_gpu"] == pytest.approx(1296 / 1480)
    assert g1[3]["paper_arm"] == pytest.approx(57.6 / 76.2)
    g4 = {row["config"]: row for row in r.rows if row["guideline"] == "G4"}
    assert g4["no ReLU"]["paper_gpu"] is None and g4["no ReLU, no shortcut"]["paper_arm"] == pytest.approx(66.3 / 56.7)
    assert len(store.measurements(r.run.id, kind="config")) == 13
