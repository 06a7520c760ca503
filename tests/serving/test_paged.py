"""Paged KV cache: allocator, block tables, copy-on-write, attention through the table."""

from __future__ import annotations

import pytest
import torch

from repro.nn.attention import attention_ref
from repro.serving.paged import (
    BlockAllocator,
    BlockTable,
    OutOfBlocks,
    PagedKVCache,
    blocks_needed,
    paged_attention,
    paged_attention_ref,
)


def rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def test_allocator_reference_counts_and_reuse() -> None:
    a = BlockAllocator(3)
    b0, b1 = a.allocate(), a.allocate()
    a.share(b0)
    assert a.refcount[b0] == 2 and a.num_used == 2
    a.free(b0)
    assert a.num_used == 2, "a block still referenced must not return to the pool"
    a.free(b0)
    assert a.num_free == 2 and a.refcount[b0] == 0
    a.allocate(), a.allocate()
    with pytest.raises(OutOfBlocks):
        a.allocate()
    with pytest.raises(AssertionError):
        a.free(b1) or a.free(b1) or a.free(b1)
    with pytest.raises(ValueError):
        BlockAllocator(0)


@pytest.mark.parametrize("B", [1, 3, 4, 16])
def test_blocks_allocated_on_demand_waste_below_one_block(B: int) -> None:
    cache = PagedKVCache(64, B, 1, 1, device="meta")
    seq = cache.new_sequence()
    for S in range(1, 50):
        cache.reserve(seq, 1)
        assert len(cache.tables[seq].blocks) == blocks_needed(S, B)
        assert 0 <= cache.slots_allocated() - S <= B - 1


def test_gather_returns_tokens_in_order_from_scattered_blocks() -> None:
    g = torch.Generator().manual_seed(0)
    cache = PagedKVCache(20, 4, 2, 3, torch.float64)
    cache.allocator._free = torch.randperm(20, generator=g).tolist()
    a, b = cache.new_sequence(), cache.new_sequence()
    ka, va, kb, vb = rand(g, 2, 11, 3), rand(g, 2, 11, 3), rand(g, 2, 6, 3), rand(g, 2, 6, 3)
    cache.append(a, ka[:, :5], va[:, :5])  # interleave the two sequences' writes
    cache.append(b, kb, vb)
    cache.append(a, ka[:, 5:], va[:, 5:])
    assert torch.equal(cache.gather(a)[0], ka) and torch.equal(cache.gather(a)[1], va)
    assert torch.equal(cache.gather(b)[0], kb)
    blocks = cache.tables[a].blocks
    assert blocks != list(range(blocks[0], blocks[0] + len(blocks)))  # really scattered


@pytest.mark.parametrize(
    ("S", "T", "H", "Hkv"), [(1, 1, 2, 2), (9, 1, 4, 2), (13, 5, 4, 1), (16, 16, 3, 3)]
)
def test_paged_attention_equals_reference_on_contiguous_cache(S, T, H, Hkv) -> None:
    g = torch.Generator().manual_seed(S)
    cache = PagedKVCache(16, 4, Hkv, 8, torch.float64)
    cache.allocator._free = torch.randperm(16, generator=g).tolist()
    seq = cache.new_sequence()
    k, v = rand(g, Hkv, S, 8), rand(g, Hkv, S, 8)
    cache.append(seq, k, v)
    q = rand(g, H, T, 8)
    want = attention_ref(q[None], k[None], v[None], causal=True)[0]  # contiguous, independent
    assert torch.allclose(paged_attention(q, cache, cache.tables[seq]), want, atol=1e-12)
    assert torch.allclose(paged_attention_ref(q, cache, seq), want, atol=1e-12)


def test_a_wrong_block_table_changes_the_result() -> None:
    g = torch.Generator().manual_seed(1)
    cache = PagedKVCache(16, 4, 2, 8, torch.float64)
    seq = cache.new_sequence()
    cache.append(seq, rand(g, 2, 10, 8), rand(g, 2, 10, 8))  # last block partial
    table = cache.tables[seq]
    q = rand(g, 2, 3, 8)
    rotated = BlockTable(table.blocks[1:] + table.blocks[:1], table.num_tokens)
    diff = (paged_attention(q, cache, rotated) - paged_attention_ref(q, cache, seq)).abs().max()
    assert diff > 0.05


def test_fork_shares_blocks_and_copy_on_write_isolates_samples() -> None:
    g = torch.Generator().manual_seed(2)
    cache = PagedKVCache(16, 4, 1, 2, torch.float64)
    parent = cache.new_sequence()
    cache.append(parent, rand(g, 1, 6, 2), rand(g, 1, 6, 2))  # blocks: full + partial
    child = cache.fork(parent)
    assert cache.allocator.num_used == 2
    assert all(cache.allocator.refcount[b] == 2 for b in cache.tables[parent].blocks)
    before = cache.gather(parent)[0].clone()
    cache.append(child, rand(g, 1, 1, 2), rand(g, 1, 1, 2))
    assert cache.copies == 1 and cache.allocator.num_used == 3
    assert cache.tables[child].blocks[0] == cache.tables[parent].blocks[0]  # full block shared
    cache.append(parent, rand(g, 1, 1, 2), rand(g, 1, 1, 2))  # now the sole owner: in place
    assert cache.copies == 1
    assert torch.equal(cache.gather(parent)[0][:, :6], before)
    assert not torch.equal(cache.gather(parent)[0][:, 6], cache.gather(child)[0][:, 6])
    cache.free(child), cache.free(parent)
    assert cache.allocator.num_used == 0


def test_without_copy_on_write_a_sibling_overwrites_shared_tokens() -> None:
    g = torch.Generator().manual_seed(3)
    cache = PagedKVCache(16, 4, 1, 2, torch.float64, copy_on_write=False)
    parent = cache.new_sequence()
    cache.append(parent, rand(g, 1, 5, 2), rand(g, 1, 5, 2))
    a, b = cache.fork(parent), cache.fork(parent)
    cache.append(a, rand(g, 1, 1, 2), rand(g, 1, 1, 2))
    mine = cache.gather(a)[0].clone()
    cache.append(b, rand(g, 1, 1, 2), rand(g, 1, 1, 2))
    assert not torch.equal(cache.gather(a)[0], mine)


def test_bytes_per_block() -> None:
    cache = PagedKVCache(1, 16, 40, 128, torch.float16, device="meta")
    assert cache.bytes_per_block == 2 * 16 * 40 * 128 * 2
