"""This machine's ceilings, measured by micro-benchmarks (never read off a spec sheet).

See :mod:`flopgap.machine._profile` for what each figure means. Every figure is kept
with its spread over timed blocks; ceilings (peak FLOP/s, bandwidths) use the best
block, as STREAM does, and costs (dispatch, module call, launch) the median.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flopgap.machine._bench import Figure, figure_from_times, figure_of_seconds, time_call

__all__ = ["measure_ceilings", "llc_bytes", "l2_bytes"]

L3_FALLBACK_BYTES = 32 * 2**20
L2_WORKING_SET_BYTES = 3 * 64 * 2**10   # 3 arrays x 64 KiB: resident in a 512 KiB+ L2


def llc_bytes() -> int:
    try:
        sizes = []
        for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            s = (idx / "size").read_text().strip()
            mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(s[-1], 1)
            sizes.append(int(s[:-1] if s[-1] in "KMG" else s) * mult)
        return max(sizes) if sizes else L3_FALLBACK_BYTES
    except (OSError, ValueError):
        return L3_FALLBACK_BYTES


def l2_bytes() -> int:
    try:
        for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            if (idx / "level").read_text().strip() == "2":
                s = (idx / "size").read_text().strip()
                mult = {"K": 2**10, "M": 2**20}.get(s[-1], 1)
                return int(s[:-1] if s[-1] in "KM" else s) * mult
    except (OSError, ValueError):
        pass
    return 2**20


def _sync_for(dev: torch.device):
    return torch.cuda.synchronize if dev.type == "cuda" else None


def _matmul_peak(dtype: str, dev: torch.device, n: int, min_run: float, kernel: str = "mm") -> Figure | None:
    sync = _sync_for(dev)
    if kernel in ("conv1x1", "conv3x3"):
        # convolutions run by oneDNN, which on some CPUs is several times faster than the
        # BLAS behind torch.mm: a 1x1 conv is a GEMM (n x n weights times n x 1024 pixels);
        # a 3x3 conv (n/4 channels, 28x28) is the densest op of most CNNs
        td = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
        if td is None:
            return None
        if kernel == "conv1x1":
            x = torch.randn(1, n, 32, 32, device=dev).to(td)
            w = torch.randn(n, n, 1, 1, device=dev).to(td)
            fn = lambda: torch.nn.functional.conv2d(x, w)  # noqa: E731
            work = 2.0 * n * n * 1024
        else:
            c = n // 4
            x = torch.randn(1, c, 28, 28, device=dev).to(td)
            w = torch.randn(c, c, 3, 3, device=dev).to(td)
            fn = lambda: torch.nn.functional.conv2d(x, w, padding=1)  # noqa: E731
            work = 2.0 * c * c * 9 * 28 * 28
    elif dtype == "int8":
        a = torch.randint(-100, 100, (n, n), dtype=torch.int8, device=dev)
        b = torch.randint(-100, 100, (n, n), dtype=torch.int8, device=dev)
        fn = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        td = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        a = torch.randn(n, n, device=dev).to(td)
        b = torch.randn(n, n, device=dev).to(td)
        fn = lambda: torch.mm(a, b)  # noqa: E731
    if kernel == "mm":
        work = 2.0 * n**3
    try:
        fn()
    except (RuntimeError, NotImplementedError):
        return None  # not supported by this build/device: reported as absent, not as zero
    return figure_from_times(time_call(fn, min_run_time=min_run, sync=sync), work, "FLOP/s")


def _stream(n_el: int, dev: torch.device, min_run: float) -> dict[str, Figure]:
    sync = _sync_for(dev)
    a = torch.zeros(n_el, device=dev)
    b = torch.randn(n_el, device=dev)
    c = torch.randn(n_el, device=dev)
    nb = 4 * n_el
    return {
        "copy": figure_from_times(time_call(lambda: a.copy_(b), min_run_time=min_run, sync=sync), 2 * nb, "B/s"),
        "add": figure_from_times(time_call(lambda: torch.add(b, c, out=a), min_run_time=min_run, sync=sync),
                                 3 * nb, "B/s"),
        "triad": figure_from_times(time_call(lambda: torch.add(b, c, alpha=3.0, out=a), min_run_time=min_run,
                                             sync=sync), 3 * nb, "B/s"),
    }


def _cuda_l2_triad(dev: torch.device, min_run: float, reps: int = 20) -> tuple[Figure, int]:
    """GPU L2-resident bandwidth: a triad over three arrays filling half the L2, run
    ``reps`` times inside one CUDA graph so that the launch latency (several us, longer
    than one such kernel) is not what is timed. Falls back to plain launches where
    graph capture fails. Returns the figure and the working set in bytes."""
    l2 = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0) or 2**22)
    n_el = max(l2 // 2 // 3 // 4, 2**14)
    a = torch.zeros(n_el, device=dev)
    b = torch.randn(n_el, device=dev)
    c = torch.randn(n_el, device=dev)

    def body():
        for _ in range(reps):
            torch.add(b, c, alpha=3.0, out=a)

    fn = body
    try:
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            body()  # warm-up on a side stream, as graph capture requires
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body()
        fn = graph.replay
    except RuntimeError:  # capture not supported here: launches are then part of the time
        pass
    times = time_call(fn, min_run_time=min_run, sync=torch.cuda.synchronize)
    return figure_from_times(times, reps * 3 * 4 * n_el, "B/s"), 3 * 4 * n_el


def _op_overheads(dev: torch.device, min_run: float) -> dict[str, Figure]:
    """Seconds per call of one tiny op of each family (a few KB, far below any ceiling):
    on a GPU what the host spends dispatching and launching it, which is what an op costs
    when the GPU waits on the host (batch 1, small layers). The CUDA profile has no
    calibration grid; the predictor uses these as each family's floor there."""
    F = torch.nn.functional
    x = torch.randn(1, 16, 8, 8, device=dev)
    v = torch.randn(1, 64, device=dev)
    w = torch.randn(64, 64, device=dev)
    b = torch.randn(64, device=dev)
    cw = torch.randn(16, 16, 3, 3, device=dev)
    c16 = torch.ones(16, device=dev)
    q = torch.randn(1, 2, 16, 32, device=dev)
    table = torch.randn(100, 64, device=dev)
    idx = torch.arange(8, device=dev)
    cases = {
        "matmul": lambda: F.linear(v, w, b),
        "conv": lambda: F.conv2d(x, cw, padding=1),
        "norm": lambda: F.batch_norm(x, c16, c16, c16, c16, False),
        "pointwise": lambda: torch.relu(x),
        "pool": lambda: F.max_pool2d(x, 2),
        "reduction": lambda: x.mean((2, 3)),
        "softmax": lambda: torch.softmax(v, -1),
        "attention": lambda: F.scaled_dot_product_attention(q, q, q),
        "embedding": lambda: F.embedding(idx, table),
    }
    return {fam: figure_of_seconds(time_call(fn, min_run_time=min_run)) for fam, fn in cases.items()}


