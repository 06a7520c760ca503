"""Position information: the sinusoidal encoding and rotary position embedding (RoPE).

Vaswani et al., "Attention Is All You Need", https://arxiv.org/abs/1706.03762 (§3.5);
Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding",
https://arxiv.org/abs/2104.09864 (§3.2-3.4, Eq. 14-16 and 34).

Glossary: B batch, H heads, T time (positions), D head dim, C model width.

RoPE layout: *interleaved pairs*, as in RoFormer Eq. 15 and Meta's LLaMA code: dimensions
(2i, 2i+1) form the i-th plane, rotated by the angle m·θ_i at position m. (GPT-NeoX and the
Hugging Face LLaMA port pair dimension i with i + D/2 instead — "rotate half"; the two differ by a
fixed permutation of the head dimensions, so weights must be permuted to move between them.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_encoding(n_positions: int, dim: int, base: float = 10000.0) -> Tensor:
    """(T, C) table PE[pos, 2i] = sin(pos / base^(2i/C)), PE[pos, 2i+1] = cos(...) (§3.5)."""
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]  # (T, 1)
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (ceil(C/2),)
    angles = pos * inv_freq  # (T, ceil(C/2))
    pe = torch.zeros(n_positions, dim)  # (T, C)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return pe


def sinusoidal_encoding_ref(n_positions: int, dim: int, base: float = 10000.0) -> Tensor:
    """The §3.5 formula evaluated entry by entry in float64; (T, C)."""
    pe = torch.zeros(n_positions, dim, dtype=torch.float64)
    for pos in range(n_positions):
        for j in range(dim):
            angle = pos / base ** (2 * (j // 2) / dim)
            pe[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return pe


def rope_frequencies(head_dim: int, base: float = 10000.0) -> Tensor:
    """θ_i = base^(-2(i-1)/D) for i = 1..D/2 (Eq. 15); (D/2,) float64."""
    return base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)


def apply_rope_ref(x: Tensor, start_pos: int = 0, base: float = 10000.0) -> Tensor:
    """Rotate x (B, H, T, D) by the block-diagonal matrix R^D_{Θ,m} of Eq. 15, m = start_pos + t.

    Builds the (T, D, D) rotation matrices explicitly, 2×2 block by 2×2 block, in float64.
    """
    T, D = x.shape[-2], x.shape[-1]
    assert D % 2 == 0, f"RoPE needs an even head dim, got D={D}"
    m = torch.arange(start_pos, start_pos + T, dtype=torch.float64, device=x.device)
    angles = m[:, None] * rope_frequencies(D, base).to(x.device)  # (T, D/2)
    R = torch.zeros(T, D, D, dtype=torch.float64, device=x.device)  # (T, D, D)
    for i in range(D // 2):
        c, s = torch.cos(angles[:, i]), torch.sin(angles[:, i])
        R[:, 2 * i, 2 * i], R[:, 2 * i, 2 * i + 1] = c, -s
        R[:, 2 * i + 1, 2 * i], R[:, 2 * i + 1, 2 * i + 1] = s, c
    return torch.einsum("tij,bhtj->bhti", R, x.double()).to(x.dtype)  # (B, H, T, D)


class RotaryEmbedding(nn.Module):
    """RoPE as `rope(x, start_pos)` for x (B, H, T, D), from precomputed cos/sin tables.

    Computes Eq. 34 — x ⊗ cos(mθ) + (-x_2, x_1, -x_4, x_3, …) ⊗ sin(mθ) — in at least fp32
    (fp64 stays fp64, from fp64 tables), cast back to x's dtype.
    """

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0) -> None:
        super().__init__()
        assert head_dim % 2 == 0, f"RoPE needs an even head dim, got head_dim={head_dim}"
        self.head_dim, self.max_seq_len = head_dim, max_seq_len
        m = torch.arange(max_seq_len, dtype=torch.float64)
        angles = m[:, None] * rope_frequencies(head_dim, base)  # (T_max, D/2) fp64
        self.register_buffer("cos", torch.cos(angles), persistent=False)
        self.register_buffer("sin", torch.sin(angles), persistent=False)

    def forward(self, x: Tensor, start_pos: int = 0) -> Tensor:
        """x (B, H, T, D) at positions start_pos..start_pos+T-1 -> rotated x, same shape."""
        T = x.shape[-2]
        assert start_pos + T <= self.max_seq_len, (
            f"positions up to {start_pos + T} exceed max_seq_len={self.max_seq_len}"
        )
        cd = torch.promote_types(x.dtype, torch.float32)
        cos = self.cos[start_pos : start_pos + T].to(cd)  # (T, D/2)
        sin = self.sin[start_pos : start_pos + T].to(cd)  # (T, D/2)
        x1, x2 = x.to(cd).unflatten(-1, (-1, 2)).unbind(-1)  # (B, H, T, D/2) each
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, H, T, D/2, 2)
        return out.flatten(-2).type_as(x)  # (B, H, T, D)
