"""Scan benchmark: the selective scan (loop and parallel) against attention, and Mamba's
recurrent decoding against a GPT's KV-cache decoding.

Gu & Dao, "Mamba", https://arxiv.org/abs/2312.00752 (§3.3: the scan is O(BLDN); §4.5 and
App. E.5: scan vs attention, inference throughput). Glossary: B batch, L length, D channels,
N state size, H heads, Dh head dim.

One layer's sequence mixing at the same width: the scan over D = 64 channels with N = 16
(inputs (B, L, D)) against causal attention with one head of Dh = 64 (inputs (B, 1, L, Dh)), both
fp32 forwards without projections. FLOPs: the scan does ≈ 9·B·L·D·N (exp(ΔA), ΔB·u, a·h + b,
C·h), attention 2·B·H·L²·Dh for QKᵀ and PV with the causal half skipped (as FlashAttention
counts it). Exponents are least-squares slopes of log time against log L. Times are process
CPU seconds on one thread (the work done, which a busy machine inflates far less than the wall
clock). Functions return plain dicts; `paperlab bench scan` renders them.
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from repro.lab.threads import torch_threads
from repro.nn.attention import attention_ref
from repro.nn.ssm import selective_scan, selective_scan_chunked, selective_scan_ref

IMPLS = ("scan_loop", "scan_parallel", "scan_chunked", "sdpa", "naive")
SCANS = {
    "scan_loop": selective_scan_ref,
    "scan_parallel": selective_scan,
    "scan_chunked": selective_scan_chunked,
}
SCAN_FLOPS_PER_ELEMENT = 9  # per (b, t, d, n): exp and Δ·A (2), Δ·B·u (2), a·h + b (2), C·h (2), +1


def scan_flops(L: int, B: int = 1, D: int = 64, N: int = 16) -> float:
    return SCAN_FLOPS_PER_ELEMENT * B * L * D * N


def attention_flops(L: int, B: int = 1, H: int = 1, Dh: int = 64) -> float:
    """QKᵀ and PV, 2 FLOPs per multiply-add, causal half: 2·B·H·L²·Dh."""
    return 2 * B * H * L * L * Dh


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    """Slope of the least-squares line through (log x, log y)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum(
        (a - mx) ** 2 for a in lx
    )


def cpu_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median process CPU seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def _inputs(impl: str, L: int, B: int, D: int, N: int, seed: int = 0) -> Callable[[], object]:
    """A no-argument forward of `impl` over fresh random inputs of length L."""
    g = torch.Generator().manual_seed(seed)
    if impl.startswith("scan"):
        u, z = torch.randn(B, L, D, generator=g), torch.randn(B, L, D, generator=g)
        delta = F.softplus(torch.randn(B, L, D, generator=g) - 3)  # (B, L, D)
        A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(D, 1)  # S4D-real (D, N)
        Bt, Ct = torch.randn(B, L, N, generator=g), torch.randn(B, L, N, generator=g)
        return lambda: SCANS[impl](u, delta, A, Bt, Ct, torch.ones(D), z)
    q, k, v = (torch.randn(B, 1, L, D, generator=g) for _ in range(3))  # (B, H, L, Dh)
    if impl == "sdpa":
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return lambda: attention_ref(q, k, v, causal=True)


