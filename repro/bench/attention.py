"""Attention benchmark: FlashAttention (tiled PyTorch, or Triton on CUDA) against PyTorch's SDPA,
and against the flash-attn package (Dao's CUDA kernels) where it is installed and can run.

Dao et al., "FlashAttention", https://arxiv.org/abs/2205.14135 (Sec. 4: runtime and memory against
standard attention). Glossary: B batch, H heads, N sequence length (T = S = N), D head dim.

FLOPs are counted as the paper does: 4·B·H·N²·D for the forward (Q Kᵀ and P V), half of it when
causal, and 2.5× the forward for the backward (five matmuls instead of two). Times are medians of
repeats that alternate the implementations, so a busy machine slows them alike. Functions return
plain dicts; `paperlab bench attention` renders them (`python -m repro.bench.attention` prints
Markdown).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from repro.bench.timing import seconds, sync
from repro.nn import flash_triton
from repro.nn.attention import attention_ref
from repro.nn.flash import flash_attention

Progress = Callable[[int, int, dict], None]  # (rows done, rows in all, the row just measured)
IMPLS = ("flash", "sdpa", "naive")  # naive = attention_ref: materialises the (N, N) scores


def measure_matmul_peak(device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of a large square matmul, measured now (median of 5 after a warm-up)."""
    n = 8192 if device.startswith("cuda") else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty_like(a)
    for _ in range(2):
        torch.mm(a, b, out=out)
    sync(device)
    t = statistics.median(seconds(lambda: torch.mm(a, b, out=out), device) for _ in range(5))
    return 2 * n**3 / t / 1e9


def attention_flops(
    n: int, causal: bool, backward: bool, B: int = 1, H: int = 8, D: int = 64
) -> float:
    """FLOPs of one attention call over T = S = n, with the backward if asked."""
    forward = 4 * B * H * n * n * D / (2 if causal else 1)
    return forward * (3.5 if backward else 1.0)


def _flash_impl(q: torch.Tensor) -> tuple[str, Callable[..., torch.Tensor]]:
    """The FlashAttention this device gets: Triton on CUDA when supported, else the tiled one."""
    if flash_triton.supports(q, q, q, None):
        return "triton", flash_triton.flash_attention_triton
    return "flash", flash_attention


def _step(
    fn: Callable[..., torch.Tensor],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    backward: bool,
) -> Callable[[], object]:
    """One forward (and backward) of fn as a no-argument callable."""
    if not backward:
        return lambda: fn(q, k, v, causal)
    dout = torch.randn_like(q)
    return lambda: torch.autograd.grad(fn(q, k, v, causal), (q, k, v), dout)


def _time_alternating(fns: list[Callable[[], object]], device: str, repeats: int) -> list[float]:
    """Median seconds of each fn, taking turns after one warm-up each."""
    for fn in fns:
        fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            ts.append(seconds(fn, device))
    return [statistics.median(ts) for ts in times]


FlashAttnPackage = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]


def flash_attn_package(device: str, dtype: torch.dtype) -> tuple[FlashAttnPackage | None, str]:
    """The flash-attn package's kernel in this module's (B, H, N, D) layout, or None and why."""
    if not device.startswith("cuda"):
        return None, "the flash-attn package runs on CUDA only"
    if dtype not in (torch.float16, torch.bfloat16):
        return None, "the flash-attn package takes fp16 or bf16 only"
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None, "the flash-attn package is not installed (pip install flash-attn)"
    return in_bnhd_layout(flash_attn_func), "flash_attn.flash_attn_func"


