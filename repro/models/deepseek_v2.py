"""DeepSeek-V2: a pre-RMSNorm decoder with multi-head latent attention and DeepSeekMoE.

DeepSeek-AI, "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language
Model", https://arxiv.org/abs/2405.04434 (§3.1.2: 60 layers, hidden 5120, n_h = d_h = 128,
d_c = 512, d_c' = 1536, d_h^R = 64; every FFN but the first layer's is MoE with 2 shared and
160 routed experts of width 1536, 6 routed active; Appendix B: DeepSeek-V2-Lite). The
vocabulary (102400), the dense FFN width (12288; Lite 10944) and the untied output head are from
the released configuration.

Glossary: B batch, T time, C model width, L layers, H heads, D head dim, Dr RoPE dim, Lc / Lq
KV / query latent dims, F dense FFN width, Fe expert width, S shared experts, N routed experts,
K routed experts per token, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from repro.nn.ffn import GLUFeedForward
from repro.nn.mla import LatentKVCache, MLAConfig, MultiHeadLatentAttention
from repro.nn.moe import deepseek_moe
from repro.nn.norm import RMSNorm

PRESETS: dict[str, dict[str, Any]] = {
    "deepseek-v2": dict(
        n_layers=60,
        d_model=5120,
        n_heads=128,
        head_dim=128,
        rope_dim=64,
        kv_rank=512,
        q_rank=1536,
        d_ff=12288,
        n_dense_layers=1,
        d_expert=1536,
        n_shared=2,
        n_routed=160,
        top_k=6,
        vocab_size=102400,
    ),
    "deepseek-v2-lite": dict(  # Appendix B.1: no query compression
        n_layers=27,
        d_model=2048,
        n_heads=16,
        head_dim=128,
        rope_dim=64,
        kv_rank=512,
        q_rank=None,
        d_ff=10944,
        n_dense_layers=1,
        d_expert=1408,
        n_shared=2,
        n_routed=64,
        top_k=6,
        vocab_size=102400,
    ),
}


@dataclass
class DeepSeekV2Config:
    """Defaults are a tiny CPU model; `from_name` gives the published sizes."""

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    head_dim: int = 16
    rope_dim: int = 8
    kv_rank: int = 32
    q_rank: int | None = 48
    d_ff: int = 128  # dense FFN of the first n_dense_layers
    n_dense_layers: int = 1
    d_expert: int = 32
    n_shared: int = 2
    n_routed: int = 8
    top_k: int = 2
    vocab_size: int = 256
    max_seq_len: int = 256  # rope tables only; the published context is 128K
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= self.n_routed:
            raise ValueError(f"top_k={self.top_k} must lie in 1..n_routed={self.n_routed}")

    def mla(self) -> MLAConfig:
        return MLAConfig(
            self.d_model,
            self.n_heads,
            self.head_dim,
            self.rope_dim,
            self.kv_rank,
            self.q_rank,
            self.max_seq_len,
            norm_eps=self.norm_eps,
        )

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> DeepSeekV2Config:
        if name not in PRESETS:
            raise ValueError(f"unknown DeepSeek-V2 preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


DEEPSEEK_V2 = DeepSeekV2Config.from_name("deepseek-v2")


class DeepSeekV2Block(nn.Module):
    """h = x + MLA(RMSNorm(x)); out = h + FFN(RMSNorm(h)), FFN dense or DeepSeekMoE (Eq. 20)."""

    def __init__(self, cfg: DeepSeekV2Config, dense: bool) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attention = MultiHeadLatentAttention(cfg.mla())
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn: nn.Module = (
            GLUFeedForward(cfg.d_model, cfg.d_ff)
            if dense
            else deepseek_moe(cfg.d_model, cfg.d_expert, cfg.n_shared, cfg.n_routed, cfg.top_k)
        )

    def forward(self, x: Tensor, cache: LatentKVCache | None = None, start_pos: int = 0) -> Tensor:
        """x (B, T, C) -> (B, T, C)."""
        h = x + self.attention(self.attention_norm(x), cache, start_pos)
        return h + self.ffn(self.ffn_norm(h))


class DeepSeekV2(nn.Module):
    """Token embedding, L blocks (the first n_dense_layers dense), RMSNorm, untied head."""

    def __init__(self, cfg: DeepSeekV2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(
            DeepSeekV2Block(cfg, dense=i < cfg.n_dense_layers) for i in range(cfg.n_layers)
        )
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(
        self, idx: Tensor, start_pos: int = 0, caches: list[LatentKVCache] | None = None
    ) -> Tensor:
        """idx (B, T) -> logits (B, T, V)."""
        x = self.tok_embeddings(idx)  # (B, T, C)
        for i, layer in enumerate(self.layers):
            x = layer(x, None if caches is None else caches[i], start_pos)
        return self.output(self.norm(x))  # (B, T, V)


def latent_caches_for(
    cfg: DeepSeekV2Config,
    batch: int,
    max_seq_len: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> list[LatentKVCache]:
    """One LatentKVCache per layer."""
    return [
        LatentKVCache(batch, max_seq_len, cfg.kv_rank, cfg.rope_dim, dtype, device)
        for _ in range(cfg.n_layers)
    ]


def mla_params(cfg: DeepSeekV2Config) -> int:
    """W^DQ, q-norm, W^UQ, W^QR (or W^Q, W^QR on h), W^DKV, kv-norm, W^KR, W^UK, W^UV, W^O."""
    C, H, D, Dr, Lc = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.rope_dim, cfg.kv_rank
    if cfg.q_rank is None:
        query = C * H * (D + Dr)
    else:
        query = C * cfg.q_rank + cfg.q_rank + cfg.q_rank * H * (D + Dr)
    kv = C * Lc + Lc + C * Dr + 2 * Lc * H * D
    return query + kv + H * D * C


def deepseek_v2_param_count(
    cfg: DeepSeekV2Config, active: bool = False, embeddings: bool = True
) -> int:
    """Analytic count; `active`: shared + K of N routed experts; `embeddings=False` drops the
    input embedding only (the output head is a matmul every token pays for)."""
    C = cfg.d_model
    expert = 3 * C * cfg.d_expert
    routed = (cfg.top_k if active else cfg.n_routed) * expert
    moe = C * cfg.n_routed + cfg.n_shared * expert + routed  # router centroids e_i
    dense = 3 * C * cfg.d_ff
    n_moe = cfg.n_layers - cfg.n_dense_layers
    blocks = cfg.n_layers * (2 * C + mla_params(cfg)) + cfg.n_dense_layers * dense + n_moe * moe
    vocab = cfg.vocab_size * C
    return blocks + C + vocab + (vocab if embeddings else 0)
