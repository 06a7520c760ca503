"""Efficiently Scaling Transformer Inference (Pope, Douglas, Chowdhery, Devlin, Bradbury,
Levskaya, Heek, Xiao, Agrawal, Dean; MLSys 2023) — reproduction.

https://arxiv.org/abs/2211.05102

Glossary: B batch, T0 prompt length, S context length (cached positions), L layers, H query heads,
Hkv key/value heads (1 for the paper's multiquery attention), D head dim, C d_model, N parameters.

The paper's object is generative inference: a prefill over the prompt, then one forward per
new token that reads every weight and the whole KV cache from memory (§2). At small batch a
decode step does ~2 FLOPs per weight read, so it is memory-bound: its latency is at least

    t_token ≥ (bytes of weights + bytes of KV cache) / memory bandwidth        (§2.1)

and the KV cache holds, per token and sequence, 2 · L · Hkv · D values (§2, §3.3).

What is checked here, claim by claim (see note.yaml):
1. cached decoding emits exactly the tokens of recomputing the prefix every step (measured);
2. the cache is the speed-up: ≥ 15× at 1024 new tokens, and a flat per-token cost (benchmarks);
3. bytes per cached token = 2·L·Hkv·D·bytes, read off allocated cache buffers for PaLM 540B
   (derived), and the multiquery reduction H for PaLM 540B's 48 heads (derived);
4. the memory-bandwidth bound: a decoder whose weights dwarf the CPU caches decodes at the
   speed of streaming its weights once per token (benchmark), with this machine's bandwidth
   measured by a large copy.
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass

import torch

from repro.bench.decode import bench_decode, memory_bandwidth
from repro.lab.claims import Context, Measured, claim
from repro.lab.counting import kv_cache_bytes_per_token
from repro.lab.settings import setting
from repro.lab.threads import torch_threads
from repro.models.gpt import GPT, GPTConfig
from repro.nn.kv_cache import caches_for, generate
from repro.study.plots import save_line_plot


@dataclass(frozen=True)
class Config:
    # --device reaches the timing checks; the experiment runs on the CPU
    CPU_EXPERIMENT = "greedy decoding with the cache against recomputing the prefix, for exactness"
    # exactness: greedy generation from tiny decoders, with and without the cache
    exact_batch: int = setting(4, "prompts (B prompts)", min=1)
    exact_prompt_len: int = setting(8, "prompt tokens (T0)", min=1)
    exact_new_tokens: int = setting(48, "tokens generated in the exactness check", min=1)
    # the decode benchmark (repro/bench/decode.py): 4 layers, d_model 256, 4 heads, V = 256
    bench_new_tokens: int = setting(
        1024, "tokens decoded by the benchmark (first and last 64 are compared)", min=129
    )
    bench_prompt_len: int = setting(16, "prompt tokens of the benchmark", min=1)
    # the bandwidth-bound decoder: fp32 weights far larger than the last-level cache
    big_d_model: int = setting(
        2048, "width of the bandwidth-bound decoder (a multiple of 128)", min=128
    )
    big_layers: int = setting(8, "layers of the bandwidth-bound decoder", min=1)
    big_new_tokens: int = setting(8, "decode steps timed on it", min=2)
    copy_bytes: int = setting(
        1 << 29, "the bandwidth probe copies this many bytes (reads + writes 2×)", min=1024
    )


PRESETS = {"quick": Config(), "full": Config(exact_new_tokens=200, exact_batch=8)}

# PaLM 540B (Chowdhery et al. 2022, Table 1): 118 layers, d_model 18432, 48 heads of 256 dims,
# multiquery attention (one key/value head), bf16 activations.
PALM_540B = dict(n_layers=118, d_model=18432, n_heads=48, head_dim=256, n_kv_heads=1)


# --- 1. the cache changes nothing but the cost -------------------------------------------


def tiny_decoder(n_kv_heads: int, max_seq_len: int, seed: int, backend: str = "auto") -> GPT:
    """The benchmark's decoder shape: 4 layers, d_model 256, 4 query heads, V = 256."""
    torch.manual_seed(seed)
    cfg = GPTConfig(
        n_layers=4,
        d_model=256,
        n_heads=4,
        n_kv_heads=n_kv_heads,
        vocab_size=256,
        max_seq_len=max_seq_len,
        backend=backend,
    )
    return GPT(cfg).eval()


def experiment(cfg: Config, ctx: Context) -> dict:
    """Greedy tokens with the cache vs recomputing the prefix, for MHA and MQA decoders."""
    with torch_threads(1):  # batch-4 steps of a 256-wide model: one thread is enough
        return _exactness(cfg, ctx)


