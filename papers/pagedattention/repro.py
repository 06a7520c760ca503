"""Efficient Memory Management for Large Language Model Serving with PagedAttention (Kwon, Li,
Zhuang, Sheng, Zheng, Yu, Gonzalez, Zhang, Stoica; SOSP 2023) — reproduction.

https://arxiv.org/abs/2309.06180

Glossary: B block size (tokens per KV block), S tokens of a sequence, L layers, Hkv key/value
heads, D head dim, C d_model, M the KV budget in token slots, n parallel samples.

The library is `repro/serving/paged.py` (block allocator with reference counts, block tables,
a paged KV cache with copy-on-write, paged attention) and `repro/serving/trace.py` (seeded
request lengths, a serving simulation). Attention over a paged cache (Eq. 4):

    A_ij = exp(q_iᵀ K_j / √d) / Σ_t exp(q_iᵀ K_t 1 / √d),   o_i = Σ_j V_j A_ijᵀ,

with K_j, V_j the j-th block of the sequence, wherever it lies in memory.

What is checked here, claim by claim (see note.yaml):
1. OPT-13B's KV bytes per token, counted from allocated paged blocks (derived), and the KV
   slots that 12 GB hold (Table 1);
2. the internal waste of one sequence is below one block, counted with the allocator (derived);
3. paged attention over scattered physical blocks (and forked, copy-on-write sequences) equals
   `attention_ref` on the contiguous cache in fp64 (measured); controls: a shuffled block table
   and writes into shared blocks without copy-on-write;
4. memory on a seeded trace (measured): waste by block size 8–128 against max-length
   preallocation, sequences batched in a fixed budget, copy-on-write savings of parallel
   sampling.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from repro.lab.claims import Context, Measured, claim
from repro.lab.settings import setting
from repro.lab.threads import torch_threads
from repro.serving.paged import PagedKVCache, paged_attention, paged_attention_ref
from repro.serving.trace import make_trace, simulate
from repro.study.plots import save_line_plot

# OPT-13B (Zhang et al. 2022, Table 1 of the OPT paper): 40 layers, d_model 5120, 40 heads of
# 128 dims, fp16; context 2048.
OPT_13B = dict(n_layers=40, d_model=5120, n_heads=40, head_dim=128, max_len=2048)


@dataclass(frozen=True)
class Config:
    # --device: this paper runs on the CPU (see repro.lab.settings)
    CPU_ONLY = "the experiment simulates a block allocator and scheduler in Python; no tensor work"
    requests: int = setting(200, "requests in the seeded trace", min=10)
    block_sizes: tuple[int, ...] = setting((8, 16, 32, 64, 128), "block sizes swept", min=1)
    budget_slots: int = setting(15728, "KV budget in token slots (OPT-13B, 12 GiB)", min=2048)
    samples: tuple[int, ...] = setting((2, 4, 6), "parallel samples per request", min=2)
    cow_requests: int = setting(50, "requests in the parallel-sampling measurement", min=1)


PRESETS = {"quick": Config(), "full": Config(requests=2000, cow_requests=400)}


# --- 1–2. sizes --------------------------------------------------------------------------


def opt13b_layer_cache(block_size: int) -> PagedKVCache:
    """One layer's paged cache for OPT-13B in fp16, on the meta device (no memory)."""
    return PagedKVCache(
        1, block_size, OPT_13B["n_heads"], OPT_13B["head_dim"], torch.float16, device="meta"
    )


@claim("kv-bytes-per-token")
def kv_bytes_per_token(ctx: Context) -> Measured:
    """Bytes of one allocated block / B, times L layers."""
    cache = opt13b_layer_cache(16)
    per_token = cache.bytes_per_block // cache.block_size * OPT_13B["n_layers"]
    return Measured(
        per_token,
        {"bytes_2048_tokens": per_token * 2048, "GiB_2048_tokens": per_token * 2048 / 2**30,
         "GB_2048_tokens": per_token * 2048 / 1e9},
    )  # fmt: skip


@claim("kv-slots-12gb")
def kv_slots_12gb(ctx: Context) -> Measured:
    """Table 1: token slots that 12 GB of KV memory hold for OPT-13B (GB read as GiB)."""
    cache = opt13b_layer_cache(16)
    per_token = cache.bytes_per_block // cache.block_size * OPT_13B["n_layers"]
    return Measured(12 * 2**30 / per_token, {"decimal_12e9_bytes": 12e9 / per_token})


