"""One zoo on several machines, from fake rows and fake stored runs: swaps, inversions on
one machine only, rank changes, the best count per machine, disturbed measurements left
out, the seed's verdicts per machine; executors and concurrent resumers of one run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from flopgap.errors import UsageError
from flopgap.store import Store
from flopgap.study import NO_RETIME, LocalExecutor, compare_machines, machines_from_runs, run_seed, run_zoo
from flopgap.study._runner import Item, run_items
from flopgap.study.fleet import MachineRows, disturbed_reason
from flopgap.timing import TimerOptions

MS = 1e-3


def row(label, flops, median, *, spread=0.02, disturbed=""):
    return {"label": label, "batch": 1, "params": flops / 2, "flops": flops, "bytes": flops * 4, "ops": 3,
            "prediction": median * 1.1, "median": median, "ci_low": median * (1 - spread),
            "ci_high": median * (1 + spread), "disturbed": disturbed}


# X: A < B < C by latency. Y: B < A < C (A and B trade places); D is disturbed on X.
X = MachineRows("x", 1, rows=(row("A", 1e6, 1.0 * MS), row("B", 2e6, 2.0 * MS), row("C", 3e6, 3.0 * MS),
                              row("D", 4e6, 0.5 * MS, disturbed="load 5.2 on 2 cores")))
Y = MachineRows("y", 2, rows=(row("A", 1e6, 3.0 * MS), row("B", 2e6, 1.5 * MS), row("C", 3e6, 4.0 * MS),
                              row("D", 4e6, 6.0 * MS)))


def test_swaps_rank_changes_and_inversions_on_one_machine_only():
    cmp = compare_machines([X, Y], n_boot=100)
    b = cmp.batches[1]
    (p,) = b["pairs"]
    assert (p["a"], p["b"], p["common"], p["timed_on_both"]) == ("x", "y", 3, 3)  # D left out: disturbed on x
    # A is 2x faster than B on x (1.0 vs 2.0 ms), B 2x faster than A on y (1.5 vs 3.0 ms)
    assert p["swaps"] == [{"faster_on_a": "A", "faster_on_b": "B", "ratio_a": pytest.approx(2.0),
                           "ratio_b": pytest.approx(2.0)}]
    assert [(m["model"], m["rank_a"], m["rank_b"], m["shift"]) for m in p["moves"]] == [("A", 1, 2, 1),
                                                                                          ("B", 2, 1, -1)]
    # on y, A has half B's FLOPs yet is slower beyond both CIs: an inversion that x does not have
    assert p["inversions_only_a"] == []
    (inv,) = p["inversions_only_b"]
    assert (inv["fewer"], inv["more"], inv["count_ratio"], inv["slowdown"]) == ("A", "B", 2.0, pytest.approx(2.0))
    assert cmp.excluded == [{"machine": "x", "model": "D", "batch": 1, "reason": "load 5.2 on 2 cores"}]
    assert b["machines"]["x"]["n"] == 3 and b["machines"]["y"]["n"] == 4
    # FLOPs rank x's three clean latencies perfectly: FLOPs (and params, bytes: same order) rank best there
    best = b["machines"]["x"]["best"]
    assert best["metric"] in ("params", "flops", "bytes") and best["rho"] == pytest.approx(1.0)
    latency = {r["model"]: r["latency"] for r in b["table"]}
    assert latency["D"]["x"]["disturbed"] and not latency["D"]["y"]["disturbed"]   # shown, marked, left out
    assert latency["D"]["y"]["value"] == pytest.approx(6.0 * MS)


def test_predicted_only_machines_are_marked_and_never_self_correlated():
    untimed = MachineRows("p", 3, rows=tuple({**r, "median": None, "ci_low": None, "ci_high": None,
                                              "disturbed": ""} for r in Y.rows))
    cmp = compare_machines([X, untimed], n_boot=100)
    m = cmp.batches[1]["machines"]["p"]
    assert m["latency"] == "predicted" and "prediction" not in m["correlations"]
    assert any("nothing was timed" in n for n in cmp.notes)
    (p,) = cmp.batches[1]["pairs"]
    assert p["timed_on_both"] == 0 and p["swaps"] == [] and p["common"] == 3


def test_disturbed_reason_reads_every_place_the_timing_stage_puts_it():
    assert disturbed_reason({"median": 1}) == ""
    assert disturbed_reason({"disturbed": True, "attempts": 3}) == "machine disturbed while timing (3 attempts)"
    assert disturbed_reason({"time": {"disturbed": True, "warnings": ["heavy tail", "machine disturbed: 3 runnable"]}}
                            ) == "machine disturbed: 3 runnable"
    assert disturbed_reason({"a": {"disturbed": False}, "b": {"disturbed": True}}) == "machine disturbed while timing"


# ------------------------------------------------------------------ from stored runs
def _zoo(store, cpu, lat, *, max_time=1.0, disturbed=()):
    def measure(it):
        median = lat[it.model]
        payload = {"batch": 1, "count": {"params": 1, "flops": {"A": 1e6, "B": 2e6, "C": 3e6}[it.model],
                                         "bytes_read": 1, "bytes_written": 1, "ops": 1},
                   "median": median, "ci_low": median * 0.98, "ci_high": median * 1.02,
                   "prediction": {"latency_s": median}, "disturbed": it.model in disturbed}
        return payload
    return run_zoo(store=store, models=["A", "B", "C"], machine={"cpu_model": cpu}, measure=measure, n_boot=50,
                   timer=TimerOptions(max_time=max_time), retime=NO_RETIME).run.id


def test_machines_from_single_machine_runs_and_refusals(tmp_path):
    s = Store(str(tmp_path / "m.db"))
    a = _zoo(s, "cpu one", {"A": 1 * MS, "B": 2 * MS, "C": 3 * MS})
    b = _zoo(s, "cpu two", {"A": 3 * MS, "B": 1.5 * MS, "C": 4 * MS}, disturbed=("C",))
    other = _zoo(s, "cpu two", {"A": 3 * MS, "B": 1.5 * MS, "C": 4 * MS}, max_time=2.0)
    ms = machines_from_runs(s, [a, b])
    assert [m.name.split(" [")[0] for m in ms] == ["cpu one", "cpu two"]
    assert [r["disturbed"] for r in ms[1].rows] == ["", "", "machine disturbed while timing"]
    cmp = compare_machines(ms, n_boot=50)
    assert cmp.batches[1]["pairs"][0]["swap_count"] == 1 and len(cmp.excluded) == 1
    with pytest.raises(UsageError, match="differ in max_time"):
        machines_from_runs(s, [a, other])
    assert len(machines_from_runs(s, [a, other], allow_different_settings=True)) == 2
    with pytest.raises(UsageError, match="is one machine"):
        machines_from_runs(s, [a])


RATIOS = {"seed:ex1-small|seed:ex1-large": (0.25, 0.24, 0.26), "seed:ex2-deep|seed:ex2-wide": (3.2, 3.0, 3.4),
          "seed:ex3-int8-as-written|seed:ex3-float": (1.0, 0.99, 1.01), "seed:ex3-int8|seed:ex3-float": (1.1, 0.8, 1.4)}


def _seed(store, cpu, *, ex2=(3.2, 3.0, 3.4), disturbed_pair=""):
    def model(it):
        return {"spec": it.spec, "count": {"params": 1, "flops": 100, "bytes_read": 1, "bytes_written": 1, "ops": 1},
                "quantized": it.spec == "seed:ex3-int8", "findings": []}

    def pair(it):
        r, lo, hi = ex2 if it.model == "seed:ex2-deep|seed:ex2-wide" else RATIOS[it.model]
        side = {"median": 1e-4, "ci_low": 0.99e-4, "ci_high": 1.01e-4, "disturbed": it.model == disturbed_pair}
        return {"ratio": r, "ci_low": lo, "ci_high": hi, "a": side, "b": dict(side, disturbed=False),
                "disturbed": it.model == disturbed_pair}
    return run_seed(store=store, machine={"cpu_model": cpu}, measure_model=model, measure_pair=pair,
                    retime=NO_RETIME).run.id


def test_seed_claims_get_a_verdict_per_machine(tmp_path):
    s = Store(str(tmp_path / "s.db"))
    a = _seed(s, "laptop")
    b = _seed(s, "server", ex2=(1.01, 0.99, 1.02), disturbed_pair="seed:ex1-small|seed:ex1-large")
    cmp = compare_machines(machines_from_runs(s, [a, b]))
    claims = {c["id"]: c for c in cmp.claims}
    ex2 = claims["ex2"]["verdicts"]
    assert [v["verdict"] for v in ex2.values()] == ["holds", "does not hold"] and claims["ex2"]["differs"]
    ex1 = list(claims["ex1"]["verdicts"].values())
    assert ex1[0]["verdict"] == "does not hold"     # 0.25x: the small model is faster, not slower
    assert ex1[1] == {"verdict": "inconclusive: machine disturbed", "ratio": 0.25, "ci_low": 0.24, "ci_high": 0.26,
                      "disturbed": "machine disturbed while timing"}
    assert not claims["ex3-as-written"]["differs"]


@pytest.mark.slow
def test_study_machines_cli(flopgap_cmd, tmp_path):
    db = tmp_path / "c.db"
    s = Store(str(db))
    a = _zoo(s, "cpu one", {"A": 1 * MS, "B": 2 * MS, "C": 3 * MS})
    b = _zoo(s, "cpu two", {"A": 3 * MS, "B": 1.5 * MS, "C": 4 * MS})
    s.close()
    p = subprocess.run([*flopgap_cmd, "study", "machines", str(a), str(b), "--db", str(db), "--json",
                        str(tmp_path / "m.json"), "--html", str(tmp_path / "m.html")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "swaps between" in p.stdout and "inversions on cpu two" in p.stdout
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["schema"] == "flopgap.study.machines/1" and data["batches"]["1"]["pairs"][0]["swap_count"] == 1
    assert "data:image/png;base64," in (tmp_path / "m.html").read_text()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    db = tmp_path_factory.mktemp("runs") / "c.db"
    s = Store(str(db))
    a = _zoo(s, "cpu one", {"A": 1 * MS, "B": 2 * MS, "C": 3 * MS})
    seed = _seed(s, "laptop")
    s.close()
    return db, a, seed


@pytest.mark.parametrize("args, message", [
    (["study", "machines", "RUN_A"], "is one machine"),
    (["study", "machines", "RUN_A", "SEED"], "mix zoo and seed"),
    (["study", "machines", "9", "RUN_A"], "no run 9"),
    (["study", "zoo", "seed", "--machines", "a,b"], "--machines needs --executor ray"),
    (["study", "zoo", "seed", "--address", "auto"], "--address needs --executor ray"),
    (["study", "seed", "--executor", "slurm"], "unknown --executor 'slurm'"),
    (["study", "zoo", "seed", "--executor", "ray", "--machines", "a b"], "bad --machines label 'a b'"),
    (["study", "zoo", "seed", "--executor", "ray", "--machines", "a,a"], "names a label twice"),
    (["study", "zoo", "seed", "--executor", "ray", "--machines", ","], "--machines is empty"),
    (["study", "zoo", "seed", "--lease", "0.5"], "--lease must be at least 1 second"),
])
def test_fleet_usage_errors_are_one_line_exit_2(two_runs, capsys, args, message):
    from flopgap.cli import main

    db, a, seed = two_runs
    args = [str(a) if x == "RUN_A" else str(seed) if x == "SEED" else x for x in args]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--db", str(db)])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_counting_and_prediction_only_measures_nothing(tmp_path):
    from flopgap.machine import MachineProfile
    from flopgap.study.zoo import measure_zoo_model

    p = measure_zoo_model(Item("seed:ex2-deep", "b1", "seed:ex2-deep", 1), timer=TimerOptions(),
                          profile=MachineProfile.synthetic(), timed=False)
    assert p["timed"] is False and "median" not in p and "time" not in p
    assert p["count"]["flops"] == 10 * (2 * 100 * 100 + 100)  # ten Linear(100,100): 2 per MAC + bias
    assert p["prediction"]["latency_s"] > 0


# ------------------------------------------------------------------ executors and claims
def test_local_executor_waits_for_an_item_another_worker_holds(tmp_path):
    s = Store(str(tmp_path / "w.db"))
    rid = s.start_run("zoo", {}, {"cpu_model": "fake"})
    # another machine holds "b" for 0.3 s more and never finishes it (its node died)
    s.claim(rid, "b", "model", "", "", owner="elsewhere/0:1:x", invocation="other", lease_s=0.3)
    measured = []
    sleeps = []

    def measure(it):
        measured.append(it.model)
        return {"ok": it.model}

    ex = LocalExecutor(machine={"cpu_model": "fake"}, sleep=lambda t: (sleeps.append(t), time.sleep(t)))
    out = run_items(s, rid, [Item("a"), Item("b"), Item("c")], measure, kind="model", executor=ex, lease_s=5)
    assert measured == ["a", "c", "b"] and out.measured == ["a", "c", "b"]
    assert sleeps and sum(sleeps) <= 1.0           # it waited for the lease, not for its own 5 s lease
    assert {c["model"]: c["attempts"] for c in s.claims(rid)} == {"a": 1, "b": 2, "c": 1}


CONCURRENT = textwrap.dedent("""
    import os, sys, time
    from flopgap.store import Store
    from flopgap.study import run_zoo
    db, log, who = sys.argv[1], sys.argv[2], sys.argv[3]
    open(log + "." + who, "w").close()
    def measure(item):
        # a barrier: nothing is measured before both processes run, however loaded the machine
        deadline = time.time() + 120
        while not all(os.path.exists(log + "." + w) for w in "pq") and time.time() < deadline:
            time.sleep(0.05)
        with open(log, "a") as f:
            f.write(who + " " + item.model + "\\n")
        time.sleep(0.3)
        return {"batch": 1, "count": {"params": 1, "flops": len(item.model), "bytes_read": 1, "bytes_written": 1,
                "ops": 1}, "median": 1e-3, "ci_low": 0.9e-3, "ci_high": 1.1e-3, "prediction": {"latency_s": 1e-3}}
    r = run_zoo(store=Store(db), models=[f"m{i}" for i in range(8)], machine={"cpu_model": "fake"},
                measure=measure, resume=True, n_boot=20, lease_s=2)
    print(r.run.id, r.run.status, len(r.rows), len(r.outcome.measured), len(r.outcome.elsewhere))