def _tiny_op(dev: torch.device, min_run: float) -> Figure:
    x = torch.ones(1, device=dev)
    y = torch.ones(1, device=dev)
    return figure_of_seconds(time_call(lambda: torch.add(x, y), min_run_time=min_run))


def _module_call(min_run: float) -> Figure:
    n = 32
    seq = torch.nn.Sequential(*[torch.nn.Identity() for _ in range(n)])
    x = torch.ones(1)
    # the Sequential's own call is one of the n + 1 calls
    return figure_of_seconds(time_call(lambda: seq(x), min_run_time=min_run) / (n + 1))


def _page_fault(min_run: float) -> Figure | None:
    """Seconds per 4 KiB page of first touch of freshly mapped memory (a minor page
    fault): filling a new 64 MiB tensor (allocated with mmap) each call, minus filling a
    reused one, over the pages. None where ``resource`` is unavailable."""
    try:
        import resource  # noqa: F401  (POSIX only)
    except ImportError:
        return None
    n = 16 * 2**20  # floats: 64 MiB, always above glibc's mmap threshold
    reused = torch.empty(n)
    fresh = time_call(lambda: torch.empty(n).fill_(1.0), min_run_time=min_run)
    warm = time_call(lambda: reused.fill_(1.0), min_run_time=min_run)
    pages = 4 * n / 4096
    return figure_of_seconds(np.maximum(fresh - float(np.median(warm)), 0.0) / pages)


