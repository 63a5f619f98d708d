"""Run a study's items on the nodes of a Ray cluster (``flopgap study ... --executor ray``).

Scheduling, with custom node resources (Ray packs tasks by CPU count otherwise):

- a measuring node offers ``flopgap_bench: 1``; a kind of machine ``L`` (``--machines
  L,...``) is a node resource ``flopgap_machine_L``;
- a timed item asks for ``flopgap_bench: 1`` and (to leave no CPU to other Ray work)
  as many CPUs as the smallest node of its kind has: one timed item per node at a time,
  alone among flopgap's tasks there;
- an untimed item (counting and prediction) asks for one CPU and ``flopgap_bench:
  0.001``: many run on a node at once, never beside a timed one;
- the label resource is asked for at 0.001: it selects the nodes, it never limits how
  many tasks a node runs.

Before its first item each node runs the job's ``prepare`` alone (``flopgap_bench: 1``,
pinned to the node): it opens the store (a SQLite file other hosts cannot see is refused
there), checks that its flopgap matches the driver's, sets torch's threads (``--threads``,
else torch's own default on that node: Ray caps ``OMP_NUM_THREADS`` in its workers),
measures or loads its machine profile and records its machine metadata.

Each item runs :func:`flopgap.study.executor.work_item` on a node, which claims it in
the store first. A node that dies takes its worker's lease with it: Ray retries the task
on another node of the same kind (``max_retries``); that node finds the lease still live,
the driver asks again every ``lease/4`` s (at most 5 s) and resubmits the item once the
lease has run out. If every node of a kind is gone the driver stops with an error
(results stored so far are kept; ``--resume`` continues the run).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from flopgap.errors import FlopgapError, UsageError, one_line
from flopgap.study.executor import ItemOutcome, Job, NodeContext, default_threads, work_item

__all__ = ["RayExecutor", "BENCH_RESOURCE", "machine_resource", "check_label"]

BENCH_RESOURCE = "flopgap_bench"
_SELECT = 0.001          # of a label resource: picks nodes, never limits how many tasks run there
_SHARED = 0.001          # of the bench resource, for an untimed task: excludes timed items, not other untimed ones
_POLL_S = 0.5            # the driver's wait between looks at finished tasks
_WATCHDOG_S = 5.0        # how often the driver checks that every kind of machine still has a live node
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")


def check_label(label: str) -> str:
    """A ``--machines`` label: letters, digits, ``_.-``, at most 48 characters."""
    if not _LABEL.match(label):
        raise UsageError(f"bad --machines label {label!r}: use letters, digits, '_', '.', '-' (at most 48)")
    return label


def machine_resource(label: str) -> str:
    """The Ray node resource that marks a node as kind of machine ``label``."""
    return f"flopgap_machine_{label}"


@dataclass
class _Worker:
    store: Any
    node: NodeContext


_WORKERS: dict = {}  # in a Ray worker process: (store opener, threads) -> _Worker


def _flopgap_version() -> str:
    from flopgap.timing import flopgap_version as version

    return version()


def _worker(job: Job, target: str) -> _Worker:
    """This worker process's store and node context (once per store, threads and device)."""
    import torch

    threads = job.threads or default_threads()
    torch.set_num_threads(threads)
    device = job.device(target)
    key = (repr(job.open_store), threads, device)
    if key not in _WORKERS:
        from flopgap._workers import worker_id
        from flopgap.timing import environment

        if job.open_store is None:
            raise FlopgapError("this job does not say how to open the results store on a node")
        store = job.open_store()
        metadata = environment(device)
        fp = store.register_machine(metadata)
        _WORKERS[key] = _Worker(store, NodeContext(_node_name(), worker_id(), metadata, fp))
    return _WORKERS[key]


def _node_name() -> str:
    try:
        import ray

        return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
    except Exception:  # noqa: BLE001  (outside a Ray worker: the host alone)
        return socket.gethostname()


def prepare_node(job: Job, target: str) -> dict:
    """Run on one node, alone on it, before its first item of kind ``target``: open the
    store, set threads, prepare (machine profile of the kind's device), describe the node."""
    w = _worker(job, target)
    prepare = job.prepare_for(target)
    summary = prepare() if prepare is not None else {}
    return {"node": w.node.name, "fingerprint": w.node.fingerprint, "flopgap": _flopgap_version(),
            "torch_threads": w.node.metadata.get("torch_threads"), "cpu_model": w.node.metadata.get("cpu_model"),
            "gpu": w.node.metadata.get("gpu"), "target": target, "prepare": summary}


def run_item(job: Job, item, target: str) -> ItemOutcome:
    """Run on a node: claim, measure and store one item."""
    w = _worker(job, target)
    return work_item(job, item, target, w.store, w.node)


