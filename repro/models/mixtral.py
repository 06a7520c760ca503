"""Mixtral: a LLaMA/Mistral decoder whose every feed-forward layer is a sparse mixture of experts.

Jiang et al., "Mixtral of Experts", https://arxiv.org/abs/2401.04088 (§2, Table 1: dim 4096,
32 layers, head_dim 128, hidden_dim 14336, 32 heads, 8 kv heads, context 32768, vocabulary
32000, 8 experts, top-2). Mixtral keeps Mistral 7B's block (pre-RMSNorm, GQA, RoPE) but has no
sliding window: the 32k context is fully dense (§2). RMSNorm eps 1e-5 and RoPE base 1e6 follow
the released configuration.

Glossary: B batch, T time, C model width (dim), L layers, H heads, Hkv kv heads, D head dim,
F expert hidden width (hidden_dim), N experts, K experts per token, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from repro.models.llama import Llama
from repro.nn.attention import Attention, Backend, KVCacheLike
from repro.nn.moe import MoEFeedForward, Routing
from repro.nn.norm import RMSNorm
from repro.nn.positional import RotaryEmbedding

PRESETS: dict[str, dict[str, Any]] = {
    # Table 1; max_seq_len 32768 is the context; rope_base and eps from the released config
    "mixtral-8x7b": dict(
        n_layers=32,
        d_model=4096,
        n_heads=32,
        n_kv_heads=8,
        d_ff=14336,
        n_experts=8,
        top_k=2,
        vocab_size=32000,
        max_seq_len=32768,
        rope_base=1e6,
    ),
}


@dataclass
class MixtralConfig:
    """Defaults are a tiny CPU model; `from_name("mixtral-8x7b")` gives Table 1."""

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int = 2
    d_ff: int = 128  # F: hidden width of each SwiGLU expert
    n_experts: int = 8
    top_k: int = 2
    vocab_size: int = 256
    max_seq_len: int = 256
    norm_eps: float = 1e-5
    rope_base: float = 1e6
    router_bias: bool = False  # Mixtral's W_g has none; the load-balancing experiment uses one
    backend: Backend = "auto"

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of {self.n_kv_heads=}")
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k={self.top_k} must lie in 1..n_experts={self.n_experts}")

    @property
    def head_dim(self) -> int:
        """D = d_model / n_heads."""
        return self.d_model // self.n_heads

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> MixtralConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown Mixtral preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


MIXTRAL_8X7B = MixtralConfig.from_name("mixtral-8x7b")


class MixtralBlock(nn.Module):
    """h = x + Attn(RMSNorm(x)); out = h + MoE(RMSNorm(h)) with top-k SwiGLU experts."""

    def __init__(self, cfg: MixtralConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attention = Attention(
            cfg.d_model, cfg.n_heads, cfg.n_kv_heads, bias=False, causal=True, backend=cfg.backend
        )
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.moe = MoEFeedForward(
            cfg.d_model, cfg.d_ff, cfg.n_experts, cfg.top_k, router_bias=cfg.router_bias
        )

    def forward(
        self, x: Tensor, rope: RotaryEmbedding, cache: KVCacheLike | None = None, start_pos: int = 0
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C)."""
        h = x + self.attention(self.attention_norm(x), rope=rope, cache=cache, start_pos=start_pos)
        return h + self.moe(self.ffn_norm(h))


class Mixtral(Llama):
    """LLaMA's model (embedding, blocks, final RMSNorm, untied head, shared RoPE) with every
    block's FFN replaced by the sparse MoE (§2.1)."""

    block = MixtralBlock

    def routings(self) -> list[Routing]:
        """The last forward's routing of every layer."""
        out = [layer.moe.last_routing for layer in self.layers]
        assert all(r is not None for r in out), "routings() before any forward"
        return out  # type: ignore[return-value]


def mixtral_param_count(cfg: MixtralConfig, active: bool = False, embeddings: bool = True) -> int:
    """Analytic count. `active`: K of the N experts per layer (what one token's forward reads);
    router, attention, norms are always active. `embeddings=False` drops the input embedding
    only (a lookup, not a matmul); the output head is a matmul and is always counted."""
    C, H, Hkv, D = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    attention = C * H * D * 2 + C * Hkv * D * 2  # W_q, W_o; W_k, W_v
    expert = 3 * C * cfg.d_ff  # SwiGLU w1, w3, w2
    experts = (cfg.top_k if active else cfg.n_experts) * expert
    block = 2 * C + attention + C * cfg.n_experts + experts  # 2 RMSNorm gains, router W_g
    return (
        cfg.n_layers * block
        + C  # final RMSNorm
        + cfg.vocab_size * C  # output head
        + (cfg.vocab_size * C if embeddings else 0)  # input embedding
    )


def built_param_count(model: Mixtral, active: bool = False, embeddings: bool = True) -> int:
    """Count from the built module: all parameters, minus (N − K) experts per layer if `active`,
    minus the input embedding if not `embeddings`."""
    total = sum(p.numel() for p in model.parameters())
    if active:
        for layer in model.layers:
            per_expert = [sum(p.numel() for p in e.parameters()) for e in layer.moe.experts]
            total -= sum(sorted(per_expert)[layer.moe.top_k :])
    if not embeddings:
        total -= model.tok_embeddings.weight.numel()
    return total


def kv_cache_bytes_per_token(cfg: MixtralConfig, dtype: torch.dtype = torch.float16) -> int:
    """2 (k, v) · L · Hkv · D · bytes: what one more token of context costs."""
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * dtype.itemsize