def in_bnhd_layout(fn: Callable[..., torch.Tensor]) -> FlashAttnPackage:
    """flash-attn takes and returns (B, N, H, D): transposed views in and out (last dim unit
    stride, as it requires), so its time includes no copy."""

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        out = fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
        return out.transpose(1, 2)

    return attend


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def bench_attention(
    ns: tuple[int, ...] = (1024, 2048, 4096, 8192),
    causal: tuple[bool, ...] = (False, True),
    backward: bool = True,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    B: int = 1,
    H: int = 8,
    D: int = 64,
    progress: Progress | None = None,
    repeats: int = 5,
) -> list[dict]:
    """One row per (N, causal, pass) with flash and SDPA times, GFLOP/s and their ratio; with the
    flash-attn package's time and its largest difference from SDPA where it runs."""
    peak = measure_matmul_peak(device, dtype)
    package, _ = flash_attn_package(device, dtype)
    passes = ("fwd", "fwd+bwd") if backward else ("fwd",)
    total = len(ns) * len(causal) * len(passes)
    rows: list[dict] = []
    g = torch.Generator().manual_seed(0)
    for n in ns:
        q, k, v = (torch.randn(B, H, n, D, generator=g).to(device, dtype) for _ in range(3))
        impl, flash_fn = _flash_impl(q)
        fns = [flash_fn, _sdpa] + ([package] if package is not None else [])
        for c in causal:
            for name in passes:
                grad = name == "fwd+bwd"
                qq, kk, vv = (x.detach().requires_grad_(grad) for x in (q, k, v))
                times = _time_alternating(
                    [_step(fn, qq, kk, vv, c, grad) for fn in fns], device, repeats
                )
                t_flash, t_sdpa = times[:2]
                gflop = attention_flops(n, c, grad, B, H, D) / 1e9
                row = {
                    "n": n, "causal": c, "pass": name, "impl": impl, "device": device,
                    "dtype": str(dtype).removeprefix("torch."), "B": B, "H": H, "D": D,
                    "flash_ms": 1e3 * t_flash, "sdpa_ms": 1e3 * t_sdpa,
                    "ratio": t_flash / t_sdpa,
                    "flash_gflops": gflop / t_flash, "sdpa_gflops": gflop / t_sdpa,
                    "peak_gflops": peak,
                    "flash_frac_peak": gflop / t_flash / peak,
                    "sdpa_frac_peak": gflop / t_sdpa / peak,
                    "threads": torch.get_num_threads(),
                }  # fmt: skip
                if package is not None:
                    with torch.no_grad():  # a kernel timed on a wrong layout would mean nothing
                        err = (package(q, k, v, c).float() - _sdpa(q, k, v, c).float()).abs()
                    row |= {
                        "flash_attn_ms": 1e3 * times[2],
                        "flash_attn_gflops": gflop / times[2],
                        "flash_attn_max_abs_diff_vs_sdpa": float(err.max()),
                    }
                rows.append(row)
                if progress is not None:
                    progress(len(rows), total, row)
    return rows


# One forward in a fresh interpreter on one thread; prints the peak RSS minus the RSS once the
# inputs exist. A warm-up call with the same tile shapes first, so one-time lazy set-up (kernel
# scratch buffers) is not counted as attention memory. The peak is VmHWM, not ru_maxrss: Linux
# carries ru_maxrss across exec, so a child of a large parent would report the parent's peak.
_MEMORY_SCRIPT = """
import resource, sys
import torch
import torch.nn.functional as F
from repro.nn.attention import attention_ref
from repro.nn.flash import flash_attention

torch.set_num_threads(1)
n, impl, B, H, D, causal, block = int(sys.argv[1]), sys.argv[2], *map(int, sys.argv[3:8])
tiles = {"block_q": block, "block_k": block} if block else {}
fn = {
    "flash": lambda q, k, v: flash_attention(q, k, v, bool(causal), **tiles),
    "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal)),
    "naive": lambda q, k, v: attention_ref(q, k, v, bool(causal)),
}[impl]
with torch.no_grad():
    fn(*(torch.randn(B, H, 2 * (block or 512), D) for _ in range(3)))  # warm-up
q, k, v = (torch.randn(B, H, n, D) for _ in range(3))  # (B, H, N, D)
with open("/proc/self/statm") as f:
    base = int(f.read().split()[1]) * resource.getpagesize()
with torch.no_grad():
    out = fn(q, k, v)  # (B, H, N, D)
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(peak - base)
"""


