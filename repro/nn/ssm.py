"""The selective scan of Mamba: discretisation, the sequential reference and a parallel scan.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
https://arxiv.org/abs/2312.00752 (§2 Eq. 2 and 4, §3.2 Algorithm 2, §3.3, App. D); the official
`mamba_ssm/ops/selective_scan_interface.py::selective_scan_ref` is the semantics copied here.

Glossary: B batch, L length, D channels (the block's inner width E·d_model), N state size.
The SSM matrices are written `Bt` (B_t) and `Ct` (C_t) to keep them apart from the batch letter.
Shapes: u, delta, z (B, L, D); A (D, N); Bt, Ct (B, L, N) when selective, (D, N) when LTI;
the state h (B, D, N).

Discretisation (Eq. 4). Ā = exp(ΔA) is the zero-order hold (ZOH) for A. For B the official code,
and this module by default, uses the simplified rule B̄ = ΔB; ZOH would give
B̄ = (ΔA)⁻¹(exp(ΔA) − 1)·ΔB. Per channel and state the two differ by the factor
(exp(ΔA) − 1)/(ΔA) = 1 + ΔA/2 + O((ΔA)²): for A < 0 the simplified B̄ is larger by about Δ|A|/2
(0.5% at Δ|A| = 0.01, 21% at Δ|A| = 0.5). `discretization="zoh"` gives the exact ZOH, used for
Theorem 1.

The recurrence h_t = Ā_t h_{t-1} + B̄_t x_t is linear in h, so it is a scan with the associative
operator (a₁, b₁) ∘ (a₂, b₂) = (a₁a₂, a₂b₁ + b₂). Three ways to run it, all differentiable by
autograd and equal up to rounding:
- `selective_scan_ref`, a loop over time: the specification.
- `selective_scan`, a Hillis–Steele parallel scan (O(L log K) work, depth O(log L)): the shape
  of the GPU kernel's scan (§3.3), not fast on a CPU.
- `selective_scan_chunked`, work-efficient on a CPU: inside a chunk of K steps the cumulative
  log-decay is a `cumsum`, so every position's state is a few vectorised tensor ops; only the
  chunk-end states are carried sequentially (the chunked form of Mamba-2's SSD algorithm, Dao &
  Gu 2024, arXiv:2405.21060, here with Mamba-1's per-(channel, state) decays).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Discretization = Literal["simplified", "zoh"]
CHUNK = 32  # K: positions scanned in parallel inside one chunk
# selective_scan_chunked: the longest chunk, the elements one group of chunks may hold (about
# 512 KiB of fp32, so a group's intermediates stay in cache: a tensor above glibc's mmap
# threshold is page-faulted in on every allocation, which made whole-sequence tensors several
# times slower per element), and the largest log-decay |Σ ΔA| allowed over one chunk. The chunk's
# exponents are centred on its middle, so exp(±S) stays within exp(±60) ≈ 1.1e±26: finite in
# fp32 for |B̄x| < 3e12, and a normal float at the small end.
CHUNK_MAX = 64
GROUP_ELEMENTS = 1 << 17
LOG_DECAY_BOUND = 120.0


def discretize(
    delta: Tensor, A: Tensor, Bt: Tensor, discretization: Discretization = "simplified"
) -> tuple[Tensor, Tensor]:
    """(Ā, B̄ / x): both (B, L, D, N). delta (B, L, D), A (D, N), Bt (B, L, N) or (D, N)."""
    dA = delta.unsqueeze(-1) * A  # ΔA: (B, L, D, N)
    A_bar = torch.exp(dA)  # Eq. 4, ZOH for A
    B_full = Bt.unsqueeze(2) if Bt.dim() == 3 else Bt  # (B, L, 1, N) or (D, N)
    if discretization == "simplified":
        B_bar = delta.unsqueeze(-1) * B_full  # B̄ = ΔB (official selective_scan_ref)
    elif discretization == "zoh":
        B_bar = torch.expm1(dA) / A * B_full  # (ΔA)⁻¹(exp(ΔA) − 1)·ΔB, A diagonal and nonzero
    else:
        raise ValueError(f"discretization must be 'simplified' or 'zoh', got {discretization!r}")
    return A_bar, B_bar


def _readout(h_seq: Tensor, Ct: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """y_t = C_t h_t (Eq. 2b) + D·u_t, gated by SiLU(z). h_seq (B, L, D, N) -> (B, L, D)."""
    if Ct.dim() == 3:
        y = torch.einsum("bldn,bln->bld", h_seq, Ct)
    else:
        y = torch.einsum("bldn,dn->bld", h_seq, Ct)
    if D is not None:
        y = y + u * D
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    Bt: Tensor,
    Ct: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    h0: Tensor | None = None,
    discretization: Discretization = "simplified",
) -> tuple[Tensor, Tensor]:
    """The specification: a loop over time. Returns y (B, L, D) and the last state (B, D, N).

    delta is Δ after softplus; h0 (B, D, N) is the state before the first step (zeros if None).
    The loop iterates over `unbind` views: indexing `a[:, t]` inside the loop makes autograd
    scatter every step's gradient into a full-size zero tensor, O(L²) memory traffic.
    """
    A_bar, B_bar = discretize(delta, A, Bt, discretization)
    bx = B_bar * u.unsqueeze(-1)  # B̄_t x_t: (B, L, D, N)
    h = torch.zeros_like(bx[:, 0]) if h0 is None else h0.to(bx.dtype)  # (B, D, N)
    states = []
    for a_t, b_t in zip(A_bar.unbind(1), bx.unbind(1), strict=True):
        h = a_t * h + b_t  # Eq. 2a
        states.append(h)
    h_seq = torch.stack(states, dim=1)  # (B, L, D, N)
    return _readout(h_seq, Ct, u, D, z), h


def _scan_in_chunk(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Inclusive Hillis–Steele scan along dim 2 from a zero state: (∏ a, h) at every position.

    a, b (B, C, K, ...). After the round with shift s, position k holds the composition of the
    elements k−2s+1 … k; log₂K rounds cover the chunk.
    """
    K = a.shape[2]
    shift = 1
    while shift < K:
        a_prev = F.pad(a[:, :, :-shift], (0, 0) * (a.dim() - 3) + (shift, 0), value=1.0)
        b_prev = F.pad(b[:, :, :-shift], (0, 0) * (b.dim() - 3) + (shift, 0), value=0.0)
        a, b = a * a_prev, a * b_prev + b  # (a_prev, b_prev) ∘ (a, b)
        shift *= 2
    return a, b


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None, chunk: int = CHUNK) -> Tensor:
    """h_t = a_t h_{t-1} + b_t at every t in parallel: a, b (B, L, …), h0 (B, …) -> (B, L, …).

    Chunks of `chunk` positions are scanned in parallel (Hillis–Steele); the state at each
    chunk's end is itself a linear recurrence over chunks, solved by the same function, so the
    depth is O(log L) and the work O(L log chunk). Plain tensor ops: autograd gives the backward.
    """
    assert chunk >= 2, f"chunk must be at least 2, got {chunk}"
    Bsz, L = a.shape[:2]
    n_chunks = -(-L // chunk)
    pad = n_chunks * chunk - L
    if pad:  # identity elements (a = 1, b = 0) at the end leave the real positions unchanged
        a = torch.cat([a, a.new_ones((Bsz, pad, *a.shape[2:]))], dim=1)
        b = torch.cat([b, b.new_zeros((Bsz, pad, *b.shape[2:]))], dim=1)
    a_c = a.reshape(Bsz, n_chunks, chunk, *a.shape[2:])  # (B, C, K, ...)
    b_c = b.reshape(Bsz, n_chunks, chunk, *b.shape[2:])
    a_cum, h_local = _scan_in_chunk(a_c, b_c)  # from a zero state at each chunk's start
    if n_chunks == 1:
        start = h0.unsqueeze(1) if h0 is not None else None  # (B, 1, ...)
    else:
        ends = linear_scan(a_cum[:, :, -1], h_local[:, :, -1], h0, chunk)  # (B, C, ...)
        first = h0 if h0 is not None else torch.zeros_like(ends[:, 0])
        start = torch.cat([first.unsqueeze(1), ends[:, :-1]], dim=1)  # (B, C, ...)
    h = h_local if start is None else a_cum * start.unsqueeze(2) + h_local  # (B, C, K, ...)
    return h.reshape(Bsz, n_chunks * chunk, *h.shape[3:])[:, :L]


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    Bt: Tensor,
    Ct: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    h0: Tensor | None = None,
    discretization: Discretization = "simplified",
    chunk: int = CHUNK,
) -> tuple[Tensor, Tensor]:
    """Same contract as `selective_scan_ref`, computed with the parallel `linear_scan`."""
    A_bar, B_bar = discretize(delta, A, Bt, discretization)
    bx = B_bar * u.unsqueeze(-1)  # (B, L, D, N)
    A_bar = A_bar.expand_as(bx)
    h0 = None if h0 is None else h0.to(bx.dtype)  # as the loop does
    h_seq = linear_scan(A_bar, bx, h0, chunk)  # (B, L, D, N)
    return _readout(h_seq, Ct, u, D, z), h_seq[:, -1]