""")


@pytest.mark.slow
def test_two_concurrent_resumes_of_one_run_measure_each_item_once(tmp_path):
    # two `--resume` of one interrupted study, at once: each item is measured by one of them only
    db, log = str(tmp_path / "r.db"), tmp_path / "calls.log"
    s = Store(db)
    # an interrupted run with nothing stored yet, as Ctrl-C leaves it
    rid = s.start_run("zoo", {"zoo": "custom", "models": [f"m{i}" for i in range(8)], "batches": [1], "max_time": 2.0,
                              "precision": 0.02, "threads": None, "explain": True, "profile": "full"},
                      {"cpu_model": "fake"})
    s.set_status(rid, "interrupted")
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, db, str(log), who], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for who in ("p", "q")]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(out.split())
    calls = log.read_text().split("\n")[:-1]
    assert sorted(c.split()[1] for c in calls) == [f"m{i}" for i in range(8)]   # each measured exactly once
    for run_id, status, rows, measured, elsewhere in outs:
        assert (int(run_id), status, int(rows)) == (rid, "finished", 8)           # both end with all 8
        assert int(measured) + int(elsewhere) == 8


class FakeRay:
    """Just what RayExecutor reads of a cluster: its nodes."""

    def __init__(self, *nodes):
        self._nodes = [{"NodeID": f"{i:02d}" * 8, "Alive": alive, "NodeManagerHostname": f"host{i}",
                        "Resources": res} for i, (alive, res) in enumerate(nodes)]

    def nodes(self):
        return self._nodes


def test_ray_executor_checks_the_clusters_resources_before_anything_runs():
    from flopgap.study import RayExecutor

    ex = RayExecutor("auto", ["cpu-small", "gpu-h200"])
    assert ex.targets() == ("cpu-small", "gpu-h200")
    # the run's machine record names the fleet, not the driver: any driver can resume it
    assert ex.machine()["fingerprint"] == RayExecutor("other:6379", ["cpu-small", "gpu-h200"]).machine()["fingerprint"]
    assert ex.machine()["fingerprint"] != RayExecutor("auto", ["cpu-small"]).machine()["fingerprint"]
    small = {"CPU": 8, "flopgap_bench": 1, "flopgap_machine_cpu-small": 1}
    gpu = {"CPU": 32, "GPU": 1, "flopgap_bench": 1, "flopgap_machine_gpu-h200": 1}
    by_target = ex._check_cluster(FakeRay((True, small), (False, gpu), (True, gpu)))
    assert {t: [n["NodeManagerHostname"] for n in ns] for t, ns in by_target.items()} == {
        "cpu-small": ["host0"], "gpu-h200": ["host2"]}                       # dead nodes do not count
    with pytest.raises(UsageError, match=r"""offers flopgap_bench, flopgap_machine_gpu-h200 \(machine kind gpu-h200\): """
                                         r"""start measuring nodes with ray start --resources '\{"flopgap_bench": 1, """
                                         r""""flopgap_machine_gpu-h200": 1\}'"""):
        ex._check_cluster(FakeRay((True, small), (False, gpu)))
    with pytest.raises(UsageError, match="offers flopgap_bench=4; a measuring node offers exactly 1"):
        ex._check_cluster(FakeRay((True, {**small, "flopgap_bench": 4}), (True, gpu)))


