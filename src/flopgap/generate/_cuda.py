"""The CUDA side of generation: kernel launches per token and a CUDA-graph decode step.

- Launches: one decode step under ``torch.profiler`` with CUDA activity; the kernel
  launch runtime calls (``cudaLaunchKernel`` and kin) it made, divided by the tokens
  the step produced. At batch 1 every op of the step is at least one launch of a few
  microseconds, which is why small-batch decode on a GPU is often launch-bound.
- Graph: the step (cache reset included) captured once into a ``torch.cuda.CUDAGraph``
  after a warm-up on a side stream, then replayed: one launch for the whole step. Only
  a ``StaticCache`` can be captured (a ``DynamicCache`` allocates new tensors and
  changes shapes every step).

``cuda`` (the ``torch.cuda`` module) and ``profile`` (``torch.profiler.profile``) are
parameters so that the logic runs in tests with fakes on a machine without a GPU.
"""

from __future__ import annotations

from typing import Callable

import torch

from flopgap.errors import UsageError
from flopgap.explain import LAUNCH_EVENTS

__all__ = ["launches_per_call", "graph_step"]


def launches_per_call(step: Callable[[], object], *, cuda=None, profile=None, calls: int = 3) -> float:
    """Kernel launches per call of ``step`` (its median over ``calls`` profiled calls)."""
    cuda = cuda or torch.cuda
    if profile is None:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        def profile():
            return torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    counts = []
    with torch.inference_mode():
        step()  # first call outside the profiler: lazy initialisation is not a launch per token
        cuda.synchronize()
        for _ in range(calls):
            with profile() as prof:
                step()
                cuda.synchronize()
            counts.append(sum(1 for e in prof.events() if e.name in LAUNCH_EVENTS))
    counts.sort()
    return float(counts[len(counts) // 2])


def graph_step(step: Callable[[], object], *, cache_kind: str, cuda=None, warmup: int = 3) -> Callable[[], None]:
    """``replay()``: ``step`` captured into a CUDA graph (warm-up on a side stream first,
    as torch's CUDA-graph recipe requires)."""
    if cache_kind != "static":
        raise UsageError("a CUDA-graph decode step needs --cache static (a DynamicCache grows by allocating)")
    cuda = cuda or torch.cuda
    with torch.inference_mode():
        side = cuda.Stream()
        side.wait_stream(cuda.current_stream())
        with cuda.stream(side):
            for _ in range(warmup):
                step()
        cuda.current_stream().wait_stream(side)
        graph = cuda.CUDAGraph()
        with cuda.graph(graph):
            step()
    cuda.synchronize()
    return graph.replay
