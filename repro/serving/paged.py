"""Paged KV memory: fixed-size blocks, per-sequence block tables, reference counts, copy-on-write.

Kwon et al., "Efficient Memory Management for Large Language Model Serving with PagedAttention",
SOSP 2023, https://arxiv.org/abs/2309.06180 (§4.1 Eq. 4 block-wise attention, §4.2 the KV cache
manager, §4.4 parallel sampling with reference counts and copy-on-write).

Glossary: B block size (tokens per block; the paper's B), NB physical blocks, Hkv key/value heads,
D head dim, S tokens of one sequence, H query heads, T query positions.

The physical cache is one tensor of NB blocks (NB, Hkv, B, D) for keys and one for values. A
sequence owns a block table: logical block j -> physical block. Blocks are allocated only when a
sequence's last block is full, so a sequence wastes fewer than B slots. `fork` shares every block
(reference count + 1); the first write into a shared block copies it (copy-on-write).
`paged_attention` reads keys and values block by block through the table (Eq. 4);
`paged_attention_ref` gathers the sequence into a contiguous cache and calls `attention_ref`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from repro.nn.attention import attention_mask, attention_ref, repeat_kv


class OutOfBlocks(RuntimeError):
    """No free physical block: the caller must preempt a sequence (or admit fewer)."""


class BlockAllocator:
    """A free list of NB physical block ids with a reference count each."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.refcount = [0] * num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() hands out 0, 1, 2, …

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def allocate(self) -> int:
        if not self._free:
            raise OutOfBlocks(f"all {self.num_blocks} blocks are in use")
        block = self._free.pop()
        assert self.refcount[block] == 0, f"free block {block} has refcount {self.refcount[block]}"
        self.refcount[block] = 1
        return block

    def share(self, block: int) -> None:
        assert self.refcount[block] > 0, f"sharing free block {block}"
        self.refcount[block] += 1

    def free(self, block: int) -> None:
        assert self.refcount[block] > 0, f"double free of block {block}"
        self.refcount[block] -= 1
        if self.refcount[block] == 0:
            self._free.append(block)


