"""Machine metadata recorded with every timing result (pyperf's lesson: a number
without the machine it came from cannot be compared)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import re
import socket
import subprocess
import sys

__all__ = ["environment", "cpu_model", "minor_faults"]


def minor_faults() -> int | None:
    """Minor page faults of this process so far (``getrusage``; None where the
    ``resource`` module is missing, as on Windows)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    cores = set()
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores) or None


def _blas(config: str) -> dict:
    out = {}
    for key in ("BLAS_INFO", "LAPACK_INFO"):
        m = re.search(rf"{key}=([^,\s]+)", config)
        if m:
            out[key.lower()] = m.group(1)
    m = re.search(r"Math Kernel Library Version ([^\s]+)", config)
    if m:
        out["mkl"] = m.group(1)
    m = re.search(r"MKL-DNN v([^\s]+)", config)
    if m:
        out["onednn"] = m.group(1)
    m = re.search(r"OpenMP (\d+)", config)
    if m:
        out["openmp"] = m.group(1)
    m = re.search(r"CPU capability usage: (\S+)", config)
    if m:
        out["cpu_capability"] = m.group(1)
    return out


def _gpu_driver() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = r.stdout.strip().splitlines()
    return lines[0].strip() if r.returncode == 0 and lines else None


def flopgap_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flopgap")
    except PackageNotFoundError:
        return None


def environment(device: str | None = None) -> dict:
    """What a timing ran on: CPU model, logical/physical cores, torch threads, versions
    (torch, CUDA, cuDNN, Python), BLAS from ``torch.__config__``, GPU name and driver
    when ``device`` is CUDA, a hash of the hostname (never the name) and the UTC time."""
    import torch

    env = {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname_hash": hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12],
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "flopgap": flopgap_version(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": _physical_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": None,
        "blas": _blas(torch.__config__.show()),
        "device": device or "cpu",
        "gpu": None,
        "gpu_driver": None,
    }
    try:
        env["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        env["load_average"] = None
    if device and str(device).startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        env["gpu"] = torch.cuda.get_device_name(index)
        env["gpu_driver"] = _gpu_driver()
        env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    elif torch.backends.cudnn.is_available():
        env["cudnn"] = torch.backends.cudnn.version()
    return env