def bench_scan(
    lengths: tuple[int, ...] = (512, 1024, 2048, 4096, 8192),
    impls: tuple[str, ...] = IMPLS,
    B: int = 1,
    D: int = 64,
    N: int = 16,
    repeats: int = 3,
    threads: int | None = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Median forward seconds of each impl at each L, and each impl's fitted exponent."""
    for impl in impls:
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    rows: list[dict] = []
    total = len(lengths) * len(impls)
    with torch_threads(threads), torch.no_grad():
        for L in lengths:
            for impl in impls:
                seconds = cpu_seconds(_inputs(impl, L, B, D, N), repeats)
                flops = scan_flops(L, B, D, N) if impl.startswith("scan") else attention_flops(L, B)
                rows.append(
                    {"L": L, "impl": impl, "ms": 1e3 * seconds, "gflops": flops / seconds / 1e9}
                )
                if progress is not None:
                    progress(len(rows), total)
        n_threads = torch.get_num_threads()
    exponents = {
        impl: fit_exponent(
            [r["L"] for r in rows if r["impl"] == impl],
            [r["ms"] for r in rows if r["impl"] == impl],
        )
        for impl in impls
        if len(lengths) > 1
    }
    return {
        "B": B,
        "D": D,
        "N": N,
        "H": 1,
        "Dh": D,
        "threads": n_threads,
        "rows": rows,
        "exponents": exponents,
        "flop_exponents": {"scan": 1.0, "attention": 2.0},
    }


# One forward in a fresh interpreter on one thread; prints peak RSS minus the RSS once the
# inputs exist (VmHWM: see repro/bench/attention.py for why not ru_maxrss).
_MEMORY_SCRIPT = """
import sys
import torch
from repro.bench.scan import _inputs

torch.set_num_threads(1)
impl, L, B, D, N = sys.argv[1], *map(int, sys.argv[2:6])
with torch.no_grad():
    _inputs(impl, 64, B, D, N)()  # warm-up
    fn = _inputs(impl, L, B, D, N)
    with open("/proc/self/statm") as f:
        base = int(f.read().split()[1]) * 4096
    fn()
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(peak - base)
"""


def peak_memory(impl: str, L: int, B: int = 1, D: int = 64, N: int = 16) -> int:
    """Extra bytes at the peak of one fp32 CPU forward of `impl` (Linux, fresh process)."""
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, impl, str(L), str(B), str(D), str(N)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"peak-memory measurement failed: {proc.stderr.strip()[-500:]}")
    return int(proc.stdout.strip().splitlines()[-1])


def bench_decode_recurrent(
    new_tokens: int = 512, prompt_len: int = 16, window: int = 64, threads: int | None = 1
) -> dict:
    """CPU ms per token of Mamba's recurrent step (8 blocks, d_model 256: two blocks per
    Transformer layer, §3.4) against KV-cache decoding of the 4-layer d_model-256 GPT of
    `repro.bench.decode`, medians of the first and last `window` steps."""
    from repro.bench.decode import tiny_gpt_config
    from repro.lab.counting import count_parameters
    from repro.models.gpt import GPT
    from repro.models.mamba import MambaConfig, MambaLM
    from repro.nn.kv_cache import caches_for

    with torch_threads(threads), torch.inference_mode():
        torch.manual_seed(0)
        mamba = MambaLM(MambaConfig(d_model=256, n_layers=8, vocab_size=256)).eval()
        gpt_cfg = tiny_gpt_config(prompt_len + new_tokens)
        gpt = GPT(gpt_cfg).eval()
        prompt = torch.randint(0, 256, (1, prompt_len))

        def mamba_steps() -> list[float]:
            states = mamba.init_state(1)
            for t in range(prompt_len):
                logits, states = mamba.step(prompt[:, t], states)
            times = []
            for _ in range(new_tokens):
                start = time.process_time()
                logits, states = mamba.step(logits.argmax(-1), states)
                times.append(time.process_time() - start)
            return times

        def gpt_steps() -> list[float]:
            caches = caches_for(gpt_cfg, 1, prompt_len + new_tokens)
            logits = gpt(prompt, 0, caches)[:, -1]
            times = []
            for t in range(prompt_len, prompt_len + new_tokens - 1):
                start = time.process_time()
                logits = gpt(logits.argmax(-1)[:, None], t, caches)[:, -1]
                times.append(time.process_time() - start)
            return times

        m, g = mamba_steps(), gpt_steps()
    state = sum(t.numel() * t.element_size() for s in mamba.init_state(1) for t in s)
    kv = sum(c.nbytes for c in caches_for(gpt_cfg, 1, prompt_len + new_tokens))

    def ms(xs: list[float]) -> float:
        return 1e3 * statistics.median(xs)

    return {
        "new_tokens": new_tokens,
        "mamba_params": count_parameters(mamba),
        "gpt_params": count_parameters(gpt),
        "mamba_first_ms": ms(m[:window]),
        "mamba_last_ms": ms(m[-window:]),
        "gpt_first_ms": ms(g[:window]),
        "gpt_last_ms": ms(g[-window:]),
        "mamba_state_bytes": state,
        "gpt_kv_bytes_at_end": kv,
    }
