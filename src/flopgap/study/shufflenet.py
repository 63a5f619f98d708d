"""The ShuffleNet V2 case study: the four guidelines' micro-benchmarks (Ma et al., ECCV
2018, Tables 1-4) rebuilt at equal FLOPs and timed on this machine.

Each network stacks 10 blocks on a ``c x S x S`` input (the paper: S = 56; default here
S = 28 so a 2-core CPU finishes in about a minute, which scales every configuration's
FLOPs by the same 1/4 and keeps them equal). Batch 1. Channel counts are the paper's.

- G1 (equal channel width minimises memory access): two 1x1 convs per block,
  c1 -> c2 -> c1, for c1:c2 = 1:1 (128,128), 1:2 (90,180), 1:6 (52,312), 1:12 (36,432).
- G2 (group convolution raises memory access): one 1x1 conv c -> c per block with
  g = 1, 2, 4, 8 groups and c = 128, 180, 256, 360.
- G3 (fragmentation cuts parallelism): 1x1 convs per block as 1 fragment (128 -> 128),
  2 / 4 in series (90 and 64 channels), 2 / 4 in parallel (branches 128 -> 64 / 128 -> 32,
  outputs concatenated). The paper's figure gives the structures, not every channel
  count: these are chosen so that FLOPs match the 1-fragment block within 1.2%.
- G4 (element-wise ops are not free): a ResNet bottleneck (1x1 128 -> 32, 3x3 32 -> 32,
  1x1 32 -> 128, ReLU after each, identity shortcut), with ReLU and/or shortcut removed.

Each configuration is timed against its group's first one with
:func:`flopgap.timing.compare` (alternating, paired bootstrap CI of the ratio);
relative speed = latency(first) / latency(config), the paper's numbers are turned
into the same relative speeds (speed / speed of the first) from ANCHORS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from flopgap._summary import summary_html, summary_repr
from flopgap.errors import UsageError
from flopgap.study._runner import Item, Retime, RunOutcome, StudyWarnings, close_run, open_run, run_items
from flopgap.study._stats import Verdict, ratio_verdict
from flopgap.timing import TimerOptions, environment

__all__ = ["Config", "CONFIGS", "GUIDELINES", "ShuffleResult", "build_config", "run_shufflenet", "shufflenet_result"]

KIND = "shufflenet-v2"
SHUFFLE_MAX_TIME = 2.0  # seconds per pair (configuration against its group's first)
BLOCKS = 10


@dataclass(frozen=True)
class Config:
    guideline: str
    name: str
    paper_gpu: float | None  # GTX 1080Ti batches/s (ANCHORS.md)
    paper_arm: float | None  # Snapdragon 810 images/s


GUIDELINES = {
    "G1": ("equal channel width minimises memory access cost", "greater"),
    "G2": ("excessive group convolution increases memory access cost", "greater"),
    "G3": ("network fragmentation reduces the degree of parallelism", "greater"),
    "G4": ("element-wise operations are non-negligible", "less"),
}

CONFIGS: tuple[Config, ...] = (
    Config("G1", "1:1 (128,128)", 1480, 76.2),
    Config("G1", "1:2 (90,180)", 1296, 72.9),
    Config("G1", "1:6 (52,312)", 876, 69.1),
    Config("G1", "1:12 (36,432)", 748, 57.6),
    Config("G2", "g=1 c=128", 2451, 40.0),
    Config("G2", "g=2 c=180", 1725, 35.0),
    Config("G2", "g=4 c=256", 1026, 32.9),
    Config("G2", "g=8 c=360", 634, 27.8),
    Config("G3", "1-fragment", 2446, 40.2),
    Config("G3", "2-fragment-series", 1790, 38.6),
    Config("G3", "4-fragment-series", 752, 38.4),
    Config("G3", "2-fragment-parallel", 1537, 33.4),
    Config("G3", "4-fragment-parallel", 691, 35.0),
    Config("G4", "ReLU + shortcut", 2427, 56.7),
    Config("G4", "no ReLU", None, None),
    Config("G4", "no shortcut", None, None),
    Config("G4", "no ReLU, no shortcut", 2842, 66.3),
)


def _base(guideline: str) -> Config:
    return next(c for c in CONFIGS if c.guideline == guideline)


class _Parallel(nn.Module):
    def __init__(self, c: int, n: int):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(c, c // n, 1, bias=False) for _ in range(n))

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], dim=1)


class _Bottleneck(nn.Module):
    def __init__(self, c: int, relu: bool, shortcut: bool):
        super().__init__()
        m = c // 4
        self.conv1 = nn.Conv2d(c, m, 1, bias=False)
        self.conv2 = nn.Conv2d(m, m, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(m, c, 1, bias=False)
        self.relu, self.shortcut = relu, shortcut

    def forward(self, x):
        act = torch.relu if self.relu else (lambda t: t)
        y = act(self.conv1(x))
        y = act(self.conv2(y))
        y = self.conv3(y)
        if self.shortcut:
            y = y + x
        return act(y)


def build_config(guideline: str, name: str) -> tuple[nn.Module, int]:
    """(network of 10 blocks, input channels) for one configuration."""
    def conv(ci, co, groups=1):
        return nn.Conv2d(ci, co, 1, groups=groups, bias=False)

    if guideline == "G1":
        c1, c2 = (int(v) for v in name.split("(")[1].rstrip(")").split(","))
        return nn.Sequential(*[nn.Sequential(conv(c1, c2), conv(c2, c1)) for _ in range(BLOCKS)]), c1
    if guideline == "G2":
        g, c = (int(part.split("=")[1]) for part in name.split())
        return nn.Sequential(*[conv(c, c, g) for _ in range(BLOCKS)]), c
    if guideline == "G3":
        if name == "1-fragment":
            return nn.Sequential(*[conv(128, 128) for _ in range(BLOCKS)]), 128
        n = int(name[0])
        if name.endswith("series"):
            c = {2: 90, 4: 64}[n]
            return nn.Sequential(*[nn.Sequential(*[conv(c, c) for _ in range(n)]) for _ in range(BLOCKS)]), c
        return nn.Sequential(*[_Parallel(128, n) for _ in range(BLOCKS)]), 128
    if guideline == "G4":
        relu, shortcut = "no ReLU" not in name, "no shortcut" not in name
        return nn.Sequential(*[_Bottleneck(128, relu, shortcut) for _ in range(BLOCKS)]), 128
    raise ValueError(f"unknown guideline {guideline!r}")


def _network(guideline: str, name: str, spatial: int):
    module, c = build_config(guideline, name)
    module.eval()
    x = torch.randn(1, c, spatial, spatial, generator=torch.Generator().manual_seed(0))
    return module, (x,)


def measure_config(item: Item, *, spatial: int, timer: TimerOptions, load=None) -> dict:
    """Count a configuration and its group's first one, then time them alternately."""
    from flopgap.count import count
    from flopgap.study.seed import comparison_payload
    from flopgap.timing import compare

    guideline, name = item.model.split(" ", 1)
    base = _base(guideline)
    m, x = _network(guideline, name, spatial)
    mb, xb = _network(guideline, base.name, spatial)
    counts = {"config": count(m, x, model=item.model).totals(), "base": count(mb, xb, model=base.name).totals()}
    comp = compare(m, x, mb, xb, timer, names=(item.model, f"{guideline} {base.name}"), load=load)
    d = comparison_payload(comp)
    return {"guideline": guideline, "config": name, "base": base.name, "count": counts, "comparison": d,
            "disturbed": d["disturbed"]}


