"""FlashAttention: exact attention by tiling Q, K, V with an online softmax, forward and backward.

Dao et al., "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness",
https://arxiv.org/abs/2205.14135 (Alg. 1: tiled forward with online softmax, Eqs. in Sec. 3.1);
Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning",
https://arxiv.org/abs/2307.08691 (Alg. 1: forward loop order, Alg. 2: backward by recomputation).
Comments cite FlashAttention-2's algorithms as "Alg. 1/2 line n".

Glossary: B batch, H query heads, Hkv key/value heads, G = H / Hkv query heads per key/value
head, T query length (the paper's N), S key length, D head dim (the paper's d), Br / Bc the query /
key tile sizes (the paper's B_r, B_c). m the running row max, l the running row sum of
exp(s - m), L = m + log l the row log-sum-exp: the only statistic saved for the backward.

As in the paper's Triton kernel, scores are kept in base 2 (log2(e) folded into the softmax
scale, exp2 instead of exp): same result, and exp2 stays fast where exp takes a slow path on -inf
and underflowing inputs. m and L are then in base-2 units too.

The GQA layout folds the G query heads that share a key/value head into the row dimension,
(B, H, T, D) -> (B * Hkv, T * G, D) with row t * G + g, so each tile is one batched matmul over
(B, Hkv) against K, V as stored, and no repeated K/V is ever materialised. Every pass holds one
(B * Hkv, Br * G, Bc) score tile at a time, never the (T, S) matrix.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

# CPU tiles: the score tile of all (B, Hkv) pairs should stay in the L2 caches, and big enough
# that the Python loop runs few iterations. Budget in elements of one (B * Hkv, rows, Bc) tile.
_TILE_ELEMS_FWD = 1 << 20
_TILE_ELEMS_BWD = 1 << 19
_BLOCK_K = 512


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 inputs accumulate in fp32 (the paper keeps m, l, O in fp32 on chip)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _default_blocks(n_batch: int, G: int, T: int, S: int, budget: int) -> tuple[int, int]:
    """(Br, Bc) for a (n_batch, Br * G, Bc) score tile of about `budget` elements."""
    bc = min(S, _BLOCK_K)
    br = max(1, min(T, budget // (n_batch * G * bc)))
    return br, bc


def _group(x: Tensor, Hkv: int) -> Tensor:
    """(B, H, T, D) -> (B * Hkv, T * G, D), row t * G + g (a view when G == 1)."""
    B, H, T, D = x.shape
    G = H // Hkv
    return x.reshape(B, Hkv, G, T, D).transpose(2, 3).reshape(B * Hkv, T * G, D)


def _ungroup(x: Tensor, B: int, H: int) -> Tensor:
    """(B * Hkv, T * G, D) -> (B, H, T, D), the inverse of `_group`."""
    n, rows, D = x.shape
    Hkv = n // B
    G = H // Hkv
    T = rows // G
    return x.view(B, Hkv, T, G, D).transpose(2, 3).reshape(B, H, T, D)


def _scratch(buf: Tensor, *shape: int) -> Tensor:
    """A contiguous view of the first prod(shape) elements of a flat buffer (no allocation)."""
    return buf[: math.prod(shape)].view(shape)


class _Masks:
    """Which entries of tile (rows of queries i0:i1, keys j0:j1) are hidden, and which tiles to skip.

    Causal: query t sees keys j <= t + S - T (queries aligned to the end of the keys).
    Padding: key_padding_mask (B, S), True = keep.
    """

    def __init__(
        self, B: int, Hkv: int, G: int, T: int, S: int, causal: bool, kpm: Tensor | None
    ) -> None:
        self.B, self.Hkv, self.G, self.causal = B, Hkv, G, causal
        self.offset = S - T
        self.hidden_keys = None if kpm is None else ~kpm.bool()  # (B, S)
        # A row can see no key at all only with padding or with more queries than keys.
        self.may_be_empty = kpm is not None or (causal and T > S)

    def last_key(self, i1: int, S: int) -> int:
        """One past the last key any of queries < i1 can see: later key tiles are skipped."""
        return min(S, i1 + self.offset) if self.causal else S

    def first_query(self, j0: int) -> int:
        """The first query that sees key j0: earlier query tiles are skipped (backward)."""
        return max(0, j0 - self.offset) if self.causal else 0

    def apply(self, s: Tensor, i0: int, i1: int, j0: int, j1: int) -> None:
        """s (B * Hkv, (i1 - i0) * G, j1 - j0): set hidden scores to -inf in place."""
        if self.causal and j1 - 1 > i0 + self.offset:  # tile crosses the diagonal
            t = torch.arange(i0, i1, device=s.device).repeat_interleave(self.G)[:, None]
            j = torch.arange(j0, j1, device=s.device)[None, :]
            s.masked_fill_(j > t + self.offset, float("-inf"))  # (rows, Bc) over the batch
        if self.hidden_keys is not None:
            hidden = self.hidden_keys[:, j0:j1]  # (B, Bc)
            if hidden.any():
                s4 = s.view(self.B, self.Hkv, -1, j1 - j0)  # (B, Hkv, rows, Bc)
                s4.masked_fill_(hidden[:, None, None, :], float("-inf"))


def _flash_forward(
    q: Tensor, k: Tensor, v: Tensor, masks: _Masks, scale: float, br: int, bc: int
) -> tuple[Tensor, Tensor]:
    """FlashAttention-2 Alg. 1 on grouped tensors: q (n, T * G, D), k/v (n, S, D), n = B * Hkv.

    Returns O (n, T * G, D) in q's dtype and L (n, T * G, 1) in the compute dtype.
    """
    n, rows_total, D = q.shape
    S, G = k.shape[1], masks.G
    T = rows_total // G
    cd = _compute_dtype(q.dtype)
    k, v = k.to(cd), v.to(cd)
    o = torch.empty_like(q)  # (n, T * G, D)
    lse = torch.empty(n, rows_total, 1, dtype=cd, device=q.device)  # (n, T * G, 1)
    s_buf = torch.empty(n * br * G * bc, dtype=cd, device=q.device)
    for i0 in range(0, T, br):  # Alg. 1 line 3
        i1 = min(i0 + br, T)
        r0, r1 = i0 * G, i1 * G
        q_i = q[:, r0:r1].to(cd) * scale  # Alg. 1 line 4; (n, Br * G, D)
        o_i = torch.zeros(n, r1 - r0, D, dtype=cd, device=q.device)  # Alg. 1 line 5
        l_i = torch.zeros(n, r1 - r0, 1, dtype=cd, device=q.device)
        m_i = torch.full((n, r1 - r0, 1), float("-inf"), dtype=cd, device=q.device)
        for j0 in range(0, masks.last_key(i1, S), bc):  # Alg. 1 line 6
            j1 = min(j0 + bc, S)
            k_j, v_j = k[:, j0:j1], v[:, j0:j1]  # Alg. 1 line 7; (n, Bc, D)
            s = torch.bmm(q_i, k_j.mT, out=_scratch(s_buf, n, r1 - r0, j1 - j0))  # line 8
            masks.apply(s, i0, i1, j0, j1)
            m_new = torch.maximum(m_i, s.amax(-1, keepdim=True))  # line 9: m_i^(j)
            if masks.may_be_empty:  # no key seen yet: exp(-inf - 0) = 0, not exp(-inf + inf)
                m_new = m_new.masked_fill(m_new == float("-inf"), 0.0)
            p = s.sub_(m_new).exp_()  # line 9: P~_i^(j) = exp(S_i^(j) - m_i^(j)), in place
            alpha = (m_i - m_new).exp_()  # e^{m_i^(j-1) - m_i^(j)}
            l_i.mul_(alpha).add_(p.sum(-1, keepdim=True))  # line 9: l_i^(j)
            o_i.mul_(alpha).baddbmm_(p, v_j)  # line 10: O_i^(j) = diag(alpha) O_i^(j-1) + P~ V_j
            m_i = m_new
        # line 12: O_i = diag(l_i)^-1 O_i; a row that saw no key has O_i = 0, l_i = 0 -> 0.
        o[:, r0:r1] = o_i / (l_i if not masks.may_be_empty else l_i.clamp_min(1e-30))
        lse[:, r0:r1] = m_i + l_i.log()  # line 13: L_i = m_i + log(l_i); -inf if no key
    return o, lse


def _flash_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    lse: Tensor,
    do: Tensor,
    masks: _Masks,
    scale: float,
    br: int,
    bc: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """FlashAttention-2 Alg. 2 on grouped tensors; returns dQ, dK, dV in the compute dtype."""
    n, rows_total, D = q.shape
    S, G = k.shape[1], masks.G
    T = rows_total // G
    cd = lse.dtype
    qs = q.to(cd) * scale  # (n, T * G, D): S = (scale Q) K^T and dK = dS^T (scale Q)
    k, v, do = k.to(cd), v.to(cd), do.to(cd)
    delta = (do * o.to(cd)).sum(-1, keepdim=True)  # Alg. 2 line 4: D = rowsum(dO ∘ O)
    if masks.may_be_empty:  # rows that saw no key: P = exp(S - inf) = 0
        lse = lse.masked_fill(lse == float("-inf"), float("inf"))
    dq = torch.zeros_like(qs)  # Alg. 2 line 3; (n, T * G, D)
    dk = torch.empty_like(k)  # (n, S, D)
    dv = torch.empty_like(v)  # (n, S, D)
    s_buf = torch.empty(n * br * G * bc, dtype=cd, device=q.device)
    dp_buf = torch.empty_like(s_buf)
    for j0 in range(0, S, bc):  # Alg. 2 line 5
        j1 = min(j0 + bc, S)
        k_j, v_j = k[:, j0:j1], v[:, j0:j1]  # line 6; (n, Bc, D)
        dk_j = torch.zeros(n, j1 - j0, D, dtype=cd, device=q.device)  # line 7
        dv_j = torch.zeros(n, j1 - j0, D, dtype=cd, device=q.device)
        first = masks.first_query(j0) // br * br
        for i0 in range(first, T, br):  # line 8
            i1 = min(i0 + br, T)
            r0, r1 = i0 * G, i1 * G
            q_i, do_i = qs[:, r0:r1], do[:, r0:r1]  # line 9; (n, Br * G, D)
            s = torch.bmm(q_i, k_j.mT, out=_scratch(s_buf, n, r1 - r0, j1 - j0))  # line 10
            masks.apply(s, i0, i1, j0, j1)
            p = s.sub_(lse[:, r0:r1]).exp_()  # line 11: P_i^(j) = exp(S_i^(j) - L_i)
            dv_j.baddbmm_(p.mT, do_i)  # line 12: dV_j += P^T dO_i (sums the G heads too)
            dp = torch.bmm(do_i, v_j.mT, out=_scratch(dp_buf, n, r1 - r0, j1 - j0))  # line 13
            ds = dp.sub_(delta[:, r0:r1]).mul_(p)  # line 14: dS = P ∘ (dP - D_i)
            dq[:, r0:r1].baddbmm_(ds, k_j, alpha=scale)  # line 15: dQ_i += dS K_j
            dk_j.baddbmm_(ds.mT, q_i)  # line 16: dK_j += dS^T Q_i
        dk[:, j0:j1], dv[:, j0:j1] = dk_j, dv_j  # line 18
    return dq, dk, dv


class FlashAttention(torch.autograd.Function):
    """softmax(Q Kᵀ · scale) V by FlashAttention-2; saves only O and L for the backward."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        causal: bool,
        key_padding_mask: Tensor | None,
        scale: float,
        block_q: int | None,
        block_k: int | None,
    ) -> Tensor:
        B, H, T, D = q.shape
        Hkv, S = k.shape[1], k.shape[2]
        G = H // Hkv
        masks = _Masks(B, Hkv, G, T, S, causal, key_padding_mask)
        br, bc = _default_blocks(B * Hkv, G, T, S, _TILE_ELEMS_FWD)
        br, bc = block_q or br, block_k or bc
        qg = _group(q, Hkv)  # (B * Hkv, T * G, D)
        kg, vg = k.reshape(B * Hkv, S, D), v.reshape(B * Hkv, S, D)  # (B * Hkv, S, D)
        o, lse = _flash_forward(qg, kg, vg, masks, scale, br, bc)
        ctx.save_for_backward(qg, kg, vg, o, lse)
        ctx.masks, ctx.scale, ctx.shape = masks, scale, (B, H, Hkv, block_q, block_k)
        return _ungroup(o, B, H)  # (B, H, T, D)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, do: Tensor) -> tuple[Tensor | None, ...]:
        qg, kg, vg, o, lse = ctx.saved_tensors
        B, H, Hkv, block_q, block_k = ctx.shape
        masks: _Masks = ctx.masks
        T, S = qg.shape[1] // masks.G, kg.shape[1]
        br, bc = _default_blocks(B * Hkv, masks.G, T, S, _TILE_ELEMS_BWD)
        br, bc = block_q or br, block_k or bc
        dq, dk, dv = _flash_backward(
            qg, kg, vg, o, lse, _group(do, Hkv), masks, ctx.scale, br, bc
        )
        dq = _ungroup(dq, B, H).to(qg.dtype)  # (B, H, T, D)
        dk = dk.view(B, Hkv, S, -1).to(kg.dtype)  # (B, Hkv, S, D)
        dv = dv.view(B, Hkv, S, -1).to(vg.dtype)  # (B, Hkv, S, D)
        return dq, dk, dv, None, None, None, None, None


def flash_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
) -> Tensor:
    """Exact attention in O(T + S) extra memory. q (B, H, T, D), k/v (B, Hkv, S, D) -> (B, H, T, D).

    `causal` aligns queries to the end of the keys; `key_padding_mask` (B, S) is True for real keys;
    a query that sees no key gets 0. `block_q` / `block_k` override the tile sizes Br / Bc.
    """
    H, Hkv = q.shape[1], k.shape[1]
    if q.dim() != 4 or k.shape != v.shape or H % Hkv != 0 or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"expected q (B, H, T, D), k/v (B, Hkv, S, D), H % Hkv == 0; got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return FlashAttention.apply(q, k, v, causal, key_padding_mask, scale, block_q, block_k)
