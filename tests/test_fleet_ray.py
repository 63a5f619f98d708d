"""End to end on a local Ray cluster (a head and three worker nodes: two of kind alpha,
one of kind beta, each offering flopgap_bench: 1) with a real PostgreSQL server: a
counting-and-prediction study and a timing study through the real CLI, the cross-machine
view, and a worker node killed mid-study (every item still measured exactly once).

Each node uses a synthetic quick machine profile saved in the test cache, so nothing
here measures the machine; timings are not asserted (the machine is shared)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime

import pytest

from fleet_support import new_database, pg_server, ray_cluster  # noqa: F401  (fixtures)
from flopgap.store import Store

pytestmark = pytest.mark.slow

SEED = ["seed:ex1-small", "seed:ex1-large", "seed:ex2-deep", "seed:ex2-wide", "seed:ex3-float",
        "seed:ex3-int8-as-written", "seed:ex3-int8"]


def _synthetic_profiles() -> None:
    """Quick synthetic profiles for every thread count a node may use here."""
    from flopgap.machine import MachineProfile, fingerprint

    for threads in range(1, (os.cpu_count() or 1) + 1):
        p = MachineProfile.synthetic(quick=True)
        p.fingerprint = {**fingerprint(), "threads": threads}
        p.save()


@pytest.fixture(scope="module")
def cluster():
    _synthetic_profiles()
    node = {"num_cpus": 1, "resources": {"flopgap_bench": 1}}
    c, nodes = ray_cluster([
        {**node, "resources": {**node["resources"], "flopgap_machine_alpha": 1}},
        {**node, "resources": {**node["resources"], "flopgap_machine_alpha": 1}},
        {**node, "resources": {**node["resources"], "flopgap_machine_beta": 1}},
    ])
    yield c, nodes
    c.shutdown()


def flopgap(cmd, *args, timeout=600):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def test_counting_and_prediction_study_on_two_kinds_of_machine(cluster, pg_server, flopgap_cmd):
    c, _ = cluster
    url = new_database(pg_server)
    t0 = time.perf_counter()
    p = flopgap(flopgap_cmd, "study", "zoo", "seed", "--no-time", "--quick-profile", "--executor", "ray",
                "--address", c.address, "--machines", "alpha,beta", "--db", url, "--json", "-")
    assert p.returncode == 0, p.stderr
    wall = time.perf_counter() - t0
    data = json.loads(p.stdout)
    assert data["schema"] == "flopgap.study.fleet/1" and data["run"]["status"] == "finished"
    assert set(data["results"]) == {"alpha", "beta"}
    assert [m["name"] for m in data["comparison"]["machines"]] == ["alpha", "beta"]
    assert "node " in p.stderr  # one line per node that took part
    s = Store(url)
    (run,) = s.runs()
    assert run.config["machines"] == ["alpha", "beta"] and run.config["time"] is False
    rows = s.measurements(run.id, kind="model")
    assert sorted((m.model, m.target) for m in rows) == sorted((x, t) for x in SEED for t in ("alpha", "beta"))
    assert all(m.payload["timed"] is False and m.payload["prediction"]["latency_s"] > 0 for m in rows)
    assert {m.machine_fingerprint for m in rows} <= set(s.machines())
    claims = s.claims(run.id)
    assert len(claims) == 14 and {c["state"] for c in claims} == {"done"} and {c["attempts"] for c in claims} == {1}
    # exact counts, whatever node did them: ex2-deep is ten Linear(100,100) layers
    deep = next(m for m in rows if m.model == "seed:ex2-deep")
    assert deep.payload["count"]["flops"] == 10 * (2 * 100 * 100 + 100)  # 2 FLOPs per MAC + bias, per layer
    s.close()

    m = flopgap(flopgap_cmd, "study", "machines", str(run.id), "--db", url)
    assert m.returncode == 0 and m.stderr == "", m.stderr
    assert "ranks latency best" in m.stdout and "alpha vs beta" in m.stdout and "pred." in m.stdout
    print(f"counting-and-prediction study, 14 items on 3 nodes: {wall:.1f} s wall")


def _overlaps(intervals) -> bool:
    intervals = sorted(intervals)
    return any(b[0] < a[1] for a, b in zip(intervals, intervals[1:]))


def test_timing_study_one_item_per_node_at_a_time(cluster, pg_server, flopgap_cmd, tmp_path):
    c, _ = cluster
    url = new_database(pg_server)
    models = "seed:ex2-deep,seed:ex2-wide,seed:ex3-float"
    p = flopgap(flopgap_cmd, "study", "zoo", "--models", models, "--max-time", "0.3", "--no-explain",
                "--quick-profile", "--executor", "ray", "--address", c.address, "--machines", "alpha,beta",
                "--db", url, "--html", str(tmp_path / "fleet.html"))
    assert p.returncode == 0, p.stderr
    assert "Batch 1 across machines" in p.stdout and "swap" in p.stdout
    s = Store(url)
    (run,) = s.runs()
    rows = s.measurements(run.id, kind="model")
    assert len(rows) == 6
    for m in rows:
        t = m.payload["time"]
        assert m.payload["median"] > 0 and t["samples"] and t["spec"]["threads"] >= 1
    # no two timed items overlapped on one node
    per_node: dict = {}
    for cl in s.claims(run.id):
        per_node.setdefault(cl["node"], []).append((datetime.fromisoformat(cl["claimed"]),
                                                    datetime.fromisoformat(cl["finished"])))
    assert len(per_node) >= 2 and not any(_overlaps(v) for v in per_node.values())
    text = (tmp_path / "fleet.html").read_text()
    assert "latency per machine" in text and "data:image/png;base64," in text
    r = flopgap(flopgap_cmd, "report", str(run.id), "--db", url, "--out", str(tmp_path / "again.html"))
    assert r.returncode == 0, r.stderr
    s.close()


def test_a_node_killed_mid_study_loses_nothing_and_duplicates_nothing(cluster, pg_server, flopgap_cmd):
    c, nodes = cluster
    victim = nodes[0]  # an alpha node; the other alpha node takes over its item
    url = new_database(pg_server)
    models = ",".join(SEED[:5])
    driver = subprocess.Popen([*flopgap_cmd, "study", "zoo", "--models", models, "--max-time", "1.5",
                               "--precision", "0.0001", "--no-explain", "--quick-profile", "--executor", "ray",
                               "--address", c.address, "--machines", "alpha", "--lease", "5", "--db", url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    s = Store(url)
    victim_tag = victim.node_id[:8]
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline and driver.poll() is None:
        runs = s.runs()
        for cl in (s.claims(runs[0].id) if runs else []):
            if cl["state"] == "claimed" and cl["node"].endswith(victim_tag):
                killed = cl
                break
        else:
            time.sleep(0.1)
    assert killed is not None, "the victim node never claimed an item"
    os.kill(int(killed["owner"].split(":")[1]), signal.SIGKILL)   # the measuring worker, mid-item ...
    c.remove_node(victim, allow_graceful=False)                   # ... and its whole node
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    (run,) = s.runs()
    assert run.status == "finished"
    rows = s.measurements(run.id, kind="model")
    assert sorted(m.model for m in rows) == sorted(SEED[:5])          # every item once, none twice
    assert s.measurements(run.id, kind="error") == []
    claims = {cl["model"]: cl for cl in s.claims(run.id)}
    again = claims[killed["model"]]
    assert again["attempts"] == 2 and again["state"] == "done" and not again["node"].endswith(victim_tag)
    assert all(cl["attempts"] == 1 for m, cl in claims.items() if m != killed["model"])
    s.close()