@dataclass
class ShuffleResult(StudyWarnings):
    run: object
    rows: list[dict]
    guidelines: list[dict]
    failures: dict[str, str] = field(default_factory=dict)
    outcome: RunOutcome | None = None

    __repr__ = summary_repr
    _repr_html_ = summary_html

    def _disturbed_items(self) -> list[tuple[str, dict]]:
        return [(f"{r['guideline']} {r['config']}", r) for r in self.rows if r.get("disturbed")]

    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        return f"run {self.run.id}", [(g["guideline"], str(getattr(g["verdict"], "value", g["verdict"])))
                                      for g in self.guidelines]

    def to_dict(self) -> dict:
        return {"schema": "flopgap.study.shufflenet-v2/1", "run": self.run.to_dict(), "rows": self.rows,
                "guidelines": self.guidelines, "failures": self.failures}


def _rows(payloads: dict[str, dict]) -> list[dict]:
    rows = []
    for cfg in CONFIGS:
        base = _base(cfg.guideline)
        key = f"{cfg.guideline} {cfg.name}"
        paper_gpu = cfg.paper_gpu / base.paper_gpu if cfg.paper_gpu and base.paper_gpu else None
        paper_arm = cfg.paper_arm / base.paper_arm if cfg.paper_arm and base.paper_arm else None
        row = {"guideline": cfg.guideline, "config": cfg.name, "paper_gpu": paper_gpu, "paper_arm": paper_arm,
               "flops": None, "flops_vs_first": None, "latency": None, "speed": None, "speed_low": None,
               "speed_high": None, "n": None, "threads": None, "disturbed": False, "verdict": ""}
        if cfg is base:
            row.update(speed=1.0, speed_low=1.0, speed_high=1.0, verdict="(reference)")
            # the reference's own numbers come from any comparison that used it
            for p in payloads.values():
                if p["guideline"] == cfg.guideline:
                    row.update(flops=p["count"]["base"]["flops"], flops_vs_first=1.0,
                               latency=p["comparison"]["b"]["median"])
                    break
        elif key in payloads:
            p = payloads[key]
            comp = p["comparison"]
            fb = p["count"]["base"]["flops"]
            ratio, lo, hi = comp["ratio"], comp["ci_low"], comp["ci_high"]
            disturbed = bool(comp.get("disturbed"))
            precise = comp.get("precise", comp["a"].get("precision_met", True) and comp["b"].get("precision_met", True))
            row.update(
                flops=p["count"]["config"]["flops"], flops_vs_first=p["count"]["config"]["flops"] / fb if fb else None,
                latency=comp["a"]["median"], speed=1 / ratio if ratio else None,
                # a stored null CI means too few samples for an interval (NaN is not JSON)
                speed_low=1 / hi if hi else None, speed_high=1 / lo if lo else None,
                n=comp["a"].get("n_samples"), threads=comp.get("threads", (comp["a"].get("spec") or {}).get("threads")),
                disturbed=disturbed,
                verdict=ratio_verdict(lo, hi, GUIDELINES[cfg.guideline][1], disturbed=disturbed, precise=precise),
            )
        else:
            row["verdict"] = Verdict.NOT_MEASURED
        rows.append(row)
    return rows