class RayExecutor:
    """Runs a study's items on a Ray cluster: ``address`` of a running cluster (``auto``,
    ``HOST:PORT`` or ``ray://HOST:10001``; default ``$RAY_ADDRESS``), or ``None`` for a
    fresh one-node cluster on this machine; ``machines``: the kinds of machine (labels) each item is measured on,
    each optionally with the device it times on (``gpu-h200:cuda``; default the CPU)."""

    name = "ray"

    def __init__(self, address: str | None = None, machines: Sequence[str] = (), *, max_retries: int = 3,
                 init_kwargs: dict | None = None, clock: Callable[[], float] = time.time):
        from flopgap.timing import check_device

        self.address = address or os.environ.get("RAY_ADDRESS") or None  # Ray's own convention
        specs = [m.partition(":") for m in machines]
        self._machines = tuple(check_label(label) for label, _, _ in specs)
        # the driver need not have the nodes' GPUs
        self._devices = {label: check_device(dev, what=f"the device of --machines {label}", need_cuda=False)
                         for label, sep, dev in specs if sep}
        if len(set(self._machines)) != len(self._machines):
            raise UsageError(f"--machines names a label twice: {','.join(self._machines)}")
        self._max_retries = max_retries
        self._init_kwargs = dict(init_kwargs or {})
        self._clock = clock
        self._prepared: dict[tuple, set[str]] = {}
        self._remote: dict[str, Any] = {}
        self.nodes: dict[str, dict] = {}   # node id -> what its prepare step said

    # ------------------------------------------------------------ identity
    def targets(self) -> tuple[str, ...]:
        return self._machines or ("",)

    def devices(self) -> dict[str, str]:
        """The device of each kind of machine that names one (``label:cuda``)."""
        return dict(self._devices)

    def machine(self) -> dict:
        """The run's machine record: a fleet of these kinds (its fingerprint does not depend
        on the driver or the address, so any driver can resume the run)."""
        kinds = list(self._machines) or ["any"]
        fp = hashlib.sha256(("ray:" + ",".join(kinds)).encode()).hexdigest()[:16]
        return {"executor": "ray", "machines": kinds, "fingerprint": f"fleet-{fp}",
                "address": self.address or "local", "driver_host": socket.gethostname()}

    # ------------------------------------------------------------ cluster
    def _ray(self):
        try:
            import ray
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'flopgap[fleet]'") from None
        if not ray.is_initialized():
            kwargs = {"logging_level": logging.ERROR, "log_to_driver": False, **self._init_kwargs}
            try:
                if self.address in (None, "local"):
                    if self._machines:
                        raise UsageError("--machines needs a running cluster (--address HOST:PORT): a cluster "
                                         "started here is one kind of machine")
                    ray.init(resources={BENCH_RESOURCE: 1}, include_dashboard=False, **kwargs)
                else:
                    ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UsageError(f"cannot connect to the Ray cluster at {self.address!r}: {one_line(e)}") from None
        return ray

    def _alive(self, ray, target: str) -> list[dict]:
        res = machine_resource(target) if target else None
        return [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get(BENCH_RESOURCE, 0) > 0
                and (res is None or n["Resources"].get(res, 0) > 0)]

    def _check_cluster(self, ray) -> dict[str, list[dict]]:
        by_target = {t: self._alive(ray, t) for t in self.targets()}
        for t, nodes in by_target.items():
            if not nodes:
                want = {BENCH_RESOURCE: 1, **({machine_resource(t): 1} if t else {})}
                raise UsageError(f"no live node of the Ray cluster offers {', '.join(want)}"
                                 f"{' (machine kind ' + t + ')' if t else ''}: start measuring nodes with "
                                 f"ray start --resources '{_json(want)}'")
            wrong = [n for n in nodes if n["Resources"].get(BENCH_RESOURCE) != 1]
            if wrong:
                raise UsageError(f"node {wrong[0]['NodeManagerHostname']} offers {BENCH_RESOURCE}="
                                 f"{wrong[0]['Resources'][BENCH_RESOURCE]:g}; a measuring node offers exactly 1 "
                                 "(one timed item at a time)")
        return by_target

    def _prepare(self, ray, job: Job, by_target: dict[str, list[dict]]) -> None:
        """Run ``prepare_node`` once on every live node of the job's kinds (per prepare step)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        key = (job.prepare, job.threads, repr(job.open_store), job.devices)
        done = self._prepared.setdefault(key, set())
        todo = {(n["NodeID"], t): n for t, nodes in by_target.items() for n in nodes
                if (n["NodeID"], t) not in done}
        remote = self._remote_fn(ray, prepare_node)
        refs = {remote.options(num_cpus=0, num_gpus=_gpus(job.device(t)), resources={BENCH_RESOURCE: 1},
                               max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False)
                               ).remote(job, t): (nid, t)
                for nid, t in todo}
        mine = _flopgap_version()
        for ref, (nid, t) in refs.items():
            host = todo[(nid, t)].get("NodeManagerHostname", nid[:8])
            try:
                info = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                why = one_line(e.cause if e.cause else e)
                if "sqlite" in repr(job.open_store):
                    why += " (a SQLite file is seen only by the hosts that share its folder: use --db postgresql+psycopg://...)"
                raise UsageError(f"node {host} cannot run flopgap: {why}") from None
            except ray.exceptions.RayError:  # the node died meanwhile: it gets no items
                continue
            if info["flopgap"] != mine:
                raise UsageError(f"node {host} runs flopgap {info['flopgap'] or '(source tree)'}, this driver "
                                 f"{mine or '(source tree)'}: install the same flopgap on every node")
            done.add((nid, t))
            self.nodes[nid] = {**info, "host": host}

    # ------------------------------------------------------------ run
    def run(self, job: Job, work: Sequence[tuple[Any, str]], store,
            on_outcome: Callable[[ItemOutcome], None] | None = None,
            on_start: Callable[..., None] | None = None) -> list[ItemOutcome]:
        """Run ``work`` on the cluster (many items at once: ``on_start`` is not called)."""
        if ":memory:" in repr(job.open_store) or "sqlite://'" in repr(job.open_store):
            raise UsageError("an in-memory store cannot be shared with a cluster: use --db with a file or a "
                             "PostgreSQL URL")
        ray = self._ray()
        by_target = self._check_cluster(ray)
        if not work:
            return []
        self._prepare(ray, job, by_target)
        remote = self._remote_fn(ray, run_item)
        options = {}
        for t, nodes in by_target.items():
            labels = {machine_resource(t): _SELECT} if t else {}
            gpus = _gpus(job.device(t))
            if job.timing:
                cpus = min(n["Resources"].get("CPU", 0) for n in nodes)
                options[t] = dict(num_cpus=cpus, num_gpus=gpus, resources={BENCH_RESOURCE: 1, **labels})
            else:
                options[t] = dict(num_cpus=1, num_gpus=gpus, resources={BENCH_RESOURCE: _SHARED, **labels})
        poll = max(0.05, min(job.lease_s / 4, 5.0))

        def submit(item, target):
            return remote.options(max_retries=self._max_retries, retry_exceptions=False,
                                  **options[target]).remote(job, item, target)

        inflight = {submit(it, t): (it, t) for it, t in work}
        waiting: list[tuple[float, Any, str]] = []
        out: list[ItemOutcome] = []
        last_watch = self._clock()

        def finish(o: ItemOutcome) -> None:
            out.append(o)
            if on_outcome is not None:
                on_outcome(o)

        try:
            while inflight or waiting:
                if inflight:
                    ready, _ = ray.wait(list(inflight), num_returns=1, timeout=_POLL_S)
                else:
                    time.sleep(min(_POLL_S, max(0.0, min(w[0] for w in waiting) - self._clock())))
                    ready = []
                for ref in ready:
                    item, target = inflight.pop(ref)
                    o = self._result(ray, ref, job, item, target, store)
                    if o.status == "busy":
                        waiting.append((min(o.expires, self._clock() + poll), item, target))
                    else:
                        finish(o)
                now = self._clock()
                due = [w for w in waiting if w[0] <= now]
                waiting = [w for w in waiting if w[0] > now]
                for _, item, target in due:
                    peek = store.peek(job.run_id, item.model, job.kind, item.key, target, invocation=job.invocation)
                    if peek.status == "done":
                        finish(ItemOutcome(item.model, item.key, target, "done"))
                    elif peek.status == "busy":
                        waiting.append((min(peek.expires, now + poll), item, target))
                    else:
                        inflight[submit(item, target)] = (item, target)
                if now - last_watch > _WATCHDOG_S:
                    last_watch = now
                    self._watch(ray, {t for _, t in inflight.values()} | {t for _, _, t in waiting})
        except BaseException:
            for ref in inflight:
                ray.cancel(ref, force=True)
            store.release(job.run_id, invocation=job.invocation)  # a resume may take them at once
            raise
        return out

    def _remote_fn(self, ray, fn):
        if fn.__name__ not in self._remote:
            self._remote[fn.__name__] = ray.remote(fn)
        return self._remote[fn.__name__]

    def _result(self, ray, ref, job: Job, item, target: str, store) -> ItemOutcome:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # a bug in flopgap on the node, not the model's error
            error = f"on the node: {one_line(e.cause if e.cause else e)}"
        except ray.exceptions.RayError as e:  # the worker or node died more than max_retries times
            error = f"its worker died {self._max_retries + 1} times ({type(e).__name__})"
        store.put(job.run_id, item.model, "error", {"error": error, "kind": job.kind}, key=item.key, target=target,
                  on_conflict="replace")
        return ItemOutcome(item.model, item.key, target, "failed", error=error)

    def _watch(self, ray, targets: set[str]) -> None:
        for t in targets:
            if not self._alive(ray, t):
                raise FlopgapError(f"no live node of machine kind {t or 'any'} is left in the Ray cluster; "
                                   "what was measured is stored: start nodes and rerun with --resume")


def _gpus(device: str | None) -> int:
    """GPUs a task on ``device`` asks Ray for: one for a CUDA device (Ray then makes it the
    task's visible GPU, so ``cuda:N`` names a GPU among those Ray gave the task)."""
    return 1 if device and device.startswith("cuda") else 0


def _json(d: dict) -> str:
    import json

    return json.dumps(d, separators=(", ", ": "))


def shutdown() -> None:
    """Disconnect from Ray (a cluster started here stops)."""
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()