def test_a_kind_of_machine_can_time_on_its_own_device():
    from flopgap.study import RayExecutor
    from flopgap.study._ray import _gpus
    from flopgap.study.executor import Job
    from flopgap.study.zoo import ProfilePrepare, ZooMeasure

    ex = RayExecutor("auto", ["cpu-small", "gpu-h200:cuda", "big:cpu"])
    assert ex.targets() == ("cpu-small", "gpu-h200", "big") and ex.devices() == {"gpu-h200": "cuda", "big": "cpu"}
    job = Job(1, "model", ZooMeasure(TimerOptions(max_time=0.5)), prepare=ProfilePrepare(TimerOptions(), quick=True),
              devices=(("gpu-h200", "cuda"),))
    assert job.measure_for("gpu-h200") == ZooMeasure(TimerOptions(max_time=0.5, device="cuda"))
    assert job.measure_for("cpu-small") is job.measure
    assert job.prepare_for("gpu-h200") == ProfilePrepare(TimerOptions(device="cuda"), quick=True)
    assert (_gpus("cuda:1"), _gpus("cpu"), _gpus(None)) == (1, 0, 0)   # a CUDA item reserves a GPU of its node
    with pytest.raises(UsageError, match="the device of --machines gpu"):
        RayExecutor("auto", ["gpu:tpu"])
    with pytest.raises(UsageError, match="the seed study times on the CPU"):
        run_seed(store=None, executor=ex)