def safe_chunk(delta: Tensor, A: Tensor, longest: int = CHUNK_MAX) -> int:
    """The longest power-of-two chunk ≤ `longest` whose log-decay stays within the bound.

    The log-decay over a chunk is S = A·ΣΔ per channel and state (A ≤ 0), so its size is largest
    for the channel's most negative A: the bound is checked on max_n |A[d, n]| · Σ_chunk Δ for
    every batch row, channel and chunk. The sums are taken chunk by chunk (a reshape and one sum,
    at least in fp32: ≤ 64 positive terms, relative error ~1e-6, far inside the bound's margin),
    not as differences of one prefix sum over the whole sequence, which needed fp64 to stay exact
    and cost up to a sixth of the scan at D = 512. Returns 1 when even two steps exceed it.
    """
    with torch.no_grad():
        dtype = torch.promote_types(delta.dtype, torch.float32)
        rate = delta.detach().to(dtype) * A.detach().to(dtype).abs().amax(-1)  # (B, L, D)
        Bsz, L, Dch = rate.shape
        K = 1 << max(0, min(longest, L).bit_length() - 1)
        while K > 1:
            n_chunks = -(-L // K)  # the last chunk may be shorter: padded with zeros
            padded = F.pad(rate, (0, 0, 0, n_chunks * K - L))
            if padded.view(Bsz, n_chunks, K, Dch).sum(2).amax() <= LOG_DECAY_BOUND:
                break
            K //= 2
    return K


def _time_last(x: Tensor, L: int, n_chunks: int, K: int) -> Tensor:
    """(B, L, X) → (B, X, C, K): time padded with zeros to C·K and split into chunks."""
    x = F.pad(x.transpose(1, 2), (0, n_chunks * K - L)).contiguous()  # pad keeps the transpose
    return x.reshape(*x.shape[:2], n_chunks, K)


def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    Bt: Tensor,
    Ct: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    h0: Tensor | None = None,
    discretization: Discretization = "simplified",
    chunk: int = CHUNK_MAX,
) -> tuple[Tensor, Tensor]:
    """Same contract as `selective_scan_ref`, computed chunk by chunk with cumulative sums.

    Inside a chunk with start state h₀ and log-decay S_t = A·Σ_{k≤t} Δ_k since that start,
    h_t = exp(S_t)·(h₀ + Σ_{s≤t} exp(−S_s) B̄_s x_s): one cumsum of Δ, one exp, one cumsum of the
    weighted inputs and a few products, over a whole group of chunks at once. The chunk ends are
    then carried sequentially (h₀ of a chunk is the last state of the previous one). Work is
    O(B·L·D·N) like the loop's, in ~10 vectorised ops per group instead of ~3 per time step.

    Guard: exp(−S) grows as the state decays. Exponents are measured from the chunk's middle
    (S − S_K/2, free because S factorises as A times a sum of Δ), and `safe_chunk` shortens the
    chunks until |S_K| ≤ LOG_DECAY_BOUND everywhere, so no factor leaves exp(±60). When one step
    alone exceeds the bound (chunks of 1), its decay, below exp(−120), is clamped to exp(−120).
    `chunk` is the longest chunk to use; padding at the end has Δ = 0, which keeps the state.
    """
    Bsz, L, Dch = u.shape
    N = A.shape[-1]
    K = safe_chunk(delta, A, chunk)
    n_chunks = -(-L // K)
    per_group = max(1, GROUP_ELEMENTS // (Bsz * Dch * N * K))

    A5 = A[None, :, :, None, None]  # (1, D, N, 1, 1)
    A5_log2 = A5 * math.log2(math.e)  # exp(x) = 2^(x·log₂e): exp2 is ~20% faster on a CPU
    dt = _time_last(delta, L, n_chunks, K)  # (B, D, C, K)
    du = _time_last(delta * u, L, n_chunks, K)
    uu = _time_last(u, L, n_chunks, K) if discretization == "zoh" else None
    if Bt.dim() == 3:  # selective: (B, L, N) → (B, 1, N, C, K)
        B5, C5 = (_time_last(m, L, n_chunks, K).unsqueeze(1) for m in (Bt, Ct))
    else:  # LTI: (D, N) → (1, D, N, 1, 1)
        B5, C5 = Bt[None, :, :, None, None], Ct[None, :, :, None, None]

    h = u.new_zeros(Bsz, Dch, N) if h0 is None else h0.to(u.dtype)
    # Without autograd (inference, benchmarks) a group's temporaries are updated in place: fewer
    # allocations of half a MiB, ~15% less time; autograd needs the values it saved unchanged.
    inputs = (u, delta, A, Bt, Ct, h0)
    in_place = not (
        torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    )
    ys = []
    for c0 in range(0, n_chunks, per_group):
        g = slice(c0, c0 + per_group)
        B_g = B5[:, :, :, g] if B5.shape[3] > 1 else B5
        C_g = C5[:, :, :, g] if C5.shape[3] > 1 else C5
        csum = torch.cumsum(dt[:, :, g], -1)  # Σ Δ since the chunk's start: (B, D, G, K)
        S2 = (csum - csum[..., -1:] / 2)[:, :, None] * A5_log2  # (S_t − S_K/2)·log₂e
        if K == 1:
            S2 = S2.clamp(min=-LOG_DECAY_BOUND / 2 * math.log2(math.e))
        decay = S2.exp2_() if in_place else S2.exp2()  # exp(S_t − S_K/2): (B, D, N, G, K)
        if discretization == "simplified":
            bx = du[:, :, None, g] * B_g  # B̄x = Δ·B·x
        elif discretization == "zoh":
            bx = torch.expm1(dt[:, :, None, g] * A5) / A5 * B_g * uu[:, :, None, g]
        else:
            raise ValueError(
                f"discretization must be 'simplified' or 'zoh', got {discretization!r}"
            )
        # w_t = Σ_{s≤t} exp(S_K/2 − S_s) B̄_s x_s
        w = bx.div_(decay).cumsum_(-1) if in_place else (bx / decay).cumsum(-1)
        half = decay[..., -1]  # exp(S_K/2): (B, D, N, G)
        end_local = half * w[..., -1]  # the chunk's last state from a zero start
        starts = []
        for dec, loc in zip((half * half).unbind(-1), end_local.unbind(-1), strict=True):
            starts.append(h)  # the chunk ends, in order: h ← exp(S_K)·h + local end state
            h = torch.addcmul(loc, dec, h)
        carried = (half * torch.stack(starts, -1)).unsqueeze(-1)  # exp(S_K/2)·h₀: (B, D, N, G, 1)
        if in_place:  # y_t = C_t h_t with h_t = exp(S_t − S_K/2)·(w_t + exp(S_K/2)·h₀)
            ys.append(w.add_(carried).mul_(decay).mul_(C_g).sum(2))  # (B, D, G, K)
        else:
            ys.append((decay * (w + carried) * C_g).sum(2))
    y = torch.cat(ys, 2).reshape(Bsz, Dch, n_chunks * K)[..., :L].transpose(1, 2)
    if D is not None:
        y = y + u * D
    if z is not None:
        y = y * F.silu(z)
    return y, h