def _guideline_verdicts(rows: list[dict]) -> list[dict]:
    """One verdict per guideline from its configurations' verdicts. Configurations with no
    verdict to give (disturbed, imprecise, not measured) are counted and left out: a
    guideline holds only on configurations that could answer."""
    out = []
    for g, (text, expect) in GUIDELINES.items():
        rs = [r for r in rows if r["guideline"] == g and r["verdict"] not in ("(reference)", "")]
        measured = [r for r in rs if r["verdict"] != Verdict.NOT_MEASURED]
        answered = [r for r in measured if Verdict(r["verdict"]).definite or r["verdict"] == Verdict.INCONCLUSIVE]
        holds = sum(r["verdict"] == Verdict.HOLDS for r in answered)
        against = sum(r["verdict"] == Verdict.DOES_NOT_HOLD for r in answered)
        disturbed = sum(r["verdict"] == Verdict.DISTURBED for r in measured)
        n = len(answered)
        if not measured:
            verdict = str(Verdict.NOT_MEASURED)
        elif n == 0:
            verdict = str(Verdict.DISTURBED if disturbed else Verdict.IMPRECISE)
        elif holds == n:
            verdict = str(Verdict.HOLDS)
        elif against == n:
            verdict = str(Verdict.DOES_NOT_HOLD)
        elif holds == 0 and against == 0:
            verdict = str(Verdict.INCONCLUSIVE)
        elif holds == 0:
            verdict = f"does not hold ({against} of {n} configurations against, the rest inconclusive)"
        elif against == 0:
            verdict = f"partly holds ({holds} of {n} configurations, the rest inconclusive)"
        else:
            verdict = f"mixed ({holds} of {n} configurations hold, {against} against)"
        left_out = len(measured) - n
        if left_out and n:
            verdict += f"; {left_out} configuration(s) left out ({disturbed} disturbed, {left_out - disturbed} imprecise)"
        paper = [r for r in answered if r["paper_arm"] is not None]
        agree_arm = sum((r["paper_arm"] < 1) == (r["speed"] < 1) for r in paper if r["speed"] is not None)
        out.append({"guideline": g, "text": text,
                    "expect": "configurations slower than the first" if expect == "greater" else
                              "removing the ops makes it faster",
                    "holds": holds, "against": against, "measured": n, "left_out": left_out,
                    "disturbed": disturbed, "verdict": verdict,
                    "direction_agrees_with_paper_arm": f"{agree_arm} of {len(paper)}" if paper else "-"})
    return out


