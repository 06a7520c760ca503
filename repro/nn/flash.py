"""FlashAttention: exact attention by tiling Q, K, V with an online softmax, forward and backward.

Dao et al., "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness",
https://arxiv.org/abs/2205.14135 (Sec. 3.1: online softmax and recomputation);
Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning",
https://arxiv.org/abs/2307.08691 (Alg. 1: forward, Alg. 2: backward). Comments cite
FlashAttention-2's algorithms as "Alg. 1 line n" / "Alg. 2 line n".

Glossary: B batch, H query heads, Hkv key/value heads, G = H / Hkv query heads per key/value
head, T query length (the paper's N), S key length, D head dim (the paper's d), Br / Bc the query /
key tile sizes (the paper's B_r, B_c), n = B * Hkv. m is the running row max, l the running row
sum of exp(s - m), L = m + log l the row log-sum-exp: the only statistic saved for the backward.

GQA folds the G query heads that share a key/value head into the rows, (B, H, T, D) ->
(n, T * G, D) with row t * G + g, so every tile is one batched matmul over n against K and V as
stored: repeated K/V heads are never materialised. A pass holds one (n, Br * G, Bc) score tile at
a time, never the (T, S) matrix. Scores are in base 2, as in the Triton FlashAttention-2 kernels
(log2 e folded into the scale, exp2 for exp): the same softmax, and torch's exp2 keeps its speed
on -inf and underflowing inputs where exp falls to a slow path. m and L are in base-2 units.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

LOG2E = math.log2(math.e)

# CPU tiles: few Python iterations, yet the (n, Br * G, Bc) score tile (2 MB in fp32, the size of
# one core's L2 cache here) stays in cache across the passes over it. Tuned by `repro.bench`.
_TILE = 1 << 19
_BLOCK_K = 512


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 inputs accumulate in fp32 (the paper keeps m, l and O_i in fp32 on chip)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _blocks(n: int, G: int, T: int, S: int) -> tuple[int, int]:
    """Default (Br, Bc): an (n, Br * G, Bc) score tile of about _TILE elements."""
    bc = max(1, min(S, _BLOCK_K))
    return max(1, min(T, _TILE // (n * G * bc))), bc


def _group(x: Tensor, Hkv: int) -> Tensor:
    """(B, H, T, D) -> (n, T * G, D), row t * G + g (a view when G == 1 and x is contiguous)."""
    B, H, T, D = x.shape
    return x.reshape(B, Hkv, H // Hkv, T, D).transpose(2, 3).reshape(B * Hkv, -1, D)


def _ungroup(x: Tensor, B: int, H: int) -> Tensor:
    """(n, T * G, D) -> (B, H, T, D), the inverse of `_group`."""
    n, rows, D = x.shape
    Hkv = n // B
    G = H // Hkv
    return x.view(B, Hkv, rows // G, G, D).transpose(2, 3).reshape(B, H, rows // G, D)


def _transposed(x: Tensor, dtype: torch.dtype, factor: float = 1.0) -> Tensor:
    """factor * x, (n, S, D) -> (n, D, S) contiguous: torch's batched matmul reads slices
    [:, :, j0:j1] of this in place, where slices of x.mT would be copied on every tile."""
    n, S, D = x.shape
    out = torch.empty(n, D, S, dtype=dtype, device=x.device).copy_(x.mT)
    return out if factor == 1.0 else out.mul_(factor)


def _scratch(buf: Tensor, *shape: int) -> Tensor:
    """A contiguous view on the front of a flat buffer: tiles reuse memory, never allocate."""
    return buf[: math.prod(shape)].view(shape)


class _Masks:
    """The hidden entries of a tile of queries i0:i1 and keys j0:j1, and the tiles to skip.

    Causal: query t sees keys j <= t + S - T (queries aligned to the end of the keys).
    Padding: key_padding_mask (B, S), True = keep.
    """

    def __init__(self, B: int, Hkv: int, G: int, T: int, S: int, causal: bool, kpm: Tensor | None):
        self.B, self.Hkv, self.G, self.causal, self.offset = B, Hkv, G, causal, S - T
        self.hidden_keys = None if kpm is None else ~kpm.bool()  # (B, S)
        # A row can see no key at all only with padding, no keys, or more queries than keys.
        self.may_be_empty = kpm is not None or S == 0 or (causal and T > S)
        self._bias: dict[tuple[int, int, int], Tensor] = {}

    def key_end(self, i1: int, S: int) -> int:
        """One past the last key that queries < i1 see: later key tiles are skipped."""
        return max(0, min(S, i1 + self.offset)) if self.causal else S

    def query_start(self, j0: int) -> int:
        """The first query that sees key j0: earlier query tiles are skipped."""
        return max(0, j0 - self.offset) if self.causal else 0

    def _causal_bias(self, d: int, rows: int, cols: int, like: Tensor) -> Tensor:
        """(rows, cols): -inf where key c > query r // G + d, else 0; shared by equal tiles."""
        key = (d, rows, cols)
        if key not in self._bias:
            t = torch.arange(rows, device=like.device)[:, None] // self.G
            c = torch.arange(cols, device=like.device)[None, :]
            zero = torch.zeros((), dtype=like.dtype, device=like.device)
            self._bias[key] = zero.masked_fill(c > t + d, float("-inf"))  # (rows, cols)
        return self._bias[key]

    def apply(self, s: Tensor, i0: int, i1: int, j0: int, j1: int) -> None:
        """s (n, (i1 - i0) * G, j1 - j0): hidden scores -> -inf, in place."""
        if self.causal and j1 - 1 > i0 + self.offset:  # the tile crosses the diagonal
            s.add_(self._causal_bias(i0 + self.offset - j0, s.shape[1], s.shape[2], s))
        if self.hidden_keys is not None:
            hidden = self.hidden_keys[:, j0:j1]  # (B, Bc)
            if hidden.any():
                s4 = s.view(self.B, self.Hkv, -1, j1 - j0)  # (B, Hkv, Br * G, Bc)
                s4.masked_fill_(hidden[:, None, None, :], float("-inf"))


