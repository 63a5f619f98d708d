"""Test support for the fleet: a real PostgreSQL server (pgserver) and a local Ray
cluster (a head and worker nodes with flopgap's custom resources), each skipped with
the reason when it cannot start here."""

from __future__ import annotations

import os
import uuid
import warnings

import pytest


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A PostgreSQL server in a temporary folder for the whole session (pgserver)."""
    try:
        with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR unset on a CI machine
            warnings.simplefilter("ignore")
            import pgserver
        import psycopg  # noqa: F401  (SQLAlchemy's postgresql+psycopg driver)
    except ImportError as e:
        pytest.skip(f"PostgreSQL tests need pgserver and psycopg (pip install -e '.[dev]'): {e}")
    folder = tmp_path_factory.mktemp("pg")
    try:
        with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR unset on a CI machine
            warnings.simplefilter("ignore")
            server = pgserver.get_server(str(folder), cleanup_mode="stop")
    except Exception as e:  # noqa: BLE001  (any reason the server cannot start here is a skip reason)
        pytest.skip(f"cannot start a PostgreSQL server with pgserver here: {type(e).__name__}: {e}")
    yield server
    server.cleanup()


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