def shufflenet_result(store, run_id: int | str, *, outcome: RunOutcome | None = None) -> ShuffleResult:
    run = store.run(run_id)
    if run.kind != KIND:
        raise UsageError(f"run {run.id} is a {run.kind} run, not a shufflenet-v2 study")
    payloads = {m.model: m.payload for m in store.measurements(run.id, kind="config")}
    failures = {m.model: m.payload.get("error", "") for m in store.measurements(run.id, kind="error")
                if m.model not in payloads}
    rows = _rows(payloads)
    return ShuffleResult(run, rows, _guideline_verdicts(rows), failures, outcome)


def run_shufflenet(*, store, spatial: int = 28, timer: TimerOptions | None = None,
                   guidelines: tuple[str, ...] = ("G1", "G2", "G3", "G4"), resume: bool = False, progress=None,
                   measure: Callable[[Item], dict] | None = None, machine: dict | None = None,
                   retime: Retime = Retime(), load=None) -> ShuffleResult:
    """Run (or resume) the ShuffleNet V2 micro-benchmarks into ``store`` (``timer``: default
    a 2 s budget per pair; a disturbed pair is re-timed as ``retime`` says)."""
    if spatial < 4 or spatial > 224:
        raise UsageError(f"--spatial must be between 4 and 224, got {spatial}")
    unknown = [g for g in guidelines if g not in GUIDELINES]
    if unknown or not guidelines:
        raise UsageError(f"unknown guideline(s) {', '.join(unknown) or '(none)'}: choose from G1, G2, G3, G4")
    timer = timer if timer is not None else TimerOptions(max_time=SHUFFLE_MAX_TIME)
    config = {"study": KIND, "spatial": spatial, "blocks": BLOCKS, "batch": 1, "max_time": timer.max_time,
              "precision": timer.precision, "threads": timer.threads, "guidelines": list(guidelines)}
    if machine is None:
        machine = environment()
    if measure is None:
        def measure(it: Item) -> dict:
            return measure_config(it, spatial=spatial, timer=timer, load=load)

    items = [Item(f"{c.guideline} {c.name}") for c in CONFIGS
             if c.guideline in guidelines and c is not _base(c.guideline)]
    run_id, resumed = open_run(store, KIND, config, machine, resume=resume,
                               name=f"S={spatial} ({'paper size' if spatial == 56 else f'{spatial / 56:.2g}x the paper'})")
    outcome = run_items(store, run_id, items, measure, kind="config", progress=progress, label="shufflenet-v2",
                        resumed=resumed, retime=retime)
    result = shufflenet_result(store, run_id, outcome=outcome)
    for g in result.guidelines:
        store.put(run_id, g["guideline"], "guideline", g, on_conflict="replace")
    measured = not all(r["speed"] is None or r["verdict"] == "(reference)" for r in result.rows)
    return close_run(store, run_id, result, measured=measured, nothing="the shufflenet-v2 study measured nothing")
