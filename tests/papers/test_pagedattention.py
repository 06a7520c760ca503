"""Helpers of papers/pagedattention/repro.py beyond its claims."""

from __future__ import annotations

import pytest

from repro.lab.library import Library
from repro.serving.trace import Request

PA = Library().get("pagedattention").module()


def test_sharing_saving_on_hand_examples() -> None:
    # prompt 20 tokens (one full block of 16 + 4), two samples of 5 more tokens each:
    # unshared 2 · ⌈25/16⌉ = 4 blocks; shared: the full block once, the partial one copied → 3
    got = PA.parallel_sampling_saving([Request(20, 5)], 2, 16)
    assert got["blocks_unshared"] == 4 and got["blocks_shared"] == 3
    assert got["saving"] == pytest.approx(0.25)
    # a prompt shorter than one block: the only shared block is copied on the first write
    none = PA.parallel_sampling_saving([Request(10, 3)], 2, 16)
    assert none["saving"] == 0.0


def test_opt13b_block_bytes_and_scattered_allocation() -> None:
    cache = PA.opt13b_layer_cache(16)
    assert cache.bytes_per_block == 2 * 16 * 40 * 128 * 2
    scattered = PA.scattered_cache(4, 1, 2, seed=0)
    blocks = [scattered.allocator.allocate() for _ in range(6)]
    assert blocks != list(range(blocks[0], blocks[0] + 6))


def test_exactness_and_its_controls() -> None:
    m = PA._exactness(5)
    assert m["max_abs_diff"] < 1e-12
    assert m["shuffled_table_min_diff"] > 0.05
    assert m["no_copy_on_write_diff"] > 0.05
    assert m["copies"] >= 1  # the forks really exercised copy-on-write