def _exactness(cfg: Config, ctx: Context) -> dict:
    results = {}
    for name, n_kv_heads in (("mha", 4), ("mqa", 1)):
        model = tiny_decoder(n_kv_heads, cfg.exact_prompt_len + cfg.exact_new_tokens, ctx.seed)
        g = torch.Generator().manual_seed(ctx.seed)
        prompt = torch.randint(0, 256, (cfg.exact_batch, cfg.exact_prompt_len), generator=g)
        cached = generate(model, prompt, cfg.exact_new_tokens)  # prefill + one-token steps
        full = generate(model, prompt, cfg.exact_new_tokens, use_cache=False)  # recompute all
        with torch.no_grad():  # how close the two logit paths are, and how close a tie came
            T0, N = cfg.exact_prompt_len, cached.shape[1]
            caches = caches_for(model.cfg, cfg.exact_batch, N)
            steps = [model(cached[:, :T0], 0, caches)]  # prefill: (B, T0, V)
            steps += [model(cached[:, t : t + 1], t, caches) for t in range(T0, N - 1)]
            step_logits = torch.cat(steps, dim=1)  # (B, N - 1, V)
            full_logits = model(cached[:, :-1])  # (B, N - 1, V)
            top2 = full_logits[:, T0 - 1 :].topk(2, dim=-1).values  # logits that chose tokens
        results[name] = {
            "tokens_match": bool(torch.equal(cached, full)),
            "max_logit_diff": (step_logits - full_logits).abs().max().item(),
            "min_top1_top2_margin": (top2[..., 0] - top2[..., 1]).min().item(),
        }
        ctx.progress("efficient-inference: exactness", len(results), 2)
    return results


@claim("cached-equals-recomputed")
def cached_equals_recomputed(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(all(r["tokens_match"] for r in m.values()), m)


# --- 2. the speed-up, and its shape -------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _bench(new_tokens: int, prompt_len: int, device: str, seed: int) -> dict:
    return bench_decode(new_tokens, prompt_len, device=device, seed=seed)


def _bench_ctx(ctx: Context) -> dict:
    cfg = ctx.config
    result = _bench(cfg.bench_new_tokens, cfg.bench_prompt_len, ctx.device, ctx.seed)
    if ctx.out_dir is not None:
        xs = list(range(1, cfg.bench_new_tokens + 1))
        save_line_plot(
            ctx.out_dir / "per_token_ms.svg",
            {
                "KV cache": (xs, result["cached_step_ms_cpu"]),
                "recompute prefix": (xs, result["recompute_step_ms_cpu"]),
            },
            "new token",
            "CPU ms per token",
            "Greedy decoding, tiny GPT (first token includes the prefill)",
            logy=True,
        )
    return result


def _summary(r: dict) -> dict:
    return {k: v for k, v in r.items() if "step_ms" not in k}


def _clock(ctx: Context) -> str:
    """CPU time on the CPU (robust to neighbours on a shared machine), wall time on a GPU."""
    return "wall" if ctx.device.startswith("cuda") else "cpu"


@claim("decode-speedup", benchmark=True)
def decode_speedup(ctx: Context) -> Measured:
    r = _bench_ctx(ctx)
    return Measured(r[f"speedup_{_clock(ctx)}"], _summary(r))


@claim("decode-flat-per-token", benchmark=True)
def decode_flat_per_token(ctx: Context) -> Measured:
    """Median step time, last 64 / first 64 decode steps; beside it what a purely
    memory-bound step would show, (weights + KV at the end) / (weights + KV at the start)."""
    r = _bench_ctx(ctx)
    kv_end = r["kv_MB_read_by_last_step"]
    kv_start = kv_end * (r["prompt_len"] + 64) / (r["prompt_len"] + r["new_tokens"])
    memory_bound = (r["weights_MB"] + kv_end) / (r["weights_MB"] + kv_start)
    ratio = r[f"cached_last_over_first_{_clock(ctx)}"]
    return Measured(ratio, _summary(r) | {"memory_bound_ratio": memory_bound})


# --- 3. how big the cache is --------------------------------------------------------------


def palm_cache_bytes(n_kv_heads: int, batch: int, context: int) -> int:
    """Bytes of PaLM 540B's bf16 KV cache, allocated on the meta device (no memory used)."""
    cfg = GPTConfig(**PALM_540B | {"n_kv_heads": n_kv_heads}, vocab_size=256, max_seq_len=context)
    return sum(c.nbytes for c in caches_for(cfg, batch, context, torch.bfloat16, "meta"))


@claim("kv-bytes-per-token")
def kv_bytes_per_token(ctx: Context) -> Measured:
    """Allocated bytes / (B · S) for PaLM 540B with multiquery attention."""
    B, S = 2, 2048
    measured = palm_cache_bytes(1, B, S) / (B * S)
    formula = kv_cache_bytes_per_token(PALM_540B["n_layers"], 1, PALM_540B["head_dim"], 2)
    return Measured(
        measured,
        {
            "formula_2_L_Hkv_D_bytes": formula,
            "batch_512_context_2048_GB": 512 * 2048 * measured / 1e9,
        },
    )


@claim("multiquery-kv-reduction")
def multiquery_kv_reduction(ctx: Context) -> Measured:
    """PaLM 540B cache with 48 key/value heads (MHA) over the same with 1 (multiquery)."""
    mha, mqa = palm_cache_bytes(PALM_540B["n_heads"], 1, 2048), palm_cache_bytes(1, 1, 2048)
    return Measured(
        mha / mqa,
        {
            "mha_bytes_per_token": mha / 2048,
            "mqa_bytes_per_token": mqa / 2048,
            "mha_batch_512_context_2048_TB": 512 * mha / 1e12,
        },
    )


# --- 4. the memory-bandwidth bound --------------------------------------------------------


def bytes_read_per_token(model: GPT, context: int) -> int:
    """Weights streamed by one decode step + the cached k/v it attends over (fp32).

    Every matrix is read once; of the position table only one row is read. The tied token
    embedding is read in full by the output head.
    """
    weights = sum(p.nbytes for p in model.parameters()) - model.wpe.weight.nbytes
    cfg = model.cfg
    kv = kv_cache_bytes_per_token(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, 4) * context
    return weights + kv


def decode_step_seconds(
    model: GPT, prompt_len: int, new_tokens: int, device: str, clock: str
) -> float:
    """Median time of the one-token decode steps (the prefill excluded) by `clock`."""
    now = time.perf_counter if clock == "wall" else time.process_time
    stamps: list[float] = []

    def on_token(t: int) -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(now())

    prompt = torch.zeros(1, prompt_len, dtype=torch.long, device=device)
    generate(model, prompt, new_tokens, on_token=on_token)
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))