def _forward(
    q: Tensor, k: Tensor, v: Tensor, masks: _Masks, scale: float, br: int, bc: int
) -> tuple[Tensor, Tensor]:
    """Alg. 1 on grouped q (n, T * G, D), k/v (n, S, D) -> O (n, T * G, D), L (n, T * G, 1)."""
    n, rows, D = q.shape
    S, G = k.shape[1], masks.G
    T = rows // G
    cd = _compute_dtype(q.dtype)
    kt, v = _transposed(k, cd, scale * LOG2E), v.to(cd)  # (n, D, S): Q_i kt_j is base 2
    o = torch.empty_like(q)  # (n, T * G, D)
    lse = torch.empty(n, rows, 1, dtype=cd, device=q.device)  # (n, T * G, 1), base 2
    s_buf = torch.empty(n * br * G * bc, dtype=cd, device=q.device)
    for i0 in range(0, T, br):  # Alg. 1 line 3
        i1 = min(i0 + br, T)
        r0, r1 = i0 * G, i1 * G
        q_i = q[:, r0:r1].to(cd)  # line 4; (n, Br * G, D)
        o_i = torch.zeros(n, r1 - r0, D, dtype=cd, device=q.device)  # line 5
        l_i = torch.zeros(n, r1 - r0, 1, dtype=cd, device=q.device)
        m_i = torch.full((n, r1 - r0, 1), float("-inf"), dtype=cd, device=q.device)
        end = masks.key_end(i1, S)  # causal: later keys are hidden from all of Q_i
        for j0 in range(0, end, bc):  # line 6
            j1 = min(j0 + bc, end)
            k_jt, v_j = kt[:, :, j0:j1], v[:, j0:j1]  # line 7; (n, D, Bc), (n, Bc, D)
            s = torch.bmm(q_i, k_jt, out=_scratch(s_buf, n, r1 - r0, j1 - j0))  # line 8
            masks.apply(s, i0, i1, j0, j1)
            m_new = torch.maximum(m_i, s.amax(-1, keepdim=True))  # line 9: m_i^(j)
            shift = m_new
            if masks.may_be_empty:  # no key seen yet: shift by 0, so exp(-inf - 0) = 0, not NaN
                shift = m_new.masked_fill(m_new == float("-inf"), 0.0)
            p = s.sub_(shift).exp2_()  # line 9: P~_i^(j) = exp(S_i^(j) - m_i^(j)), in place
            alpha = (m_i - shift).exp2_()  # e^(m_i^(j-1) - m_i^(j))
            l_i.mul_(alpha).add_(p.sum(-1, keepdim=True))  # line 9: l_i^(j)
            o_i.mul_(alpha).baddbmm_(p, v_j)  # line 10: O_i^(j) = diag(alpha) O_i^(j-1) + P~ V_j
            m_i = m_new
        lse[:, r0:r1] = m_i + l_i.log2()  # line 13: L_i = m_i + log(l_i); -inf if no key
        if masks.may_be_empty:  # a row that saw no key has l_i = 0 and O_i = 0: output 0
            l_i.clamp_min_(torch.finfo(cd).tiny)
        torch.div(o_i, l_i, out=o[:, r0:r1])  # line 12: O_i = diag(l_i)^-1 O_i
    return o, lse