@claim("internal-waste-below-one-block")
def internal_waste_below_one_block(ctx: Context) -> Measured:
    """max over B ∈ {8..128} and S ∈ 1..2048 of (allocated slots − S) / (B − 1), by allocating."""
    worst = 0.0
    details = {}
    for B in (8, 16, 32, 64, 128):
        cache = PagedKVCache(2048 // B + 1, B, 1, 1, device="meta")
        seq = cache.new_sequence()
        wastes = []
        for S in range(1, 2049):
            cache.reserve(seq, 1)
            assert cache.tokens_stored() == S
            wastes.append(cache.slots_allocated() - S)
        details[f"B={B}"] = {"max_waste_slots": max(wastes), "mean_waste_slots": sum(wastes) / 2048}
        worst = max(worst, max(wastes) / (B - 1))
    return Measured(worst, details)


# --- 3. exactness ------------------------------------------------------------------------


def scattered_cache(block_size: int, n_kv_heads: int, head_dim: int, seed: int) -> PagedKVCache:
    """A fp64 paged cache whose free list is shuffled: sequences land on scattered blocks."""
    cache = PagedKVCache(64, block_size, n_kv_heads, head_dim, torch.float64)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(64, generator=g).tolist()
    cache.allocator._free = order  # the allocator hands out blocks in this random order
    return cache


@functools.lru_cache(maxsize=4)
def _exactness(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    H, Hkv, D, B = 4, 2, 8, 4
    cases = []
    cache = scattered_cache(B, Hkv, D, seed)
    parents = []
    for S in (1, 7, 13, 16):  # lengths below, at and between block boundaries
        seq = cache.new_sequence()
        cache.append(seq, torch.randn(Hkv, S, D, generator=g, dtype=torch.float64),
                     torch.randn(Hkv, S, D, generator=g, dtype=torch.float64))  # fmt: skip
        parents.append(seq)
    # parallel sampling: fork the 13-token sequence twice and let each child diverge
    children = []
    for _ in range(2):
        child = cache.fork(parents[2])
        cache.append(child, torch.randn(Hkv, 5, D, generator=g, dtype=torch.float64),
                     torch.randn(Hkv, 5, D, generator=g, dtype=torch.float64))  # fmt: skip
        children.append(child)
    max_diff, shuffled_min = 0.0, float("inf")
    for seq in parents + children:
        table = cache.tables[seq]
        for T in (1, min(5, table.num_tokens)):  # a decode query, and a causal chunk
            q = torch.randn(H, T, D, generator=g, dtype=torch.float64)
            got = paged_attention(q, cache, table)
            want = paged_attention_ref(q, cache, seq)
            max_diff = max(max_diff, (got - want).abs().max().item())
            cases.append({"S": table.num_tokens, "T": T, "blocks": list(table.blocks)})
        if len(table.blocks) > 1 and table.num_tokens % B:
            # control: rotate the block table (every logical block now points elsewhere)
            q = torch.randn(H, 5, D, generator=g, dtype=torch.float64)
            rotated = type(table)(table.blocks[1:] + table.blocks[:1], table.num_tokens)
            wrong = paged_attention(q, cache, rotated)
            shuffled_min = min(
                shuffled_min, (wrong - paged_attention_ref(q, cache, seq)).abs().max().item()
            )
    # control: the same forks with copy-on-write switched off
    nocow = scattered_cache(B, Hkv, D, seed)
    nocow.copy_on_write = False
    base = nocow.new_sequence()
    nocow.append(base, torch.randn(Hkv, 13, D, generator=g, dtype=torch.float64),
                 torch.randn(Hkv, 13, D, generator=g, dtype=torch.float64))  # fmt: skip
    a, b = nocow.fork(base), nocow.fork(base)
    nocow.append(a, torch.randn(Hkv, 1, D, generator=g, dtype=torch.float64),
                 torch.randn(Hkv, 1, D, generator=g, dtype=torch.float64))  # fmt: skip
    q = torch.randn(H, 1, D, generator=g, dtype=torch.float64)
    before = paged_attention_ref(q, nocow, a)  # a's 14 tokens as a wrote them
    nocow.append(b, torch.randn(Hkv, 1, D, generator=g, dtype=torch.float64),
                 torch.randn(Hkv, 1, D, generator=g, dtype=torch.float64))  # fmt: skip
    # b wrote its 14th token into the block it shares with a: a's 14th token is gone
    no_cow_diff = (paged_attention(q, nocow, nocow.tables[a]) - before).abs().max().item()
    return {
        "max_abs_diff": max_diff,
        "shuffled_table_min_diff": shuffled_min,
        "no_copy_on_write_diff": no_cow_diff,
        "copies": cache.copies,
        "cases": len(cases),
    }


@claim("paged-equals-contiguous")
def paged_equals_contiguous(ctx: Context) -> Measured:
    with torch_threads(1):
        m = _exactness(ctx.seed)
    return Measured(m["max_abs_diff"], m)


@claim("shuffled-table-differs")
def shuffled_table_differs(ctx: Context) -> Measured:
    with torch_threads(1):
        m = _exactness(ctx.seed)
    return Measured(m["shuffled_table_min_diff"], m)


@claim("no-copy-on-write-corrupts")
def no_copy_on_write_corrupts(ctx: Context) -> Measured:
    with torch_threads(1):
        m = _exactness(ctx.seed)
    return Measured(m["no_copy_on_write_diff"], m)


# --- 4. memory on a trace ------------------------------------------------------------------


def parallel_sampling_saving(requests, n: int, block_size: int) -> dict:
    """Blocks saved by sharing the prompt among n samples / blocks without sharing (§6.3)."""
    cache = PagedKVCache(10**6, block_size, 1, 1, device="meta")
    shared = unshared = 0
    for r in requests:
        parent = cache.new_sequence()
        cache.reserve(parent, r.prompt_len)
        seqs = [parent] + [cache.fork(parent) for _ in range(n - 1)]
        for s in seqs:
            cache.reserve(s, r.output_len)
        shared += cache.allocator.num_used
        unshared += sum(len(cache.tables[s].blocks) for s in seqs)
        for s in seqs:
            cache.free(s)
        assert cache.allocator.num_used == 0, "blocks leaked"
    return {"saving": 1 - shared / unshared, "blocks_shared": shared, "blocks_unshared": unshared}


def experiment(cfg: Config, ctx: Context) -> dict:
    trace = make_trace(cfg.requests, ctx.seed)
    paged = {B: simulate(trace, cfg.budget_slots, B) for B in cfg.block_sizes}
    prealloc = simulate(trace, cfg.budget_slots, None)
    cow_trace = make_trace(cfg.cow_requests, ctx.seed + 1)
    cow = {n: parallel_sampling_saving(cow_trace, n, 16) for n in cfg.samples}
    metrics = {
        "mean_request_tokens": sum(r.total for r in trace) / len(trace),
        "waste": {B: s.waste for B, s in paged.items()},
        "running": {B: s.running for B, s in paged.items()},
        "preemptions": {B: s.preemptions for B, s in paged.items()},
        "prealloc_waste": prealloc.waste,
        "prealloc_running": prealloc.running,
        "cow": cow,
    }
    if ctx.out_dir is not None:
        bs = sorted(paged)
        save_line_plot(
            ctx.out_dir / "waste_by_block_size.svg",
            {
                "paged (blocks of B)": (bs, [100 * paged[b].waste for b in bs]),
                "max-length preallocation": (bs, [100 * prealloc.waste for _ in bs]),
            },
            "block size B (tokens)",
            "KV slots wasted (%)",
            "Waste by block size (seeded ShareGPT-like trace, OPT-13B budget)",
            logx=True,
        )
    return metrics


@claim("waste-block-16")
def waste_block_16(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(100 * m["waste"][16], {"waste_by_block_size": m["waste"]})


@claim("waste-grows-with-block-size")
def waste_grows_with_block_size(ctx: Context) -> Measured:
    m = ctx.experiment()
    w = [m["waste"][b] for b in sorted(m["waste"])]
    return Measured(
        all(a < b for a, b in zip(w, w[1:], strict=False)), {"waste_by_block_size": m["waste"]}
    )


@claim("prealloc-waste-control")
def prealloc_waste_control(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(100 * m["prealloc_waste"], {"paged_waste_B16": m["waste"][16]})


@claim("batched-sequences-ratio")
def batched_sequences_ratio(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(
        m["running"][16] / m["prealloc_running"],
        {"paged_B16_running": m["running"][16], "prealloc_running": m["prealloc_running"],
         "preemptions_B16": m["preemptions"][16]},
    )  # fmt: skip


@claim("cow-parallel-sampling-saving")
def cow_parallel_sampling_saving(ctx: Context) -> Measured:
    m = ctx.experiment()
    n = max(m["cow"])
    return Measured(100 * m["cow"][n]["saving"], {"by_samples": m["cow"]})