@claim("decode-bandwidth-bound", benchmark=True)
def decode_bandwidth_bound(ctx: Context) -> Measured:
    """Measured step time / (bytes read per step / copy bandwidth), for a decoder whose fp32
    weights (~1.6 GB) exceed every CPU cache; the tiny benchmark decoder for comparison."""
    cfg, clock = ctx.config, _clock(ctx)
    with torch_threads(1):  # one stream of memory traffic: one core, like the copy probe
        bandwidth = memory_bandwidth(cfg.copy_bytes, device=ctx.device, threads=1)[clock]
        prompt_len = 16
        big_cfg = GPTConfig(
            n_layers=cfg.big_layers,
            d_model=cfg.big_d_model,
            n_heads=cfg.big_d_model // 128,
            vocab_size=256,
            max_seq_len=prompt_len + cfg.big_new_tokens,
            backend="sdpa",
        )
        with torch.device("meta"):
            big = GPT(big_cfg)
        big = big.to_empty(device=ctx.device).eval()  # timing needs the memory, not the init
        with torch.no_grad():
            for p in big.parameters():
                p.uniform_(-0.02, 0.02)
        step = decode_step_seconds(big, prompt_len, cfg.big_new_tokens, ctx.device, clock)
        read = bytes_read_per_token(big, prompt_len + cfg.big_new_tokens // 2)
        bound = read / bandwidth  # §2.1: t ≥ bytes / bandwidth
        flops = 2 * sum(p.numel() for p in big.parameters())  # ≈ 2N FLOPs per token
        del big
        # the tiny decoder of the speed-up benchmark, early in its generation
        tiny = tiny_decoder(4, 16 + 64 + 1, ctx.seed, backend="sdpa")
        tiny_step = decode_step_seconds(tiny, 16, 64, ctx.device, clock)
        tiny_bound = bytes_read_per_token(tiny, 16 + 32) / bandwidth
    return Measured(
        step / bound,
        {
            "bandwidth_GBps": bandwidth / 1e9,
            "big_bytes_per_token_MB": read / 1e6,
            "big_step_ms": 1e3 * step,
            "big_bound_ms": 1e3 * bound,
            "big_flops_per_byte": flops / read,
            "tiny_bytes_per_token_MB": bytes_read_per_token(tiny, 48) / 1e6,
            "tiny_step_ms": 1e3 * tiny_step,
            "tiny_bound_ms": 1e3 * tiny_bound,
            "tiny_step_over_bound": tiny_step / tiny_bound,
            "clock": clock,
            "threads": 1,
        },
    )
