"""FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness — reproduction.

Dao, Fu, Ermon, Rudra, Ré (NeurIPS 2022), https://arxiv.org/abs/2205.14135

Glossary: B batch, H heads, N sequence length (the kernel's T = S), d head dim (the kernel's D),
M on-chip SRAM size in elements, Br / Bc query / key block rows, Tr / Tc numbers of query / key
blocks, s fraction of non-zero blocks in a block-sparse mask.

What is checked here, claim by claim (see note.yaml):
1. exactness — the tiled kernel `repro.nn.flash.flash_attention` (online softmax forward,
   backward by recomputation from the saved log-sum-exp) against an fp64 reference;
2. memory — peak extra memory of a forward pass at N and 2N, each in a fresh process;
3. IO complexity (Theorem 2, Proposition 4) — a simulator that runs the block loops of
   Algorithm 0, Algorithm 1 and block-sparse Algorithm 5 and counts every element moved
   between HBM and SRAM; the counts are then compared with the closed forms and fitted;
4. speed — flash vs PyTorch SDPA on this machine (a benchmark, not the paper's A100 number).
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass

import torch

from repro.bench.attention import bench_attention, read_peak_memory, start_peak_memory
from repro.bench.timing import median_seconds
from repro.lab.claims import Context, Measured, claim
from repro.lab.settings import setting
from repro.lab.threads import torch_threads
from repro.nn.attention import attention_ref
from repro.nn.flash import flash_attention


@dataclass(frozen=True)
class Config:
    # --device reaches the timing checks; the experiment runs on the CPU
    CPU_EXPERIMENT = (
        "the tiled kernel against an fp64 reference, the simulated IO and the peak memory of "
        "fresh processes"
    )
    # exactness: a length that is a multiple of neither tile, a head dim that is not a power of 2
    exact_shape: tuple[int, ...] = setting(
        (2, 3, 97, 40), "shape of the exactness check ((B, H, N, d))", min=1
    )
    exact_blocks: tuple[int, ...] = setting(
        (16, 32), "tile sizes of the exactness check ((Br, Bc))", min=1
    )
    # memory: N and 2N, one fresh process per (N, implementation)
    memory_shape: tuple[int, ...] = setting(
        (8, 8, 64), "(B, H, d): O takes 4·B·H·N·d bytes, 8 MiB at 512", min=1
    )
    memory_n: int = setting(512, "sequence length N of the memory check (also run at 2N)", min=1)
    memory_block: int = setting(
        16, "Br = Bc, fixed as in Alg. 1: the tiles do not grow with N", min=1
    )
    # IO simulation (Theorem 2): sweep M at fixed N, sweep N at fixed M
    io_d: int = setting(64, "head dim d of the IO simulation", min=1)
    io_n_fixed: int = setting(8192, "N of the SRAM-size sweep", min=1)
    io_m_sweep: tuple[int, ...] = setting(
        (8192, 16384, 32768, 65536), "SRAM sizes M swept (M <= N d / 8)", min=1
    )
    io_m_fixed: int = setting(16384, "SRAM size M of the length sweep; = 4 d^2: Bc = Br = d", min=1)
    io_n_sweep: tuple[int, ...] = setting(
        (2000, 3000, 5000, 8000, 13000), "ragged; M <= N d / 8", min=1
    )
    io_sparsity: tuple[float, ...] = setting(
        (1.0, 0.5, 0.25, 0.125, 0.0625),
        "fractions of blocks kept (block-sparse FlashAttention)",
        min=0,
        max=1,
        min_exclusive=True,
    )
    # speed (benchmark claim only)
    speed_n: int = setting(2048, "N of the speed claim", min=1)


PRESETS = {
    "quick": Config(),
    "full": Config(
        memory_shape=(4, 8, 64),
        memory_n=1024,
        io_n_fixed=16384,
        io_m_sweep=(4096, 8192, 16384, 32768, 65536, 131072),
        io_n_sweep=(2000, 3000, 5000, 8000, 13000, 21000, 34000),
    ),
}


# --- 1. exactness (Theorem 1) ----------------------------------------------------------------


def exactness(cfg: Config, seed: int) -> dict:
    """Max |flash - fp64 reference| of O and of dQ, dK, dV, causal and not."""
    B, H, N, d = cfg.exact_shape
    br, bc = cfg.exact_blocks
    g = torch.Generator().manual_seed(seed)
    q, k, v, do = (torch.randn(B, H, N, d, generator=g) for _ in range(4))  # (B, H, N, d) fp32
    out: dict = {}
    for causal in (False, True):
        # Alg. 1 (tiled forward), then Alg. 4 / FA-2 Alg. 2 (backward recomputing P = exp(S - L))
        qf, kf, vf = (x.clone().requires_grad_() for x in (q, k, v))
        o = flash_attention(qf, kf, vf, causal=causal, block_q=br, block_k=bc)  # (B, H, N, d)
        grads = torch.autograd.grad(o, (qf, kf, vf), do)
        # reference: S = QKᵀ/√d, P = softmax(S), O = PV materialised in fp64 (Sec. 2.2)
        q64, k64, v64 = (x.double().requires_grad_() for x in (q, k, v))
        o64 = attention_ref(q64, k64, v64, causal=causal, upcast=torch.float64)
        grads64 = torch.autograd.grad(o64, (q64, k64, v64), do.double())
        tag = "causal" if causal else "full"
        out[f"fwd_{tag}"] = (o.double() - o64).abs().max().item()
        for name, a, b in zip(("dq", "dk", "dv"), grads, grads64, strict=True):
            out[f"{name}_{tag}"] = (a.double() - b).abs().max().item()
    return out


# --- 2. memory (Theorem 1: O(N) extra memory) ------------------------------------------------


def start_memory_runs(cfg: Config) -> dict[tuple[str, int], subprocess.Popen]:
    """Launch the four measurements (flash and naive at N and 2N) in fresh processes, side by
    side; flash with fixed (Br, Bc) tiles as in Alg. 1, so only O grows with N."""
    B, H, d = cfg.memory_shape
    return {
        (impl, N): start_peak_memory(N, impl, B, H, d, block=cfg.memory_block)
        for impl in ("flash", "naive")
        for N in (cfg.memory_n, 2 * cfg.memory_n)
    }


def memory_growth(cfg: Config, runs: dict[tuple[str, int], subprocess.Popen]) -> dict:
    """Peak extra MiB of each run, and the growth from N to 2N of flash and of naive attention."""
    B, H, d = cfg.memory_shape
    n = cfg.memory_n
    out: dict = {}
    for (impl, N), proc in runs.items():
        out[f"{impl}_{N}_mib"] = read_peak_memory(proc) / 2**20
    for impl in ("flash", "naive"):
        out[f"{impl}_growth"] = out[f"{impl}_{2 * n}_mib"] / out[f"{impl}_{n}_mib"]
    # for comparison: the output O, 4·B·H·N·d bytes, is flash's O(N) part (the tiles are fixed);
    # one (B, H, N, N) fp32 matrix is the unit of naive attention's quadratic part
    out["output_mib"] = [4 * B * H * N * d / 2**20 for N in (n, 2 * n)]
    out["scores_mib"] = [4 * B * H * N * N / 2**20 for N in (n, 2 * n)]
    return out


# --- 3. IO complexity (Theorem 2, Proposition 4) ---------------------------------------------


class HBM:
    """Counts elements read from and written to HBM (the paper's unit of IO)."""

    def __init__(self) -> None:
        self.reads = 0
        self.writes = 0

    def read(self, *shape: int) -> None:
        self.reads += math.prod(shape)

    def write(self, *shape: int) -> None:
        self.writes += math.prod(shape)

    @property
    def total(self) -> int:
        return self.reads + self.writes


def standard_io(N: int, d: int) -> int:
    """Algorithm 0, line by line: every N×N matrix goes through HBM."""
    hbm = HBM()
    hbm.read(N, d), hbm.read(N, d), hbm.write(N, N)  # line 1: load Q, K; write S = QKᵀ
    hbm.read(N, N), hbm.write(N, N)  # line 2: read S; write P = softmax(S)
    hbm.read(N, N), hbm.read(N, d), hbm.write(N, d)  # line 3: load P, V; write O = PV
    return hbm.total


def block_sizes(M: int, d: int) -> tuple[int, int]:
    """Alg. 1 line 1: Bc = ⌈M / 4d⌉, Br = min(⌈M / 4d⌉, d)."""
    bc = math.ceil(M / (4 * d))
    return min(bc, d), bc


def flash_io(N: int, d: int, M: int, stride: int = 1) -> int:
    """Algorithm 1 (stride 1) or block-sparse Algorithm 5, run block by block, counting HBM IO.

    The block-sparse mask keeps block (i, j) iff i ≡ j (mod stride): a strided pattern with a
    fraction s = 1 / stride of non-zero blocks, whose zero blocks the loop never visits.
    """
    br, bc = block_sizes(M, d)
    hbm = HBM()
    hbm.write(N, d), hbm.write(N), hbm.write(N)  # line 2: O = 0, ℓ = 0, m = -inf in HBM
    for j, j0 in enumerate(range(0, N, bc)):  # line 5: for 1 <= j <= Tc
        bc_j = min(bc, N - j0)  # the last block may be ragged
        hbm.read(bc_j, d), hbm.read(bc_j, d)  # line 6: load K_j, V_j
        for i0 in range(j % stride * br, N, stride * br):  # line 7 (Alg. 5: non-zero blocks only)
            br_i = min(br, N - i0)
            hbm.read(br_i, d), hbm.read(br_i, d)  # line 8: load Q_i, O_i
            hbm.read(br_i), hbm.read(br_i)  # line 8: load ℓ_i, m_i
            # lines 9–11 run on chip: S_ij, m~, P~, ℓ~, m_new, ℓ_new — no HBM traffic
            hbm.write(br_i, d)  # line 12: write O_i
            hbm.write(br_i), hbm.write(br_i)  # line 13: write ℓ_i, m_i
    return hbm.total


def standard_closed_form(N: int, d: int) -> int:
    return 4 * N * d + 4 * N * N


def flash_closed_form(N: int, d: int, M: int) -> int:
    """Init (Nd + 2N) + K, V once (2Nd) + Tc passes reading Q, O, ℓ, m and writing O, ℓ, m."""
    Tc = math.ceil(N / block_sizes(M, d)[1])
    return 3 * N * d + 2 * N + Tc * (3 * N * d + 4 * N)


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x: the fitted exponent of a power law."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    num = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    return num / sum((a - mx) ** 2 for a in lx)


def io_sweeps(cfg: Config, ctx: Context) -> dict:
    """Simulated HBM accesses over M, over N and over the sparsity s (Theorem 2, Prop. 4)."""
    d, steps = cfg.io_d, len(cfg.io_m_sweep) + len(cfg.io_n_sweep) + len(cfg.io_sparsity)
    rows = []  # every (N, d, M) point: simulated and closed-form counts

    def point(N: int, M: int) -> dict:
        row = {"N": N, "d": d, "M": M, "standard": standard_io(N, d), "flash": flash_io(N, d, M)}
        same_standard = row["standard"] == standard_closed_form(N, d)
        row["closed_form_ok"] = same_standard and row["flash"] == flash_closed_form(N, d, M)
        rows.append(row)
        ctx.progress("flashattention: IO simulation", len(rows), steps)
        return row

    over_m = [point(cfg.io_n_fixed, M) for M in cfg.io_m_sweep]
    over_n = [point(N, cfg.io_m_fixed) for N in cfg.io_n_sweep]
    n_sparse = cfg.io_n_sweep[-1]
    dense = flash_io(n_sparse, d, cfg.io_m_fixed)
    sparse = [flash_io(n_sparse, d, cfg.io_m_fixed, round(1 / s)) for s in cfg.io_sparsity]
    ctx.progress("flashattention: IO simulation", steps, steps)
    ms, ns = list(cfg.io_m_sweep), list(cfg.io_n_sweep)
    return {
        "io_rows": rows,
        "io_closed_form_ok": all(r["closed_form_ok"] for r in rows),
        "io_flash_over_m": [r["flash"] for r in over_m],
        "io_flash_over_n": [r["flash"] for r in over_n],
        "io_advantage_over_m": [r["standard"] / r["flash"] for r in over_m],
        "io_flash_exponent_m": loglog_slope(ms, [r["flash"] for r in over_m]),
        "io_flash_exponent_n": loglog_slope(ns, [r["flash"] for r in over_n]),
        "io_standard_exponent_n": loglog_slope(ns, [r["standard"] for r in over_n]),
        "io_advantage_exponent_m": loglog_slope(ms, [r["standard"] / r["flash"] for r in over_m]),
        # the constant of Θ(N²d²/M): count · M / (N²d²) -> 12 + 16/d as M / Nd -> 0
        "io_flash_constant": [r["flash"] * r["M"] / (r["N"] * d) ** 2 for r in over_m],
        "io_sparse_counts": sparse,
        "io_sparse_over_dense": [c / dense for c in sparse],
        "io_sparse_exponent_s": loglog_slope(list(cfg.io_sparsity), sparse),
    }


def save_plots(cfg: Config, metrics: dict, ctx: Context) -> None:
    from repro.study.plots import save_line_plot

    ms = list(cfg.io_m_sweep)
    d, n = cfg.io_d, cfg.io_n_fixed
    save_line_plot(
        ctx.out_dir / "io_vs_sram.svg",
        {
            "FlashAttention (simulated)": (ms, metrics["io_flash_over_m"]),
            "12 N²d²/M": (ms, [12 * (n * d) ** 2 / m for m in ms]),
            "standard (simulated)": (ms, [standard_io(n, d)] * len(ms)),
        },
        "SRAM size M (elements)",
        "HBM accesses (elements)",
        f"HBM accesses vs SRAM size (N={n}, d={d})",
        logx=True,
        logy=True,
    )
    ns = list(cfg.io_n_sweep)
    save_line_plot(
        ctx.out_dir / "io_vs_length.svg",
        {
            "FlashAttention (simulated)": (ns, metrics["io_flash_over_n"]),
            "standard (simulated)": (ns, [standard_io(x, d) for x in ns]),
        },
        "sequence length N",
        "HBM accesses (elements)",
        f"HBM accesses vs sequence length (d={d}, M={cfg.io_m_fixed})",
        logx=True,
        logy=True,
    )


def experiment(cfg: Config, ctx: Context) -> dict:
    """Exactness, memory growth and the IO simulation (the timing is a separate benchmark)."""
    runs = start_memory_runs(cfg)  # in fresh processes, while this one checks the rest
    metrics = {"exact": exactness(cfg, ctx.seed)}
    metrics.update(io_sweeps(cfg, ctx))
    metrics["memory"] = memory_growth(cfg, runs)
    if ctx.out_dir is not None:
        save_plots(cfg, metrics, ctx)
    return metrics


# --- claims ----------------------------------------------------------------------------------


@claim("exact-forward")
def exact_forward(ctx: Context) -> Measured:
    errors = ctx.experiment()["exact"]
    fwd = {k: v for k, v in errors.items() if k.startswith("fwd")}
    return Measured(max(fwd.values()), fwd)


@claim("exact-backward")
def exact_backward(ctx: Context) -> Measured:
    errors = ctx.experiment()["exact"]
    bwd = {k: v for k, v in errors.items() if not k.startswith("fwd")}
    return Measured(max(bwd.values()), bwd)


@claim("memory-flash-linear")
def memory_flash_linear(ctx: Context) -> Measured:
    mem = ctx.experiment()["memory"]
    details = {k: v for k, v in mem.items() if k.startswith(("flash", "output"))}
    return Measured(mem["flash_growth"], details)


@claim("memory-naive-quadratic")
def memory_naive_quadratic(ctx: Context) -> Measured:
    mem = ctx.experiment()["memory"]
    details = {k: v for k, v in mem.items() if k.startswith(("naive", "scores"))}
    return Measured(mem["naive_growth"], details)


@claim("io-counts-match-closed-form")
def io_counts_match_closed_form(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(m["io_closed_form_ok"], {"points": m["io_rows"]})


@claim("io-flash-exponent-m")
def io_flash_exponent_m(ctx: Context) -> Measured:
    m = ctx.experiment()
    details = {
        "M": list(ctx.config.io_m_sweep),
        "flash": m["io_flash_over_m"],
        "count·M/(N²d²)": m["io_flash_constant"],
    }
    return Measured(m["io_flash_exponent_m"], details)


@claim("io-flash-exponent-n")
def io_flash_exponent_n(ctx: Context) -> Measured:
    m = ctx.experiment()
    details = {
        "N": list(ctx.config.io_n_sweep),
        "flash": m["io_flash_over_n"],
        "standard_exponent_n": m["io_standard_exponent_n"],
    }
    return Measured(m["io_flash_exponent_n"], details)


@claim("io-advantage-exponent-m")
def io_advantage_exponent_m(ctx: Context) -> Measured:
    m = ctx.experiment()
    cfg = ctx.config
    details = {
        "M": list(cfg.io_m_sweep),
        "standard/flash": m["io_advantage_over_m"],
        "M/(3d²)": [M / (3 * cfg.io_d**2) for M in cfg.io_m_sweep],
    }
    return Measured(m["io_advantage_exponent_m"], details)


@claim("io-block-sparse-exponent-s")
def io_block_sparse_exponent_s(ctx: Context) -> Measured:
    m = ctx.experiment()
    details = {"s": list(ctx.config.io_sparsity), "sparse/dense": m["io_sparse_over_dense"]}
    return Measured(m["io_sparse_exponent_s"], details)


@claim("speed-vs-sdpa", benchmark=True)
def speed_vs_sdpa(ctx: Context) -> Measured:
    N = ctx.config.speed_n
    # One thread on the CPU: the tiled kernel is a loop of small parallel PyTorch calls that
    # other processes on a busy machine slow down many times more than SDPA's single fused call.
    with torch_threads(1 if ctx.device == "cpu" else None):
        # forward, not causal, B=1, H=8, d=64: flash and SDPA timed alternately (median of 5)
        (row,) = bench_attention(ns=(N,), causal=(False,), backward=False, device=ctx.device)
        # the paper's baseline: standard attention materialising S and P (Alg. 0)
        q, k, v = (
            torch.randn(row["B"], row["H"], N, row["D"], device=ctx.device) for _ in range(3)
        )
        with torch.no_grad():
            naive_s = median_seconds(lambda: attention_ref(q, k, v), ctx.device)
    details = {
        **row,
        "naive_ms": 1e3 * naive_s,
        "flash_over_naive": row["flash_ms"] / 1e3 / naive_s,
    }
    return Measured(row["ratio"], details)
