"""LLaMA: a pre-RMSNorm decoder with SwiGLU feed-forward layers and rotary positions.

Touvron et al., "LLaMA: Open and Efficient Foundation Language Models",
https://arxiv.org/abs/2302.13971 (§2.2 architecture, Table 2 sizes); the layer sizes follow Meta's
published code (facebookresearch/llama `model.py`: hidden = 2/3 · 4·dim rounded up to
`multiple_of`, RMSNorm eps 1e-6, no biases, untied output head).

Glossary: B batch, T time, H heads, Hkv kv heads (GQA when Hkv < H; LLaMA-1 uses Hkv == H),
D head dim, C model width (dim), F SwiGLU hidden width, V vocabulary, L layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from repro.nn.attention import Attention, Backend, KVCacheLike
from repro.nn.ffn import GLUFeedForward, llama_hidden_dim
from repro.nn.norm import RMSNorm
from repro.nn.positional import RotaryEmbedding


def _llama(n_layers: int, d_model: int, n_heads: int) -> dict[str, Any]:
    """One row of Table 2 (dimension, n heads, n layers) with the shared settings of the code."""
    return dict(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        vocab_size=32000,
        multiple_of=256,
        max_seq_len=2048,
    )


PRESETS: dict[str, dict[str, Any]] = {
    "llama-7b": _llama(32, 4096, 32),  # 6.7B
    "llama-13b": _llama(40, 5120, 40),  # 13.0B
    "llama-33b": _llama(60, 6656, 52),  # 32.5B
    "llama-65b": _llama(80, 8192, 64),  # 65.2B
}


@dataclass
class LlamaConfig:
    """Defaults are a tiny CPU model; `from_name` gives the Table 2 sizes."""

    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 4
    n_kv_heads: int | None = None  # None -> n_heads (MHA, as in LLaMA-1)
    vocab_size: int = 256
    multiple_of: int = 32
    ffn_dim_multiplier: float | None = None
    d_ff: int | None = None  # None -> llama_hidden_dim(d_model, multiple_of, ffn_dim_multiplier)
    max_seq_len: int = 256
    norm_eps: float = 1e-6
    rope_base: float = 10000.0
    backend: Backend = "auto"

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of {self.n_kv_heads=}")
        if self.d_ff is None:
            self.d_ff = llama_hidden_dim(self.d_model, self.multiple_of, self.ffn_dim_multiplier)

    @property
    def head_dim(self) -> int:
        """D = d_model / n_heads."""
        return self.d_model // self.n_heads

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> LlamaConfig:
        """A Table 2 preset (see `PRESETS`), with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown LLaMA preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


class LlamaBlock(nn.Module):
    """h = x + Attn(RMSNorm(x)) with RoPE on q, k; out = h + SwiGLU(RMSNorm(h)) (§2.2)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attention = Attention(
            cfg.d_model, cfg.n_heads, cfg.n_kv_heads, bias=False, causal=True, backend=cfg.backend
        )
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.feed_forward = GLUFeedForward(cfg.d_model, cfg.d_ff, "swiglu")

    def forward(
        self,
        x: Tensor,
        rope: RotaryEmbedding,
        cache: KVCacheLike | None = None,
        start_pos: int = 0,
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C)."""
        h = x + self.attention(self.attention_norm(x), rope=rope, cache=cache, start_pos=start_pos)
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(nn.Module):
    """Token embedding, L blocks, final RMSNorm, untied output head; RoPE shared by all layers.

    `block` is the layer class: Mixtral (`repro.models.mixtral`) is this model with MoE blocks."""

    block: type[nn.Module] = LlamaBlock

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(self.block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_base)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(
        self, idx: Tensor, start_pos: int = 0, caches: list[KVCacheLike] | None = None
    ) -> Tensor:
        """idx (B, T) token ids at positions start_pos..start_pos+T-1 -> logits (B, T, V)."""
        T = idx.shape[1]
        if start_pos + T > self.cfg.max_seq_len:
            raise ValueError(f"positions up to {start_pos + T} exceed {self.cfg.max_seq_len=}")
        x = self.tok_embeddings(idx)  # (B, T, C)
        for i, layer in enumerate(self.layers):
            x = layer(x, self.rope, None if caches is None else caches[i], start_pos)
        return self.output(self.norm(x))  # (B, T, V)
