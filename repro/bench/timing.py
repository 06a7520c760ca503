"""Timing one call on the CPU or a GPU: what every benchmark and timing claim shares."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    """Wait for queued GPU work, so a clock read after it measures the work."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds(fn: Callable[[], object], device: str) -> float:
    """Wall time of one call; CUDA events on the GPU."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def median_seconds(fn: Callable[[], object], device: str, repeats: int = 3) -> float:
    """Median wall time of `repeats` calls after one warm-up call."""
    sync(device)
    fn()
    return statistics.median(seconds(fn, device) for _ in range(repeats))
