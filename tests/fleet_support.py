"""Test support for the fleet: a real PostgreSQL server (pgserver) and a local Ray
cluster (a head and worker nodes with flopgap's custom resources), each skipped with
the reason when it cannot start here."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
import warnings

import pytest


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server in a temporary folder for the whole test run (pgserver).

    The folder is not under pytest's own temporary root: run as root, pgserver starts
    the server as an unprivileged user, which cannot enter that root when another
    pytest process has just made it private again (mode 0700)."""
    try:
        with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR unset on a CI machine
            warnings.simplefilter("ignore")
            import pgserver
        import psycopg  # noqa: F401  (SQLAlchemy's postgresql+psycopg driver)
    except ImportError as e:
        pytest.skip(f"PostgreSQL tests need pgserver and psycopg (pip install -e '.[dev]'): {e}")
    folder = tempfile.mkdtemp(prefix="flopgap-pg-")
    try:
        with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR unset on a CI machine
            warnings.simplefilter("ignore")
            server = pgserver.get_server(folder, cleanup_mode=None)  # stopped below, without a checkpoint
    except Exception as e:  # noqa: BLE001  (any reason the server cannot start here is a skip reason)
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"cannot start a PostgreSQL server with pgserver here: {type(e).__name__}: {e}")
    yield server
    _stop_now(server.get_pid())
    shutil.rmtree(folder, ignore_errors=True)


def _stop_now(pid: int | None, timeout_s: float = 30.0) -> None:
    """PostgreSQL's immediate shutdown (SIGQUIT): no checkpoint, the data is thrown away."""
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def new_database(server) -> str:
    """A fresh database on ``server``; returns its SQLAlchemy URL (postgresql+psycopg)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE DATABASE {name};")
    uri = server.get_uri(name)
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def pg_url(pg_server):
    return new_database(pg_server)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request, tmp_path):
    """A fresh store URL on each backend the fleet supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return new_database(request.getfixturevalue("pg_server"))


def ray_cluster(nodes: list[dict], *, system_config: dict | None = None):
    """Start a local Ray cluster: a head without flopgap resources and one worker node per
    entry of ``nodes`` (each ``{"num_cpus": N, "resources": {...}}``); skip if Ray is missing."""
    try:
        from ray.cluster_utils import Cluster
    except ImportError as e:
        pytest.skip(f"Ray tests need ray (pip install -e '.[dev]'): {e}")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                           **(system_config or {})}})
    handles = [cluster.add_node(**n) for n in nodes]
    cluster.wait_for_nodes()
    return cluster, handles
