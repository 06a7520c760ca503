"""Seeded request-length traces and a memory simulation of serving them.

Kwon et al., "Efficient Memory Management for Large Language Model Serving with PagedAttention",
https://arxiv.org/abs/2309.06180 (§3: reserved slots, internal and external fragmentation;
§6.1: workloads synthesised from the input/output lengths of ShareGPT and Alpaca).

The lengths are drawn here from lognormal distributions with a chosen mean (no dataset is
shipped); `simulate` serves a trace with a fixed number of KV slots, one token per running
sequence per iteration, admitting requests first come first served while memory lasts.
Glossary: B block size, S sequence length, M the KV budget in token slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from repro.serving.paged import OutOfBlocks, PagedKVCache


@dataclass(frozen=True)
class Request:
    prompt_len: int
    output_len: int

    @property
    def total(self) -> int:
        return self.prompt_len + self.output_len


def lognormal_lengths(
    n: int, mean: float, sigma: float, max_len: int, generator: torch.Generator
) -> list[int]:
    """n lengths from a lognormal with the given mean and log-std, clipped to [1, max_len]."""
    mu = math.log(mean) - sigma**2 / 2  # E[exp(N(mu, σ²))] = exp(mu + σ²/2) = mean
    x = torch.exp(mu + sigma * torch.randn(n, generator=generator, dtype=torch.float64))
    return [int(v) for v in x.round().clamp(1, max_len)]


def make_trace(
    n: int,
    seed: int,
    mean_prompt: float = 161.0,
    mean_output: float = 338.0,
    sigma: float = 1.0,
    max_len: int = 2048,
) -> list[Request]:
    """n requests; defaults take the means of the paper's ShareGPT lengths (Fig. 11a) and
    OPT's 2048-token context. prompt + output never exceeds max_len."""
    if n < 1:
        raise ValueError(f"a trace needs at least one request, got n={n}")
    g = torch.Generator().manual_seed(seed)
    prompts = lognormal_lengths(n, mean_prompt, sigma, max_len - 1, g)
    outputs = lognormal_lengths(n, mean_output, sigma, max_len, g)
    return [Request(p, max(1, min(o, max_len - p))) for p, o in zip(prompts, outputs, strict=True)]


@dataclass
class ServeStats:
    """Time averages over the iterations of a simulation."""

    waste: float  # 1 − tokens stored / slots allocated
    running: float  # sequences in the batch
    iterations: int
    preemptions: int


def simulate(
    trace: list[Request], budget_slots: int, block_size: int | None, max_len: int = 2048
) -> ServeStats:
    """Serve `trace` with `budget_slots` KV slots: paged blocks of `block_size`, or with
    block_size None a contiguous max_len chunk reserved per request (the control).

    Every iteration each running sequence adds one token; a finished one frees its memory; then
    waiting requests are admitted in order while their prompt (+ one token) fits. A paged
    sequence that needs a block when none is free preempts the latest admitted one, which
    restarts later (vLLM's recomputation)."""
    paged = block_size is not None
    too_long = [r.total for r in trace if r.total > min(budget_slots, max_len)]
    if too_long:
        raise ValueError(f"a request of {too_long[0]} tokens can never fit {budget_slots} slots")
    cache = (
        PagedKVCache(budget_slots // block_size, block_size, 1, 1, device="meta") if paged else None
    )
    chunks_free = budget_slots // max_len
    queue = list(range(len(trace)))
    running: list[tuple[int, int]] = []  # (request, sequence id or -1)
    done_tokens: dict[int, int] = {}
    waste_sum = alloc_sum = running_sum = 0.0
    iterations = preemptions = 0
    while queue or running:
        # admit
        while queue:
            r = trace[queue[0]]
            if paged:
                if cache.allocator.num_free * block_size < r.prompt_len + 1:
                    break
                seq = cache.new_sequence()
                cache.reserve(seq, r.prompt_len)
            else:
                if chunks_free == 0:
                    break
                chunks_free -= 1
                seq = -1
            running.append((queue.pop(0), seq))
            done_tokens[running[-1][0]] = r.prompt_len
        assert running, f"nothing admitted with {budget_slots} slots"
        # one decoding iteration
        i = 0
        while i < len(running):
            req, seq = running[i]
            if paged:
                try:
                    cache.reserve(seq, 1)
                except OutOfBlocks:  # preempt the latest admitted sequence, retry
                    victim_req, victim_seq = running.pop()
                    cache.free(victim_seq)
                    queue.insert(0, victim_req)
                    preemptions += 1
                    continue
            done_tokens[req] += 1
            i += 1
        stored = sum(done_tokens[req] for req, _ in running)
        allocated = cache.slots_allocated() if paged else len(running) * max_len
        waste_sum += allocated - stored
        alloc_sum += allocated
        running_sum += len(running)
        iterations += 1
        finished = [(req, seq) for req, seq in running if done_tokens[req] >= trace[req].total]
        for req, seq in finished:
            if paged:
                cache.free(seq)
            else:
                chunks_free += 1
            running.remove((req, seq))
    return ServeStats(waste_sum / alloc_sum, running_sum / iterations, iterations, preemptions)
