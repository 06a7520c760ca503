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
operator (a₁, b₁) ∘ (a₂, b₂) = (a₁a₂, a₂b₁ + b₂). `selective_scan_ref` runs it as a loop (the
specification, fine on a CPU for tiny models); `selective_scan` runs a chunked parallel scan
(O(L log K) work, depth O(log L)), differentiable by autograd.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Discretization = Literal["simplified", "zoh"]
CHUNK = 32  # K: positions scanned in parallel inside one chunk


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
    h_seq = linear_scan(A_bar, bx, h0, chunk)  # (B, L, D, N)
    return _readout(h_seq, Ct, u, D, z), h_seq[:, -1]
