"""Decode benchmark: KV-cached generation vs recomputing the whole prefix every token.

Pope et al., "Efficiently Scaling Transformer Inference", https://arxiv.org/abs/2211.05102
(§2: generation is one token at a time, and its cost is dominated by reading weights and the
KV cache from memory). Glossary: B batch, T0 prompt length, N new tokens, L layers, C d_model.

`bench_decode` returns plain dicts (no printing); `paperlab bench decode` renders them.
Per-token times are medians over a window, so a busy machine shifts them less than means would;
totals are wall-clock, with process CPU time beside them (on a machine shared with other jobs
the CPU-time ratio shows how much of a wall-clock ratio is the neighbours).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from repro.models.gpt import GPT, GPTConfig
from repro.nn.kv_cache import generate

WINDOW = 64  # tokens in the "first" and "last" per-token windows


def tiny_gpt_config(max_seq_len: int) -> GPTConfig:
    """The benchmark's decoder: 4 layers, d_model 256, 4 heads, vocabulary 256."""
    return GPTConfig(
        n_layers=4, d_model=256, n_heads=4, vocab_size=256, max_seq_len=max_seq_len, backend="sdpa"
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed_generate(
    model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool, device: str
) -> tuple[torch.Tensor, float, float, list[float]]:
    """Greedy generation -> (tokens (B, T0+N), wall s, process CPU s, wall s per new token)."""
    stamps: list[float] = []

    def on_token(t: int) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    _sync(device)
    cpu_start, start = time.process_time(), time.perf_counter()
    tokens = generate(model, prompt, new_tokens, use_cache=use_cache, on_token=on_token)
    total, cpu = stamps[-1] - start, time.process_time() - cpu_start
    # token 0's time includes the prefill; later tokens are one decode step each
    per_token = [b - a for a, b in zip([start, *stamps[:-1]], stamps, strict=True)]
    return tokens, total, cpu, per_token


def _window_ms(per_token: list[float]) -> tuple[float, float]:
    """Median ms of the first WINDOW decode steps (after the prefill token) and the last WINDOW."""
    first = per_token[1 : 1 + WINDOW]
    last = per_token[-WINDOW:]
    return 1e3 * statistics.median(first), 1e3 * statistics.median(last)


def bench_decode(
    new_tokens: int = 1024,
    prompt_len: int = 16,
    cfg: GPTConfig | None = None,
    device: str = "cpu",
    batch: int = 1,
    recompute: bool = True,
    seed: int = 0,
) -> dict:
    """Time greedy decoding of `new_tokens` with the KV cache and (if `recompute`) without it."""
    if new_tokens < 2 * WINDOW + 1:
        raise ValueError(f"new_tokens must be at least {2 * WINDOW + 1}, got {new_tokens}")
    cfg = cfg or tiny_gpt_config(prompt_len + new_tokens)
    torch.manual_seed(seed)
    model = GPT(cfg).to(device).eval()
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, cfg.vocab_size, (batch, prompt_len), generator=g).to(device)
    generate(model, prompt, 2 * WINDOW + 1)  # warm-up: allocator, kernels, caches

    cached, cached_s, cached_cpu, cached_steps = _timed_generate(
        model, prompt, new_tokens, True, device
    )
    c_first, c_last = _window_ms(cached_steps)
    out: dict = {
        "device": device,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "config": {
            k: v for k, v in dataclasses.asdict(cfg).items() if isinstance(v, int | str | float)
        },
        "cached_s": cached_s,
        "cached_cpu_s": cached_cpu,
        "cached_ms_per_token": 1e3 * cached_s / new_tokens,
        "cached_first_ms": c_first,
        "cached_last_ms": c_last,
        "cached_last_over_first": c_last / c_first,
        "cached_step_ms": [1e3 * t for t in cached_steps],
    }
    if recompute:
        full, full_s, full_cpu, full_steps = _timed_generate(
            model, prompt, new_tokens, False, device
        )
        r_first, r_last = _window_ms(full_steps)
        out |= {
            "recompute_s": full_s,
            "recompute_cpu_s": full_cpu,
            "recompute_ms_per_token": 1e3 * full_s / new_tokens,
            "recompute_first_ms": r_first,
            "recompute_last_ms": r_last,
            "recompute_last_over_first": r_last / r_first,
            "speedup": full_s / cached_s,
            "speedup_cpu_time": full_cpu / cached_cpu,
            "tokens_match": bool(torch.equal(cached, full)),
            "recompute_step_ms": [1e3 * t for t in full_steps],
        }
    return out


def memory_bandwidth(nbytes: int = 1 << 28, repeats: int = 5, device: str = "cpu") -> float:
    """Bytes/s of a large tensor copy (each copy reads and writes nbytes: 2·nbytes moved), best
    of `repeats` — the STREAM "copy" figure, an upper bound on what decoding can stream."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: touch every page
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best