def start_peak_memory(
    n: int, impl: str = "flash", B: int = 1, H: int = 8, D: int = 64, causal: bool = False,
    block: int | None = None,
) -> subprocess.Popen:  # fmt: skip
    """Start measuring ONE fp32 CPU forward over inputs (B, H, n, D) in a fresh process (Linux);
    `read_peak_memory` collects it, so several measurements can run side by side."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds the repro package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    args = [str(a) for a in (n, impl, B, H, D, int(causal), block or 0)]
    return subprocess.Popen(
        [sys.executable, "-c", _MEMORY_SCRIPT, *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def read_peak_memory(proc: subprocess.Popen) -> int:
    """Extra bytes at the peak of the forward started by `start_peak_memory`."""
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"peak-memory measurement failed: {stderr.strip()[-500:]}")
    return int(stdout.strip().splitlines()[-1])


def measure_peak_memory(
    n: int, impl: str = "flash", B: int = 1, H: int = 8, D: int = 64, causal: bool = False,
    device: str = "cpu", block: int | None = None,
) -> int:  # fmt: skip
    """Extra bytes at the peak of ONE forward over inputs (B, H, n, D), for impl in IMPLS.

    CPU (fp32, Linux): a fresh subprocess, peak RSS minus the RSS after the inputs were
    allocated. CUDA (fp16): torch.cuda.max_memory_allocated minus the inputs' memory.
    """
    if device.startswith("cuda"):
        return _cuda_peak_memory(n, impl, B, H, D, causal, device)
    return read_peak_memory(start_peak_memory(n, impl, B, H, D, causal, block))


def _cuda_peak_memory(n: int, impl: str, B: int, H: int, D: int, causal: bool, device: str) -> int:
    q, k, v = (torch.randn(B, H, n, D, device=device, dtype=torch.float16) for _ in range(3))
    fns = {
        "flash": lambda: _flash_impl(q)[1](q, k, v, causal),
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
        "naive": lambda: attention_ref(q, k, v, causal),
    }
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.no_grad():
        fns[impl]()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(device) - base


def _markdown(rows: list[dict]) -> str:
    lines = [
        "| N | causal | pass | flash ms | SDPA ms | flash / SDPA | flash GFLOP/s | SDPA GFLOP/s "
        "| flash % peak |",
        "|---:|:---:|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {'yes' if r['causal'] else 'no'} | {r['pass']} | {r['flash_ms']:.1f} "
            f"| {r['sdpa_ms']:.1f} | {r['ratio']:.2f} | {r['flash_gflops']:.0f} "
            f"| {r['sdpa_gflops']:.0f} | {100 * r['flash_frac_peak']:.0f}% |"
        )
    return "\n".join(lines)


def _main() -> None:
    parser = argparse.ArgumentParser(description="FlashAttention vs SDPA (Markdown on stdout)")
    parser.add_argument("--ns", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--no-backward", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", type=int, nargs="*", default=[], help="N for memory rows")
    parser.add_argument("--naive-max", type=int, default=4096, help="largest N for naive memory")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = bench_attention(
        tuple(args.ns), backward=not args.no_backward, device=device, repeats=args.repeats,
        progress=lambda i, total, row: print(f"[{i}/{total}] {row}", file=sys.stderr),
    )  # fmt: skip
    print(
        f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"matmul peak {rows[0]['peak_gflops']:.0f} GFLOP/s\n"
    )
    print(_markdown(rows))
    if args.memory:
        print("\n| N | impl | extra peak MB | naive (N, N) scores MB |\n|---:|:---|---:|---:|")
        for n in args.memory:
            for impl in IMPLS:
                if impl == "naive" and n > args.naive_max:
                    continue
                mb = measure_peak_memory(n, impl, device=device) / 2**20
                print(f"| {n} | {impl} | {mb:.0f} | {8 * n * n * 4 / 2**20:.0f} |", flush=True)


if __name__ == "__main__":
    _main()