def test_an_explicit_cpu_device_times_like_the_default():
    from flopgap.machine import MachineProfile
    from flopgap.study.zoo import measure_zoo_model

    p = measure_zoo_model(Item("seed:ex3-float", "b1", "seed:ex3-float", 1), profile=MachineProfile.synthetic(),
                          timer=TimerOptions(max_time=0.1, device="cpu"), with_explain=False)
    assert p["median"] > 0 and p["time"]["spec"]["device"] == "cpu"


class TwoKinds(LocalExecutor):
    """Both kinds of machine measured here, in turn: the multi-machine path without a cluster."""

    def targets(self):
        return ("alpha", "beta")


def test_a_multi_machine_run_end_to_end_without_a_cluster(tmp_path, capsys):
    from flopgap.cli import main
    from flopgap.report.study_view import sections_for
    from flopgap.study import FleetResult, result_for_run

    s = Store(str(tmp_path / "two.db"))
    seen = []

    def measure(it):
        seen.append(it.model)
        lat = {"A": 1 * MS, "B": 2 * MS, "C": 3 * MS}[it.model]
        return {"batch": 1, "count": {"params": 1, "flops": {"A": 1e6, "B": 2e6, "C": 3e6}[it.model],
                                      "bytes_read": 1, "bytes_written": 1, "ops": 1},
                "median": lat, "ci_low": lat * 0.98, "ci_high": lat * 1.02, "prediction": {"latency_s": lat}}

    r = run_zoo(store=s, models=["A", "B", "C"], machine={"cpu_model": "fake"}, measure=measure, n_boot=50,
                executor=TwoKinds(machine={"cpu_model": "fake"}), retime=NO_RETIME)
    assert isinstance(r, FleetResult) and r.run.status == "finished" and sorted(r.results) == ["alpha", "beta"]
    assert seen == ["A", "B", "C"] * 2 and r.results["beta"].run.status == "finished"
    assert [(m.model, m.target) for m in s.measurements(r.run.id, kind="model")] == [
        (x, t) for t in ("alpha", "beta") for x in "ABC"]
    assert isinstance(result_for_run(s, r.run.id), FleetResult)
    titles = [sec.title for sec in sections_for(r, plots=False)]
    assert "Machines" in titles and "Batch 1 across machines" in titles
    db = str(tmp_path / "two.db")
    with pytest.raises(SystemExit) as exc:
        main(["compare", "1", "1", "--db", db])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "measured 2 kinds of machine (alpha, beta): compare one with 1@alpha" in err
    with pytest.raises(SystemExit) as exc:
        main(["compare", "1@alpha", "1@beta", "--db", db])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out.count("no change") >= 3, out


def test_a_machine_whose_every_timing_was_disturbed_is_timed_and_empty_not_predicted():
    busy = MachineRows("busy", 4, rows=tuple({**r, "disturbed": "machine disturbed while timing"} for r in Y.rows))
    cmp = compare_machines([X, busy], n_boot=50)
    m = cmp.batches[1]["machines"]["busy"]
    assert (m["latency"], m["n"], m["best"]) == ("measured", 0, {"metric": None})
    assert len([e for e in cmp.excluded if e["machine"] == "busy"]) == 4
    assert all(r["latency"]["busy"]["disturbed"] for r in cmp.batches[1]["table"])
