"""The fleet's two figures: how a counting-and-prediction study scales with Ray workers,
and how fast the results store takes writes from many workers at once.

1. Wall time of a 24-model counting-and-prediction zoo study (``--no-time``: count and
   predict, nothing timed) on a local Ray cluster with 1 and with 2 worker nodes (each
   node: 1 CPU, ``flopgap_bench: 1``), each on a fresh cluster and a fresh store; the
   speed-up is the ratio. Worker processes start (and import torch) inside the timed
   span, as in a real run; the cluster's own start is not timed.
2. Write throughput of the store under 8 concurrent writer processes, each claiming and
   completing items the way study workers do (a claim, then result + claim closed: two
   transactions per item), on PostgreSQL (a pgserver server) and SQLite (WAL).

Predictions use a synthetic quick machine profile in a temporary cache, so the figures
time the study's items, not the one-off profile measurement (``--real-profile`` uses this
machine's cached profile instead). Prints the figures and saves them with the machine's
metadata through ``benchmarks/_results.py`` (``benchmarks/results/fleet.json`` and a dated
copy in ``benchmarks/results/history/``). Scaling needs a machine with at least two idle
cores: on a busy one the second worker has nothing to run on.

    python benchmarks/fleet.py                 # both parts
    python benchmarks/fleet.py --items 100     # fewer store writes per writer
    python benchmarks/fleet.py --skip-study    # only the store
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
MODELS = (
    [f"seed:{m}" for m in ("ex1-small", "ex1-large", "ex2-deep", "ex2-wide", "ex3-float", "ex3-int8-as-written",
                           "ex3-int8")]
    + [f"zoo:{m}" for m in ("bert-tiny", "bert-mini", "bert-small", "bert-medium", "bert-base", "gpt-tiny",
                            "gpt-mini", "gpt-small")]
    + [f"torchvision:{m}" for m in ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                                    "squeezenet1_0", "squeezenet1_1", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
                                    "mnasnet0_5")]
)
assert len(MODELS) == 24
WRITERS = 8


def _postgres(folder: Path):
    """(server, url maker) of a pgserver PostgreSQL server, or (None, None) with the reason printed."""
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            server = pgserver.get_server(str(folder), cleanup_mode="stop")
    except Exception as e:  # noqa: BLE001  (any reason the server cannot start is reported, the rest runs)
        print(f"PostgreSQL unavailable ({type(e).__name__}: {e}); its figures are skipped", flush=True)
        return None, None

    def new_url(name: str) -> str:
        server.psql(f"CREATE DATABASE {name};")
        return server.get_uri(name).replace("postgresql://", "postgresql+psycopg://", 1)

    return server, new_url


def _synthetic_profiles() -> None:
    from flopgap.machine import MachineProfile, fingerprint

    for threads in range(1, (os.cpu_count() or 1) + 1):
        p = MachineProfile.synthetic(quick=True)
        p.fingerprint = {**fingerprint(), "threads": threads}
        p.save()


def study_wall(workers: int, url: str) -> dict:
    """Run the 24-model counting-and-prediction study on a fresh cluster of ``workers``."""
    import ray
    from ray.cluster_utils import Cluster

    from flopgap.store import Store
    from flopgap.study import RayExecutor, run_zoo

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(workers):
        cluster.add_node(num_cpus=1, resources={"flopgap_bench": 1})
    cluster.wait_for_nodes()
    try:
        store = Store(url)
        executor = RayExecutor(cluster.address)
        t0 = time.perf_counter()
        result = run_zoo(store=store, models=list(MODELS), timed=False, quick_profile=True, executor=executor,
                         n_boot=200)
        wall = time.perf_counter() - t0
        per_node: dict[str, int] = {}
        for c in store.claims(result.run.id):
            per_node[c["node"]] = per_node.get(c["node"], 0) + 1
        store.close()
        return {"workers": workers, "wall_s": wall, "models": len(result.rows), "status": result.run.status,
                "items_per_node": sorted(per_node.values())}
    finally:
        ray.shutdown()
        cluster.shutdown()


def _writer(url: str, run_id: int, who: int, items: int, ready, go, out) -> None:
    from flopgap._workers import worker_id
    from flopgap.store import Store

    s, me = Store(url), worker_id()
    payload = {"median": 1e-3, "ci_low": 0.99e-3, "ci_high": 1.01e-3, "count": {"flops": 1e9, "params": 1e7},
               "pad": "x" * 500}
    ready.put(who)
    go.wait()
    t0 = time.perf_counter()
    for i in range(items):
        model = f"w{who}-m{i}"
        if s.claim(run_id, model, "model", "b1", "", owner=me, invocation="bench", lease_s=60).status == "claimed":
            s.complete(run_id, model, "model", payload, "b1", "", owner=me, machine="bench")
    out.put((who, t0, time.perf_counter()))
    s.close()


def store_throughput(url: str, items: int) -> dict:
    """Items (claim + result) per second with ``WRITERS`` processes writing at once."""
    from flopgap.store import Store

    s = Store(url)
    run_id = s.start_run("bench", {"writers": WRITERS, "items": items}, {"cpu_model": "bench"})
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_writer, args=(url, run_id, w, items, ready, go, out)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for _ in procs:  # every writer has opened the store: start them together
        ready.get(timeout=300)
    go.set()
    spans = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    stored = len(s.measurements(run_id))
    s.close()
    wall = max(t1 for _, _, t1 in spans) - min(t0 for _, t0, _ in spans)
    return {"writers": WRITERS, "items_per_writer": items, "stored": stored, "wall_s": wall,
            "items_per_s": stored / wall, "transactions_per_s": 2 * stored / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200, help="items each of the 8 writers stores (default 200)")
    ap.add_argument("--skip-study", action="store_true", help="only the store's write throughput")
    ap.add_argument("--skip-store", action="store_true", help="only the study's scaling")
    ap.add_argument("--real-profile", action="store_true", help="predict with this machine's cached quick profile")
    ap.add_argument("--no-save", action="store_true", help="print the figures only (a smoke run)")
    args = ap.parse_args()

    from flopgap.timing import environment

    tmp = Path(tempfile.mkdtemp(prefix="flopgap-fleet-bench-"))
    if not args.real_profile:
        os.environ["FLOPGAP_CACHE_DIR"] = str(tmp / "cache")  # inherited by the Ray nodes started below
        _synthetic_profiles()
    env = environment()
    print(f"machine: {env['cpu_model']}, {env['logical_cores']} logical cores, torch {env['torch']}, "
          f"load average {env.get('load_average')}", flush=True)
    server, new_url = _postgres(tmp / "pg")
    result: dict = {"profile": "real quick" if args.real_profile else "synthetic quick", "models": list(MODELS)}
    if not args.skip_study:
        runs = []
        for workers in (1, 2):
            url = new_url(f"study{workers}") if new_url else f"sqlite:///{tmp / f'study{workers}.db'}"
            r = study_wall(workers, url)
            runs.append(r)
            print(f"24-model counting-and-prediction study, {workers} worker node(s): {r['wall_s']:.1f} s wall "
                  f"({r['models']} models stored, items per node {r['items_per_node']})", flush=True)
        result["study"] = {"runs": runs, "speedup": runs[0]["wall_s"] / runs[1]["wall_s"],
                           "store": "postgresql" if new_url else "sqlite"}
        print(f"speed-up with 2 workers: {result['study']['speedup']:.2f}x", flush=True)
    if not args.skip_store:
        result["store"] = {}
        backends = [("sqlite", f"sqlite:///{tmp / 'writes.db'}")]
        if new_url:
            backends.insert(0, ("postgresql", new_url("writes")))
        for name, url in backends:
            r = store_throughput(url, args.items)
            result["store"][name] = r
            print(f"store writes, {name}, {WRITERS} concurrent writers: {r['items_per_s']:.0f} items/s "
                  f"({r['transactions_per_s']:.0f} transactions/s; {r['stored']} items in {r['wall_s']:.2f} s)",
                  flush=True)
    result["load_average_end"] = list(os.getloadavg())
    if not args.no_save:
        from _results import save

        print(f"wrote {save('fleet', result, environment=env)}")
    if server is not None:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
