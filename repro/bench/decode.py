"""Decode benchmark: KV-cached generation vs recomputing the whole prefix every token.

Pope et al., "Efficiently Scaling Transformer Inference", https://arxiv.org/abs/2211.05102
(§2: generation is one token at a time, and its cost is dominated by reading weights and the
KV cache from memory). Glossary: B batch, T0 prompt length, N new tokens, L layers, C d_model.

`bench_decode` returns plain dicts (no printing); `paperlab bench decode` renders them.

Two clocks. Wall time is what a user waits for. CPU time (of this process) is the work done:
on a machine shared with other jobs the scheduler hands a freshly woken process the CPU first
and a long-running one only its fair share, so wall-clock steps late in a generation look
slower than early ones for reasons that have nothing to do with the cache. On an idle machine
with one thread the two clocks agree. Per-token figures are medians over a window of steps.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from repro.bench.timing import sync
from repro.lab.threads import torch_threads
from repro.models.gpt import GPT, GPTConfig
from repro.nn.kv_cache import caches_for, generate

WINDOW = 64  # tokens in the "first" and "last" per-token windows


def tiny_gpt_config(max_seq_len: int) -> GPTConfig:
    """The benchmark's decoder: 4 layers, d_model 256, 4 heads, vocabulary 256."""
    return GPTConfig(
        n_layers=4, d_model=256, n_heads=4, vocab_size=256, max_seq_len=max_seq_len, backend="sdpa"
    )


@dataclasses.dataclass
class Timed:
    tokens: torch.Tensor  # (B, T0 + N)
    wall_s: float
    cpu_s: float
    wall_steps: list[float]  # seconds per new token; token 0 includes the prefill
    cpu_steps: list[float]


def _timed_generate(
    model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool, device: str
) -> Timed:
    """Greedy generation, stamping both clocks after every sampled token."""
    wall, cpu = [time.perf_counter()], [time.process_time()]

    def on_token(t: int) -> None:
        sync(device)
        wall.append(time.perf_counter())
        cpu.append(time.process_time())

    sync(device)
    wall[0], cpu[0] = time.perf_counter(), time.process_time()
    tokens = generate(model, prompt, new_tokens, use_cache=use_cache, on_token=on_token)
    return Timed(
        tokens,
        wall[-1] - wall[0],
        cpu[-1] - cpu[0],
        [b - a for a, b in zip(wall, wall[1:], strict=False)],
        [b - a for a, b in zip(cpu, cpu[1:], strict=False)],
    )


def _windows_ms(steps: list[float]) -> tuple[float, float]:
    """Median ms of the first WINDOW decode steps (after the prefill token) and the last WINDOW."""
    return 1e3 * statistics.median(steps[1 : 1 + WINDOW]), 1e3 * statistics.median(steps[-WINDOW:])


def _shape(runs: list[Timed], clock: str) -> dict[str, float]:
    """first/last window medians and their ratio, median over runs, for 'wall' or 'cpu'."""
    windows = [_windows_ms(getattr(r, f"{clock}_steps")) for r in runs]
    return {
        f"first_ms_{clock}": statistics.median(w[0] for w in windows),
        f"last_ms_{clock}": statistics.median(w[1] for w in windows),
        f"last_over_first_{clock}": statistics.median(last / first for first, last in windows),
    }


def _both(*runs: Timed) -> dict[str, float]:
    return _shape(list(runs), "cpu") | _shape(list(runs), "wall")


def bench_decode(
    new_tokens: int = 1024,
    prompt_len: int = 16,
    cfg: GPTConfig | None = None,
    device: str = "cpu",
    batch: int = 1,
    recompute: bool = True,
    seed: int = 0,
    repeats: int = 3,
    threads: int | None = 1,
) -> dict:
    """Time greedy decoding of `new_tokens` with the KV cache (`repeats` runs, medians) and, if
    `recompute`, once recomputing the prefix. One thread by default: a batch-1 step of a tiny
    model gains nothing from more, and on a busy 2-core machine they only wait on each other."""
    if new_tokens < 2 * WINDOW + 1:
        raise ValueError(f"new_tokens must be at least {2 * WINDOW + 1}, got {new_tokens}")
    cfg = cfg or tiny_gpt_config(prompt_len + new_tokens)
    with torch_threads(threads):
        torch.manual_seed(seed)
        model = GPT(cfg).to(device).eval()
        g = torch.Generator().manual_seed(seed)
        prompt = torch.randint(0, cfg.vocab_size, (batch, prompt_len), generator=g).to(device)
        generate(model, prompt, 2 * WINDOW + 1)  # warm-up: allocator, kernels, caches
        runs = [_timed_generate(model, prompt, new_tokens, True, device) for _ in range(repeats)]
        full = _timed_generate(model, prompt, new_tokens, False, device) if recompute else None
        n_threads = torch.get_num_threads()
    kv_per_position = sum(c.nbytes for c in caches_for(cfg, batch, 1))  # all layers, k and v
    cached_wall = statistics.median(r.wall_s for r in runs)
    cached_cpu = statistics.median(r.cpu_s for r in runs)
    out: dict = {
        "device": device,
        "threads": n_threads,
        "batch": batch,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "config": {
            k: v for k, v in dataclasses.asdict(cfg).items() if isinstance(v, int | str | float)
        },
        "weights_MB": sum(p.nbytes for p in model.parameters()) / 1e6,
        "kv_MB_read_by_last_step": kv_per_position * (prompt_len + new_tokens) / 1e6,
        "cached_s_wall": cached_wall,
        "cached_s_cpu": cached_cpu,
        "cached_ms_per_token_wall": 1e3 * cached_wall / new_tokens,
        **{f"cached_{k}": v for k, v in _both(*runs).items()},
        "cached_step_ms_cpu": [1e3 * t for t in runs[0].cpu_steps],
    }
    if full is not None:
        out |= {
            "recompute_s_wall": full.wall_s,
            "recompute_s_cpu": full.cpu_s,
            "recompute_ms_per_token_wall": 1e3 * full.wall_s / new_tokens,
            **{
                f"recompute_{k}": v
                for k, v in (_shape([full], "cpu") | _shape([full], "wall")).items()
            },
            "speedup_cpu": full.cpu_s / cached_cpu,
            "speedup_wall": full.wall_s / cached_wall,
            "tokens_match": bool(torch.equal(runs[0].tokens, full.tokens)),
            "recompute_step_ms_cpu": [1e3 * t for t in full.cpu_steps],
        }
    return out


def memory_bandwidth(
    nbytes: int = 1 << 28, repeats: int = 5, device: str = "cpu", threads: int | None = 1
) -> dict[str, float]:
    """Bytes/s of a large tensor copy (each copy reads and writes nbytes: 2·nbytes move), best of
    `repeats` — the STREAM "copy" figure — by the wall clock and by this process's CPU time."""
    with torch_threads(threads):
        src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        dst = torch.empty_like(src)
        dst.copy_(src)  # warm-up: touch every page
        best_wall = best_cpu = float("inf")
        for _ in range(repeats):
            sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            dst.copy_(src)
            sync(device)
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
    moved = 2 * src.nbytes
    return {"wall": moved / best_wall, "cpu": moved / best_cpu}