def _launch_latency(dev: torch.device, min_run: float) -> Figure:
    """Seconds per launch of a tiny kernel, many queued then one sync (CUDA only)."""
    x = torch.ones(1, device=dev)
    n = 200

    def burst():
        for _ in range(n):
            x.add_(1.0)

    times = time_call(burst, min_run_time=min_run, sync=torch.cuda.synchronize)
    return figure_of_seconds(times / n)


def measure_ceilings(dev: torch.device, quick: bool = False) -> dict:
    """Every micro-benchmark: the ceilings' fields of a :class:`MachineProfile` and
    their spreads. ``quick`` uses smaller arrays and shorter runs."""
    min_run = 0.05 if quick else 0.1
    spreads: dict[str, dict] = {}
    peaks: dict[str, float] = {}
    n = 512 if quick else 1024
    if dev.type == "cuda":
        n *= 4
    for dt in ("fp32", "bf16", "int8") + (("fp16",) if dev.type == "cuda" else ()):
        best = None
        for kernel in ("mm", "conv1x1", "conv3x3"):
            f = _matmul_peak(dt, dev, n if kernel == "mm" else 512, min_run, kernel)
            if f is not None:
                spreads[f"peak_flops.{dt}.{kernel}"] = f.to_dict()
                if best is None or f.max > best.max:
                    best = f
        if best is not None:  # the fastest GEMM kernel this build has for the dtype
            peaks[dt] = best.max
            spreads[f"peak_flops.{dt}"] = best.to_dict()
    llc = llc_bytes()
    big = max(4 * llc // 4, 2**22) if not quick else max(2 * llc // 4, 2**21)  # elements (fp32)
    main = _stream(big if dev.type == "cpu" else 2**26, dev, min_run)
    for k, f in main.items():
        spreads[f"stream.{k}"] = f.to_dict()
    if dev.type == "cuda":
        cache_fig, cache_set = _cuda_l2_triad(dev, min_run)
    else:
        cache_fig, cache_set = _stream(L2_WORKING_SET_BYTES // 3 // 4, dev, min_run)["triad"], L2_WORKING_SET_BYTES
    spreads["cache_bandwidth"] = cache_fig.to_dict()
    tiny = _tiny_op(dev, min_run)
    spreads["dispatch_overhead_s"] = tiny.to_dict()
    mod = _module_call(min_run)
    spreads["module_overhead_s"] = mod.to_dict()
    fault = _page_fault(min_run) if dev.type == "cpu" else None
    if fault is not None:
        spreads["page_fault_s"] = fault.to_dict()
    launch = None
    op_overhead: dict[str, float] = {}
    if dev.type == "cuda":
        lf = _launch_latency(dev, min_run)
        spreads["launch_latency_s"] = lf.to_dict()
        launch = lf.value
        for fam, f in _op_overheads(dev, min_run).items():
            spreads[f"op_overhead_s.{fam}"] = f.to_dict()
            op_overhead[fam] = f.value
    return {"peak_flops": peaks, "mem_bandwidth": main["triad"].max, "cache_bandwidth": cache_fig.max,
            "cache_bytes": cache_set, "dispatch_overhead_s": tiny.value, "module_overhead_s": mod.value,
            "launch_latency_s": launch, "llc_bytes": llc, "l2_bytes": l2_bytes(),
            "page_fault_s": fault.value if fault is not None else None, "spreads": spreads,
            "stream": {k: f.value for k, f in main.items()}, "op_overhead_s": op_overhead}


# a-priori seconds of measure_ceilings (for the progress bar's estimate): about 20
# figures of 2-3 blocks of min_run each, plus array set-up
CEILINGS_EST_S = {False: 4.0, True: 2.0}