def _backward(
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
    """Alg. 2 on grouped tensors (as `_forward`, plus dO like O) -> dQ, dK, dV in fp32/fp64."""
    n, rows, D = q.shape
    S, G = k.shape[1], masks.G
    T = rows // G
    cd = lse.dtype
    kt, vt = _transposed(k, cd, scale * LOG2E), _transposed(v, cd)  # (n, D, S), as `_forward`
    q, k, do = q.to(cd), k.to(cd), do.to(cd)
    delta = (do * o.to(cd)).sum(-1, keepdim=True)  # line 4: D = rowsum(dO ∘ O); (n, T * G, 1)
    if masks.may_be_empty:  # rows that saw no key: P = exp(S - inf) = 0
        lse = lse.masked_fill(lse == float("-inf"), float("inf"))
    dq = torch.zeros_like(q)  # line 3; (n, T * G, D)
    dk, dv = torch.empty_like(k), torch.empty_like(k)  # (n, S, D)
    s_buf = torch.empty(n * br * G * bc, dtype=cd, device=q.device)
    dp_buf = torch.empty_like(s_buf)
    for j0 in range(0, S, bc):  # line 5
        j1 = min(j0 + bc, S)
        dk_j = torch.zeros(n, j1 - j0, D, dtype=cd, device=q.device)  # line 7; (n, Bc, D)
        dv_j = torch.zeros(n, j1 - j0, D, dtype=cd, device=q.device)
        for i0 in range(masks.query_start(j0), T, br):  # line 8; causal: earlier Q_i see no K_j
            i1 = min(i0 + br, T)
            r0, r1 = i0 * G, i1 * G
            c1 = min(j1, masks.key_end(i1, S))  # causal: keys >= c1 are hidden from all of Q_i
            c = c1 - j0
            q_i, do_i = q[:, r0:r1], do[:, r0:r1]  # line 9; (n, Br * G, D)
            s = torch.bmm(q_i, kt[:, :, j0:c1], out=_scratch(s_buf, n, r1 - r0, c))  # line 10
            masks.apply(s, i0, i1, j0, c1)
            p = s.sub_(lse[:, r0:r1]).exp2_()  # line 11: P_i^(j) = exp(S_i^(j) - L_i)
            dv_j[:, :c].baddbmm_(p.mT, do_i)  # line 12: dV_j += P^T dO_i (also sums the G heads)
            dp = torch.bmm(do_i, vt[:, :, j0:c1], out=_scratch(dp_buf, n, r1 - r0, c))  # line 13
            ds = dp.sub_(delta[:, r0:r1]).mul_(p)  # line 14: dS = P ∘ (dP - D_i)
            dq[:, r0:r1].baddbmm_(ds, k[:, j0:c1], alpha=scale)  # line 15: dQ_i += dS K_j
            dk_j[:, :c].baddbmm_(ds.mT, q_i, alpha=scale)  # line 16: dK_j += dS^T Q_i
        dk[:, j0:j1], dv[:, j0:j1] = dk_j, dv_j  # line 18
    return dq, dk, dv


class FlashAttention(torch.autograd.Function):
    """softmax(Q Kᵀ · scale) V by FlashAttention-2, saving only O and L for the backward."""

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
        masks = _Masks(B, Hkv, H // Hkv, T, S, causal, key_padding_mask)
        br, bc = _blocks(B * Hkv, H // Hkv, T, S)
        qg = _group(q, Hkv)  # (n, T * G, D)
        kg, vg = k.reshape(B * Hkv, S, D), v.reshape(B * Hkv, S, D)  # (n, S, D)
        o, lse = _forward(qg, kg, vg, masks, scale, block_q or br, block_k or bc)
        ctx.save_for_backward(qg, kg, vg, o, lse)
        ctx.masks, ctx.scale, ctx.blocks, ctx.B = masks, scale, (block_q, block_k), B
        return _ungroup(o, B, H)  # (B, H, T, D)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, do: Tensor) -> tuple[Tensor | None, ...]:
        qg, kg, vg, o, lse = ctx.saved_tensors
        masks: _Masks = ctx.masks
        B, Hkv, G = ctx.B, masks.Hkv, masks.G
        T, S = qg.shape[1] // G, kg.shape[1]
        br, bc = _blocks(B * Hkv, G, T, S)
        br, bc = ctx.blocks[0] or br, ctx.blocks[1] or bc
        dq, dk, dv = _backward(qg, kg, vg, o, lse, _group(do, Hkv), masks, ctx.scale, br, bc)
        dq = _ungroup(dq, B, Hkv * G).to(qg.dtype)  # (B, H, T, D)
        dk = dk.view(B, Hkv, S, kg.shape[2]).to(kg.dtype)  # (B, Hkv, S, D)
        dv = dv.view(B, Hkv, S, kg.shape[2]).to(vg.dtype)  # (B, Hkv, S, D)
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

    `causal` aligns the queries to the end of the keys; `key_padding_mask` (B, S) is True for real
    keys; a query that sees no key outputs 0. `block_q` / `block_k` set the tiles Br / Bc.
    """
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"need q (B, H, T, D) and k, v (B, Hkv, S, D); got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    sizes = {"B": q.shape[0], "H": q.shape[1], "Hkv": k.shape[1], "D": q.shape[3]}
    if empty := [name for name, size in sizes.items() if size == 0]:
        raise ValueError(
            f"{' and '.join(empty)} = 0 (q {tuple(q.shape)}, k {tuple(k.shape)}): an empty batch "
            "or zero heads has nothing to attend; need B, H, Hkv, D >= 1"
        )
    if k.shape[0] != q.shape[0]:
        raise ValueError(f"q has batch B={q.shape[0]} but k and v have B={k.shape[0]}")
    if q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"H={q.shape[1]} query heads is not a multiple of Hkv={k.shape[1]}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return FlashAttention.apply(q, k, v, causal, key_padding_mask, scale, block_q, block_k)
