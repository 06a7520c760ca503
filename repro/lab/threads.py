"""How many CPU threads torch may use, set for a block of code and restored afterwards.

The tiny experiments multiply small matrices: one thread is faster than two there, and it does
not collapse when other processes share the cores (measured 10–30× slower with two threads on a
busy 2-core machine). Benchmarks state their thread count explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with `n` intra-op threads (None: leave as is), restoring the setting afterwards."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
