import os
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOPGAP = str(Path(sys.executable).with_name("flopgap"))

pytest_plugins = ["pytester"]  # the pytest plugin's tests run pytest inside pytest


@pytest.fixture(autouse=True, scope="session")
def _quiet_cache(tmp_path_factory):
    # machine profiles and other caches go to a temporary folder, never the user's own
    # cache (even when FLOPGAP_CACHE_DIR is set in the developer's shell); restored after
    before = os.environ.get("FLOPGAP_CACHE_DIR")
    os.environ["FLOPGAP_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        os.environ.pop("FLOPGAP_CACHE_DIR", None)
    else:
        os.environ["FLOPGAP_CACHE_DIR"] = before


@pytest.fixture
def flopgap_cmd():
    return [FLOPGAP]


@pytest.fixture
def synthetic_machine(tmp_path, monkeypatch):
    """A cache folder holding synthetic machine profiles for this machine's fingerprint
    (quick and full; the default thread count and 1 thread), so that CLI subprocesses
    predict and explain without measuring the machine (minutes, and load-dependent)."""
    import torch

    from flopgap.machine import MachineProfile
    from flopgap.timing import threads_context

    cache = tmp_path / "machine-cache"
    monkeypatch.setenv("FLOPGAP_CACHE_DIR", str(cache))
    for threads in sorted({1, torch.get_num_threads()}):
        with threads_context(threads):
            for quick in (True, False):
                MachineProfile.synthetic(quick=quick).save()
    return cache


def pytest_configure(config):
    """A suite started in the background by a non-interactive shell (``make test &``)
    inherits SIGINT ignored, and so would every process it starts: the Ctrl-C tests need
    the signal delivered, as in a terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
