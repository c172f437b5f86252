"""Thread budgets. Unpinned thread counts (torch × decoder × workers on 2 cores) cut throughput ~9× here."""
from __future__ import annotations

import contextlib
import os

import torch


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def pin_torch_threads(requested: int = 0, processes: int = 1, loader_workers: int = 0) -> int:
    """Give torch intra-op threads = cores / (training processes), minus the cores that data workers keep busy.

    Returns the number set. `requested` > 0 overrides.
    """
    if requested > 0:
        n = requested
    else:
        n = max(1, available_cores() // max(1, processes) - loader_workers)
    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    return n


@contextlib.contextmanager
def denormals_flushed(enabled: bool = True):
    """Flush subnormal floats to zero inside the block (x86: subnormal arithmetic is very slow), then restore the
    IEEE default, so a run started from Python (a notebook, a test) leaves the process as it found it."""
    if not enabled:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
