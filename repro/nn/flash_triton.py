"""FlashAttention-2 as Triton kernels: the CUDA fast path of `repro.nn.attention.attention`.

Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning",
https://arxiv.org/abs/2307.08691 (Alg. 1: forward, Alg. 2: backward; comments cite their lines).
The same algorithm as the readable `repro.nn.flash`, with one program per tile: the forward runs a
(query block, head) per program; the backward splits Alg. 2 into a dK/dV kernel (one key block
per program, its inner loop over query blocks as in Alg. 2) and a dQ kernel (one query block per
program), which replaces Alg. 2 line 15's atomic add with a second recomputation of P.

Glossary: B batch, H query heads, Hkv key/value heads, G = H / Hkv, T query length, S key length,
D head dim; BLOCK_M / BLOCK_N the query / key tiles (the paper's B_r / B_c). Query head h reads
key/value head h // G (GQA by index, nothing repeated). Causal queries are aligned to the end of
the keys: query t sees keys j <= t + S - T. Scores are in base 2 (log2 e folded into the scale,
exp2 for exp), so the saved L is log2-sum-exp2.

Triton is optional (the `gpu` extra): without it this module imports and `supports` is False.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only install: the tiled PyTorch kernel in repro.nn.flash is used
    triton = None

LOG2E = math.log2(math.e)
HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float16, torch.bfloat16)


def supports(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> bool:
    """True when these kernels can run: CUDA, Triton, fp16/bf16, D in HEAD_DIMS, no padding."""
    return (
        triton is not None
        and key_padding_mask is None
        and q.is_cuda
        and k.is_cuda
        and v.is_cuda
        and q.dtype in DTYPES
        and q.dtype == k.dtype == v.dtype
        and q.shape[-1] in HEAD_DIMS
        and q.shape[1] % k.shape[1] == 0
    )


if triton is not None:

    @triton.jit
    def _fwd_kernel(
        Q, K, V, O, L,
        sqb, sqh, sqt, skb, skh, sks, svb, svh, svs, sob, soh, sot,
        H, G, T, S, qk_scale,
        CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr,
    ):  # fmt: skip
        """Alg. 1 for one query block (program_id 0) of one (batch, head) (program_id 1)."""
        start_m = tl.program_id(0) * BLOCK_M
        b, h = (tl.program_id(1) // H).to(tl.int64), tl.program_id(1) % H  # int64: big tensors
        hk = h // G
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        q = tl.load(
            Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :],
            mask=offs_m[:, None] < T,
            other=0.0,
        )  # Alg. 1 line 4; (BLOCK_M, D)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # line 5
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        hi = S
        if CAUSAL:  # key blocks past the diagonal are skipped
            hi = tl.minimum(S, start_m + BLOCK_M + S - T)
        for start_n in range(0, hi, BLOCK_N):  # line 6
            cols = start_n + offs_n
            k = tl.load(
                K + b * skb + hk * skh + cols[:, None] * sks + offs_d[None, :],
                mask=cols[:, None] < S,
                other=0.0,
            )  # line 7; (BLOCK_N, D)
            s = tl.dot(q, tl.trans(k)) * qk_scale  # line 8; (BLOCK_M, BLOCK_N)
            keep = cols[None, :] < S
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None] + S - T)
            s = tl.where(keep, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))  # line 9
            shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet
            p = tl.exp2(s - shift[:, None])  # line 9: P~ = exp(S - m)
            alpha = tl.exp2(m_i - shift)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(
                V + b * svb + hk * svh + cols[:, None] * svs + offs_d[None, :],
                mask=cols[:, None] < S,
                other=0.0,
            )
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)  # line 10
            m_i = m_new
        tl.store(L + tl.program_id(1) * T + offs_m, m_i + tl.log2(l_i), mask=offs_m < T)  # 13
        acc = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]  # line 12; no key seen -> 0
        tl.store(
            O + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :],
            acc.to(O.dtype.element_ty),
            mask=offs_m[:, None] < T,
        )

    @triton.jit
    def _bwd_dkdv_kernel(
        Q, K, V, DO, L, DELTA, DK, DV,
        sqb, sqh, sqt, skb, skh, sks, svb, svh, svs,
        H, Hkv, G, T, S, qk_scale, scale,
        CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr,
    ):  # fmt: skip
        """Alg. 2 lines 5-18 for one key block of one key/value head, over its G query heads.

        dO and dQ share q's strides, dK/dV k's and v's; L and DELTA are (B, H, T) contiguous.
        """
        start_n = tl.program_id(0) * BLOCK_N
        b, hk = (tl.program_id(1) // Hkv).to(tl.int64), tl.program_id(1) % Hkv
        offs_n = start_n + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        k = tl.load(
            K + b * skb + hk * skh + offs_n[:, None] * sks + offs_d[None, :],
            mask=offs_n[:, None] < S,
            other=0.0,
        )  # line 6; (BLOCK_N, D)
        v = tl.load(
            V + b * svb + hk * svh + offs_n[:, None] * svs + offs_d[None, :],
            mask=offs_n[:, None] < S,
            other=0.0,
        )
        dk = tl.zeros([BLOCK_N, D], tl.float32)  # line 7
        dv = tl.zeros([BLOCK_N, D], tl.float32)
        lo = 0
        if CAUSAL:  # query blocks before the first query that sees start_n are skipped
            lo = tl.maximum(0, start_n - (S - T)) // BLOCK_M * BLOCK_M
        for g in range(0, G):
            h = hk * G + g
            for start_m in range(lo, T, BLOCK_M):  # line 8
                offs_m = start_m + tl.arange(0, BLOCK_M)
                row = offs_m[:, None] < T
                q = tl.load(
                    Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :],
                    mask=row,
                    other=0.0,
                )  # line 9; (BLOCK_M, D)
                do = tl.load(
                    DO + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :],
                    mask=row,
                    other=0.0,
                )
                lse = tl.load(L + (b * H + h) * T + offs_m, mask=offs_m < T, other=0.0)
                delta = tl.load(DELTA + (b * H + h) * T + offs_m, mask=offs_m < T, other=0.0)
                s_t = tl.dot(k, tl.trans(q)) * qk_scale  # line 10, transposed; (BLOCK_N, BLOCK_M)
                keep = (offs_m[None, :] < T) & (offs_n[:, None] < S)
                if CAUSAL:
                    keep = keep & (offs_n[:, None] <= offs_m[None, :] + S - T)
                p_t = tl.where(keep, tl.exp2(s_t - lse[None, :]), 0.0)  # line 11: P = exp(S - L)
                dv += tl.dot(p_t.to(do.dtype), do)  # line 12: dV_j += P^T dO_i
                dp_t = tl.dot(v, tl.trans(do))  # line 13: dP = dO_i V_j^T, transposed
                ds_t = p_t * (dp_t - delta[None, :])  # line 14: dS = P ∘ (dP - D_i)
                dk += tl.dot(ds_t.to(q.dtype), q)  # line 16: dK_j += dS^T Q_i
        out = b * skb + hk * skh + offs_n[:, None] * sks + offs_d[None, :]
        tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=offs_n[:, None] < S)
        out = b * svb + hk * svh + offs_n[:, None] * svs + offs_d[None, :]
        tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=offs_n[:, None] < S)  # line 18

    @triton.jit
    def _bwd_dq_kernel(
        Q, K, V, DO, L, DELTA, DQ,
        sqb, sqh, sqt, skb, skh, sks, svb, svh, svs,
        H, G, T, S, qk_scale, scale,
        CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr,
    ):  # fmt: skip
        """Alg. 2 line 15 without atomics: dQ_i = sum_j dS_i^(j) K_j for one query block."""
        start_m = tl.program_id(0) * BLOCK_M
        b, h = (tl.program_id(1) // H).to(tl.int64), tl.program_id(1) % H  # int64: big tensors
        hk = h // G
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        rows = b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :]
        q = tl.load(Q + rows, mask=offs_m[:, None] < T, other=0.0)  # (BLOCK_M, D)
        do = tl.load(DO + rows, mask=offs_m[:, None] < T, other=0.0)
        lse = tl.load(L + tl.program_id(1) * T + offs_m, mask=offs_m < T, other=0.0)
        delta = tl.load(DELTA + tl.program_id(1) * T + offs_m, mask=offs_m < T, other=0.0)
        dq = tl.zeros([BLOCK_M, D], tl.float32)
        hi = S
        if CAUSAL:
            hi = tl.minimum(S, start_m + BLOCK_M + S - T)
        for start_n in range(0, hi, BLOCK_N):
            cols = start_n + offs_n
            k = tl.load(
                K + b * skb + hk * skh + cols[:, None] * sks + offs_d[None, :],
                mask=cols[:, None] < S,
                other=0.0,
            )  # (BLOCK_N, D)
            v = tl.load(
                V + b * svb + hk * svh + cols[:, None] * svs + offs_d[None, :],
                mask=cols[:, None] < S,
                other=0.0,
            )
            s = tl.dot(q, tl.trans(k)) * qk_scale  # line 10
            keep = (cols[None, :] < S) & (offs_m[:, None] < T)
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None] + S - T)
            p = tl.where(keep, tl.exp2(s - lse[:, None]), 0.0)  # line 11
            dp = tl.dot(do, tl.trans(v))  # line 13
            ds = p * (dp - delta[:, None])  # line 14
            dq += tl.dot(ds.to(k.dtype), k)  # line 15
        tl.store(DQ + rows, (dq * scale).to(DQ.dtype.element_ty), mask=offs_m[:, None] < T)


def _tiles(D: int) -> dict[str, int]:
    """Tile sizes and warps; smaller tiles for D = 128 keep the fp32 accumulators in registers."""
    return {"BLOCK_M": 128 if D <= 64 else 64, "BLOCK_N": 64, "num_warps": 4 if D <= 64 else 8}


def _forward(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float) -> tuple[Tensor, Tensor]:
    """q (B, H, T, D), k/v (B, Hkv, S, D) contiguous -> O (B, H, T, D), L (B, H, T) base 2."""
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    o = torch.empty_like(q)  # (B, H, T, D)
    lse = torch.empty(B, H, T, dtype=torch.float32, device=q.device)  # (B, H, T)
    cfg = _tiles(D)
    grid = (triton.cdiv(T, cfg["BLOCK_M"]), B * H)
    _fwd_kernel[grid](
        q, k, v, o, lse,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
        H, H // Hkv, T, S, scale * LOG2E,
        CAUSAL=causal, D=D, **cfg,
    )  # fmt: skip
    return o, lse


def _backward(
    q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, do: Tensor, causal: bool, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Alg. 2: dQ, dK, dV in the input dtype (accumulated in fp32 inside the kernels)."""
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    delta = (do.float() * o.float()).sum(-1)  # Alg. 2 line 4: D = rowsum(dO ∘ O); (B, H, T)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3])
    common = {"CAUSAL": causal, "D": D, "BLOCK_M": 64 if D <= 64 else 32, "BLOCK_N": 64}
    common["num_warps"] = 4 if D <= 64 else 8
    grid = (triton.cdiv(S, common["BLOCK_N"]), B * Hkv)
    _bwd_dkdv_kernel[grid](
        q, k, v, do, lse, delta, dk, dv, *strides,
        H, Hkv, H // Hkv, T, S, scale * LOG2E, scale, **common,
    )  # fmt: skip
    common["BLOCK_M"], common["BLOCK_N"] = (64, 64) if D <= 64 else (64, 32)
    grid = (triton.cdiv(T, common["BLOCK_M"]), B * H)
    _bwd_dq_kernel[grid](
        q, k, v, do, lse, delta, dq, *strides,
        H, H // Hkv, T, S, scale * LOG2E, scale, **common,
    )  # fmt: skip
    return dq, dk, dv


class FlashAttentionTriton(torch.autograd.Function):
    """softmax(Q Kᵀ · scale) V through the Triton kernels; saves O and L only."""

    @staticmethod
    def forward(ctx: FunctionCtx, q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o, lse = _forward(q, k, v, causal, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, do: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, o, lse, do.contiguous(), ctx.causal, ctx.scale)
        return dq, dk, dv, None, None


def flash_attention_triton(
    q: Tensor, k: Tensor, v: Tensor, causal: bool = False, scale: float | None = None
) -> Tensor:
    """q (B, H, T, D), k/v (B, Hkv, S, D) on CUDA, fp16/bf16 -> (B, H, T, D). See `supports`."""
    if triton is None:
        raise RuntimeError("flash_attention_triton needs Triton: pip install 'paperlab[gpu]'")
    if q.shape[1] % k.shape[1] != 0 or k.shape != v.shape or q.shape[-1] not in HEAD_DIMS:
        raise ValueError(
            f"need H % Hkv == 0 and D in {HEAD_DIMS}; got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return FlashAttentionTriton.apply(q, k, v, causal, scale)