@dataclass
class BlockTable:
    """One sequence's logical -> physical block map and its token count."""

    blocks: list[int] = field(default_factory=list)
    num_tokens: int = 0

    def slot(self, pos: int, block_size: int) -> tuple[int, int]:
        """Physical (block, offset) of token position pos."""
        assert 0 <= pos < len(self.blocks) * block_size, f"position {pos} has no block"
        return self.blocks[pos // block_size], pos % block_size


def blocks_needed(num_tokens: int, block_size: int) -> int:
    """⌈S / B⌉: a sequence of S tokens holds this many blocks (the last one partly filled)."""
    return -(-num_tokens // block_size)


class PagedKVCache:
    """Paged key/value storage for one attention layer, shared by many sequences."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        copy_on_write: bool = True,
    ) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        shape = (num_blocks, n_kv_heads, block_size, head_dim)  # (NB, Hkv, B, D)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self.allocator = BlockAllocator(num_blocks)
        self.tables: dict[int, BlockTable] = {}
        self.copy_on_write = copy_on_write  # False: writes go into shared blocks (a control)
        self._next_id = 0
        self.copies = 0  # blocks copied by copy-on-write

    @property
    def bytes_per_block(self) -> int:
        """K and V of B tokens: 2 · Hkv · B · D · bytes per element."""
        return (self.k[0].numel() + self.v[0].numel()) * self.k.element_size()

    def new_sequence(self) -> int:
        seq = self._next_id
        self._next_id += 1
        self.tables[seq] = BlockTable()
        return seq

    def fork(self, seq: int) -> int:
        """A new sequence sharing every block of seq (parallel sampling, §4.4)."""
        child = self.new_sequence()
        parent = self.tables[seq]
        for block in parent.blocks:
            self.allocator.share(block)
        self.tables[child] = BlockTable(list(parent.blocks), parent.num_tokens)
        return child

    def free(self, seq: int) -> None:
        for block in self.tables.pop(seq).blocks:
            self.allocator.free(block)

    def _writable_last_block(self, table: BlockTable) -> None:
        """Copy the last block if another sequence shares it (copy-on-write, Fig. 8)."""
        last = table.blocks[-1]
        if self.copy_on_write and self.allocator.refcount[last] > 1:
            new = self.allocator.allocate()
            self.k[new], self.v[new] = self.k[last], self.v[last]
            self.allocator.free(last)  # drops this sequence's reference
            table.blocks[-1] = new
            self.copies += 1

    def append(self, seq: int, k: Tensor, v: Tensor) -> None:
        """Write T new tokens' k/v (Hkv, T, D) after the sequence's last token."""
        table = self.tables[seq]
        B = self.block_size
        for t in range(k.shape[1]):
            pos = table.num_tokens
            if pos % B == 0:  # the last block is full (or there is none): a fresh block
                table.blocks.append(self.allocator.allocate())
            else:  # writing into the last block: copy it first if it is shared
                self._writable_last_block(table)
            block, offset = table.slot(pos, B)
            self.k[block, :, offset] = k[:, t]
            self.v[block, :, offset] = v[:, t]
            table.num_tokens += 1

    def reserve(self, seq: int, num_tokens: int) -> None:
        """Account for num_tokens more tokens without writing them (memory simulations)."""
        table = self.tables[seq]
        for _ in range(num_tokens):
            if table.num_tokens % self.block_size == 0:
                table.blocks.append(self.allocator.allocate())
            else:
                self._writable_last_block(table)
            table.num_tokens += 1

    def gather(self, seq: int) -> tuple[Tensor, Tensor]:
        """The sequence's keys and values as contiguous (Hkv, S, D) tensors."""
        table = self.tables[seq]
        idx = torch.tensor(table.blocks, dtype=torch.long, device=self.k.device)
        S = table.num_tokens
        k = self.k[idx].transpose(0, 1).reshape(self.k.shape[1], -1, self.k.shape[3])[:, :S]
        v = self.v[idx].transpose(0, 1).reshape(self.v.shape[1], -1, self.v.shape[3])[:, :S]
        return k, v  # (Hkv, S, D)

    def slots_allocated(self) -> int:
        """Token slots held by physical blocks in use (shared blocks counted once)."""
        return self.allocator.num_used * self.block_size

    def tokens_stored(self) -> int:
        return sum(t.num_tokens for t in self.tables.values())


def paged_attention(
    q: Tensor, cache: PagedKVCache, table: BlockTable, causal: bool = True
) -> Tensor:
    """Attention of q (H, T, D) — the sequence's last T positions — over its paged keys and
    values, block by block through the block table (Eq. 4): scores of every block, one
    softmax over all of them, then Σ_j V_j A_jᵀ. Returns (H, T, D)."""
    H, T, D = q.shape
    S, B = table.num_tokens, cache.block_size
    Hkv = cache.k.shape[1]
    scale = D**-0.5
    scores, values = [], []
    for j, block in enumerate(table.blocks):
        n = min(B, S - j * B)  # valid tokens in this block
        k_j = repeat_kv(cache.k[block, :, :n][None], H // Hkv)[0]  # (H, n, D)
        v_j = repeat_kv(cache.v[block, :, :n][None], H // Hkv)[0]
        scores.append(torch.einsum("htd,hnd->htn", q.to(k_j.dtype), k_j) * scale)  # (H, T, n)
        values.append(v_j)
    s = torch.cat(scores, dim=-1)  # (H, T, S)
    mask = attention_mask(T, S, causal, None, q.device)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    a = torch.softmax(s, dim=-1)
    out = torch.zeros_like(q, dtype=s.dtype)
    start = 0
    for v_j in values:
        n = v_j.shape[1]
        out = out + a[..., start : start + n] @ v_j  # (H, T, D)
        start += n
    return out.to(q.dtype)


def paged_attention_ref(q: Tensor, cache: PagedKVCache, seq: int, causal: bool = True) -> Tensor:
    """The same attention on the gathered contiguous cache with `attention_ref`. q (H, T, D)."""
    k, v = cache.gather(seq)
    return attention_ref(q[None], k[None], v[None], causal=causal)[0]
