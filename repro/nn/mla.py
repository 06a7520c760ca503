"""Multi-head latent attention (MLA) with decoupled RoPE and a latent KV cache.

DeepSeek-AI, "DeepSeek-V2", https://arxiv.org/abs/2405.04434 (§2.1, Eq. 9-19; Appendix C,
Eq. 37-47). Keys and values are rebuilt from one compressed latent per token,
c^KV = W^DKV·h (Eq. 9), k^C = W^UK·c^KV, v^C = W^UV·c^KV (Eq. 10-11); queries are compressed
too, c^Q = W^DQ·h, q^C = W^UQ·c^Q (Eq. 12-13). Position enters through extra per-head query
parts q^R = RoPE(W^QR·c^Q) and one key part shared by all heads, k^R = RoPE(W^KR·h) (Eq. 14-15),
concatenated to the content parts and scaled by 1/√(D + Dr) (Eq. 16-18). The cache holds
c^KV and k^R: (d_c + Dr) numbers per token and layer.

Glossary: B batch, T query length, S key length (cached prefix + T), C model width (d), H heads
(n_h), D head dim (d_h), Dr decoupled RoPE dim (d_h^R), Lc KV latent dim (d_c), Lq query
latent dim (d_c'), L layers.

`forward_naive` decompresses k^C and v^C for every cached position (the reference);
`forward_absorbed` never forms them: W^UK is folded into the query (q̃ = W^UKᵀ q^C, attended
against c^KV) and W^UV into the output (o = W^UV·Σ p·c^KV), as Appendix C describes. The two
agree because (W^UK c)ᵀ q = cᵀ (W^UKᵀ q). `rope_on_compressed=True` rotates q^C and k^C as well
— the design §2.1.3 rejects: the rotation R_j of key position j then sits between q^C and W^UK,
so no position-free matrix can be folded into the query (the absorbed path computes a different
function).

RMSNorm after both latents and no biases follow the released model; the released model also
rescales at the latent bottlenecks, which changes no shape and is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repro.nn.attention import attention_mask
from repro.nn.norm import RMSNorm
from repro.nn.positional import RotaryEmbedding


@dataclass
class MLAConfig:
    """Defaults are tiny; DeepSeek-V2 is C 5120, H 128, D 128, Dr 64, Lc 512, Lq 1536 (§3.1.2)."""

    d_model: int = 64
    n_heads: int = 4
    head_dim: int = 16  # D: content part of q/k and the value head
    rope_dim: int = 8  # Dr
    kv_rank: int = 32  # Lc = d_c
    q_rank: int | None = 48  # Lq = d_c'; None: q = W^Q h uncompressed (DeepSeek-V2-Lite)
    max_seq_len: int = 256
    rope_base: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.rope_dim % 2:
            raise ValueError(f"rope_dim={self.rope_dim} must be even for RoPE")

    @property
    def cache_elems_per_token(self) -> int:
        """d_c + d_h^R numbers per token and layer (§2.1.3)."""
        return self.kv_rank + self.rope_dim


class LatentKVCache(nn.Module):
    """Preallocated latent buffers for one MLA layer: c^KV (B, S_max, Lc) and k^R (B, S_max, Dr).

    `update(pos, c, k_rope)` writes T positions and returns the filled prefixes (B, pos+T, ·).
    """

    def __init__(
        self,
        batch: int,
        max_seq_len: int,
        kv_rank: int,
        rope_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        c = torch.zeros(batch, max_seq_len, kv_rank, dtype=dtype, device=device)
        kr = torch.zeros(batch, max_seq_len, rope_dim, dtype=dtype, device=device)
        self.register_buffer("c", c, persistent=False)  # (B, S_max, Lc)
        self.register_buffer("k_rope", kr, persistent=False)  # (B, S_max, Dr)
        self.max_seq_len = max_seq_len

    def update(self, pos: int, c: Tensor, k_rope: Tensor) -> tuple[Tensor, Tensor]:
        """c (B, T, Lc), k_rope (B, T, Dr) at pos..pos+T-1 -> prefixes (B, pos+T, Lc / Dr)."""
        T = c.shape[1]
        if pos < 0 or pos + T > self.max_seq_len:
            raise ValueError(
                f"LatentKVCache.update: positions {pos}..{pos + T - 1} are outside the cache "
                f"(0..{self.max_seq_len - 1}); allocate a longer cache"
            )
        self.c[:, pos : pos + T] = c
        self.k_rope[:, pos : pos + T] = k_rope
        return self.c[:, : pos + T], self.k_rope[:, : pos + T]

    @property
    def nbytes(self) -> int:
        """B · S_max · (Lc + Dr) · bytes per element."""
        return self.c.nbytes + self.k_rope.nbytes


class MultiHeadLatentAttention(nn.Module):
    """MLA (Eq. 37-47), causal self-attention; `forward` is the naive path."""

    def __init__(self, cfg: MLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C, H, D, Dr = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.rope_dim
        if cfg.q_rank is None:
            self.wq = nn.Linear(C, H * D, bias=False)  # W^Q for q^C
            self.wqr = nn.Linear(C, H * Dr, bias=False)  # W^QR applied to h
        else:
            self.wdq = nn.Linear(C, cfg.q_rank, bias=False)  # W^DQ (Eq. 37)
            self.q_norm = RMSNorm(cfg.q_rank, cfg.norm_eps)
            self.wuq = nn.Linear(cfg.q_rank, H * D, bias=False)  # W^UQ (Eq. 38)
            self.wqr = nn.Linear(cfg.q_rank, H * Dr, bias=False)  # W^QR (Eq. 39)
        self.wdkv = nn.Linear(C, cfg.kv_rank, bias=False)  # W^DKV (Eq. 41)
        self.kv_norm = RMSNorm(cfg.kv_rank, cfg.norm_eps)
        self.wkr = nn.Linear(C, Dr, bias=False)  # W^KR (Eq. 43)
        self.wuk = nn.Linear(cfg.kv_rank, H * D, bias=False)  # W^UK (Eq. 42)
        self.wuv = nn.Linear(cfg.kv_rank, H * D, bias=False)  # W^UV (Eq. 45)
        self.wo = nn.Linear(H * D, C, bias=False)  # W^O (Eq. 47)
        self.rope = RotaryEmbedding(Dr, cfg.max_seq_len, cfg.rope_base)
        self.rope_content = RotaryEmbedding(D, cfg.max_seq_len, cfg.rope_base)  # control only
        self.scale = 1.0 / math.sqrt(D + Dr)  # Eq. 46

    # --- shared pieces ---------------------------------------------------------------------

    def _queries(self, x: Tensor, start_pos: int) -> tuple[Tensor, Tensor]:
        """x (B, T, C) -> q^C (B, H, T, D), q^R (B, H, T, Dr) rotated at start_pos.."""
        B, T, _ = x.shape
        H, D, Dr = self.cfg.n_heads, self.cfg.head_dim, self.cfg.rope_dim
        if self.cfg.q_rank is None:
            qc, qr = self.wq(x), self.wqr(x)
        else:
            cq = self.q_norm(self.wdq(x))  # c^Q (B, T, Lq)
            qc, qr = self.wuq(cq), self.wqr(cq)
        qc = qc.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        qr = self.rope(qr.view(B, T, H, Dr).transpose(1, 2), start_pos)  # (B, H, T, Dr)
        return qc, qr

    def latents(self, x: Tensor, start_pos: int) -> tuple[Tensor, Tensor]:
        """What the cache stores: c^KV (B, T, Lc) and the rotated shared key k^R (B, T, Dr)."""
        c = self.kv_norm(self.wdkv(x))  # (B, T, Lc)
        kr = self.rope(self.wkr(x).unsqueeze(1), start_pos).squeeze(1)  # (B, T, Dr)
        return c, kr

    def _prefix(
        self, x: Tensor, start_pos: int, cache: LatentKVCache | None
    ) -> tuple[Tensor, Tensor]:
        c, kr = self.latents(x, start_pos)
        if cache is not None:
            c, kr = cache.update(start_pos, c, kr)  # (B, S, Lc), (B, S, Dr)
        return c, kr

    def _softmax(self, scores: Tensor) -> Tensor:
        T, S = scores.shape[-2], scores.shape[-1]
        mask = attention_mask(T, S, True, None, scores.device)  # (T, S): query aligned to end
        return scores.masked_fill(~mask, float("-inf")).softmax(-1)

    # --- the two paths ---------------------------------------------------------------------

    def forward_naive(
        self,
        x: Tensor,
        cache: LatentKVCache | None = None,
        start_pos: int = 0,
        rope_on_compressed: bool = False,
    ) -> Tensor:
        """Decompress k^C, v^C from c^KV for every key, then attend (Eq. 42-47). x (B, T, C)."""
        B, T, _ = x.shape
        H, D = self.cfg.n_heads, self.cfg.head_dim
        qc, qr = self._queries(x, start_pos)  # (B, H, T, D), (B, H, T, Dr)
        c, kr = self._prefix(x, start_pos, cache)  # (B, S, Lc), (B, S, Dr)
        S = c.shape[1]
        kc = self.wuk(c).view(B, S, H, D).transpose(1, 2)  # k^C (B, H, S, D)
        v = self.wuv(c).view(B, S, H, D).transpose(1, 2)  # v^C (B, H, S, D)
        if rope_on_compressed:  # the rejected design: RoPE on the content query and key too
            qc, kc = self.rope_content(qc, start_pos), self.rope_content(kc, 0)
        scores = (qc @ kc.transpose(-2, -1) + qr @ kr.unsqueeze(1).transpose(-2, -1)) * self.scale
        o = self._softmax(scores) @ v  # (B, H, T, D)
        return self.wo(o.transpose(1, 2).reshape(B, T, H * D))

    forward = forward_naive

    def absorbed_weights(self) -> tuple[Tensor, Tensor]:
        """W^UK per head as (H, D, Lc), and W^O·W^UV folded per head as (H, Lc, C)."""
        H, D, Lc = self.cfg.n_heads, self.cfg.head_dim, self.cfg.kv_rank
        w_uk = self.wuk.weight.view(H, D, Lc)  # (H, D, Lc)
        w_uv = self.wuv.weight.view(H, D, Lc)  # (H, D, Lc)
        w_o = self.wo.weight.view(-1, H, D)  # (C, H, D)
        w_ouv = torch.einsum("chd,hdl->hlc", w_o, w_uv)  # (H, Lc, C)
        return w_uk, w_ouv

    def forward_absorbed(
        self, x: Tensor, cache: LatentKVCache | None = None, start_pos: int = 0
    ) -> Tensor:
        """Attend in latent space: q̃ = W^UKᵀ q^C against c^KV, output W^O W^UV · Σ p c^KV."""
        qc, qr = self._queries(x, start_pos)  # (B, H, T, D), (B, H, T, Dr)
        c, kr = self._prefix(x, start_pos, cache)  # (B, S, Lc), (B, S, Dr)
        w_uk, w_ouv = self.absorbed_weights()
        q_lat = torch.einsum("bhtd,hdl->bhtl", qc, w_uk)  # (B, H, T, Lc)
        scores = torch.einsum("bhtl,bsl->bhts", q_lat, c)  # content part (B, H, T, S)
        scores = (scores + torch.einsum("bhtr,bsr->bhts", qr, kr)) * self.scale
        o_lat = torch.einsum("bhts,bsl->bhtl", self._softmax(scores), c)  # (B, H, T, Lc)
        return torch.einsum("bhtl,hlc->btc", o_lat, w_ouv)  # (B, T, C)


def mla_cache_elems_per_token(kv_rank: int, rope_dim: int, n_layers: int) -> int:
    """(d_c + d_h^R)·l (Table 1)."""
    return (kv_rank + rope_dim) * n_layers


def mha_cache_elems_per_token(n_kv_heads: int, head_dim: int, n_layers: int) -> int:
    """2·n_kv·d_h·l: MHA with n_kv = n_h, GQA with n_kv = n_g, MQA with n_kv = 1 (Table 1)."""
    return 2 * n_kv_heads * head_dim * n_layers
